"""ZLIB baskets are inflated with ISA-L unless MLAAS4HEP_ZLIB says otherwise, with the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mlaas4hep_dask as m
from mlaas4hep_dask.read._inflate import zlib_library

# Read a file in a fresh process (the choice is made at import) and report which library
# inflated its baskets: the ISA-L call is counted by wrapping it where uproot looks it up.
_READ = """
import json, sys
import isal.isal_zlib, zlib
calls = {"isal": 0, "zlib": 0}
def counting(module, name):
    original = module.decompress
    def decompress(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)
    module.decompress = decompress
counting(isal.isal_zlib, "isal")
counting(zlib, "zlib")
import numpy as np, uproot, mlaas4hep_dask
array = uproot.open(sys.argv[1])["events"]["jetPt"].array(library="ak")
print(json.dumps({"calls": calls, "library": uproot.compression._decompress_ZLIB.library,
                  "sum": float(np.sum(np.asarray(array.layout.content.data, dtype=np.float64)))}))
"""


def _read(path: Path, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    import os

    environ = {k: v for k, v in os.environ.items() if k != "MLAAS4HEP_ZLIB"}
    proc = subprocess.run(
        [sys.executable, "-c", _READ, str(path)], env={**environ, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_isal_inflates_by_default_and_zlib_on_request(generated: list[Path]) -> None:
    fast = _read(generated[0], {})
    plain = _read(generated[0], {"MLAAS4HEP_ZLIB": "zlib"})
    assert fast["library"] == "isal"
    assert fast["calls"]["isal"] > 0
    assert fast["calls"]["zlib"] == 0
    assert plain["library"] == "zlib"
    assert plain["calls"]["isal"] == 0
    assert plain["calls"]["zlib"] > 0
    assert fast["sum"] == plain["sum"]


def test_unknown_library_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(m.ConfigError, match="unknown ZLIB library 'gzip': use one of isal, zlib"):
        zlib_library("gzip")
    monkeypatch.setenv("MLAAS4HEP_ZLIB", "gzip")
    with pytest.warns(UserWarning, match="MLAAS4HEP_ZLIB='gzip' is not one of isal, zlib: using isal"):
        assert zlib_library() == "isal"
