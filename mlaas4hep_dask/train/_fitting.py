"""Fitting a set-up training: here (the framework's loop, or model.py's own ``fit``) or by
data-parallel trainers on the workers, the epochs recorded as they end; then the validation,
test and overtraining scores of the final model."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from mlaas4hep_dask.fit._checkpoint import write_checkpoint
from mlaas4hep_dask.fit._common import (
    OVERTRAINING_SAMPLE,
    EpochClock,
    Fitting,
    StepTimes,
    Waited,
    backend,
    collect,
    metrics,
)
from mlaas4hep_dask.fit._parallel import Reports, train_on_workers
from mlaas4hep_dask.train._inputs import Inputs
from mlaas4hep_dask.train._progress import Progress
from mlaas4hep_dask.train._setup import Setup

__all__ = ["Epochs", "Fitted", "fit"]

_log = logging.getLogger("mlaas4hep_dask")


@dataclasses.dataclass
class Fitted:
    """A trained model and what the run directory reports of it."""

    net: Any
    validation: Any  # scores of the final model on each split (a Block)
    test: Any
    train_sample: Any  # of the train split, for the overtraining test (classification)
    seconds: float
    device: str
    data_wait: list[float]
    trainers: int
    step_times: list[dict[str, Any]] | None = None  # per trainer: where its steps' time went


class Epochs:
    """The rows of the epochs as they end: logged, shown on the progress bar, checkpointed.

    ``net`` is the model being trained (the validation split is scored with it when the
    framework does not report its own metrics).
    """

    def __init__(self, inputs: Inputs, setup: Setup, bar: Progress, clock: EpochClock) -> None:
        self.inputs, self.setup, self.bar, self.clock = inputs, setup, bar, clock
        self.rows: list[dict[str, Any]] = list(inputs.start.rows) if inputs.start else []
        self.scored: dict[str, Any] = {}  # the validation scores after the last epoch (the final model's)
        self.net = setup.net
        self.backend = backend(setup.framework)

    def predict(self, X: Any) -> Any:
        """Scores of the model as it is now."""
        return self.backend.predict(self.net, X, self.setup.task)

    def add(self, row: dict[str, Any]) -> None:
        """One epoch's (or boosting round's) row of ``metrics.json``."""
        self.rows.append(row)
        if self.setup.framework == "xgboost":
            return  # a row per boosting round: metrics.csv has them, the log does not need them
        shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "data_wait")
        _log.info("epoch %d: %s", row["epoch"], shown)
        self.bar.epoch_done(row)

    def ended(self, epoch: int, loss: float, reported: Mapping[str, Any] | None = None) -> None:
        """An epoch ended here: its validation metrics (``reported`` by the framework, or scored now)."""
        task = self.setup.task
        seconds, wait = self.clock.lap()
        if reported:
            val = dict(reported)
        else:
            block = self.scored["validation"] = collect(self.setup.loaders["validation"], self.predict)
            val = metrics(task, block.y, block.X, block.w)
        row = {
            "epoch": epoch,
            "loss": loss,
            "val_loss": val.get("loss"),
            f"val_{task.metric}": val.get(task.metric),
        }
        if self.setup.framework != "xgboost":
            row |= {"seconds": round(seconds, 4), "data_wait": round(wait, 4)}
        self.add(row)
        self.clock.restart()

    def checkpoint(self, epoch: int, state: bytes) -> None:
        """Keep the model after ``epoch`` (what ``--resume`` goes on from)."""
        write_checkpoint(self.inputs.run_dir, epoch, state, self.rows)


def _on_workers(inputs: Inputs, setup: Setup, epochs: Epochs, bar: Progress) -> Fitted:
    reports = Reports(bar.advance, epochs.add, epochs.checkpoint)
    state = inputs.start.state if inputs.start else None
    result = train_on_workers(
        setup.train._executor.client, setup.trainers, setup.loaders, inputs.model_path,
        setup.task, inputs.device, state, reports,
    )  # fmt: skip
    epochs.backend.restore(result["weights"], setup.net)
    return Fitted(
        setup.net, result["validation"], result["test"], result["train_sample"],
        result["seconds"], result["device"], result["data_wait"], result["trainers"],
        result.get("step_times"),
    )  # fmt: skip


def _here(inputs: Inputs, setup: Setup, epochs: Epochs, bar: Progress, device: str, waited: Waited) -> Fitted:
    p, module = inputs.params, inputs.module
    start = time.perf_counter()
    times = StepTimes() if setup.framework == "torch" else None
    if callable(getattr(module, "fit", None)):
        epochs.net = module.fit(epochs.net, setup.train, setup.loaders["validation"], p)
        epochs.ended(p.epochs, float("nan"))
    else:
        resumed = inputs.start.state if inputs.start else None
        how = Fitting(
            setup.task, p, device, epochs.ended, bar.advance, setup.loaders["validation"],
            epochs.checkpoint, resumed, trainers=inputs.trainers, times=times,
        )  # fmt: skip
        epochs.net = epochs.backend.fit(epochs.net, waited, how)
    seconds = time.perf_counter() - start
    steps = None if times is None or not times.steps else [times.as_dict(waited.waited, seconds)]
    wait = [waited.waited / max(seconds, 1e-9)]
    return Fitted(epochs.net, None, None, None, seconds, device, wait, 1, steps)


def _scored_here(setup: Setup, epochs: Epochs, fitted: Fitted) -> Fitted:
    if "validation" not in epochs.scored:  # no epoch reported its own (XGBoost): score it now
        epochs.scored["validation"] = collect(setup.loaders["validation"], epochs.predict)
    test = collect(setup.loaders["test"], epochs.predict)
    classes = setup.task.kind != "regression"
    sample = collect(setup.train, epochs.predict, OVERTRAINING_SAMPLE) if classes else None
    return dataclasses.replace(fitted, validation=epochs.scored["validation"], test=test, train_sample=sample)


def fit(
    inputs: Inputs, setup: Setup, device: str, progress: bool, log_every: float | None
) -> tuple[Fitted, Epochs]:
    """Train, with a progress bar (or log lines every ``log_every`` seconds); then score the
    validation, test and overtraining samples with the final model."""
    framework, p = setup.framework, inputs.params
    done = inputs.start.epoch if inputs.start else 0
    total = len(setup.train) * (p.epochs - done if framework != "xgboost" else 1)
    where = f"{setup.trainers} trainers on the workers" if setup.parallel else device
    _log.info("training a %s model on %s: %d events", framework, where, total)
    rounds = 1 if framework == "xgboost" else p.epochs
    bar = Progress(total, progress, log_every, rounds, min(done + 1, rounds))
    waited = Waited(setup.train)
    epochs = Epochs(inputs, setup, bar, EpochClock(waited))
    try:
        if setup.parallel:
            fitted = _on_workers(inputs, setup, epochs, bar)
        else:
            fitted = _here(inputs, setup, epochs, bar, device, waited)
    finally:
        bar.close()
    _log.info("trained in %.1f s; evaluating on the validation and test events", fitted.seconds)
    return (fitted if setup.parallel else _scored_here(setup, epochs, fitted)), epochs
