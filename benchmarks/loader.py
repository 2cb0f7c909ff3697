"""BatchLoader throughput to a no-op consumer vs plain ``uproot.iterate``, and peak memory.

Usage: ``python benchmarks/loader.py [--events 2000000] [--workers 1 2] [--scales 1 4]``

The loader delivers one epoch of the whole data set (``split`` 0) as float32 batches to a
consumer that does nothing; the baseline reads the same branches with ``uproot.iterate`` in
one process, once as plain uproot (Python's ``zlib``) and once inflating with ISA-L as the
pipeline does, so that the ratio to each is known.  Each measurement runs in a fresh process
(the peak RSS covers its whole process tree) and makes ``--epochs`` passes over the data; the
last is timed (steady state: a training reads many epochs; the first is reported too, it
includes the workers' one-off warm-up).  Specs and cluster start-up are not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_common_arguments,
    ensure_data,
    measure_baseline,
    run_measured,
    run_step,
    timed_passes,
)


def step_loader(files: list[str], chunk_size: int, workers: int, extra: str) -> None:
    from distributed import Client

    from mlaas4hep_dask.batches._loader import BatchLoader
    from mlaas4hep_dask.scale._cluster import local_cluster

    params = {"chunk_size": chunk_size, "batch_size": 1024, "split": 0.0, "prefetch": 2}
    labels = [1 if "ttH" in f else 0 for f in files]
    with (
        local_cluster(workers) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        specs_path, epochs = extra.rsplit(":", 1)
        loader = BatchLoader(files, specs_path, params, labels=labels, client=client)
        result = timed_passes(int(epochs), lambda: sum(len(X) for X, _ in loader))
    print(json.dumps({**result, "idim": loader.idim}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs (baseline: passes); the last one is timed"
    )
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:
        run_step(args.step, step_loader)
        return

    import mlaas4hep_dask as m

    me = str(Path(__file__).resolve())
    rows = []
    for scale in args.scales:
        files = ensure_data(args.out / f"data-{scale}x", args.events * scale, args.files_per_class)
        names = [str(f) for f in files]
        specs_path = args.out / f"specs-{scale}x.json"
        m.compute_specs(names, {"chunk_size": args.chunk_size}, client="threads").save(specs_path)
        base, plain = measure_baseline(me, names, args.chunk_size, "zlib", args.epochs)
        base_isal, isal = measure_baseline(me, names, args.chunk_size, "isal", args.epochs)
        rows.append(("uproot.iterate (zlib, default)", scale, base, plain, 1, (plain, isal)))
        rows.append(("uproot.iterate (isal)", scale, base_isal, isal, 1, (plain, isal)))
        for workers in args.workers if scale == args.scales[0] else [max(args.workers)]:
            extra = f"{specs_path}:{args.epochs}"
            res = run_measured([me, "--step", "loader", *names, str(args.chunk_size), str(workers), extra])
            rate = res["events"] / res["seconds"]
            rows.append((f"BatchLoader, {workers} worker(s)", scale, res, rate, workers, (plain, isal)))

    header = (
        f"{'what':30} {'scale':>5} {'events':>11} {'1st pass/s':>11} {'events/s':>11} "
        f"{'/(N x zlib)':>11} {'/(N x isal)':>11} {'peak RSS':>9}"
    )
    print(header)
    print("-" * len(header))
    table = []
    for what, scale, res, rate, workers, (plain, isal) in rows:
        rss = res["peak_rss_mb"]
        vs_plain, vs_isal = rate / (workers * plain), rate / (workers * isal)
        first = res["events"] / res["first_seconds"]
        print(
            f"{what:30} {scale:>4}x {res['events']:>11,} {first:>11,.0f} {rate:>11,.0f} "
            f"{vs_plain:>11.2f} {vs_isal:>11.2f} {rss:>6.0f} MB"
        )
        table.append(
            {
                "what": what,
                "scale": scale,
                **res,
                "events_per_s": rate,
                "ratio_per_worker": vs_plain,
                "ratio_per_worker_isal": vs_isal,
            }
        )
    (args.out / "loader-benchmark.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
