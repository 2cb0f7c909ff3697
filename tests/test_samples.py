"""Sample lists: files grouped into labelled samples whose events weigh xsec * lumi / sum of weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import mlaas4hep_dask as m
from mlaas4hep_dask.config._samples import load_samples
from mlaas4hep_dask.errors import ConfigError

PARAMS = {"chunk_size": 1000, "batch_size": 500, "exclude_branches": ["weight"], "weight_norm": "none"}
MODELS = Path(__file__).resolve().parent.parent / "configs" / "models"


def _write(path: Path, content: object) -> Path:
    path.write_text(yaml.safe_dump(content) if path.suffix == ".yaml" else json.dumps(content))
    return path


def _yields(files: Path, params: dict[str, object]) -> dict[int, float]:
    specs = m.compute_specs(files, params, client="sync")
    out: dict[int, float] = {}
    for split in ("train", "validation", "test"):
        for _, y, w in m.BatchLoader(files, specs, params, split=split, client="sync"):
            for c in (0, 1):
                out[c] = out.get(c, 0.0) + float(w[y == c].sum(dtype=np.float64))
    return out


def test_weighted_yields_are_xsec_times_lumi(generated: list[Path], tmp_path: Path) -> None:
    ttH, ttbar = (str(p) for p in generated)
    listed = {
        "lumi": 10.0,
        "samples": {
            "ttH": {"files": [ttH], "label": 1, "xsec": 0.5},
            "ttbar": {"files": [ttbar], "label": 0, "xsec": 800.0},
        },
    }
    samples = _write(tmp_path / "samples.yaml", listed)
    weighted = _yields(samples, {**PARAMS, "weight_branch": "weight"})  # sums of 'weight' per sample
    assert weighted[1] == pytest.approx(0.5 * 10, rel=1e-5)
    assert weighted[0] == pytest.approx(800 * 10, rel=1e-5)
    counted = _yields(_write(tmp_path / "samples.json", listed), PARAMS)  # no weights: events
    assert counted[1] == pytest.approx(5.0, rel=1e-5)
    listed["samples"]["ttbar"]["sum_weights"] = 6000.0  # type: ignore[index]
    given = _yields(_write(tmp_path / "given.yaml", listed), PARAMS)  # twice its 3000 events
    assert given[0] == pytest.approx(800 * 10 / 2, rel=1e-5)
    # and the fit's weights, normalized per class, come out the same as without cross-sections
    specs = m.compute_specs(samples, PARAMS, client="sync")
    fit = m.BatchLoader(samples, specs, {**PARAMS, "weight_norm": "class"}, client="sync")
    _, y, w = next(iter(fit))
    assert w[y == 1].mean() == pytest.approx(1.0, rel=0.05)


def test_a_sample_list_trains_without_labels_txt(generated: list[Path], tmp_path: Path) -> None:
    from mlaas4hep_dask.cli._main import main

    samples = _write(
        tmp_path / "samples.yaml",
        {"lumi": 1.0, "samples": {"sig": {"files": [str(generated[0])], "label": 1, "xsec": 2.0},
                                  "bkg": {"files": [str(generated[1])], "label": 0, "xsec": 50.0}}},
    )  # fmt: skip
    params = _write(tmp_path / "params.json", {**PARAMS, "epochs": 1, "weight_norm": "class"})
    args = ["train", "--files", str(samples), "--model", str(MODELS / "sklearn_model.py")]
    assert (
        main([*args, "--params", str(params), "--out", str(tmp_path / "run"), "--cluster", "threads", "-q"])
        == 0
    )
    bundle = json.loads((tmp_path / "run" / "bundle.json").read_text())
    assert sorted(bundle["labels"].values()) == [0.0, 1.0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["test_auc"] > 0.7


BAD = [
    ("samples: [1, 2]\n", "'samples' must map sample names"),
    ("samples: {a: {files: []}}\n", "sample 'a': 'files' must be a non-empty list"),
    ("samples: {a: {files: [x.root], xsec: -1}}\nlumi: 1\n", "sample 'a': 'xsec' must be positive"),
    ("samples: {a: {files: [x.root], xsec: 1}}\n", "cross-sections need 'lumi'"),
    ("samples: {a: {files: [x.root], xsec: 1}, b: {files: [y.root]}}\nlumi: 1\n", "sample 'b' has no 'xsec'"),
    ("samples: {a: {files: [x.root], label: one}}\n", "sample 'a': 'label' must be a number"),
    ("samples: {a: {files: [x.root], xsecs: 1}}\n", "sample 'a': unknown key 'xsecs'"),
    ("sample: {}\n", "unknown key 'sample'"),
    ("samples: {a: {files: [x.root], sum_weights: 1, sum_weights_branch: w}}\n", "not both"),
    ("samples: {a: [\n", "is not valid YAML"),
]


@pytest.mark.parametrize(("content", "message"), BAD)
def test_bad_sample_lists_name_the_file_and_the_sample(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "samples.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"samples\.yaml") as caught:
        load_samples(path)
    assert message in str(caught.value)


def test_a_sum_of_weights_branch_the_tree_lacks_is_named(generated: list[Path], tmp_path: Path) -> None:
    samples = _write(
        tmp_path / "samples.yaml",
        {"lumi": 1.0, "samples": {"sig": {"files": [str(generated[0])], "label": 1, "xsec": 2.0, "sum_weights_branch": "genWeight"},
                                  "bkg": {"files": [str(generated[1])], "label": 0, "xsec": 5.0}}},
    )  # fmt: skip
    specs = m.compute_specs(samples, PARAMS, client="sync")
    with pytest.raises(
        ConfigError, match=r"sample 'sig' needs branch 'genWeight', which the tree does not have"
    ):
        len(m.BatchLoader(samples, specs, {**PARAMS, "weight_norm": "class"}, client="sync"))
