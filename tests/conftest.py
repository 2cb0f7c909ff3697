from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown pytest's output

from mlaas4hep_dask.generate import generate

from ._servers import http_server, xrootd_server

ROOT = Path(__file__).resolve().parent.parent


def _real_data_dir() -> Path | None:
    env = os.environ.get("MLAAS4HEP_TESTDATA")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def real_file(name: str) -> Path:
    """A real ROOT file from ../shared/data, else from scikit-hep-testdata; skip if neither has it."""
    base = _real_data_dir()
    if base is not None and (base / name).is_file():
        return base / name
    try:
        import skhep_testdata

        return Path(skhep_testdata.data_path(name))
    except Exception:
        pytest.skip(f"real test file {name!r} not found in ../shared/data (or $MLAAS4HEP_TESTDATA)")


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small generated files (signal, background) of 3000 events each."""
    out = tmp_path_factory.mktemp("generated")
    return generate(out, events=3000, files=1, seed=7, basket=500)


@pytest.fixture(scope="session")
def xrootd_url(generated: list[Path]) -> Iterator[str]:
    """Base ``root://`` URL of a real xrootd server on 127.0.0.1 exporting the generated files."""
    try:
        with xrootd_server(generated) as url:
            yield url
    except FileNotFoundError:
        message = "Debian's xrootd-server is not installed (make test installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def http_url(generated: list[Path]) -> Iterator[str]:
    """Base URL of a real HTTP server on 127.0.0.1 serving the generated files."""
    with http_server(generated[0].parent) as url:
        yield url
