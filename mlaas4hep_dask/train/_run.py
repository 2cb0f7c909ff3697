"""A training, from the inputs to a run directory: :func:`train` and its :class:`Run`."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import OutputError
from mlaas4hep_dask.fit._common import backend, metrics
from mlaas4hep_dask.handle._preprocess import Preproc
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.train._checks import device_for
from mlaas4hep_dask.train._fitting import Fitted, fit
from mlaas4hep_dask.train._inputs import Inputs, resolve_inputs
from mlaas4hep_dask.train._outputs import class_names, save_scores, write_metrics
from mlaas4hep_dask.train._setup import Setup, record_inputs, set_up

__all__ = ["Run", "summary", "train", "write_run"]


_log = logging.getLogger("mlaas4hep_dask")


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training: its run directory, framework and metrics (``metrics.json``)."""

    path: Path
    framework: str
    metrics: Mapping[str, Any]


def train(
    files: str | Path | Sequence[str | Path] | None,
    model: str | Path | None,
    params: Params | Mapping[str, Any] | str | Path | None = None,
    labels: str | Path | Sequence[float] | None = None,
    preproc: Preproc | Mapping[str, Any] | str | Path | None = None,
    specs: Specs | str | Path | None = None,
    out: str | Path | None = None,
    client: Any = None,
    device: str = "auto",
    progress: bool = False,
    log_every: float | None = None,
    trainers: int | str | None = None,
    resume: str | Path | None = None,
    on_workers: bool | None = None,
    store: Any = None,
) -> Run:
    """Train ``model.py`` on ROOT inputs and write a run directory.

    Parameters
    ----------
    files
        ``files.txt``, comma list, or list of paths/URLs (``None`` with ``resume``).
    model
        Path of ``model.py`` (``None`` with ``resume``).
    params, labels, preproc
        As for :class:`~mlaas4hep_dask.BatchLoader`.
    specs
        Specs to reuse (checked against the data); computed (and stored in the run dir) if ``None``.
    out
        Run directory (default ``runs/<model>-<time>``).
    client
        A ``distributed.Client`` or a scheduler name (see :func:`~mlaas4hep_dask.scale.connect`).
    device
        ``"auto"`` (a GPU when there is one), ``"cpu"`` or ``"cuda"``.
    progress
        Show a live bar with events/s.
    log_every
        Instead of a bar, log the phases and a progress line (events, events/s, ETA) every
        ``log_every`` seconds to the ``mlaas4hep_dask`` logger (for batch jobs and the service).
    trainers
        Data-parallel trainers on the Dask workers (default: ``params.trainers``); see
        :class:`~mlaas4hep_dask.config.Params`.
    resume
        A run directory whose training stopped: continue from its last checkpoint with the
        inputs recorded in its ``run.json`` (``files``, ``model`` and the rest are not given).
    on_workers
        Train on the workers even with one trainer (default: when ``trainers > 1``).
    store
        A :class:`~mlaas4hep_dask.prepared.Store` (or its folder): train from the prepared
        dataset of these inputs, prepared first if the store does not have it yet (see
        :func:`~mlaas4hep_dask.prepared.prepare`).  Same batches, same metrics.

    Each step is a function of its own: :func:`._inputs.resolve_inputs`, :func:`._setup.set_up`,
    :func:`._setup.record_inputs`, :func:`._fitting.fit`, :func:`summary` and :func:`write_run`.

    Returns
    -------
    Run

    Examples
    --------
    >>> run = train("files.txt", "model.py", "params.json", labels="labels.txt")  # doctest: +SKIP
    >>> run.metrics["final"]["val_auc"]  # doctest: +SKIP
    0.83
    """
    inputs = resolve_inputs(
        files, model, params, labels, preproc, specs, out, device, trainers, resume, store
    )
    setup = set_up(inputs, client, on_workers)
    record_inputs(inputs, setup)
    where = inputs.device if setup.parallel else device_for(setup.framework, inputs.device)
    fitted, epochs = fit(inputs, setup, where, progress, log_every)
    payload = summary(inputs, setup, fitted, epochs.rows)
    write_run(inputs, setup, fitted, payload)
    for loader in setup.loaders.values():
        loader.close()
    _log.info("run directory written: %s", inputs.run_dir)
    return Run(inputs.run_dir, setup.framework, payload)


def summary(inputs: Inputs, setup: Setup, fitted: Fitted, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of ``metrics.json``: the epochs' rows and the final model's metrics."""
    task, framework = setup.task, setup.framework
    val, test = fitted.validation, fitted.test
    final = {f"val_{k}": v for k, v in metrics(task, val.y, val.X, val.w).items()}
    final |= {f"test_{k}": v for k, v in metrics(task, test.y, test.X, test.w).items()}
    done = inputs.start.epoch if inputs.start else 0
    passes = 1 if framework == "xgboost" else inputs.params.epochs - done
    final |= {
        "events_trained": len(setup.train) * passes,
        "seconds": fitted.seconds,
        "device": fitted.device,
        "trainers": fitted.trainers,
        "data_wait": [round(w, 4) for w in fitted.data_wait] if framework != "xgboost" else None,
    }
    if fitted.step_times is not None:
        final["step_times"] = fitted.step_times
    return {"framework": framework, "task": dataclasses.asdict(task), "epochs": rows, "final": final}


def write_run(inputs: Inputs, setup: Setup, fitted: Fitted, payload: dict[str, Any]) -> None:
    """Write the model, ONNX, plots, scores, ``metrics.json`` and, last, ``bundle.json``: a run
    directory that has one is complete.

    Raises
    ------
    OutputError
        The run directory cannot be written; nothing half-written is left that looks finished.
    """
    from mlaas4hep_dask.bundle._bundle import write_bundle
    from mlaas4hep_dask.bundle._onnx import export_onnx
    from mlaas4hep_dask.bundle._plots import write_plots

    run_dir, framework, task, idim = inputs.run_dir, setup.framework, setup.task, setup.train.idim
    before = set(run_dir.iterdir())
    try:
        model_file = backend(framework).save(fitted.net, run_dir, idim)
        onnx = export_onnx(framework, fitted.net, task, idim, run_dir)
        xlabel = "boosting round" if framework == "xgboost" else "epoch"
        names = class_names(setup.train)
        epochs = payload["epochs"]
        write_plots(run_dir, epochs, task, fitted.validation, fitted.test, fitted.train_sample, names, xlabel)
        save_scores(run_dir / "test_scores.npz", fitted.test)
        write_metrics(run_dir, payload)
        write_bundle(run_dir, framework, model_file, setup.train, task, inputs.params, inputs.recipe, onnx)
    except OSError as err:
        for path in set(run_dir.iterdir()) - before:  # nothing half-written that looks finished
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        kept = (
            " (its last checkpoint is kept: --resume continues)"
            if (run_dir / "checkpoint.json").exists()
            else ""
        )
        raise OutputError(
            f"cannot write the run directory {str(run_dir)!r}: {err.strerror or err}{kept}"
        ) from None
