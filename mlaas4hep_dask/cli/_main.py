"""The ``mlaas4hep`` command: thin argument handling over the package's functions.

Every error that a user can cause is printed as one line ``mlaas4hep: error: ...`` and
exits with status 2; warnings are printed as one line each.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mlaas4hep_dask._quiet import TENSORFLOW_NOTES, drop_lines, ignore_known_warnings
from mlaas4hep_dask.cli._common import (
    CLUSTER_HELP,
    cluster_arguments,
    show_warning,
    trainers_arg,
)
from mlaas4hep_dask.cli._prepare_cmd import cmd_prepare, cmd_store, store_arguments
from mlaas4hep_dask.cli._serve_cmd import (
    cmd_export,
    cmd_predict,
    cmd_push,
    cmd_serve,
)
from mlaas4hep_dask.cli._service_cmd import cmd_service
from mlaas4hep_dask.cli._specs_cmd import cmd_specs
from mlaas4hep_dask.cli._train_cmd import cmd_campaign, cmd_params, cmd_train
from mlaas4hep_dask.errors import MLaaSError

__all__ = ["main"]


def _cmd_generate(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.generate import generate

    paths = generate(args.out, events=args.events, files=args.files, seed=args.seed)
    out = Path(args.out)
    print(f"wrote {len(paths)} files of {args.events} events to {out} (with files.txt and labels.txt)")
    return 0


# Long on purpose: the whole command line as one table of subcommands and their flags.
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlaas4hep", description="Machine Learning as a Service for HEP, on Dask."
    )
    from mlaas4hep_dask import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--cluster", dest="global_cluster", default=None, help=CLUSTER_HELP)
    parser.add_argument(
        "--cluster-config", dest="global_cluster_config", metavar="YAML", help="cluster settings"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    specs = sub.add_parser("specs", help="compute the specs of ROOT inputs (one Dask pass)")
    specs.add_argument("--files", required=True, help="files.txt, or a comma-separated list of paths/URLs")
    specs.add_argument("--params", help="params.json")
    specs.add_argument("--preproc", help="preproc.json")
    specs.add_argument("--out", default="specs.json", help="output specs file (default: %(default)s)")
    cluster_arguments(specs)
    specs.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    specs.set_defaults(run=cmd_specs)

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
            type=trainers_arg,
            help="data-parallel PyTorch/Keras trainers on N Dask workers, or 'all' (default: params.json's "
            "'trainers', else 1: the client trains); for XGBoost its number of workers",
        )
        tr.add_argument(
            "--resume", metavar="RUN_DIR", help="continue a stopped training from its last checkpoint"
        )
        tr.add_argument("--dtype", help=argparse.SUPPRESS)  # original flag: features are always float32
        store_arguments(tr)
        cluster_arguments(tr)
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
        tr.set_defaults(run=cmd_train)

    camp = sub.add_parser("campaign", help="run several trainings (a list or a grid) on one cluster")
    camp.add_argument("file", help="campaign.yaml (see configs/campaign.yaml)")
    camp.add_argument("--out", help="output folder (default: the file's 'out')")
    camp.add_argument(
        "--log-progress", type=float, nargs="?", const=30.0, metavar="SECONDS", help="log progress"
    )
    store_arguments(camp)
    cluster_arguments(camp)
    camp.set_defaults(run=cmd_campaign)

    prep = sub.add_parser("prepare", help="read and handle ROOT inputs once into a store of Arrow shards")
    prep.add_argument("--files", required=True, help="files.txt, or a comma-separated list of paths/URLs")
    prep.add_argument("--labels", help="labels.txt (one label per file), or a comma-separated list")
    prep.add_argument("--params", help="params.json")
    prep.add_argument("--preproc", help="preproc.json")
    prep.add_argument("--specs", help="normalize with this specs file (default: computed, one more pass)")
    prep.add_argument(
        "--repair", action="store_true", help="check every shard; prepare the damaged ones again"
    )
    store_arguments(prep, required=True)
    cluster_arguments(prep)
    prep.add_argument("-q", "--quiet", action="store_true", help="only the JSON line on stdout")
    prep.set_defaults(run=cmd_prepare)

    sto = sub.add_parser("store", help="list, remove or garbage-collect prepared datasets")
    sto.add_argument("action", choices=("ls", "rm", "gc"), help="ls: list; rm KEY...: remove; gc: clean up")
    sto.add_argument("keys", nargs="*", metavar="KEY", help="keys (or their first characters) to remove")
    store_arguments(sto, required=True)
    sto.set_defaults(run=cmd_store)

    par = sub.add_parser("params", help="print params.json with defaults filled in, or its JSON schema")
    par.add_argument("file", nargs="?", help="params.json (default: all defaults)")
    par.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    par.set_defaults(run=cmd_params)

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
    srv.set_defaults(run=cmd_serve)

    svc = sub.add_parser("service", help="run the submit service (HTTP, OIDC tokens, jobs on Dask)")
    svc.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    svc.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    cluster_arguments(svc)
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
    svc.set_defaults(run=cmd_service)

    push = sub.add_parser("push", help="upload a run directory to an inference server")
    push.add_argument("run_dir", help="run directory written by mlaas4hep train")
    push.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8083")
    push.add_argument("--name", help="model name (default: the run directory's name)")
    push.add_argument("--version", type=int, help="version (default: the next one)")
    push.set_defaults(run=cmd_push)

    exp = sub.add_parser("export", help="export a run's model for other servers (Triton)")
    exp.add_argument(
        "--triton", required=True, metavar="REPO_DIR", help="Triton model repository to write into"
    )
    exp.add_argument("run_dir", metavar="RUN_DIR", help="run directory (from mlaas4hep train)")
    exp.add_argument("--name", default=None, help="model name in the repository (default: the run folder's)")
    exp.set_defaults(run=cmd_export)

    pred = sub.add_parser("predict", help="score every event of ROOT inputs with a trained model (batch)")
    pred.add_argument("--model", required=True, help="REPO/name[:version] or a run directory")
    pred.add_argument("--files", required=True, help="files.txt, or a comma-separated list of paths/URLs")
    pred.add_argument("--out", required=True, help="output folder (one file per partition)")
    pred.add_argument("--format", default="parquet", choices=("parquet", "root"))
    cluster_arguments(pred)
    pred.set_defaults(run=cmd_predict)

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
    warnings.showwarning = show_warning
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
