"""``{benchmark-table} NAME.json``: a table of a benchmark's results, read from ``benchmarks/results``.

The docs show the figures of the last run of each benchmark, as that run wrote them; nobody
copies numbers by hand.  Options: ``:columns:`` (the row keys to show, in order; default all)
and ``:where:`` (``key=value`` pairs a row must match, comma-separated).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "/")


def table(name: str, columns: list[str] | None = None, where: dict[str, str] | None = None) -> list[str]:
    """The RST lines of the table of ``benchmarks/results/NAME``."""
    data = json.loads((RESULTS / name).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    rows = [r for r in rows if all(str(r.get(k)) == v for k, v in (where or {}).items())]
    if not rows:
        raise ValueError(f"{name}: no row matches {where}")
    keys = columns or list(rows[0])
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines += ["   * - " + keys[0], *(f"     - {k}" for k in keys[1:])]
    for row in rows:
        cells = [_cell(row.get(k, "")) for k in keys]
        lines += ["   * - " + cells[0], *(f"     - {c}" for c in cells[1:])]
    if isinstance(data, dict) and "settings" in data:
        lines += ["", "Settings: " + _cell(data["settings"]) + "."]
    return lines


class BenchmarkTable(Directive):
    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"columns": directives.unchanged, "where": directives.unchanged}

    def run(self) -> list[Any]:
        given = self.options.get("columns")
        columns = [c.strip() for c in given.split(",")] if given else None
        where = dict(p.strip().split("=", 1) for p in self.options.get("where", "").split(",") if p.strip())
        lines = table(self.arguments[0], columns, where)
        self.state.document.settings.env.note_dependency(str(RESULTS / self.arguments[0]))
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.arguments[0]), node)
        return node.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"parallel_read_safe": True}
