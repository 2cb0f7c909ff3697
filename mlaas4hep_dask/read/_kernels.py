"""The compiled loops of tensorizing (numba): events to padded, fixed-width rows of X, in two steps.

The workers *pack* a partition: each jagged branch's items normalized and clipped to its slots,
one branch after the other (:func:`pack_lists`); flat values are normalized with NumPy.  The
trainer *unpacks* what it receives into rows (:func:`unpack_rows`), padding there: a packed
partition is about a third of its rows for typical lists (5 items in 20 slots), so a third of
the bytes cross from the workers to the trainer.

Imported on first use, so that ``import mlaas4hep_dask`` does not pay for numba; the compiled
functions are cached on disk (``cache=True``) and have a single signature, so a fresh worker
loads them instead of compiling them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

__all__ = [
    "basket_list_ends",
    "gather_rows",
    "list_lengths",
    "list_starts",
    "pack_lists",
    "shuffled_order",
    "split_hash",
    "unpack_rows",
]


def _compiled(function: Callable[..., Any]) -> Any:
    """``numba.njit`` with an on-disk cache where there is a writable place for one."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # read-only install and no writable cache directory: compile per process
        return numba.njit(nogil=True)(function)


@_compiled
def _splitmix64(state: np.uint64) -> np.uint64:
    """SplitMix64's output function: ``state`` (advanced by the golden gamma) mixed into 64 random bits."""
    x = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@_compiled
def list_lengths(lengths: np.ndarray, starts: np.ndarray, stops: np.ndarray, slots: int) -> tuple[int, bool]:
    """Each list's full length into ``lengths``.

    Returns how many items :func:`pack_lists` keeps (at most ``slots`` a list: what it writes)
    and whether every list is whole and right after the previous one, as uproot reads them.
    """
    kept = 0
    whole = True
    for i in range(starts.shape[0]):
        items = stops[i] - starts[i]
        if items < 0:  # not a valid list: counted empty, so that nothing is written for it
            items = 0
            whole = False
        lengths[i] = items
        kept += min(items, slots)
        if items > slots or (i > 0 and starts[i] != stops[i - 1]):
            whole = False
    return kept, whole


@_compiled
def pack_lists(
    out: np.ndarray,
    at: int,
    starts: np.ndarray,
    stops: np.ndarray,
    content: np.ndarray,
    shift: np.float32,
    inv_scale: np.float32,
    slots: int,
    whole: bool,
) -> bool:
    """Write every list's first ``slots`` items, normalized, to ``out`` from ``at`` on.

    Item ``x`` becomes ``(x - shift) * inv_scale`` in float32 (as NumPy computes it).  ``out``
    has room for the items :func:`list_lengths` counted, and ``whole`` is what it found.
    Returns whether every value written is finite (``v * 0`` is NaN only for NaN and inf).
    """
    n = starts.shape[0]
    if whole:  # the items are one run: a loop the compiler vectorizes
        first = starts[0] if n else 0
        bad = False
        for j in range(stops[n - 1] - first if n else 0):
            v = (content[first + j] - shift) * inv_scale
            bad |= not np.isfinite(v)
            out[at + j] = v
        return not bad
    zero = np.float32(0.0)
    check = zero
    for i in range(n):
        start = starts[i]
        items = min(max(stops[i] - start, 0), slots)
        for j in range(items):
            v = (content[start + j] - shift) * inv_scale
            check += v * zero
            out[at + j] = v
        at += items
    return check == check


@_compiled
def unpack_rows(
    out: np.ndarray,
    flat: np.ndarray,
    lengths: np.ndarray,
    starts: np.ndarray,
    values: np.ndarray,
    slots: np.ndarray,
    pad_value: np.float32,
    counts: bool,
    lo: int,
) -> None:
    """Row ``k`` of ``out`` from packed event ``lo + k``: its flat values, every list padded to
    its slots, then (with ``counts``) each list's length divided by its slots.

    ``starts[i, b]`` is where event ``i``'s items of branch ``b`` begin in ``values``.  Each
    list is two plain runs, its kept items then its padding: twice as fast as one loop over the
    slots choosing item or padding per slot (measured on rows of 42 and of 140 values).
    """
    nflat = flat.shape[1]
    nlists = len(slots)
    for k in range(out.shape[0]):
        i = lo + k
        for c in range(nflat):
            out[k, c] = flat[i, c]
        column = nflat
        for b in range(nlists):
            start = starts[i, b]
            items = min(lengths[i, b], slots[b])
            for j in range(items):
                out[k, column + j] = values[start + j]
            for j in range(items, slots[b]):
                out[k, column + j] = pad_value
            column += slots[b]
        if counts:
            for b in range(nlists):
                out[k, column + b] = np.float32(lengths[i, b] / max(slots[b], 1))


