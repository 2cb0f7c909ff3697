"""What ``POST /submit`` accepts (pydantic, unknown fields refused) and how it becomes a job spec.

Everything that can be checked without running the user's code is checked here, in the web
process, so that a bad submission gets a 422 naming the field at once: the files (remote
URLs, the caller's upload, or local files under the service's data roots), the labels, the
params and preproc (parsed as ``mlaas4hep train`` would), and ``model.py`` (compiled, never
run, and required to define ``model``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Any, Literal

from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlaas4hep_dask.config._files import parse_json
from mlaas4hep_dask.config._params import Params, load_labels
from mlaas4hep_dask.errors import ConfigError, MLaaSError
from mlaas4hep_dask.handle._preprocess import load_preproc
from mlaas4hep_dask.service._access import unreadable
from mlaas4hep_dask.service.config import ServiceConfig

__all__ = ["NAME_PATTERN", "Resources", "Submission", "SubmissionError", "job_spec"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_REMOTE = ("root://", "roots://", "xroot://", "http://", "https://")
#: Files of an upload that fill the submission's fields when those are not given inline.
UPLOAD_FIELDS = {
    "model_source": "model.py",
    "files": "files.txt",
    "labels": "labels.txt",
    "params": "params.json",
    "preproc": "preproc.json",
}


class SubmissionError(MLaaSError, ValueError):
    """A submission that cannot run (HTTP 422); the message names the field."""


class Resources(BaseModel):
    """What a job asks of the cluster."""

    model_config = ConfigDict(extra="forbid")

    workers: Annotated[int, Field(ge=1)] | None = None
    memory: Annotated[str | None, Field(description="memory per worker, e.g. '4GB'")] = None
    disk: Annotated[
        str | None, Field(description="disk quota of the job's folder, e.g. '20GB' (default 20 GiB)")
    ] = None
    gpu: bool = False
    trainers: Annotated[
        Annotated[int, Field(ge=1)] | Literal["all"] | None,
        Field(description="data-parallel PyTorch/Keras trainers on the workers (or XGBoost's workers)"),
    ] = None
    timeout: Annotated[float | None, Field(gt=0, description="seconds; capped by the service")] = None

    @field_validator("memory", "disk")
    @classmethod
    def _bytes(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_bytes(value)
            except (ValueError, TypeError):
                raise ValueError(f"{value!r} is not a size such as '4GB'") from None
        return value


class Submission(BaseModel):
    """The body of ``POST /submit`` (the original server's ``input.json``, extended)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=NAME_PATTERN, description="job name (default: model)")
    files: list[str] | str | None = Field(None, description="list of paths/URLs, or files.txt content")
    labels: list[float] | str | None = Field(None, description="one per file, or labels.txt content")
    model: str | None = Field(None, description="model.py source")
    upload: str | None = Field(
        None, pattern=NAME_PATTERN, description="an uploaded tarball of the user's files"
    )
    params: dict[str, Any] | None = None
    preproc: dict[str, Any] | None = None
    resources: Resources = Field(default_factory=Resources)
    push: bool | Annotated[str, Field(pattern=NAME_PATTERN)] = Field(
        False, description="push the bundle to the model repository (true: under the job name)"
    )
    data_token: Annotated[str | None, Field(max_length=16_384)] = Field(
        None,
        description="a bearer token for the job's root:// and HTTPS inputs: this job only gets it "
        "(BEARER_TOKEN_FILE), never shown, forgotten when the job ends",
    )
    x509_proxy: Annotated[str | None, Field(max_length=65_536)] = Field(
        None,
        description="an X.509 proxy (PEM) for the job's inputs: this job only gets it "
        "(X509_USER_PROXY), never shown, forgotten when the job ends",
    )
    # the original server's fields
    device: Literal["cpu", "gpu", "cuda"] | None = None
    memory: str | None = None
    cpus: Annotated[int, Field(ge=1)] | None = None


def _lines(text: str) -> list[str]:
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


def _check_model(source: str, where: str) -> None:
    try:
        tree = ast.parse(source, filename="model.py")
    except SyntaxError as err:
        raise SubmissionError(f"{where}: syntax error at line {err.lineno}: {err.msg}") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "model" not in names:
        raise SubmissionError(f"{where} defines no function model(idim)")


def _check_file(path: str, config: ServiceConfig, upload: Path | None, redirector: str | None) -> None:
    if "://" in path:
        if not path.startswith(_REMOTE):
            raise SubmissionError(f"files: {path!r}: only root://, http:// and https:// URLs are read")
        return
    if path.startswith("/store/") and redirector and not Path(path).exists():
        return  # read through the redirector
    candidate = Path(path)
    if not candidate.is_absolute():
        if upload is None:
            raise SubmissionError(f"files: relative path {path!r} needs an 'upload' holding it")
        resolved = (upload / candidate).resolve()
        if not resolved.is_relative_to(upload.resolve()) or not resolved.is_file():
            raise SubmissionError(f"files: {path!r} is not in upload {upload.name!r}")
        return
    resolved = candidate.resolve()
    roots = config.data_roots
    under = [root for root in roots if resolved.is_relative_to(root)]
    if not under:
        allowed = ", ".join(map(str, roots)) or "none configured (--data-root)"
        raise SubmissionError(f"files: local path {path!r} is outside the service's data roots ({allowed})")
    if not resolved.is_file():
        raise SubmissionError(f"files: {path!r} does not exist")
    why = unreadable(resolved, under[0], as_service=config.unsandboxed_jobs)
    if why is not None:
        raise SubmissionError(f"files: {why}")


def _from_upload(upload: Path | None, field: str) -> str | None:
    if upload is None:
        return None
    candidate = upload / UPLOAD_FIELDS[field]
    return candidate.read_text(errors="replace") if candidate.is_file() else None


def _json_file(text: str, what: str) -> Any:
    try:
        return parse_json(text, f"{what} of the upload")
    except ConfigError as err:
        raise SubmissionError(str(err)) from None


def job_spec(sub: Submission, config: ServiceConfig, upload: Path | None) -> dict[str, Any]:
    """Check a submission and return the job spec stored with the job (JSON-able).

    ``upload`` is the folder of the caller's upload named by ``sub.upload`` (``None`` if none).
    """
    source = sub.model if sub.model is not None else _from_upload(upload, "model_source")
    if source is None:
        raise SubmissionError("model: give model.py source, or an upload holding model.py")
    _check_model(source, "model" if sub.model is not None else f"model.py of upload {sub.upload!r}")

    params = sub.params
    if params is None and (text := _from_upload(upload, "params")) is not None:
        params = _json_file(text, "params.json")
    try:
        p = Params.from_dict(params or {}, source="params")
    except MLaaSError as err:
        raise SubmissionError(str(err)) from None
    preproc = sub.preproc
    if preproc is None and (text := _from_upload(upload, "preproc")) is not None:
        preproc = _json_file(text, "preproc.json")
    try:
        load_preproc(preproc)
    except MLaaSError as err:
        raise SubmissionError(f"preproc: {err}") from None

    files: Any = sub.files if sub.files is not None else _from_upload(upload, "files")
    if files is None:
        raise SubmissionError(
            "files: give a list of input files, files.txt content, or an upload with files.txt"
        )
    files = _lines(files) if isinstance(files, str) else [f.strip() for f in files]
    if not files or not all(files):
        raise SubmissionError("files: the list names no input file (or has an empty entry)")
    for path in files:
        _check_file(path, config, upload, p.redirector)

    labels: Any = sub.labels if sub.labels is not None else _from_upload(upload, "labels")
    if isinstance(labels, str):
        labels = [item for line in _lines(labels) for item in line.split(",") if item.strip()]
    try:
        labels = load_labels(labels, len(files))
    except ConfigError as err:
        raise SubmissionError(f"labels: {err}") from None

    resources = sub.resources.model_dump()
    resources["gpu"] = resources["gpu"] or sub.device in ("gpu", "cuda")
    resources["memory"] = resources["memory"] or sub.memory
    timeout = min(resources.pop("timeout") or config.job_timeout, config.job_timeout)
    push = sub.push if isinstance(sub.push, str) else (sub.name or "model") if sub.push else None
    if push and config.repository is None:
        raise SubmissionError("push: this service has no model repository (--repository)")
    credentials = {k: v for k, v in (("token", sub.data_token), ("x509_proxy", sub.x509_proxy)) if v}
    if sub.x509_proxy and "-----BEGIN" not in sub.x509_proxy:
        raise SubmissionError("x509_proxy: not a PEM proxy (no -----BEGIN line)")
    return {
        **({"credentials": credentials} if credentials else {}),
        "files": files,
        "labels": labels,
        "params": params or {},
        "preproc": preproc,
        "model_source": source,
        "upload": sub.upload,
        "resources": resources,
        "timeout": timeout,
        "push": push,
        "sandbox": None if config.unsandboxed_jobs else _sandbox(config),
        "reads": [str(root) for root in config.data_roots],
    }


def _sandbox(config: ServiceConfig) -> dict[str, str | None]:
    """Which sandbox the worker runs the job in (see :func:`~mlaas4hep_dask.service.sandbox.sandbox_of`)."""
    return {"name": config.sandbox, "image": config.sandbox_image}
