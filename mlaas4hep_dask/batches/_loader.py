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
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask._compute import compute
from mlaas4hep_dask.batches._executors import Distributed, executor
from mlaas4hep_dask.batches._frameworks import dmatrix, tf_dataset, torch_batches
from mlaas4hep_dask.batches._partitioning import SumOf, count_events, sample_scales
from mlaas4hep_dask.batches._pipeline import give_back, read_ahead, shuffled
from mlaas4hep_dask.batches._plan import Piece, Shard, batch_sizes, deal, plan_chunks
from mlaas4hep_dask.config._params import Params, load_params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._checks import check_specs
from mlaas4hep_dask.handle._layout import Layout, Packed
from mlaas4hep_dask.handle._preprocess import Preproc, load_preproc, make_plan
from mlaas4hep_dask.handle._rows import Block, Chunk, RowBuffers, received
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.handle._tensorize import Tensorize
from mlaas4hep_dask.handle._weights import WeightScale
from mlaas4hep_dask.prepared._prepare import Prepared, ReadShard, targets
from mlaas4hep_dask.read._dataset import Dataset, open_dataset
from mlaas4hep_dask.read._partitions import partition_step

__all__ = ["BatchLoader"]


_UNSET = object()  # the weight factors before the counting pass


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
    store
        A :class:`~mlaas4hep_dask.prepared.Prepared` dataset of these inputs: its shards are
        read instead of the ROOT files (same split, chunks and batches).

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
        store: Prepared | None = None,
    ) -> None:
        self.params = load_params(params)
        self.specs = specs if isinstance(specs, Specs) else Specs.load(specs)
        self.recipe = recipe = load_preproc(preproc)
        dataset = open_dataset(files, self.params)
        extras = [b for b in (self.params.label_branch, self.params.weight_branch) if b]
        self.plan = make_plan(recipe, dataset.available, dataset.branches, extras)
        self.store = store
        self._shard_infos: tuple[Any, ...] = ()
        self._use = None if store is None else store.use()  # never evicted while this loader reads it
        if store is None:
            step = partition_step(self.params.chunk_size, len(dataset.files))
            self.dataset = dataset.with_step(step, self.plan.columns)
        else:
            self.dataset, self._shard_infos = store.on(dataset)
        self.specs = check_specs(self.specs, self.plan, recipe, self.dataset)
        self.labels = targets(labels, self.params, self.dataset)
        self.layout = Layout.from_specs(self.specs, self.params)
        self.split = split
        self._tensorize = Tensorize(self.plan, self.layout, self.params, split, self.labels)
        self._executor = executor(client)
        self._finalizer = weakref.finalize(self, self._release, self._executor, self._use)
        self.shard = shard
        self._counts: list[int] | None = None if shard is None else list(shard.counts)
        self._scale: WeightScale | object | None = _UNSET if shard is None else shard.scale
        self._file_scale: tuple[float, ...] | object | None = _UNSET if shard is None else shard.file_scale
        if shard is not None and len(shard.counts) != len(self.dataset.partitions):
            raise ConfigError("the shard was dealt from other partitions of these inputs")
        self._tasks: list[Any] | None = None
        self._next: dict[int, Any] = {}  # partitions of the next epoch's first chunks, computing
        self._kept: dict[int, Packed | Block] = {}  # ... and those this epoch had at its end, kept for it
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
        ``ceil(batch_size / world)`` events of it, so N trainers follow the path of one;
        with ``batch_size_per_trainer``, each takes that many a step (the step's batch grows
        with ``world``).
        """
        files = [f for f, _, _ in self.dataset.partitions]
        per_trainer = self.params.batch_size_per_trainer or math.ceil(self.params.batch_size / world)
        shards = deal(self.counts, files, world, per_trainer)
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
        return sample_scales(self.dataset, self.params, self._pass)

    @property
    def weighted(self) -> bool:
        """Whether batches carry weights: a ``weight_branch``, or training weights per class."""
        return bool(self.params.weight_branch) or self.file_scale is not None or self.weight_scale is not None

    @property
    def weight_scale(self) -> WeightScale | None:
        """Factors from the physical weights to the training split's fit weights (``None``: as they are).

        ``weight_norm`` and ``class_weight`` (see :class:`~mlaas4hep_dask.config.Params`); the
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
        return count_events(self)

    def _pass(self, call: Callable[..., Any], columns: Sequence[str] | None) -> list[Any]:
        """``call`` on every partition of ``columns`` (``None``: all the plan reads), computed now."""
        if self.store is not None and isinstance(call, Tensorize):
            tasks = self._from_store(call)
        elif (
            self.store is not None
            and isinstance(call, SumOf)
            and all(call.branch in s.sums for s in self._shard_infos)
        ):
            return [s.sums[call.branch] for s in self._shard_infos]
        else:
            tasks = self.dataset.map_partitions(
                call, self.plan.columns if columns is None else tuple(columns)
            )
        target = self._executor.client if isinstance(self._executor, Distributed) else "threads"
        return list(compute(tasks, target))

    def _task(self, partition: int) -> Any:
        if self._tasks is None:
            self._tensorize.scale = self.weight_scale
            self._tensorize.file_scale = self.file_scale
            if self.store is not None:
                self._tasks = self._from_store(self._tensorize)
            else:
                self._tasks = self.dataset.map_partitions(self._tensorize, self.plan.columns)
        return self._tasks[partition]

    def _from_store(self, call: Tensorize) -> list[Any]:
        """``call`` of every partition, from its shard in the store (see :class:`ReadShard`)."""
        import dask

        assert self.store is not None
        task = dask.delayed(ReadShard(call, self.store.path, self.store.key, self.store.roles), pure=True)
        return [
            task(info, f) for info, (f, _, _) in zip(self._shard_infos, self.dataset.partitions, strict=True)
        ]

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
        """One epoch as chunks (each a :class:`~mlaas4hep_dask.handle.Block`).

        Rows are shuffled within each chunk when ``shuffle`` (default: ``params.shuffle``);
        unshuffled passes give the same rows in the same order every time (evaluation,
        XGBoost's two passes over its data).  The call starts the epoch (``epoch`` counts it);
        a thread gathers and unpacks the next chunk while the caller works on this one.  With
        ``ahead`` (the train split, up to ``params.epochs``), the workers start on the next
        epoch's first chunks while this one's last are used.
        """
        return shuffled(self._epoch(shuffle, ahead), self._buffers)

    def _epoch(self, shuffle: bool | None = None, ahead: bool = True) -> Iterator[Chunk]:
        shuffle = self.params.shuffle if shuffle is None else shuffle
        seed = [self.params.seed, self.epoch] + ([self.shard.rank] if self.shard else [])
        self.epoch += 1
        # the train split's next epoch starts reading while this one ends: no pause between epochs
        more = ahead and self.split == "train" and self.epoch < self.params.epochs
        return read_ahead(self._chunks(np.random.default_rng(seed), shuffle, more))

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
                    ready[p] = received(self._executor.result(pending.pop(p)))
                pieces.append((ready[p], piece.lo, piece.hi))
                if last_use[p] == k:
                    packed = ready.pop(p)
                    if p in carried and k >= final:
                        self._kept[p] = packed
            yield Chunk.assemble(self.layout, pieces, rng if shuffle else None, self._buffers)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        steps = None if self.shard is None else self.shard.steps
        sizes = batch_sizes(len(self), self.params.batch_size_per_trainer or self.params.batch_size, steps)
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
            give_back(chunk, self._buffers)

    def torch(self, device: str | None = None) -> Iterator[tuple[Any, ...]]:
        """One epoch of batches as ``torch.Tensor`` (sharing memory with NumPy; moved to ``device``).

        Examples
        --------
        >>> for X, y in loader.torch("cuda"):  # doctest: +SKIP
        ...     loss = loss_fn(net(X), y)
        """
        return torch_batches(self, device)

    def tf_dataset(self) -> Any:
        """The stream as a ``tf.data.Dataset`` of ``(X, y[, w])`` batches (one epoch per iteration)."""
        return tf_dataset(self)

    def dmatrix(self, ref: Any = None) -> Any:
        """An ``xgboost.QuantileDMatrix`` built chunk by chunk from the stream (never all at once).

        Chunks come unshuffled, so XGBoost's two passes over the data see the same rows.
        """
        return dmatrix(self, ref)

    def _batch(self, block: Block) -> tuple[np.ndarray, ...]:
        if block.w is not None:
            return block.X, block.y, block.w  # type: ignore[return-value]
        return block.X, block.y  # type: ignore[return-value]

    @staticmethod
    def _release(executor: Any, use: Any) -> None:
        executor.close()
        if use is not None:
            use.close()

    def close(self) -> None:
        """Release the executor (and the private cluster of ``client="processes"``)."""
        self._finalizer()

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
