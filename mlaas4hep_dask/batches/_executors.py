"""Where the loader's partitions are computed: a distributed cluster, a thread pool, or inline.

Each executor has ``submit(task) -> handle``, ``fetch(handle) -> handle`` (start bringing the
result here as soon as it is computed), ``result(handle)`` and ``close()``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import socket
import time
from typing import Any

from mlaas4hep_dask._compute import compute, local_cluster
from mlaas4hep_dask.errors import ConfigError

__all__ = ["Distributed", "executor"]


class _Inline:
    """Compute partitions when their result is asked for (``"sync"``: for debugging)."""

    def submit(self, task: Any) -> Any:
        return task

    def fetch(self, handle: Any) -> Any:
        return handle

    def result(self, handle: Any) -> Any:
        return compute([handle], "sync")[0]

    def close(self) -> None:
        pass


class _Threads:
    """A pool of threads, each computing one partition with the synchronous scheduler: as many
    as the Dask config key ``mlaas4hep.loader.threads`` says, else one per core."""

    def __init__(self) -> None:
        import os

        import dask

        # a trainer on a worker sets it from its cores (see mlaas4hep_dask.fit._rank)
        threads = dask.config.get("mlaas4hep.loader.threads", None) or os.cpu_count() or 2
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=int(threads))

    def submit(self, task: Any) -> Any:
        return self.pool.submit(compute, [task], "sync")

    def fetch(self, handle: Any) -> Any:
        return handle

    def result(self, handle: Any) -> Any:
        return handle.result()[0]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Distributed:
    """Futures on a ``distributed`` cluster; the data stay on the workers until fetched.

    :meth:`fetch` has a partition sent to this process in the background (by the Client's
    event loop) as soon as a worker has computed it, so asking for its result waits for
    neither when it was fetched early enough: the loader's prefetch window covers the
    transfer, not only the computing.  What is read ahead for the next epoch is not fetched
    until that epoch starts (a transfer cut off by a closing client makes the worker log an
    error).

    Results are fetched straight from the workers when they run on this machine (or the
    Client was made with ``direct_to_workers=True``): by default a Client asks the scheduler,
    which relays every byte, and for a loader that doubles the traffic and loads the
    scheduler.  Remote workers are left to the scheduler unless asked, since a client outside
    a batch farm often cannot reach them.  Where the workers are is asked of the scheduler at
    most every ``recheck`` seconds (each asking is a round trip: about 1 ms of this process's
    CPU, once per partition before), so that workers joining an adaptive cluster are seen.
    """

    recheck = 2.0

    def __init__(self, client: Any, owned: Any = None) -> None:
        self.client = client
        self.owned = owned
        self._local_workers: tuple[float, bool] | None = None  # (when asked, all on this machine)

    def submit(self, task: Any) -> Any:
        return self.client.compute(task)

    def fetch(self, handle: Any) -> Any:
        import asyncio

        gather = self.client.gather(handle, direct=self._direct(), asynchronous=True)
        return asyncio.run_coroutine_threadsafe(gather, self.client.loop.asyncio_loop)

    def result(self, handle: Any) -> Any:
        if isinstance(handle, concurrent.futures.Future):
            return handle.result()
        return self.client.gather(handle, direct=self._direct())

    def _direct(self) -> bool:
        if self.client.direct_to_workers is not None:
            return bool(self.client.direct_to_workers)
        now = time.monotonic()
        if self._local_workers is None or now - self._local_workers[0] > self.recheck:
            workers = self.client.scheduler_info().get("workers", {})
            self._local_workers = (now, bool(workers) and all(_on_this_machine(a) for a in workers))
        return self._local_workers[1]

    def close(self) -> None:
        if self.owned is not None:
            self.client.close()
            self.owned.close()


@functools.cache
def _local_hosts() -> frozenset[str]:
    import psutil

    hosts = {"localhost", socket.gethostname()}
    for addresses in psutil.net_if_addrs().values():
        ips = (a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
        hosts.update(ip.split("%")[0] for ip in ips)
    return frozenset(hosts)


def _on_this_machine(address: str) -> bool:
    from distributed.comm import get_address_host

    try:
        return get_address_host(address) in _local_hosts()
    except ValueError:  # not a host:port address (inproc://, ucx://...)
        return address.startswith("inproc://")


def executor(client: Any) -> Any:
    """The executor for ``client``: a Client, ``"threads"``, ``"processes"``, ``"sync"`` or ``None``."""
    if client is None:
        try:
            from distributed import default_client

            return Distributed(default_client())
        except (ImportError, ValueError):
            return _Threads()
    if client == "threads":
        return _Threads()
    if client in ("sync", "synchronous", "single-threaded"):
        return _Inline()
    if client == "processes":
        from distributed import Client

        cluster = local_cluster()
        return Distributed(Client(cluster, set_as_default=False), owned=cluster)
    if isinstance(client, str):
        raise ConfigError(
            f"unknown scheduler {client!r} for the loader: use a Client, threads, processes or sync"
        )
    return Distributed(client)
