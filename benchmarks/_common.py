"""Shared helpers of the benchmarks: data sets, a baseline, peak memory of a process tree."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


def ensure_data(folder: Path, events: int, files_per_class: int, seed: int = 11) -> list[Path]:
    """Generated files of ``events`` events in total, written once and reused."""
    from mlaas4hep_dask.generate import generate

    per_file = events // (2 * files_per_class)
    marker = folder / f".complete-{per_file}x{files_per_class}"
    if not marker.exists():
        print(f"generating {events:,} events into {folder} ...", flush=True)
        generate(folder, events=per_file, files=files_per_class, seed=seed)
        marker.touch()
    return [Path(line) for line in (folder / "files.txt").read_text().split()]


def branches_of(files: list[Path] | list[str]) -> list[str]:
    """The branches the pipeline reads by default (what the baseline must read too)."""
    from mlaas4hep_dask.read._dataset import open_dataset

    return list(open_dataset([str(f) for f in files]).branches)


def step_baseline(files: list[str], chunk_size: int, zlib: str, passes: int, tree: str = "events") -> None:
    """Plain ``uproot.iterate`` over the same branches in this process; prints one JSON line.

    ``zlib`` is the library uproot inflates with: ``"zlib"`` is uproot's default, ``"isal"``
    what our pipeline uses (importing it switches uproot to ISA-L, so set it after).  With
    several ``passes``, ``seconds`` is the last one's (steady state) and ``first_seconds`` the
    first's.
    """
    import uproot

    from mlaas4hep_dask.read._inflate import zlib_library

    branches = branches_of(files)
    zlib_library(zlib)

    def one_pass() -> int:
        chunks = uproot.iterate(dict.fromkeys(files, tree), branches, step_size=chunk_size, library="ak")
        return sum(len(chunk) for chunk in chunks)

    print(json.dumps(timed_passes(passes, one_pass)))


def timed_passes(passes: int, one_pass: Callable[[], int]) -> dict[str, Any]:
    """Run ``one_pass`` (which returns its events) ``passes`` times; time the last and the first.

    ``best_seconds`` is the fastest pass after the first (the steady state, least disturbed by
    the machine's other load).
    """
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        events = one_pass()
        times.append(time.perf_counter() - start)
    best = min(times[1:]) if len(times) > 1 else times[0]
    return {"events": events, "seconds": times[-1], "first_seconds": times[0], "best_seconds": best}


def compressed_bytes(files: list[Path], tree: str, branches: list[str]) -> int:
    """Compressed size of the branches read (what crosses the disk or the network)."""
    import uproot

    total = 0
    for path in files:
        t = uproot.open(path)[tree]
        total += sum(t[b].compressed_bytes for b in branches)
    return total


def run_measured(args: list[str]) -> dict[str, Any]:
    """Run ``python args...`` that prints one JSON line; add the peak RSS of its process tree."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {args} failed with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak / 2**20
    return result


def run_step(step: list[str], measure: Callable[[list[str], int, int, str], None]) -> None:
    """In a measured subprocess: ``baseline ZLIB PASSES FILES... CHUNK``, or
    ``KIND FILES... CHUNK WORKERS EXTRA``."""
    kind, *rest = step
    if kind == "baseline":
        step_baseline(rest[2:-1], int(rest[-1]), rest[0], int(rest[1]))
    else:
        measure(rest[:-3], int(rest[-3]), int(rest[-2]), rest[-1])


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Data size, partitioning, workers and scales, shared by the throughput benchmarks."""
    parser.add_argument("--events", type=int, default=2_000_000, help="events at scale 1x")
    parser.add_argument("--files-per-class", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=Path("bench-output"))


def measure_baseline(
    script: str, files: list[str], chunk_size: int, zlib: str = "zlib", passes: int = 1
) -> tuple[dict[str, Any], float]:
    """Run the ``uproot.iterate`` baseline of ``script`` in a fresh process: result and events/s.

    ``zlib="zlib"`` is plain uproot (its default inflater); ``"isal"`` inflates as we do.  The
    rate is the last of ``passes``.
    """
    base = run_measured([script, "--step", "baseline", zlib, str(passes), *files, str(chunk_size)])
    return base, base["events"] / base["seconds"]
