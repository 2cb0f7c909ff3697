"""Inputs are resolved once, at the edge: one ``mlaas4hep train`` inspects each input file once
for its metadata and parses ``params`` once, and everything below takes what was opened."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mlaas4hep_dask.cli import main
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.read import _dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("given_specs", [False, True], ids=["specs-pass", "specs-given"])
def test_one_training_opens_each_input_once_and_parses_params_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_specs: bool
) -> None:
    files = generate(tmp_path / "data", events=3000, files=2, seed=3)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochs": 1, "chunk_size": 2000, "exclude_branches": ["weight"]}))
    common = ["--files", ",".join(map(str, files)), "--params", str(params), "--cluster", "sync"]
    if given_specs:
        assert main(["specs", *common, "--out", str(tmp_path / "specs.json"), "-q"]) == 0

    inspected: Counter[str] = Counter()
    parsed: list[str] = []
    inspect = _dataset.inspect_input
    from_dict = Params.from_dict.__func__  # type: ignore[attr-defined]

    def counting_inspect(path: str, p: Params) -> Any:
        inspected[path] += 1
        return inspect(path, p)

    def counting_parse(cls: type[Params], data: Any, source: str = "params") -> Params:
        parsed.append(source)
        return from_dict(cls, data, source)

    monkeypatch.setattr(_dataset, "inspect_input", counting_inspect)
    monkeypatch.setattr(Params, "from_dict", classmethod(counting_parse))
    args = ["train", *common, "--labels", "1,0,1,0", "--model", str(ROOT / "configs/models/sklearn_model.py")]
    args += ["--out", str(tmp_path / "run"), "-q"]
    if given_specs:
        args += ["--specs", str(tmp_path / "specs.json")]
    assert main(args) == 0
    assert (tmp_path / "run" / "bundle.json").is_file()
    assert inspected == Counter({str(f): 1 for f in files})
    assert parsed == [f"params file {str(params)!r}"]
