"""What a training leaves: the bundle (model, specs, preprocessing, feature order), ONNX export, plots."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "Bundle",
    "export_onnx",
    "export_triton",
    "load_bundle",
    "OnnxModel",
    "roc_figure",
    "scores_figure",
    "training_figure",
    "write_bundle",
    "write_plots",
    "write_roc",
]

_WHERE = {
    "Bundle": "_bundle",
    "export_onnx": "_onnx",
    "export_triton": "_triton",
    "load_bundle": "_bundle",
    "OnnxModel": "_onnx",
    "roc_figure": "_plots",
    "scores_figure": "_plots",
    "training_figure": "_plots",
    "write_bundle": "_bundle",
    "write_plots": "_plots",
    "write_roc": "_plots",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
