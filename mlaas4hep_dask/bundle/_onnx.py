"""ONNX: every run bundle carries ``model.onnx`` where the framework allows, and scores with it.

The exported model takes prepared rows (input ``features``, ``float32 [n, idim]``), so it
runs anywhere ONNX Runtime does (Triton's ``onnxruntime`` backend, C++ trigger code), with
the bundle's preprocessing recipe beside it.  PyTorch models export through ``torch.onnx``
with the score a run reports (probability of class 1, class probabilities, or the value);
scikit-learn through ``skl2onnx``; XGBoost through ``onnxmltools``.  Keras models are not
exported (no ONNX converter for Keras 3 here): their bundle says why.  ``bundle.json``
records ``onnx``: the file, the output holding the scores and, for class probabilities,
the column of class 1.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxModel", "export_onnx"]

FILENAME = "model.onnx"
_log = logging.getLogger(__name__)


def export_onnx(framework: str, model: Any, task: Any, idim: int, directory: Path) -> dict[str, Any]:
    """Write ``directory/model.onnx``; return what ``bundle.json`` records under ``onnx``.

    Never raises for a model that cannot be exported: the record then says why
    (``{"file": null, "why": ...}``), and the run is complete without it.
    """
    path = directory / FILENAME
    converters = {"torch": _torch, "sklearn": _sklearn, "xgboost": _xgboost}
    if framework not in converters:
        return {"file": None, "why": f"no ONNX converter for {framework} models here"}
    try:
        with warnings.catch_warnings():  # the converters' deprecation notes are not the user's business
            warnings.simplefilter("ignore")
            output, column = converters[framework](model, task, idim, path)
    except Exception as err:  # a converter's gap is not the run's failure
        path.unlink(missing_ok=True)
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        _log.warning("the model was not exported to ONNX (%s); the run is complete without it", why)
        return {"file": None, "why": why}
    return {"file": FILENAME, "input": "features", "output": output, "column": column}


def _torch(model: Any, task: Any, idim: int, path: Path) -> tuple[str, int | None]:
    import torch

    from mlaas4hep_dask.fit.torch import _ends_with_probability

    squash = (
        None
        if _ends_with_probability(model)
        else {"binary": "sigmoid", "multiclass": "softmax"}.get(task.kind)
    )

    class Scores(torch.nn.Module):  # the scores a run reports, not logits
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, features: Any) -> Any:
            out = self.model(features).float()
            if squash == "sigmoid":
                out = torch.sigmoid(out)
            elif squash == "softmax":
                out = torch.softmax(out, dim=1)
            return out if task.kind == "multiclass" else out.reshape(-1)

    example = torch.zeros((2, idim), dtype=torch.float32)
    torch.onnx.export(
        Scores().eval().cpu(), (example,), str(path), input_names=["features"], output_names=["scores"],
        dynamic_axes={"features": {0: "n"}, "scores": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return "scores", None


def _sklearn(model: Any, task: Any, idim: int, path: Path) -> tuple[str, int | None]:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, idim]))], options=options)
    path.write_bytes(onx.SerializeToString())
    names = [o.name for o in onx.graph.output]
    if task.kind == "regression":
        return names[0], None
    if "probabilities" not in names:
        raise ValueError("the exported classifier gives no probabilities")
    return "probabilities", 1 if task.kind == "binary" else None


def _xgboost(model: Any, task: Any, idim: int, path: Path) -> tuple[str, int | None]:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = onnxmltools.convert_xgboost(model, initial_types=[("features", FloatTensorType([None, idim]))])
    path.write_bytes(onx.SerializeToString())
    names = [o.name for o in onx.graph.output]
    if task.kind == "regression":
        return names[0], None
    return names[-1], 1 if task.kind == "binary" else None


class OnnxModel:
    """Scores prepared rows with ONNX Runtime, as the bundle's native model would."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input, self.output, self.column = record["input"], record["output"], record.get("column")

    def scores(self, X: np.ndarray, multiclass: bool) -> np.ndarray:
        out = np.asarray(self.session.run([self.output], {self.input: X})[0], dtype=np.float32)
        if self.column is not None:
            out = out[:, self.column]
        return out if multiclass else out.reshape(len(X))
