"""``--cluster slurm`` beside a LocalCluster: time to the first worker and the first batch, training events/s.

Usage: ``python benchmarks/slurm.py [--events 200000] [--epochs 2] [--workers 1 2]`` (as root
for the built-in Slurm; or with ``SLURM_CONF`` set, on that Slurm)

Without ``SLURM_CONF``, a one-node Slurm is started on loopback for the run (``tests/_slurm.py``,
as ``make slurm-up`` does).  For each kind (``local``, ``slurm``) and number of workers, in a
fresh process: the seconds from asking for the cluster to its first worker connected, and to
the first training batch (a :class:`~mlaas4hep_dask.BatchLoader` of the train split), then one
training of ``configs/models/torch_model.py`` (the trainer in this process, fed by the
workers) and its events/s in the last epoch.  Workers have 1 core and 2 GB each.  Writes
``benchmarks/results/slurm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ensure_data, run_measured

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "configs" / "models" / "torch_model.py"


def _cluster(kind: str, workers: int, folder: Path) -> Any:
    if kind == "local":
        from mlaas4hep_dask.scale._cluster import local_cluster

        return local_cluster(workers, 1, "2GB")
    import dask
    from dask_jobqueue import SLURMCluster

    settings = {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "01:00:00", "interface": "lo"}
    settings |= {"log-directory": str(folder / "slurm-logs"), "local-directory": str(folder / "work")}
    dask.config.set({f"jobqueue.slurm.{k}": v for k, v in settings.items()})
    cluster = SLURMCluster()
    cluster.scale(workers)
    return cluster


def step(kind: str, workers: int, files: list[str], folder: Path, params: dict[str, Any]) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import logging

    from distributed import Client

    import mlaas4hep_dask as m
    from mlaas4hep_dask.train import train

    logging.getLogger("distributed").setLevel(logging.ERROR)
    labels = (Path(files[0]).parent / "labels.txt").read_text().split()
    start = time.perf_counter()
    cluster = _cluster(kind, workers, folder)
    with Client(cluster) as client:
        client.wait_for_workers(1, timeout=300)
        first_worker = time.perf_counter() - start
        client.wait_for_workers(workers, timeout=300)
        specs = m.compute_specs(files, params, client=client)
        loader = m.BatchLoader(files, specs, params, labels=labels, client=client)
        next(iter(loader))
        first_batch = time.perf_counter() - start
        loader.close()
        run = train(
            files, MODEL, params, labels, specs=specs, out=folder / f"run-{kind}-{workers}", client=client
        )
    cluster.close()
    last = run.metrics["epochs"][-1]
    events = run.metrics["final"]["events_trained"] // params["epochs"]
    print(
        json.dumps(
            {
                "first_worker_s": first_worker,
                "first_batch_s": first_batch,
                "events_per_s": events / last["seconds"],
                "val_auc": run.metrics["final"]["val_auc"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = {"epochs": args.epochs, "chunk_size": 50_000, "batch_size": 1024, "seed": 1}
    if args.step:
        kind, workers, folder, *files = args.step
        step(kind, int(workers), files, Path(folder), params)
        return
    files = [str(f) for f in ensure_data(args.out / "data-slurm", args.events, 1)]
    folder = Path(tempfile.mkdtemp(prefix="slurm-bench-", dir=args.out))
    from contextlib import nullcontext

    from tests._slurm import slurm

    started = (
        nullcontext(os.environ.get("SLURM_CONF")) if os.environ.get("SLURM_CONF") else slurm(folder / "slurm")
    )
    rows = []
    with started as conf:
        os.environ["SLURM_CONF"] = str(conf)
        for workers in args.workers:
            for kind in ("local", "slurm"):
                r = run_measured([str(HERE / "slurm.py"), "--step", kind, str(workers), str(folder), *files])
                rows.append({"cluster": kind, "workers": workers, **r})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.events:,} events, {args.epochs} epochs, workers of 1 core")
    print(f"{'cluster':<8}{'workers':>8}{'first worker s':>16}{'first batch s':>15}{'events/s':>12}")
    for r in rows:
        print(
            f"{r['cluster']:<8}{r['workers']:>8}{r['first_worker_s']:>16.1f}{r['first_batch_s']:>15.1f}"
            f"{r['events_per_s']:>12,.0f}"
        )
    settings = {"events": args.events, "epochs": args.epochs, "cores": os.cpu_count()}
    out = HERE / "results" / "slurm.json"
    out.write_text(json.dumps({"rows": rows, "settings": settings}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
