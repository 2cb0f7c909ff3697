"""Dynamic batching: concurrent requests for one model are scored in one call.

Each model version has a queue and one scorer.  A request joins its model's queue; the
scorer takes everything queued (up to ``max_events`` events) and scores it in one call (in a
thread when it is large, so the event loop keeps reading requests meanwhile); whatever
arrives while it scores forms the next batch.  A lone request is scored at once; a batch waits up to
``max_delay`` for more only while other requests are being received (``arriving``), so one
client pays no delay and many clients get full batches.  When more than ``max_pending``
events wait, a request is refused (:class:`Overloaded`: 503 with ``Retry-After``) instead of
waiting without bound.  Every caller gets exactly its own rows back, in order; a request
with a bad event fails alone (the batch is then scored request by request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from mlaas4hep_dask.errors import MLaaSError

__all__ = ["Batcher", "Overloaded"]

_INLINE_EVENTS = 256  # a batch this small is scored on the event loop: a thread's hand-over costs more


class Overloaded(MLaaSError):
    """The model's queue is full: try again after :attr:`retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass
class _Item:
    payload: Any
    events: int
    future: asyncio.Future[Any]
    queued: float = dataclasses.field(default_factory=time.perf_counter)


@dataclasses.dataclass
class _Queue:
    score: Callable[[Sequence[Any]], list[Any]]
    items: deque[_Item] = dataclasses.field(default_factory=deque)
    pending: int = 0
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    seconds_per_event: float = 1e-5  # measured: sets Retry-After


class Batcher:
    """Queues and scorers of the models being served (one event loop).

    Parameters
    ----------
    max_delay
        Seconds a batch may wait for requests still being received.
    max_events
        Events in one batch at most (a single larger request is scored alone).
    max_pending
        Events waiting per model beyond which requests are refused.
    observe
        Called with ``(key, batch events, seconds queued)`` for every request scored (metrics).
    """

    def __init__(
        self,
        max_delay: float = 0.002,
        max_events: int = 4096,
        max_pending: int = 65536,
        observe: Callable[[Hashable, int, float], None] | None = None,
    ) -> None:
        self.max_delay, self.max_events, self.max_pending = max_delay, max_events, max_pending
        self.observe = observe
        self.arriving = 0
        self._queues: dict[Hashable, _Queue] = {}

    async def submit(
        self, key: Hashable, score: Callable[[Sequence[Any]], list[Any]], payload: Any, events: int
    ) -> Any:
        """Queue ``payload`` (``events`` events) for ``key``; its result, or the exception it raised.

        ``score`` takes a list of payloads and returns one result (or exception) per payload.
        """
        queue = self._queues.get(key)
        if queue is None or queue.score is not score:
            queue = self._queues[key] = _Queue(score)
        if queue.pending and queue.pending + events > self.max_pending:
            retry = max(1.0, queue.pending * queue.seconds_per_event)
            raise Overloaded(f"model {key!r} has {queue.pending} events waiting: try again later", retry)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.items.append(_Item(payload, events, future))
        queue.pending += events
        queue.wake.set()
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._run(key, queue))
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run(self, key: Hashable, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        while queue.items:
            await asyncio.sleep(0)  # requests read in the same turn of the loop join
            start = loop.time()
            # nothing is being scored while a batch gathers: what is pending is what is queued
            while self.arriving and queue.pending < self.max_events and loop.time() - start < self.max_delay:
                queue.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), self.max_delay / 4)
            batch = [queue.items.popleft()]
            size = batch[0].events
            while queue.items and size + queue.items[0].events <= self.max_events:
                item = queue.items.popleft()
                batch.append(item)
                size += item.events
            began = time.perf_counter()
            payloads = [item.payload for item in batch]
            try:
                small = size <= _INLINE_EVENTS
                results = queue.score(payloads) if small else await asyncio.to_thread(queue.score, payloads)
            except Exception as err:  # the scorer itself failed: every caller of the batch hears it
                results = [err] * len(batch)
            seconds = time.perf_counter() - began
            queue.seconds_per_event = 0.8 * queue.seconds_per_event + 0.2 * seconds / max(size, 1)
            queue.pending -= size
            for item, result in zip(batch, results, strict=True):
                if self.observe is not None:
                    self.observe(key, size, began - item.queued)
                if not item.future.done():
                    item.future.set_result(result)
