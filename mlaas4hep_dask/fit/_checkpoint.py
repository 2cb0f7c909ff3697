"""A run directory's record of its inputs (``run.json``) and its last checkpoint.

``run.json`` is written when a training starts: the input files, labels, params and
preprocessing it was given, so that ``mlaas4hep train --resume RUN_DIR`` needs nothing else.
After every epoch the backend's state goes to ``checkpoint.bin`` and the epoch (with the
metrics rows so far) to ``checkpoint.json``; each is written to a temporary name and renamed,
so a run killed at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlaas4hep_dask._atomic import replacing
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._preprocess import Preproc

__all__ = ["Checkpoint", "RunRecord", "read_checkpoint", "read_record", "write_checkpoint", "write_record"]

_RECORD, _STATE, _META = "run.json", "checkpoint.bin", "checkpoint.json"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a training was given."""

    files: list[str]
    labels: list[float] | None
    params: dict[str, Any]
    preproc: dict[str, Any] | None
    trainers: int | str | None
    device: str


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The state after ``epoch`` and the metrics rows of epochs ``1..epoch``."""

    epoch: int
    state: bytes
    rows: list[dict[str, Any]]


def _replace(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_record(
    run_dir: Path,
    files: Sequence[str],
    labels: Sequence[float] | None,
    params: Params,
    preproc: Preproc | None,
    trainers: int | str | None,
    device: str,
) -> None:
    record = RunRecord(
        list(files),
        None if labels is None else list(labels),
        params.to_dict(),
        None if preproc is None else dict(preproc.source),
        trainers,
        device,
    )
    _replace(run_dir / _RECORD, (json.dumps(dataclasses.asdict(record), indent=1) + "\n").encode())


def read_record(run_dir: Path) -> RunRecord:
    """The inputs of the run in ``run_dir``.

    Raises
    ------
    ConfigError
        ``run_dir`` is not a run directory of a training that can be resumed.
    """
    path = run_dir / _RECORD
    if not path.is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: not a run directory of mlaas4hep train (no {_RECORD})")
    try:
        return RunRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--resume: {str(path)!r} cannot be read: {err}") from None


def write_checkpoint(run_dir: Path, epoch: int, state: bytes, rows: Sequence[dict[str, Any]]) -> None:
    _replace(run_dir / _STATE, state)
    meta = {"epoch": epoch, "sha256": hashlib.sha256(state).hexdigest(), "epochs": list(rows)}
    _replace(run_dir / _META, (json.dumps(meta, indent=1) + "\n").encode())


def read_checkpoint(run_dir: Path) -> Checkpoint:
    """The last checkpoint in ``run_dir``.

    Raises
    ------
    ConfigError
        There is none (a run stopped before its first epoch ended), or it is damaged.
    """
    meta_path, state_path = run_dir / _META, run_dir / _STATE
    if not meta_path.is_file() or not state_path.is_file():
        raise ConfigError(
            f"--resume {str(run_dir)!r}: no checkpoint (one is written after each epoch; "
            "a run stopped during its first epoch starts again without --resume)"
        )
    meta = json.loads(meta_path.read_text())
    state = state_path.read_bytes()
    if hashlib.sha256(state).hexdigest() != meta.get("sha256"):
        raise ConfigError(f"--resume: {str(state_path)!r} does not match {str(meta_path)!r} (damaged)")
    return Checkpoint(int(meta["epoch"]), state, list(meta["epochs"]))
