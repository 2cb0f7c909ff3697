"""Training throughput: the client-side trainer of old vs data-parallel trainers on the workers.

Usage: ``python benchmarks/train_scaling.py [--events 400000] [--workers 2] [--trainers 1 2]``

For each configuration, in a fresh process with a LocalCluster of ``--workers`` workers, the
PyTorch model of ``configs/models/torch_model.py`` trains ``--epochs`` epochs on generated
data (specs computed once beforehand, not timed):

* ``client``: the trainer in the client process (``trainers`` 1), every batch sent to it;
* ``N on workers``: N data-parallel trainers on the workers.  With as many trainers as
  workers each reads its own shard; with more workers (``--workers 9 --trainers 1 --device
  cuda``: one GPU trainer and 8 CPU workers) the other workers feed the trainers.

Reported: events trained per second in the last epoch (steady state: the first includes
one-off imports and the workers' start), the fraction of that epoch's training time each
trainer waited for its next batch, the validation AUC, and the peak RSS of the process tree.

On a 2-core machine, 2 trainers share the cores with their readers: the numbers say what one
machine can do, not how a farm scales.  Writes ``train-scaling.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ensure_data, run_measured

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "configs" / "models" / "torch_model.py"


def _step(files: list[str], specs: str, workers: int, trainers: str, params: str, device: str) -> None:
    """One configuration in this process; prints one JSON line."""
    import logging

    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster
    from mlaas4hep_dask.train import train

    logging.getLogger("distributed").setLevel(logging.ERROR)
    p = json.loads(params)
    labels = (Path(files[0]).parent / "labels.txt").read_text().split()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        kwargs = {} if trainers == "client" else {"trainers": int(trainers), "on_workers": True}
        run = train(
            files, MODEL, p, labels, specs=specs, out=Path(specs).parent / f"run-{trainers}",
            client=client, device=device, **kwargs,
        )  # fmt: skip
    final, last = run.metrics["final"], run.metrics["epochs"][-1]
    print(
        json.dumps(
            {
                "events": final["events_trained"] // p["epochs"],
                "seconds": last["seconds"],
                "data_wait": last["data_wait"]
                if isinstance(last["data_wait"], list)
                else [last["data_wait"]],
                "all_seconds": final["seconds"],
                "epochs": [[e["seconds"], e["data_wait"]] for e in run.metrics["epochs"]],
                "val_auc": final["val_auc"],
                "device": final["device"],
                "trainers": final["trainers"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--files-per-class", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trainers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--no-client", action="store_true", help="skip the client-side trainer")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        *files, specs, workers, trainers, params, device = args.step
        _step(files, specs, int(workers), trainers, params, device)
        return

    import mlaas4hep_dask as m

    folder = args.out / "data-train"
    files = [str(f) for f in ensure_data(folder, args.events, args.files_per_class)]
    params = {
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "prefetch": args.prefetch,
        "learning_rate": 1e-3,
    }
    specs_path = folder / "specs-train.json"
    m.compute_specs(files, params, client="threads").save(specs_path)
    configs = ([] if args.no_client else ["client"]) + [str(n) for n in args.trainers]
    rows = []
    for config in configs:
        step = [str(HERE / "train_scaling.py"), "--step", *files, str(specs_path), str(args.workers)]
        result = run_measured([*step, config, json.dumps(params), args.device])
        result["config"] = "client" if config == "client" else f"{config} on workers"
        result["rate"] = result["events"] / result["seconds"]
        rows.append(result)
        print(json.dumps(result), flush=True)
    base = rows[0]["rate"]
    print(
        f"\n{args.events:,} events (the last of {args.epochs} epochs of the 70 % train split), "
        f"{args.workers} workers, batch {args.batch_size}, device {args.device}"
    )
    print(f"{'trainer':<14}{'events/s':>12}{'ratio':>8}{'data wait':>18}{'val AUC':>9}{'peak MB':>9}")
    for r in rows:
        waits = "/".join(f"{w:.0%}" for w in r["data_wait"])
        print(
            f"{r['config']:<14}{r['rate']:>12,.0f}{r['rate'] / base:>8.2f}{waits:>18}"
            f"{r['val_auc']:>9.4f}{r['peak_rss_mb']:>9.0f}"
        )
    out = args.out / "train-scaling.json"
    settings = {k: v for k, v in vars(args).items() if k != "step"} | {"out": str(args.out)}
    out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
