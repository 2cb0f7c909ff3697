"""Specs on real CMS/ATLAS-style files that nobody here wrote."""

from __future__ import annotations

import warnings

import pytest

import mlaas4hep_dask as m

from ._reference import assert_branch_matches, branch_stats, read_all
from .conftest import real_file

HZZ = ["uproot-HZZ.root", "uproot-HZZ-lz4.root", "uproot-HZZ-zstd.root", "uproot-HZZ-lzma.root"]


def _quiet_specs(files, params=None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return m.compute_specs(files, params, client="sync")


def test_hzz_matches_direct_computation() -> None:
    path = real_file("uproot-HZZ.root")
    specs = m.compute_specs([path], {"chunk_size": 500}, client="sync")
    assert specs.files[0].nevents == 2421
    assert specs.files[0].tree == "events"
    assert len(specs.branches) == 51
    assert specs.branches["Jet_ID"].kind == "jagged"
    assert specs.branches["Jet_ID"].dtype == "bool"
    data = read_all([path], "events", list(specs.branches))
    for name, spec in specs.branches.items():
        assert_branch_matches(spec, branch_stats(data[name]), name)


def test_compressions_give_identical_specs() -> None:
    specs = [m.compute_specs([real_file(name)], {"chunk_size": 1000}, client="sync") for name in HZZ]
    reference = specs[0].to_dict()
    for other in specs[1:]:
        data = other.to_dict()
        assert data["branches"] == reference["branches"]
        assert data["features"] == reference["features"]


def test_zmumu_string_branch_is_skipped_with_warning() -> None:
    with pytest.warns(UserWarning, match=r"'Type' \(non-numeric branch \(char\*\)\)"):
        specs = m.compute_specs([real_file("uproot-Zmumu.root")], client="sync")
    assert specs.skipped == {"Type": "non-numeric branch (char*)"}
    assert "Type" not in specs.branches
    assert specs.files[0].nevents == 2304


def test_explicitly_selected_string_branch_is_an_error() -> None:
    with pytest.raises(m.SchemaError, match=r"branch 'Type' .* cannot be used: non-numeric"):
        m.compute_specs(
            [real_file("uproot-Zmumu.root")], {"selected_branches": ["Type", "E1"]}, client="sync"
        )


def test_object_branches_are_reported_not_crashing() -> None:
    with pytest.warns(UserWarning, match="unsupported branches"):
        specs = m.compute_specs([real_file("uproot-HZZ-objects.root")], client="sync")
    assert "std::vector<TLorentzVector>" in specs.skipped["jetp4"]
    assert "TVector2" in specs.skipped["MET"]
    assert specs.branches["jetbtag"].kind == "jagged"  # std::vector<float> is fine
    data = read_all([real_file("uproot-HZZ-objects.root")], "events", ["jetbtag", "eventweight"])
    assert_branch_matches(specs.branches["jetbtag"], branch_stats(data["jetbtag"]), "jetbtag")


def test_doubly_jagged_branch_is_rejected_by_name() -> None:
    path = real_file("uproot-vectorVectorDouble.root")
    with pytest.raises(m.SchemaError, match=r"'x'.*doubly-jagged.*std::vector<std::vector<double>>"):
        m.compute_specs([path], {"selected_branches": ["x"]}, client="sync")
    with (
        pytest.raises(m.SchemaError, match="no usable numeric branch"),
        pytest.warns(UserWarning, match="doubly-jagged"),
    ):
        m.compute_specs([path], client="sync")


def test_nested_split_objects_use_full_paths() -> None:
    path = real_file("uproot-mc10events.root")
    specs = _quiet_specs([path])
    assert "Info/runNum" in specs.branches
    assert specs.branches["GenParticle/GenParticle.pt"].kind == "jagged"
    assert "std::bitset<256>" in specs.skipped["Info/triggerBits"]
    data = read_all([path], "Events", ["Info/nPUmean", "GenParticle/GenParticle.pt"])
    for name in ("Info/nPUmean", "GenParticle/GenParticle.pt"):
        assert_branch_matches(specs.branches[name], branch_stats(data[name]), name)


@pytest.mark.slow
def test_cms_nanoaod_all_branches_match() -> None:
    path = real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    specs = _quiet_specs([path], {"chunk_size": 64})
    assert specs.files[0].nevents == 200
    assert "run" not in specs.branches  # identifiers are not features
    assert "luminosityBlock" not in specs.branches
    assert len(specs.branches) == 944
    kinds = {b.kind for b in specs.branches.values()}
    assert kinds == {"flat", "jagged"}
    assert {b.dtype for b in specs.branches.values()} >= {"bool", "uint8", "int32", "float32"}
    data = read_all([path], "Events", list(specs.branches))
    for name, spec in specs.branches.items():
        assert_branch_matches(spec, branch_stats(data[name]), name)


def test_a_tree_of_hundreds_of_branches_none_selected_says_what_it_makes() -> None:
    path = real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    pattern = (
        r"all 944 branches of the tree are features, input dimension 2466 \(344 jagged .*; \d+ constant\), "
        r"generator truth \(Gen\*/LHE\*: \d+\) and trigger bits \(HLT_\*/L1_\*: \d+\) among them; .*'selected_branches'"
    )
    with pytest.warns(UserWarning, match=pattern):
        specs = m.compute_specs([path], {"chunk_size": 200}, client="sync")
    assert "Jet_btagDeepB" in specs.constant  # -1 in every jet of this file, as the issue found
    assert specs.branches["Jet_btagDeepB"].min == specs.branches["Jet_btagDeepB"].max == -1
    assert "Jet_pt" not in specs.constant
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.compute_specs([path], {"chunk_size": 200, "selected_branches": ["Jet_*"]}, client="sync")
