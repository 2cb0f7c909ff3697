from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.handle._specs import build_specs_graph
from mlaas4hep_dask.read._dataset import open_dataset
from mlaas4hep_dask.scale._cluster import compute

from ._reference import assert_branch_matches, branch_stats, read_all


def test_generated_specs_match_direct_computation(generated: list[Path]) -> None:
    specs = m.compute_specs(generated, {"chunk_size": 700}, client="sync")
    names = list(specs.branches)
    data = read_all(generated, "events", names)
    for name in names:
        assert_branch_matches(specs.branches[name], branch_stats(data[name]), name)
    assert [f.nevents for f in specs.files] == [3000, 3000]
    assert [f.tree for f in specs.files] == ["events", "events"]


def test_identifiers_are_not_features_and_kinds_are_right(generated: list[Path]) -> None:
    specs = m.compute_specs(generated, client="sync")
    assert "run" not in specs.branches
    assert "event" not in specs.branches
    assert specs.branches["nJets"].kind == "flat"
    assert specs.branches["nJets"].dtype == "int32"
    assert specs.branches["jetPt"].kind == "jagged"
    assert specs.branches["jetPt"].dtype == "float32"


def test_feature_order_and_idim(generated: list[Path]) -> None:
    specs = m.compute_specs(generated, {"selected_branches": ["nJets", "MET", "lepton*"]}, client="sync")
    jdim = specs.branches["leptonPt"].jdim
    assert specs.flat == ["MET", "nJets"]  # tree order, not selection order
    assert specs.jagged == ["leptonPt", "leptonEta"]
    assert specs.features[:2] == ["MET", "nJets"]
    assert specs.features[2 : 2 + jdim] == [f"leptonPt[{i}]" for i in range(jdim)]
    assert specs.features[-1] == f"leptonEta[{jdim - 1}]"
    assert specs.idim == 2 + 2 * jdim == len(specs.to_dict()["features"])


def test_chunking_does_not_change_specs(generated: list[Path]) -> None:
    one = m.compute_specs(generated, {"chunk_size": -1}, client="sync")
    many = m.compute_specs(generated, {"chunk_size": 333}, client="threads")
    for name, spec in one.branches.items():
        other = many.branches[name]
        assert (spec.min, spec.max, spec.jdim, spec.nonfinite) == (
            other.min,
            other.max,
            other.jdim,
            other.nonfinite,
        )
        assert spec.mean == pytest.approx(other.mean, rel=1e-12)
        assert spec.std == pytest.approx(other.std, rel=1e-12)


def test_partitions_follow_chunk_size_and_nevts(generated: list[Path]) -> None:
    ds = open_dataset(generated, {"chunk_size": 1000})
    assert ds.partitions == tuple((i, s, s + 1000) for i in (0, 1) for s in (0, 1000, 2000))
    assert ds.to_dask().npartitions == 6
    limited = open_dataset(generated, {"chunk_size": 1000, "nevts": 2500})
    assert limited.nevents == 2500
    assert [p for p in limited.partitions if p[0] == 0] == [(0, 0, 1000), (0, 1000, 1250)]
    specs = m.compute_specs(generated, {"nevts": 2501}, client="sync")
    assert sorted(f.nevents for f in specs.files) == [1250, 1251]


def _first_entry(partition: ak.Array, file_index: int, start: int) -> tuple[int, int, int, float]:
    return file_index, start, len(partition), float(partition["MET"][0])


def test_map_partitions_reads_and_calls_in_one_task_per_partition(tmp_path: Path) -> None:
    files = generate(tmp_path, events=900, files=1, seed=3, basket=100)
    ds = open_dataset(files, {"chunk_size": 200})
    tasks = ds.map_partitions(_first_entry, ["MET"])
    assert [len(t.__dask_graph__()) for t in tasks] == [1] * len(ds.partitions)
    assert "read-_first_entry" in str(tasks[0].key)
    got = compute(tasks, "sync")
    for (f, a, b), (file_index, start, n, met) in zip(ds.partitions, got, strict=True):
        assert (file_index, start, n) == (f, a, b - a)
        with uproot.open(files[f]) as tree:
            assert met == float(tree["events"]["MET"].array(entry_start=a, entry_stop=a + 1, library="np")[0])
    with pytest.raises(m.SchemaError, match="unknown branches \\['nope'\\]"):
        ds.map_partitions(_first_entry, ["MET", "nope"])


def test_graph_stays_small(tmp_path: Path) -> None:
    ds = open_dataset(generate(tmp_path, events=3000, files=1, seed=7, basket=100), {"chunk_size": 100})
    graph = build_specs_graph(ds).__dask_graph__()
    nparts = len(ds.partitions)
    assert nparts == 60
    # one task per partition (it reads and describes) + the combine tree (fan-in 8), nothing per branch
    assert len(graph) <= nparts + nparts // 7 + 2


