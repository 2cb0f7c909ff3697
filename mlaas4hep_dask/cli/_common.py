"""What every command shares: our log lines and warnings, the cluster arguments, connecting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = [
    "CLUSTER_HELP",
    "announce",
    "cluster_arguments",
    "connect_for",
    "log_lines",
    "show_warning",
    "trainers_arg",
]


def show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print(f"mlaas4hep: warning: {message}", file=sys.stderr)


#: Libraries whose INFO lines (a Dask nanny's start and stop, TensorFlow's notes) are not ours.
_LIBRARIES = ("distributed", "bokeh", "tornado", "absl", "tensorflow", "h5py", "fsspec", "urllib3", "httpx")


def log_lines(fmt: str) -> None:
    """Our own INFO lines on stderr; the libraries' only from WARNING, unless ``MLAAS4HEP_VERBOSE``."""
    import distributed  # noqa: F401 - it sets its loggers' levels when imported: ours come after

    logging.basicConfig(level=logging.INFO, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    if not os.environ.get("MLAAS4HEP_VERBOSE"):
        for name in _LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("bokeh").setLevel(logging.ERROR)  # the dashboard's note on allowed hosts


def announce(target: Any, quiet: bool) -> None:
    """Print the Dask dashboard's link when the work runs on a distributed cluster."""
    link = getattr(target, "dashboard_link", None)
    scheduler = getattr(getattr(target, "cluster", None), "scheduler", None)
    if scheduler is not None and not getattr(scheduler.http_application, "applications", True):
        return  # a cluster started here without a dashboard (--tls): the link would lead nowhere
    if link and not quiet:
        print(f"Dask dashboard: {link}", flush=True)


def trainers_arg(value: str) -> int | str:
    if value == "all" or (value.isdigit() and int(value) >= 1):
        return value if value == "all" else int(value)
    raise argparse.ArgumentTypeError(f"a positive number or 'all', not {value!r}")


def connect_for(args: argparse.Namespace, secure: bool = False) -> Any:
    """The cluster the command asked for (its ``--cluster``, else the global one, else the config)."""
    from mlaas4hep_dask.scale._cluster import connect, load_cluster_config

    config = getattr(args, "cluster_config", None) or args.global_cluster_config
    if config:
        load_cluster_config(config)
    return connect(
        getattr(args, "scheduler", None) or args.global_cluster,
        n_workers=getattr(args, "workers", None),
        threads_per_worker=getattr(args, "threads", None),
        memory_limit=getattr(args, "memory_limit", None),
        dashboard_address=getattr(args, "dashboard_address", None),
        secure=secure or getattr(args, "tls", False),
    )


CLUSTER_HELP = (
    "local (a LocalCluster, default), htcondor or slurm (dask-jobqueue), kubernetes (Dask operator), "
    "tcp://HOST:PORT (a running scheduler), or threads, processes, sync"
)


def cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", "--scheduler", dest="scheduler", metavar="CLUSTER", default=None, help=CLUSTER_HELP
    )
    parser.add_argument(
        "--cluster-config",
        metavar="YAML",
        help="cluster settings (Dask config keys), e.g. cluster/htcondor.yaml",
    )
    parser.add_argument("--workers", type=int, default=None, help="workers (default: one per core; adaptive)")
    parser.add_argument(
        "--threads", type=int, default=None, help="LocalCluster threads per worker (default 1)"
    )
    parser.add_argument("--memory-limit", default=None, help="LocalCluster memory per worker, e.g. 4GB")
    parser.add_argument(
        "--dashboard-address",
        metavar="[HOST]:PORT",
        default=None,
        help="where the Dask dashboard of the cluster we start listens (default: a free port)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the LocalCluster admits only this command: TLS with a certificate of its own held in "
        "memory, no dashboard unless --dashboard-address (what the submit service runs jobs with)",
    )
