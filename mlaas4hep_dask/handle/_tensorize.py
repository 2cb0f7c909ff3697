"""Preprocessed events to fixed-width float32 rows, on the workers, one partition at a time.

Columns follow the specs' feature order: flat branches, then every jagged branch padded (or
clipped) to its slots — the specs' ``jdim``, capped by ``max_jagged`` — then, with
``jagged_counts``, one ``count(NAME)`` column per jagged branch.  Values are normalized with
the specs' statistics before padding, so padded slots hold exactly ``pad_value``.

Every event gets a split (train / validation / test) from a hash of its file index and entry
number and the seed, so the split is the same whatever the partitioning, the number of
workers or the order in which partitions are computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._layout import Layout, Packed, target_dtype, target_dtype_of
from mlaas4hep_dask.handle._preprocess import Plan, passing
from mlaas4hep_dask.handle._rows import Block, take_rows
from mlaas4hep_dask.handle._weights import WeightScale, sums

__all__ = ["SPLITS", "Tensorize", "split_codes"]

SPLITS = ("train", "validation", "test")


def split_codes(
    file_index: int, entries: np.ndarray, seed: int, split: float, test_fraction: float
) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) for each entry of one file.

    A SplitMix64 hash of ``(seed, file_index, entry)`` mapped to [0, 1): below ``1 - split``
    is train, the next ``split * (1 - test_fraction)`` validation, the rest test.

    Examples
    --------
    >>> codes = split_codes(0, np.arange(100_000), seed=1, split=0.3, test_fraction=0.5)
    >>> [round(float(np.mean(codes == c)), 2) for c in (0, 1, 2)]
    [0.7, 0.15, 0.15]
    """
    from mlaas4hep_dask.read._kernels import split_hash

    key = np.uint64((file_index * 0x9E3779B97F4A7C15 + seed * 0xD1B54A32D192ED03) % 2**64)
    return split_hash(np.asarray(entries, dtype=np.int64), key, 1.0 - split, 1.0 - split * test_fraction)


