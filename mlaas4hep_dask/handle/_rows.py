"""Rows of X on the trainer: blocks, shuffled chunks of them, and buffers reused between chunks."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlaas4hep_dask.handle._layout import Layout, Packed

__all__ = ["Block", "Chunk", "RowBuffers", "received", "take_rows"]


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
        return Block(_at(self.X, index), take_rows(self.y, index), take_rows(self.w, index))

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
        pieces: Sequence[tuple[Packed | Block, int, int]],
        rng: Any = None,
        buffers: RowBuffers | None = None,
    ) -> Chunk:
        """Unpack events ``[lo, hi)`` of each packed partition into one chunk, shuffled by ``rng``.

        With ``rng``, the chunk's position ``j`` is row ``order[j]`` of the rows in reading
        order, ``order`` a uniformly random permutation drawn from ``rng`` (see
        :func:`_order`).  The rows are written into one of ``buffers`` (a used chunk's,
        returned by its consumer) when there is one.  Pieces that are rows already
        (:class:`Block`, read from a prepared store) are gathered in the order of use at once
        (see :meth:`gather`).
        """
        if pieces and isinstance(pieces[0][0], Block):
            return cls.gather(pieces, rng)  # type: ignore[arg-type]
        n = sum(hi - lo for _, lo, hi in pieces)
        X = buffers.get(n, layout.idim) if buffers is not None else np.empty((n, layout.idim), np.float32)
        at = 0
        for packed, lo, hi in pieces:
            layout.unpack(packed, X[at : at + hi - lo], lo)  # type: ignore[arg-type]
            at += hi - lo
        first = pieces[0][0] if pieces else None
        y = None if first is None or first.y is None else np.concatenate([p.y[lo:hi] for p, lo, hi in pieces])  # type: ignore[index]
        w = None if first is None or first.w is None else np.concatenate([p.w[lo:hi] for p, lo, hi in pieces])  # type: ignore[index]
        return cls(Block(X, y, w), None if rng is None else _order(n, rng))

    @classmethod
    def gather(cls, pieces: Sequence[tuple[Block, int, int]], rng: Any = None) -> Chunk:
        """Rows ``[lo, hi)`` of each block as one chunk, in the order of use: position ``j``
        holds row ``order[j]`` of the rows in reading order (the order :meth:`assemble` draws).

        One copy a row, into a new array that batches then view; the rows are read where they
        are (a prepared shard's memory map), in two threads for a large chunk (see :func:`_gathered`).
        """
        n = sum(hi - lo for _, lo, hi in pieces)
        y, w = (_joined([getattr(b, k) for b, _, _ in pieces], pieces) for k in "yw")
        if rng is None:
            return cls(Block(np.concatenate([b.X[lo:hi] for b, lo, hi in pieces]), y, w), None)
        order = _order(n, rng)
        X = _gathered([b.X[lo:hi] for b, lo, hi in pieces], order)
        return cls(Block(X, take_rows(y, order), take_rows(w, order)), None)

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


def received(sent: Sequence[np.ndarray | None]) -> Packed | Block:
    """A partition as a worker sends it: the five arrays of :meth:`Packed.sent` (normalized,
    to be padded here), or the rows, targets and weights ``(X, y, w)`` of a prepared shard."""
    return Block(*sent) if len(sent) == 3 else Packed(*sent)  # type: ignore[arg-type]


def _joined(
    values: Sequence[np.ndarray | None], pieces: Sequence[tuple[Block, int, int]]
) -> np.ndarray | None:
    """The pieces' ``[lo, hi)`` of one per-event array (targets or weights), one after the other."""
    if values[0] is None:
        return None
    return np.concatenate([v[lo:hi] for v, (_, lo, hi) in zip(values, pieces, strict=True)])  # type: ignore[index]


#: Rows from which a gather is split over two threads (on more than one core).
_SPLIT = 1 << 16
_helper: concurrent.futures.ThreadPoolExecutor | None = None


def _gathered(parts: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Rows ``order`` of ``parts`` taken one after the other, in a new array.

    The parts (views of memory-mapped shards) are first copied side by side: read in order,
    their pages are mapped a few at a time, where a random gather would fault on each.  A
    random gather of whole rows is then bound by memory latency (15-20 M rows of 40 floats a
    second on one core here), so a large chunk is gathered by this thread and a helper, half
    each (1.5x here).
    """
    global _helper
    from mlaas4hep_dask.read._kernels import gather_rows

    rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
    out = np.empty((len(order), rows.shape[1]), np.float32)
    half = len(order) // 2
    if len(order) < _SPLIT or (os.cpu_count() or 1) < 2:
        gather_rows(out, rows, order)
        return out
    if _helper is None:
        _helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlaas4hep-gather")
    other = _helper.submit(gather_rows, out[:half], rows, order[:half])
    gather_rows(out[half:], rows, order[half:])
    other.result()
    return out


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


def _at(values: np.ndarray, index: Any) -> np.ndarray:
    """``values[index]``; positions are gathered with ``take`` (whole rows: 3x faster here)."""
    if isinstance(index, np.ndarray) and index.dtype.kind in "iu":
        return values.take(index, axis=0)
    return values[index]


def take_rows(values: np.ndarray | None, index: Any) -> np.ndarray | None:
    return None if values is None else _at(values, index)
