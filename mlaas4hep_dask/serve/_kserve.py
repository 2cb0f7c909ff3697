"""The open inference protocol (KServe v2, as Triton and MLServer speak it): tensors in and out.

A model takes one of two inputs and gives one output:

* ``features``: ``FP32`` ``[n, idim]``, prepared rows (what ``{"inputs": ...}`` takes);
* ``events``: ``BYTES`` ``[n]``, each element the JSON text of one raw event (what
  ``{"events": ...}`` takes: the bundle's preprocessing, padding and normalization apply);
* ``scores``: ``FP32`` ``[n]`` (``[n, classes]`` for a multiclass model); an event that the
  bundle's cuts reject scores ``NaN``.

Tensors come as JSON ``data`` or, with the binary-tensor extension, as raw little-endian
bytes after the JSON header (``Inference-Header-Content-Length``); ``BYTES`` elements are
each prefixed by their length (4 bytes, little-endian).  Answers are JSON, or the JSON
header and the scores' raw bytes when the request asks for binary output (the output's
``parameters.binary_data``, else the request's ``parameters.binary_data_output``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson

from mlaas4hep_dask.errors import MLaaSError

__all__ = ["ProtocolError", "decode_infer", "infer_answer", "model_metadata"]

_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


class ProtocolError(MLaaSError):
    """A request that does not follow the protocol (400, naming what is wrong)."""


def model_metadata(name: str, versions: list[int], manifest: dict[str, Any]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's inputs and output."""
    task = manifest.get("task", {})
    classes = int(task.get("n_classes") or 0) if task.get("kind") == "multiclass" else 0
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": f"mlaas4hep_{manifest.get('framework', 'model')}",
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, int(manifest.get("idim", -1))]},
            {"name": "events", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, classes] if classes else [-1]}],
    }


def decode_infer(raw: bytes, header_length: str | None) -> tuple[dict[str, Any], str, Any]:
    """The request's JSON header, its input's name (``features`` or ``events``) and its value.

    ``features`` comes back as an ``(n, idim)`` float32 array, ``events`` as a list of event
    objects.
    """
    try:
        split = len(raw) if header_length is None else int(header_length)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a number, not {header_length!r}"
        ) from None
    if not 0 < split <= len(raw):
        raise ProtocolError(
            f"Inference-Header-Content-Length {split} does not fit a body of {len(raw)} bytes"
        )
    try:
        request = orjson.loads(raw[:split])
    except orjson.JSONDecodeError as err:
        raise ProtocolError(f"the inference request is not valid JSON: {err}") from None
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("inputs"), list)
        or len(request["inputs"]) != 1
    ):
        raise ProtocolError("an inference request has 'inputs': one tensor, 'features' or 'events'")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= set(tensor):
        raise ProtocolError("inputs[0] needs 'name', 'shape' and 'datatype'")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if name not in ("features", "events"):
        raise ProtocolError(f"unknown input {name!r}: the inputs are 'features' (FP32) and 'events' (BYTES)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"inputs[0] 'shape' must be a list of sizes, not {shape!r}")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    blob = memoryview(raw)[split:]
    if size is not None and (not isinstance(size, int) or size != len(blob)):
        raise ProtocolError(
            f"binary_data_size {size!r} does not match the {len(blob)} bytes after the header"
        )
    count = int(np.prod(shape))
    if name == "events":
        if datatype != "BYTES":
            raise ProtocolError(f"input 'events' is BYTES (one JSON event per element), not {datatype}")
        texts = _elements(blob) if size is not None else tensor.get("data")
        if not isinstance(texts, list) or len(texts) != count:
            raise ProtocolError(f"input 'events' holds {count} elements by its shape; the data do not")
        try:
            return request, name, [json.loads(t) for t in texts]
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise ProtocolError(f"an element of 'events' is not the JSON text of an event: {err}") from None
    if datatype not in _DTYPES:
        raise ProtocolError(f"input 'features' has datatype {datatype!r}; FP32 is expected")
    try:
        if size is not None:
            values = np.frombuffer(blob, dtype=np.dtype(_DTYPES[datatype]).newbyteorder("<"))
        else:
            values = np.asarray(tensor.get("data"), dtype=_DTYPES[datatype]).reshape(-1)
        return request, name, values.reshape(shape).astype(np.float32, copy=False)
    except (ValueError, TypeError):
        raise ProtocolError(
            f"input 'features' does not hold {count} {datatype} values of shape {shape}"
        ) from None


def _elements(blob: memoryview) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ProtocolError("a BYTES element's length is cut short")
        (n,) = struct.unpack_from("<I", blob, at)
        out.append(bytes(blob[at + 4 : at + 4 + n]))
        at += 4 + n
    return out


def infer_answer(
    request: dict[str, Any], name: str, version: int, scores: list[Any]
) -> tuple[bytes, int | None]:
    """The answer, output ``scores`` (``NaN`` for events the cuts reject), and the length of its
    JSON header when the scores follow it as raw bytes (``None``: all JSON)."""
    width = next((len(s) for s in scores if isinstance(s, list)), None)
    values = np.full((len(scores), width) if width else len(scores), np.nan, dtype=np.float32)
    for i, score in enumerate(scores):
        if score is not None:
            values[i] = score
    output: dict[str, Any] = {"name": "scores", "datatype": "FP32", "shape": list(values.shape)}
    binary = _binary_output(request)
    if binary:
        output["parameters"] = {"binary_data_size": values.nbytes}
    else:
        output["data"] = values.reshape(-1).tolist()
    answer: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": [output]}
    if "id" in request:
        answer["id"] = request["id"]
    header = json.dumps(answer).encode()  # NaN as NaN, which the protocol's clients read
    if not binary:
        return header, None
    return header + values.astype("<f4", copy=False).tobytes(), len(header)


def _binary_output(request: dict[str, Any]) -> bool:
    """Whether the request asks for the scores as raw bytes."""
    for wanted in request.get("outputs") or []:
        if isinstance(wanted, dict) and wanted.get("name") == "scores":
            parameters = wanted.get("parameters") or {}
            if "binary_data" in parameters:
                return parameters["binary_data"] is True
    return (request.get("parameters") or {}).get("binary_data_output") is True
