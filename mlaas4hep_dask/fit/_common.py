"""What every training backend shares: the task, the metrics, evaluation over a loader."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._rows import Block

__all__ = [
    "FRAMEWORKS",
    "EpochClock",
    "Fitting",
    "StepTimes",
    "Task",
    "Waited",
    "backend",
    "collect",
    "learning_rate",
    "metrics",
    "optional_import",
    "task_of",
]


@dataclasses.dataclass(frozen=True)
class Task:
    """What is learned: ``binary`` (labels 0/1), ``multiclass`` (0..n-1) or ``regression``."""

    kind: str
    n_classes: int = 0

    @property
    def metric(self) -> str:
        """The headline validation metric."""
        return {"binary": "auc", "multiclass": "accuracy", "regression": "mse"}[self.kind]


@dataclasses.dataclass(frozen=True)
class Fitting:
    """How a backend trains: the task, params, device, and the callbacks it reports to.

    ``on_epoch(epoch, train_loss, reported=None)`` after each epoch (``reported``: validation
    metrics the framework computed itself); ``on_batch(n)`` after ``n`` events;
    ``checkpoint(epoch, state)`` after each epoch with the backend's state (bytes) when the
    backend can resume, which it does from ``resume`` (the state of the last finished epoch).
    ``average(module)`` (data-parallel ranks) returns what averages the module's gradients
    over the ranks after each backward pass; ``trainers`` is the number of workers XGBoost
    trains on (``None``: all); ``times`` collects where the steps' time goes.
    """

    task: Task
    params: Params
    device: str
    on_epoch: Callable[..., None]
    on_batch: Callable[[int], None]
    valid: BatchLoader | None = None
    checkpoint: Callable[[int, bytes], None] | None = None
    resume: bytes | None = None
    average: Callable[[Any], Callable[[], None]] | None = None
    trainers: int | str | None = None
    times: StepTimes | None = None


@dataclasses.dataclass
class StepTimes:
    """Seconds of a trainer's optimizer steps, phase by phase (the wait for data is :class:`Waited`'s).

    ``batch``: the batch made a tensor on the device; ``compute``: forward and backward;
    ``all_reduce``: the gradients averaged over the ranks; ``optimizer``: the update.  On a GPU
    the phases are timed to their end only with ``synchronize`` (the benchmark's setting):
    else a phase's time is that of launching its kernels.
    """

    steps: int = 0
    batch: float = 0.0
    compute: float = 0.0
    all_reduce: float = 0.0
    optimizer: float = 0.0
    synchronize: bool = False

    def as_dict(self, waited: float, seconds: float) -> dict[str, float]:
        """Each phase's share of ``seconds`` of training, ``data`` the wait of ``waited`` seconds."""
        phases = {"data": waited, "batch": self.batch, "compute": self.compute}
        phases |= {"all_reduce": self.all_reduce, "optimizer": self.optimizer}
        shares = {k: round(v / max(seconds, 1e-9), 4) for k, v in phases.items()}
        return shares | {"steps": self.steps, "seconds": round(seconds, 4)}


def learning_rate(params: Params, world: int, epochs_done: float) -> float:
    """The step size after ``epochs_done`` (fractional) epochs of ``world`` data-parallel trainers.

    With ``batch_size_per_trainer``, ``learning_rate`` scaled by ``lr_scaling`` for a step's
    ``world`` times larger batch, reached linearly from ``learning_rate`` over the first
    ``warmup_epochs``; else ``learning_rate`` (the path of one trainer).

    Examples
    --------
    >>> p = Params(learning_rate=0.01, batch_size_per_trainer=256, warmup_epochs=2)
    >>> [round(learning_rate(p, 4, e), 3) for e in (0, 1, 2, 5)]
    [0.01, 0.025, 0.04, 0.04]
    """
    base = params.learning_rate
    if params.batch_size_per_trainer is None:
        return base
    factor = {"linear": float(world), "sqrt": math.sqrt(world), "none": 1.0}[params.lr_scaling]
    if params.warmup_epochs > 0 and epochs_done < params.warmup_epochs:
        return base + base * (factor - 1.0) * epochs_done / params.warmup_epochs
    return base * factor


class Waited:
    """A loader whose batches and chunks record the seconds the trainer waits for them.

    Everything else is the loader's (``len``, ``epoch``, ``counts``, ...).
    """

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader
        self.waited = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.loader.epoch = value

    def __iter__(self) -> Any:
        return self._timed(iter(self.loader))

    def iter_chunks(self, shuffle: bool | None = None, ahead: bool = True) -> Any:
        return self._timed(self.loader.iter_chunks(shuffle, ahead))

    def _timed(self, it: Any) -> Any:
        while True:
            start = time.perf_counter()
            batch = next(it, None)
            self.waited += time.perf_counter() - start
            if batch is None:
                return
            yield batch


class EpochClock:
    """Seconds of an epoch's training (validation left out) and the fraction spent waiting for data."""

    def __init__(self, waited: Waited) -> None:
        self.waited = waited
        self.restart()

    def restart(self) -> None:
        """An epoch's training starts now."""
        self.start, self.wait0 = time.perf_counter(), self.waited.waited

    def lap(self) -> tuple[float, float]:
        """``(seconds, data-wait fraction)`` since :meth:`restart`."""
        seconds = time.perf_counter() - self.start
        return seconds, (self.waited.waited - self.wait0) / max(seconds, 1e-9)


def optional_import(name: str, install: str) -> Any:
    """Import a framework that only some models need, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:  # pragma: no cover - the ml extra installs all of them
        raise ModuleNotFoundError(f"{name} is needed for this model: {install}") from err


def task_of(labels: list[float] | None, label_dtype: str | None) -> Task:
    """The task from the per-file labels, or from the dtype of the label branch."""
    if labels is not None:
        values = np.asarray(labels)
        if np.all(np.mod(values, 1) == 0) and values.min() >= 0:
            n = int(values.max()) + 1
            return Task("binary", 2) if n <= 2 else Task("multiclass", n)
        return Task("regression")
    if label_dtype == "bool":
        return Task("binary", 2)
    return Task("regression")


OVERTRAINING_SAMPLE = 200_000  # training events scored for the train-vs-test plot (scores.png)


def collect(
    loader: BatchLoader, predict: Callable[[np.ndarray], np.ndarray], limit: int | None = None
) -> Block:
    """Scores of every event of a loader's split (about the first ``limit``): a Block whose X holds them.

    Chunks mix the files in proportion, so the first ``limit`` events are a fair sample.
    """
    parts, seen = [], 0
    for chunk in loader.iter_chunks(shuffle=False, ahead=False):
        parts.append(Block(predict(chunk.X), chunk.y, chunk.w))
        seen += len(chunk)
        if limit is not None and seen >= limit:
            break
    if not parts:
        return Block(np.zeros((0,), np.float32), np.zeros(0), None)
    return Block.concatenate(parts)


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, 1e-7, 1 - 1e-7)


def metrics(
    task: Task, y: np.ndarray | None, scores: np.ndarray, w: np.ndarray | None = None
) -> dict[str, Any]:
    """Loss and the task's metric: log loss and ROC AUC, cross-entropy and accuracy, or MSE."""
    if y is None or len(y) == 0:
        return {}
    if task.kind == "binary":
        from sklearn.metrics import roc_auc_score

        p = _clip(scores.reshape(len(y), -1)[:, -1].astype(np.float64))
        loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        out: dict[str, Any] = {"loss": float(np.average(loss, weights=w))}
        out["auc"] = float(roc_auc_score(y, p, sample_weight=w)) if len(np.unique(y)) == 2 else None
        return out
    if task.kind == "multiclass":
        p = _clip(scores.reshape(len(y), -1).astype(np.float64))
        loss = -np.log(p[np.arange(len(y)), y.astype(np.int64)])
        hit = (p.argmax(axis=1) == y).astype(np.float64)
        return {"loss": float(np.average(loss, weights=w)), "accuracy": float(np.average(hit, weights=w))}
    err = (scores.reshape(len(y)).astype(np.float64) - y) ** 2
    return {"loss": float(np.average(err, weights=w)), "mse": float(np.average(err, weights=w))}


#: The frameworks a model.py may use, each a module of this package behind one interface.
FRAMEWORKS = ("keras", "torch", "xgboost", "sklearn")


def backend(framework: str) -> ModuleType:
    """The module that trains, predicts with, saves and loads ``framework`` models."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}: one of {FRAMEWORKS}")
    return importlib.import_module(f"mlaas4hep_dask.fit.{framework}")
