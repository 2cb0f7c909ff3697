"""Training throughput: the client-side trainer of old vs data-parallel trainers on the workers.

Usage: ``python benchmarks/train_scaling.py [--events 400000] [--workers 2] [--trainers 1 2]
[--models torch keras xgboost] [--modes per-trainer same-path]``

For each model, mode and configuration, in a fresh process with a LocalCluster of
``--workers`` workers (default: one per trainer; each with ``cores / workers`` threads), the model of
``configs/models/MODEL_model.py`` trains ``--epochs`` epochs on generated data (specs
computed once beforehand, not timed).  Modes: ``per-trainer`` gives each trainer
``--batch-size`` events a step (``batch_size_per_trainer``, the learning rate scaled
linearly, one warm-up epoch); ``same-path`` splits a step's ``--batch-size`` over the
trainers (the path of one trainer).  XGBoost has no mode: ``xgboost.dask`` on N workers.

* ``client``: the trainer in the client process (``trainers`` 1), every batch sent to it;
* ``N on workers``: N data-parallel trainers on the workers.  With as many trainers as
  workers each reads its own shard; with more workers (``--workers 9 --trainers 1 --device
  cuda``: one GPU trainer and 8 CPU workers) the other workers feed the trainers.

Reported: events trained per second in the last epoch (steady state: the first includes
one-off imports and the workers' start; XGBoost: over the whole training), the fraction of
that epoch's training time each trainer waited for its next batch, the split of every
trainer's steps (waiting for data, the batch made a tensor, forward + backward, the
all-reduce, the optimizer) and the threads each uses, the validation AUC, and the peak RSS of
the process tree.  With ``--device cuda`` the model-only rate is measured too: the same
model's forward + backward + step on batches already in GPU memory.

On a 2-core machine, 2 trainers share the cores with their readers: the numbers say what one
machine can do, not how a farm scales.  Writes ``train-scaling.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ensure_data, run_measured

HERE = Path(__file__).resolve().parent


def _step(
    files: list[str], specs: str, workers: int, trainers: str, params: str, device: str, model: str
) -> None:
    """One configuration in this process; prints one JSON line."""
    import logging
    import os

    import dask
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster
    from mlaas4hep_dask.train import train

    logging.getLogger("distributed").setLevel(logging.ERROR)
    dask.config.set({"mlaas4hep.train.profile": True})
    p = json.loads(params)
    labels = (Path(files[0]).parent / "labels.txt").read_text().split()
    path = HERE.parent / "configs" / "models" / f"{model}_model.py"
    threads = max(1, (os.cpu_count() or 1) // workers)
    with local_cluster(workers, threads_per_worker=threads) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        kwargs = {} if trainers == "client" else {"trainers": int(trainers), "on_workers": True}
        run = train(
            files, path, p, labels, specs=specs, out=Path(specs).parent / f"run-{model}-{trainers}",
            client=client, device=device, **kwargs,
        )  # fmt: skip
    final, last = run.metrics["final"], run.metrics["epochs"][-1]
    boosted = model == "xgboost"
    wait = last.get("data_wait")
    print(
        json.dumps(
            {
                "events": final["events_trained"] // (1 if boosted else p["epochs"]),
                "seconds": final["seconds"] if boosted else last["seconds"],
                "data_wait": wait if isinstance(wait, list) or wait is None else [wait],
                "all_seconds": final["seconds"],
                "step_times": final.get("step_times"),
                "val_auc": final["val_auc"],
                "device": final["device"],
                "trainers": final["trainers"],
                "threads_per_worker": threads,
            }
        )
    )


def _model_only(params: dict[str, Any], idim: int, batch: int) -> float:
    """Events/s of the torch model's forward + backward + step on one batch already on the GPU."""
    import time

    import torch

    from mlaas4hep_dask.fit._model_file import build_model, load_model_file

    _, net = build_model(load_model_file(HERE.parent / "configs" / "models" / "torch_model.py"), idim, 1)
    net = net.to("cuda")
    optimizer = torch.optim.Adam(net.parameters(), lr=params["learning_rate"])
    X = torch.rand(batch, idim, device="cuda")
    y = (torch.rand(batch, device="cuda") > 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for steps in (20, 200):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(X).float().reshape(batch)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return 200 * batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--files-per-class", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=0, help="workers (0: one per trainer, the cores shared out)"
    )
    parser.add_argument("--trainers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--models", nargs="+", default=["torch"], choices=("torch", "keras", "xgboost"))
    parser.add_argument("--modes", nargs="+", default=["per-trainer"], choices=("per-trainer", "same-path"))
    parser.add_argument("--no-client", action="store_true", help="skip the client-side trainer")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        *files, specs, workers, trainers, params, device, model = args.step
        _step(files, specs, int(workers), trainers, params, device, model)
        return

    import mlaas4hep_dask as m

    folder = args.out / "data-train"
    files = [str(f) for f in ensure_data(folder, args.events, args.files_per_class)]
    base = {"chunk_size": args.chunk_size, "epochs": args.epochs, "prefetch": args.prefetch}
    base["learning_rate"] = 1e-3
    specs_path = folder / "specs-train.json"
    specs = m.compute_specs(files, base, client="threads")
    specs.save(specs_path)
    rows = []
    for model in args.models:
        for mode in ["boosting"] if model == "xgboost" else args.modes:
            params = dict(base, batch_size=args.batch_size)
            if mode == "per-trainer":
                params |= {"batch_size_per_trainer": args.batch_size, "warmup_epochs": 1}
            client = [] if args.no_client or model == "xgboost" else ["client"]
            for config in client + [str(n) for n in args.trainers]:
                workers = args.workers or (1 if config == "client" else int(config))
                step = [str(HERE / "train_scaling.py"), "--step", *files, str(specs_path), str(workers)]
                result = run_measured([*step, config, json.dumps(params), args.device, model])
                where = "client" if config == "client" else f"{config} on workers"
                result |= {"model": model, "mode": mode, "config": where}
                result["rate"] = result["events"] / result["seconds"]
                rows.append(result)
                print(json.dumps(result), flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "step"} | {"out": str(args.out)}
    if args.device == "cuda":
        settings["model_only_events_per_s"] = _model_only(base, len(specs.features), args.batch_size)
    _table(rows, args, settings)
    out = args.out / "train-scaling.json"
    out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    print(f"written {out}")


