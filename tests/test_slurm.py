"""``--cluster slurm`` on a real Slurm (munged, slurmctld, slurmd on loopback): results, scaling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlaas4hep_dask.generate import generate

from ._slurm import missing, slurm, squeue

ROOT = Path(__file__).resolve().parent.parent
WHY = missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}"),
]


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with slurm(tmp_path_factory.mktemp("slurm")) as conf:
        yield conf


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate(tmp_path_factory.mktemp("slurm-data"), events=3000, files=1, seed=5)


def _jobqueue(folder: Path) -> dict[str, Any]:
    """dask-jobqueue's settings for the test Slurm: 1-core workers on loopback."""
    return {
        "cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00", "interface": "lo",
        "log-directory": str(folder / "slurm-logs"), "local-directory": str(folder / "slurm-work"),
        "job-extra-directives": [f"--chdir={folder}"], "death-timeout": 60,
    }  # fmt: skip


def _cli(args: list[str], conf: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cmd = [sys.executable, "-m", "mlaas4hep_dask.cli._main", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_same_workflow_on_slurm_and_on_a_local_cluster(
    slurm_conf: Path, data: list[Path], tmp_path: Path
) -> None:
    config = tmp_path / "slurm.yaml"
    config.write_text(json.dumps({"jobqueue": {"slurm": _jobqueue(tmp_path)}}))  # JSON is YAML
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochs": 2, "chunk_size": 1500, "seed": 3}))
    files = ",".join(map(str, data))
    model = str(ROOT / "configs" / "models" / "sklearn_model.py")
    runs = {}
    for kind, extra in (("slurm", ["--cluster-config", str(config)]), ("local", [])):
        common = ["--files", files, "--params", str(params), "--cluster", kind, "--workers", "2", *extra]
        trained = _cli(
            ["train", *common, "--labels", "1,0", "--model", model, "--out", str(tmp_path / kind), "-q"],
            slurm_conf, tmp_path,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        runs[kind] = json.loads((tmp_path / kind / "metrics.json").read_text())
    specs = [
        json.loads((tmp_path / k / "specs.json").read_text()) for k in ("slurm", "local")
    ]  # its specs pass
    assert specs[0]["branches"] == specs[1]["branches"]
    assert [e["val_auc"] for e in runs["slurm"]["epochs"]] == [e["val_auc"] for e in runs["local"]["epochs"]]
    assert runs["slurm"]["final"]["test_auc"] == runs["local"]["final"]["test_auc"]
    assert list((tmp_path / "slurm-logs").glob("*.err"))  # the workers were Slurm jobs


def test_adaptive_scaling_adds_and_removes_slurm_jobs(slurm_conf: Path, tmp_path: Path) -> None:
    import dask
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    os.environ["SLURM_CONF"] = str(slurm_conf)
    settings = {f"jobqueue.slurm.{k}": v for k, v in _jobqueue(tmp_path).items()}
    with (
        dask.config.set(settings | {"jobqueue.slurm.name": "mlaas4hep-adapt"}),
        SLURMCluster() as cluster,
        Client(cluster) as client,
    ):
        cluster.adapt(minimum=0, maximum=2, interval="500ms", wait_count=2, target_duration="1s")
        assert squeue(slurm_conf).count("mlaas4hep-adapt") == 0  # nothing to do: no job
        futures = client.map(_busy, range(8), pure=False)  # 8 tasks of 1.5 s: more workers wanted
        seen = _until(lambda: squeue(slurm_conf).count("mlaas4hep-adapt") or None, 60)
        assert sum(client.gather(futures)) == sum(range(8))
        assert seen >= 1
        del futures
        _until(lambda: squeue(slurm_conf).count("mlaas4hep-adapt") == 0 or None, 90)  # idle: removed


def _busy(i: int) -> int:
    time.sleep(1.5)
    return i


def _until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s")


def test_a_worker_job_cancelled_mid_training_is_survived(
    slurm_conf: Path, data: list[Path], tmp_path: Path
) -> None:
    config = tmp_path / "slurm.yaml"
    config.write_text(json.dumps({"jobqueue": {"slurm": _jobqueue(tmp_path) | {"name": "mlaas4hep-cancel"}}}))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochs": 12, "chunk_size": 1500, "batch_size": 32, "seed": 3}))
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "mlaas4hep_dask.cli._main", "train", "--files", ",".join(map(str, data)),
        "--labels", "1,0", "--model", str(ROOT / "configs" / "models" / "torch_model.py"),
        "--params", str(params), "--cluster", "slurm", "--cluster-config", str(config),
        "--workers", "2", "--trainers", "2", "--out", str(run), "-q",
    ]  # fmt: skip
    env = {**os.environ, "SLURM_CONF": str(slurm_conf)}
    with open(tmp_path / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=log)
        start = time.monotonic()
        _until(lambda: (run / "checkpoint.json").exists() or proc.poll() is not None, 240)
        assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
        jobs = subprocess.run(
            ["squeue", "-h", "-n", "mlaas4hep-cancel", "-o", "%i"], env=env, capture_output=True, text=True
        ).stdout.split()
        assert len(jobs) == 2
        subprocess.run(["scancel", jobs[-1]], env=env, check=True)  # a worker job ends mid-training
        cancelled = time.monotonic()
        proc.wait(timeout=180)
    printed = (tmp_path / "train.log").read_text()
    assert time.monotonic() - cancelled < 120, "the training neither recovered nor failed within 2 minutes"
    assert proc.returncode == 0, printed[-3000:]  # resumed from its checkpoint on the worker left
    assert "was lost" in printed
    assert "resuming from its last checkpoint" in printed
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert time.monotonic() - start < 300
