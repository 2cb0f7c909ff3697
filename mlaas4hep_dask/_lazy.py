"""Lazy public faces for the stage packages (PEP 562).

A stage's ``__init__`` names what it exports and the private module each name lives in; the
module is imported when the name is first asked for.  Importing one stage's private module
therefore never runs another stage's ``__init__`` (``mlaas4hep_dask.scale`` would import the
trainers), and ``import mlaas4hep_dask.read`` costs nothing until it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose name ``N`` lives in ``package.where[N]``.

    Examples
    --------
    >>> __getattr__, __dir__ = exports(__name__, {"Dataset": "_dataset"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        importlib.import_module(package).__dict__[name] = value  # asked once
        return value

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
