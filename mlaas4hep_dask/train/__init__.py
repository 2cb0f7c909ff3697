"""Train the user's model (Keras, PyTorch, XGBoost, scikit-learn) on the stream; write a run dir.

``model.py`` defines ``model(idim)`` (or ``model()``) returning the model; its framework is
detected from the object returned.  An optional ``fit(model, train, valid, params)`` in
model.py takes over the training loop; it gets the train and validation
:class:`~mlaas4hep_dask.BatchLoader` and returns the trained model.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlaas4hep_dask.config import Params, load_params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.io import open_dataset
from mlaas4hep_dask.preprocess import Preproc, load_preproc
from mlaas4hep_dask.specs import Specs, compute_specs
from mlaas4hep_dask.stream import BatchLoader

from ._common import Fitting, Task, collect, metrics, task_of
from ._model_file import ModelFileError, build_model, detect_framework, load_model_file

__all__ = [
    "FRAMEWORKS",
    "ModelFileError",
    "Run",
    "Task",
    "backend",
    "build_model",
    "detect_framework",
    "load_model_file",
    "train",
]

FRAMEWORKS = ("keras", "torch", "xgboost", "sklearn")


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training: its run directory, framework and metrics (``metrics.json``)."""

    path: Path
    framework: str
    metrics: Mapping[str, Any]


def backend(framework: str) -> ModuleType:
    """The module that trains, predicts with, saves and loads ``framework`` models."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}: one of {FRAMEWORKS}")
    return importlib.import_module(f".{framework}", __name__)


def _device(framework: str, device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    if framework == "torch":
        return str(backend("torch").pick_device(device))
    if device != "auto":
        return device
    if framework == "keras":
        import tensorflow as tf

        return "cuda" if tf.config.list_physical_devices("GPU") else "cpu"
    if framework == "xgboost":
        import xgboost

        gpu = bool(xgboost.build_info().get("USE_CUDA")) and Path("/dev/nvidia0").exists()
        return "cuda" if gpu else "cpu"
    return "cpu"


class _Progress:
    """A live bar with events/s while training (rich), or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>12} events/s"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, rate="")
            self.start = time.perf_counter()
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            done = self.bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _write_metrics(run_dir: Path, payload: Mapping[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=1) + "\n")
    rows = payload["epochs"]
    if rows:
        columns = list(rows[0])
        lines = [",".join(columns)] + [
            ",".join("" if r.get(c) is None else str(r.get(c)) for c in columns) for r in rows
        ]
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")


def train(
    files: str | Path | Sequence[str | Path],
    model: str | Path,
    params: Params | Mapping[str, Any] | str | Path | None = None,
    labels: str | Path | Sequence[float] | None = None,
    preproc: Preproc | Mapping[str, Any] | str | Path | None = None,
    specs: Specs | str | Path | None = None,
    out: str | Path | None = None,
    client: Any = None,
    device: str = "auto",
    progress: bool = False,
) -> Run:
    """Train ``model.py`` on ROOT inputs and write a run directory.

    Parameters
    ----------
    files
        ``files.txt``, comma list, or list of paths/URLs.
    model
        Path of ``model.py``.
    params, labels, preproc
        As for :class:`~mlaas4hep_dask.BatchLoader`.
    specs
        Specs to reuse (checked against the data); computed (and stored in the run dir) if ``None``.
    out
        Run directory (default ``runs/<model>-<time>``).
    client
        A ``distributed.Client`` or a scheduler name (see :func:`~mlaas4hep_dask.cluster.connect`).
    device
        ``"auto"`` (a GPU when there is one), ``"cpu"`` or ``"cuda"``.
    progress
        Show a live bar with events/s.

    Returns
    -------
    Run

    Examples
    --------
    >>> run = train("files.txt", "model.py", "params.json", labels="labels.txt")  # doctest: +SKIP
    >>> run.metrics["final"]["val_auc"]  # doctest: +SKIP
    0.83
    """
    from mlaas4hep_dask.bundle import write_bundle
    from mlaas4hep_dask.plots import write_plots

    p = load_params(params)
    recipe = load_preproc(preproc)
    module = load_model_file(model)
    run_dir = Path(out) if out else Path("runs") / f"{Path(model).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(files, p)  # the files' metadata are read once, for all that follows
    if specs is None:
        specs = compute_specs(dataset, p, recipe, client=client)
    elif not isinstance(specs, Specs):
        specs = Specs.load(specs)
    specs.save(run_dir / "specs.json")
    loaders = {
        s: BatchLoader(dataset, specs, p, recipe, labels, s, client) for s in ("train", "validation", "test")
    }
    train_loader = loaders["train"]
    if train_loader.labels is None and p.label_branch is None:
        raise ConfigError(
            "training needs targets: give labels.txt (--labels) or 'label_branch' in params.json"
        )
    label_dtype = train_loader.plan.extras[p.label_branch].dtype if p.label_branch else None
    task = task_of(train_loader.labels, label_dtype)
    framework, net = build_model(module, train_loader.idim)
    be = backend(framework)
    dev = _device(framework, device)

    epochs: list[dict[str, Any]] = []

    def predict(X: Any) -> Any:
        return be.predict(net, X, task)

    def on_epoch(epoch: int, loss: float, reported: Mapping[str, Any] | None = None) -> None:
        val = dict(reported) if reported else metrics(task, *_scores(loaders["validation"], predict))
        epochs.append(
            {
                "epoch": epoch,
                "loss": loss,
                "val_loss": val.get("loss"),
                f"val_{task.metric}": val.get(task.metric),
            }
        )

    bar = _Progress(len(train_loader) * (p.epochs if framework != "xgboost" else 1), progress)
    start = time.perf_counter()
    try:
        if callable(getattr(module, "fit", None)):
            net = module.fit(net, train_loader, loaders["validation"], p)
            on_epoch(p.epochs, float("nan"))
        else:
            how = Fitting(task, p, dev, on_epoch, bar.advance, valid=loaders["validation"])
            net = be.fit(net, train_loader, how)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    val_block, test_block = (collect(loaders[s], predict) for s in ("validation", "test"))
    final = {f"val_{k}": v for k, v in metrics(task, val_block.y, val_block.X, val_block.w).items()}
    final |= {f"test_{k}": v for k, v in metrics(task, test_block.y, test_block.X, test_block.w).items()}
    passes = 1 if framework in ("xgboost",) else p.epochs
    final |= {"events_trained": len(train_loader) * passes, "seconds": seconds, "device": dev}
    payload = {"framework": framework, "task": dataclasses.asdict(task), "epochs": epochs, "final": final}
    _write_metrics(run_dir, payload)

    model_file = be.save(net, run_dir, train_loader.idim)
    shutil.copyfile(module.__file__ or model, run_dir / "model.py")
    write_bundle(run_dir, framework, model_file, train_loader, task, p, recipe)
    write_plots(run_dir, epochs, task, val_block, test_block)
    for loader in loaders.values():
        loader.close()
    return Run(run_dir, framework, payload)


def _scores(loader: BatchLoader, predict: Any) -> tuple[Any, Any, Any]:
    block = collect(loader, predict)
    return block.y, block.X, block.w
