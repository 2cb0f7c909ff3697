"""The thinnest ASGI app that scores prepared rows with a bundle's model: the serving floor.

``python benchmarks/_floor.py RUN_DIR PORT``: no framework, no validation, no metrics: read the
body, decode ``{"inputs": [[...], ...]}``, call the model, answer ``{"scores": [...]}``.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import numpy as np
import orjson
import uvicorn

from mlaas4hep_dask.bundle._bundle import load_bundle

bundle = load_bundle(sys.argv[1])
gc.freeze()


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/healthz":
        answer = b'{"status":"ok"}'
    else:
        X = np.asarray(orjson.loads(body)["inputs"], dtype=np.float32)
        answer = orjson.dumps({"scores": bundle.predict_features(X).tolist()})
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
