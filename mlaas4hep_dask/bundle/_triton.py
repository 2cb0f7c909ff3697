"""A run as a Triton Inference Server model repository entry (``mlaas4hep export --triton``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mlaas4hep_dask.bundle._bundle import load_bundle
from mlaas4hep_dask.bundle._onnx import OnnxModel
from mlaas4hep_dask.errors import ConfigError, SpecsError

__all__ = ["export_triton"]


def export_triton(run_dir: str | Path, repository: str | Path, name: str | None = None) -> Path:
    """Write a Triton model repository entry for a run: ``config.pbtxt`` and ``N/model.onnx``.

    The entry serves prepared rows (input ``features``) with Triton's ``onnxruntime``
    backend; the preprocessing recipe (``bundle.json``, ``specs.json``, ``params.json``,
    ``preproc.json``) is copied beside it into ``mlaas4hep/``, for the client that prepares
    raw events.  Each call adds the next version.  Returns the version's folder.

    Raises
    ------
    SpecsError
        The run has no ``model.onnx`` (a Keras model, or a bundle from before ONNX export).
    """
    bundle = load_bundle(run_dir)
    record = bundle.manifest.get("onnx") or {}
    if not record.get("file"):
        why = record.get("why", "the bundle predates ONNX export")
        raise SpecsError(f"{str(run_dir)!r} has no model.onnx to export: {why}")
    name = name or Path(run_dir).resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"Triton model name {name!r}: letters, digits, '_', '.', '-' only")
    entry = Path(repository) / name
    versions = [int(p.name) for p in entry.glob("*") if p.name.isdigit()]
    folder = entry / str(max(versions, default=0) + 1)
    folder.mkdir(parents=True)
    shutil.copyfile(Path(run_dir) / record["file"], folder / "model.onnx")
    output = OnnxModel(folder / "model.onnx", record).session.get_outputs()
    dims = next(o.shape for o in output if o.name == record["output"])
    dims = [d if isinstance(d, int) else -1 for d in dims]
    (entry / "config.pbtxt").write_text(
        _CONFIG.format(
            name=name, idim=bundle.layout.idim, output=record["output"], dims=", ".join(map(str, dims))
        )
    )
    recipe = entry / "mlaas4hep"
    recipe.mkdir(exist_ok=True)
    for file in ("bundle.json", "specs.json", "params.json", "preproc.json"):
        if (Path(run_dir) / file).is_file():
            shutil.copyfile(Path(run_dir) / file, recipe / file)
    (recipe / "README.txt").write_text(
        "Prepared rows for this model come from raw events through the recipe here "
        "(mlaas4hep_dask.bundle.load_bundle on a run directory holding these files).\n"
        + (
            f"The score of class 1 is column {record['column']} of '{record['output']}'.\n"
            if record.get("column") is not None
            else ""
        )
    )
    return folder


_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 0
input [
  {{
    name: "features"
    data_type: TYPE_FP32
    dims: [ -1, {idim} ]
  }}
]
output [
  {{
    name: "{output}"
    data_type: TYPE_FP32
    dims: [ {dims} ]
  }}
]
"""
