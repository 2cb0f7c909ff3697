"""Plots of a run, in HEP's conventions (PNG, Agg).

* ``training.png``: the losses and the validation metric per epoch (per boosting round for
  XGBoost), integer ticks, every curve in one legend outside the curves.
* ``roc.png``: the ROC curve, and HEP's view of it: background rejection ``1 / FPR`` (log
  scale) against signal efficiency.
* ``scores.png``: the score distributions of each class on the training and the test split
  overlaid, with the Kolmogorov-Smirnov p-value of each pair (the overtraining check), the
  classes named from the labels.

The ``*_figure`` functions return the figures (tests look at what they show);
:func:`write_plots` saves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["roc_figure", "scores_figure", "training_figure", "write_plots", "write_roc"]

Curve = tuple[str, Any, Any, Any]  # name, targets, scores, weights


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_figure(epochs: Sequence[Mapping[str, Any]], metric: str, xlabel: str = "epoch") -> Any:
    """Losses (left axis) and ``metric`` (right axis) per epoch, in one legend beside the axes."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    xs = [e["epoch"] for e in epochs]
    lines = []
    for key in ("loss", "val_loss"):
        ys = [e.get(key) for e in epochs]
        if any(y is not None and np.isfinite(y) for y in ys):
            lines += ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=key)
    if any(e.get(metric) is not None for e in epochs):
        twin = ax.twinx()
        values = [np.nan if e.get(metric) is None else e[metric] for e in epochs]
        lines += twin.plot(xs, values, color="tab:green", marker="s", label=metric)
        twin.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title("training")
    fig.legend(handles=lines, loc="upper left", bbox_to_anchor=(0.80, 0.9), frameon=False)
    fig.subplots_adjust(left=0.1, right=0.68, bottom=0.13)
    return fig


def roc_figure(curves: Sequence[Curve], title: str) -> Any:
    """ROC curves (with their AUC), and background rejection against signal efficiency."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, (roc, rejection) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, y, scores, w in curves:
        if len(y) and len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, scores, sample_weight=w)
            auc = roc_auc_score(y, scores, sample_weight=w)
            roc.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
            seen = fpr > 0
            rejection.plot(tpr[seen], 1 / fpr[seen], label=name)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc.set_xlabel("false positive rate (background efficiency)")
    roc.set_ylabel("true positive rate (signal efficiency)")
    roc.legend(loc="lower right")
    roc.set_title(title)
    rejection.set_yscale("log")
    rejection.set_xlim(0, 1)
    rejection.set_xlabel("signal efficiency")
    rejection.set_ylabel("background rejection (1 / background efficiency)")
    rejection.grid(True, which="both", alpha=0.3)
    if rejection.lines:
        rejection.legend(loc="upper right")
    rejection.set_title("background rejection")
    fig.tight_layout()
    return fig


def scores_figure(train: Any, test: Any, names: Mapping[Any, str], multiclass: bool) -> Any:
    """Each class's scores on the training and test splits, with the KS p-value of each pair.

    ``train`` and ``test`` are blocks whose ``X`` holds the scores (of class 1; for a
    multiclass model, of each class: the plot shows the score of the event's own class).
    """
    from scipy.stats import ks_2samp

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(np.unique(test.y)):
        color = colors[i % len(colors)]
        on_test, on_train = _own_scores(test, label, multiclass), _own_scores(train, label, multiclass)
        name = names.get(label, f"class {label:g}")
        style = {"histtype": "step", "density": True, "color": color}
        ax.hist(on_test, bins=40, range=(0, 1), label=f"{name}, test", **style)
        if len(on_train) and len(on_test):
            p = ks_2samp(on_train, on_test).pvalue
            counts, edges = np.histogram(on_train, bins=40, range=(0, 1), density=True)
            centers = (edges[:-1] + edges[1:]) / 2
            ax.plot(centers, counts, "o", markersize=3, color=color, label=f"{name}, train (KS p = {p:.3f})")
    ax.set_xlabel("score" if not multiclass else "score of the event's own class")
    ax.set_ylabel("density")
    ax.set_title("scores: train (points) vs test (lines)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="small")
    fig.subplots_adjust(left=0.09, right=0.6, bottom=0.12)
    return fig


def _own_scores(block: Any, label: Any, multiclass: bool) -> np.ndarray:
    mine = block.y == label
    return block.X[mine, int(label)] if multiclass else block.X[mine]


def write_plots(
    run_dir: Path,
    epochs: Sequence[dict[str, Any]],
    task: Any,
    val: Any,
    test: Any,
    train: Any = None,
    names: Mapping[Any, str] | None = None,
    xlabel: str = "epoch",
) -> list[Path]:
    """Write ``plots/*.png`` and return their paths.

    ``train`` holds scores of (a sample of) the training split for the overtraining check;
    ``names`` names the classes; ``xlabel`` is ``"boosting round"`` for XGBoost.
    """
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = [_save(training_figure(epochs, f"val_{task.metric}", xlabel), out / "training.png")]
    if task.kind == "binary":
        curves = [(name, block.y, block.X, block.w) for name, block in (("validation", val), ("test", test))]
        written.append(write_roc(out / "roc.png", curves, "ROC"))
    if task.kind in ("binary", "multiclass") and len(test.y):
        sample = train if train is not None else test.take(slice(0, 0))
        figure = scores_figure(sample, test, names or {}, task.kind == "multiclass")
        written.append(_save(figure, out / "scores.png"))
    return written


def write_roc(path: Path, curves: Sequence[Curve], title: str) -> Path:
    """One ROC plot of ``(label, y, scores, weights)`` curves (each with its AUC); return its path."""
    return _save(roc_figure(curves, title), path)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
