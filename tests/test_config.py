from __future__ import annotations

import json
from pathlib import Path

import pytest

import mlaas4hep_dask as m
from mlaas4hep_dask.config._params import Params, load_params, read_file_list

ORIGINAL_PARAMS = {
    "nevts": -1,
    "shuffle": True,
    "chunk_size": 10000,
    "epochs": 5,
    "batch_size": 256,
    "identifier": ["runNo", "evtNo", "lumi"],
    "branch": "boost_tree",
    "selected_branches": "",
    "exclude_branches": "",
    "hist": "pdfs",
    "redirector": "root://cms-xrd-global.cern.ch",
    "verbose": 1,
}


def test_original_params_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(ORIGINAL_PARAMS))
    with pytest.warns(UserWarning, match="'hist' has no effect"):
        params = load_params(path)
    assert params.tree == "boost_tree"
    assert params.identifier == ("runNo", "evtNo", "lumi")
    assert params.selected_branches == ()
    assert params.chunk_size == 10000


def test_defaults() -> None:
    params = load_params(None)
    assert params == Params()
    assert params.identifier == ("run", "event", "luminosityBlock")
    assert params.nevts == -1
    assert params.tree is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"chunksize": 5}, r"unknown key 'chunksize'; did you mean 'chunk_size'\?"),
        ({"nevts": "ten"}, r"'nevts' has the wrong type: 'ten'"),
        ({"nevts": 0}, r"'nevts' must be positive or -1"),
        ({"chunk_size": -5}, r"'chunk_size' must be positive or -1"),
        ({"split": 1.5}, r"'split' must be in \[0, 1\)"),
        ({"shuffle": "maybe"}, r"'shuffle' has the wrong type"),
        ({"selected_branches": [1, 2]}, r"'selected_branches' has the wrong type"),
        ({"xrootd_handler": "curl"}, r"'xrootd_handler' must be 'xrootd' or 'fsspec'"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, data: dict, message: str) -> None:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(data))
    with pytest.raises(m.ConfigError, match=message) as info:
        load_params(path)
    assert "params.json" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text('{\n  "nevts": 10,\n  "epochs": ,\n}')
    with pytest.raises(m.ConfigError, match=r"params.json' is not valid JSON: .* line 3, column 13"):
        load_params(path)


def test_params_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text("[1, 2]")
    with pytest.raises(m.ConfigError, match="must hold a JSON object"):
        load_params(path)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(m.ConfigError, match=r"nope\.json' does not exist"):
        load_params(tmp_path / "nope.json")


def test_string_booleans() -> None:
    assert load_params({"shuffle": "False"}).shuffle is False


def test_files_txt_format(tmp_path: Path) -> None:
    files = tmp_path / "files.txt"
    files.write_text("# signal\n/data/a.root\n\n  root://host//store/b.root  \n# end\n")
    assert read_file_list(files) == ["/data/a.root", "root://host//store/b.root"]
    assert read_file_list("a.root, b.root") == ["a.root", "b.root"]
    assert read_file_list([Path("/x.root")]) == ["/x.root"]
    with pytest.raises(m.ConfigError, match=r"files list .* does not exist"):
        read_file_list(tmp_path / "nofiles.txt")
    with pytest.raises(m.ConfigError, match="no input files"):
        read_file_list([])
