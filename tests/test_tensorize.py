"""Padding, clipping, normalization, counts, non-finite values, labels and weights."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.handle._layout import Layout
from mlaas4hep_dask.handle._tensorize import split_codes


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five events with known values: a flat, a constant and a jagged branch (with NaN)."""
    path = tmp_path_factory.mktemp("small") / "small.root"
    with uproot.recreate(path) as f:
        f.mktree(
            "t", {"a": "float32", "c": "int32", "v": "var * float32", "target": "float32", "w": "float32"}
        )
        f["t"].extend(
            {
                "a": np.array([0.0, 10.0, 5.0, 2.0, 8.0], dtype=np.float32),
                "c": np.full(5, 7, dtype=np.int32),
                "v": ak.values_astype(
                    ak.Array([[1.0, 3.0, 2.0], [], [5.0], [np.nan, 4.0], [3.0, 1.0]]), np.float32
                ),
                "target": np.array([0.5, 1.5, 2.5, 3.5, 4.5], dtype=np.float32),
                "w": np.array([1.0, 2.0, 1.0, 0.5, 1.0], dtype=np.float32),
            }
        )
    return path


def _all(path: Path, params: dict, **kwargs) -> tuple:  # type: ignore[no-untyped-def, type-arg]
    """Every event, in entry order (split fractions 0, no shuffle)."""
    base = {"split": 0.0, "shuffle": False, "batch_size": 100, "exclude_branches": ["target", "w"]}
    specs = m.compute_specs([path], {**base, **params}, client="sync")
    loader = BatchLoader([path], specs, {**base, **params}, client="sync", **kwargs)
    batches = list(loader)
    assert len(batches) == 1
    return specs, loader, batches[0]


