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
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._preprocess import Plan, passing
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.handle._weights import WeightScale, sums

__all__ = ["SPLITS", "Block", "Chunk", "Layout", "Packed", "RowBuffers", "Tensorize", "split_codes"]

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an event becomes a row of X.

    Attributes
    ----------
    flat
        Flat branch names, in column order.
    jagged
        ``(name, slots)`` of each jagged branch, in column order.
    counts
        Whether a ``count(NAME)`` column follows for each jagged branch.
    shift, scale
        Per branch: a value ``x`` becomes ``(x - shift) / scale``.
    pad_value, nan_value, drop_nonfinite
        Padded slots; the replacement of NaN/inf, or dropping the event instead.
    """

    flat: tuple[str, ...]
    jagged: tuple[tuple[str, int], ...]
    counts: bool
    shift: Mapping[str, float]
    scale: Mapping[str, float]
    pad_value: float = 0.0
    nan_value: float = 0.0
    drop_nonfinite: bool = False

    @classmethod
    def from_specs(cls, specs: Specs, params: Params) -> Layout:
        """The layout for ``specs`` under ``params`` (normalization, caps, padding).

        Examples
        --------
        >>> layout = Layout.from_specs(Specs.load("specs.json"), Params())  # doctest: +SKIP
        >>> layout.features[:2], layout.idim  # doctest: +SKIP
        (['nBJets', 'MET'], 116)
        """
        shift: dict[str, float] = {}
        scale: dict[str, float] = {}
        for name, b in specs.branches.items():
            lo, width = 0.0, 1.0
            if params.normalize == "minmax" and b.min is not None and b.max is not None:
                lo, width = float(b.min), float(b.max) - float(b.min)
            elif params.normalize == "standard" and b.mean is not None and b.std is not None:
                lo, width = float(b.mean), float(b.std)
            shift[name], scale[name] = lo, (width if width > 0 else 1.0)
        cap = params.max_jagged
        jagged = tuple(
            (n, min(specs.branches[n].jdim or 0, cap) if cap is not None else specs.branches[n].jdim or 0)
            for n in specs.jagged
        )
        return cls(
            flat=tuple(specs.flat),
            jagged=jagged,
            counts=params.jagged_counts,
            shift=shift,
            scale=scale,
            pad_value=params.pad_value,
            nan_value=params.nan,
            drop_nonfinite=params.nan_policy == "drop",
        )

    @property
    def features(self) -> list[str]:
        """Column names of X."""
        out = list(self.flat)
        for name, slots in self.jagged:
            out.extend(f"{name}[{i}]" for i in range(slots))
        if self.counts:
            out.extend(f"count({name})" for name, _ in self.jagged)
        return out

    @property
    def idim(self) -> int:
        """Number of columns of X."""
        return len(self.features)

    def transform(self, record: ak.Array) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of X for the events of ``record``, and which rows are kept (``None``: all).

        Examples
        --------
        >>> layout = Layout(("a",), (("v", 2),), False, {"a": 0, "v": 0}, {"a": 2, "v": 10})
        >>> layout.transform(ak.Array({"a": [2.0, 4.0], "v": [[10.0, 20.0, 30.0], []]}))[0]
        array([[1., 1., 2.],
               [2., 0., 0.]], dtype=float32)
        """
        return self.rows(*self.columns(record))

    def columns(
        self, record: ak.Array
    ) -> tuple[int, dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """The events of ``record`` as :meth:`rows` and :meth:`pack` take them (no copy where possible)."""
        return (
            len(record),
            {name: ak.to_numpy(record[name]) for name in self.flat},
            {name: _lists(record[name]) for name, _ in self.jagged},
        )

    def rows(
        self,
        n: int,
        flat_values: Mapping[str, np.ndarray],
        lists: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`transform` of plain arrays: each flat branch's values, each jagged branch's
        ``(starts, stops, content)``; the same compiled kernels, the same rows."""
        packed = self.pack(n, flat_values, lists)
        return self.unpacked(packed), packed.keep

    def pack(
        self,
        n: int,
        flat_values: Mapping[str, np.ndarray],
        lists: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> Packed:
        """The events normalized but not padded (what a worker sends; see :class:`Packed`).

        NaN and infinities (after normalization) are replaced by ``nan_value``, or their
        events dropped with ``drop_nonfinite``; items past a list's slots are not kept, so
        they are not looked at.
        """
        from mlaas4hep_dask.read._kernels import list_lengths, pack_lists

        flat = np.empty((n, len(self.flat)), dtype=np.float32)
        for c, name in enumerate(self.flat):
            with np.errstate(all="ignore"):
                np.subtract(flat_values[name], self.shift[name], out=flat[:, c], dtype=np.float32)
                flat[:, c] *= np.float32(1.0 / self.scale[name])
        finite = bool(np.isfinite(flat).all())
        lengths = np.empty((n, len(self.jagged)), dtype=np.int32)
        # lists may share items (picked by an index): count what is kept, never bound it by the content
        counted = [
            list_lengths(lengths[:, b], *lists[name][:2], width)
            for b, (name, width) in enumerate(self.jagged)
        ]
        values = np.empty(sum(kept for kept, _ in counted), dtype=np.float32)
        at = 0
        for (name, width), (kept, whole) in zip(self.jagged, counted, strict=True):
            first, last, content = lists[name]
            shift, inv_scale = np.float32(self.shift[name]), np.float32(1.0 / self.scale[name])
            content = content.astype(np.float32, copy=False)
            finite &= pack_lists(values, at, first, last, content, shift, inv_scale, width, whole)
            at += kept
        packed = Packed(flat, lengths, values, None, None)
        return packed if finite else self._mend(packed)

    def _mend(self, packed: Packed) -> Packed:
        """Replace the non-finite values by ``nan_value``, or drop their events."""
        flat, values = packed.flat, packed.values
        bad_values = ~np.isfinite(values)
        if not self.drop_nonfinite:
            flat[~np.isfinite(flat)] = np.float32(self.nan_value)
            values[bad_values] = np.float32(self.nan_value)
            return packed
        n = len(flat)
        kept_items = np.minimum(packed.lengths, [slots for _, slots in self.jagged]).astype(np.int64)
        owner = np.repeat(np.tile(np.arange(n), kept_items.shape[1]), kept_items.T.ravel())
        nonfinite = ~np.isfinite(flat).all(axis=1)
        nonfinite[owner[bad_values]] = True
        if not nonfinite.any():
            return packed
        keep = ~nonfinite
        values = values[keep[owner]]
        return Packed(flat[keep], packed.lengths[keep], values, None, None, keep)

    def unpacked(self, packed: Packed) -> np.ndarray:
        """All rows of X of ``packed``, in order."""
        out = np.empty((len(packed), self.idim), dtype=np.float32)
        self.unpack(packed, out, 0)
        return out

    def unpack(self, packed: Packed, out: np.ndarray, lo: int) -> None:
        """Write rows of X to ``out``: row ``k`` from packed event ``lo + k``."""
        from mlaas4hep_dask.read._kernels import unpack_rows

        slots = np.array([slots for _, slots in self.jagged], dtype=np.int64)
        args = (np.float32(self.pad_value), self.counts, lo)
        unpack_rows(out, packed.flat, packed.lengths, packed.starts(slots), packed.values, slots, *args)


@dataclasses.dataclass
class Packed:
    """The events of one partition for one split as the workers send them: normalized, not padded.

    Attributes
    ----------
    flat
        ``(n, flat branches)`` normalized float32 values.
    lengths
        ``(n, jagged branches)`` items of each list (before clipping to its slots).
    values
        Each jagged branch's items of every event, at most its slots per event, normalized,
        one branch after the other.
    y, w
        Targets and weights (or ``None``).
    keep
        Which of the events given to :meth:`Layout.pack` are here (``None``: all).
    """

    flat: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    y: np.ndarray | None
    w: np.ndarray | None
    keep: np.ndarray | None = None
    _starts: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.flat)

    def sent(self) -> tuple[np.ndarray | None, ...]:
        """A plain tuple of arrays: distributed sends them without pickling (4x faster than an object)."""
        return self.flat, self.lengths, self.values, self.y, self.w

    def starts(self, slots: np.ndarray) -> np.ndarray:
        """Where each event's items of each jagged branch begin in :attr:`values` (computed once)."""
        if self._starts is None:
            from mlaas4hep_dask.read._kernels import list_starts

            self._starts = list_starts(self.lengths, slots.astype(np.int64))
        return self._starts


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


@dataclasses.dataclass
class Block:
    """The tensorized events of one partition for one split, in entry order."""

    X: np.ndarray
    y: np.ndarray | None
    w: np.ndarray | None

    def __len__(self) -> int:
        return len(self.X)

    def take(self, index: Any) -> Block:
        """The rows at ``index`` (a slice: a view; a mask or positions: a copy)."""
        return Block(_at(self.X, index), _take(self.y, index), _take(self.w, index))

    @staticmethod
    def concatenate(blocks: Sequence[Block]) -> Block:
        """One block of all rows."""
        return Block(
            np.concatenate([b.X for b in blocks]),
            None if blocks[0].y is None else np.concatenate([b.y for b in blocks]),
            None if blocks[0].w is None else np.concatenate([b.w for b in blocks]),
        )


@dataclasses.dataclass
class Chunk:
    """A chunk's rows in the order they were read, and the order in which they are used.

    Batches are taken row by row from here (``order[a:b]``): gathering whole rows costs a
    third of scattering them into a shuffled copy of the chunk.

    Attributes
    ----------
    block
        The rows, in reading order.
    order
        Position ``j`` of the chunk is row ``order[j]`` of ``block`` (``None``: as read).
    """

    block: Block
    order: np.ndarray | None

    def __len__(self) -> int:
        return len(self.block)

    @classmethod
    def assemble(
        cls,
        layout: Layout,
        pieces: Sequence[tuple[Packed, int, int]],
        rng: Any = None,
        buffers: RowBuffers | None = None,
    ) -> Chunk:
        """Unpack events ``[lo, hi)`` of each packed partition into one chunk, shuffled by ``rng``.

        With ``rng``, the chunk's position ``j`` is row ``order[j]`` of the rows in reading
        order, ``order`` a uniformly random permutation drawn from ``rng`` (see
        :func:`_order`).  The rows are written into one of ``buffers`` (a used chunk's,
        returned by its consumer) when there is one.
        """
        n = sum(hi - lo for _, lo, hi in pieces)
        X = buffers.get(n, layout.idim) if buffers is not None else np.empty((n, layout.idim), np.float32)
        at = 0
        for packed, lo, hi in pieces:
            layout.unpack(packed, X[at : at + hi - lo], lo)
            at += hi - lo
        first = pieces[0][0] if pieces else None
        y = None if first is None or first.y is None else np.concatenate([p.y[lo:hi] for p, lo, hi in pieces])  # type: ignore[index]
        w = None if first is None or first.w is None else np.concatenate([p.w[lo:hi] for p, lo, hi in pieces])  # type: ignore[index]
        return cls(Block(X, y, w), None if rng is None else _order(n, rng))

    def rows(self, a: int, b: int) -> Block:
        """Positions ``[a, b)`` of the chunk (a view when unshuffled, else a copy)."""
        if self.order is None:
            return self.block.take(slice(a, b))
        return self.block.take(self.order[a:b])


class RowBuffers:
    """The row arrays of chunks their consumer is done with, for the next chunks to be written into.

    A fresh array's pages are zeroed by the kernel when first written (about 10 % of a trainer's
    time for ~30 MB chunks); a reused one's are not.  Only arrays that nothing else refers to
    may be returned: the rows of shuffled chunks, whose batches are gathered copies.
    Thread-safe (one thread assembles chunks while another consumes them).
    """

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, n: int, width: int) -> np.ndarray:
        """``(n, width)`` float32 rows, in a returned array when one is large enough."""
        with self._lock:
            for i, buffer in enumerate(self._free):
                if buffer.shape[1] == width and len(buffer) >= n:
                    return self._free.pop(i)[:n]
        return np.empty((n, width), dtype=np.float32)

    def put(self, rows: np.ndarray) -> None:
        """Return ``rows`` (from :meth:`get`; nothing may use them any more)."""
        whole = rows.base if isinstance(rows.base, np.ndarray) else rows
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(whole)


def _order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)``, reproducible from ``rng``'s state.

    One 64-bit draw of ``rng`` seeds a compiled Fisher-Yates shuffle (see
    :func:`~mlaas4hep_dask.read._kernels.shuffled_order`; 1.5 ms where ``rng.permutation`` takes
    5-7 ms per 200 000 rows); chunks of 2**32 rows or more, which no memory holds today, take
    ``rng.permutation``.
    """
    from mlaas4hep_dask.read._kernels import shuffled_order

    key = rng.integers(2**64, dtype=np.uint64)
    return shuffled_order(n, key) if n < 2**32 else rng.permutation(n)


def _lists(values: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``starts``, ``stops`` and ``content`` of a list-of-numbers array, without copying the content.

    Lists as uproot reads them (and as cuts leave them, events picked by an index) are viewed
    as they are; any other layout is flattened first, a missing list counting as empty and a
    missing item as NaN.
    """
    layout = ak.to_layout(values)
    index = None
    if isinstance(layout, ak.contents.IndexedArray):  # events selected by cuts, lists untouched
        index, layout = np.asarray(layout.index.data), layout.content
    if (
        isinstance(layout, (ak.contents.ListOffsetArray, ak.contents.ListArray))
        and isinstance(layout.content, ak.contents.NumpyArray)
        and layout.content.data.ndim == 1
    ):
        starts, stops = np.asarray(layout.starts.data), np.asarray(layout.stops.data)
        if index is not None:
            starts, stops = starts[index], stops[index]
        return starts, stops, np.asarray(layout.content.data)
    values = ak.fill_none(ak.fill_none(values, [], axis=0), np.nan, axis=-1)
    counts = ak.to_numpy(ak.num(values, axis=1))
    stops = np.cumsum(counts)
    return stops - counts, stops, ak.to_numpy(ak.flatten(values, axis=1))


