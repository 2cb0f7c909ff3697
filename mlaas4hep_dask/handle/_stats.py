"""Per-partition branch statistics and their exact, associative combination.

A partition's statistics are tiny (a few numbers per branch), so the specs pass is a tree
reduction of these objects: never more than a handful of them in memory at once.
Means and variances combine with Chan et al.'s parallel formula, which stays accurate where
sum-of-squares would cancel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np

__all__ = ["BranchStats", "PartitionStats", "StatsOfPartition", "combine"]


@dataclasses.dataclass
class BranchStats:
    """Running statistics of one branch: finite values, and list lengths for jagged ones."""

    count: int = 0
    nonfinite: int = 0
    min: float | int | None = None
    max: float | int | None = None
    mean: float = 0.0
    m2: float = 0.0
    jdim: int = 0
    lists: int = 0
    items: int = 0

    def merge(self, other: BranchStats) -> BranchStats:
        n = self.count + other.count
        if n == 0:
            mean, m2 = 0.0, 0.0
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / n
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return BranchStats(
            count=n,
            nonfinite=self.nonfinite + other.nonfinite,
            min=_opt(min, self.min, other.min),
            max=_opt(max, self.max, other.max),
            mean=mean,
            m2=m2,
            jdim=max(self.jdim, other.jdim),
            lists=self.lists + other.lists,
            items=self.items + other.items,
        )

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / self.count) if self.count else None


def _opt(fn: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


@dataclasses.dataclass
class PartitionStats:
    """Statistics of some partitions: events per input file, stats per branch, cut flow.

    ``cutflow`` holds the events before any cut, then after each cut in turn (empty when
    there are no cuts to report).
    """

    events: dict[int, int]
    branches: dict[str, BranchStats]
    cutflow: list[int] = dataclasses.field(default_factory=list)


def _values_stats(values: np.ndarray) -> BranchStats:
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        nonfinite = int(values.size - np.count_nonzero(finite))
        if nonfinite:
            values = values[finite]
    else:
        nonfinite = 0
    if values.size == 0:
        return BranchStats(nonfinite=nonfinite)
    # one float64 temporary, reused in place: these arrays are a whole partition of a branch
    centred = values.astype(np.float64)
    mean = float(centred.sum() / values.size)
    centred -= mean
    return BranchStats(
        count=int(values.size),
        nonfinite=nonfinite,
        min=values.min().item(),
        max=values.max().item(),
        mean=mean,
        m2=float(np.dot(centred, centred)),
    )


class StatsOfPartition:
    """Callable computing :class:`PartitionStats` of one concrete partition.

    Parameters
    ----------
    kinds
        Branch name to ``"flat"`` or ``"jagged"``.
    """

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = dict(kinds)

    def __call__(self, array: ak.Array, file_index: int) -> PartitionStats:
        out: dict[str, BranchStats] = {}
        for name, kind in self.kinds.items():
            column = array[name]
            if kind == "jagged":
                counts = ak.to_numpy(ak.num(column, axis=1))
                stats = _values_stats(ak.to_numpy(ak.flatten(column, axis=1)))
                stats.lists = int(counts.size)
                stats.items = int(counts.sum())
                stats.jdim = int(counts.max()) if counts.size else 0
            else:
                stats = _values_stats(ak.to_numpy(column))
            out[name] = stats
        return PartitionStats(events={file_index: len(array)}, branches=out)


def combine(*parts: PartitionStats) -> PartitionStats:
    """Merge the statistics of several partitions (associative and commutative)."""
    events: dict[int, int] = {}
    branches: dict[str, BranchStats] = {}
    cutflow = [sum(counts) for counts in zip(*(p.cutflow for p in parts), strict=True)]
    for part in parts:
        for ifile, n in part.events.items():
            events[ifile] = events.get(ifile, 0) + n
        for name, stats in part.branches.items():
            branches[name] = branches[name].merge(stats) if name in branches else stats
    return PartitionStats(events=events, branches=branches, cutflow=cutflow)
