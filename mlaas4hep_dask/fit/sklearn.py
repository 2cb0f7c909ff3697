"""scikit-learn backend: ``partial_fit`` on every chunk, or ``fit`` on a bounded training set.

Models are saved with skops (a safe, inspectable format), never with plain pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.fit._common import Fitting, Task
from mlaas4hep_dask.handle._rows import Block

__all__ = ["fit", "load", "predict", "save"]

FILENAME = "model.skops"


def fit(model: Any, train: BatchLoader, how: Fitting) -> Any:
    """Stream with ``partial_fit`` when the estimator has it; else one ``fit`` (bounded size)."""
    task, params = how.task, how.params
    classes = np.arange(task.n_classes) if task.kind != "regression" else None
    if hasattr(model, "partial_fit"):
        for epoch in range(1, params.epochs + 1):
            for chunk in train.iter_chunks():
                kwargs: dict[str, Any] = {"classes": classes} if classes is not None else {}
                if chunk.w is not None:
                    kwargs["sample_weight"] = chunk.w
                model.partial_fit(chunk.X, chunk.y, **kwargs)
                how.on_batch(len(chunk))
            how.on_epoch(epoch, float("nan"))
        return model
    if len(train) > params.max_fit_events:
        raise ConfigError(
            f"{type(model).__name__} has no partial_fit and the training set has {len(train)} events "
            f"(more than max_fit_events={params.max_fit_events}): use an estimator with partial_fit, "
            "XGBoost, or raise max_fit_events in params.json"
        )
    data = Block.concatenate(list(train.iter_chunks()))
    model.fit(data.X, data.y, **({"sample_weight": data.w} if data.w is not None else {}))
    how.on_batch(len(data))
    how.on_epoch(1, float("nan"))
    return model


def predict(model: Any, X: np.ndarray, task: Task) -> np.ndarray:
    if task.kind == "regression":
        return np.asarray(model.predict(X)).reshape(len(X))
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        return proba[:, 1] if task.kind == "binary" else proba
    scores = np.asarray(model.decision_function(X))  # e.g. SGDClassifier with hinge loss
    return 1 / (1 + np.exp(-scores)) if task.kind == "binary" else scores


def save(model: Any, directory: Path, idim: int) -> str:
    import skops.io as sio

    sio.dump(model, directory / FILENAME)
    return FILENAME


def load(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "scipy."))]
    if foreign:
        raise ValueError(f"{str(path)!r} holds types outside scikit-learn/NumPy/SciPy: {foreign}")
    return sio.load(path, trusted=untrusted)