def test_minmax_padding_and_constant_branch(small: Path) -> None:
    specs, loader, (X, y) = _all(small, {})
    assert y is None
    assert loader.features == ["a", "c", "nv", "v[0]", "v[1]", "v[2]"]
    assert specs.branches["v"].jdim == 3
    # a: min 0, max 10; c: constant -> 0; v: min 1, max 5 (NaN left out), pad 0, NaN -> 0
    expected_v = [[0.0, 0.5, 0.25], [0, 0, 0], [1.0, 0, 0], [0.0, 0.75, 0], [0.5, 0.0, 0]]
    np.testing.assert_allclose(X[:, 0], [0.0, 1.0, 0.5, 0.2, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(X[:, 1], 0.0)
    np.testing.assert_allclose(X[:, 3:], expected_v, rtol=1e-6)
    assert X.dtype == np.float32


def test_clipping_counts_and_pad_value(small: Path) -> None:
    _, loader, (X, _) = _all(small, {"max_jagged": 2, "jagged_counts": True, "pad_value": -1.0})
    assert loader.features == ["a", "c", "nv", "v[0]", "v[1]", "count(v)"]
    assert loader.idim == 6
    np.testing.assert_allclose(
        X[:, 3:5], [[0.0, 0.5], [-1, -1], [1.0, -1], [0.0, 0.75], [0.5, 0.0]], rtol=1e-6
    )
    np.testing.assert_allclose(X[:, 5], [1.5, 0.0, 0.5, 1.0, 1.0])  # true count / slots


def test_standard_and_none(small: Path) -> None:
    _, _, (X, _) = _all(small, {"normalize": "standard"})
    a = np.array([0.0, 10.0, 5.0, 2.0, 8.0])
    np.testing.assert_allclose(X[:, 0], (a - a.mean()) / a.std(), rtol=1e-5)
    _, _, (X, _) = _all(small, {"normalize": "none", "nan": -9.0})
    np.testing.assert_allclose(X[:, 0], a)
    np.testing.assert_allclose(X[3, 3:], [-9.0, 4.0, 0.0])


def test_nan_policy_drop(small: Path) -> None:
    _, loader, (X, _) = _all(small, {"nan_policy": "drop"})
    assert len(loader) == 4
    assert len(X) == 4
    np.testing.assert_allclose(X[:, 0], [0.0, 1.0, 0.5, 0.8], rtol=1e-6)


def test_label_branch_and_weights(small: Path) -> None:
    params = {"label_branch": "target", "weight_branch": "w", "weight_norm": "none"}
    _, _, (X, y, w) = _all(small, params)
    np.testing.assert_allclose(y, [0.5, 1.5, 2.5, 3.5, 4.5])
    assert y.dtype == np.float32
    np.testing.assert_allclose(w, [1.0, 2.0, 1.0, 0.5, 1.0])
    assert X.shape == (5, 6)
    _, _, (_, _, w) = _all(small, {**params, "weight_norm": "class"})  # a regression: the mean is 1
    np.testing.assert_allclose(w, np.array([1.0, 2.0, 1.0, 0.5, 1.0]) / 1.1, rtol=1e-6)


def test_labels_from_file_are_integer_classes(generated: list[Path], tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# signal first\n1\n0\n")
    params = {"batch_size": 10_000, "shuffle": False}
    specs = m.compute_specs(generated, params, client="sync")
    loader = BatchLoader(generated, specs, params, labels=labels, client="sync")
    ys = np.concatenate([y for _, y in loader])
    assert ys.dtype == np.int64
    assert set(np.unique(ys)) == {0, 1}
    floats = BatchLoader(generated, specs, params, labels=[0.25, 0.75], client="sync")
    assert next(iter(floats))[1].dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "params", "error", "message"),
    [
        ({"labels": [1, 0, 1]}, {}, m.ConfigError, "gives 3 labels for 2 input files"),
        ({"labels": ["a", "b"]}, {}, m.ConfigError, "entry 1 is 'a', not a number"),
        ({"labels": [1, 0]}, {"label_branch": "event"}, m.ConfigError, "either labels"),
        ({}, {"label_branch": "HT"}, m.ConfigError, "'HT' is a feature"),
        ({}, {"weight_branch": "jetPt"}, m.ConfigError, "'jetPt' is a jagged branch"),
        ({}, {"label_branch": "nope"}, m.ConfigError, "unknown branch 'nope'"),
        ({"split": "training"}, {}, m.ConfigError, "split must be one of"),
        ({"preproc": {"flat_cut": {"HT": {"cut": "HT > 200"}}}}, {}, m.SpecsError, "different preproc.json"),
        (
            {"preproc": {"new_branch": {"x": {"def": "HT*2", "type": "flat"}}}},
            {},
            m.SpecsError,
            "in the data only: ['x']",
        ),
    ],
)
def test_loader_rejects_bad_inputs(
    generated: list[Path], kwargs: dict, params: dict, error: type, message: str
) -> None:
    specs = m.compute_specs(generated, client="sync")
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        BatchLoader(generated, specs, params, client="sync", **kwargs)


def test_split_codes_are_stable_and_proportional() -> None:
    entries = np.arange(200_000)
    codes = split_codes(3, entries, seed=9, split=0.3, test_fraction=0.5)
    fractions = [np.mean(codes == c) for c in (0, 1, 2)]
    assert fractions == pytest.approx([0.7, 0.15, 0.15], abs=0.005)
    # the same event gets the same split whatever slice it is computed in
    np.testing.assert_array_equal(codes[1000:2000], split_codes(3, entries[1000:2000], 9, 0.3, 0.5))
    assert not np.array_equal(codes, split_codes(4, entries, 9, 0.3, 0.5))
    assert not np.array_equal(codes, split_codes(3, entries, 10, 0.3, 0.5))
    # the splits of every stored job and bundle: these codes never change (first 40, and counts)
    assert "".join(map(str, codes[:40])) == "0000020002000100200000000100100010000000"
    assert np.bincount(codes[:100_000]).tolist() == [69839, 15071, 15090]
    far = split_codes(7, np.arange(2**40, 2**40 + 1000), seed=123456789, split=0.2, test_fraction=0.25)
    assert "".join(map(str, far[:40])) == "0002010000000000101000020000001101000000"
    assert np.bincount(far).tolist() == [808, 145, 47]


def test_layout_from_original_specs(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(
        '{"jdim": {"v": 2}, "minv": {"a": 0, "v": 1}, "maxv": {"a": 4, "v": 5}, "fkeys": ["a"], "jkeys": ["v"]}'
    )
    layout = Layout.from_specs(m.Specs.load(path), m.Params())
    X, keep = layout.transform(ak.Array({"a": [2.0], "v": [[3.0, 5.0, 9.0]]}))
    assert keep is None
    np.testing.assert_allclose(X, [[0.5, 0.5, 1.0]])


def _padded(values: ak.Array, slots: int, shift: float, scale: float, pad: float, nan: float) -> np.ndarray:
    """What ``Layout.transform`` must give for one jagged branch, computed with awkward alone."""
    normalized = (ak.values_astype(values, np.float32) - np.float32(shift)) * np.float32(1 / scale)
    regular = ak.to_numpy(ak.fill_none(ak.pad_none(normalized, slots, clip=True), pad)).astype(np.float32)
    real = ak.to_numpy(ak.fill_none(ak.pad_none(ak.ones_like(values, dtype=bool), slots, clip=True), False))
    return np.where(real & ~np.isfinite(regular), np.float32(nan), regular)


_LISTS = ak.Array([[1.5, 3.0, 2.0, 7.0], [], [5.0], [np.inf, 4.0], [3.0, 1.0, -2.0]])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(_LISTS, id="list-offset-float64"),
        pytest.param(_LISTS[[4, 0, 0, 3, 1]], id="list-array-from-a-carry"),
        # more kept items than the content holds: the packed values must be sized by the lists
        pytest.param(_LISTS[np.zeros(400, dtype=np.int64)], id="one-list-picked-by-every-event"),
        pytest.param(_LISTS[ak.Array([True, False, True, True, True])], id="list-array-from-a-cut"),
        pytest.param(ak.values_astype(ak.Array([[1, 3, 2, 7], [], [5]]), np.int32), id="int32-content"),
        pytest.param(ak.Array([[True, False], [], [True]]), id="bool-content"),
        pytest.param(
            ak.Array(
                ak.contents.ListOffsetArray(
                    ak.index.Index32(np.array([0, 2, 2, 5], dtype=np.int32)),
                    ak.contents.NumpyArray(np.array([1, 2, 3, 4, 5], dtype=np.float32)),
                )
            ),
            id="int32-offsets",
        ),
    ],
)
@pytest.mark.parametrize("slots", [0, 2, 6])
def test_transform_matches_awkward_padding(values: ak.Array, slots: int) -> None:
    shift, scale, pad, nan = 1.0, 4.0, -1.0, -9.0
    layout = Layout(("a",), (("v", slots),), True, {"a": 0.0, "v": shift}, {"a": 1.0, "v": scale}, pad, nan)
    n = len(values)
    X, keep = layout.transform(ak.zip({"a": np.arange(n, dtype=np.float64), "v": values}, depth_limit=1))
    assert keep is None
    assert X.dtype == np.float32
    assert X.shape == (n, 1 + slots + 1)
    np.testing.assert_array_equal(X[:, 0], np.arange(n))
    expected = _padded(values, slots, shift, scale, pad, nan)
    np.testing.assert_array_equal(X[:, 1 : 1 + slots], expected.reshape(n, slots))
    np.testing.assert_array_equal(X[:, -1], (ak.to_numpy(ak.num(values)) / max(slots, 1)).astype(np.float32))