def test_only_selected_columns_are_read(generated: list[Path]) -> None:
    import dask_awkward as dak

    ds = open_dataset(generated, {"selected_branches": ["MET", "jetPt"]})
    arr = ds.to_dask()
    needed = dak.report_necessary_columns(arr[["MET", "jetPt"]])
    (columns,) = needed.values()
    assert set(columns) <= {"MET", "jetPt", "nJets"}


def test_save_load_roundtrip_and_layout(generated: list[Path], tmp_path: Path) -> None:
    specs = m.compute_specs(generated, client="sync")
    path = tmp_path / "specs.json"
    specs.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert set(data) >= {"files", "branches", "skipped", "features", "idim"}
    assert data["branches"]["jetPt"]["jdim"] == specs.branches["jetPt"].jdim
    assert "jdim" not in data["branches"]["MET"]
    assert m.Specs.load(path) == specs


def test_original_specs_format_is_read(tmp_path: Path) -> None:
    original = {
        "jdim": {"jetPt": 3},
        "minv": {"MET": 0.0, "jetPt": 20.0},
        "maxv": {"MET": 300.0, "jetPt": 500.0},
        "fkeys": ["MET"],
        "jkeys": ["jetPt"],
        "nans": {"MET": 0.0, "jetPt": 0.0},
        "events": {"total": 30, "a.root": 10, "b.root": 20},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(original))
    specs = m.Specs.load(path)
    assert specs.features == ["MET", "jetPt[0]", "jetPt[1]", "jetPt[2]"]
    assert specs.branches["jetPt"].max == 500.0
    assert specs.nevents == 30


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"files": 3}'])
def test_bad_specs_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "specs.json"
    path.write_text(content)
    with pytest.raises(m.SpecsError, match="specs"):
        m.Specs.load(path)


