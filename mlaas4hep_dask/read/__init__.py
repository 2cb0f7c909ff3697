"""Reading ROOT inputs: datasets (local, ``root://``, HTTP), partitions on basket boundaries, inflating."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "Dataset",
    "InputFile",
    "open_dataset",
    "resolve_path",
]

_WHERE = {
    "Dataset": "_dataset",
    "InputFile": "_inspect",
    "open_dataset": "_dataset",
    "resolve_path": "_sources",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