def _table(rows: list[dict[str, Any]], args: Any, settings: dict[str, Any]) -> None:
    print(
        f"\n{args.events:,} events (the last of {args.epochs} epochs of the 70 % train split), "
        f"{args.workers or 'one per trainer:'} workers, batch {args.batch_size}, device {args.device}"
    )
    if "model_only_events_per_s" in settings:
        rate = settings["model_only_events_per_s"]
        print(f"model only (forward + backward + step on the GPU): {rate:,.0f} events/s")
    head = f"{'model':<8}{'mode':<12}{'trainer':<14}{'events/s':>12}{'x one':>7}{'val AUC':>9}{'peak MB':>9}"
    print(head + "  steps: data/batch/compute/all-reduce/optimizer, threads torch+loader")
    one: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["model"], r["mode"])
        one.setdefault(key, r["rate"])  # the first row of each model and mode: the client's, or 1 trainer's
        split = " | ".join(
            "/".join(f"{k[0]}{s[k]:.0%}" for k in ("data", "batch", "compute", "all_reduce", "optimizer"))
            + (f" t{s['threads']['torch']}+{s['threads']['loader']}" if "threads" in s else "")
            for s in r.get("step_times") or []
        )
        print(
            f"{r['model']:<8}{r['mode']:<12}{r['config']:<14}{r['rate']:>12,.0f}{r['rate'] / one[key]:>7.2f}"
            f"{r['val_auc']:>9.4f}{r['peak_rss_mb']:>9.0f}  {split}"
        )


if __name__ == "__main__":
    main()
