"""Batch inference: score every event of ROOT inputs on the Dask cluster, partition by partition.

Each partition is read, prepared by the bundle (its preprocessing, padding, normalization),
scored by the model on the worker, and written to its own file in ``out``
(``part-00000.parquet`` or ``.root``) with the columns ``file`` (index in the input list),
``entry`` (entry number in that file), the event's identity (the ``identifier`` branches of
params, ``run``, ``luminosityBlock`` and ``event`` by default, those the tree has), ``passed``
(whether the bundle's cuts keep the event) and ``score`` (NaN where they do not; ``score_0``,
``score_1``, ... for multiclass models).
Nothing is gathered on the client but the list of files written.

Every event of every input gets a row, in entry order, and a partition's file holds the
entries of one input file only: the parts of an input file, chained in order, line up entry
by entry with its tree.  ``friends.json`` lists them per input file (its tree, entries and
parts), so a ROOT friend is one chain away::

    chain = ROOT.TChain("scores")
    for part in friends["inputs"][0]["parts"]: chain.Add(part)
    events.AddFriend(chain)      # events.Draw("score", "passed")
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask._compute import compute
from mlaas4hep_dask.bundle._bundle import Bundle, load_bundle
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._preprocess import make_plan
from mlaas4hep_dask.read._dataset import open_dataset

__all__ = ["predict_files", "resolve_model"]


def resolve_model(spec: str) -> Path:
    """``REPO/name[:version]`` (latest version by default) or a run directory, to a bundle folder."""
    from mlaas4hep_dask.serve.repository import Repository

    if Path(spec).is_dir() and (Path(spec) / "bundle.json").is_file():
        return Path(spec)
    where, _, version = spec.partition(":")
    repo, name = Path(where).parent, Path(where).name
    if version and not version.isdigit():
        raise ConfigError(f"model {spec!r}: the version after ':' must be a number")
    if not (repo / "index.sqlite").is_file():
        raise ConfigError(
            f"model {spec!r}: {str(repo)!r} is not a model repository (and {spec!r} not a run directory)"
        )
    return Path(Repository(repo).get(name, int(version) if version else None).path)


@functools.lru_cache(maxsize=4)
def _bundle(path: str) -> Bundle:
    """One loaded bundle per worker process and path."""
    return load_bundle(path)


class _ScorePartition:
    """Read → prepare → score → write one partition; returns the file written."""

    def __init__(self, bundle_path: str, out: str, fmt: str, identifiers: Sequence[str]) -> None:
        self.bundle_path, self.out, self.fmt = bundle_path, out, fmt
        self.identifiers = tuple(identifiers)

    def __call__(self, partition: ak.Array, file_index: int, start: int) -> str:
        bundle = _bundle(self.bundle_path)
        selection = bundle.plan.select(partition)
        X, rows = bundle.layout.transform(selection.record)
        n = len(partition)
        kept = selection.positions if rows is None else selection.positions[rows]
        scores = bundle.predict_features(X) if len(X) else np.zeros((0,), np.float32)
        columns: dict[str, Any] = {
            "file": np.full(n, file_index, dtype=np.int32),
            "entry": np.arange(start, start + n, dtype=np.int64),
            **{name: ak.to_numpy(partition[name]) for name in self.identifiers},
            "passed": np.isin(np.arange(n), kept),
        }
        if scores.ndim == 2:
            for k in range(scores.shape[1]):
                columns[f"score_{k}"] = _place(scores[:, k], kept, n)
        else:
            columns["score"] = _place(scores, kept, n)
        path = Path(self.out) / _unnumbered(file_index, start, self.fmt)
        if self.fmt == "parquet":
            ak.to_parquet(ak.zip(columns, depth_limit=1), path)
        else:
            import uproot

            with uproot.recreate(path) as f:
                f.mktree("scores", {k: v.dtype for k, v in columns.items()})
                f["scores"].extend(columns)
        return str(path)


def _unnumbered(file_index: int, start: int, fmt: str) -> str:
    """A part's name until all are written and numbered in partition order (``part-00000``...)."""
    return f"part-file{file_index}-entry{start}.{fmt}"


def _place(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan, dtype=np.float32)
    out[positions] = values
    return out


def predict_files(
    model: str | Path,
    files: str | Path | Sequence[str | Path],
    out: str | Path,
    fmt: str = "parquet",
    client: Any = None,
    chunk_size: int | None = None,
) -> list[Path]:
    """Score every event of ``files`` with a bundle; write one file per partition into ``out``.

    Parameters
    ----------
    model
        A run directory, or ``REPO/name[:version]`` in a model repository.
    files
        ``files.txt``, a comma list, or paths/URLs.
    out
        Output folder (created).
    fmt
        ``"parquet"`` or ``"root"``.
    client
        A ``distributed.Client`` or scheduler name.
    chunk_size
        Events per partition (default: the bundle's params).
    """
    if fmt not in ("parquet", "root"):
        raise ConfigError(f"output format must be 'parquet' or 'root', not {fmt!r}")

    bundle_path = resolve_model(str(model))
    bundle = load_bundle(bundle_path)
    params = dataclasses.replace(bundle.params, nevts=-1, chunk_size=chunk_size or bundle.params.chunk_size)
    dataset = open_dataset(files, params)
    missing = [n for n in bundle.plan.columns if n not in dataset.available]
    if missing:
        raise ConfigError(f"the inputs lack branches the model reads: {missing[:5]}")
    selected = {n: dataset.available[n] for n in bundle.manifest["selected"]}
    plan = make_plan(bundle.preproc, dataset.available, selected).for_scoring()
    dataset = dataset.aligned_to(plan.columns)
    identifiers = [
        n for n in params.identifier if n in dataset.available and not dataset.available[n].is_jagged
    ]
    if list(plan.columns) != list(bundle.plan.columns):
        raise ConfigError("the inputs' branches do not match the ones the model was trained on")
    Path(out).mkdir(parents=True, exist_ok=True)

    score = _ScorePartition(str(bundle_path.resolve()), str(Path(out).resolve()), fmt, identifiers)
    tasks = dataset.map_partitions(score, tuple(dict.fromkeys([*plan.columns, *identifiers])))
    written = [Path(p) for p in compute(tasks, client)]
    # numbered here, in partition order: a task knows its file and first entry, not its number
    written = [p.replace(p.with_name(f"part-{i:05d}.{fmt}")) for i, p in enumerate(written)]
    _write_friends(Path(out), dataset, written, fmt)
    return written


def _write_friends(out: Path, dataset: Any, written: Sequence[Path], fmt: str) -> None:
    """``friends.json``: per input file, the parts that line up with its tree, in entry order."""
    import json

    inputs = [{"file": f.path, "tree": f.tree, "entries": f.entries, "parts": []} for f in dataset.files]
    for (f, _, _), path in sorted(zip(dataset.partitions, written, strict=True), key=lambda x: x[0][:2]):
        inputs[f]["parts"].append(path.name)
    index = {"tree": "scores" if fmt == "root" else None, "inputs": inputs}
    (out / "friends.json").write_text(json.dumps(index, indent=1) + "\n")
