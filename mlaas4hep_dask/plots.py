"""Plots of a run: training curves, ROC curves, score distributions per class (PNG, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots", "write_roc"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(
    run_dir: Path, epochs: Sequence[dict[str, Any]], task: Any, val: Any, test: Any
) -> list[Path]:
    """Write ``plots/*.png`` and return their paths."""
    plt = _pyplot()
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [e["epoch"] for e in epochs]
    for key in ("loss", "val_loss"):
        ys = [e.get(key) for e in epochs]
        if any(y is not None and np.isfinite(y) for y in ys):
            ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=key)
    metric = f"val_{task.metric}"
    if any(e.get(metric) is not None for e in epochs):
        twin = ax.twinx()
        twin.plot(xs, [e.get(metric) for e in epochs], color="tab:green", marker="s", label=metric)
        twin.set_ylabel(metric)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    ax.set_title("training")
    written.append(_save(plt, fig, out / "training.png"))

    if task.kind == "binary":
        curves = [(name, block.y, block.X, block.w) for name, block in (("validation", val), ("test", test))]
        written.append(write_roc(out / "roc.png", curves, "ROC"))

    if task.kind in ("binary", "multiclass") and len(test.y):
        fig, ax = plt.subplots(figsize=(6, 4))
        scores = test.X if task.kind == "binary" else test.X.max(axis=1)
        for label in np.unique(test.y):
            ax.hist(
                scores[test.y == label],
                bins=50,
                range=(0, 1),
                histtype="step",
                density=True,
                label=f"class {label}",
            )
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        ax.legend()
        ax.set_title("scores on the test split")
        written.append(_save(plt, fig, out / "scores.png"))
    return written


def write_roc(path: Path, curves: Sequence[tuple[str, Any, Any, Any]], title: str) -> Path:
    """One ROC plot of ``(label, y, scores, weights)`` curves (each with its AUC); return its path."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y, scores, w in curves:
        if len(y) and len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, scores, sample_weight=w)
            auc = roc_auc_score(y, scores, sample_weight=w)
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    ax.set_title(title)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
