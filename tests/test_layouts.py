"""Partitions on basket boundaries: the same events in any basket layout give the same specs and
batches, and one pass inflates (and fetches) every basket once."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.read._partitions import BasketLayout, partition_edges

from . import _layouts as L
from ._servers import counting_proxy, http_server, xrootd_server

EVENTS = 12_000
CLUSTER = 3_000  # ROOT's auto-flush: every branch starts a basket here; in between they differ
# inside each cluster, each branch's two baskets end at a different entry
STAGGER = {"a": 1000, "b": 2000, "c": 1500, "v1": 500, "v2": 2500}
PARAMS = {"chunk_size": 2000, "batch_size": 256, "split": 0.3, "seed": 3, "tree": "events"}


def _staggered_sizes() -> dict[str, list[int]]:
    return {name: [cut, CLUSTER - cut] * (EVENTS // CLUSTER) for name, cut in STAGGER.items()}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two files (signal, background) in each layout; the same events in every layout."""
    out = tmp_path_factory.mktemp("layouts")
    written: dict[str, list[Path]] = {}
    for layout in ("small", "big", "staggered"):
        (out / layout).mkdir()
        written[layout] = []
        for label, seed in (("sig", 1), ("bkg", 2)):
            path, data = out / layout / f"{label}.root", L.events(EVENTS, seed)
            if layout == "small":
                L.write_baskets(path, data, 500)
            elif layout == "big":
                L.write_baskets(path, data, EVENTS)
            else:
                L.write_staggered(path, data, _staggered_sizes())
            written[layout].append(path)
    return written


class _Inflated:
    """Bytes uproot inflates, counted at its decompression call."""

    def __init__(self) -> None:
        self.bytes = 0


@contextlib.contextmanager
def counting_inflation() -> Iterator[_Inflated]:
    counted = _Inflated()
    original = uproot.compression.decompress

    @functools.wraps(original)  # uproot reads its hooks off the function's attributes
    def decompress(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)
        counted.bytes += len(out.raw_data)
        return out

    uproot.compression.decompress = decompress
    try:
        yield counted
    finally:
        uproot.compression.decompress = original


def _uncompressed_size(files: list[Path], columns: list[str]) -> int:
    """The branches' uncompressed size: every basket of ``columns`` inflated exactly once."""
    with counting_inflation() as counted:
        for f in files:
            with uproot.open(f) as fh:
                fh["events"].arrays(columns, library="np")
    return counted.bytes


def test_layouts_are_what_they_claim(layouts: dict[str, list[Path]]) -> None:
    offsets = {}
    for name, files in layouts.items():
        tree = uproot.open(files[0])["events"]
        offsets[name] = {b.name: list(b.entry_offsets) for b in tree.values()}
    assert offsets["small"]["a"] == list(range(0, EVENTS + 1, 500))
    assert all(o == [0, EVENTS] for o in offsets["big"].values())
    staggered = offsets["staggered"]
    assert len({tuple(o) for o in staggered.values()}) == len(STAGGER)  # every branch its own boundaries
    assert uproot.open(layouts["staggered"][0])["events"].common_entry_offsets() == list(
        range(0, EVENTS + 1, CLUSTER)
    )


def test_partitions_sit_on_common_basket_boundaries(layouts: dict[str, list[Path]]) -> None:
    small = m.open_dataset(layouts["small"], PARAMS)
    assert [p[1:] for p in small.partitions if p[0] == 0] == [(s, s + 2000) for s in range(0, EVENTS, 2000)]
    big = m.open_dataset(layouts["big"], PARAMS)
    assert big.partitions == ((0, 0, EVENTS), (1, 0, EVENTS))  # one basket: one partition
    staggered = m.open_dataset(layouts["staggered"], PARAMS)
    assert [p[1:] for p in staggered.partitions if p[0] == 0] == [
        (s, s + CLUSTER) for s in range(0, EVENTS, CLUSTER)
    ]
    # reading only "b", its own boundaries are finer than the cluster
    ab = staggered.with_step(2000, ["b"])
    assert [p[1:] for p in ab.partitions if p[0] == 0][:3] == [(0, 2000), (2000, 3000), (3000, 5000)]
    # nevts ends a file inside a basket: the partitions stop there
    limited = m.open_dataset(layouts["big"], {**PARAMS, "nevts": 15_000})
    assert limited.partitions == ((0, 0, 7500), (1, 0, 7500))


