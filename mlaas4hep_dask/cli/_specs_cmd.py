"""``mlaas4hep specs``: the specs pass, and its table of files and branches."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mlaas4hep_dask.cli._common import (
    announce,
    connect_for,
)

__all__ = ["cmd_specs"]


_MAX_ROWS = 40


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_specs(specs: Any, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    console = Console(width=max(probe.width, 118))  # a readable table beats an 80-column squeeze
    files = Table(title="Input files", title_justify="left")
    for col in ("file", "tree", "entries", "events"):
        files.add_column(col, justify="left" if col in ("file", "tree") else "right")
    for f in specs.files:
        files.add_row(f.path, f.tree, _fmt(f.entries), _fmt(f.nevents))
    console.print(files)

    table = Table(title="Branches", title_justify="left")
    table.add_column("branch", overflow="fold", min_width=14)
    for col in ("kind", "dtype"):
        table.add_column(col, no_wrap=True)
    for col in ("min", "max", "mean", "std", "nonfinite", "jdim", "mean_len"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True)
    constant = set(specs.constant)
    for name, b in list(specs.branches.items())[:_MAX_ROWS]:
        table.add_row(
            name, b.kind, b.dtype, _fmt(b.min), _fmt(b.max), _fmt(b.mean), _fmt(b.std),
            _fmt(b.nonfinite), _fmt(b.jdim), _fmt(b.mean_len),
            "[yellow]constant[/]" if name in constant else "",
        )  # fmt: skip
    console.print(table)
    if len(specs.branches) > _MAX_ROWS:
        console.print(f"... and {len(specs.branches) - _MAX_ROWS} more branches (see {out})")
    if specs.preproc is not None:
        flow = Table(title="Cut flow (preproc.json)", title_justify="left")
        for col in ("step", "cut", "events", "of previous", "of all"):
            flow.add_column(col, justify="left" if col in ("step", "cut") else "right")
        steps = specs.preproc["cutflow"]
        first = steps[0]["events"] or 0
        previous = first
        for step in steps:
            n = step["events"] or 0
            flow.add_row(
                step["step"], step.get("cut", ""), f"{n:,}",
                f"{n / previous:.1%}" if previous else "-", f"{n / first:.1%}" if first else "-",
            )  # fmt: skip
            previous = n
        console.print(flow)
    if constant:
        names = ", ".join(list(constant)[:8]) + (", ..." if len(constant) > 8 else "")
        console.print(
            f"[yellow]{len(constant)} constant branches[/] (one value in every event; they carry "
            f"nothing for a model: add them to 'exclude_branches'): {names}"
        )
    if specs.skipped:
        console.print(f"skipped {len(specs.skipped)} unsupported branches (listed in {out})")
    rate = specs.nevents / seconds if seconds > 0 else float("nan")
    console.print(
        f"[bold]{specs.nevents}[/] events, [bold]{len(specs.branches)}[/] branches, "
        f"input dimension [bold]{specs.idim}[/]; {seconds:.1f} s ({rate:,.0f} events/s); written to {out}"
    )


def cmd_specs(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.handle._specs import compute_specs

    start = time.perf_counter()
    with connect_for(args) as target:
        announce(target, args.quiet)
        specs = compute_specs(
            args.files, params=args.params, preproc=args.preproc, client=target, progress=not args.quiet
        )
    seconds = time.perf_counter() - start
    out = Path(args.out)
    specs.save(out)
    if not args.quiet:
        _print_specs(specs, out, seconds)
    return 0
