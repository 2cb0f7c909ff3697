"""The layout rules hold: stages import only the stages above them, no import circles,
modules short; and each stage has a public face."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

from ._layout import LIMIT, circles, long_modules

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert circles() == []


def test_no_module_is_over_the_limit() -> None:
    over = long_modules()
    assert over == {}, f"over {LIMIT} lines: {over}"


def test_each_stage_has_a_public_face_of_existing_names() -> None:
    for stage in (
        "config",
        "read",
        "handle",
        "batches",
        "fit",
        "train",
        "bundle",
        "serve",
        "service",
        "scale",
    ):
        module = importlib.import_module(f"mlaas4hep_dask.{stage}")
        assert module.__all__, stage
        for name in module.__all__:
            assert getattr(module, name) is not None, (stage, name)
