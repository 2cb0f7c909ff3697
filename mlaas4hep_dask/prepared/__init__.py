"""Prepared datasets: the inputs read and handled once into a store of Arrow shards, trained on many times."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "dataset_key",
    "prepare",
    "Prepared",
    "Store",
]

_WHERE = {
    "dataset_key": "_key",
    "prepare": "_prepare",
    "Prepared": "_prepare",
    "Store": "_store",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
