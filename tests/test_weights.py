"""Event weights in training: normalized for the fit, physical in the metrics; class balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.train import train

MODELS = Path(__file__).resolve().parent.parent / "configs" / "models"
FLAT = ["MET", "HT", "nJets", "nLeptons", "nBJets"]
PARAMS = {"epochs": 6, "batch_size": 64, "chunk_size": 3000, "seed": 3, "exclude_branches": ["w"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Signal, background and more background (1500 events each) with weights of about 0.007.

    HZZ's ``EventWeight`` is about that small.
    """
    out = tmp_path_factory.mktemp("tiny")
    paths = []
    sources = (
        generate(out / "gen", events=1500, files=1, seed=8) + generate(out / "more", events=1500, seed=9)[1:]
    )
    for i, source in enumerate(sources):
        arrays = uproot.open(f"{source}:events").arrays([*FLAT, "weight"], library="np")
        path = out / f"{i}-{source.name}"
        columns = {**{k: arrays[k] for k in FLAT}, "w": arrays["weight"] * np.float32(0.007)}
        with uproot.recreate(path) as f:
            f.mktree("events", {k: v.dtype for k, v in columns.items()}).extend(columns)
        paths.append(path)
    return paths


def _auc(files: list[Path], framework: str, out: Path, **params: object) -> float:
    run = train(
        files[:2], MODELS / f"{framework}_model.py", {**PARAMS, **params}, [1, 0], out=out, client="threads"
    )
    return float(run.metrics["final"]["val_auc"])


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["xgboost", "torch", "sklearn", "keras"])
def test_tiny_weights_train_as_well_as_none(tiny: list[Path], tmp_path: Path, framework: str) -> None:
    plain = _auc(tiny, framework, tmp_path / "plain")
    weighted = _auc(tiny, framework, tmp_path / "weighted", weight_branch="w")
    assert plain > 0.75
    assert weighted > plain - 0.02, (weighted, plain)


def _loader(files: list[Path], split: str = "train", **params: object) -> m.BatchLoader:
    p = {**PARAMS, "weight_branch": "w", **params}
    files = files[:2]
    return m.BatchLoader(files, m.compute_specs(files, p, client="sync"), p, labels=[1, 0], split=split)


def _per_class(loader: m.BatchLoader) -> dict[int, tuple[int, float]]:
    out: dict[int, tuple[int, float]] = {}
    for _, y, w in loader:
        for c in np.unique(y).tolist():
            n, s = out.get(c, (0, 0.0))
            out[c] = (n + int(np.sum(y == c)), s + float(w[y == c].sum()))
    return out


def test_training_weights_sum_to_each_class_and_the_metrics_keep_the_physical_ones(tiny: list[Path]) -> None:
    sums = _per_class(_loader(tiny))
    assert set(sums) == {0, 1}
    for n, s in sums.values():
        assert s == pytest.approx(n, rel=1e-4)
    validation = _per_class(_loader(tiny, "validation"))
    for n, s in validation.values():
        assert s == pytest.approx(0.007 * n, rel=0.05)  # the file's own weights, about 0.007 each
    mean = _per_class(_loader(tiny, weight_norm="mean"))
    n_all, s_all = (sum(v[i] for v in mean.values()) for i in (0, 1))
    assert s_all == pytest.approx(n_all, rel=1e-4)
    raw = _per_class(_loader(tiny, weight_norm="none"))
    assert raw[0][1] == pytest.approx(0.007 * raw[0][0], rel=0.05)


def test_balanced_classes_weigh_the_same(tiny: list[Path]) -> None:
    uneven = tiny  # twice as much background
    p = {**PARAMS, "class_weight": "balanced"}
    loader = m.BatchLoader(uneven, m.compute_specs(uneven, p, client="sync"), p, labels=[1, 0, 0])
    sums = _per_class(loader)
    assert sums[0][0] == pytest.approx(2 * sums[1][0], rel=0.1)
    total = sums[0][0] + sums[1][0]
    assert sums[0][1] == pytest.approx(total / 2, rel=1e-4)
    assert sums[1][1] == pytest.approx(total / 2, rel=1e-4)
    shards = loader.shards(2)
    assert all(s.scale == loader.weight_scale for s in shards)  # every trainer weighs alike


def test_weights_that_cannot_be_normalized_are_refused(tiny: list[Path], tmp_path: Path) -> None:
    negative = {"new_branch": {"neg": {"def": "-w", "type": "flat", "remove": True}}}
    p = {**PARAMS, "weight_branch": "neg"}
    specs = m.compute_specs(tiny[:2], p, negative, client="sync")
    loader = m.BatchLoader(tiny[:2], specs, p, negative, labels=[1, 0])
    with pytest.raises(ConfigError, match=r"weights \('neg'\) of class \d sum to -\d.*'weight_norm'"):
        len(loader)
    with pytest.raises(ConfigError, match="'class_weight' must be one of"):
        m.Params.from_dict({"class_weight": "equal"})
    regression = {**PARAMS, "label_branch": "HT", "exclude_branches": ["w", "HT"], "class_weight": "balanced"}
    specs = m.compute_specs(tiny[:2], regression, client="sync")
    with pytest.raises(ConfigError, match="'class_weight' needs classes"):
        len(m.BatchLoader(tiny[:2], specs, regression))
