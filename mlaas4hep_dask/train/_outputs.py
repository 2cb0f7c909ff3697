"""What a training writes besides the bundle: metrics, test scores, the classes' names for the plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlaas4hep_dask.batches._loader import BatchLoader

__all__ = ["class_names", "save_scores", "write_metrics"]


def write_metrics(run_dir: Path, payload: Mapping[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=1) + "\n")
    rows = payload["epochs"]
    if rows:
        columns = list(rows[0])
        lines = [",".join(columns)] + [
            ",".join("" if r.get(c) is None else str(r.get(c)) for c in columns) for r in rows
        ]
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")


def class_names(loader: BatchLoader) -> dict[float, str]:
    """Names of the classes for plots: signal/background (with their files' names) or the files'.

    A file ``ttH_0.root`` names its class ``ttH``; classes from a ``label_branch`` keep their numbers.
    """
    if loader.labels is None:
        return {}
    stems: dict[float, dict[str, None]] = {}
    for f, label in zip(loader.dataset.files, loader.labels, strict=True):
        stem = Path(f.path).stem
        stems.setdefault(float(label), {})[stem.rstrip("0123456789").rstrip("_-") or stem] = None
    text = {k: ", ".join(list(v)[:3]) + (", ..." if len(v) > 3 else "") for k, v in stems.items()}
    if set(stems) == {0.0, 1.0}:
        return {1.0: f"signal ({text[1.0]})", 0.0: f"background ({text[0.0]})"}
    return text


def save_scores(path: Path, block: Any) -> None:
    """The test split's targets, scores and weights (for comparisons across runs, e.g. campaigns)."""
    import numpy as np

    extra = {"w": block.w} if block.w is not None else {}
    np.savez_compressed(path, y=block.y if block.y is not None else np.zeros(0), score=block.X, **extra)
