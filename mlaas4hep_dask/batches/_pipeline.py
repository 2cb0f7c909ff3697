"""The loader's plumbing: chunks computed ahead in a thread, shuffled into blocks, their rows given back."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from mlaas4hep_dask.handle._rows import Block, Chunk, RowBuffers

__all__ = ["give_back", "read_ahead", "shuffled"]


def read_ahead(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
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


def shuffled(chunks: Iterator[Chunk], buffers: RowBuffers) -> Iterator[Block]:
    """Each chunk's rows in the order of use; stopping early stops ``chunks`` (and its thread)."""
    try:
        for chunk in chunks:
            yield chunk.rows(0, len(chunk))
            give_back(chunk, buffers)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def give_back(chunk: Chunk, buffers: RowBuffers) -> None:
    """Its consumer is done with ``chunk``: a shuffled chunk's rows (only ever handed out as
    gathered copies) are written over by a later chunk."""
    if chunk.order is not None:
        buffers.put(chunk.block.X)
