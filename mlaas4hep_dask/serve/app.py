"""The inference service (FastAPI): upload, list and delete bundles; predict on raw events or rows.

Routes (OpenAPI page at ``/docs``):

- ``POST /upload`` (multipart ``file`` = bundle tarball, ``name``, optional ``version``)
- ``GET /models``, ``GET /models/{name}``, ``DELETE /models/{name}``, ``DELETE /models/{name}/{version}``
- ``POST /predict/{name}?version=N``: ``{"events": [...]}`` (raw events, prepared by the
  bundle as in training) or ``{"inputs": [[...], ...]}`` (prepared rows), or a NumPy ``.npy``
  body (``Content-Type: application/x-npy``) of rows; answers ``{"scores": [...]}`` in input
  order (``null`` for events the bundle's cuts reject)
- ``POST /json`` (TFaaS): ``{"keys": [...], "values": [[...]], "model": "name"}`` → list of scores
- ``GET /healthz``, ``GET /metrics`` (Prometheus text)

Every bad request gets a 4xx with ``{"error": "..."}`` naming the field; the server keeps serving.
"""

from __future__ import annotations

import io
import json
import time
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from mlaas4hep_dask._http import error as _error
from mlaas4hep_dask._http import refuse_deep_json
from mlaas4hep_dask.errors import MLaaSError
from mlaas4hep_dask.serve._events import EventError, ignored_branches, prepare_events, prepare_inputs
from mlaas4hep_dask.serve.repository import BundleError, ModelNotFoundError, Repository, manifest_of

__all__ = ["create_app"]

MAX_BODY = 64 * 2**20


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlaas4hep_requests", "Requests", ["route", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlaas4hep_request_seconds", "Request latency", ["route", "model"], registry=self.registry
        )
        self.events = Counter(
            "mlaas4hep_predicted_events", "Events scored", ["model"], registry=self.registry
        )


def _scores(values: np.ndarray, positions: np.ndarray, n: int) -> list[Any]:
    out: list[Any] = [None] * n
    for position, value in zip(positions.tolist(), values.tolist(), strict=True):
        out[position] = value
    return out


def create_app(repository: Repository, max_body: int = MAX_BODY) -> FastAPI:
    """The service over ``repository``; bodies over ``max_body`` bytes are refused (413)."""
    app = FastAPI(title="mlaas4hep-dask inference", version="1")
    metrics = _Metrics()

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body:
            return _error(413, f"request body of {size} bytes is over the limit of {max_body}")
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        model = request.path_params.get("name", "") if hasattr(request, "path_params") else ""
        metrics.requests.labels(path, model, str(response.status_code)).inc()
        metrics.latency.labels(path, model).observe(time.perf_counter() - start)
        return response

    refuse_deep_json(app)

    @app.exception_handler(MLaaSError)
    async def known_errors(request: Request, err: MLaaSError) -> JSONResponse:
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

    async def _body(request: Request) -> tuple[str, Any]:
        raw = await request.body()
        if len(raw) > max_body:
            raise EventError(f"request body over the limit of {max_body} bytes")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind in ("application/x-npy", "application/octet-stream"):
            try:
                return "inputs", np.load(io.BytesIO(raw), allow_pickle=False)
            except (ValueError, OSError, EOFError):
                raise EventError("the body is not a NumPy .npy array") from None
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as err:
            raise EventError(
                f"the body is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
            ) from None
        if not isinstance(payload, dict):
            raise EventError("the body must be a JSON object")
        return "json", payload

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request, version: int | None = None) -> dict[str, Any]:
        info, bundle = repository.load(name, version)
        kind, payload = await _body(request)
        ignored: list[str] = []
        if kind == "inputs":
            X, positions, n = prepare_inputs(bundle, payload), None, None
        else:
            keys = set(payload) - {"events", "inputs"}
            if keys or len(payload) != 1:
                raise EventError(f"give exactly one of 'events' or 'inputs' (got {sorted(payload)})")
            if "events" in payload:
                n = len(payload["events"]) if isinstance(payload["events"], list) else 0
                X, positions = prepare_events(bundle, payload["events"])
                ignored = ignored_branches(bundle, payload["events"])
            else:
                X, positions, n = prepare_inputs(bundle, payload["inputs"]), None, None
        values = bundle.predict_features(X) if len(X) else np.zeros((0,), np.float32)
        metrics.events.labels(name).inc(len(X))
        scores = values.tolist() if positions is None else _scores(values, positions, n or 0)
        answer = {"model": info.name, "version": info.version, "scores": scores}
        return answer | ({"ignored": ignored} if ignored else {})

    @app.post("/json")
    async def tfaas(request: Request) -> list[Any]:
        _, payload = await _body(request)
        if not isinstance(payload, dict) or {"keys", "values", "model"} - set(payload):
            raise EventError('a TFaaS request is {"keys": [...], "values": [...], "model": "name"}')
        _, bundle = repository.load(str(payload["model"]))
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