def test_specs_and_batches_identical_across_layouts(layouts: dict[str, list[Path]]) -> None:
    labels = [1, 0]
    results = {}
    for name, files in layouts.items():
        dataset = m.open_dataset(files, PARAMS)
        columns = list(dataset.branches)
        reference = _uncompressed_size(files, columns)
        with counting_inflation() as specs_pass:
            specs = m.compute_specs(dataset, PARAMS, client="sync")
        with m.BatchLoader(dataset, specs, PARAMS, labels=labels, client="sync") as loader:
            loader.counts  # noqa: B018 - no cuts: counting reads nothing
            with counting_inflation() as loader_pass:
                batches = [tuple(np.copy(a) for a in batch) for batch in loader]
        assert specs_pass.bytes == pytest.approx(reference, rel=0.05), name
        assert loader_pass.bytes == pytest.approx(reference, rel=0.05), name
        results[name] = (specs.to_dict(), batches)
    ref_specs, ref_batches = results["small"]
    for name in ("big", "staggered"):
        specs, batches = results[name]
        for branch, stats in ref_specs["branches"].items():
            other = specs["branches"][branch]
            for key, value in stats.items():
                if key in ("mean", "std", "mean_len"):  # summed in another order
                    assert other[key] == pytest.approx(value, rel=1e-12), (name, branch, key)
                else:
                    assert other[key] == value, (name, branch, key)
        assert [{**f, "path": None} for f in specs["files"]] == [
            {**f, "path": None} for f in ref_specs["files"]
        ]
        assert len(batches) == len(ref_batches)
        for ours, theirs in zip(batches, ref_batches, strict=True):
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_array_equal(a, b)


def test_old_style_file_without_common_boundaries_stays_bounded() -> None:
    """Branches that never flush together (ROOT without auto-flush): partitions stay near the
    step, and each edge cuts at most one basket per branch, choosing the cheapest cut."""
    n, step = 100_000, 10_000
    a = BasketLayout(np.arange(0, n + 1, 1000), np.full(n // 1000, 10, np.int64))
    b_offsets = np.unique(np.r_[0, np.arange(700, n, 1300), n])
    b = BasketLayout(b_offsets, np.full(len(b_offsets) - 1, 1000, np.int64))  # b's baskets are the big ones
    edges = partition_edges([a, b], n, step)
    sizes = np.diff(edges)
    assert edges[0] == 0
    assert edges[-1] == n
    assert sizes.max() <= 2 * step
    assert np.isin(edges, b.offsets).all()  # the cuts split a's small baskets, never b's big ones


def test_a_basket_longer_than_the_step_is_one_partition() -> None:
    big = BasketLayout(np.array([0, 50_000, 100_000]), np.array([10, 10]))
    small = BasketLayout(np.arange(0, 100_001, 1000), np.ones(100, np.int64))
    assert partition_edges([big, small], 100_000, 10_000) == [0, 50_000, 100_000]


@pytest.mark.xrootd
@pytest.mark.parametrize("protocol", ["root", "http"])
def test_remote_pass_fetches_every_basket_once(layouts: dict[str, list[Path]], protocol: str) -> None:
    """Count the bytes the real server sends: one specs pass over the big-basket layout fetches
    the baskets once, plus the metadata each partition's task reads when it opens the file."""
    files = layouts["big"]
    params = {**PARAMS, "chunk_size": 3000}
    if protocol == "root":
        try:
            server = xrootd_server(files)
            base = server.__enter__()
        except FileNotFoundError:
            pytest.skip("Debian's xrootd-server is not installed (make test installs it)")
    else:
        server = http_server(files[0].parent)
        base = server.__enter__()
    try:
        port = int(base.split(":")[2].split("/")[0])
        with counting_proxy(port) as (proxy_port, counter):
            remote = base.replace(f":{port}", f":{proxy_port}")
            urls = [f"{remote}/{f.name}" for f in files]
            dataset = m.open_dataset(urls, params)
            assert dataset.partitions == ((0, 0, EVENTS), (1, 0, EVENTS))  # one basket per file
            before = counter.sent
            with uproot.open(urls[0]) as fh:
                fh["events"].num_entries  # noqa: B018
            per_open = counter.sent - before
            before = counter.sent
            m.compute_specs(dataset, params, client="sync")
            sent = counter.sent - before
            # the control: the same pass cut every 3000 entries, through the baskets
            through = dataclasses.replace(
                dataset, partitions=tuple((f, s, s + 3000) for f in (0, 1) for s in range(0, EVENTS, 3000))
            )
            before = counter.sent
            m.compute_specs(through, params, client="sync")
            sent_through = counter.sent - before
        baskets = sum(
            int(uproot.open(f)["events"][b].compressed_bytes) for f in files for b in dataset.branches
        )
        assert per_open > 0
        assert baskets <= sent <= 1.05 * baskets + len(dataset.partitions) * per_open
        assert sent_through > 3.5 * baskets  # each basket fetched by 4 partitions: the counter sees it
    finally:
        server.__exit__(None, None, None)
