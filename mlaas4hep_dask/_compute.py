"""The Dask plumbing every stage computes through: the one ``compute``, and the LocalCluster we start.

:func:`compute` is the single place where the pipeline turns graphs into values, on a
``distributed.Client`` or one of Dask's local schedulers; :func:`local_cluster` starts the
worker processes of ``--cluster local`` (and of the loader's ``"processes"``).  Choosing and
connecting to a cluster is :mod:`mlaas4hep_dask.scale`'s; this module sits below every stage
so that reading, handling and batching can compute without importing it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import dask

__all__ = ["WORKER_ENVIRON", "compute", "configured_dashboard", "local_cluster"]

#: Environment of the worker processes we start.  Dask's default (``MALLOC_TRIM_THRESHOLD_``
#: 64 kB) hands freed memory back to the OS at once, so every partition-sized array page-faults
#: anew: the loader ran 1.45x slower.  Keeping up to 1 GiB of freed heap per worker (and
#: serving large arrays from the heap) trades that memory for speed.  For other settings,
#: start your own cluster and pass its Client.
WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 2**30, "MALLOC_MMAP_THRESHOLD_": 2**30}


def local_cluster(
    n_workers: int | None = None,
    threads_per_worker: int | None = 1,
    memory_limit: str | None = None,
    dashboard_address: str | None = None,
    secure: bool = False,
) -> Any:
    """Start a ``distributed.LocalCluster`` of worker processes tuned for array work.

    The dashboard listens on ``dashboard_address`` (``HOST:PORT`` or ``:PORT``); by default on
    ``mlaas4hep.cluster.dashboard-address`` of the Dask config, else on a free port.

    With ``secure``, the cluster admits only this process and the ones it starts: its
    scheduler, nannies and workers speak TLS and require a certificate of a CA made for this
    cluster alone (mutual authentication, ``require_encryption``), whose key lives in the
    memory of these processes only, never on disk (``distributed.security.Security.temporary``);
    another program on this machine that finds their ports gets no ``identity``, no ``Client``,
    no ``run``.  Its HTTP pages are not open to others either: unless a dashboard address is
    given, there is no dashboard, and the scheduler's and workers' HTTP servers answer
    ``/health`` only (no task names, worker logs or metrics).
    """
    from distributed import LocalCluster
    from distributed.security import Security

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    settings: dict[str, Any] = {"distributed.nanny.pre-spawn-environ": environ}
    dashboard = dashboard_address or configured_dashboard()
    if secure and dashboard is None:
        settings |= {f"distributed.{role}.http.routes": ["distributed.http.health"] for role in _ROLES}
    elif dashboard is None:
        dashboard = ":0"
    with dask.config.set(settings), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker or 1,
            memory_limit=memory_limit or "auto",
            dashboard_address=dashboard,
            **({"security": Security.temporary(), "protocol": "tls://"} if secure else {}),
        )


_ROLES = ("scheduler", "worker")


def configured_dashboard() -> str | None:
    """``mlaas4hep.cluster.dashboard-address`` of the Dask config, if set."""
    value = dask.config.get("mlaas4hep.cluster.dashboard-address", None)
    return None if value is None else str(value)


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
