"""The ``mlaas4hep`` command: thin argument handling over the package's functions.

Every error that a user can cause is printed as one line ``mlaas4hep: error: ...`` and
exits with status 2; warnings are printed as one line each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlaas4hep_dask._quiet import TENSORFLOW_NOTES, drop_lines, ignore_known_warnings
from mlaas4hep_dask.errors import MLaaSError

if TYPE_CHECKING:
    from mlaas4hep_dask.service.config import ServiceConfig

__all__ = ["main"]

_MAX_ROWS = 40


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print(f"mlaas4hep: warning: {message}", file=sys.stderr)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_specs(specs: Any, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    console = Console(width=max(probe.width, 118))  # a readable table beats an 80-column squeeze
    files = Table(title="Input files", title_justify="left")
    for col in ("file", "tree", "entries", "events"):
        files.add_column(col, justify="left" if col in ("file", "tree") else "right")
    for f in specs.files:
        files.add_row(f.path, f.tree, _fmt(f.entries), _fmt(f.nevents))
    console.print(files)

    table = Table(title="Branches", title_justify="left")
    table.add_column("branch", overflow="fold", min_width=14)
    for col in ("kind", "dtype"):
        table.add_column(col, no_wrap=True)
    for col in ("min", "max", "mean", "std", "nonfinite", "jdim", "mean_len"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True)
    constant = set(specs.constant)
    for name, b in list(specs.branches.items())[:_MAX_ROWS]:
        table.add_row(
            name, b.kind, b.dtype, _fmt(b.min), _fmt(b.max), _fmt(b.mean), _fmt(b.std),
            _fmt(b.nonfinite), _fmt(b.jdim), _fmt(b.mean_len),
            "[yellow]constant[/]" if name in constant else "",
        )  # fmt: skip
    console.print(table)
    if len(specs.branches) > _MAX_ROWS:
        console.print(f"... and {len(specs.branches) - _MAX_ROWS} more branches (see {out})")
    if specs.preproc is not None:
        flow = Table(title="Cut flow (preproc.json)", title_justify="left")
        for col in ("step", "cut", "events", "of previous", "of all"):
            flow.add_column(col, justify="left" if col in ("step", "cut") else "right")
        steps = specs.preproc["cutflow"]
        first = steps[0]["events"] or 0
        previous = first
        for step in steps:
            n = step["events"] or 0
            flow.add_row(
                step["step"], step.get("cut", ""), f"{n:,}",
                f"{n / previous:.1%}" if previous else "-", f"{n / first:.1%}" if first else "-",
            )  # fmt: skip
            previous = n
        console.print(flow)
    if constant:
        names = ", ".join(list(constant)[:8]) + (", ..." if len(constant) > 8 else "")
        console.print(
            f"[yellow]{len(constant)} constant branches[/] (one value in every event; they carry "
            f"nothing for a model: add them to 'exclude_branches'): {names}"
        )
    if specs.skipped:
        console.print(f"skipped {len(specs.skipped)} unsupported branches (listed in {out})")
    rate = specs.nevents / seconds if seconds > 0 else float("nan")
    console.print(
        f"[bold]{specs.nevents}[/] events, [bold]{len(specs.branches)}[/] branches, "
        f"input dimension [bold]{specs.idim}[/]; {seconds:.1f} s ({rate:,.0f} events/s); written to {out}"
    )


def _cmd_specs(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.handle._specs import compute_specs

    start = time.perf_counter()
    with _connect(args) as target:
        _announce(target, args.quiet)
        specs = compute_specs(
            args.files, params=args.params, preproc=args.preproc, client=target, progress=not args.quiet
        )
    seconds = time.perf_counter() - start
    out = Path(args.out)
    specs.save(out)
    if not args.quiet:
        _print_specs(specs, out, seconds)
    return 0


#: Libraries whose INFO lines (a Dask nanny's start and stop, TensorFlow's notes) are not ours.
_LIBRARIES = ("distributed", "bokeh", "tornado", "absl", "tensorflow", "h5py", "fsspec", "urllib3", "httpx")


def _log_lines(fmt: str) -> None:
    """Our own INFO lines on stderr; the libraries' only from WARNING, unless ``MLAAS4HEP_VERBOSE``."""
    import distributed  # noqa: F401 - it sets its loggers' levels when imported: ours come after

    logging.basicConfig(level=logging.INFO, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    if not os.environ.get("MLAAS4HEP_VERBOSE"):
        for name in _LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("bokeh").setLevel(logging.ERROR)  # the dashboard's note on allowed hosts


def _announce(target: Any, quiet: bool) -> None:
    """Print the Dask dashboard's link when the work runs on a distributed cluster."""
    link = getattr(target, "dashboard_link", None)
    scheduler = getattr(getattr(target, "cluster", None), "scheduler", None)
    if scheduler is not None and not getattr(scheduler.http_application, "applications", True):
        return  # a cluster started here without a dashboard (--tls): the link would lead nowhere
    if link and not quiet:
        print(f"Dask dashboard: {link}", flush=True)


def _trainers(value: str) -> int | str:
    if value == "all" or (value.isdigit() and int(value) >= 1):
        return value if value == "all" else int(value)
    raise argparse.ArgumentTypeError(f"a positive number or 'all', not {value!r}")


def _cmd_train(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.errors import ConfigError
    from mlaas4hep_dask.train import train

    if args.resume is None and (args.files is None or args.model is None):
        raise ConfigError("train needs --files and --model (or --resume RUN_DIR)")

    if args.log_progress is not None:
        _log_lines("%(asctime)s %(message)s")
    if args.resume is None:  # a broken model.py fails now, not after a cluster and a specs pass
        from mlaas4hep_dask.train import load_model_file

        load_model_file(args.model)
    with _connect(args) as target:
        _announce(target, args.quiet and args.log_progress is None)
        run = train(
            args.files, args.model, params=args.params, labels=args.labels, preproc=args.preproc,
            specs=args.specs, out=args.out, client=target, device=args.device,
            progress=not args.quiet, log_every=args.log_progress, trainers=args.trainers, resume=args.resume,
        )  # fmt: skip
    final = run.metrics["final"]
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in final.items() if k.startswith(("val_", "test_")) and isinstance(v, float)
    )
    print(
        f"{run.framework}: {shown}; {final['events_trained']:,} events trained in {final['seconds']:.1f} s "
        f"on {final['device']}\nrun directory: {run.path} (plots in {run.path / 'plots'})"
    )
    return 0


def _cmd_campaign(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mlaas4hep_dask.scale._campaign import load_campaign, run_campaign

    campaign = load_campaign(args.file, out=args.out)
    if args.log_progress is not None:
        _log_lines("%(asctime)s %(message)s")
    with _connect(args) as target:
        _announce(target, quiet=False)
        rows = run_campaign(campaign, client=target, log_every=args.log_progress)
    table = Table(title=f"Campaign {args.file}", title_justify="left")
    metrics = sorted({k for row in rows for k in row if k.startswith(("val_", "test_"))})
    for column in ("run", "framework", "state", *metrics, "seconds"):
        table.add_column(column, justify="left" if column in ("run", "framework", "state") else "right")
    for row in rows:
        table.add_row(
            row["name"], row.get("framework", "-"), row["state"], *(_fmt(row.get(m)) for m in metrics),
            f"{row['seconds']:.1f}",
        )  # fmt: skip
    console = Console(width=120)
    console.print(table)
    failed = [row for row in rows if row["state"] != "succeeded"]
    for row in failed:
        console.print(f"[red]{row['name']} failed:[/] {row['error']}")
    console.print(f"summary: {campaign.out / 'summary.csv'}; ROC comparison: {campaign.out / 'roc.png'}")
    return 1 if failed else 0


def _cmd_params(args: argparse.Namespace) -> int:
    import json

    from mlaas4hep_dask.config._params import Params, load_params

    if args.schema:
        print(json.dumps(Params.json_schema(), indent=1))
    else:
        print(json.dumps(load_params(args.file).to_dict(), indent=1))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mlaas4hep_dask.errors import ConfigError

    if args.workers < 1 or args.max_batch_size < 1 or args.max_queue < 1 or args.max_batch_delay < 0:
        raise ConfigError(
            "--workers, --max-batch-size and --max-queue must be positive, --max-batch-delay >= 0"
        )
    settings = {
        "repository": args.repo,
        "runtime": args.runtime,
        "max_batch_delay": args.max_batch_delay / 1000,
        "max_batch_size": args.max_batch_size,
        "max_queue": args.max_queue,
    }
    os.environ[_SERVE_SETTINGS] = json.dumps(settings)  # for the worker processes' factory
    print(f"serving the models in {args.repo} on http://{args.host}:{args.port} (OpenAPI page: /docs)")
    if args.workers == 1:
        app: Any = _serve_app()
    else:
        app = "mlaas4hep_dask.cli._main:_serve_app"
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        workers=args.workers,
        factory=args.workers > 1,
    )
    return 0


_SERVE_SETTINGS = "MLAAS4HEP_SERVE_SETTINGS"


def _serve_app() -> Any:
    """The inference app of ``mlaas4hep serve`` (each worker process builds its own)."""
    from mlaas4hep_dask.serve import Repository
    from mlaas4hep_dask.serve.app import create_app

    settings = json.loads(os.environ[_SERVE_SETTINGS])
    repository = Repository(settings.pop("repository"), runtime=settings.pop("runtime"))
    return create_app(repository, warm=True, **settings)


def _is_loopback(host: str) -> bool:
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


def _cmd_service(args: argparse.Namespace) -> int:
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
            "the service runs jobs on a distributed cluster: local, htcondor, kubernetes or tcp://"
        )
    if config.insecure_dev:
        if not _is_loopback(args.host):
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
    _log_lines("%(asctime)s %(name)s %(levelname)s %(message)s")
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
    with _connect(args, secure=not config.unsandboxed_jobs) as client:
        _announce(client, quiet=False)
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


