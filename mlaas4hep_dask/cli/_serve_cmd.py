"""``mlaas4hep serve``, ``push``, ``export`` and ``predict``: serving, uploading, exporting, scoring."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mlaas4hep_dask.cli._common import (
    connect_for,
)

__all__ = ["cmd_export", "cmd_predict", "cmd_push", "cmd_serve", "serve_app"]


def cmd_serve(args: argparse.Namespace) -> int:
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
        app: Any = serve_app()
    else:
        app = "mlaas4hep_dask.cli._serve_cmd:serve_app"
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


def serve_app() -> Any:
    """The inference app of ``mlaas4hep serve`` (each worker process builds its own)."""
    from mlaas4hep_dask.serve import Repository
    from mlaas4hep_dask.serve.app import create_app

    settings = json.loads(os.environ[_SERVE_SETTINGS])
    repository = Repository(settings.pop("repository"), runtime=settings.pop("runtime"))
    return create_app(repository, warm=True, **settings)


def cmd_push(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.bundle._triton import export_triton

    folder = export_triton(args.run_dir, args.triton, args.name)
    print(
        f"written {folder.parent / 'config.pbtxt'} and {folder / 'model.onnx'} (Triton, onnxruntime backend)"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.serve.batch import predict_files

    with connect_for(args) as target:
        written = predict_files(args.model, args.files, args.out, fmt=args.format, client=target)
    print(f"wrote {len(written)} {args.format} files of scores to {args.out}")
    return 0
