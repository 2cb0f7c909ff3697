"""A training's inputs, resolved once at its start: given, or recorded in a run being resumed."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlaas4hep_dask.config._params import Params, load_params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.fit._checkpoint import Checkpoint, read_checkpoint, read_record
from mlaas4hep_dask.fit._model_file import load_model_file
from mlaas4hep_dask.handle._preprocess import Preproc, load_preproc
from mlaas4hep_dask.handle._specs import Specs

__all__ = ["Inputs", "resolve_inputs"]

_log = logging.getLogger("mlaas4hep_dask")


@dataclasses.dataclass
class Inputs:
    """What one training reads: parsed once, handed to every step after."""

    files: Any
    model: str | Path
    params: Params
    recipe: Preproc | None
    labels: Any
    specs: Specs | str | Path | None
    run_dir: Path
    device: str
    trainers: int | str | None
    module: ModuleType
    start: Checkpoint | None  # where a resumed run goes on from
    store: Any = None  # the store of prepared datasets to train from

    @property
    def model_path(self) -> Path:
        """The model.py that was loaded."""
        return Path(self.module.__file__ or self.model)


def resolve_inputs(
    files: str | Path | Sequence[str | Path] | None,
    model: str | Path | None,
    params: Params | Mapping[str, Any] | str | Path | None,
    labels: str | Path | Sequence[float] | None,
    preproc: Preproc | Mapping[str, Any] | str | Path | None,
    specs: Specs | str | Path | None,
    out: str | Path | None,
    device: str,
    trainers: int | str | None,
    resume: str | Path | None,
    store: Any = None,
) -> Inputs:
    """The inputs of :func:`~mlaas4hep_dask.train.train` (see there), ``params``, preproc.json and
    model.py parsed, and the run directory made (or, with ``resume``, the one that stopped)."""
    start = None
    if resume is not None:
        if any(given is not None for given in (files, model, params, labels, preproc)):
            raise ConfigError("--resume takes the inputs recorded in the run directory: give no other inputs")
        run_dir = Path(resume)
        record = read_record(run_dir)
        start = read_checkpoint(run_dir)
        files, model, params = record.files, run_dir / "model.py", record.params
        labels, preproc, specs, device = record.labels, record.preproc, run_dir / "specs.json", record.device
        trainers = record.trainers if trainers is None else trainers
        _log.info("resuming %s after epoch %d", run_dir, start.epoch)
    if files is None or model is None:
        raise ConfigError("training needs --files and --model (or --resume RUN_DIR)")
    p = load_params(params)
    recipe = load_preproc(preproc)
    module = load_model_file(model)
    if resume is None:
        run_dir = Path(out) if out else Path("runs") / f"{Path(model).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir.mkdir(parents=True, exist_ok=True)
    n_trainers = p.trainers if trainers is None else trainers
    return Inputs(files, model, p, recipe, labels, specs, run_dir, device, n_trainers, module, start, store)
