"""``mlaas4hep prepare`` and ``mlaas4hep store ls|rm|gc``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mlaas4hep_dask.cli._common import announce, connect_for

__all__ = ["cmd_prepare", "cmd_store", "store_arguments", "store_of"]


def store_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    from mlaas4hep_dask.prepared._store import parse_bytes

    parser.add_argument(
        "--store",
        metavar="DIR",
        required=required,
        help="store of prepared datasets (local SSD or shared storage): read and handle the "
        "inputs once there, train from it",
    )
    parser.add_argument(
        "--store-max-bytes",
        type=parse_bytes,
        metavar="SIZE",
        help="evict least recently used datasets past SIZE, e.g. 500G (default: "
        "MLAAS4HEP_STORE_MAX_BYTES, else no bound)",
    )


def store_of(args: argparse.Namespace) -> Any:
    """The ``--store`` of a command (``None`` without one)."""
    if getattr(args, "store", None) is None:
        return None
    from mlaas4hep_dask.prepared import Store

    return Store(args.store, args.store_max_bytes)


def cmd_prepare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlaas4hep_dask.prepared import prepare

    with connect_for(args) as target:
        announce(target, args.quiet)
        ready = prepare(
            args.files,
            store_of(args),
            args.params,
            args.labels,
            args.preproc,
            args.specs,
            target,
            args.repair,
        )
    if not args.quiet:
        console = Console(file=sys.stderr, width=120)
        console.print(
            f"prepared dataset [bold]{ready.key[:12]}[/]: {ready.events:,} events in "
            f"{len(ready.shards)} shards, {ready.bytes / 1e6:,.1f} MB\n  {ready.path}"
        )
    print(json.dumps(ready.summary()), flush=True)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    store = store_of(args)
    if args.action == "ls":
        table = Table(title=f"Store {store.root}", title_justify="left")
        for column in ("key", "state", "events", "files", "first file", "size", "last used"):
            table.add_column(column, justify="right" if column in ("events", "files", "size") else "left")
        for e in store.entries():
            state = ("complete" if e.complete else "incomplete") + (", in use" if e.in_use else "")
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            table.add_row(
                e.key[:12],
                state,
                f"{e.events:,}",
                str(e.files),
                e.first_file,
                f"{e.bytes / 1e6:,.1f} MB",
                used,
            )
        Console(width=160).print(table)
        return 0
    if args.action == "rm":
        for prefix in args.keys:
            folder = store.find(prefix)
            store.remove(folder)
            print(f"removed {folder.key}")
        return 0
    for removed in store.gc():
        print(f"removed {removed}")
    return 0
