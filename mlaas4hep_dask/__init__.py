"""mlaas4hep-dask: Machine Learning as a Service for High-Energy Physics, on Dask.

Read ROOT trees of any size as Dask partitions, describe them (specs), and turn them into
training data, trained models and predictions.

Examples
--------
>>> import mlaas4hep_dask as m
>>> specs = m.compute_specs("files.txt", "params.json")  # doctest: +SKIP
>>> specs.save("specs.json")  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.config._params import Params, load_params, read_file_list
from mlaas4hep_dask.errors import (
    ConfigError,
    ExpressionError,
    InputError,
    InputNotFoundError,
    MLaaSError,
    NotRootFileError,
    OutputError,
    RemoteInputError,
    SchemaError,
    SpecsError,
)
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.handle._preprocess import Preproc, load_preproc
from mlaas4hep_dask.handle._specs import BranchSpec, FileSpec, Specs, compute_specs
from mlaas4hep_dask.read._dataset import Dataset, open_dataset
from mlaas4hep_dask.read._inspect import InputFile

try:
    __version__ = version("mlaas4hep-dask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "BatchLoader",
    "BranchSpec",
    "ConfigError",
    "Dataset",
    "ExpressionError",
    "FileSpec",
    "InputError",
    "OutputError",
    "InputFile",
    "InputNotFoundError",
    "MLaaSError",
    "NotRootFileError",
    "Params",
    "Preproc",
    "RemoteInputError",
    "SchemaError",
    "Specs",
    "SpecsError",
    "__version__",
    "compute_specs",
    "generate",
    "load_params",
    "load_preproc",
    "open_dataset",
    "read_file_list",
]
