"""The run bundle: a directory with the model, its specs and preprocessing, and ``bundle.json``.

``bundle.json`` is what an inference service needs to turn raw events into the exact rows
the model was trained on::

    {"format": 1, "framework": "torch", "model": "model.pt", "task": {"kind": "binary", "n_classes": 2},
     "features": ["nBJets", ..., "jetPt[0]", ...], "idim": 116,
     "normalization": {"method": "minmax", "max_jagged": null, "pad_value": 0.0, "jagged_counts": false,
                       "nan_policy": "replace", "nan": 0.0},
     "labels": {"ttH_0.root": 1, "ttbar_0.root": 0}, "specs": "specs.json", "params": "params.json",
     "preproc": "preproc.json" | null, "versions": {...}, "created": "2026-11-24T18:00:00Z"}
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.config._params import Params, load_params
from mlaas4hep_dask.errors import SpecsError
from mlaas4hep_dask.handle._layout import Layout
from mlaas4hep_dask.handle._preprocess import Plan, Preproc, load_preproc, make_plan
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.read._branches import Branch

__all__ = ["Bundle", "load_bundle", "write_bundle"]

FORMAT = 1
_PACKAGES = {"keras": "keras", "torch": "torch", "xgboost": "xgboost", "sklearn": "scikit-learn"}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_bundle(
    run_dir: Path,
    framework: str,
    model_file: str,
    loader: Any,
    task: Any,
    params: Params,
    preproc: Preproc | None,
    onnx: dict[str, Any] | None = None,
) -> Path:
    """Write params.json, preproc.json and bundle.json into ``run_dir`` (specs.json is there).

    ``onnx`` is what :func:`~mlaas4hep_dask.bundle.export_onnx` recorded.
    """
    (run_dir / "params.json").write_text(json.dumps(params.to_dict(), indent=1) + "\n")
    if preproc is not None:
        (run_dir / "preproc.json").write_text(json.dumps(dict(preproc.source), indent=1) + "\n")
    labels = None
    if loader.labels is not None:
        labels = {f.path: lab for f, lab in zip(loader.dataset.files, loader.labels, strict=True)}
    manifest = {
        "format": FORMAT,
        "framework": framework,
        "model": model_file,
        "task": dataclasses.asdict(task),
        "features": loader.features,
        "idim": loader.idim,
        # raw branches read from the files, and which of them are selected features: enough to
        # rebuild the preprocessing plan for raw events at serving time
        "onnx": onnx,
        "inputs": {
            n: {"kind": b.kind, "dtype": b.dtype}
            for n, b in loader.dataset.available.items()
            if n in loader.plan.columns
        },
        "selected": list(loader.dataset.branches),
        "normalization": {
            "method": params.normalize,
            "max_jagged": params.max_jagged,
            "pad_value": params.pad_value,
            "jagged_counts": params.jagged_counts,
            "nan_policy": params.nan_policy,
            "nan": params.nan,
        },
        "labels": labels,
        "specs": "specs.json",
        "params": "params.json",
        "preproc": "preproc.json" if preproc is not None else None,
        "versions": {
            "mlaas4hep_dask": _version("mlaas4hep-dask"),
            "numpy": np.__version__,
            _PACKAGES[framework]: _version(_PACKAGES[framework]),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = run_dir / "bundle.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


@dataclasses.dataclass
class Bundle:
    """A loaded run: its model and everything needed to prepare inputs for it."""

    path: Path
    manifest: dict[str, Any]
    specs: Specs
    params: Params
    preproc: Preproc | None
    layout: Layout
    model: Any
    plan: Plan
    inputs: dict[str, Branch]
    onnx: Any = None  # an OnnxModel when loaded with runtime="onnx"

    @property
    def framework(self) -> str:
        return str(self.manifest["framework"])

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Scores for prepared rows (normalized, padded, in :attr:`layout` feature order)."""
        from mlaas4hep_dask.fit._common import Task, backend

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.layout.idim:
            raise ValueError(f"expected rows of {self.layout.idim} features, got shape {X.shape}")
        if self.onnx is not None:
            return np.asarray(self.onnx.scores(X, self.manifest["task"]["kind"] == "multiclass"))
        return np.asarray(backend(self.framework).predict(self.model, X, Task(**self.manifest["task"])))


def load_bundle(path: str | Path, runtime: str = "native") -> Bundle:
    """Load a run directory written by :func:`mlaas4hep_dask.train.train`.

    ``runtime="onnx"`` scores with the bundle's ``model.onnx`` through ONNX Runtime.
    """
    from mlaas4hep_dask.fit._common import backend

    path = Path(path)
    try:
        manifest = json.loads((path / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SpecsError(f"{str(path)!r} is not a run bundle: {err}") from None
    if manifest.get("format") != FORMAT:
        raise SpecsError(f"{str(path)!r}: unsupported bundle format {manifest.get('format')!r}")
    specs = Specs.load(path / manifest["specs"])
    params = load_params(path / manifest["params"])
    preproc = load_preproc(path / manifest["preproc"]) if manifest.get("preproc") else None
    layout = Layout.from_specs(specs, params)
    if layout.features != manifest["features"]:
        raise SpecsError(f"{str(path)!r}: bundle.json features do not match its specs and params")
    inputs = {n: Branch(n, b["kind"], b["dtype"]) for n, b in manifest["inputs"].items()}
    plan = make_plan(preproc, inputs, {n: inputs[n] for n in manifest["selected"]}).for_scoring()
    if runtime not in ("native", "onnx"):
        raise SpecsError(f"runtime must be 'native' or 'onnx', not {runtime!r}")
    onnx = None
    if runtime == "onnx":
        from mlaas4hep_dask.bundle._onnx import OnnxModel

        record = manifest.get("onnx") or {}
        if not record.get("file"):
            why = record.get("why", "the bundle predates ONNX export")
            raise SpecsError(f"{str(path)!r} has no model.onnx to score with: {why}")
        onnx = OnnxModel(path / record["file"], record)
    model = backend(manifest["framework"]).load(path / manifest["model"])
    return Bundle(path, manifest, specs, params, preproc, layout, model, plan, inputs, onnx)
