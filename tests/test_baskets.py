"""Plain numeric branches read basket by basket give exactly what uproot gives, and the rest
falls back to uproot: real ROOT-written files (every compression), uproot-written layouts."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from mlaas4hep_dask.read._baskets import plain_branch, read_plain
from mlaas4hep_dask.read._reader import _read

from . import _layouts as L
from .conftest import real_file

REAL = [
    ("uproot-HZZ.root", "events"),
    ("uproot-HZZ-lz4.root", "events"),
    ("uproot-HZZ-lzma.root", "events"),
    ("uproot-HZZ-zstd.root", "events"),
    ("uproot-HZZ-objects.root", "events"),
    ("uproot-Zmumu.root", "events"),
    ("uproot-mc10events.root", "Events"),
    ("nanoAOD_2015_CMS_Open_Data_ttbar.root", "Events"),
]


def _readable(tree: uproot.TTree) -> list[str]:
    """Every branch uproot can read into awkward arrays."""
    out = []
    for name in tree.keys(recursive=True):
        try:
            tree[name].array(entry_stop=1, library="ak")
        except Exception:
            continue
        out.append(name)
    return out


def _assert_same(tree: uproot.TTree, columns: list[str], start: int, stop: int) -> None:
    ours = _read(tree, columns, start, stop)
    theirs = tree.arrays(columns, entry_start=start, entry_stop=stop, library="ak", array_cache=None)
    assert str(ours.type) == str(theirs.type)
    assert ak.array_equal(ours, theirs, equal_nan=True), (start, stop)


def _ranges(n: int, seed: int, random: int = 4) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    cuts = [tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for _ in range(random)]
    return [(0, n), (n // 3, n // 3 + 1), *cuts]


@pytest.mark.parametrize(("name", "tree_name"), REAL)
def test_real_files_read_as_uproot_reads_them(name: str, tree_name: str) -> None:
    tree = uproot.open(real_file(name))[tree_name]
    columns = _readable(tree)
    for start, stop in _ranges(tree.num_entries, seed=len(name), random=4 if len(columns) < 100 else 1):
        _assert_same(tree, columns, start, stop)


def test_which_branches_are_read_basket_by_basket() -> None:
    hzz = uproot.open(real_file("uproot-HZZ.root"))["events"]
    assert plain_branch(hzz["Muon_Px"], 0, hzz.num_entries)  # float[NMuon]
    assert plain_branch(hzz["NMuon"], 0, hzz.num_entries)
    # and they are, in every compression ROOT writes
    for name in ("uproot-HZZ.root", "uproot-HZZ-lz4.root", "uproot-HZZ-lzma.root", "uproot-HZZ-zstd.root"):
        tree = uproot.open(real_file(name))["events"]
        layouts = read_plain(tree.file.source, [tree["Muon_Px"], tree["MET_px"]], 0, tree.num_entries)
        assert all(layout is not None for layout in layouts), name
    objects = uproot.open(real_file("uproot-HZZ-objects.root"))["events"]
    assert not plain_branch(objects["muonp4"], 0, objects.num_entries)  # objects: uproot reads them
    nano = uproot.open(real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root"))["Events"]
    # this file's baskets sit in the TTree's metadata (embedded): uproot reads them
    assert not plain_branch(nano["Muon_pt"], 0, nano.num_entries)


@pytest.mark.parametrize("layout", ["small", "big", "staggered"])
def test_layouts_read_as_uproot_reads_them(tmp_path: Path, layout: str) -> None:
    n, path, data = 6_000, tmp_path / f"{layout}.root", L.events(6_000, seed=5)
    if layout == "small":
        L.write_baskets(path, data, 500)
    elif layout == "big":
        L.write_baskets(path, data, n)
    else:
        L.write_staggered(path, data, {name: [700, 2300, 1100, 1900] for name in (*L.FLAT, *L.JAGGED)})
    tree = uproot.open(path)[L.TREE]
    columns = list(tree.keys())
    assert all(plain_branch(tree[c], 0, n) for c in columns)
    for start, stop in [*_ranges(n, seed=1), (500, 1000), (700, 3000), (2999, 3001)]:
        _assert_same(tree, columns, start, stop)
    values = _read(tree, ["v1"], 0, n)["v1"]
    assert ak.array_equal(values, data["v1"])


def test_list_ends_of_a_basket_and_damaged_tables() -> None:
    from mlaas4hep_dask.read._kernels import basket_list_ends

    def table(*offsets: int) -> np.ndarray:  # their number, then the offsets (the last one ignored)
        return np.frombuffer(b"-" + np.array([len(offsets), *offsets], dtype=">i4").tobytes(), np.uint8)[
            1:
        ].view(np.uint32)  # as in a basket: right after the data, at any alignment

    out = np.full(5, -1, dtype=np.int64)
    # three lists of 1, 0 and 4 float32 items after a 10-byte key: the last ends at the data's end
    assert basket_list_ends(table(10, 14, 14, 999), 10, 20, 4, out, 1, 7)
    np.testing.assert_array_equal(out, [-1, 8, 8, 12, -1])
    assert not basket_list_ends(table(10, 18, 14, 0), 10, 20, 4, out, 1, 0)  # goes back
    assert not basket_list_ends(table(12, 14, 14, 0), 10, 20, 4, out, 1, 0)  # not at the data
    assert not basket_list_ends(table(10, 14, 31, 0), 10, 20, 4, out, 1, 0)  # past the data's end
    assert basket_list_ends(table(0), 10, 0, 4, out, 1, 0)  # an empty basket
    assert not basket_list_ends(table(0), 10, 8, 4, out, 1, 0)
