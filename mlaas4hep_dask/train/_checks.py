"""What is checked before a training starts: classes, the model's outputs, where it can train."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlaas4hep_dask.batches._executors import Distributed
from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.fit._common import (
    Task,
    backend,
)
from mlaas4hep_dask.fit._model_file import ModelFileError

__all__ = ["check_classes", "check_outputs", "device_for", "gpu_trainers", "on_workers_for"]


def device_for(framework: str, device: str) -> str:
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


def check_classes(labels: Sequence[float] | None, task: Task) -> None:
    """Refuse a classification whose files all carry one label: there is nothing to learn."""
    if labels is not None and task.kind != "regression" and len(set(labels)) < 2:
        raise ConfigError(
            f"every input file has the label {labels[0]:g}: a classifier needs events of at least "
            "two classes (check labels.txt)"
        )


def check_outputs(framework: str, net: Any, task: Task, idim: int, path: Path) -> None:
    """Refuse a PyTorch or Keras model whose output width does not fit the task, naming model.py."""
    if framework == "torch":
        import torch

        training = net.training
        try:
            net.eval()  # no batch-norm statistics move for this probe
            with torch.no_grad():
                width = int(net(torch.zeros((2, idim))).reshape(2, -1).shape[1])
        except Exception as err:
            raise ModelFileError(
                f"model file {str(path)!r}: the model fails on a batch of {idim} features: "
                f"{type(err).__name__}: {err}"
            ) from None
        finally:
            net.train(training)
    elif framework == "keras":
        width = int(net.output_shape[-1]) if getattr(net, "output_shape", None) else 1
    else:
        return
    wanted = task.n_classes if task.kind == "multiclass" else 1
    if width != wanted:
        what = (
            f"{task.n_classes} classes" if task.kind == "multiclass" else f"a {task.kind} task (one output)"
        )
        raise ModelFileError(
            f"model file {str(path)!r}: model() returns {width} outputs per event, but the labels "
            f"make {what}: the last layer must have {wanted}"
        )


def on_workers_for(
    framework: str,
    trainers: int | str | None,
    on_workers: bool | None,
    module: ModuleType,
    loader: BatchLoader,
) -> bool:
    """Whether the model trains on the workers; refuse what cannot be data-parallel, in one line."""
    many = trainers == "all" or (trainers is not None and int(trainers) > 1)
    if framework == "xgboost":
        return False  # xgboost.dask trains on the workers already (trainers = its workers)
    if not many and not on_workers:
        return False
    if framework == "sklearn":
        raise ConfigError(
            f"--trainers {trainers}: a scikit-learn model trains in one process (partial_fit is "
            "sequential); use --trainers 1"
        )
    if callable(getattr(module, "fit", None)):
        raise ConfigError(
            f"--trainers {trainers}: model.py's own fit() trains in one process; use --trainers 1"
        )
    if not isinstance(loader._executor, Distributed):
        raise ConfigError(
            f"--trainers {trainers}: data-parallel trainers run on the workers of a Dask cluster "
            "(--cluster local, htcondor, kubernetes or tcp://...), not on threads"
        )
    return True


def gpu_trainers(framework: str, inputs: Any, loader: BatchLoader) -> bool:
    """Whether a training that names no trainers gets one per GPU worker (the default where the
    cluster's workers offer a ``GPU`` resource and the model can be data-parallel); elsewhere
    the one trainer in this process, the fastest on a laptop's few cores."""
    if framework not in ("torch", "keras") or inputs.device == "cpu":
        return False
    if callable(getattr(inputs.module, "fit", None)) or not isinstance(loader._executor, Distributed):
        return False
    workers = loader._executor.client.scheduler_info()["workers"].values()
    return any(w.get("resources", {}).get("GPU") for w in workers)
