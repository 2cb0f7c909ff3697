"""XGBoost backend: ``xgboost.dask`` on the loader's partitions; the data never gather.

With a distributed client the training set is a ``DaskDMatrix`` over the tensorized
partitions (row-partitioned dask arrays), trained where the partitions live.  Without one
(threads, sync), a ``QuantileDMatrix`` is built from the stream chunk by chunk.  Boosting
rounds are reported as epochs.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask._quiet import dropping_on_workers
from mlaas4hep_dask.batches._executors import Distributed
from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.fit._common import Fitting, Task, optional_import
from mlaas4hep_dask.handle._layout import Layout
from mlaas4hep_dask.handle._rows import Block, received

__all__ = ["fit", "load", "predict", "save"]

FILENAME = "model.ubj"


def _xgb() -> Any:
    return optional_import("xgboost", "pip install xgboost-cpu")


def _params(model: Any, task: Task, params: Params, device: str) -> tuple[dict[str, Any], int]:
    """Booster parameters and rounds from an XGBModel or a plain dict."""
    if isinstance(model, dict):
        booster = dict(model)
        rounds = int(booster.pop("num_boost_round", booster.pop("n_estimators", 100)))
    else:
        booster = {k: v for k, v in model.get_xgb_params().items() if v is not None}
        rounds = int(model.get_params().get("n_estimators") or 100)
    objective = {"binary": "binary:logistic", "multiclass": "multi:softprob"}.get(
        task.kind, "reg:squarederror"
    )
    booster.setdefault("objective", objective)
    if task.kind == "multiclass":
        booster.setdefault("num_class", task.n_classes)
    booster.setdefault(
        "eval_metric", {"binary": ["logloss", "auc"], "multiclass": ["mlogloss"]}.get(task.kind, ["rmse"])
    )
    booster.setdefault("seed", params.seed)
    if device == "cuda":
        booster["device"] = "cuda"
    # a worker whose share holds one class warns at every round that its local AUC is
    # undefined (the global one is not); errors still surface
    booster.setdefault("verbosity", 0 if not os.environ.get("MLAAS4HEP_VERBOSE") else 1)
    return booster, rounds


def _part(sent: tuple[Any, ...], index: int, layout: Layout) -> np.ndarray:
    """One array of a packed partition: its rows of X (0), or its labels (1) or weights (2)
    as float32 for XGBoost."""
    events = received(sent)
    if index == 0:
        return events.X if isinstance(events, Block) else layout.unpacked(events)
    values = events.y if index == 1 else events.w
    assert values is not None
    return values.astype(np.float32, copy=False)


def _dask_matrix(xgb: Any, loader: BatchLoader, client: Any, workers: list[str] | None) -> Any:
    """A DaskDMatrix whose row blocks are the loader's tensorized partitions (never gathered).

    With ``workers``, the partitions are computed and kept on those workers only, and
    ``xgboost.dask`` trains where its data are: on them.
    """
    import dask
    import dask.array as da
    import xgboost.dask  # noqa: F401 - registers xgb.dask

    pick = dask.delayed(_part, pure=True)
    xs, ys, ws = [], [], []
    layout = loader.layout
    for p, n in enumerate(loader.counts):
        if n == 0:
            continue
        task = loader._task(p)
        xs.append(da.from_delayed(pick(task, 0, layout), shape=(n, loader.idim), dtype=np.float32))
        ys.append(da.from_delayed(pick(task, 1, layout), shape=(n,), dtype=np.float32))
        if loader.weighted:
            ws.append(da.from_delayed(pick(task, 2, layout), shape=(n,), dtype=np.float32))
    arrays = [da.concatenate(xs), da.concatenate(ys)] + ([da.concatenate(ws)] if ws else [])
    if workers is not None:
        arrays = client.persist(arrays, workers=workers, allow_other_workers=False)
    X, y, *weight = arrays
    return xgb.dask.DaskDMatrix(client, X, y, weight=weight[0] if weight else None)


def fit(model: Any, train: BatchLoader, how: Fitting) -> Any:
    """Boost on the training split; validation metrics per round come from XGBoost itself."""
    xgb = _xgb()
    valid = how.valid
    booster_params, rounds = _params(model, how.task, how.params, how.device)
    history: dict[str, Any] = {}
    executor = train._executor
    if isinstance(executor, Distributed):
        import xgboost.dask

        from mlaas4hep_dask.fit._parallel import choose_workers

        client = executor.client
        workers = None if how.trainers is None else choose_workers(client, how.trainers, how.device)
        dtrain = _dask_matrix(xgb, train, client, workers)
        evals = [(dtrain, "train")]
        if valid is not None:
            evals.append((_dask_matrix(xgb, valid, client, workers), "validation"))
        # each worker's C++ "got rank" line: not ours to show at the default verbosity
        ranks = r"Task \[xgboost\.dask-\d+\]\S* got rank \d"
        with nullcontext() if os.environ.get("MLAAS4HEP_VERBOSE") else dropping_on_workers(client, ranks):
            out = xgboost.dask.train(
                client, booster_params, dtrain, num_boost_round=rounds, evals=evals, verbose_eval=False
            )
        booster, history = out["booster"], out["history"]
    else:
        dtrain = train.dmatrix()
        evals = [(dtrain, "train")]
        if valid is not None:
            evals.append((valid.dmatrix(ref=dtrain), "validation"))
        booster = xgb.train(
            booster_params,
            dtrain,
            num_boost_round=rounds,
            evals=evals,
            evals_result=history,
            verbose_eval=False,
        )
    how.on_batch(len(train))  # events trained, as the total counts them (not event-rounds)
    loss_name = booster_params["eval_metric"][0]
    val = history.get("validation", {})
    for i, value in enumerate(history["train"][loss_name]):
        reported = {"loss": float(val[loss_name][i])} if val else {}
        if "auc" in val:
            reported["auc"] = float(val["auc"][i])
        how.on_epoch(i + 1, float(value), reported)
    return booster


def predict(model: Any, X: np.ndarray, task: Task) -> np.ndarray:
    out = np.asarray(model.inplace_predict(X))
    return out if task.kind == "multiclass" else out.reshape(len(X))


def save(model: Any, directory: Path, idim: int) -> str:
    model.save_model(directory / FILENAME)
    return FILENAME


def load(path: Path) -> Any:
    booster = _xgb().Booster()
    booster.load_model(path)
    return booster
