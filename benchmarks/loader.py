"""BatchLoader throughput to a no-op consumer vs plain ``uproot.iterate``, and peak memory.

Usage: ``python benchmarks/loader.py [--events 2000000] [--workers 1 2] [--scales 1 4]``

The loader delivers one epoch of the whole data set (``split`` 0) as float32 batches to a
consumer that does nothing; the baseline reads the same branches with ``uproot.iterate`` in
one process.  Each measurement runs in a fresh process; the peak RSS covers its whole process
tree.  Specs and cluster start-up are not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_arguments, ensure_data, measure_baseline, run_measured, run_step


def step_loader(files: list[str], chunk_size: int, workers: int, specs_path: str) -> None:
    from distributed import Client

    from mlaas4hep_dask.cluster import local_cluster
    from mlaas4hep_dask.stream import BatchLoader

    params = {"chunk_size": chunk_size, "batch_size": 1024, "split": 0.0, "prefetch": 2}
    labels = [1 if "ttH" in f else 0 for f in files]
    with (
        local_cluster(workers) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        loader = BatchLoader(files, specs_path, params, labels=labels, client=client)
        start = time.perf_counter()
        events = 0
        for X, _ in loader:
            events += len(X)
        seconds = time.perf_counter() - start
    print(json.dumps({"events": events, "seconds": seconds, "idim": loader.idim}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
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
        base, base_rate = measure_baseline(me, names, args.chunk_size)
        rows.append(("uproot.iterate (1 process)", scale, base, base_rate, 1.0))
        for workers in args.workers if scale == args.scales[0] else [max(args.workers)]:
            res = run_measured(
                [me, "--step", "loader", *names, str(args.chunk_size), str(workers), str(specs_path)]
            )
            rate = res["events"] / res["seconds"]
            rows.append((f"BatchLoader, {workers} worker(s)", scale, res, rate, rate / (workers * base_rate)))

    header = f"{'what':30} {'scale':>5} {'events':>11} {'events/s':>11} {'/(N x base)':>11} {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    table = []
    for what, scale, res, rate, ratio in rows:
        rss = res["peak_rss_mb"]
        print(f"{what:30} {scale:>4}x {res['events']:>11,} {rate:>11,.0f} {ratio:>11.2f} {rss:>6.0f} MB")
        table.append({"what": what, "scale": scale, **res, "events_per_s": rate, "ratio_per_worker": ratio})
    (args.out / "loader-benchmark.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
