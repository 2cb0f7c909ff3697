"""Generate ROOT files that look like a ttH(bb) vs ttbar analysis, for demos, tests, benchmarks.

Each event has flat branches (``nJets``, ``nLeptons``, ``nPartons``, ``nBJets``, ``MET``,
``HT``, ``weight``, and the identifiers ``run``/``event``) and jagged branches (``jetPt``,
``jetEta``, ``jetPhi``, ``jetE``, ``jetBtag``, ``leptonPt``, ``leptonEta``, ``partonE``,
``partonPt``).  Signal has more and harder jets and more b-tags; the classes overlap, so a
classifier learns them well but not perfectly.  Output is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

__all__ = ["ClassShape", "generate", "make_events"]

_TREE = "events"


@dataclasses.dataclass(frozen=True)
class ClassShape:
    """Distribution parameters of one class."""

    extra_jets: float
    jet_pt_scale: float
    jet_eta_width: float
    btag_prob: float
    lepton_probs: tuple[float, float, float]
    met_scale: float
    parton_log_e: float
    extra_partons: float


SIGNAL = ClassShape(3.2, 58.0, 1.35, 0.42, (0.10, 0.60, 0.30), 62.0, 5.95, 2.6)
BACKGROUND = ClassShape(2.4, 47.0, 1.55, 0.26, (0.15, 0.62, 0.23), 52.0, 5.75, 2.0)


def _jagged(counts: np.ndarray, values: np.ndarray) -> ak.Array:
    return ak.unflatten(values.astype(np.float32), counts)


def make_events(
    n: int, shape: ClassShape, rng: np.random.Generator, first_event: int = 0
) -> dict[str, ak.Array | np.ndarray]:
    """Return ``n`` events of one class as the branch arrays that :func:`generate` writes.

    Examples
    --------
    >>> ev = make_events(5, SIGNAL, np.random.default_rng(1))
    >>> sorted(ev)[:3]
    ['MET', 'event', 'jet']
    """
    n_jets = (4 + rng.poisson(shape.extra_jets, n)).astype(np.int32)
    total = int(n_jets.sum())
    is_b = rng.random(total) < shape.btag_prob
    pt = 25.0 + rng.exponential(shape.jet_pt_scale, total)
    eta = np.clip(rng.normal(0.0, shape.jet_eta_width, total), -2.5, 2.5)
    btag = np.where(is_b, rng.beta(5.0, 1.8, total), rng.beta(1.2, 5.0, total))
    jet = ak.zip(
        {
            "Pt": _jagged(n_jets, pt),
            "Eta": _jagged(n_jets, eta),
            "Phi": _jagged(n_jets, rng.uniform(-np.pi, np.pi, total)),
            "E": _jagged(n_jets, pt * np.cosh(eta) + rng.exponential(5.0, total)),
            "Btag": _jagged(n_jets, btag),
        }
    )
    n_lep = rng.choice(3, size=n, p=shape.lepton_probs).astype(np.int32)
    n_l = int(n_lep.sum())
    lepton = ak.zip(
        {
            "Pt": _jagged(n_lep, 20.0 + rng.exponential(40.0, n_l)),
            "Eta": _jagged(n_lep, np.clip(rng.normal(0.0, 1.2, n_l), -2.5, 2.5)),
        }
    )
    n_par = (4 + rng.poisson(shape.extra_partons, n)).astype(np.int32)
    n_p = int(n_par.sum())
    log_e = rng.normal(shape.parton_log_e, 0.45, n_p)
    parton = ak.zip(
        {
            "E": _jagged(n_par, np.exp(log_e)),
            "Pt": _jagged(n_par, np.exp(log_e) / np.cosh(rng.normal(0.0, 1.0, n_p))),
        }
    )
    ht = ak.to_numpy(ak.sum(jet.Pt, axis=1)).astype(np.float32)
    return {
        "run": np.ones(n, dtype=np.uint32),
        "event": np.arange(first_event, first_event + n, dtype=np.uint64),
        "nBJets": ak.to_numpy(ak.sum(jet.Btag > 0.5, axis=1)).astype(np.int32),
        "MET": rng.exponential(shape.met_scale, n).astype(np.float32),
        "HT": ht,
        "weight": np.abs(rng.normal(1.0, 0.1, n)).astype(np.float32),
        "jet": jet,
        "lepton": lepton,
        "parton": parton,
    }


def _write(path: Path, n: int, shape: ClassShape, rng: np.random.Generator, basket: int) -> None:
    with uproot.recreate(path, compression=uproot.ZLIB(4)) as fout:
        tree = None
        for first in range(0, n, basket):  # one extend() writes one basket per branch
            chunk = make_events(min(basket, n - first), shape, rng, first_event=first)
            if tree is None:
                types = {
                    k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in chunk.items()
                }
                tree = fout.mktree(
                    _TREE,
                    types,
                    counter_name=lambda counted: f"n{counted.capitalize()}s",
                    field_name=lambda outer, inner: inner if outer == "" else outer + inner,
                )
            tree.extend(chunk)


def generate(
    out: str | Path, events: int = 10_000, files: int = 1, seed: int = 42, basket: int = 20_000
) -> list[Path]:
    """Write ``files`` signal and ``files`` background ROOT files of ``events`` events each.

    Also writes ``files.txt`` and ``labels.txt`` (1 = signal, 0 = background) in the
    original MLaaS4HEP formats.  The tree is ``events``.

    Parameters
    ----------
    out
        Output directory (created).
    events
        Events per file.
    files
        Files per class.
    seed
        Seed; the same seed gives the same files.
    basket
        Events per basket, like ROOT's bounded basket sizes (20 000 events are ~80 kB per
        float branch); readers decompress a whole basket at a time.

    Returns
    -------
    list of Path
        The files written, signal and background alternating.

    Examples
    --------
    >>> paths = generate("data", events=1000, files=1, seed=1)  # doctest: +SKIP
    >>> [p.name for p in paths]  # doctest: +SKIP
    ['ttH_0.root', 'ttbar_0.root']
    """
    if events < 1 or files < 1:
        raise ValueError("generate: 'events' and 'files' must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    labels: list[int] = []
    for index in range(files):
        for label, name, shape in ((1, "ttH", SIGNAL), (0, "ttbar", BACKGROUND)):
            path = out / f"{name}_{index}.root"
            _write(path, events, shape, np.random.default_rng([seed, label, index]), basket)
            written.append(path)
            labels.append(label)
    (out / "files.txt").write_text("".join(f"{p.resolve()}\n" for p in written))
    (out / "labels.txt").write_text("".join(f"{lab}\n" for lab in labels))
    return written
