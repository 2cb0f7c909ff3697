"""preproc.json against direct awkward/NumPy computations, and every rejection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.handle._preprocess import load_preproc, make_plan
from mlaas4hep_dask.handle._specs import build_specs_graph
from mlaas4hep_dask.read._dataset import open_dataset
from mlaas4hep_dask.scale._cluster import compute

from ._reference import assert_branch_matches, branch_stats, read_all
from .conftest import real_file

EXAMPLE = {
    "new_branch": {
        "log_partonE": {
            "def": "log(partonE)",
            "type": "jagged",
            "cut_1": ["log_partonE<6.9", "any"],
            "cut_2": ["log_partonE>4.8", "all"],
            "remove": "False",
            "keys_to_remove": ["partonE"],
        },
        "nJets_square": {
            "def": "nJets**2",
            "type": "flat",
            "cut": "1<=nJets_square<=64",
            "remove": "False",
            "keys_to_remove": ["nJets"],
        },
    },
    "flat_cut": {"nLeptons": {"cut": "0<=nLeptons<=1", "remove": "False"}},
    "jagged_cut": {"partonPt": {"cut": ["partonPt>30", "all"], "remove": "False"}},
}


def _specs(files: Any, preproc: Any, params: Any = None) -> m.Specs:
    return m.compute_specs(files, params or {"chunk_size": 1100}, preproc=preproc, client="sync")


def test_example_matches_direct_computation(generated: list[Path]) -> None:
    specs = _specs(generated, EXAMPLE)
    per_file = []
    for path in generated:
        a = read_all([path], "events", ["partonE", "nJets", "nLeptons", "partonPt", "jetPt", "MET"])
        log_e = np.log(a.partonE)
        masks = [
            ak.any(log_e < 6.9, axis=1),
            ak.all(log_e > 4.8, axis=1),
            (1 <= a.nJets**2) & (a.nJets**2 <= 64),
            (0 <= a.nLeptons) & (a.nLeptons <= 1),
            ak.all(a.partonPt > 30, axis=1),
        ]
        per_file.append((a, log_e, masks))
    # the cut flow: cumulative AND, summed over files
    flow = [sum(len(a) for a, _, _ in per_file)]
    for i in range(5):
        flow.append(
            sum(
                int(ak.sum(np.logical_and.reduce([np.asarray(mk) for mk in masks[: i + 1]])))
                for _, _, masks in per_file
            )
        )
    assert [s["events"] for s in specs.preproc["cutflow"]] == flow
    assert [s["step"] for s in specs.preproc["cutflow"]][1:] == [
        "new_branch.log_partonE.cut_1", "new_branch.log_partonE.cut_2", "new_branch.nJets_square.cut",
        "flat_cut.nLeptons.cut", "jagged_cut.partonPt.cut",
    ]  # fmt: skip
    assert specs.preproc["definition"] == EXAMPLE
    keep = [np.logical_and.reduce([np.asarray(mk) for mk in masks]) for _, _, masks in per_file]
    assert [f.nevents for f in specs.files] == [int(k.sum()) for k in keep]
    log_e_all = ak.concatenate([log_e[k] for (_, log_e, _), k in zip(per_file, keep, strict=True)])
    assert_branch_matches(specs.branches["log_partonE"], branch_stats(log_e_all), "log_partonE")
    nj2 = ak.concatenate([a.nJets[k] ** 2 for (a, _, _), k in zip(per_file, keep, strict=True)])
    assert_branch_matches(specs.branches["nJets_square"], branch_stats(nj2), "nJets_square")
    met = ak.concatenate([a.MET[k] for (a, _, _), k in zip(per_file, keep, strict=True)])
    assert_branch_matches(specs.branches["MET"], branch_stats(met), "MET")
    # keys_to_remove left the features; new branches came in after the selected ones
    assert "partonE" not in specs.branches
    assert "nJets" not in specs.branches
    assert list(specs.branches)[-2:] == ["log_partonE", "nJets_square"]
    assert specs.branches["nJets_square"].dtype == "int32"


def test_any_and_all_on_empty_lists(generated: list[Path]) -> None:
    a = read_all(generated, "events", ["leptonPt"])
    empty = int(ak.sum(ak.num(a.leptonPt) == 0))
    assert empty > 100  # the generated data has events without leptons
    any_ = _specs(generated, {"jagged_cut": {"leptonPt": {"cut": ["leptonPt>30", "any"]}}})
    all_ = _specs(generated, {"jagged_cut": {"leptonPt": {"cut": ["leptonPt>30", "all"]}}})
    assert any_.nevents == int(ak.sum(ak.any(a.leptonPt > 30, axis=1)))
    assert all_.nevents == int(ak.sum(ak.all(a.leptonPt > 30, axis=1)))
    # an empty list fails 'any' and passes 'all'
    only_empty = {"jagged_cut": {"leptonPt": {"cut": ["leptonPt<0", "all"]}}}
    assert _specs(generated, only_empty).nevents == empty
    none = {"jagged_cut": {"leptonPt": {"cut": ["leptonPt>0", "any"]}}}
    assert _specs(generated, none).nevents == len(a) - empty


def test_new_jagged_branch_used_by_later_new_branch_with_broadcast(generated: list[Path]) -> None:
    preproc = {
        "new_branch": {
            "jetPtFrac": {"def": "jetPt / HT", "type": "jagged"},
            "logFrac": {"def": "-log(jetPtFrac) + 0 * MET", "type": "jagged", "cut": ["logFrac < 5", "all"]},
        }
    }
    specs = _specs(generated, preproc)
    a = read_all(generated, "events", ["jetPt", "HT", "MET"])
    frac = a.jetPt / a.HT
    log_frac = -np.log(frac) + 0 * a.MET
    keep = ak.all(log_frac < 5, axis=1)
    assert specs.nevents == int(ak.sum(keep))
    assert_branch_matches(specs.branches["jetPtFrac"], branch_stats(frac[keep]), "jetPtFrac")
    assert_branch_matches(specs.branches["logFrac"], branch_stats(log_frac[keep]), "logFrac")
    assert specs.branches["logFrac"].jdim == specs.branches["jetPt"].jdim


def test_remove_true_drops_feature_but_keeps_its_cut(generated: list[Path]) -> None:
    preproc = {
        "flat_cut": {"MET": {"cut": "MET > 40", "remove": "True"}},
        "new_branch": {"ht2": {"def": "HT * 2", "type": "flat", "cut": "ht2 > 900", "remove": True}},
    }
    specs = _specs(generated, preproc)
    a = read_all(generated, "events", ["MET", "HT"])
    assert specs.nevents == int(ak.sum((a.MET > 40) & (a.HT * 2 > 900)))
    assert "MET" not in specs.branches
    assert "ht2" not in specs.branches
    assert "HT" in specs.branches


def test_cuts_on_unselected_and_identifier_branches_read_them(generated: list[Path]) -> None:
    params = {"selected_branches": ["HT", "jetPt"], "chunk_size": 2000}
    specs = _specs(
        generated,
        {
            "flat_cut": {"event": {"cut": "event < 1000"}},
            "jagged_cut": {"leptonPt": {"cut": ["leptonPt > 25", "any"]}},
        },
        params,
    )
    a = read_all(generated, "events", ["event", "leptonPt"])
    assert specs.nevents == int(ak.sum((a.event < 1000) & ak.any(a.leptonPt > 25, axis=1)))
    assert list(specs.branches) == ["HT", "jetPt"]


def test_cut_numbering_is_numeric_not_lexical(generated: list[Path]) -> None:
    cuts = {f"cut_{i}": f"HT > {100 + i}" for i in (10, 2, 1)}
    preproc = load_preproc({"flat_cut": {"HT": cuts}})
    assert [c.key for c in preproc.cuts] == ["flat_cut.HT.cut_1", "flat_cut.HT.cut_2", "flat_cut.HT.cut_10"]


def test_real_hzz_file() -> None:
    path = real_file("uproot-HZZ.root")
    preproc = {
        "new_branch": {
            "Jet_Pt": {"def": "sqrt(Jet_Px**2 + Jet_Py**2)", "type": "jagged", "cut": ["Jet_Pt > 30", "any"]}
        },
        "flat_cut": {"NMuon": {"cut": "1 <= NMuon <= 3"}},
        "jagged_cut": {"Muon_E": {"cut": ["Muon_E < 1000", "all"]}},
    }
    specs = _specs([path], preproc, {"chunk_size": 500})
    a = read_all([path], "events", ["Jet_Px", "Jet_Py", "NMuon", "Muon_E"])
    pt = np.sqrt(a.Jet_Px**2 + a.Jet_Py**2)
    keep = ak.any(pt > 30, axis=1) & (a.NMuon >= 1) & (a.NMuon <= 3) & ak.all(a.Muon_E < 1000, axis=1)
    assert specs.nevents == int(ak.sum(keep))
    assert_branch_matches(specs.branches["Jet_Pt"], branch_stats(pt[keep]), "Jet_Pt")


@pytest.mark.slow
def test_real_cms_nanoaod() -> None:
    path = real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    preproc = {
        "new_branch": {"Jet_ptOverMET": {"def": "Jet_pt / MET_pt", "type": "jagged"}},
        "flat_cut": {"PV_npvs": {"cut": "PV_npvs >= 5"}},
        "jagged_cut": {"Jet_pt": {"cut": ["Jet_pt > 20", "any"]}},
    }
    params = {"selected_branches": ["Jet_pt", "MET_pt", "Muon_*"], "chunk_size": 64}
    specs = _specs([path], preproc, params)
    a = read_all([path], "Events", ["Jet_pt", "MET_pt", "PV_npvs"])
    keep = (a.PV_npvs >= 5) & ak.any(a.Jet_pt > 20, axis=1)
    assert specs.nevents == int(ak.sum(keep))
    ratio = (a.Jet_pt / a.MET_pt)[keep]
    assert_branch_matches(specs.branches["Jet_ptOverMET"], branch_stats(ratio), "Jet_ptOverMET")


REJECTIONS = [
    ({"new_branch": {"x": {"def": "log(partonEE)", "type": "jagged"}}},
     r"new_branch 'x' def: unknown branch 'partonEE'; nearest: 'partonE'"),
    ({"new_branch": {"x": {"def": "log(partonE)", "type": "flat"}}},
     r"new_branch 'x': 'type' is 'flat' but 'log\(partonE\)' is jagged"),
    ({"new_branch": {"x": {"def": "log(HT)", "type": "jagged"}}}, r"'type' is 'jagged' but 'log\(HT\)' is flat"),
    ({"new_branch": {"x": {"def": "HT", "type": "vector"}}}, r"new_branch 'x': 'type' must be \"flat\" or \"jagged\""),
    ({"new_branch": {"x": {"type": "flat"}}}, r"new_branch 'x': missing 'def'"),
    ({"new_branch": {"HT": {"def": "MET", "type": "flat"}}}, r"new_branch 'HT': a branch named 'HT' already exists"),
    ({"new_branch": {"x": {"def": "jetPt", "type": "jagged", "cut": "x > 3"}}},
     r"new_branch 'x' cut: a cut on a jagged branch is \[\"expression\", \"any\"\|\"all\"\]"),
    ({"jagged_cut": {"jetPt": {"cut": ["jetPt > 30", "some"]}}}, r"jagged_cut 'jetPt' cut: a cut on a jagged branch is"),
    ({"jagged_cut": {"jetPt": {"cut": "jetPt > 30"}}}, r"jagged_cut 'jetPt' cut: a cut on a jagged branch is"),
    ({"flat_cut": {"jetPt": {"cut": "jetPt > 30"}}}, r"flat_cut 'jetPt': 'jetPt' is a jagged branch; put its cut under jagged_cut"),
    ({"jagged_cut": {"HT": {"cut": ["HT > 30", "any"]}}}, r"jagged_cut 'HT': 'HT' is a flat branch; put its cut under flat_cut"),
    ({"flat_cut": {"HT": {"cut": "MET > 30"}}}, r"flat_cut 'HT' cut: the cut 'MET > 30' does not use the branch 'HT'"),
    ({"flat_cut": {"HT": {"cut": "HT + 30"}}}, r"flat_cut 'HT' cut: a cut must be a comparison"),
    ({"flat_cut": {"HT": {"cut": "1 < 2"}}}, r"the cut '1 < 2' does not use the branch 'HT'"),
    ({"flat_cut": {"HTT": {"cut": "HTT > 3"}}}, r"flat_cut 'HTT': unknown branch 'HTT'; nearest: 'HT'"),
    ({"flat_cut": {"HT": {"remove": "True"}}}, r"flat_cut 'HT': no 'cut' given"),
    ({"flat_cut": {"HT": {"cut": "HT > 1", "cuts": "HT < 5"}}}, r"flat_cut 'HT': unknown key 'cuts'"),
    ({"flat_cut": {"HT": {"cut": "HT > 1", "cut_1": "HT < 5"}}}, r"use either 'cut' or 'cut_1'"),
    ({"flat_cut": {"HT": {"cut": "HT > 1", "remove": "maybe"}}}, r"'remove' must be true/false"),
    ({"flat_cuts": {}}, r"unknown section 'flat_cuts'"),
    ({"new_branch": {"x": {"def": "log(partonE)", "type": "jagged", "keys_to_remove": ["partonE"]}},
      "jagged_cut": {"partonE": {"cut": ["partonE > 3", "any"]}}},
     r"jagged_cut 'partonE': branch 'partonE' was removed by new_branch 'x' \(keys_to_remove\)"),
    ({"new_branch": {"x": {"def": "HT", "type": "flat", "keys_to_remove": ["HT"]},
                     "y": {"def": "HT * 2", "type": "flat"}}},
     r"new_branch 'y' def: branch 'HT' was removed by new_branch 'x'"),
    ({"new_branch": {"x": {"def": "HT", "type": "flat", "keys_to_remove": ["HTX"]}}}, r"keys_to_remove: unknown branch 'HTX'"),
    ({"new_branch": {"x": {"def": "__import__('os').system('touch /tmp/pwned')", "type": "flat"}}},
     r"new_branch 'x' def: expression .*only whitelisted functions can be called"),
    ({"flat_cut": {"HT": {"cut": "HT.__class__ > 1"}}}, r"flat_cut 'HT' cut: expression .*attribute access is not allowed"),
    ({"new_branch": {"x": {"def": "HT * partonE * jetPt", "type": "jagged"}}}, r"new_branch 'x' def: 'HT \* partonE \* jetPt' combines jagged branches of different lengths: "
     r"'partonE' \(counted by 'nPartons'\), 'jetPt' \(counted by 'nJets'\)"),
]  # fmt: skip


@pytest.mark.parametrize(("preproc", "message"), REJECTIONS)
def test_rejections_name_the_key_before_reading(generated: list[Path], preproc: dict, message: str) -> None:
    dataset = open_dataset(generated)
    with pytest.raises(m.ConfigError, match=message):
        make_plan(load_preproc(preproc), dataset.available, dataset.branches)


def test_malformed_preproc_file(generated: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "preproc.json"
    path.write_text('{"flat_cut": {"HT": {"cut": "HT > 1",}}}')
    with pytest.raises(m.ConfigError, match=r"preproc file .*preproc.json' is not valid JSON: .* line 1"):
        m.compute_specs(generated, preproc=path, client="sync")
    path.write_text(json.dumps({"flat_cut": {"HT": {"cut": "HT >> 1"}}}))
    with pytest.raises(
        m.ExpressionError, match=r"preproc file .*flat_cut 'HT' cut: expression 'HT >> 1': operator RShift"
    ):
        m.compute_specs(generated, preproc=path, client="sync")


def test_building_the_graph_reads_no_data(generated: list[Path], tmp_path: Path) -> None:
    """Every basket zeroed out: opening, planning and building the graph still work; computing fails."""
    wiped = []
    for path in generated:
        data = bytearray(path.read_bytes())
        for branch in uproot.open(path)["events"].branches:
            for i in range(branch.num_baskets):
                seek = int(branch.member("fBasketSeek")[i])
                data[seek : seek + int(branch.member("fBasketBytes")[i])] = bytes(
                    int(branch.member("fBasketBytes")[i])
                )
        wiped.append(tmp_path / path.name)
        wiped[-1].write_bytes(bytes(data))
    dataset = open_dataset(wiped, {"chunk_size": 500})
    plan = make_plan(load_preproc(EXAMPLE), dataset.available, dataset.branches)
    graph = build_specs_graph(dataset, plan)
    assert len(graph.__dask_graph__()) <= len(dataset.partitions) + len(dataset.partitions) // 7 + 2
    with pytest.raises(
        m.InputError, match=r"\.root' is damaged: tree 'events', branch '\w+', entries \d+-\d+"
    ):
        compute([graph], "sync")
    (stats,) = compute([build_specs_graph(open_dataset(generated, {"chunk_size": 500}), plan)], "sync")
    assert stats.cutflow[0] == 6000


def test_mismatched_vectors_fail_on_the_data_naming_the_entry() -> None:
    """std::vector branches have no counter: a length mismatch can only show on the data."""
    path = real_file("uproot-HZZ-objects.root")
    preproc = {"new_branch": {"x": {"def": "jetbtag * muoniso", "type": "jagged"}}}
    params = {"selected_branches": ["jetbtag", "muoniso"]}
    with pytest.raises(
        m.ExpressionError, match=r"preproc new_branch 'x' def: 'jetbtag \* muoniso' failed on the data"
    ):
        m.compute_specs([path], params, preproc=preproc, client="sync")


def test_scoring_reads_nothing_that_only_made_the_label(generated: list[Path]) -> None:
    recipe = load_preproc(
        {
            "new_branch": {
                "is_busy": {"def": "nPartons > 6", "type": "flat", "remove": True},  # the label only
                "ht2": {"def": "HT * 2", "type": "flat", "cut": "ht2 > 100", "remove": True},  # a cut
            }
        }
    )
    ds = open_dataset(generated, {"selected_branches": ["MET", "jetPt"]})
    plan = make_plan(recipe, ds.available, ds.branches, ["is_busy"])
    assert set(plan.columns) == {"MET", "jetPt", "nPartons", "HT"}
    scoring = plan.for_scoring()
    assert set(scoring.columns) == {"MET", "jetPt", "HT"}  # HT feeds a cut: still read
    assert [nb.name for nb in scoring.preproc.new_branches] == ["ht2"]  # type: ignore[union-attr]
    events = read_all(generated, "events", ["MET", "jetPt", "HT"])
    assert len(scoring.select(events).record) == int(ak.sum(events.HT * 2 > 100))
