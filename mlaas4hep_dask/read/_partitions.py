"""Place partition edges on a tree's own basket boundaries.

Reading entries ``[a, b)`` of a branch inflates every basket that overlaps them, whole.  An
edge inside a basket therefore makes both neighbouring partitions inflate it: with one
1 M-entry basket per branch and 200 000-entry partitions, each basket is inflated five times
in a pass, where ``uproot.iterate`` (which keeps a basket that spans two steps) inflates it
once.  So edges go where *every* branch read starts a new basket (ROOT's cluster boundaries,
or ``TTree.common_entry_offsets`` over the branches read), as close to the requested step as
those allow:

* an edge is the common boundary nearest to ``start + step``;
* a basket longer than the step becomes one partition (it is in memory whole anyway);
* only where no common boundary comes within ``max(4 * step, longest basket)`` entries (old
  ROOT files written without auto-flush, whose branches' baskets all end at different
  entries) is an edge put inside some baskets: at the candidate that splits the fewest
  compressed bytes, so the extra inflating is at most one small basket per branch and edge.

A partition thus holds at most ``max(4 * step, longest basket of a branch read)`` entries.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BasketLayout", "basket_layout", "file_partitions", "partition_edges", "partition_step"]

_MAX_SPAN = 4  # a partition is at most this many steps long, unless one basket is longer


@dataclasses.dataclass(frozen=True, eq=False)
class BasketLayout:
    """Where one branch's baskets start and stop (``offsets``, one more than baskets), and their sizes."""

    offsets: np.ndarray
    nbytes: np.ndarray


def basket_layout(branch: Any) -> BasketLayout | None:
    """The basket layout of an ``uproot`` TBranch from its metadata (no basket is read).

    ``None`` for a branch with no baskets (it constrains nothing).
    """
    if branch.num_baskets == 0:
        return None
    offsets = np.asarray(branch.entry_offsets, dtype=np.int64)
    normal = len(offsets) - 1 - len(branch.embedded_baskets)
    nbytes = np.asarray(branch.member("fBasketBytes")[:normal], dtype=np.int64)
    embedded = [b.compressed_bytes for b in branch.embedded_baskets]
    nbytes = np.concatenate([nbytes, np.asarray(embedded, dtype=np.int64)])
    for array in (offsets, nbytes):  # shared by every dataset that opens the file (read._inspect.INSPECTIONS)
        array.setflags(write=False)
    return BasketLayout(offsets, nbytes)


def _distinct(layouts: Iterable[BasketLayout]) -> list[BasketLayout]:
    """Layouts with distinct offsets (the branches of one cluster layout are one case)."""
    seen: dict[bytes, BasketLayout] = {}
    for layout in layouts:
        seen.setdefault(layout.offsets.tobytes(), layout)
    return list(seen.values())


def _straddled_bytes(layouts: Sequence[BasketLayout], candidates: np.ndarray) -> np.ndarray:
    """For each candidate edge, the compressed bytes of the baskets it would cut in two."""
    cost = np.zeros(len(candidates), dtype=np.int64)
    for layout in layouts:
        basket = np.searchsorted(layout.offsets, candidates, side="right") - 1
        basket = np.clip(basket, 0, len(layout.nbytes) - 1)
        inside = layout.offsets[basket] != candidates
        cost += np.where(inside, layout.nbytes[basket], 0)
    return cost


def partition_edges(layouts: Iterable[BasketLayout], entries: int, step: int) -> list[int]:
    """Partition edges ``[0, e1, ..., entries]`` for one file, on the branches' basket boundaries.

    Parameters
    ----------
    layouts
        The basket layouts of the branches that will be read.
    entries
        Entries to cover, ``[0, entries)`` (fewer than the tree's with ``nevts``).
    step
        The requested entries per partition (``-1``: one partition).

    Examples
    --------
    >>> every = lambda n, size: BasketLayout(np.arange(0, n + 1, size), np.ones(n // size, np.int64))
    >>> partition_edges([every(100, 10)], 100, 25)
    [0, 20, 40, 60, 80, 100]
    >>> partition_edges([every(100, 100)], 100, 25)  # one basket: read once
    [0, 100]
    """
    if entries <= 0:
        return [0]
    if step == -1 or step >= entries:
        return [0, entries]
    branches = _distinct(layouts)
    if not branches:
        return [*range(0, entries, step), entries]
    common: np.ndarray = branches[0].offsets
    for layout in branches[1:]:
        common = np.intersect1d(common, layout.offsets, assume_unique=True)
    common = np.union1d(common[(common > 0) & (common < entries)], [entries])
    longest = max(int(np.diff(b.offsets).max()) for b in branches)
    max_span = max(_MAX_SPAN * step, longest)
    edges = [0]
    start = 0
    while start < entries:
        target = start + step
        i = int(np.searchsorted(common, target, side="right"))
        lower = int(common[i - 1]) if i > 0 and common[i - 1] > start else None
        upper = int(common[i]) if i < len(common) else None
        if lower is not None and (
            upper is None or target - lower <= upper - target or upper - start > max_span
        ):
            edge = lower
        elif upper is not None and upper - start <= max_span:
            edge = upper
        else:  # no common boundary near: cut where the fewest bytes are split
            edge = _least_split(branches, start, target, max_span, upper)
        edges.append(edge)
        start = edge
    return edges


def _least_split(branches: Sequence[BasketLayout], start: int, target: int, max_span: int, upper: Any) -> int:
    """The edge after ``start`` that cuts the fewest compressed bytes, near ``target``."""
    within = [b.offsets[(b.offsets > start) & (b.offsets <= start + max_span)] for b in branches]
    candidates = np.unique(np.concatenate(within))
    if len(candidates) == 0:
        return int(upper)
    step = target - start
    near = candidates[(candidates >= start + step // 2) & (candidates <= start + 2 * step)]
    if len(near) == 0:
        return int(candidates[np.argmin(np.abs(candidates - target))])
    cost = _straddled_bytes(branches, near)
    best = np.lexsort((np.abs(near - target), cost))[0]
    return int(near[best])


def file_partitions(
    layouts: Mapping[str, BasketLayout], columns: Iterable[str], entries: int, step: int
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each partition of one file, aligned for reading ``columns``."""
    chosen = [layouts[c] for c in columns if c in layouts]
    edges = partition_edges(chosen, entries, step)
    return list(itertools.pairwise(edges))


_MIN_STEP = 20_000


def partition_step(chunk_size: int, nfiles: int) -> int:
    """Entries per loader partition.

    A chunk takes about ``chunk_size / nfiles`` events of every file, and each file's current
    partition stays in memory until consumed; partitions of twice that keep memory near two
    chunks whatever the number of files (but not below 20 000 entries, where task overhead
    would dominate).
    """
    if chunk_size == -1:
        return -1
    return min(chunk_size, max(2 * math.ceil(chunk_size / nfiles), _MIN_STEP))
