"""Configuration, parsed and validated once at the edge: params.json, files.txt, sample lists, labels."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "is_sample_list",
    "load_json",
    "load_labels",
    "load_params",
    "load_samples",
    "Params",
    "read_file_list",
    "Sample",
    "Samples",
]

_WHERE = {
    "is_sample_list": "_samples",
    "load_json": "_files",
    "load_labels": "_params",
    "load_params": "_params",
    "load_samples": "_samples",
    "Params": "_params",
    "read_file_list": "_params",
    "Sample": "_samples",
    "Samples": "_samples",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