def _cmd_push(args: argparse.Namespace) -> int:
    import httpx

    from mlaas4hep_dask.errors import InputError
    from mlaas4hep_dask.serve import pack

    run = Path(args.run_dir)
    if not (run / "bundle.json").is_file():
        raise InputError(f"{args.run_dir!r} is not a run directory (no bundle.json)")
    data = {"name": args.name or run.name} | ({"version": str(args.version)} if args.version else {})
    try:
        response = httpx.post(
            f"{args.server.rstrip('/')}/upload",
            files={"file": ("run.tar.gz", pack(run))},
            data=data,
            timeout=300,
        )
    except httpx.HTTPError as err:
        raise InputError(f"cannot reach the inference server {args.server!r}: {err}") from None
    if response.status_code != 201:
        raise InputError(f"the server refused the upload ({response.status_code}): {response.text}")
    info = response.json()
    print(f"uploaded {run} as {info['name']} version {info['version']} ({info['framework']})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.bundle._triton import export_triton

    folder = export_triton(args.run_dir, args.triton, args.name)
    print(
        f"written {folder.parent / 'config.pbtxt'} and {folder / 'model.onnx'} (Triton, onnxruntime backend)"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.serve.batch import predict_files

    with _connect(args) as target:
        written = predict_files(args.model, args.files, args.out, fmt=args.format, client=target)
    print(f"wrote {len(written)} {args.format} files of scores to {args.out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.generate import generate

    paths = generate(args.out, events=args.events, files=args.files, seed=args.seed)
    out = Path(args.out)
    print(f"wrote {len(paths)} files of {args.events} events to {out} (with files.txt and labels.txt)")
    return 0


def _connect(args: argparse.Namespace, secure: bool = False) -> Any:
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


_CLUSTER_HELP = (
    "local (a LocalCluster, default), htcondor (dask-jobqueue), kubernetes (Dask operator), "
    "tcp://HOST:PORT (a running scheduler), or threads, processes, sync"
)


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", "--scheduler", dest="scheduler", metavar="CLUSTER", default=None, help=_CLUSTER_HELP
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlaas4hep", description="Machine Learning as a Service for HEP, on Dask."
    )
    from mlaas4hep_dask import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--cluster", dest="global_cluster", default=None, help=_CLUSTER_HELP)
    parser.add_argument(
        "--cluster-config", dest="global_cluster_config", metavar="YAML", help="cluster settings"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    specs = sub.add_parser("specs", help="compute the specs of ROOT inputs (one Dask pass)")
    specs.add_argument("--files", required=True, help="files.txt, or a comma-separated list of paths/URLs")
    specs.add_argument("--params", help="params.json")
    specs.add_argument("--preproc", help="preproc.json")
    specs.add_argument("--out", default="specs.json", help="output specs file (default: %(default)s)")
    _cluster_arguments(specs)
    specs.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    specs.set_defaults(run=_cmd_specs)

    for name in ("train", "workflow"):
        tr = sub.add_parser(
            name,
            help="train model.py on ROOT inputs (the original workflow.py flags)"
            if name == "train"
            else "alias of train",
        )
        tr.add_argument("--files", help="files.txt, or a comma-separated list of paths/URLs")
        tr.add_argument("--labels", help="labels.txt (one label per file), or a comma-separated list")
        tr.add_argument("--model", help="model.py defining model(idim)")
        tr.add_argument("--params", help="params.json")
        tr.add_argument("--preproc", help="preproc.json")
        tr.add_argument("--specs", help="reuse this specs file (checked against the data)")
        tr.add_argument("--out", "--fout", dest="out", help="run directory (default runs/<model>-<time>)")
        tr.add_argument(
            "--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: a GPU if present"
        )
        tr.add_argument(
            "--trainers",
            type=_trainers,
            help="data-parallel PyTorch/Keras trainers on N Dask workers, or 'all' (default: params.json's "
            "'trainers', else 1: the client trains); for XGBoost its number of workers",
        )
        tr.add_argument(
            "--resume", metavar="RUN_DIR", help="continue a stopped training from its last checkpoint"
        )
        tr.add_argument("--dtype", help=argparse.SUPPRESS)  # original flag: features are always float32
        _cluster_arguments(tr)
        tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        tr.add_argument(
            "--log-progress",
            type=float,
            nargs="?",
            const=30.0,
            metavar="SECONDS",
            help="log phases and progress lines (events, events/s, ETA) every SECONDS (default 30) "
            "instead of a bar: for batch jobs",
        )
        tr.set_defaults(run=_cmd_train)

    camp = sub.add_parser("campaign", help="run several trainings (a list or a grid) on one cluster")
    camp.add_argument("file", help="campaign.yaml (see configs/campaign.yaml)")
    camp.add_argument("--out", help="output folder (default: the file's 'out')")
    camp.add_argument(
        "--log-progress", type=float, nargs="?", const=30.0, metavar="SECONDS", help="log progress"
    )
    _cluster_arguments(camp)
    camp.set_defaults(run=_cmd_campaign)

    par = sub.add_parser("params", help="print params.json with defaults filled in, or its JSON schema")
    par.add_argument("file", nargs="?", help="params.json (default: all defaults)")
    par.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    par.set_defaults(run=_cmd_params)

    srv = sub.add_parser("serve", help="serve the models of a repository over HTTP (FastAPI)")
    srv.add_argument("--repo", required=True, help="model repository: a folder or an fsspec URL (s3://...)")
    srv.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    srv.add_argument("--port", type=int, default=8083, help="default: %(default)s (as TFaaS)")
    srv.add_argument("--workers", type=int, default=1, help="server processes (default: %(default)s)")
    srv.add_argument(
        "--runtime", choices=("native", "onnx"), default="native",
        help="score with each model's framework, or with its model.onnx through ONNX Runtime",
    )  # fmt: skip
    srv.add_argument(
        "--max-batch-delay", type=float, default=2.0, metavar="MS",
        help="how long a batch may wait for requests still arriving, in ms (default: %(default)s)",
    )  # fmt: skip
    srv.add_argument(
        "--max-batch-size",
        type=int,
        default=4096,
        metavar="EVENTS",
        help="events per batch (default: %(default)s)",
    )
    srv.add_argument(
        "--max-queue", type=int, default=65536, metavar="EVENTS",
        help="events waiting per model before requests get 503 (default: %(default)s)",
    )  # fmt: skip
    srv.set_defaults(run=_cmd_serve)

    svc = sub.add_parser("service", help="run the submit service (HTTP, OIDC tokens, jobs on Dask)")
    svc.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    svc.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    _cluster_arguments(svc)
    svc.add_argument(
        "--workdir", default=None, help="jobs, uploads, results (default: ~/.local/state/mlaas4hep/service)"
    )
    svc.add_argument(
        "--db", help="job database URL (default: sqlite:///WORKDIR/jobs.sqlite; postgresql://...)"
    )
    svc.add_argument(
        "--unsandboxed-jobs",
        action="store_true",
        help="run jobs without a sandbox (their model.py gets the workers' powers)",
    )
    svc.add_argument(
        "--sandbox",
        choices=["bubblewrap", "podman", "apptainer"],
        default="bubblewrap",
        help="what jobs run in on the workers (default: bubblewrap)",
    )
    svc.add_argument(
        "--sandbox-image",
        metavar="IMAGE",
        help="podman: an image or root folder (default: the workers' system, read-only); apptainer: a SIF",
    )
    svc.add_argument("--issuer", help="OIDC issuer URL (or $MLAAS4HEP_OIDC_ISSUER)")
    svc.add_argument("--audience", help="token audience (or $MLAAS4HEP_OIDC_AUDIENCE)")
    svc.add_argument(
        "--trusted-proxy", action="append", default=[], metavar="CIDR",
        help="address of an OAuth2-Proxy whose X-Forwarded-User/-Email/-Access-Token headers are trusted",
    )  # fmt: skip
    svc.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="local folder jobs may read inputs from",
    )
    svc.add_argument("--repository", help="model repository (folder or fsspec URL) for jobs that push")
    svc.add_argument("--max-jobs-per-user", type=int, default=2, help="running jobs per user (default: 2)")
    svc.add_argument("--max-running", type=int, default=8, help="running jobs in all (default: 8)")
    svc.add_argument("--job-timeout", type=float, default=24 * 3600.0, help="seconds (default: one day)")
    svc.add_argument(
        "--insecure-dev", action="store_true", help="NO AUTHENTICATION (every caller is 'dev'); loopback only"
    )
    svc.set_defaults(run=_cmd_service)

    push = sub.add_parser("push", help="upload a run directory to an inference server")
    push.add_argument("run_dir", help="run directory written by mlaas4hep train")
    push.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8083")
    push.add_argument("--name", help="model name (default: the run directory's name)")
    push.add_argument("--version", type=int, help="version (default: the next one)")
    push.set_defaults(run=_cmd_push)

    exp = sub.add_parser("export", help="export a run's model for other servers (Triton)")
    exp.add_argument(
        "--triton", required=True, metavar="REPO_DIR", help="Triton model repository to write into"
    )
    exp.add_argument("run_dir", metavar="RUN_DIR", help="run directory (from mlaas4hep train)")
    exp.add_argument("--name", default=None, help="model name in the repository (default: the run folder's)")
    exp.set_defaults(run=_cmd_export)

    pred = sub.add_parser("predict", help="score every event of ROOT inputs with a trained model (batch)")
    pred.add_argument("--model", required=True, help="REPO/name[:version] or a run directory")
    pred.add_argument("--files", required=True, help="files.txt, or a comma-separated list of paths/URLs")
    pred.add_argument("--out", required=True, help="output folder (one file per partition)")
    pred.add_argument("--format", default="parquet", choices=("parquet", "root"))
    _cluster_arguments(pred)
    pred.set_defaults(run=_cmd_predict)

    gen = sub.add_parser("generate", help="write sample ttH vs ttbar ROOT files")
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--events", type=int, default=10_000, help="events per file (default: %(default)s)")
    gen.add_argument("--files", type=int, default=1, help="files per class (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    gen.set_defaults(run=_cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mlaas4hep`` command line; return the exit status."""
    args = _parser().parse_args(argv)
    if os.environ.get("MLAAS4HEP_VERBOSE"):
        return _run(args)
    # TensorFlow's C++ notes, here and in the workers and trainers we start (they inherit both)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with drop_lines(TENSORFLOW_NOTES):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    warnings.showwarning = _show_warning
    ignore_known_warnings()
    try:
        return int(args.run(args))
    except MLaaSError as err:
        print(f"mlaas4hep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlaas4hep: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("MLAAS4HEP_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        hint = "(set MLAAS4HEP_DEBUG=1 for the traceback)"
        print(f"mlaas4hep: unexpected error: {type(err).__name__}: {first} {hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
