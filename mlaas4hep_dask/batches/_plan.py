"""How an epoch's events are cut up: chunks mixing the files in proportion, shards dealt to the trainers.

Data-parallel trainers (:meth:`BatchLoader.shards`) each get a :class:`Shard`: of every file,
the events ``[n_f r / N, n_f (r+1) / N)`` of the split for rank ``r`` of ``N`` (so each rank's
chunks keep the class balance of the whole set), shuffled by (seed, epoch, rank).  A step's
``batch_size`` is split over the ranks (``b = ceil(batch_size / N)`` each), and all ranks run
the same number of steps ``S = ceil(max_r n_r / b)``: rank ``r`` cuts its ``n_r``
events into ``S`` batches whose sizes differ by at most one event.  No event is dropped or
repeated, and no rank waits in a collective for one that ran out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._weights import WeightScale

__all__ = ["batch_sizes", "deal", "Piece", "plan_chunks", "Shard"]


@dataclasses.dataclass(frozen=True)
class Piece:
    """Events ``[lo, hi)`` (in split order) of partition ``partition`` go into a chunk."""

    partition: int
    lo: int
    hi: int


def plan_chunks(counts: Sequence[int], files: Sequence[int], chunk_size: int) -> list[list[Piece]]:
    """Compose chunks from per-partition event counts so that every chunk mixes the files.

    Parameters
    ----------
    counts
        Events (of the split) in each partition, in partition order.
    files
        The file index of each partition; a file's partitions are consecutive and in order.
    chunk_size
        Target events per chunk (``-1``: one chunk).

    Examples
    --------
    >>> [[(p.partition, p.lo, p.hi) for p in c] for c in plan_chunks([6, 4, 10], [0, 0, 1], 10)]
    [[(0, 0, 5), (2, 0, 5)], [(0, 5, 6), (1, 0, 4), (2, 5, 10)]]
    """
    total = sum(counts)
    if total == 0:
        return []
    nchunks = 1 if chunk_size == -1 else max(1, math.ceil(total / chunk_size))
    return _slices(counts, files, nchunks)


def _slices(counts: Sequence[int], files: Sequence[int], k: int) -> list[list[Piece]]:
    """Cut every file's events into ``k`` equal contiguous slices; slice ``i`` of each goes to list ``i``."""
    by_file: dict[int, list[int]] = {}
    for p, f in enumerate(files):
        by_file.setdefault(f, []).append(p)
    out: list[list[Piece]] = [[] for _ in range(k)]
    for parts in by_file.values():
        n = sum(counts[p] for p in parts)
        starts = np.cumsum([0] + [counts[p] for p in parts])
        for i in range(k):
            lo, hi = n * i // k, n * (i + 1) // k
            for j, p in enumerate(parts):
                a, b = max(lo, starts[j]), min(hi, starts[j + 1])
                if a < b:
                    out[i].append(Piece(p, int(a - starts[j]), int(b - starts[j])))
    return out


@dataclasses.dataclass(frozen=True)
class Shard:
    """One data-parallel trainer's share of a split.

    Attributes
    ----------
    rank, world
        This trainer and the number of trainers.
    pieces
        Events ``[lo, hi)`` (in split order) of partitions, in partition order.
    counts
        Events of the split in every partition (all ranks'), so that no rank counts again.
    steps
        Batches per epoch, the same on every rank.
    scale
        The training weights' factors, the same on every rank (see :attr:`BatchLoader.weight_scale`).
    file_scale
        Each file's weight factor from its sample's cross-section (see :attr:`BatchLoader.file_scale`).
    """

    rank: int
    world: int
    pieces: tuple[Piece, ...]
    counts: tuple[int, ...]
    steps: int
    scale: WeightScale | None = None
    file_scale: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return sum(p.hi - p.lo for p in self.pieces)


def deal(counts: Sequence[int], files: Sequence[int], world: int, batch_size: int) -> list[Shard]:
    """Deal a split's events to ``world`` trainers: of every file, a contiguous equal share each.

    Examples
    --------
    >>> a, b = deal([6, 4, 10], [0, 0, 1], 2, batch_size=4)
    >>> [(p.partition, p.lo, p.hi) for p in a.pieces], [(p.partition, p.lo, p.hi) for p in b.pieces]
    ([(0, 0, 5), (2, 0, 5)], [(0, 5, 6), (1, 0, 4), (2, 5, 10)])
    >>> a.steps, len(a), len(b)
    (3, 10, 10)
    """
    if world < 1:
        raise ConfigError(f"the number of trainers must be at least 1, not {world}")
    shares = _slices(counts, files, world)
    for share in shares:
        share.sort(key=lambda piece: piece.partition)
    sizes = [sum(p.hi - p.lo for p in share) for share in shares]
    steps = math.ceil(max(sizes) / batch_size) if sum(sizes) else 0
    if min(sizes) < steps:
        raise ConfigError(
            f"{sum(sizes)} events are too few for {world} trainers at batch_size {batch_size}: "
            "use fewer trainers"
        )
    return [Shard(r, world, tuple(share), tuple(counts), steps) for r, share in enumerate(shares)]


def batch_sizes(n: int, batch_size: int, steps: int | None) -> Iterator[int]:
    """Sizes of an epoch's batches: ``batch_size`` and a short last one, or ``steps`` even ones."""
    if steps is None:
        yield from [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    else:
        yield from (n * (i + 1) // steps - n * i // steps for i in range(steps))
