"""A training set up from its inputs: the dataset opened once, the specs, the loaders of the
three splits, the task and the model, and where it trains."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from typing import Any

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.fit._checkpoint import write_record
from mlaas4hep_dask.fit._common import Task, task_of
from mlaas4hep_dask.fit._model_file import build_model
from mlaas4hep_dask.handle._specs import Specs, compute_specs
from mlaas4hep_dask.prepared._prepare import prepare
from mlaas4hep_dask.read._dataset import Dataset, open_dataset
from mlaas4hep_dask.train._checks import check_classes, check_outputs, gpu_trainers, on_workers_for
from mlaas4hep_dask.train._inputs import Inputs

__all__ = ["Setup", "record_inputs", "set_up"]

_log = logging.getLogger("mlaas4hep_dask")


@dataclasses.dataclass
class Setup:
    """Everything a training needs once its inputs are resolved."""

    dataset: Dataset
    loaders: dict[str, BatchLoader]
    task: Task
    framework: str
    net: Any
    parallel: bool  # data-parallel trainers on the workers
    trainers: int | str = 1  # how many, when parallel

    @property
    def train(self) -> BatchLoader:
        """The train split's loader."""
        return self.loaders["train"]


def _specs(inputs: Inputs, dataset: Dataset, client: Any) -> Specs:
    if inputs.specs is None:
        start = time.perf_counter()
        specs = compute_specs(dataset, inputs.params, inputs.recipe, client=client)
        seconds = time.perf_counter() - start
        _log.info(
            "specs: %d events read in %.1f s (%.0f events/s), input dimension %d",
            specs.nevents, seconds, specs.nevents / max(seconds, 1e-9), specs.idim,
        )  # fmt: skip
        return specs
    return inputs.specs if isinstance(inputs.specs, Specs) else Specs.load(inputs.specs)


def set_up(inputs: Inputs, client: Any, on_workers: bool | None) -> Setup:
    """Open the dataset (its files' metadata are read here, once, for all that follows), compute
    or check the specs (saved in the run directory), make the loaders and the model.

    Raises
    ------
    ConfigError
        No targets, a single class, model outputs that do not fit the task, or a resume of a
        framework that keeps no checkpoints.
    """
    p = inputs.params
    dataset = open_dataset(inputs.files, p)
    _log.info("opened %d input files (%d entries)", len(dataset.files), sum(f.entries for f in dataset.files))
    ready = None
    if inputs.store is not None:  # the prepared dataset (prepared now if the store lacks it)
        ready = prepare(dataset, inputs.store, p, inputs.labels, inputs.recipe, inputs.specs, client)
        _log.info("training from prepared dataset %s (%d shards)", ready.key[:12], len(ready.shards))
    specs = ready.specs if ready is not None else _specs(inputs, dataset, client)
    train_loader = BatchLoader(dataset, specs, p, inputs.recipe, inputs.labels, "train", client, store=ready)
    specs = train_loader.specs  # the original tool's specs come back in the tree's order
    specs.save(inputs.run_dir / "specs.json")
    loaders = {"train": train_loader} | {
        s: BatchLoader(dataset, specs, p, inputs.recipe, inputs.labels, s, client, store=ready)
        for s in ("validation", "test")
    }
    if train_loader.labels is None and p.label_branch is None:
        raise ConfigError(
            "training needs targets: give labels.txt (--labels) or 'label_branch' in params.json"
        )
    label_dtype = train_loader.plan.extras[p.label_branch].dtype if p.label_branch else None
    task = task_of(train_loader.labels, label_dtype)
    check_classes(train_loader.labels, task)
    framework, net = build_model(inputs.module, train_loader.idim, p.seed)
    check_outputs(framework, net, task, train_loader.idim, inputs.model_path)
    parallel = on_workers_for(framework, inputs.trainers, on_workers, inputs.module, train_loader)
    trainers = inputs.trainers or 1
    if inputs.trainers is None and on_workers is None and gpu_trainers(framework, inputs, train_loader):
        parallel, trainers = True, "all"  # the default on a cluster with GPUs: one trainer per GPU
    if inputs.start is not None and framework not in ("torch", "keras"):
        raise ConfigError(f"--resume: {framework} runs are not checkpointed; train again")
    return Setup(dataset, loaders, task, framework, net, parallel, trainers)


def record_inputs(inputs: Inputs, setup: Setup) -> None:
    """Keep model.py and ``run.json`` (what ``--resume`` reads) in a new run directory."""
    if inputs.start is not None:
        return
    shutil.copyfile(inputs.model_path, inputs.run_dir / "model.py")
    paths = [f.path for f in setup.dataset.files]
    write_record(
        inputs.run_dir,
        paths,
        setup.train.labels,
        inputs.params,
        inputs.recipe,
        inputs.trainers,
        inputs.device,
    )
