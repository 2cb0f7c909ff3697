"""The ``mlaas4hep`` command line."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "main",
]

_WHERE = {
    "main": "_main",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
