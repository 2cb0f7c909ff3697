"""``mlaas4hep service``: the submit service, its checks before it starts, and its cluster."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mlaas4hep_dask.cli._common import (
    announce,
    connect_for,
    log_lines,
)

if TYPE_CHECKING:  # the service's modules are imported only when it starts
    from mlaas4hep_dask.service.config import ServiceConfig

__all__ = ["cmd_service"]


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names (an IP or a resolvable name) is a loopback one."""
    import ipaddress
    import socket

    from mlaas4hep_dask.errors import ConfigError

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ConfigError(f"--host {host!r}: no such host") from None
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def cmd_service(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.errors import ConfigError
    from mlaas4hep_dask.service._lock import hold_workdir
    from mlaas4hep_dask.service.config import ServiceConfig

    config = ServiceConfig.build(
        workdir=args.workdir, db=args.db, issuer=args.issuer, audience=args.audience,
        trusted_proxies=args.trusted_proxy, data_roots=args.data_root, insecure_dev=args.insecure_dev,
        repository=args.repository, max_jobs_per_user=args.max_jobs_per_user,
        max_running=args.max_running, job_timeout=args.job_timeout, unsandboxed_jobs=args.unsandboxed_jobs,
        sandbox=args.sandbox, sandbox_image=args.sandbox_image,
    )  # fmt: skip
    if (args.scheduler or args.global_cluster) in ("threads", "processes", "sync", "synchronous"):
        raise ConfigError(
            "the service runs jobs on a distributed cluster: local, htcondor, slurm, kubernetes or tcp://"
        )
    if config.insecure_dev:
        if not is_loopback(args.host):
            raise ConfigError(
                f"--insecure-dev serves only on a loopback address (127.0.0.1), for local use; "
                f"--host {args.host!r} is not one"
            )
        print(
            "mlaas4hep: WARNING: --insecure-dev: NO AUTHENTICATION, every caller is user 'dev'. "
            "Never expose this service.",
            file=sys.stderr,
        )
    if not config.unsandboxed_jobs:
        from mlaas4hep_dask.service.sandbox import sandbox_of

        if (why := sandbox_of(config.sandbox, config.sandbox_image).unavailable()) is not None:
            raise ConfigError(
                f"jobs cannot be sandboxed here: {why}; a job's model.py would run with the service's "
                "powers: fix that, or accept it with --unsandboxed-jobs"
            )
    config.workdir.mkdir(parents=True, exist_ok=True)
    log_lines("%(asctime)s %(name)s %(levelname)s %(message)s")
    with hold_workdir(config.workdir):  # before the database: a second service must not touch it
        _serve(args, config)
    return 0


def _serve(args: argparse.Namespace, config: ServiceConfig) -> None:
    import uvicorn

    from mlaas4hep_dask.service.app import create_app
    from mlaas4hep_dask.service.runner import Runner
    from mlaas4hep_dask.service.store import JobStore
    from mlaas4hep_dask.service.uploads import Uploads

    store = JobStore(config.db_url)
    with connect_for(args, secure=not config.unsandboxed_jobs) as client:
        announce(client, quiet=False)
        if not config.unsandboxed_jobs:
            _refuse_open_scheduler(client.scheduler.address)
        runner = Runner(config, store, Uploads.of(config), client)
        app = create_app(config, store, runner)
        print(
            f"submit service on http://{args.host}:{args.port} (OpenAPI page: /docs)",
            file=sys.stderr,
            flush=True,
        )
        # proxy_headers off: the peer address must be the TCP peer, for --trusted-proxy to mean anything
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    store.close()


def _refuse_open_scheduler(address: str) -> None:
    """Sandboxed jobs need a scheduler that a job cannot connect to: one that requires TLS."""
    from mlaas4hep_dask.errors import ConfigError

    if not address.startswith(("tls://", "inproc://")):
        raise ConfigError(
            f"the Dask scheduler {address} takes connections without credentials: a job's model.py "
            "could find it and run code on the workers outside its sandbox; use --scheduler local "
            "(secured with temporary TLS certificates), a tls:// scheduler (Dask's "
            "distributed.comm.tls settings; see docs/guide/service.md), or accept it "
            "with --unsandboxed-jobs"
        )
