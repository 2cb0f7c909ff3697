"""Keras (TensorFlow 2 / Keras 3) backend: fit chunk by chunk from the stream."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.fit._common import Fitting, Task, optional_import

__all__ = ["fit", "load", "predict", "restore", "save", "state"]

FILENAME = "model.keras"


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mlaas4hep_dask.read import _dataset as io  # noqa: F401 - initialises XRootD before TensorFlow (see io.py)

    return optional_import("keras", "pip install 'mlaas4hep-dask[ml]' (TensorFlow and Keras)")


def _compile(model: Any, task: Task, params: Params) -> None:
    if getattr(model, "compiled", False):
        return
    keras = _keras()
    loss = {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"}.get(
        task.kind, "mse"
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate), loss=loss)


def state(model: Any, epoch: int) -> bytes:
    """A checkpoint after ``epoch``: the model's weights (NumPy arrays, any Keras backend).

    The optimizer's moments are not kept: a resumed Keras run restarts them.
    """
    import io

    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(buffer, epoch=np.int64(epoch), **arrays)
    return buffer.getvalue()


def restore(blob: bytes, model: Any) -> int:
    """Load the weights of a checkpoint made by :func:`state`; return its epoch."""
    import io

    with np.load(io.BytesIO(blob)) as saved:
        model.set_weights([saved[f"w{i}"] for i in range(len(saved.files) - 1)])
        return int(saved["epoch"])


def fit(model: Any, train: BatchLoader, how: Fitting) -> Any:
    """Train ``params.epochs`` epochs; each epoch fits every shuffled chunk once."""
    params = how.params
    _keras().utils.set_random_seed(params.seed)
    _compile(model, how.task, params)
    done = restore(how.resume, model) if how.resume is not None else 0
    train.epoch = done  # the shuffles continue as if the run had not stopped
    for epoch in range(done + 1, params.epochs + 1):
        total, seen = 0.0, 0
        for chunk in train.iter_chunks():
            history = model.fit(
                chunk.X,
                chunk.y,
                sample_weight=chunk.w,
                batch_size=params.batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
            )
            total += float(history.history["loss"][-1]) * len(chunk)
            seen += len(chunk)
            how.on_batch(len(chunk))
        how.on_epoch(epoch, total / max(seen, 1))
        if how.checkpoint is not None:
            how.checkpoint(epoch, state(model, epoch))
    return model


def predict(model: Any, X: np.ndarray, task: Task) -> np.ndarray:
    out = np.asarray(model.predict(X, batch_size=8192, verbose=0))
    return out if task.kind == "multiclass" else out.reshape(len(X))


def save(model: Any, directory: Path, idim: int) -> str:
    model.save(directory / FILENAME)
    return FILENAME


def load(path: Path) -> Any:
    return _keras().saving.load_model(path)
