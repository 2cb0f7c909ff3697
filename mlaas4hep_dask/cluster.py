"""Choose where Dask runs, and the one helper through which the pipeline computes.

``scheduler`` is one of ``"threads"``, ``"processes"``, ``"sync"`` (Dask's local
schedulers), ``"local"`` (a ``distributed.LocalCluster``), or a scheduler address
(``tcp://host:8786``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import dask

from .errors import ConfigError

__all__ = ["WORKER_ENVIRON", "compute", "connect", "local_cluster"]

_LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")

#: Environment of the worker processes we start.  Dask's default (``MALLOC_TRIM_THRESHOLD_``
#: 64 kB) hands freed memory back to the OS at once, so every partition-sized array page-faults
#: anew: the loader ran 1.45x slower.  Keeping up to 1 GiB of freed heap per worker (and
#: serving large arrays from the heap) trades that memory for speed.  For other settings,
#: start your own cluster and pass its Client.
WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 2**30, "MALLOC_MMAP_THRESHOLD_": 2**30}


def local_cluster(
    n_workers: int | None = None, threads_per_worker: int = 1, memory_limit: str | None = None
) -> Any:
    """Start a ``distributed.LocalCluster`` of worker processes tuned for array work."""
    from distributed import LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit or "auto",
            dashboard_address=":0",
        )


@contextlib.contextmanager
def connect(
    scheduler: str = "local",
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | None = None,
) -> Iterator[Any]:
    """Yield what :func:`compute` needs to run on ``scheduler``: a Client or a scheduler name.

    A ``LocalCluster`` is started (and shut down on exit) for ``"local"``; an existing
    scheduler is connected to for an address.

    Examples
    --------
    >>> with connect("threads") as target:
    ...     compute([dask.delayed(sum)([1, 2])], target)
    [3]
    """
    if scheduler in _LOCAL_SCHEDULERS:
        yield scheduler
        return
    from distributed import Client

    if scheduler == "local":
        cluster = local_cluster(n_workers, threads_per_worker, memory_limit)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    if "://" not in scheduler:
        raise ConfigError(
            f"unknown scheduler {scheduler!r}: use threads, processes, sync, local or tcp://HOST:PORT"
        )
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as err:
        raise ConfigError(f"cannot connect to Dask scheduler {scheduler!r}: {err}") from None
    with client:
        yield client


def compute(objs: list[Any], target: Any = None, progress: bool = False) -> list[Any]:
    """Compute Dask objects on ``target`` (a Client, a scheduler name, or ``None``).

    ``None`` uses the current default: an active ``distributed.Client`` if there is one,
    else threads.  This is the single place where the pipeline turns graphs into values.
    """
    if target is not None and not isinstance(target, str):
        futures = target.compute(objs)
        if progress:
            from distributed import progress as show

            show(futures, notebook=False)
        return list(target.gather(futures))
    if target in ("sync", "synchronous"):
        target = "single-threaded"
    context = contextlib.nullcontext()
    if progress:
        from dask.diagnostics import ProgressBar

        context = ProgressBar(minimum=1.0)  # type: ignore[assignment]
    with context, warnings.catch_warnings():
        # an explicit local scheduler while a distributed Client exists is a deliberate choice
        warnings.filterwarnings("ignore", message="Running on a single-machine scheduler")
        return list(dask.compute(*objs, scheduler=target))