def test_transform_missing_lists_are_empty_and_missing_items_follow_the_nan_policy() -> None:
    layout = Layout((), (("v", 3),), True, {"v": 0.0}, {"v": 1.0}, pad_value=-1.0, nan_value=-9.0)
    values = ak.Array([[1.0, None, 3.0], None, [2.0]])
    X, keep = layout.transform(ak.zip({"v": values}, depth_limit=1))
    assert keep is None
    expected = [[1.0, -9.0, 3.0, 1.0], [-1.0, -1.0, -1.0, 0.0], [2.0, -1.0, -1.0, 1 / 3]]
    np.testing.assert_array_equal(X, np.array(expected, dtype=np.float32))


def test_transform_drops_events_with_nonfinite_values_in_the_kept_slots() -> None:
    layout = Layout((), (("v", 2),), False, {"v": 0.0}, {"v": 1.0}, drop_nonfinite=True)
    values = ak.Array([[1.0, np.nan], [2.0, 3.0, np.inf], [np.inf], []])
    X, keep = layout.transform(ak.zip({"v": values}, depth_limit=1))
    # the inf of event 1 lies past the two slots and is clipped away: the event stays
    np.testing.assert_array_equal(keep, [False, True, False, True])
    np.testing.assert_array_equal(X, [[2.0, 3.0], [0.0, 0.0]])
    # with room for every item (the lists packed in one run) the inf is kept, and its event dropped
    wide = Layout((), (("v", 3),), False, {"v": 0.0}, {"v": 1.0}, drop_nonfinite=True)
    X, keep = wide.transform(ak.zip({"v": values}, depth_limit=1))
    np.testing.assert_array_equal(keep, [False, False, False, True])
    np.testing.assert_array_equal(X, [[0.0, 0.0, 0.0]])


