"""Write one API page per public module: an autosummary of exactly the names in its ``__all__``.

The pages are generated at every build (``api/*.rst``), so a name added to an ``__all__`` gets
its page without anyone editing the docs, and a name removed loses it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

#: The public faces, in the order data flows (each module's ``__all__`` is documented).
MODULES = (
    "mlaas4hep_dask",
    "mlaas4hep_dask.errors",
    "mlaas4hep_dask.config",
    "mlaas4hep_dask.read",
    "mlaas4hep_dask.handle",
    "mlaas4hep_dask.prepared",
    "mlaas4hep_dask.batches",
    "mlaas4hep_dask.train",
    "mlaas4hep_dask.bundle",
    "mlaas4hep_dask.serve",
    "mlaas4hep_dask.serve.repository",
    "mlaas4hep_dask.serve.batch",
    "mlaas4hep_dask.service",
    "mlaas4hep_dask.service.sandbox",
    "mlaas4hep_dask.scale",
    "mlaas4hep_dask.generate",
)


def public_names(module: str) -> list[str]:
    """The names of ``module``'s ``__all__`` (``__version__`` is no API)."""
    return [n for n in importlib.import_module(module).__all__ if n != "__version__"]


def documented() -> dict[str, list[str]]:
    """The names each module's page documents: every public object once, on the page of the
    first module in :data:`MODULES` that exports it (``mlaas4hep_dask.Specs``, not also
    ``mlaas4hep_dask.handle._specs.Specs``)."""
    seen: set[object] = set()
    pages: dict[str, list[str]] = {}
    for module in MODULES:
        mod = importlib.import_module(module)
        pages[module] = []
        for name in public_names(module):
            obj = getattr(mod, name)
            key: object = id(obj) if callable(obj) or isinstance(obj, type) else (module, name)
            if key not in seen:
                seen.add(key)
                pages[module].append(name)
    return pages


def _page(module: str, names: list[str]) -> str:
    mod = importlib.import_module(module)
    summary = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
    title = f"``{module}``"
    lines = [title, "=" * len(title), "", summary, "", f".. currentmodule:: {module}", ""]
    lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
    lines += [f"   {name}" for name in sorted(names, key=str.lower)]
    if not names:
        lines = [*lines[:6], "Everything it exports is documented on the pages above.", ""]
    return "\n".join([*lines, ""])


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged pages keep Sphinx's cache
        path.write_text(text)


def write_pages(app: Any, config: Any = None) -> None:
    """Write ``api/index.rst`` and one page per module of :data:`MODULES`."""
    folder = Path(app.srcdir) / "api"
    folder.mkdir(exist_ok=True)
    index = ["API reference", "=============", ""]
    index += ["Every name in the ``__all__`` of each public module, one page each.", ""]
    index += [".. toctree::", "   :maxdepth: 1", ""]
    for module, names in documented().items():
        _write(folder / f"{module}.rst", _page(module, names))
        index.append(f"   {module}")
    _write(folder / "index.rst", "\n".join([*index, ""]))


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", write_pages)  # before the sources are listed
    return {"parallel_read_safe": True}
