"""Inference service throughput and latency on loopback, against the serving floor, in one run.

Usage: ``python benchmarks/serve.py [--seconds 8] [--workers 1]``

Trains a small PyTorch model on generated data, without preprocessing and with the demo's
``configs/preproc.json`` (new branches, flat and jagged cuts: the ``pre-`` rows), starts
``mlaas4hep serve`` in its own process on 127.0.0.1 and uploads both (a second server scores the
same repository with ``--runtime onnx``: the ``onnx`` rows); starts the floor beside it
(``benchmarks/_floor.py``: the same bundle's model behind the thinnest ASGI app that decodes
prepared rows and calls it), and the peer server, Seldon MLServer with its XGBoost runtime
(installed in a venv of its own under ``--out`` on first use), serving an XGBoost bundle's
booster: the ``v2-rows`` rows send both servers the same open-inference-protocol requests.
The load comes from ``wrk`` (Debian's ``wrk``: a native load generator, so the client is
not the bottleneck; ``make bench`` installs it where it can),
each row for ``--seconds``: single raw events with 1 and 16 connections, 1000-event
requests (raw events as JSON objects, as an ``.npz`` of branches and as an Arrow IPC stream
written by ``ak.to_arrow_table``, prepared rows as JSON
and as a ``.npy`` body) with 4 connections; the floor's JSON rows alike.  Every row reports
requests/s, events/s, p50 and p99, and the share of answers that were not 200.
Writes ``serve-benchmark.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import httpx
import numpy as np
import pyarrow as pa
import uproot

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WIDTHS = (7, 19, 6, 12, 12, 8, 8, 8)
_TYPES = {
    ".json": "application/json",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".arrow": "application/vnd.apache.arrow.stream",
}
_LUA = """
local f = io.open(os.getenv("BODY"), "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = os.getenv("TYPE")
"""


#: The peer server: Seldon MLServer with its XGBoost runtime, in a venv of its own.
_PEER = ("mlserver==1.7.*", "mlserver-xgboost==1.7.*")
#: What both servers get of the same XGBoost bundle: (request body, connections).
PEER_ROWS = (("v2-rows-1", 1), ("v2-rows-1", 16), ("v2-rows-1000", 4))


def _peer_venv(out: Path) -> Path | None:
    """MLServer's own virtual environment (made once under ``out``); ``None`` if it cannot be."""
    venv = out / "mlserver-venv"
    exe = venv / "bin" / "mlserver"
    if not exe.exists():
        print("installing the peer server (Seldon MLServer + its XGBoost runtime) ...", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False).returncode == 0
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *_PEER]
        if not made or subprocess.run(pip, check=False, capture_output=True).returncode != 0:
            print("could not install MLServer: the peer rows are left out", flush=True)
            return None
    return exe


