"""Speed-up of the specs pass and the BatchLoader with 1, 2, 4, ... LocalCluster workers.

Usage: ``python benchmarks/scaling.py [--events 1000000] [--workers 1 2 4]``

Each point runs in a fresh process (``benchmarks/specs.py`` and ``benchmarks/loader.py``
steps; the loader's second epoch is timed); the baseline is plain ``uproot.iterate``
(Python's ``zlib``) on the same branches in one process, measured in the same run.  Prints
the table and writes ``scaling.json`` and ``scaling.png`` (events/s and speed-up over 1
worker, with the ideal line) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ensure_data, measure_baseline, run_measured

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files-per-class", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args()

    import mlaas4hep_dask as m

    files = [str(f) for f in ensure_data(args.out / "data-scaling", args.events, args.files_per_class)]
    specs_path = args.out / "specs-scaling.json"
    m.compute_specs(files, {"chunk_size": args.chunk_size}, client="threads").save(specs_path)
    _, base_rate = measure_baseline(str(HERE / "specs.py"), files, args.chunk_size)
    rows = []
    for workers in args.workers:
        specs = run_measured(
            [str(HERE / "specs.py"), "--step", "specs", *files, str(args.chunk_size), str(workers), ""]
        )
        loader = run_measured(
            [
                str(HERE / "loader.py"),
                "--step",
                "loader",
                *files,
                str(args.chunk_size),
                str(workers),
                f"{specs_path}:2",  # two epochs, the second timed
            ]
        )
        rows.append(
            {
                "workers": workers,
                "specs_events_per_s": specs["events"] / specs["seconds"],
                "loader_events_per_s": loader["events"] / loader["seconds"],
                "specs_peak_rss_mb": specs["peak_rss_mb"],
                "loader_peak_rss_mb": loader["peak_rss_mb"],
            }
        )
    first = rows[0]
    print(f"{os.cpu_count()} cores; uproot.iterate baseline: {base_rate:,.0f} events/s")
    half = f"{'speed-up':>8} {'x base':>7}"
    header = f"{'workers':>7} {'specs ev/s':>12} {half} {'loader ev/s':>12} {half}"
    print(header)
    print("-" * len(header))
    for row in rows:
        row["specs_speedup"] = row["specs_events_per_s"] / first["specs_events_per_s"]
        row["loader_speedup"] = row["loader_events_per_s"] / first["loader_events_per_s"]
        print(
            f"{row['workers']:>7} {row['specs_events_per_s']:>12,.0f} {row['specs_speedup']:>8.2f} "
            f"{row['specs_events_per_s'] / base_rate:>7.2f} {row['loader_events_per_s']:>12,.0f} "
            f"{row['loader_speedup']:>8.2f} {row['loader_events_per_s'] / base_rate:>7.2f}"
        )
    summary = {"baseline_events_per_s": base_rate, "cores": os.cpu_count(), "rows": rows}
    (args.out / "scaling.json").write_text(json.dumps(summary, indent=1))
    _plot(rows, base_rate, args.out / "scaling.png")


def _plot(rows: list[dict[str, float]], base_rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in rows]
    fig, (rate, speedup) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("specs", "specs pass"), ("loader", "BatchLoader")):
        rate.plot(workers, [r[f"{key}_events_per_s"] for r in rows], marker="o", label=label)
        speedup.plot(workers, [r[f"{key}_speedup"] for r in rows], marker="o", label=label)
    rate.axhline(base_rate, color="grey", linestyle=":", label="uproot.iterate, 1 process")
    speedup.plot(workers, [w / workers[0] for w in workers], color="grey", linestyle="--", label="ideal")
    rate.set(xlabel="workers", ylabel="events/s", title="throughput")
    speedup.set(xlabel="workers", ylabel="speed-up over 1 worker", title=f"scaling ({os.cpu_count()} cores)")
    for ax in (rate, speedup):
        ax.set_xticks(workers)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
