"""The inference service (FastAPI): upload, list and delete bundles; predict on raw events or rows.

Routes (OpenAPI page at ``/docs``):

- ``POST /upload`` (multipart ``file`` = bundle tarball, ``name``, optional ``version``)
- ``GET /models``, ``GET /models/{name}``, ``DELETE /models/{name}``, ``DELETE /models/{name}/{version}``
- ``POST /predict/{name}?version=N``: ``{"events": [...]}`` (raw events, prepared by the
  bundle as in training) or ``{"inputs": [[...], ...]}`` (prepared rows), or a NumPy ``.npy``
  body (``Content-Type: application/x-npy``) of rows, or an ``.npz`` body
  (``application/x-npz``) of raw events branch by branch (a jagged branch ``NAME`` as its
  items and ``NAME.counts``), or an Arrow IPC stream of them
  (``application/vnd.apache.arrow.stream``, e.g. ``ak.to_arrow_table``); answers
  ``{"scores": [...]}`` in input order (``null`` for events the bundle's cuts reject)
- ``/v2/...``: the open inference protocol (KServe v2), see :mod:`mlaas4hep_dask.serve._kserve`
- ``POST /json`` (TFaaS): ``{"keys": [...], "values": [[...]], "model": "name"}`` → list of scores
- ``GET /healthz``, ``GET /metrics`` (Prometheus text)

Every bad request gets a 4xx with ``{"error": "..."}`` naming the field; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from collections.abc import Callable, Hashable, Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)

from mlaas4hep_dask._http import body as _body_doc
from mlaas4hep_dask._http import error as _error
from mlaas4hep_dask._http import offline_docs, refuse_deep_json
from mlaas4hep_dask.bundle._bundle import Bundle
from mlaas4hep_dask.errors import MLaaSError
from mlaas4hep_dask.serve._batcher import Batcher, Overloaded
from mlaas4hep_dask.serve._events import (
    ARROW_STREAM,
    EventError,
    arrow_columns,
    check_events,
    ignored_branches,
    prepare_columns,
    prepare_inputs,
)
from mlaas4hep_dask.serve._kserve import decode_infer, infer_answer, model_metadata
from mlaas4hep_dask.serve._metrics import Measured, Metrics
from mlaas4hep_dask.serve._scoring import frozen_after_first, score_events, score_rows, scores_at
from mlaas4hep_dask.serve.repository import (
    BundleError,
    ModelInfo,
    ModelNotFoundError,
    Repository,
    manifest_of,
)

__all__ = ["create_app"]

_log = logging.getLogger("mlaas4hep_dask.serve")

MAX_BODY = 64 * 2**20


_NUMBERS = {"type": "array", "items": {"type": "number"}}
_PREDICT_BODY = _body_doc(
    {
        "oneOf": [
            {
                "type": "object",
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "description": "raw events: each branch the model reads, a number or a list",
                        "items": {
                            "type": "object",
                            "additionalProperties": {"oneOf": [{"type": "number"}, _NUMBERS]},
                        },
                    }
                },
            },
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {"type": "array", "description": "prepared rows", "items": _NUMBERS}
                },
            },
        ]
    },
    {
        "raw events": {"events": [{"nJets": 5, "MET": 65.9, "HT": 429.2, "jetPt": [120.1, 80.4, 60.0]}]},
        "prepared rows": {"inputs": [[0.25, 0.5, 0.0, 1.0]]},
    },
    binary=("application/x-npy", "application/x-npz", ARROW_STREAM),
)
_TFAAS_BODY = _body_doc(
    {
        "type": "object",
        "required": ["keys", "values", "model"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the model's feature names",
            },
            "values": {"type": "array", "items": _NUMBERS, "description": "rows, in the order of keys"},
            "model": {"type": "string"},
        },
    },
    {"TFaaS request": {"keys": ["MET", "HT"], "values": [[0.3, 0.7]], "model": "ttH"}},
)


# Long on purpose: the routes are FastAPI closures over this app's repository, batcher and metrics,
# one short handler each, read best in one place as the table of the HTTP API.
def create_app(
    repository: Repository,
    max_body: int = MAX_BODY,
    max_batch_delay: float = 0.002,
    max_batch_size: int = 4096,
    max_queue: int = 65536,
    warm: bool = False,
) -> FastAPI:
    """The service over ``repository``; bodies over ``max_body`` bytes are refused (413).

    Concurrent predictions for one model are scored in batches of up to ``max_batch_size``
    events, gathered for at most ``max_batch_delay`` seconds while requests are arriving; with
    more than ``max_queue`` events waiting for a model, requests get 503 and ``Retry-After``.
    With ``warm``, the latest version of every model is loaded and scores a row now, so the
    first requests do not pay for it (a bundle that fails is logged and left for later).
    """
    app = FastAPI(title="mlaas4hep-dask inference", version="1", docs_url=None, redoc_url=None)
    offline_docs(app)
    metrics = Metrics()
    batcher = Batcher(max_batch_delay, max_batch_size, max_queue, observe=metrics.observe)
    scorers: dict[Hashable, tuple[Bundle, Callable[[Sequence[Any]], list[Any]]]] = {}

    def scorer(key: Hashable, bundle: Bundle, kind: str) -> Callable[[Sequence[Any]], list[Any]]:
        """One scoring function per model version and kind (the batcher's queue follows it)."""
        known = scorers.get(key)
        if known is None or known[0] is not bundle:  # a version reloaded: a new queue
            score = score_events if kind == "events" else score_rows
            known = scorers[key] = (bundle, frozen_after_first(lambda requests: score(bundle, requests)))
        return known[1]

    if warm:
        latest = {info.name: info for info in repository.models()}  # by version: the last wins
        for info in list(latest.values())[-repository.cache_size :]:
            try:
                _, bundle = repository.load(info.name, info.version)
                row = np.zeros((1, bundle.layout.idim), np.float32)
                scorer((info.name, info.version, "inputs"), bundle, "inputs")([row])
            except Exception as err:  # the server serves the others; this one fails when asked for
                _log.warning("model %s version %d not warmed: %s", info.name, info.version, err)

    app.add_middleware(Measured, metrics=metrics, max_body=max_body)
    refuse_deep_json(app)

    @app.exception_handler(MLaaSError)
    async def known_errors(request: Request, err: MLaaSError) -> JSONResponse:
        if isinstance(err, Overloaded):
            response = _error(503, str(err))
            response.headers["Retry-After"] = str(round(err.retry_after))
            return response
        if isinstance(err, ModelNotFoundError):
            return _error(404, str(err))
        if isinstance(err, EventError):
            return _error(422, str(err))
        return _error(400, str(err))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/upload", status_code=201)
    def upload(
        file: Annotated[UploadFile, File()],
        name: Annotated[str, Form()],
        version: Annotated[int | None, Form()] = None,
    ) -> dict[str, Any]:
        data = file.file.read(max_body + 1)
        if len(data) > max_body:
            raise BundleError(f"upload of more than {max_body} bytes refused")
        return repository.add(name, data, version).to_dict()

    @app.get("/models")
    def models() -> list[dict[str, Any]]:
        return [m.to_dict() for m in repository.models()]

    @app.get("/models/{name}")
    def model(name: str) -> dict[str, Any]:
        latest = repository.get(name)
        versions = [m.version for m in repository.models() if m.name == name]
        return {**latest.to_dict(), "versions": versions, "bundle": manifest_of(latest)}

    @app.delete("/models/{name}")
    def delete_all(name: str) -> dict[str, Any]:
        return {"deleted": [m.to_dict() for m in repository.delete(name)]}

    @app.delete("/models/{name}/{version}")
    def delete_one(name: str, version: int) -> dict[str, Any]:
        return {"deleted": [m.to_dict() for m in repository.delete(name, version)]}

    async def _loaded(name: str, version: int | None) -> tuple[ModelInfo, Bundle]:
        """The bundle; one not loaded yet is loaded in a thread (seconds: its framework, its
        runtime), so that the event loop keeps answering the models already loaded."""
        found = repository.cached(name, version)
        if found is not None:
            return found
        return await asyncio.to_thread(repository.load, name, version)

    async def _body(request: Request) -> tuple[str, Any]:
        raw = await request.body()
        if len(raw) > max_body:
            raise EventError(f"request body over the limit of {max_body} bytes")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind == ARROW_STREAM:  # raw events, branch by branch
            return "columns", arrow_columns(raw)
        if kind in ("application/x-npy", "application/x-npz", "application/octet-stream"):
            try:
                loaded = np.load(io.BytesIO(raw), allow_pickle=False)
                if isinstance(loaded, np.lib.npyio.NpzFile):  # raw events, branch by branch
                    with loaded:
                        return "columns", {k: loaded[k] for k in loaded.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile):
                raise EventError("the body is not a NumPy .npy array or .npz archive of arrays") from None
            return "inputs", loaded
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # Python's reader, for its message (and NaN, which the checks then name)
                payload = json.loads(raw)
            except json.JSONDecodeError as err:
                raise EventError(
                    f"the body is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
                ) from None
        if not isinstance(payload, dict):
            raise EventError("the body must be a JSON object")
        return "json", payload

    @app.post("/predict/{name}", openapi_extra=_PREDICT_BODY)
    async def predict(name: str, request: Request, version: int | None = None) -> Response:
        batcher.arriving += 1  # a batch being gathered waits for requests still being read
        try:
            info, bundle = await _loaded(name, version)
            kind, payload = await _body(request)
            ignored: list[str] = []
            if kind == "json":
                keys = set(payload) - {"events", "inputs"}
                if keys or len(payload) != 1:
                    raise EventError(f"give exactly one of 'events' or 'inputs' (got {sorted(payload)})")
                kind, payload = next(iter(payload.items()))
            if kind == "columns":
                reads = {*bundle.plan.columns, *(f"{n}.counts" for n in bundle.plan.columns)}
                ignored = sorted(set(payload) - reads)
                X, positions, n = prepare_columns(bundle, payload)
            elif kind == "events":
                check_events(payload)
                ignored = ignored_branches(bundle, payload)
            else:
                payload = prepare_inputs(bundle, payload)
        finally:
            batcher.arriving -= 1
        if kind == "columns":  # prepared here: the batcher gets their rows
            rows = await _score(info, bundle, "inputs", X) if len(X) else []
            scores = scores_at(np.asarray(rows), positions, n)
        else:
            scores = await _score(info, bundle, kind, payload)
        answer = {"model": info.name, "version": info.version, "scores": scores}
        if ignored:
            answer["ignored"] = ignored
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _score(info: Any, bundle: Bundle, kind: str, payload: Any) -> list[Any]:
        key = (info.name, info.version, kind)
        gauge = metrics.in_flight.labels(info.name)
        gauge.inc(len(payload))
        try:
            scores: list[Any] = await batcher.submit(key, scorer(key, bundle, kind), payload, len(payload))
        finally:
            gauge.dec(len(payload))
        metrics.events.labels(info.name).inc(len(payload))
        return scores

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def v2_health() -> dict[str, bool]:
        return {"live": True, "ready": True}

    @app.get("/v2")
    def v2_server() -> dict[str, Any]:
        return {"name": "mlaas4hep-dask", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    def v2_model(name: str, version: int | None = None) -> dict[str, Any]:
        info = repository.get(name, version)
        versions = [m.version for m in repository.models() if m.name == name]
        return model_metadata(name, versions, manifest_of(info))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    def v2_model_ready(name: str, version: int | None = None) -> dict[str, Any]:
        info = repository.get(name, version)
        return {"name": info.name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(name: str, request: Request, version: int | None = None) -> Response:
        batcher.arriving += 1
        try:
            info, bundle = await _loaded(name, version)
            raw = await request.body()
            header, kind, payload = decode_infer(raw, request.headers.get("inference-header-content-length"))
            if kind == "features":
                payload = prepare_inputs(bundle, payload)
        finally:
            batcher.arriving -= 1
        scores = await _score(info, bundle, "inputs" if kind == "features" else "events", payload)
        answer, split = infer_answer(header, info.name, info.version, scores)
        if split is None:
            return Response(answer, media_type="application/json")
        extension = {"Inference-Header-Content-Length": str(split)}
        return Response(answer, media_type="application/octet-stream", headers=extension)

    @app.post("/json", openapi_extra=_TFAAS_BODY)
    async def tfaas(request: Request) -> list[Any]:
        _, payload = await _body(request)
        if not isinstance(payload, dict) or {"keys", "values", "model"} - set(payload):
            raise EventError('a TFaaS request is {"keys": [...], "values": [...], "model": "name"}')
        _, bundle = await _loaded(str(payload["model"]), None)
        keys, values = payload["keys"], payload["values"]
        rows = values if values and isinstance(values[0], list) else [values]
        features = bundle.layout.features
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(features):
            unknown = [k for k in keys if k not in features] if isinstance(keys, list) else keys
            raise EventError(f"'keys' must name the model's {len(features)} features; unknown: {unknown[:5]}")
        order = [keys.index(f) for f in features]
        X = prepare_inputs(bundle, [[row[i] for i in order] for row in rows])
        return bundle.predict_features(X).tolist()

    return app
