from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from mlaas4hep_dask.generate import generate


def _auc(signal: np.ndarray, background: np.ndarray) -> float:
    scores = np.concatenate([signal, background])
    ranks = scores.argsort().argsort() + 1
    n_s, n_b = len(signal), len(background)
    return float((ranks[:n_s].sum() - n_s * (n_s + 1) / 2) / (n_s * n_b))


def test_deterministic_given_seed(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", events=300, files=1, seed=5)
    b = generate(tmp_path / "b", events=300, files=1, seed=5)
    c = generate(tmp_path / "c", events=300, files=1, seed=6)
    read = lambda p: uproot.open(p)["events"].arrays(["HT", "jetPt"])  # noqa: E731
    assert ak.array_equal(read(a[0]), read(b[0]))
    assert not ak.array_equal(read(a[0]), read(c[0]))


def test_tree_layout_and_classes_are_separable_but_overlap(tmp_path: Path) -> None:
    sig, bkg = generate(tmp_path, events=4000, files=1, seed=1)
    tree = uproot.open(sig)["events"]
    assert tree.typenames()["jetPt"] == "float[]"
    assert {"nJets", "MET", "HT", "jetBtag", "leptonEta", "partonE", "partonPt", "run", "event"} <= set(
        tree.keys()
    )
    s = uproot.open(sig)["events"].arrays(["HT", "nBJets", "jetPt"])
    b = uproot.open(bkg)["events"].arrays(["HT", "nBJets", "jetPt"])
    assert ak.all(ak.num(s.jetPt) >= 4)
    for name in ("HT", "nBJets"):
        auc = _auc(ak.to_numpy(s[name]).astype(float), ak.to_numpy(b[name]).astype(float))
        assert 0.6 < auc < 0.95, (name, auc)
