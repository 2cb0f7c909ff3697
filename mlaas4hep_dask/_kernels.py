"""The compiled loop of tensorizing (numba): events to padded, fixed-width rows of X.

Imported on first use, so that ``import mlaas4hep_dask`` does not pay for numba; the compiled
functions are cached on disk (``cache=True``) and have a single signature, so a fresh worker
loads it instead of compiling it.  Non-finite values are rare: the first pass only notices
them, and a second one mends the rows that have some.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

__all__ = ["fill_rows", "mend_rows"]


def _compiled(function: Callable[..., Any]) -> Any:
    """``numba.njit`` with an on-disk cache where there is a writable place for one."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # read-only install and no writable cache directory: compile per process
        return numba.njit(nogil=True)(function)


@_compiled
def fill_rows(
    out: np.ndarray,
    flat: np.ndarray,
    slots: np.ndarray,
    shift: np.ndarray,
    inv_scale: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    values: np.ndarray,
    pad_value: np.float32,
    counts: bool,
) -> bool:
    """Write every row of ``out`` in one pass; return whether every value written was finite.

    Row ``i`` is ``flat[i]``, then for each jagged branch ``b`` the items
    ``values[starts[i, b]:stops[i, b]]``, normalized (``(x - shift[b]) * inv_scale[b]``) and
    clipped or padded (``pad_value``) to ``slots[b]``, then (with ``counts``) each list's
    length divided by its slots.  ``values`` ends with at least ``max(slots)`` spare entries,
    so that a row reads whole slot ranges without bounds checks: the loop has a fixed trip
    count per branch, which is what makes it fast.  Finiteness costs a multiply-add per value
    (``v * 0`` is NaN only for NaN and inf).
    """
    nflat = flat.shape[1]
    nlists = len(slots)
    zero = np.float32(0.0)
    check = zero
    for i in range(out.shape[0]):
        for c in range(nflat):
            v = flat[i, c]
            check += v * zero
            out[i, c] = v
        column = nflat
        for b in range(nlists):
            start = starts[i, b]
            items = stops[i, b] - start
            for j in range(slots[b]):
                v = (values[start + j] - shift[b]) * inv_scale[b]
                v = v if j < items else pad_value
                check += v * zero
                out[i, column + j] = v
            column += slots[b]
        if counts:
            for b in range(nlists):
                out[i, column + b] = np.float32((stops[i, b] - starts[i, b]) / max(slots[b], 1))
    return check == check


@_compiled
def mend_rows(
    out: np.ndarray,
    nflat: int,
    slots: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    drop: bool,
    nan_value: np.float32,
    nonfinite: np.ndarray,
) -> None:
    """Replace the non-finite values that :func:`fill_rows` wrote by ``nan_value``.

    With ``drop``, flag their rows in ``nonfinite`` instead.  Padded slots are not looked at
    (a NaN ``pad_value`` is the user's choice).
    """
    for i in range(out.shape[0]):
        for c in range(nflat):
            if not np.isfinite(out[i, c]):
                if drop:
                    nonfinite[i] = True
                else:
                    out[i, c] = nan_value
        column = nflat
        for b in range(len(slots)):
            for j in range(min(stops[i, b] - starts[i, b], slots[b])):
                if not np.isfinite(out[i, column + j]):
                    if drop:
                        nonfinite[i] = True
                    else:
                        out[i, column + j] = nan_value
            column += slots[b]