@_compiled
def gather_rows(out: np.ndarray, rows: np.ndarray, order: np.ndarray) -> None:
    """``out[j] = rows[order[j]]`` for every position ``j``: a chunk's padded rows gathered in
    shuffled order, with the GIL released."""
    width = rows.shape[1]
    for j in range(order.shape[0]):
        r = order[j]
        for c in range(width):
            out[j, c] = rows[r, c]


@_compiled
def shuffled_order(n: int, key: np.uint64) -> np.ndarray:
    """A uniformly random permutation of ``range(n)``, for ``n < 2**32``, drawn from ``key``.

    Fisher-Yates over a SplitMix64 stream started at ``key``; each position ``j <= i`` is drawn
    without bias by Lemire's multiply-and-reject (3-5x faster than ``Generator.permutation``,
    whose bounded draws go through PCG64 one call at a time).
    """
    order = np.arange(n)
    golden = np.uint64(0x9E3779B97F4A7C15)
    low, two32 = np.uint64(0xFFFFFFFF), np.uint64(0x100000000)
    state = key
    for i in range(n - 1, 0, -1):
        bound = np.uint64(i + 1)
        while True:
            state += golden
            m = (_splitmix64(state) >> np.uint64(32)) * bound  # 32 random bits times the bound: j on top
            if (m & low) >= (two32 - bound) % bound:  # outside the few draws that would bias j
                break
        j = np.int64(m >> np.uint64(32))
        order[i], order[j] = order[j], order[i]
    return order


@_compiled
def list_starts(lengths: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Where each event's kept items of each branch begin in packed values (branch after branch).

    ``starts[i, b]`` counts every kept item (at most ``slots[b]`` an event) of the branches
    before ``b`` and of branch ``b``'s events before ``i``.
    """
    n, nlists = lengths.shape
    starts = np.empty((n, nlists), dtype=np.int64)
    at = 0
    for b in range(nlists):
        width = slots[b]
        for i in range(n):
            starts[i, b] = at
            at += min(lengths[i, b], width)
    return starts


@_compiled
def split_hash(
    entries: np.ndarray, key: np.uint64, train_below: float, validation_below: float
) -> np.ndarray:
    """0, 1 or 2 for each entry: SplitMix64 of ``entry ^ key`` mapped to [0, 1), compared with
    the two bounds (see :func:`~mlaas4hep_dask.handle.split_codes`)."""
    codes = np.empty(entries.shape[0], dtype=np.uint8)
    golden = np.uint64(0x9E3779B97F4A7C15)
    for i in range(entries.shape[0]):
        x = _splitmix64((np.uint64(entries[i]) ^ key) + golden)
        u = np.float64(x >> np.uint64(11)) / 9007199254740992.0  # 2**53
        codes[i] = 0 if u < train_below else (1 if u < validation_below else 2)
    return codes


@_compiled
def basket_list_ends(
    table: np.ndarray, keylen: int, size: int, itemsize: int, out: np.ndarray, at: int, base: int
) -> bool:
    """Where each list of one basket ends, in items, plus ``base``, written to ``out`` from ``at``.

    ``table`` is the basket's offsets as ROOT writes them after the data, as ``uint32`` words
    (any alignment): their number, then where each entry starts, big-endian, counted from the
    key's start (``keylen`` before the data), and a last one that ROOT does not keep
    meaningful (the data's ``size`` is the end).  False if the offsets do not start at the
    data or go back (a damaged table).
    """
    shift = 0  # items are 1, 2, 4 or 8 bytes: a shift, not a division (which costs 20-40 cycles)
    while (1 << shift) < itemsize:
        shift += 1
    entries = table.shape[0] - 2
    if entries == 0:
        return size == 0
    previous = _big_endian(table[1]) - keylen
    if previous != 0:
        return False
    for i in range(1, entries + 1):
        offset = size if i == entries else _big_endian(table[i + 1]) - keylen
        if offset < previous:
            return False
        out[at + i - 1] = base + (offset >> shift)
        previous = offset
    return True


@numba.njit(inline="always")
def _big_endian(word: np.uint32) -> int:
    """The signed 32-bit integer whose big-endian bytes are read as ``word`` (a byte swap)."""
    swapped = ((word & np.uint32(0xFF)) << np.uint32(24)) | ((word & np.uint32(0xFF00)) << np.uint32(8))
    swapped |= ((word >> np.uint32(8)) & np.uint32(0xFF00)) | (word >> np.uint32(24))
    return np.int64(np.int32(swapped))  # type: ignore[return-value]
