"""The submit service (FastAPI): upload inputs, submit workflows, follow and cancel jobs.

Routes (OpenAPI page at ``/docs``); every route but ``/healthz`` needs a caller (see
:mod:`~mlaas4hep_dask.service.auth`) with the read scope, and submitting, uploading and
cancelling need the submit scope.

- ``POST /upload`` (multipart ``file`` + ``name``, or a raw tarball body with ``?name=``),
  ``GET /uploads``, ``DELETE /uploads/{name}``
- ``POST /submit``: a :class:`~mlaas4hep_dask.service.submission.Submission`; answers the job
- ``GET /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/logs?after=SEQ&limit=N&follow=false``,
  ``GET /jobs/{id}/results``, ``GET /jobs/{id}/results/{file}``, ``GET /jobs/{id}/bundle``,
  ``DELETE /jobs/{id}`` (cancel)
- the original server's ``GET /status?id=`` and ``GET /logs?id=``

A job that is not the caller's answers 404, as if it did not exist (admins see all jobs).
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations, some of them local
import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from dask.utils import parse_bytes
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlaas4hep_dask._http import body as _body_doc
from mlaas4hep_dask._http import error as _error
from mlaas4hep_dask._http import offline_docs, refuse_deep_json
from mlaas4hep_dask.errors import MLaaSError, SchemaError
from mlaas4hep_dask.service.auth import Authenticator, AuthError, Principal
from mlaas4hep_dask.service.config import ServiceConfig
from mlaas4hep_dask.service.runner import Runner
from mlaas4hep_dask.service.store import TERMINAL, Job, JobStore
from mlaas4hep_dask.service.submission import NAME_PATTERN, Submission, SubmissionError, job_spec
from mlaas4hep_dask.service.uploads import Uploads

__all__ = ["create_app"]

_log = logging.getLogger("mlaas4hep_dask.service")


class _NotFound(SchemaError):
    """HTTP 404."""


class _Conflict(MLaaSError):
    """HTTP 409: the job is not in a state for this request."""


class _TooLarge(MLaaSError):
    """HTTP 413."""


_SUBMIT_BODY = _body_doc(
    Submission.model_json_schema(),
    {
        "a job": {
            "name": "tth",
            "files": ["/data/ttH_0.root", "/data/ttbar_0.root"],
            "labels": [1, 0],
            "model": "import torch\ndef model(idim):\n    return torch.nn.Linear(idim, 1)\n",
            "params": {"epochs": 5, "batch_size": 256},
            "resources": {"workers": 2, "timeout": 3600},
        }
    },
)


def _validation_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


async def _read(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes, whatever Content-Length said."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# Long on purpose: the routes are FastAPI closures over this app's store, runner and authenticator,
# one short handler each, read best in one place as the table of the HTTP API.
def create_app(config: ServiceConfig, store: JobStore, runner: Runner | None) -> FastAPI:
    """The service; ``runner`` (started with the app) executes the jobs, ``None`` only queues them."""
    auth = Authenticator(config)
    uploads = Uploads.of(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.insecure_dev:
            _log.warning("INSECURE DEV MODE: no authentication, every caller is user 'dev'")
        if runner is not None:
            await run_in_threadpool(runner.start)
        try:
            yield
        finally:
            if runner is not None:
                await run_in_threadpool(runner.stop)

    app = FastAPI(
        title="mlaas4hep-dask submit service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    offline_docs(app)

    @app.middleware("http")
    async def limit_bodies(request: Request, call_next: Any) -> Any:
        limit = config.max_upload if request.url.path == "/upload" else config.max_body
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            return _error(413, f"request body of {size} bytes is over the limit of {limit}")
        return await call_next(request)

    refuse_deep_json(app)

    @app.exception_handler(MLaaSError)
    async def known_errors(request: Request, err: MLaaSError) -> JSONResponse:
        if isinstance(err, AuthError):
            status = getattr(err, "status", 401)
            detail = str(err).replace('"', "'")
            challenge = f'Bearer realm="mlaas4hep", error="invalid_token", error_description="{detail}"'
            headers = {"WWW-Authenticate": challenge}
            return _error(status, str(err), headers if status == 401 else None)
        if isinstance(err, SchemaError):
            return _error(404, str(err))
        if isinstance(err, _Conflict):
            return _error(409, str(err))
        if isinstance(err, _TooLarge):
            return _error(413, str(err))
        return _error(422, str(err))

    def caller(request: Request) -> Principal:
        peer = request.client.host if request.client else None
        return auth.authenticate(peer, {k.lower(): v for k, v in request.headers.items()})

    def reader(who: Annotated[Principal, Depends(caller)]) -> Principal:
        who.require(config.read_scope)
        return who

    def submitter(who: Annotated[Principal, Depends(caller)]) -> Principal:
        who.require(config.submit_scope)
        return who

    Reader = Annotated[Principal, Depends(reader)]
    Submitter = Annotated[Principal, Depends(submitter)]

    def visible(job_id: str, who: Principal) -> Job:
        job = store.get(job_id)
        if job is None or (job.owner != who.user and not auth.is_admin(who)):
            raise _NotFound(f"no job {job_id!r}")
        return job

    def summary(job: Job) -> dict[str, Any]:
        return job.public() | {
            "links": {
                k: f"/jobs/{job.id}{v}" for k, v in (("self", ""), ("logs", "/logs"), ("results", "/results"))
            }
        }

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "runner": runner is not None}

    @app.get("/whoami")
    def whoami(who: Reader) -> dict[str, Any]:
        return {
            "user": who.user, "email": who.email, "scopes": sorted(who.scopes),
            "groups": sorted(who.groups), "admin": auth.is_admin(who), "via": who.via,
        }  # fmt: skip

    # --- uploads ----------------------------------------------------------------------------
    @app.post("/upload", status_code=201)
    async def upload(
        request: Request, who: Submitter, name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None
    ) -> dict[str, Any]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=4)
            file = form.get("file")
            name = str(form.get("name") or name or "")
            if file is None or isinstance(file, str):
                raise SubmissionError("the form needs a 'file' part holding the tarball")
            data = await file.read(config.max_upload + 1)
        else:
            data = await _read(request, config.max_upload)
        if len(data) > config.max_upload:
            raise _TooLarge(f"upload over the limit of {config.max_upload} bytes")
        if not name:
            raise SubmissionError("name: give the upload a name (form field or ?name=)")
        return await run_in_threadpool(uploads.add, who.user, name, data)

    @app.get("/uploads")
    def list_uploads(who: Reader) -> list[dict[str, Any]]:
        return uploads.list(who.user)

    @app.delete("/uploads/{name}")
    def delete_upload(name: str, who: Submitter) -> dict[str, Any]:
        uploads.delete(who.user, name)
        return {"deleted": name}

    # --- jobs -------------------------------------------------------------------------------
    @app.post("/submit", status_code=201, openapi_extra=_SUBMIT_BODY)
    async def submit(request: Request, who: Submitter) -> dict[str, Any]:
        raw = await _read(request, config.max_body)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = (
                f" at line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
            )
            raise SubmissionError(f"the body is not valid JSON{where}") from None
        try:
            sub = Submission.model_validate(body)
        except ValidationError as err:
            raise SubmissionError(_validation_message(err)) from None
        folder = uploads.path(who.user, sub.upload) if sub.upload else None
        spec = await run_in_threadpool(job_spec, sub, config, folder)
        if runner is not None:
            _check_capacity(spec["resources"], await run_in_threadpool(runner.capacity))
        job = store.create(who.user, sub.name or "model", spec)
        if runner is not None:
            runner.wake()
        return summary(job)

    @app.get("/jobs")
    def jobs(who: Reader, state: str | None = None, all: bool = False) -> list[dict[str, Any]]:
        owner = None if all and auth.is_admin(who) else who.user
        return [summary(j) for j in store.jobs(owner=owner, states=[state] if state else None)]

    @app.get("/jobs/{job_id}")
    def job(job_id: str, who: Reader) -> dict[str, Any]:
        return summary(visible(job_id, who))

    @app.delete("/jobs/{job_id}")
    def cancel(job_id: str, who: Submitter) -> dict[str, Any]:
        job = visible(job_id, who)
        if job.state in TERMINAL:
            raise _Conflict(
                f"job {job_id!r} has already {'been ' if job.state == 'cancelled' else ''}{job.state}"
            )
        if runner is not None:
            done = runner.cancel(job_id)
        else:
            done = store.transition(job_id, ["queued", "running"], "cancelled", error="cancelled by the user")
        if not done:
            raise _Conflict(f"job {job_id!r} finished before it could be cancelled")
        return summary(visible(job_id, who))

    @app.get("/jobs/{job_id}/logs", response_model=None)
    async def logs(
        job_id: str, who: Reader, after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000, follow: bool = False,
    ) -> dict[str, Any] | StreamingResponse:  # fmt: skip
        visible(job_id, who)
        if not follow:
            lines = store.logs(job_id, after, limit)
            return {"job": job_id, "lines": [{"seq": s, "time": t, "line": line} for s, t, line in lines],
                    "next": lines[-1][0] if lines else after}  # fmt: skip

        async def stream() -> AsyncIterator[str]:
            seq = after
            while True:
                current = await run_in_threadpool(store.get, job_id)
                lines = await run_in_threadpool(store.logs, job_id, seq, limit)
                for s, _, line in lines:
                    seq = s
                    yield line + "\n"
                if not lines and (current is None or current.state in TERMINAL):
                    return
                if not lines:
                    await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/plain")

    def run_dir(job: Job) -> Path:
        if job.state != "succeeded":
            raise _Conflict(f"job {job.id!r} is {job.state}: results exist once it has succeeded")
        return config.workdir / "jobs" / job.id

    @app.get("/jobs/{job_id}/results")
    def results(job_id: str, who: Reader) -> dict[str, Any]:
        job = visible(job_id, who)
        folder = run_dir(job) / "run"
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        links = {f: f"/jobs/{job.id}/results/{f}" for f in files}
        return {"job": job.id, **(job.result or {}), "files": links, "bundle": f"/jobs/{job.id}/bundle"}

    @app.get("/jobs/{job_id}/results/{path:path}")
    def result_file(job_id: str, path: str, who: Reader) -> FileResponse:
        folder = (run_dir(visible(job_id, who)) / "run").resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise _NotFound(f"job {job_id!r} has no result file {path!r}")
        return FileResponse(target)

    @app.get("/jobs/{job_id}/bundle")
    def bundle(job_id: str, who: Reader) -> FileResponse:
        job = visible(job_id, who)
        return FileResponse(
            run_dir(job) / "run.tar.gz",
            media_type="application/gzip",
            filename=f"{job.name}-{job.id[:8]}.tar.gz",
        )

    # --- the original server's routes ---------------------------------------------------------
    @app.get("/status")
    def status(id: str, who: Reader) -> dict[str, Any]:
        return summary(visible(id, who))

    @app.get("/logs")
    def original_logs(id: str, who: Reader) -> PlainTextResponse:
        visible(id, who)
        return PlainTextResponse("".join(line + "\n" for _, _, line in store.logs(id, 0, 100_000)))

    return app


def _check_capacity(resources: dict[str, Any], capacity: dict[str, Any]) -> None:
    """Refuse a job that asks more of the cluster than it has (422, with what it has)."""
    if resources.get("workers") and resources["workers"] > capacity["workers"]:
        raise SubmissionError(
            f"resources.workers: the cluster has {capacity['workers']} workers, not {resources['workers']}"
        )
    trainers = resources.get("trainers")
    if isinstance(trainers, int) and trainers > capacity["workers"]:
        raise SubmissionError(
            f"resources.trainers: the cluster has {capacity['workers']} workers, not {trainers}"
        )
    if resources.get("memory") and parse_bytes(resources["memory"]) > capacity["memory"] > 0:
        raise SubmissionError(
            f"resources.memory: the largest worker has {capacity['memory'] / 2**30:.1f} GiB, "
            f"not {resources['memory']}"
        )
    if resources.get("gpu") and not capacity["gpus"]:
        raise SubmissionError("resources.gpu: no worker of the cluster offers a GPU (Dask resource 'GPU')")
