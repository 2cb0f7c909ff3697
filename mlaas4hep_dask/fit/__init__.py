"""Fitting the user's model: one module per framework (Keras, PyTorch, XGBoost, scikit-learn)
behind one interface, model.py loading, the data-parallel trainers on the workers, checkpoints.

:func:`mlaas4hep_dask.train.train` composes these with the stages above into a run.
"""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "backend",
    "build_model",
    "detect_framework",
    "FRAMEWORKS",
    "load_model_file",
    "ModelFileError",
    "Task",
]

_WHERE = {
    "backend": "_common",
    "build_model": "_model_file",
    "detect_framework": "_model_file",
    "FRAMEWORKS": "_common",
    "load_model_file": "_model_file",
    "ModelFileError": "_model_file",
    "Task": "_common",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