def _at(values: np.ndarray, index: Any) -> np.ndarray:
    """``values[index]``; positions are gathered with ``take`` (whole rows: 3x faster here)."""
    if isinstance(index, np.ndarray) and index.dtype.kind in "iu":
        return values.take(index, axis=0)
    return values[index]


def _take(values: np.ndarray | None, index: Any) -> np.ndarray | None:
    return None if values is None else _at(values, index)


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
            self.target_dtype = _target_dtype_of(np.dtype(plan.extras[self.label_branch].dtype))
        elif self.labels is not None:
            self.target_dtype = np.dtype(_target_dtype(self.labels))

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
            y, w = _take(y, packed.keep), _take(w, packed.keep)
        if self.summing:
            return sums(y, w, self.classes)
        if self.scale is not None:
            w = self.scale.apply(y, w, len(packed))
        return dataclasses.replace(packed, y=y, w=w, keep=None).sent()

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
        if self.weight_branch is None and self.file_scale is None:
            return None
        w = (
            np.ones(len(record), np.float32)
            if self.weight_branch is None
            else ak.to_numpy(record[self.weight_branch]).astype(np.float32)
        )
        return w if self.file_scale is None else w * np.float32(self.file_scale[file_index])

    def _codes(self, file_index: int, entries: np.ndarray) -> np.ndarray:
        return split_codes(file_index, entries, self.seed, self.split, self.test_fraction)

    def _target(self, record: ak.Array, file_index: int) -> np.ndarray | None:
        if self.label_branch is not None:
            return ak.to_numpy(record[self.label_branch]).astype(self.target_dtype)
        if self.labels is None:
            return None
        return np.full(len(record), self.labels[file_index], dtype=self.target_dtype)


def _target_dtype(values: np.ndarray) -> type:
    """Integer classes stay integers (for cross-entropy losses); anything else is float32."""
    return np.int64 if np.all(np.mod(values, 1) == 0) else np.float32


def _target_dtype_of(dtype: np.dtype) -> np.dtype:
    """Integer and bool label branches give int64 classes, the rest float32 targets."""
    return np.dtype(np.int64) if dtype.kind in "biu" else np.dtype(np.float32)
