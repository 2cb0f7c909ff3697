"""The documentation site builds with no warning, runs its tutorial, and documents every public name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr.replace("[IPKernelApp] WARNING", ""), build.stderr
    return out / "html"


def test_every_public_name_has_its_api_page(site: Path) -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from api_pages import MODULES, documented, public_names
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    pages = documented()
    generated = site / "api" / "generated"
    missing = [
        f"{m}.{n}" for m, names in pages.items() for n in names if not (generated / f"{m}.{n}.html").exists()
    ]
    assert not missing
    # every public name is on some page: the one of the first module that exports its object
    everywhere = {(m, n) for m in MODULES for n in public_names(m)}
    on_pages = {(m, n) for m, names in pages.items() for n in names}
    import importlib

    for module, name in everywhere - on_pages:
        obj = getattr(importlib.import_module(module), name)
        assert any(getattr(importlib.import_module(m), n) is obj for m, n in on_pages), (module, name)
    assert len(on_pages) >= 100  # a build that listed nothing would pass the checks above


def test_the_tutorial_ran_and_its_outputs_are_on_the_page(site: Path) -> None:
    page = (site / "tutorial.html").read_text()
    assert "ttH_0.root" in page
    assert "val_auc" in page
    assert "test_auc" in page
    assert "bundle.json" in page
    assert "Traceback" not in page


def test_the_benchmark_tables_come_from_the_results_files(site: Path) -> None:
    import json

    page = (site / "benchmarks.html").read_text()
    rows = json.loads((ROOT / "benchmarks" / "results" / "layouts.json").read_text())
    assert len(rows) == 16
    nano_loader = next(r for r in rows if r["layout"] == "nano" and r["what"] == "loader")
    assert f"{nano_loader['ratio']:,.3g}" in page  # the figure the last run wrote, not a copy