def test_nonfinite_values_are_counted_and_left_out(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "nan.root"
    with uproot.recreate(path) as f:
        f.mktree("t", {"x": "float64", "v": "var * float32"})
        f["t"].extend(
            {
                "x": np.array([1.0, np.nan, 3.0, np.inf, -2.0]),
                "v": ak.Array([[1.0, np.nan], [], [-np.inf, 5.0, 2.0], [0.5], []]),
            }
        )
    specs = m.compute_specs([path], client="sync")
    x, v = specs.branches["x"], specs.branches["v"]
    assert (x.min, x.max, x.nonfinite) == (-2.0, 3.0, 2)
    assert x.mean == pytest.approx(2 / 3)
    assert (v.min, v.max, v.nonfinite, v.jdim) == (0.5, 5.0, 2, 3)
    assert v.mean_len == pytest.approx(6 / 5)


def test_all_empty_jagged_branch(tmp_path: Path) -> None:

    path = tmp_path / "empty.root"
    with uproot.recreate(path) as f:
        f.mktree("t", {"x": "int32", "v": "var * float32"})
        f["t"].extend({"x": ak.Array([1, 2]), "v": ak.Array([[], []])})
    specs = m.compute_specs([path], client="sync")
    v = specs.branches["v"]
    assert (v.min, v.max, v.mean, v.std, v.jdim, v.mean_len) == (None, None, None, None, 0, 0.0)
    assert specs.features == ["x", "nv"]  # the counter branch uproot wrote is a flat branch


@pytest.mark.distributed
@pytest.mark.slow
def test_local_cluster_gives_identical_specs(generated: list[Path]) -> None:
    from mlaas4hep_dask.scale._cluster import connect

    reference = m.compute_specs(generated, {"chunk_size": 500}, client="sync")
    with connect("local", n_workers=2) as client:
        specs = m.compute_specs(generated, {"chunk_size": 500}, client=client)
    assert specs.files == reference.files
    for name, spec in reference.branches.items():
        other = specs.branches[name]
        assert (spec.min, spec.max, spec.jdim) == (other.min, other.max, other.jdim)
        assert spec.mean == pytest.approx(other.mean, rel=1e-12)


def test_an_opened_dataset_is_reused_only_with_its_params(generated: list[Path]) -> None:
    ds = open_dataset(generated, {"chunk_size": 1000})
    assert open_dataset(ds, {"chunk_size": 1000}) is ds
    assert m.compute_specs(ds, {"chunk_size": 1000}, client="sync").nevents == 6000
    with pytest.raises(m.ConfigError, match="other params than the ones it was opened with"):
        open_dataset(ds, {"chunk_size": 500})


def test_original_specs_in_flat_then_jagged_order_are_put_in_the_trees(
    generated: list[Path], tmp_path: Path
) -> None:
    import numpy as np

    params = {"chunk_size": 5000, "shuffle": False, "batch_size": 100_000}
    ours = m.compute_specs(generated, params, client="sync")
    flat, jagged = ours.flat, ours.jagged
    assert list(ours.branches) != flat + jagged  # the tree mixes them: the original order differs
    b = ours.branches
    original = {
        "fkeys": flat[::-1],
        "jkeys": jagged,
        "jdim": {n: b[n].jdim for n in jagged},
        "minv": {n: b[n].min for n in b},
        "maxv": {n: b[n].max for n in b},
        "nans": dict.fromkeys(b, 0.0),
    }
    path = tmp_path / "specs-original.json"
    path.write_text(json.dumps(original))
    with pytest.warns(UserWarning, match=r"another order: \d+ put in the tree's order \("):
        loader = m.BatchLoader(generated, path, params, labels=[1, 0], split="test", client="sync")
    assert loader.features == ours.features
    X, _ = next(iter(loader))
    expected, _ = next(
        iter(m.BatchLoader(generated, ours, params, labels=[1, 0], split="test", client="sync"))
    )
    np.testing.assert_array_equal(X, expected)


def test_branch_selection_by_names_and_globs() -> None:
    from mlaas4hep_dask.errors import SchemaError
    from mlaas4hep_dask.read._branches import Branch, select_branches

    names = ["jet_pt", "jet_eta", "jetE", "mu_pt", "mu_eta", "el_pt", "MET", "run", "bad"]
    classified: dict[str, Branch | str] = {n: Branch(n, "flat", "float32") for n in names}
    classified["bad"] = "object branch (TLorentzVector) is not supported"
    usable, skipped = select_branches(
        classified, ["MET", "jet_*", "[me][ul]_pt"], ["*_eta"], ["run"], "f.root"
    )
    assert list(usable) == ["jet_pt", "mu_pt", "el_pt", "MET"]  # tree order, globs anchored
    assert skipped == {}
    with pytest.warns(UserWarning, match="skipping 1 unsupported branches: 'bad'"):
        usable, _ = select_branches(classified, [], ["jet*", "mu_?t", "e[!x]_pt"], ["run"], "f.root")
    assert list(usable) == ["mu_eta", "MET"]
    with pytest.raises(SchemaError, match=r"'jet_PT' matches no branch in the tree; nearest: 'jet_pt'"):
        select_branches(classified, ["jet_PT"], [], [], "f.root")
    with pytest.raises(SchemaError, match=r"'tau_\*' matches no branch"):
        select_branches(classified, ["tau_*"], [], [], "f.root")
    with pytest.raises(SchemaError, match=r"branch 'bad' in 'f\.root' cannot be used"):
        select_branches(classified, ["bad"], [], [], "f.root")


def test_inspection_of_a_local_file_is_reused_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from mlaas4hep_dask.read import _inspect as io

    path = tmp_path / "a.root"
    with uproot.recreate(path) as fout:
        fout.mktree("events", {"x": np.float64}).extend({"x": np.arange(10.0)})
    inspected: list[str] = []
    inspect_file = io._inspect_file
    monkeypatch.setattr(io, "_inspect_file", lambda *a: inspected.append(a[0]) or inspect_file(*a))
    assert list(open_dataset([str(path)]).branches) == ["x"]
    monkeypatch.chdir(tmp_path)
    again = open_dataset(["a.root"])
    assert (list(again.branches), again.files[0].path, inspected) == (["x"], "a.root", [str(path)])
    with uproot.recreate(path) as fout:  # rewritten: another size and time
        fout.mktree("events", {"x": np.float64, "y": np.float64}).extend(
            {"x": np.arange(10.0), "y": np.arange(10.0)}
        )
    assert list(open_dataset([str(path)]).branches) == ["x", "y"]
    assert len(inspected) == 2
    path.unlink()
    with pytest.raises(m.InputNotFoundError, match=r"a\.root' does not exist"):
        open_dataset([str(path)])


def test_inspections_held_within_their_memory_budget(generated: list[Path]) -> None:
    from mlaas4hep_dask.read import _inspect as io

    found = io._inspect_file(str(generated[0]), str(generated[0]), m.load_params({}))
    held = io._Inspections(budget=1)
    held.put(("a",), found)  # more than the budget alone: not kept
    assert held.get(("a",)) is None
    held = io._Inspections(budget=2**20)
    for key in "abc":
        held.put((key,), found)
    assert held.get(("a",)) is not None  # a is now the most recently used
    held.budget = held._held - 1
    held.put(("d",), found)
    assert [held.get((k,)) is not None for k in "abcd"] == [True, False, False, True]