def _reference_order(n: int, key: int) -> np.ndarray:
    """The shuffle in plain Python: Fisher-Yates over SplitMix64, Lemire's unbiased bounded draws."""
    mask = 2**64 - 1
    order, state = list(range(n)), key
    for i in range(n - 1, 0, -1):
        bound = i + 1
        while True:
            state = (state + 0x9E3779B97F4A7C15) & mask
            x = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
            x ^= x >> 31
            m = (x >> 32) * bound
            if (m & 0xFFFFFFFF) >= (2**32 - bound) % bound:
                break
        j = m >> 32
        order[i], order[j] = order[j], order[i]
    return np.array(order)


def test_chunk_shuffle_is_a_seeded_fisher_yates_permutation() -> None:
    from mlaas4hep_dask.handle._rows import Chunk

    layout = Layout(("a",), (("v", 2),), False, {"a": 0.0, "v": 0.0}, {"a": 1.0, "v": 1.0})
    n = 1000
    lists = ak.unflatten(np.arange(3 * n, dtype=np.float64), np.full(n, 3))
    packed = layout.pack(
        *layout.columns(ak.zip({"a": np.arange(n, dtype=np.float64), "v": lists}, depth_limit=1))
    )
    pieces = [(packed, 0, 400), (packed, 400, n)]
    plain = Chunk.assemble(layout, pieces).rows(0, n).X
    shuffled = Chunk.assemble(layout, pieces, np.random.default_rng(5))
    key = int(np.random.default_rng(5).integers(2**64, dtype=np.uint64))  # the one draw it makes
    order = _reference_order(n, key)  # position j holds row order[j] of the reading order
    rows = shuffled.rows(0, n).X
    np.testing.assert_array_equal(rows, plain[order])
    np.testing.assert_array_equal(rows[np.flatnonzero(order == 7)[0], 1:], [21.0, 22.0])
    np.testing.assert_array_equal(shuffled.rows(100, 104).X, rows[100:104])
    again = Chunk.assemble(layout, pieces, np.random.default_rng(5)).rows(0, n).X
    other = Chunk.assemble(layout, pieces, np.random.default_rng(6)).rows(0, n).X
    np.testing.assert_array_equal(again, rows)
    assert not np.array_equal(other, rows)


def test_chunk_shuffle_puts_every_row_anywhere_equally_often() -> None:
    from mlaas4hep_dask.read._kernels import shuffled_order

    trials, n = 60_000, 5
    where = np.zeros((n, n))
    for key in range(trials):
        where[np.arange(n), shuffled_order(n, np.uint64(key))] += 1
    # each cell expects 12 000 (standard deviation 98): 4 % is over 4.9 deviations away
    np.testing.assert_allclose(where / (trials / n), 1.0, atol=0.04)
