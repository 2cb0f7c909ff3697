"""The package's layout, measured from its own imports and files (``make lint`` prints it).

- :func:`circles`: pairs of modules that import each other, directly or through others;
- :func:`long_modules`: modules over :data:`LIMIT` lines (the rule of ``../shared/ARCHITECTURE.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlaas4hep_dask"
LIMIT = 400


def circles() -> list[list[str]]:
    """Every import circle among the package's modules, as the chain that closes it."""
    import grimp

    # imports under TYPE_CHECKING are for annotations only: they never run, so they close no circle
    graph = grimp.build_graph("mlaas4hep_dask", cache_dir=None, exclude_type_checking_imports=True)
    found = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if module < imported and graph.chain_exists(importer=imported, imported=module):
                back = graph.find_shortest_chain(importer=imported, imported=module) or ()
                found.append([module, *back])
    return found


def long_modules() -> dict[str, int]:
    """Modules over :data:`LIMIT` lines, with their lengths."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > LIMIT:
            out[str(path.relative_to(PACKAGE.parent))] = lines
    return out


if __name__ == "__main__":
    bad = circles()
    for chain in bad:
        print("import circle: " + " -> ".join(chain))
    for path, lines in long_modules().items():
        print(f"over {LIMIT} lines: {path} ({lines})")
    sys.exit(1 if bad else 0)
