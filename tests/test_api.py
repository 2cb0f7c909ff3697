from __future__ import annotations

import mlaas4hep_dask as m
from mlaas4hep_dask import errors

PUBLIC = {
    "BatchLoader", "BranchSpec", "ConfigError", "Dataset", "ExpressionError", "FileSpec", "InputError", "InputFile",
    "InputNotFoundError", "MLaaSError", "NotRootFileError", "OutputError", "Params", "Preproc", "RemoteInputError", "SchemaError",
    "Specs", "SpecsError", "__version__", "compute_specs", "generate", "load_params", "load_preproc", "open_dataset",
    "read_file_list",
}  # fmt: skip


def test_public_names() -> None:
    # the public API is a promise: changing it must be deliberate (update this list)
    assert set(m.__all__) == PUBLIC
    for name in m.__all__:
        assert getattr(m, name) is not None, name


def test_errors_refine_builtins() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InputNotFoundError, FileNotFoundError)
    assert issubclass(errors.RemoteInputError, ConnectionError)
    assert issubclass(errors.SchemaError, KeyError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MLaaSError)
    # KeyError would print the message quoted; ours print as written
    assert str(errors.SchemaError("no tree 'x'")) == "no tree 'x'"


def test_heavy_frameworks_are_not_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlaas4hep_dask;"
        "print(sorted(m for m in ('tensorflow', 'torch', 'xgboost') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
