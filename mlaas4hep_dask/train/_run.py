"""A training, from the inputs to a run directory: :func:`train` and its :class:`Run`."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.config._params import Params, load_params
from mlaas4hep_dask.errors import ConfigError, OutputError
from mlaas4hep_dask.fit._common import (
    OVERTRAINING_SAMPLE,
    EpochClock,
    Fitting,
    Waited,
    backend,
    collect,
    metrics,
    task_of,
)
from mlaas4hep_dask.fit._model_file import build_model, load_model_file
from mlaas4hep_dask.fit._parallel import Reports, train_on_workers
from mlaas4hep_dask.handle._preprocess import Preproc, load_preproc
from mlaas4hep_dask.handle._specs import Specs, compute_specs
from mlaas4hep_dask.read._dataset import open_dataset
from mlaas4hep_dask.train._checks import check_classes, check_outputs, device_for, on_workers_for
from mlaas4hep_dask.train._outputs import class_names, save_scores, write_metrics
from mlaas4hep_dask.train._progress import Progress

__all__ = ["Run", "train"]


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
        A ``distributed.Client`` or a scheduler name (see :func:`~mlaas4hep_dask.scale._cluster.connect`).
    device
        ``"auto"`` (a GPU when there is one), ``"cpu"`` or ``"cuda"``.
    progress
        Show a live bar with events/s.
    log_every
        Instead of a bar, log the phases and a progress line (events, events/s, ETA) every
        ``log_every`` seconds to the ``mlaas4hep_dask`` logger (for batch jobs and the service).
    trainers
        Data-parallel trainers on the Dask workers (default: ``params.trainers``); see
        :class:`~mlaas4hep_dask.config._params.Params`.
    resume
        A run directory whose training stopped: continue from its last checkpoint with the
        inputs recorded in its ``run.json`` (``files``, ``model`` and the rest are not given).
    on_workers
        Train on the workers even with one trainer (default: when ``trainers > 1``).

    Returns
    -------
    Run

    Examples
    --------
    >>> run = train("files.txt", "model.py", "params.json", labels="labels.txt")  # doctest: +SKIP
    >>> run.metrics["final"]["val_auc"]  # doctest: +SKIP
    0.83
    """
    from mlaas4hep_dask.bundle._bundle import write_bundle
    from mlaas4hep_dask.bundle._onnx import export_onnx
    from mlaas4hep_dask.bundle._plots import write_plots
    from mlaas4hep_dask.fit._checkpoint import read_checkpoint, read_record, write_checkpoint, write_record

    start_point = None
    if resume is not None:
        if (
            files is not None
            or model is not None
            or params is not None
            or labels is not None
            or preproc is not None
        ):
            raise ConfigError("--resume takes the inputs recorded in the run directory: give no other inputs")
        run_dir = Path(resume)
        record = read_record(run_dir)
        start_point = read_checkpoint(run_dir)
        files, model, params = record.files, run_dir / "model.py", record.params
        labels, preproc, specs, device = record.labels, record.preproc, run_dir / "specs.json", record.device
        trainers = record.trainers if trainers is None else trainers
        _log.info("resuming %s after epoch %d", run_dir, start_point.epoch)
    if files is None or model is None:
        raise ConfigError("training needs --files and --model (or --resume RUN_DIR)")
    p = load_params(params)
    recipe = load_preproc(preproc)
    module = load_model_file(model)
    if resume is None:
        run_dir = Path(out) if out else Path("runs") / f"{Path(model).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir.mkdir(parents=True, exist_ok=True)
    n_trainers = p.trainers if trainers is None else trainers
    dataset = open_dataset(files, p)  # the files' metadata are read once, for all that follows
    _log.info("opened %d input files (%d entries)", len(dataset.files), sum(f.entries for f in dataset.files))
    if specs is None:
        start = time.perf_counter()
        specs = compute_specs(dataset, p, recipe, client=client)
        seconds = time.perf_counter() - start
        _log.info(
            "specs: %d events read in %.1f s (%.0f events/s), input dimension %d",
            specs.nevents, seconds, specs.nevents / max(seconds, 1e-9), specs.idim,
        )  # fmt: skip
    elif not isinstance(specs, Specs):
        specs = Specs.load(specs)
    train_loader = BatchLoader(dataset, specs, p, recipe, labels, "train", client)
    specs = train_loader.specs  # the original tool's specs come back in the tree's order
    specs.save(run_dir / "specs.json")
    loaders = {"train": train_loader} | {
        s: BatchLoader(dataset, specs, p, recipe, labels, s, client) for s in ("validation", "test")
    }
    if train_loader.labels is None and p.label_branch is None:
        raise ConfigError(
            "training needs targets: give labels.txt (--labels) or 'label_branch' in params.json"
        )
    label_dtype = train_loader.plan.extras[p.label_branch].dtype if p.label_branch else None
    task = task_of(train_loader.labels, label_dtype)
    check_classes(train_loader.labels, task)
    framework, net = build_model(module, train_loader.idim, p.seed)
    check_outputs(framework, net, task, train_loader.idim, Path(module.__file__ or model))
    be = backend(framework)
    parallel = on_workers_for(framework, n_trainers, on_workers, module, train_loader)
    if start_point is not None and framework not in ("torch", "keras"):
        raise ConfigError(f"--resume: {framework} runs are not checkpointed; train again")
    if resume is None:
        shutil.copyfile(module.__file__ or model, run_dir / "model.py")
        paths = [f.path for f in dataset.files]
        write_record(run_dir, paths, train_loader.labels, p, recipe, n_trainers, device)
    dev = device if parallel else device_for(framework, device)

    epochs: list[dict[str, Any]] = list(start_point.rows) if start_point else []

    def predict(X: Any) -> Any:
        return be.predict(net, X, task)

    def add_row(row: dict[str, Any]) -> None:
        epochs.append(row)
        if framework == "xgboost":
            return  # a row per boosting round: metrics.csv has them, the log does not need them
        _log.info(
            "epoch %d: %s",
            row["epoch"],
            ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "data_wait"),
        )
        bar.epoch_done(row)

    scored: dict[str, Any] = {}  # the validation scores after the last epoch (the final model's)

    def on_epoch(epoch: int, loss: float, reported: Mapping[str, Any] | None = None) -> None:
        seconds, wait = clock.lap()
        if reported:
            val = dict(reported)
        else:
            block = scored["validation"] = collect(loaders["validation"], predict)
            val = metrics(task, block.y, block.X, block.w)
        row = {
            "epoch": epoch,
            "loss": loss,
            "val_loss": val.get("loss"),
            f"val_{task.metric}": val.get(task.metric),
        }
        if framework != "xgboost":
            row |= {"seconds": round(seconds, 4), "data_wait": round(wait, 4)}
        add_row(row)
        clock.restart()

    def checkpoint(epoch: int, state: bytes) -> None:
        write_checkpoint(run_dir, epoch, state, epochs)

    done = start_point.epoch if start_point else 0
    total = len(train_loader) * (p.epochs - done if framework != "xgboost" else 1)
    where = f"{n_trainers} trainers on the workers" if parallel else dev
    _log.info("training a %s model on %s: %d events", framework, where, total)
    rounds = 1 if framework == "xgboost" else p.epochs
    bar = Progress(total, progress, log_every, rounds, min(done + 1, rounds))
    start = time.perf_counter()
    waited = Waited(train_loader)
    clock = EpochClock(waited)
    trained_by = 1
    try:
        if parallel:
            reports = Reports(bar.advance, add_row, checkpoint)
            state = start_point.state if start_point else None
            result = train_on_workers(
                train_loader._executor.client, n_trainers or 1, loaders, Path(module.__file__ or model),
                task, device, state, reports,
            )  # fmt: skip
            be.restore(result["weights"], net)
            val_block, test_block, train_sample = result["validation"], result["test"], result["train_sample"]
            seconds, dev, wait, trained_by = (
                result["seconds"],
                result["device"],
                result["data_wait"],
                result["trainers"],
            )
        else:
            if callable(getattr(module, "fit", None)):
                net = module.fit(net, train_loader, loaders["validation"], p)
                on_epoch(p.epochs, float("nan"))
            else:
                resumed = start_point.state if start_point else None
                how = Fitting(
                    task,
                    p,
                    dev,
                    on_epoch,
                    bar.advance,
                    loaders["validation"],
                    checkpoint,
                    resumed,
                    trainers=n_trainers,
                )
                net = be.fit(net, waited, how)
            seconds = time.perf_counter() - start
            wait = [waited.waited / max(seconds, 1e-9)]
    finally:
        bar.close()

    _log.info("trained in %.1f s; evaluating on the validation and test events", seconds)
    if not parallel:
        if "validation" not in scored:  # no epoch reported its own (XGBoost): score it now
            scored["validation"] = collect(loaders["validation"], predict)
        val_block, test_block = scored["validation"], collect(loaders["test"], predict)
        classes = task.kind != "regression"
        train_sample = collect(train_loader, predict, OVERTRAINING_SAMPLE) if classes else None
    final = {f"val_{k}": v for k, v in metrics(task, val_block.y, val_block.X, val_block.w).items()}
    final |= {f"test_{k}": v for k, v in metrics(task, test_block.y, test_block.X, test_block.w).items()}
    passes = 1 if framework in ("xgboost",) else p.epochs - done
    final |= {
        "events_trained": len(train_loader) * passes,
        "seconds": seconds,
        "device": dev,
        "trainers": trained_by,
        "data_wait": [round(w, 4) for w in wait] if framework != "xgboost" else None,
    }
    payload = {"framework": framework, "task": dataclasses.asdict(task), "epochs": epochs, "final": final}
    before = set(run_dir.iterdir())
    try:  # bundle.json last: a run directory that has one is complete
        model_file = be.save(net, run_dir, train_loader.idim)
        onnx = export_onnx(framework, net, task, train_loader.idim, run_dir)
        xlabel = "boosting round" if framework == "xgboost" else "epoch"
        names = class_names(train_loader)
        write_plots(run_dir, epochs, task, val_block, test_block, train_sample, names, xlabel)
        save_scores(run_dir / "test_scores.npz", test_block)
        write_metrics(run_dir, payload)
        write_bundle(run_dir, framework, model_file, train_loader, task, p, recipe, onnx)
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
    for loader in loaders.values():
        loader.close()
    _log.info("run directory written: %s", run_dir)
    return Run(run_dir, framework, payload)
