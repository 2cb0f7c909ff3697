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

__all__ = ["pack_lists", "unpack_rows"]


def _compiled(function: Callable[..., Any]) -> Any:
    """``numba.njit`` with an on-disk cache where there is a writable place for one."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # read-only install and no writable cache directory: compile per process
        return numba.njit(nogil=True)(function)


@_compiled
def pack_lists(
    out: np.ndarray,
    at: int,
    lengths: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    content: np.ndarray,
    shift: np.float32,
    inv_scale: np.float32,
    slots: int,
) -> tuple[int, bool]:
    """Write every list's first ``slots`` items, normalized, to ``out`` from ``at`` on.

    Item ``x`` becomes ``(x - shift) * inv_scale`` in float32 (as NumPy computes it); each
    list's full length goes to ``lengths``.  Returns where the next branch starts and whether
    every value written is finite (``v * 0`` is NaN only for NaN and inf).
    """
    zero = np.float32(0.0)
    check = zero
    for i in range(starts.shape[0]):
        start = starts[i]
        items = stops[i] - start
        lengths[i] = items
        for j in range(min(items, slots)):
            v = (content[start + j] - shift) * inv_scale
            check += v * zero
            out[at + j] = v
        at += min(items, slots)
    return at, check == check


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

    ``starts[i, b]`` is where event ``i``'s items of branch ``b`` begin in ``values``, which
    ends with at least ``max(slots)`` spare entries, so that a row reads whole slot ranges
    without bounds checks: the loop has a fixed trip count per branch, which makes it fast.
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
            items = lengths[i, b]
            for j in range(slots[b]):
                v = values[start + j]
                out[k, column + j] = v if j < items else pad_value
            column += slots[b]
        if counts:
            for b in range(nlists):
                out[k, column + b] = np.float32(lengths[i, b] / max(slots[b], 1))
