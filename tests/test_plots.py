"""The run's plots show what HEP expects: rejection vs efficiency, train vs test with KS, legends."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from mlaas4hep_dask.bundle._plots import roc_figure, scores_figure, training_figure
from mlaas4hep_dask.handle._rows import Block
from mlaas4hep_dask.train._outputs import class_names as _class_names


def _block(rng: np.random.Generator, n: int, shift: float = 0.0) -> Block:
    y = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.35 + 0.3 * y + shift * y, 0.15), 0, 1).astype(np.float32)
    return Block(scores, y, None)


def _legend(fig: object) -> list[str]:
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]  # type: ignore[attr-defined]
    for ax in fig.axes:  # type: ignore[attr-defined]
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return texts


def test_training_curves_have_integer_ticks_and_every_curve_in_the_legend() -> None:
    rows = [{"epoch": i, "loss": 1 / i, "val_loss": 1.1 / i, "val_auc": 0.8 + i / 100} for i in range(1, 8)]
    fig = training_figure(rows, "val_auc", "boosting round")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "boosting round"
    assert _legend(fig) == ["loss", "val_loss", "val_auc"]  # the twin axis's curve too
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 7]
    assert ticks
    assert all(float(t).is_integer() for t in ticks)


def test_roc_has_the_rejection_vs_efficiency_view() -> None:
    test = _block(np.random.default_rng(1), 4000)
    fig = roc_figure([("test", test.y, test.X, None)], "ROC")
    roc, rejection = fig.axes
    assert rejection.get_yscale() == "log"
    assert rejection.get_xlabel() == "signal efficiency"
    assert "background rejection" in rejection.get_ylabel()
    efficiency, rejected = rejection.lines[0].get_data()
    fpr, tpr = roc.lines[0].get_data()
    seen = fpr > 0
    np.testing.assert_allclose(rejected, 1 / fpr[seen])
    np.testing.assert_allclose(efficiency, tpr[seen])
    assert re.match(r"test \(AUC 0\.\d{3}\)", _legend(fig)[0])


def test_scores_overlay_train_and_test_with_a_ks_p_value_that_sees_overtraining() -> None:
    rng = np.random.default_rng(2)
    names = {1.0: "signal (ttH)", 0.0: "background (ttbar)"}
    fair = scores_figure(_block(rng, 6000), _block(rng, 6000), names, multiclass=False)
    labels = _legend(fair)
    assert {"signal (ttH), test", "background (ttbar), test"} <= set(labels)
    p_fair = [float(m.group(1)) for t in labels if (m := re.search(r"KS p = ([\d.]+)", t))]
    assert len(p_fair) == 2
    assert min(p_fair) > 0.001  # the same distributions: no alarm
    overtrained = scores_figure(_block(rng, 6000, shift=0.1), _block(rng, 6000), names, multiclass=False)
    p_signal = next(
        float(re.search(r"KS p = ([\d.]+)", t).group(1))
        for t in _legend(overtrained)
        if "signal (ttH), train" in t
    )  # type: ignore[union-attr]
    assert p_signal < 0.001  # signal scores higher in training than in the test: flagged


@pytest.mark.parametrize(
    ("names", "labels", "expected"),
    [
        (
            ["ttH_0.root", "ttbar_0.root", "ttH_1.root"],
            [1, 0, 1],
            {1.0: "signal (ttH)", 0.0: "background (ttbar)"},
        ),
        (["a/WW.root", "b/ZZ.root", "c/tt.root"], [0, 1, 2], {0.0: "WW", 1.0: "ZZ", 2.0: "tt"}),
    ],
)
def test_classes_are_named_from_the_labels_and_files(
    names: list[str], labels: list[int], expected: dict[float, str]
) -> None:
    files = [SimpleNamespace(path=n) for n in names]
    loader = SimpleNamespace(labels=labels, dataset=SimpleNamespace(files=files))
    assert _class_names(loader) == expected  # type: ignore[arg-type]
