"""Specs-pass throughput vs plain ``uproot.iterate`` on the same branches, and peak memory.

Usage: ``python benchmarks/specs.py [--events 2000000] [--workers 1 2] [--scales 1 4]``

Every measurement runs in a fresh process; the peak RSS is that of its whole process tree
(client, nanny and workers).  Cluster start-up is not timed, only the pass itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_common_arguments,
    branches_of,
    compressed_bytes,
    ensure_data,
    measure_baseline,
    run_measured,
    run_step,
)

TREE = "events"


def step_specs(files: list[str], chunk_size: int, workers: int, preproc: str) -> None:
    from distributed import Client

    import mlaas4hep_dask as m
    from mlaas4hep_dask.scale._cluster import local_cluster

    with (
        local_cluster(workers) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        start = time.perf_counter()
        specs = m.compute_specs(files, {"chunk_size": chunk_size}, preproc=preproc or None, client=client)
        seconds = time.perf_counter() - start
    read = specs.preproc["cutflow"][0]["events"] if specs.preproc else specs.nevents
    print(json.dumps({"events": read, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--preproc", default=str(Path(__file__).resolve().parent.parent / "configs" / "preproc.json"),
        help="preproc.json whose cost is measured at scale 1x with the most workers ('' to skip)",
    )  # fmt: skip
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:  # inside a measured subprocess
        run_step(args.step, step_specs)
        return

    me = str(Path(__file__).resolve())
    rows = []
    for scale in args.scales:
        files = ensure_data(args.out / f"data-{scale}x", args.events * scale, args.files_per_class)
        names = [str(f) for f in files]
        mbytes = compressed_bytes(files, TREE, branches_of(files)) / 1e6
        base, plain = measure_baseline(me, names, args.chunk_size, "zlib")
        base_isal, isal = measure_baseline(me, names, args.chunk_size, "isal")
        bases = (plain, isal)
        rows.append(("uproot.iterate (zlib, default)", scale, base, plain, mbytes, bases))
        rows.append(("uproot.iterate (isal)", scale, base_isal, isal, mbytes, bases))
        for workers in args.workers if scale == args.scales[0] else [max(args.workers)]:
            res = run_measured([me, "--step", "specs", *names, str(args.chunk_size), str(workers), ""])
            rate = res["events"] / res["seconds"]
            rows.append((f"mlaas4hep specs, {workers} worker(s)", scale, res, rate, mbytes, bases))
        if args.preproc and scale == args.scales[0]:
            workers = max(args.workers)
            without = rows[-1][2]["seconds"]
            res = run_measured(
                [me, "--step", "specs", *names, str(args.chunk_size), str(workers), args.preproc]
            )
            rate = res["events"] / res["seconds"]
            rows.append((f"  + preproc.json, {workers} worker(s)", scale, res, rate, mbytes, bases))
            print(f"preproc.json costs {res['seconds'] / without:.2f}x the specs pass without it", flush=True)

    header = (
        f"{'what':34} {'scale':>5} {'events':>11} {'events/s':>11} {'MB/s':>7} "
        f"{'x zlib':>7} {'x isal':>7} {'peak RSS':>9}"
    )
    print(header)
    print("-" * len(header))
    table = []
    for what, scale, res, rate, mbytes, (plain, isal) in rows:
        mbps = mbytes / res["seconds"]
        print(
            f"{what:34} {scale:>4}x {res['events']:>11,} {rate:>11,.0f} {mbps:>7.0f} "
            f"{rate / plain:>7.2f} {rate / isal:>7.2f} {res['peak_rss_mb']:>6.0f} MB"
        )
        table.append(
            {
                "what": what,
                "scale": scale,
                **res,
                "events_per_s": rate,
                "mb_per_s": mbps,
                "ratio": rate / plain,
                "ratio_isal": rate / isal,
            }
        )
    (args.out / "specs-benchmark.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
