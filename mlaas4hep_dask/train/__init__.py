"""Train the user's model (Keras, PyTorch, XGBoost, scikit-learn) on the stream; write a run dir.

``model.py`` defines ``model(idim)`` (or ``model()``) returning the model; its framework is
detected from the object returned.  An optional ``fit(model, train, valid, params)`` in
model.py takes over the training loop; it gets the train and validation
:class:`~mlaas4hep_dask.BatchLoader` and returns the trained model.

:func:`train` composes the stages: the inputs opened once, the specs, the loaders, the fit
(:mod:`mlaas4hep_dask.fit`, in this process or by data-parallel trainers on the workers), and
the run directory with its bundle (:mod:`mlaas4hep_dask.bundle`).
"""

from __future__ import annotations

from mlaas4hep_dask.fit._common import FRAMEWORKS, Task, backend
from mlaas4hep_dask.fit._model_file import ModelFileError, build_model, detect_framework, load_model_file
from mlaas4hep_dask.train._run import Run, train

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
