"""Property tests: combining partition statistics is exact whatever the partitioning."""

from __future__ import annotations

import itertools

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep_dask.handle._stats import StatsOfPartition, combine
from mlaas4hep_dask.read._apportion import apportion

floats = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
events = st.lists(st.tuples(floats, st.lists(floats, max_size=6)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(events, st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=6))
def test_combined_partitions_equal_whole(data: list, cuts: list[int]) -> None:
    array = ak.Array(
        {"x": [np.float32(e[0]) for e in data], "v": [[np.float32(v) for v in e[1]] for e in data]}
    )
    fn = StatsOfPartition({"x": "flat", "v": "jagged"})
    whole = fn(array, 0)
    edges = sorted({0, len(array), *[c % (len(array) + 1) for c in cuts]})
    parts = [fn(array[a:b], 0) for a, b in itertools.pairwise(edges) if b > a]
    merged = combine(*parts)
    assert merged.events == whole.events == {0: len(data)}
    for name in ("x", "v"):
        w, c = whole.branches[name], merged.branches[name]
        assert (w.count, w.nonfinite, w.min, w.max, w.jdim, w.items, w.lists) == (
            c.count, c.nonfinite, c.min, c.max, c.jdim, c.items, c.lists,
        )  # fmt: skip
        assert c.mean == pytest.approx(w.mean, rel=1e-9, abs=1e-6)
        assert c.m2 == pytest.approx(w.m2, rel=1e-7, abs=1e-3)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=10), st.integers(0, 50_000))
def test_apportion_is_exact_and_fair(weights: list[int], total: int) -> None:
    shares = apportion(weights, total)
    if sum(weights) == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share - weight / sum(weights) * total) < 1
