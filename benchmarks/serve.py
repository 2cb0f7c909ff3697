"""Inference service throughput and latency on loopback: single-event and 1000-event requests.

Usage: ``python benchmarks/serve.py [--requests 400] [--clients 1 4 16]``

Trains a small PyTorch model on generated data, starts ``mlaas4hep serve`` in its own process
on 127.0.0.1, uploads the model, then for each request size and number of concurrent clients
sends a bounded number of raw-event requests and reports requests/s, events/s, p50 and p99
latency.  Every request is checked for a 200 answer.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awkward as ak
import httpx
import numpy as np
import uproot

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(path: Path, columns: list[str], n: int) -> list[dict]:
    arrays = uproot.open(path)["events"].arrays(columns, entry_stop=n)
    return ak.to_list(arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 1000], help="events per request")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args()

    from mlaas4hep_dask.bundle import load_bundle
    from mlaas4hep_dask.generate import generate
    from mlaas4hep_dask.serve import pack
    from mlaas4hep_dask.train import train

    work = Path(tempfile.mkdtemp(prefix="mlaas4hep-serve-bench-"))
    files = generate(work / "data", events=20_000, files=1, seed=3)
    run = train(
        files,
        ROOT / "configs/models/torch_model.py",
        {"epochs": 1},
        labels=[1, 0],
        out=work / "run",
        client="threads",
    )
    columns = list(load_bundle(run.path).plan.columns)
    events = _events(files[0], columns, max(args.sizes))

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlaas4hep_dask.cli",
            "serve",
            "--repo",
            str(work / "repo"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        upload = httpx.post(
            f"{url}/upload",
            files={"file": ("run.tar.gz", pack(run.path))},
            data={"name": "bench"},
            timeout=120,
        )
        upload.raise_for_status()

        rows = []
        for size in args.sizes:
            body = json.dumps({"events": events[:size]})
            for clients in args.clients:
                latencies: list[float] = []

                def one(client: httpx.Client, body: str = body, latencies: list[float] = latencies) -> None:
                    start = time.perf_counter()
                    response = client.post(
                        f"{url}/predict/bench", content=body, headers={"content-type": "application/json"}
                    )
                    latencies.append(time.perf_counter() - start)
                    if response.status_code != 200:
                        raise RuntimeError(response.text)

                with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
                    one(client)  # warm-up: the model is loaded on first use
                    latencies.clear()
                    start = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=clients) as pool:
                        list(pool.map(lambda _: one(client), range(args.requests)))
                    seconds = time.perf_counter() - start
                p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                rate = args.requests / seconds
                rows.append(
                    {"events_per_request": size, "clients": clients, "requests_per_s": rate,
                     "events_per_s": rate * size, "p50_ms": p50, "p99_ms": p99}
                )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)

    names = ("events/request", "clients", "requests/s", "events/s", "p50 ms", "p99 ms")
    header = " ".join(f"{n:>{w}}" for n, w in zip(names, (14, 7, 10, 10, 7, 7), strict=True))
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['events_per_request']:>14} {r['clients']:>7} {r['requests_per_s']:>10.1f} "
            f"{r['events_per_s']:>10.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}"
        )
    args.out.mkdir(exist_ok=True)
    (args.out / "serve-benchmark.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
