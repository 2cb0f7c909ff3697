"""Load the user's ``model.py`` and build its model; name the file and line of any error."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from mlaas4hep_dask.errors import ConfigError

__all__ = ["ModelFileError", "build_model", "detect_framework", "load_model_file"]


class ModelFileError(ConfigError):
    """``model.py`` cannot be loaded, or its ``model()`` fails or returns something unusable."""


def _where(path: Path, err: BaseException) -> str:
    """``model.py, line N`` of the deepest frame in the user's file."""
    if isinstance(err, SyntaxError) and err.lineno is not None:
        return f"{str(path)!r}, line {err.lineno}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
    return f"{str(path)!r}, line {frames[-1].lineno}" if frames else repr(str(path))


def load_model_file(path: str | Path) -> ModuleType:
    """Import ``model.py`` as a module of its own (never as ``__main__``).

    The file runs once per process while it is unchanged: the CLI loads it before starting a
    cluster (a broken model.py fails at once), and training takes the same module.

    Raises
    ------
    ModelFileError
        The file is missing, has a syntax error, fails on import, or defines no ``model``.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    name = f"mlaas4hep_user_model_{abs(hash(path))}"
    stat = path.stat()
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__mlaas4hep_stat__", None) == (stat.st_size, stat.st_mtime_ns):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"model file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ModelFileError(f"model file {_where(path, err)}: {type(err).__name__}: {err}") from None
    if not callable(getattr(module, "model", None)):
        raise ModelFileError(f"model file {str(path)!r} defines no function model(idim)")
    module.__mlaas4hep_stat__ = (stat.st_size, stat.st_mtime_ns)  # type: ignore[attr-defined]
    sys.modules[spec.name] = module  # so that pickling-based tools can find its classes
    return module


def detect_framework(obj: Any) -> str:
    """``"keras"``, ``"torch"``, ``"xgboost"`` or ``"sklearn"`` for what ``model()`` returned."""
    module = type(obj).__module__
    if isinstance(obj, dict):
        return "xgboost"  # a dict of XGBoost parameters
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith(("keras", "tensorflow", "tf_keras")):
        return "keras"
    for klass in type(obj).__mro__:
        if klass.__module__.startswith("torch.nn") and klass.__name__ == "Module":
            return "torch"
        if klass.__module__.startswith(("keras", "tf_keras")):
            return "keras"
    if hasattr(obj, "fit") and hasattr(obj, "get_params"):
        return "sklearn"
    raise ModelFileError(
        f"model() returned a {type(obj).__module__}.{type(obj).__name__}: expected a Keras model, a "
        "torch.nn.Module, an XGBoost model or parameter dict, or a scikit-learn estimator"
    )


def _seed(seed: int) -> None:
    """Seed the generators a model's initial weights come from (of the frameworks model.py imported)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # frameworks and user code draw from the global state
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(seed)


def build_model(module: ModuleType, idim: int, seed: int | None = None) -> tuple[str, Any]:
    """Call ``model(idim)`` (or ``model()``) and return ``(framework, model)``.

    With ``seed``, the initial weights are the same on every call (and on every trainer).
    """
    fn = module.model
    if seed is not None:
        _seed(seed)
    path = Path(module.__file__ or "model.py")
    takes_idim = len(inspect.signature(fn).parameters) > 0
    try:
        obj = fn(idim) if takes_idim else fn()
    except Exception as err:
        raise ModelFileError(
            f"model file {_where(path, err)}: model() failed: {type(err).__name__}: {err}"
        ) from None
    return detect_framework(obj), obj
