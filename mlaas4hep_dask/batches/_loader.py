"""Stream training batches from Dask partitions: proportional file mixing, shuffle, prefetch.

How an epoch is put together:

1. *Counting* (once per loader): the events of the chosen split in every partition.  Without
   cuts (and with ``nan_policy="replace"``) this needs no data at all: the split is a hash of
   (file index, entry).  Otherwise only the branches the cuts use are read.
2. *Chunks*: with ``N`` events and ``chunk_size`` ``C``, there are ``K = ceil(N / C)`` chunks;
   file ``f`` with ``n_f`` events gives chunk ``k`` its events ``[n_f k / K, n_f (k+1) / K)``,
   so every chunk holds each file's share within one event of exact (``n_f / K``): the class
   balance of the whole set, as in the original tool.
3. *Prefetch*: the partitions feeding the next ``prefetch`` chunks are computed on the workers
   (read, preprocess, tensorize) while the trainer consumes the current chunk; a partition is
   released as soon as its last chunk is built, so memory holds about ``prefetch + 1`` chunks
   on the workers whatever the size of the data set, and two assembled chunks in the trainer
   (one being used, the next gathered and shuffled by a thread).  While the train split's
   last chunks are used, the window runs on into the next epoch's first ones (up to
   ``params.epochs``): epochs follow each other without a pause to refill.
4. Each chunk is shuffled (seeded by seed and epoch) and cut into batches of ``batch_size``;
   the remainder of a chunk starts the next batch, so only the last batch of an epoch is short.

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
import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask._compute import compute
from mlaas4hep_dask.batches._executors import Distributed, executor
from mlaas4hep_dask.config._params import Params, load_labels, load_params
from mlaas4hep_dask.errors import ConfigError, SpecsError
from mlaas4hep_dask.handle._preprocess import Plan, Preproc, load_preproc, make_plan
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.handle._tensorize import Block, Chunk, Layout, Packed, RowBuffers, Tensorize, split_codes
from mlaas4hep_dask.handle._weights import WeightScale, scale_of
from mlaas4hep_dask.read._dataset import Dataset, open_dataset

__all__ = ["BatchLoader", "Piece", "Shard", "deal", "plan_chunks"]


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


def _batch_sizes(n: int, batch_size: int, steps: int | None) -> Iterator[int]:
    """Sizes of an epoch's batches: ``batch_size`` and a short last one, or ``steps`` even ones."""
    if steps is None:
        yield from [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    else:
        yield from (n * (i + 1) // steps - n * i // steps for i in range(steps))


_MIN_STEP = 20_000
_UNSET = object()  # the weight factors before the counting pass


class _SumOf:
    """Sum of one branch over a partition (for the samples' sums of weights)."""

    def __init__(self, branch: str) -> None:
        self.branch = branch

    def __call__(self, partition: Any, file_index: int, start: int) -> float:
        import awkward as ak

        return float(np.sum(ak.to_numpy(partition[self.branch]), dtype=np.float64))


def _ahead(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``items``, produced by a thread that keeps ``depth`` of them ready ahead of the consumer.

    NumPy and the Dask client release the GIL while they copy and wait, so the next chunk is
    gathered and shuffled while the trainer computes.  An error in the thread is raised to the
    consumer; a consumer that stops early stops the thread at its next item.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                box.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    break
            else:
                put("end", None)
        except BaseException as err:  # raised again in the consumer
            put("error", err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="mlaas4hep-loader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def _shuffled(chunks: Iterator[Chunk], buffers: RowBuffers) -> Iterator[Block]:
    """Each chunk's rows in the order of use; stopping early stops ``chunks`` (and its thread)."""
    try:
        for chunk in chunks:
            yield chunk.rows(0, len(chunk))
            _done(chunk, buffers)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _done(chunk: Chunk, buffers: RowBuffers) -> None:
    """Its consumer is done with ``chunk``: a shuffled chunk's rows (only ever handed out as
    gathered copies) are written over by a later chunk."""
    if chunk.order is not None:
        buffers.put(chunk.block.X)


def _partition_step(chunk_size: int, nfiles: int) -> int:
    """Entries per loader partition.

    A chunk takes about ``chunk_size / nfiles`` events of every file, and each file's current
    partition stays in memory until consumed; partitions of twice that keep memory near two
    chunks whatever the number of files (but not below 20 000 entries, where task overhead
    would dominate).
    """
    if chunk_size == -1:
        return -1
    return min(chunk_size, max(2 * math.ceil(chunk_size / nfiles), _MIN_STEP))


def _check_specs(specs: Specs, plan: Plan, recipe: Preproc | None, dataset: Dataset) -> Specs:
    """Refuse specs that do not describe these inputs after this preprocessing.

    Specs of the original tool list the flat branches, then the jagged ones: they are put in
    the tree's order (with a warning saying what moved); ours must match it already.
    """
    ours: dict[str, str] = {n: b.kind for n, b in plan.branches.items()}
    theirs = {n: b.kind for n, b in specs.branches.items()}
    if specs.from_original_tool and ours == theirs and list(ours) != list(theirs):
        moved = [n for n, o in zip(ours, theirs, strict=True) if n != o]
        warnings.warn(
            f"the original tool's specs list their branches in another order: {len(moved)} put in the "
            f"tree's order ({', '.join(moved[:6])}{', ...' if len(moved) > 6 else ''})",
            UserWarning,
            stacklevel=3,
        )
        specs = dataclasses.replace(specs, branches={n: specs.branches[n] for n in ours})
        theirs = ours
    if ours != theirs or list(ours) != list(theirs):
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        detail = (
            f"in the specs only: {missing[:5]}; in the data only: {extra[:5]}"
            if missing or extra
            else "order or kinds differ"
        )
        raise SpecsError(
            f"the specs do not describe these inputs after preprocessing ({detail}): "
            "compute the specs again with the same files, params.json and preproc.json"
        )
    recorded = (specs.preproc or {}).get("definition")
    current = dict(recipe.source) if recipe is not None else None
    if specs.from_original_tool:
        if current:
            warnings.warn(
                "specs in the original tool's format do not say which preproc.json made them", stacklevel=3
            )
    elif recorded != current:
        raise SpecsError("the specs were computed with a different preproc.json: compute them again")
    spec_paths = [f.path for f in specs.files]
    if spec_paths and spec_paths != [f.path for f in dataset.files]:
        warnings.warn(
            "the specs were computed on other input files: normalization uses their min/max",
            UserWarning,
            stacklevel=3,
        )
    return specs


class BatchLoader:
    """Iterate over ``(X, y)`` (or ``(X, y, w)``) batches of one split, epoch after epoch.

    Parameters
    ----------
    files
        ``files.txt``, a comma-separated string, or a list of paths/URLs.
    specs
        :class:`Specs` or a specs file, computed on these files with the same preprocessing.
    params
        ``params.json`` path, dict or :class:`Params` (``batch_size``, ``chunk_size``,
        ``shuffle``, ``split``, ``normalize``, ``max_jagged``, ``weight_branch``, ...).
    preproc
        ``preproc.json`` path or dict (the one the specs were computed with).
    labels
        One label per file (list, or a ``labels.txt`` path); or ``None`` with
        ``label_branch`` in params; or neither, and ``y`` is ``None``.
    split
        ``"train"``, ``"validation"`` or ``"test"``.
    client
        A ``distributed.Client``, ``"threads"``, ``"processes"`` (a private LocalCluster),
        ``"sync"``, or ``None`` (the current distributed client, else threads).
    shard
        Only this data-parallel trainer's share of the split (see :meth:`shards`).

    Examples
    --------
    >>> loader = BatchLoader("files.txt", "specs.json", "params.json", labels="labels.txt")  # doctest: +SKIP
    >>> len(loader), loader.idim  # doctest: +SKIP
    (140012, 116)
    >>> for X, y in loader:  # one epoch  # doctest: +SKIP
    ...     model.train_on_batch(X, y)
    """

    def __init__(
        self,
        files: str | Path | Sequence[str | Path] | Dataset,
        specs: Specs | str | Path,
        params: Params | Mapping[str, Any] | str | Path | None = None,
        preproc: Preproc | Mapping[str, Any] | str | Path | None = None,
        labels: str | Path | Sequence[float] | None = None,
        split: str = "train",
        client: Any = None,
        shard: Shard | None = None,
    ) -> None:
        self.params = load_params(params)
        self.specs = specs if isinstance(specs, Specs) else Specs.load(specs)
        self.recipe = recipe = load_preproc(preproc)
        dataset = open_dataset(files, self.params)
        extras = [b for b in (self.params.label_branch, self.params.weight_branch) if b]
        self.plan = make_plan(recipe, dataset.available, dataset.branches, extras)
        step = _partition_step(self.params.chunk_size, len(dataset.files))
        self.dataset = dataset.with_step(step, self.plan.columns)
        self.specs = _check_specs(self.specs, self.plan, recipe, self.dataset)
        if labels is not None and self.params.label_branch is not None:
            raise ConfigError("give either labels (labels.txt) or 'label_branch' in params, not both")
        self.labels = load_labels(labels, len(self.dataset.files))
        samples = self.dataset.samples
        if self.labels is None and self.params.label_branch is None and samples is not None:
            self.labels = samples.labels
        self.layout = Layout.from_specs(self.specs, self.params)
        self.split = split
        self._tensorize = Tensorize(self.plan, self.layout, self.params, split, self.labels)
        self._executor = executor(client)
        self._finalizer = weakref.finalize(self, self._executor.close)
        self.shard = shard
        self._counts: list[int] | None = None if shard is None else list(shard.counts)
        self._scale: WeightScale | object | None = _UNSET if shard is None else shard.scale
        self._file_scale: tuple[float, ...] | object | None = _UNSET if shard is None else shard.file_scale
        if shard is not None and len(shard.counts) != len(self.dataset.partitions):
            raise ConfigError("the shard was dealt from other partitions of these inputs")
        self._tasks: list[Any] | None = None
        self._next: dict[int, Any] = {}  # partitions of the next epoch's first chunks, computing
        self._kept: dict[int, Packed] = {}  # ... and those this epoch had at its end, kept for it
        self._buffers = RowBuffers()
        self.epoch = 0

    @property
    def features(self) -> list[str]:
        """Column names of ``X``."""
        return self.layout.features

    @property
    def idim(self) -> int:
        """Number of columns of ``X`` (``specs.idim`` unless ``max_jagged``/``jagged_counts``)."""
        return self.layout.idim

    def __len__(self) -> int:
        """Events one epoch yields."""
        return sum(self.counts) if self.shard is None else len(self.shard)

    def shards(self, world: int) -> list[Shard]:
        """This split dealt to ``world`` data-parallel trainers (see :func:`deal`).

        ``batch_size`` stays the batch of one optimizer step: each trainer takes
        ``ceil(batch_size / world)`` events of it, so N trainers follow the path of one.
        """
        files = [f for f, _, _ in self.dataset.partitions]
        shards = deal(self.counts, files, world, math.ceil(self.params.batch_size / world))
        return [dataclasses.replace(s, scale=self.weight_scale, file_scale=self.file_scale) for s in shards]

    @property
    def file_scale(self) -> tuple[float, ...] | None:
        """Each file's weight factor, ``xsec * lumi / sum_weights`` of its sample (or ``None``).

        The sum is of ``sum_weights_branch`` (else the ``weight_branch``, else 1) over every
        entry the loader reads of the sample's files, all splits and before any cut, unless
        the sample list gives ``sum_weights``: a sample's events then weigh ``xsec * lumi``
        in all (see :mod:`mlaas4hep_dask.config._samples`).
        """
        if self._file_scale is _UNSET:
            self._file_scale = self._scale_files()
        return self._file_scale  # type: ignore[return-value]

    def _scale_files(self) -> tuple[float, ...] | None:
        samples = self.dataset.samples
        if samples is None or not samples.scaled:
            return None
        of_file = samples.of_file
        totals: dict[str, float] = {s.name: float(s.sum_weights) for s in samples.samples if s.sum_weights}
        by_branch: dict[str | None, list[str]] = {}
        for s in samples.samples:
            if s.name not in totals:
                by_branch.setdefault(s.sum_weights_branch or self.params.weight_branch, []).append(s.name)
        partitions = self.dataset.partitions
        for branch, names in by_branch.items():
            if branch is None:  # no weights at all: the sample's number of events
                values = [float(b - a) for _, a, b in partitions]
            else:
                if branch not in self.dataset.available:
                    raise ConfigError(
                        f"{samples.source}: the sum of weights of sample {names[0]!r} needs branch "
                        f"{branch!r}, which the tree does not have"
                    )
                values = [float(v) for v in self._pass(_SumOf(branch), [branch])]
            for (f, _, _), value in zip(partitions, values, strict=True):
                if of_file[f].name in names:
                    totals[of_file[f].name] = totals.get(of_file[f].name, 0.0) + value
        lumi = float(samples.lumi or 0.0)
        for s in samples.samples:
            if totals.get(s.name, 0.0) <= 0:
                raise ConfigError(
                    f"{samples.source}: the weights of sample {s.name!r} sum to {totals.get(s.name, 0.0):g}: "
                    "its events cannot be scaled to xsec * lumi; give 'sum_weights'"
                )
        return tuple(float(s.xsec) * lumi / totals[s.name] for s in of_file)  # type: ignore[arg-type]

    @property
    def weighted(self) -> bool:
        """Whether batches carry weights: a ``weight_branch``, or training weights per class."""
        return bool(self.params.weight_branch) or self.file_scale is not None or self.weight_scale is not None

    @property
    def weight_scale(self) -> WeightScale | None:
        """Factors from the physical weights to the training split's fit weights (``None``: as they are).

        ``weight_norm`` and ``class_weight`` (see :class:`~mlaas4hep_dask.config._params.Params`); the
        other splits keep the physical weights, which the metrics use.  Computed with the
        counts, in the same pass.
        """
        if self.split != "train":
            return None
        if self._scale is _UNSET:
            if self._needs_scale():
                self.counts  # noqa: B018 - the pass that counts also sums the weights
            else:
                self._scale = None
        return self._scale  # type: ignore[return-value]

    def _needs_scale(self) -> bool:
        p = self.params
        weights = p.weight_branch is not None or self.file_scale is not None
        wanted = p.class_weight is not None or (weights and p.weight_norm != "none")
        return self.split == "train" and wanted

    @property
    def counts(self) -> list[int]:
        """Events of this split in each partition (computed once, on first use)."""
        if self._counts is None:
            self._counts = self._count()
        return self._counts

    def _count(self) -> list[int]:
        p, t = self.params, self._tensorize
        from_codes = not (self.plan.cuts or self.layout.drop_nonfinite)  # no data needed
        summing = self._needs_scale()  # and the weights summed per class, in the same pass
        if summing and not (from_codes and p.weight_branch is None and p.label_branch is None):
            summer = Tensorize(
                self.plan, self.layout, p, self.split, self.labels, summing=True, file_scale=self.file_scale
            )
            extras = [b for b in (p.label_branch, p.weight_branch) if b]
            parts = self._pass(summer, (*self.plan.cut_columns, *extras) if summer.reads_little else None)
            self._scale = scale_of(parts, p, summer.classes)
            return [int(n.sum()) for _, n, _ in parts]
        if not from_codes:
            counter = Tensorize(self.plan, self.layout, p, self.split, self.labels, count_only=True)
            columns = None if self.layout.drop_nonfinite else self.plan.cut_columns
            return [int(n) for n in self._pass(counter, columns)]
        partitions = self.dataset.partitions
        codes = (split_codes(f, np.arange(a, b), p.seed, p.split, p.test_fraction) for f, a, b in partitions)
        counts = [int(np.count_nonzero(c == t.code)) for c in codes]
        if summing:  # one label per file, no weight branch: every event weighs its file's factor
            labels = t.labels if t.labels is not None else np.zeros(len(self.dataset.files))
            factor = self.file_scale or (1.0,) * len(self.dataset.files)
            parts = [
                (labels[f : f + 1], np.array([n]), np.array([n * factor[f]]))
                for (f, _, _), n in zip(partitions, counts, strict=True)
            ]
            self._scale = scale_of(parts, p, t.classes)
        return counts

    def _pass(self, call: Callable[..., Any], columns: Sequence[str] | None) -> list[Any]:
        """``call`` on every partition of ``columns`` (``None``: all the plan reads), computed now."""
        tasks = self.dataset.map_partitions(call, self.plan.columns if columns is None else tuple(columns))
        target = self._executor.client if isinstance(self._executor, Distributed) else "threads"
        return list(compute(tasks, target))

    def _task(self, partition: int) -> Any:
        if self._tasks is None:
            self._tensorize.scale = self.weight_scale
            self._tensorize.file_scale = self.file_scale
            self._tasks = self.dataset.map_partitions(self._tensorize, self.plan.columns)
        return self._tasks[partition]

    def chunks(self) -> list[list[Piece]]:
        """The chunk composition of an epoch (the same every epoch)."""
        files = [f for f, _, _ in self.dataset.partitions]
        if self.shard is None:
            return plan_chunks(self.counts, files, self.params.chunk_size)
        pieces = self.shard.pieces
        planned = plan_chunks(
            [p.hi - p.lo for p in pieces], [files[p.partition] for p in pieces], self.params.chunk_size
        )
        return [
            [
                Piece(
                    pieces[q.partition].partition,
                    pieces[q.partition].lo + q.lo,
                    pieces[q.partition].lo + q.hi,
                )
                for q in chunk
            ]
            for chunk in planned
        ]

    def iter_chunks(self, shuffle: bool | None = None, ahead: bool = True) -> Iterator[Block]:
        """One epoch as chunks (each a :class:`~mlaas4hep_dask.handle._tensorize.Block`).

        Rows are shuffled within each chunk when ``shuffle`` (default: ``params.shuffle``);
        unshuffled passes give the same rows in the same order every time (evaluation,
        XGBoost's two passes over its data).  The call starts the epoch (``epoch`` counts it);
        a thread gathers and unpacks the next chunk while the caller works on this one.  With
        ``ahead`` (the train split, up to ``params.epochs``), the workers start on the next
        epoch's first chunks while this one's last are used.
        """
        return _shuffled(self._epoch(shuffle, ahead), self._buffers)

    def _epoch(self, shuffle: bool | None = None, ahead: bool = True) -> Iterator[Chunk]:
        shuffle = self.params.shuffle if shuffle is None else shuffle
        seed = [self.params.seed, self.epoch] + ([self.shard.rank] if self.shard else [])
        self.epoch += 1
        # the train split's next epoch starts reading while this one ends: no pause between epochs
        more = ahead and self.split == "train" and self.epoch < self.params.epochs
        return _ahead(self._chunks(np.random.default_rng(seed), shuffle, more))

    def _chunks(self, rng: np.random.Generator, shuffle: bool, more: bool) -> Iterator[Chunk]:
        """The epoch's chunks, its partitions asked for ``prefetch`` chunks ahead.

        With ``more``, the next epoch's first chunks are asked for while this one's last are
        used, and the partitions they share with this epoch's last chunks are kept for it, not
        read again (a file of one basket is one partition: every chunk of every epoch uses it).
        """
        chunks = self.chunks()
        last_use: dict[int, int] = {}
        for k, chunk in enumerate(chunks):
            for piece in chunk:
                last_use[piece.partition] = k
        depth = self.params.prefetch
        final = len(chunks) - depth - 1  # from this chunk on, the next epoch's first are asked for
        carried = {piece.partition for c in chunks[: depth + 1] for piece in c} if more else set()
        pending = {p: self._executor.fetch(handle) for p, handle in self._next.items()}
        ready, self._kept, self._next = self._kept, {}, {}
        for k, chunk in enumerate(chunks):
            window = chunks[k : k + depth + 1]
            following = chunks[: max(0, k - final)] if more else []
            for ahead, into in [(window, pending), (following, self._next)]:
                for piece in (piece for c in ahead for piece in c):
                    p = piece.partition
                    if p not in into and p not in ready and p not in pending and p not in self._kept:
                        handle = self._executor.submit(self._task(p))
                        into[p] = self._executor.fetch(handle) if into is pending else handle
            pieces = []
            for piece in chunk:
                p = piece.partition
                if p not in ready:
                    ready[p] = Packed(*self._executor.result(pending.pop(p)))
                pieces.append((ready[p], piece.lo, piece.hi))
                if last_use[p] == k:
                    packed = ready.pop(p)
                    if p in carried and k >= final:
                        self._kept[p] = packed
            yield Chunk.assemble(self.layout, pieces, rng if shuffle else None, self._buffers)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        steps = None if self.shard is None else self.shard.steps
        sizes = _batch_sizes(len(self), self.params.batch_size, steps)
        size = next(sizes, 0)
        parts: list[Block] = []  # the start of a batch that continues in the next chunk
        have = 0
        for chunk in self._epoch():
            start = 0
            while start < len(chunk) and size:
                take = min(size - have, len(chunk) - start)
                parts.append(chunk.rows(start, start + take))
                have += take
                start += take
                if have == size:
                    yield self._batch(parts[0] if len(parts) == 1 else Block.concatenate(parts))
                    parts, have, size = [], 0, next(sizes, 0)
            _done(chunk, self._buffers)

    def torch(self, device: str | None = None) -> Iterator[tuple[Any, ...]]:
        """One epoch of batches as ``torch.Tensor`` (sharing memory with NumPy; moved to ``device``).

        Examples
        --------
        >>> for X, y in loader.torch("cuda"):  # doctest: +SKIP
        ...     loss = loss_fn(net(X), y)
        """
        import torch

        for batch in self:
            tensors = tuple(None if a is None else torch.from_numpy(a) for a in batch)
            if device is not None:
                tensors = tuple(None if t is None else t.to(device, non_blocking=True) for t in tensors)
            yield tensors

    def tf_dataset(self) -> Any:
        """The stream as a ``tf.data.Dataset`` of ``(X, y[, w])`` batches (one epoch per iteration)."""
        import tensorflow as tf

        target = self._tensorize.target_dtype
        if target is None:
            raise ConfigError("a tf.data.Dataset of (X, y) needs targets: give labels or 'label_branch'")
        signature: list[Any] = [tf.TensorSpec((None, self.idim), tf.float32), tf.TensorSpec((None,), target)]
        if self.weighted:
            signature.append(tf.TensorSpec((None,), tf.float32))
        return tf.data.Dataset.from_generator(lambda: iter(self), output_signature=tuple(signature))

    def dmatrix(self, ref: Any = None) -> Any:
        """An ``xgboost.QuantileDMatrix`` built chunk by chunk from the stream (never all at once).

        Chunks come unshuffled, so XGBoost's two passes over the data see the same rows.
        """
        import xgboost

        loader = self

        class _Chunks(xgboost.DataIter):
            def __init__(self) -> None:
                super().__init__()
                self.it: Iterator[Block] | None = None

            def next(self, input_data: Any) -> bool:
                if self.it is None:
                    self.it = loader.iter_chunks(shuffle=False)
                chunk = next(self.it, None)
                if chunk is None:
                    return False
                input_data(data=chunk.X, label=chunk.y, weight=chunk.w)
                return True

            def reset(self) -> None:
                self.it = None

        return xgboost.QuantileDMatrix(_Chunks(), ref=ref)

    def _batch(self, block: Block) -> tuple[np.ndarray, ...]:
        if block.w is not None:
            return block.X, block.y, block.w  # type: ignore[return-value]
        return block.X, block.y  # type: ignore[return-value]

    def close(self) -> None:
        """Release the executor (and the private cluster of ``client="processes"``)."""
        self._finalizer()

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
