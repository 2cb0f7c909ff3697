"""Scale-out: the same results on every kind of cluster, surviving a killed worker, and campaigns."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep_dask import compute_specs
from mlaas4hep_dask.cli._main import main
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.scale._cluster import local_cluster
from mlaas4hep_dask.train import train

from ._servers import free_port
from ._service import worker_pid_running

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "configs" / "models" / "sklearn_model.py"
PARAMS = {
    "tree": "events",
    "chunk_size": 2500,
    "epochs": 2,
    "batch_size": 256,
    "identifier": ["run", "event"],
    "exclude_branches": ["weight"],
    "seed": 3,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate(tmp_path_factory.mktemp("scaleout"), events=20_000, files=1, seed=11)


@pytest.fixture(scope="module")
def reference(data: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ref")
    specs = compute_specs(data, PARAMS, client="threads")
    run = train(data, MODEL, PARAMS, labels=[1, 0], specs=specs, out=out / "run", client="threads")
    return {"specs": specs.to_dict(), "metrics": run.metrics["final"]}


@pytest.fixture(scope="module")
def dask_pair() -> Iterator[str]:
    """A separately started ``dask scheduler`` and ``dask worker`` on loopback."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli"]
    scheduler = subprocess.Popen(
        [
            *dask[:2],
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            *dask[:2],
            "distributed.cli.dask_worker",
            address,
            "--nthreads",
            "1",
            "--nworkers",
            "2",
            "--host",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)


def _same_specs(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Identical, but for the last bits of mean and std (float sums whose order follows data placement)."""
    assert {k: v for k, v in got.items() if k != "branches"} == {
        k: v for k, v in want.items() if k != "branches"
    }
    assert list(got["branches"]) == list(want["branches"])
    for name, branch in want["branches"].items():
        for key, value in branch.items():
            if key in ("mean", "std", "mean_len") and value is not None:
                assert got["branches"][name][key] == pytest.approx(value, rel=1e-12), (name, key)
            else:
                assert got["branches"][name][key] == value, (name, key)


def _same_metrics(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("val_auc", "val_loss", "test_auc", "test_loss", "events_trained"):
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("where", ["processes", "local", "address"])
def test_every_cluster_gives_the_same_specs_and_metrics(
    where: str, data: list[Path], reference: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from distributed import Client

    if where == "processes":
        target: Any = "processes"
        specs = compute_specs(data, PARAMS, client=target)
        run = train(data, MODEL, PARAMS, labels=[1, 0], specs=specs, out=tmp_path / "run", client=target)
    else:
        cluster = local_cluster(2) if where == "local" else None
        address = cluster.scheduler_address if cluster else request.getfixturevalue("dask_pair")
        try:
            with Client(address) as client:
                specs = compute_specs(data, PARAMS, client=client)
                run = train(
                    data, MODEL, PARAMS, labels=[1, 0], specs=specs, out=tmp_path / "run", client=client
                )
        finally:
            if cluster is not None:
                cluster.close()
    _same_specs(specs.to_dict(), reference["specs"])
    _same_metrics(run.metrics["final"], reference["metrics"])


def _kill_a_busy_worker(client: Any, stop: threading.Event) -> list[int]:
    """Kill (SIGKILL) the first worker seen running a task; return its pid."""
    while not stop.is_set():
        pid = worker_pid_running(client)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            return [pid]
        time.sleep(0.05)
    return []


def test_a_worker_killed_during_specs_and_training_changes_nothing(
    data: list[Path], reference: dict[str, Any], tmp_path: Path
) -> None:
    from distributed import Client

    cluster = local_cluster(2)
    try:
        with Client(cluster) as client:
            results: dict[str, Any] = {}
            stop = threading.Event()
            killer = threading.Thread(
                target=lambda: results.setdefault("killed", _kill_a_busy_worker(client, stop))
            )
            killer.start()
            specs = compute_specs(data, PARAMS, client=client)
            stop.set()
            killer.join()
            assert results["killed"], "no worker was killed during the specs pass"
            _same_specs(specs.to_dict(), reference["specs"])

            client.wait_for_workers(2, timeout=60)  # the nanny restarted it
            stop = threading.Event()
            results.clear()
            killer = threading.Thread(
                target=lambda: results.setdefault("killed", _kill_a_busy_worker(client, stop))
            )
            killer.start()
            run = train(data, MODEL, PARAMS, labels=[1, 0], specs=specs, out=tmp_path / "run", client=client)
            stop.set()
            killer.join()
            assert results["killed"], "no worker was killed during training"
            _same_metrics(run.metrics["final"], reference["metrics"])
    finally:
        cluster.close()


def test_a_campaign_trains_a_grid_and_compares_it(
    data: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    (tmp_path / "crash.py").write_text("def model():\n    raise RuntimeError('no model today')\n")
    campaign = {
        "out": "out",
        "files": [str(p) for p in data],
        "labels": "1,0",
        "params": "params.json",
        "runs": [{"name": "crash", "model": "crash.py"}],
        "grid": {
            "model": [str(MODEL)],
            "params.epochs": [1, 2],
            "preproc": [None, {"flat_cut": {"nJets": {"cut": "nJets >= 5"}}}],
        },
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign))
    assert main(["campaign", str(path), "--cluster", "threads"]) == 1  # one run failed
    printed = capsys.readouterr().out
    assert "crash failed: model file" in printed
    assert "no model today" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    names = [r["name"] for r in summary]
    assert names[:2] == ["crash", "sklearn_model-epochs=1-preproc=none"]
    assert re.fullmatch(r"sklearn_model-epochs=1-preproc=[0-9a-f]{8}", names[2])
    assert names[3:] == ["sklearn_model-epochs=2-preproc=none", names[2].replace("epochs=1", "epochs=2")]
    ok = [r for r in summary if r["state"] == "succeeded"]
    assert len(ok) == 4
    assert all(r["val_auc"] > 0.7 for r in ok)
    # the cut keeps fewer events: its runs trained on fewer
    assert ok[1]["events_trained"] < ok[0]["events_trained"]
    assert (tmp_path / "out" / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out" / "summary.csv").read_text().count("\n") == 6