def _start_peer(exe: Path, booster: Path, folder: Path, port: int) -> subprocess.Popen[bytes]:
    """MLServer serving ``booster`` as model ``peer`` on ``port`` (REST only matters here)."""
    (folder / "peer").mkdir(parents=True)
    shutil.copy(booster, folder / "peer" / booster.name)
    settings = {
        "name": "peer",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": f"./{booster.name}"},
    }
    (folder / "peer" / "model-settings.json").write_text(json.dumps(settings))
    ports = {
        "http_port": port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(ports))
    return subprocess.Popen(
        [str(exe), "start", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, ready: str = "/healthz") -> None:
    """Until ``url + ready`` answers 200 (two minutes at most)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}{ready}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not start")
        time.sleep(0.2)


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise RuntimeError(f"wrk printed a latency this script cannot read: {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def _wrk(url: str, body: Path, connections: int, seconds: int, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 in ms, and the fraction of non-200 answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
        env={"BODY": str(body), "TYPE": _TYPES[body.suffix], "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rate,
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "errors": (int(bad.group(1)) / max(total, 1)) if bad else 0.0,
    }


def _v2_rows(X: np.ndarray) -> dict[str, object]:
    """An open-inference-protocol request of prepared rows (JSON tensor data)."""
    tensor = {"name": "features", "datatype": "FP32", "shape": list(X.shape), "data": X.ravel().tolist()}
    return {"inputs": [tensor]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="seconds per row")
    parser.add_argument("--workers", type=int, default=1, help="mlaas4hep serve --workers")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/serve.py needs wrk (apt-get install wrk; make bench installs it)")

    from mlaas4hep_dask.bundle._bundle import load_bundle
    from mlaas4hep_dask.generate import generate
    from mlaas4hep_dask.serve import pack
    from mlaas4hep_dask.train import train

    work = Path(tempfile.mkdtemp(prefix="mlaas4hep-serve-bench-"))
    files = generate(work / "data", events=20_000, files=1, seed=3)
    model = ROOT / "configs/models/torch_model.py"
    run = train(files, model, {"epochs": 1}, labels=[1, 0], out=work / "run", client="threads")
    bundle = load_bundle(run.path)
    raw = uproot.open(files[0])["events"].arrays(list(bundle.plan.columns), entry_stop=1000)
    events = ak.to_list(raw)
    X, _ = bundle.layout.transform(bundle.plan.select(raw).record)
    # the demo's recipe: new flat and jagged branches, flat and jagged cuts
    recipe = ROOT / "configs/preproc.json"
    pre = train(
        files, model, {"epochs": 1}, labels=[1, 0], preproc=recipe, out=work / "pre", client="threads"
    )
    # the peer comparison: one XGBoost bundle, prepared rows over the open inference protocol
    xgb = train(files, ROOT / "configs/models/xgboost_model.py", {"epochs": 1}, labels=[1, 0],
                out=work / "xgb", client="threads")  # fmt: skip
    pre_columns = list(load_bundle(pre.path).plan.columns)
    pre_events = ak.to_list(uproot.open(files[0])["events"].arrays(pre_columns, entry_stop=1000))
    bodies = {
        "raw-1": {"events": events[:1]},
        "raw-1000": {"events": events},
        "rows-1": {"inputs": X[:1].tolist()},
        "rows-1000": {"inputs": X.tolist()},
        "pre-raw-1": {"events": pre_events[:1]},
        "pre-raw-1000": {"events": pre_events},
        **{f"v2-rows-{n}": _v2_rows(X[:n]) for n in (1, 1000)},
    }
    for name, body in bodies.items():
        (work / f"{name}.json").write_text(json.dumps(body))
    np.save(work / "npy-1000.npy", X)
    # raw events branch by branch (a jagged branch: its items and NAME.counts), as uproot gives them
    for name, columns in (("npz-raw-1000", list(bundle.plan.columns)), ("pre-npz-raw-1000", pre_columns)):
        arrays = uproot.open(files[0])["events"].arrays(columns, entry_stop=1000)
        flat = {k: ak.to_numpy(arrays[k]) for k in arrays.fields if arrays[k].ndim == 1}
        jagged = {k: ak.to_numpy(ak.flatten(arrays[k])) for k in arrays.fields if arrays[k].ndim == 2}
        counts = {f"{k}.counts": ak.to_numpy(ak.num(arrays[k])) for k in jagged}
        np.savez(work / f"{name}.npz", **flat, **jagged, **counts)
        with pa.ipc.new_stream(
            work / f"{name.replace('npz', 'arrow')}.arrow",
            (t := ak.to_arrow_table(arrays, extensionarray=False)).schema,
        ) as out:
            out.write_table(t)
    script = work / "post.lua"
    script.write_text(_LUA)

    ours_port, onnx_port, floor_port, peer_port = _free_port(), _free_port(), _free_port(), _free_port()
    serve = [sys.executable, "-m", "mlaas4hep_dask.cli._main", "serve", "--repo", str(work / "repo")]
    serve += ["--workers", str(args.workers)]
    servers = [
        subprocess.Popen([*serve, "--port", str(ours_port)], stdout=subprocess.DEVNULL),
        # the same repository, scored by ONNX Runtime (model.onnx of the bundles)
        subprocess.Popen([*serve, "--port", str(onnx_port), "--runtime", "onnx"], stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, str(HERE / "_floor.py"), str(run.path), str(floor_port)]),
    ]
    peer_exe = _peer_venv(args.out)
    peer = f"http://127.0.0.1:{peer_port}"
    if peer_exe is not None:
        servers.append(_start_peer(peer_exe, xgb.path / "model.ubj", work / "peer", peer_port))
    ours, floor = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{floor_port}"
    base = {"ours": ours, "onnx": f"http://127.0.0.1:{onnx_port}"}
    plan = [
        ("ours", "raw-1", 1), ("ours", "raw-1", 16), ("ours", "raw-1000", 4), ("ours", "rows-1", 16),
        ("ours", "rows-1000", 4), ("ours", "npy-1000", 4),
        ("ours", "pre-raw-1", 1), ("ours", "pre-raw-1", 16), ("ours", "pre-raw-1000", 4),
        ("ours", "npz-raw-1000", 4), ("ours", "pre-npz-raw-1000", 4),
        ("ours", "arrow-raw-1000", 4), ("ours", "pre-arrow-raw-1000", 4),
        ("onnx", "raw-1", 1), ("onnx", "raw-1", 16), ("onnx", "npz-raw-1000", 4),
        ("onnx", "arrow-raw-1000", 4),
        *(("ours", body, n) for body, n in PEER_ROWS),
        *(("peer", body, n) for body, n in PEER_ROWS if peer_exe),
        ("floor", "rows-1", 1), ("floor", "rows-1", 16), ("floor", "rows-1000", 4),
    ]  # fmt: skip
    rows = []
    try:
        for url in (*base.values(), floor):
            _wait(url)
        if peer_exe is not None:
            _wait(peer, "/v2/models/peer/ready")
        for name, path in (("bench", run.path), ("bench-pre", pre.path), ("bench-xgb", xgb.path)):
            httpx.post(
                f"{ours}/upload", files={"file": ("run.tar.gz", pack(path))}, data={"name": name}, timeout=120
            ).raise_for_status()
        # each server loads a bundle on its first request (bundles uploaded after it started):
        # load them all before measuring, however long that takes
        for url in base.values():
            for name, body in (("bench", "raw-1"), ("bench-pre", "pre-raw-1")):
                sample = (work / f"{body}.json").read_bytes()
                post = httpx.post(f"{url}/predict/{name}", content=sample, timeout=600)
                post.raise_for_status()
        for server, body, connections in plan:
            name = "bench-pre" if body.startswith("pre-") else "bench"
            if body.startswith("v2-"):  # the XGBoost bundle, over the open inference protocol
                url = (
                    f"{peer}/v2/models/peer/infer"
                    if server == "peer"
                    else f"{base[server]}/v2/models/bench-xgb/infer"
                )
            else:
                url = f"{base[server]}/predict/{name}" if server in base else f"{floor}/predict"
            path = next(
                p for p in (work / f"{body}.{ext}" for ext in ("json", "npy", "npz", "arrow")) if p.exists()
            )
            _wrk(url, path, connections, 2, script)  # warm-up: the model is loaded on first use
            result = _wrk(url, path, connections, args.seconds, script)
            size = 1000 if body.endswith("1000") else 1
            row = {"server": server, "request": body, "connections": connections, **result}
            row["events_per_s"] = result["requests_per_s"] * size
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)

    names = ("server", "request", "conns", "requests/s", "events/s", "p50 ms", "p99 ms", "errors")
    print(
        "\n"
        + "".join(
            f"{n:<{w}}" if i < 2 else f"{n:>{w}}" for i, (n, w) in enumerate(zip(names, WIDTHS, strict=True))
        )
    )
    for r in rows:
        print(
            f"{r['server']:<7}{r['request']:<19}{r['connections']:>6}{r['requests_per_s']:>12,.0f}"
            f"{r['events_per_s']:>12,.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['errors']:>8.1%}"
        )
    args.out.mkdir(exist_ok=True)
    (args.out / "serve-benchmark.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
