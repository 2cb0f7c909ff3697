"""Choose where Dask runs, and the one helper through which the pipeline computes.

``scheduler`` (the CLI's ``--cluster``) is one of ``"threads"``, ``"processes"``, ``"sync"``
(Dask's local schedulers), ``"local"`` (a ``distributed.LocalCluster``), ``"htcondor"`` or
``"slurm"`` (an adaptive ``dask_jobqueue.HTCondorCluster`` or ``SLURMCluster``),
``"kubernetes"`` (a ``dask_kubernetes`` operator ``KubeCluster``), or a scheduler address
(``tcp://host:8786``).

Cluster settings follow Dask's configuration conventions: a YAML file (``--cluster-config``,
or any file in Dask's config path such as ``~/.config/dask/``) holding dask-jobqueue's
``jobqueue.htcondor.*`` and ``jobqueue.slurm.*`` keys, dask-kubernetes' ``kubernetes.*`` keys,
and ours under
``mlaas4hep.cluster``: ``kind`` (the default target), ``workers``, ``threads``, ``memory``
(``LocalCluster``) and ``adapt: {minimum, maximum}`` (batch and Kubernetes clusters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask

from mlaas4hep_dask._compute import WORKER_ENVIRON, compute, configured_dashboard, local_cluster
from mlaas4hep_dask.errors import ConfigError

__all__ = ["CLUSTERS", "WORKER_ENVIRON", "compute", "connect", "load_cluster_config", "local_cluster"]

#: The named targets of ``--cluster`` besides a ``tcp://`` address.
CLUSTERS = ("local", "htcondor", "slurm", "kubernetes", "threads", "processes", "sync")
#: The batch systems dask-jobqueue starts workers on, by their ``--cluster`` name.
_JOBQUEUE = {"htcondor": "HTCondorCluster", "slurm": "SLURMCluster"}

_LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """Read a cluster YAML file (Dask config conventions) and merge it into Dask's config.

    Returns the file's content.  Errors name the file.
    """
    from mlaas4hep_dask.config._files import load_yaml_mapping

    data = load_yaml_mapping(path, "cluster config")
    # not expand_environment_variables: job-script lines keep their $VARIABLES for the worker's shell
    dask.config.update(dask.config.config, data, priority="new")
    return data


def _adapt(cluster: Any, n_workers: int | None) -> None:
    adapt = dask.config.get("mlaas4hep.cluster.adapt", None)
    if adapt:
        cluster.adapt(**adapt)
    else:
        cluster.scale(n_workers or dask.config.get("mlaas4hep.cluster.workers", None) or 1)


def _optional(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ConfigError(f"this cluster needs {package}: pip install 'mlaas4hep-dask[{extra}]'") from None


def _start_cluster(
    kind: str,
    n_workers: int | None,
    threads: int | None,
    memory: str | None,
    dashboard: str | None,
    secure: bool = False,
) -> Any:
    """Start the cluster of ``kind`` from the Dask config (and the arguments, which take precedence)."""
    if kind == "local":
        return local_cluster(
            n_workers or dask.config.get("mlaas4hep.cluster.workers", None),
            threads or dask.config.get("mlaas4hep.cluster.threads", 1),
            memory or dask.config.get("mlaas4hep.cluster.memory", None),
            dashboard,
            secure,
        )
    if kind in _JOBQUEUE:
        dashboard = dashboard or configured_dashboard()
        options = {"scheduler_options": {"dashboard_address": dashboard}} if dashboard else {}
        cluster = getattr(_optional("dask_jobqueue", kind), _JOBQUEUE[kind])(**options)
    else:
        operator = _optional("dask_kubernetes.operator", "kubernetes")
        cluster = operator.KubeCluster(**dask.config.get("mlaas4hep.cluster.kubernetes", {}))
    _adapt(cluster, n_workers)
    return cluster


@contextlib.contextmanager
def connect(
    scheduler: str | None = "local",
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    dashboard_address: str | None = None,
    secure: bool = False,
) -> Iterator[Any]:
    """Yield what :func:`compute` needs to run on ``scheduler``: a Client or a scheduler name.

    A cluster is started (and shut down on exit) for ``"local"``, ``"htcondor"``, ``"slurm"``
    and ``"kubernetes"``; an existing scheduler is connected to for an address.  ``None`` takes
    ``mlaas4hep.cluster.kind`` from the Dask config (default ``"local"``).  The dashboard of a
    cluster started here listens on ``dashboard_address`` (else the config's
    ``mlaas4hep.cluster.dashboard-address``, else a free port).  ``secure`` starts a local
    cluster with temporary TLS certificates (see :func:`local_cluster`).

    Examples
    --------
    >>> with connect("threads") as target:
    ...     compute([dask.delayed(sum)([1, 2])], target)
    [3]
    """
    if scheduler is None:
        scheduler = str(dask.config.get("mlaas4hep.cluster.kind", "local"))
    if scheduler in _LOCAL_SCHEDULERS:
        yield scheduler
        return
    from distributed import Client

    # None: the loader decides (straight from workers on this machine, else via the scheduler)
    direct = dask.config.get("mlaas4hep.cluster.direct-to-workers", None)
    if scheduler in ("local", *_JOBQUEUE, "kubernetes"):
        cluster = _start_cluster(
            scheduler, n_workers, threads_per_worker, memory_limit, dashboard_address, secure
        )
        try:
            with Client(cluster, direct_to_workers=direct) as client:
                yield client
        finally:
            cluster.close()
        return
    if "://" not in scheduler:
        raise ConfigError(
            f"unknown cluster {scheduler!r}: use local, htcondor, slurm, kubernetes, tcp://HOST:PORT, "
            "threads, processes or sync"
        )
    try:
        client = Client(scheduler, timeout="10s", direct_to_workers=direct)
    except OSError as err:
        raise ConfigError(f"cannot connect to Dask scheduler {scheduler!r}: {err}") from None
    with client:
        yield client