class Tensorize:
    """Callable run on a worker: one raw partition to the packed events of one split.

    Returns :meth:`Packed.sent`, a plain tuple of arrays, which the trainer unpacks into rows.

    Parameters
    ----------
    plan
        The preprocessing plan (its extras hold the label/weight branches).
    layout
        The row layout.
    params
        Split fractions, seed, label and weight branch.
    split
        ``"train"``, ``"validation"`` or ``"test"``.
    labels
        One label per input file, or ``None`` (then ``params.label_branch`` or no target).
    count_only
        Return only the number of events (for planning; reads no feature when possible).
    summing
        Return the events and summed weights per class (:func:`~mlaas4hep_dask.handle._weights.sums`),
        reading only the cut, label and weight branches when possible.
    scale
        Factors from physical to training weights (set on the training split's callable).
    file_scale
        Each file's factor of its events' weights (``xsec * lumi / sum_weights`` of its sample).
    """

    def __init__(
        self,
        plan: Plan,
        layout: Layout,
        params: Params,
        split: str,
        labels: Sequence[float] | None = None,
        count_only: bool = False,
        summing: bool = False,
        scale: WeightScale | None = None,
        file_scale: Sequence[float] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, not {split!r}")
        self.plan = plan
        self.layout = layout
        self.code = SPLITS.index(split)
        self.split, self.test_fraction, self.seed = params.split, params.test_fraction, params.seed
        self.label_branch, self.weight_branch = params.label_branch, params.weight_branch
        self.labels = None if labels is None else np.asarray(labels)
        self.count_only, self.summing, self.scale = count_only, summing, scale
        self.file_scale = None if file_scale is None else tuple(file_scale)
        self.target_dtype: np.dtype | None = None
        if self.label_branch is not None:
            self.target_dtype = target_dtype_of(np.dtype(plan.extras[self.label_branch].dtype))
        elif self.labels is not None:
            self.target_dtype = np.dtype(target_dtype(self.labels))

    def __call__(self, partition: ak.Array, file_index: int, start: int) -> tuple[Any, ...] | int:
        if self.count_only and not self.layout.drop_nonfinite:
            keep = self.plan.keep(partition) if self.plan.cuts else None
            entries = start + passing(keep, len(partition))
            return int(np.count_nonzero(self._codes(file_index, entries) == self.code))
        if self.summing and self.reads_little:
            keep = self.plan.keep(partition) if self.plan.cuts else None
            positions = passing(keep, len(partition))
            mine = positions[self._codes(file_index, start + positions) == self.code]
            record = partition[mine]
            return sums(self._target(record, file_index), self._weight(record, file_index), self.classes)
        selection = self.plan.select(partition)
        entries = start + selection.positions
        mine = self._codes(file_index, entries) == self.code
        record = selection.record if mine.all() else selection.record[mine]
        packed = self.layout.pack(*self.layout.columns(record))
        if self.count_only:
            return len(packed)
        y, w = self._target(record, file_index), self._weight(record, file_index)
        if packed.keep is not None:
            y, w = take_rows(y, packed.keep), take_rows(w, packed.keep)
        return self._finish(packed, y, w)

    def mine(self, file_index: int, entries: np.ndarray) -> np.ndarray:
        """Which of these entries of file ``file_index`` belong to this callable's split."""
        return self._codes(file_index, entries) == self.code

    def of_handled(self, events: Block, file_index: int) -> tuple[Any, ...] | int:
        """What :meth:`__call__` returns, from this split's events already handled and padded
        (a prepared shard's rows: ``events.w`` holds the weight branch as it is, or ``None``):
        the rows, targets and weights as a plain tuple ``(X, y, w)``, which the trainer takes
        as they are (see :func:`~mlaas4hep_dask.handle.received`)."""
        if self.count_only:
            return len(events)
        return self._finish(events, events.y, self._physical(events.w, len(events), file_index))

    def _finish(self, events: Packed | Block, y: np.ndarray | None, w: np.ndarray | None) -> tuple[Any, ...]:
        if self.summing:
            return sums(y, w, self.classes)
        if self.scale is not None:
            w = self.scale.apply(y, w, len(events))
        if isinstance(events, Block):
            return events.X, y, w
        return dataclasses.replace(events, y=y, w=w, keep=None).sent()

    @property
    def classes(self) -> bool:
        """Whether the targets are classes (integers), not values to regress."""
        return self.target_dtype is not None and self.target_dtype.kind == "i"

    @property
    def reads_little(self) -> bool:
        """Whether counting and summing need only the cut, label and weight branches."""
        extras = [b for b in (self.label_branch, self.weight_branch) if b]
        return not self.layout.drop_nonfinite and all(b in self.plan.columns for b in extras)

    def _weight(self, record: ak.Array, file_index: int) -> np.ndarray | None:
        """The events' physical weights: the weight branch times their file's factor."""
        return self._physical(self._branch_weight(record), len(record), file_index)

    def _branch_weight(self, record: ak.Array) -> np.ndarray | None:
        """The weight branch as float32 (``None`` without one)."""
        if self.weight_branch is None:
            return None
        return ak.to_numpy(record[self.weight_branch]).astype(np.float32)

    def _physical(self, w: np.ndarray | None, n: int, file_index: int) -> np.ndarray | None:
        """The physical weights of ``n`` events of weight branch values ``w``: times their file's factor."""
        if self.file_scale is None:
            return w
        return (np.ones(n, np.float32) if w is None else w) * np.float32(self.file_scale[file_index])

    def handled(self, partition: ak.Array, file_index: int, start: int) -> tuple[Packed, np.ndarray]:
        """Every event of ``partition`` that passes the cuts, of all splits, handled, and its
        entry number: what a prepared shard keeps (``w``: the weight branch as it is)."""
        selection = self.plan.select(partition)
        entries = start + selection.positions
        record = selection.record
        packed = self.layout.pack(*self.layout.columns(record))
        y, w = self._target(record, file_index), self._branch_weight(record)
        if packed.keep is not None:
            y, w, entries = take_rows(y, packed.keep), take_rows(w, packed.keep), entries[packed.keep]
        return dataclasses.replace(packed, y=y, w=w, keep=None), entries

    def _codes(self, file_index: int, entries: np.ndarray) -> np.ndarray:
        return split_codes(file_index, entries, self.seed, self.split, self.test_fraction)

    def _target(self, record: ak.Array, file_index: int) -> np.ndarray | None:
        if self.label_branch is not None:
            return ak.to_numpy(record[self.label_branch]).astype(self.target_dtype)
        if self.labels is None:
            return None
        return np.full(len(record), self.labels[file_index], dtype=self.target_dtype)
