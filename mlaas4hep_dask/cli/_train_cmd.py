"""``mlaas4hep train``, ``campaign`` and ``params``."""

from __future__ import annotations

import argparse
import json

from mlaas4hep_dask.cli._common import (
    announce,
    connect_for,
    log_lines,
)
from mlaas4hep_dask.cli._prepare_cmd import store_of
from mlaas4hep_dask.cli._specs_cmd import _fmt

__all__ = ["cmd_campaign", "cmd_params", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    from mlaas4hep_dask.errors import ConfigError
    from mlaas4hep_dask.train import train

    if args.resume is None and (args.files is None or args.model is None):
        raise ConfigError("train needs --files and --model (or --resume RUN_DIR)")

    if args.log_progress is not None:
        log_lines("%(asctime)s %(message)s")
    if args.resume is None:  # a broken model.py fails now, not after a cluster and a specs pass
        from mlaas4hep_dask.train import load_model_file

        load_model_file(args.model)
    with connect_for(args) as target:
        announce(target, args.quiet and args.log_progress is None)
        run = train(
            args.files, args.model, params=args.params, labels=args.labels, preproc=args.preproc,
            specs=args.specs, out=args.out, client=target, device=args.device,
            progress=not args.quiet, log_every=args.log_progress, trainers=args.trainers, resume=args.resume,
            store=store_of(args),
        )  # fmt: skip
    final = run.metrics["final"]
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in final.items() if k.startswith(("val_", "test_")) and isinstance(v, float)
    )
    print(
        f"{run.framework}: {shown}; {final['events_trained']:,} events trained in {final['seconds']:.1f} s "
        f"on {final['device']}\nrun directory: {run.path} (plots in {run.path / 'plots'})"
    )
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mlaas4hep_dask.scale._campaign import load_campaign, run_campaign

    campaign = load_campaign(args.file, out=args.out)
    if args.log_progress is not None:
        log_lines("%(asctime)s %(message)s")
    with connect_for(args) as target:
        announce(target, quiet=False)
        rows = run_campaign(campaign, client=target, log_every=args.log_progress, store=store_of(args))
    table = Table(title=f"Campaign {args.file}", title_justify="left")
    metrics = sorted({k for row in rows for k in row if k.startswith(("val_", "test_"))})
    for column in ("run", "framework", "state", *metrics, "seconds"):
        table.add_column(column, justify="left" if column in ("run", "framework", "state") else "right")
    for row in rows:
        table.add_row(
            row["name"], row.get("framework", "-"), row["state"], *(_fmt(row.get(m)) for m in metrics),
            f"{row['seconds']:.1f}",
        )  # fmt: skip
    console = Console(width=120)
    console.print(table)
    failed = [row for row in rows if row["state"] != "succeeded"]
    for row in failed:
        console.print(f"[red]{row['name']} failed:[/] {row['error']}")
    console.print(f"summary: {campaign.out / 'summary.csv'}; ROC comparison: {campaign.out / 'roc.png'}")
    return 1 if failed else 0


def cmd_params(args: argparse.Namespace) -> int:

    from mlaas4hep_dask.config._params import Params, load_params

    if args.schema:
        print(json.dumps(Params.json_schema(), indent=1))
    else:
        print(json.dumps(load_params(args.file).to_dict(), indent=1))
    return 0
