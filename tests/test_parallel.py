"""Data-parallel trainers on the Dask workers: dealing, learning, counts, faults, resume."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas4hep_dask import BatchLoader, compute_specs
from mlaas4hep_dask.errors import ConfigError, TrainingError
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.train import train

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "configs" / "models"
PARAMS = {"epochs": 3, "batch_size": 128, "chunk_size": 4000, "seed": 11}
LABELS = [1, 0, 1, 0]

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two signal and two background files of 4000 events."""
    return generate(tmp_path_factory.mktemp("parallel"), events=4000, files=2, seed=21)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


class _Received:
    """Bytes this process receives over Dask's TCP comms (frames counted as they arrive)."""

    def __init__(self) -> None:
        self.bytes = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[_Received]:
        from distributed.comm import tcp

        original = tcp.from_frames

        async def counted(frames: Any, **kwargs: Any) -> Any:
            self.bytes += sum(memoryview(f).nbytes for f in frames)
            return await original(frames, **kwargs)

        tcp.from_frames = counted
        try:
            yield self
        finally:
            tcp.from_frames = original


def _fingerprints(X: np.ndarray) -> list[float]:
    return np.round(X.astype(np.float64) @ np.linspace(1.0, 2.0, X.shape[1]), 6).tolist()


def test_shards_deal_every_event_to_one_rank_in_equal_steps(data: list[Path]) -> None:
    params = {**PARAMS, "chunk_size": 1500}
    specs = compute_specs(data, params, client="sync")
    whole = BatchLoader(data, specs, params, labels=LABELS, client="sync")
    everything = Counter(_fingerprints(np.concatenate([X for X, _ in whole])))
    for world in (2, 3):
        shards = whole.shards(world)
        seen: Counter[float] = Counter()
        steps = []
        for shard in shards:
            loader = BatchLoader(data, specs, params, labels=LABELS, client="sync", shard=shard)
            batches = list(loader)
            steps.append(len(batches))
            sizes = [len(y) for _, y in batches]
            assert max(sizes) - min(sizes) <= 1  # even batches: no short last one on some rank
            assert max(sizes) <= -(-PARAMS["batch_size"] // world)  # a step's batch is split over the ranks
            seen.update(_fingerprints(np.concatenate([X for X, _ in batches])))
            # each rank keeps the class balance of the whole split
            y = np.concatenate([y for _, y in batches])
            assert abs(y.mean() - 0.5) < 0.02
        assert len(set(steps)) == 1, steps
        assert seen == everything  # every event once, across the ranks
        # shuffles are seeded by rank: the ranks' first batches are not the same events in the same order
        firsts = [
            next(iter(BatchLoader(data, specs, params, labels=LABELS, client="sync", shard=s)))[1][:20]
            for s in shards
        ]
        assert not all(np.array_equal(firsts[0], f) for f in firsts[1:])
    # a batch per trainer: each rank takes that many events a step, every event still once
    per_trainer = {**params, "batch_size_per_trainer": 96}
    whole = BatchLoader(data, specs, per_trainer, labels=LABELS, client="sync")
    assert max(len(y) for _, y in whole) == 96  # one trainer: a batch of that size
    shards = whole.shards(2)
    seen = Counter()
    for shard in shards:
        batches = list(BatchLoader(data, specs, per_trainer, labels=LABELS, client="sync", shard=shard))
        assert len(batches) == shard.steps == -(-max(len(s) for s in shards) // 96)
        assert max(len(y) for _, y in batches) <= 96
        seen.update(_fingerprints(np.concatenate([X for X, _ in batches])))
    assert seen == everything


def test_two_torch_trainers_learn_like_one_and_no_batch_reaches_the_client(
    data: list[Path], client: Any, tmp_path: Path
) -> None:
    received = _Received()
    with received.counting():
        one = train(data, MODELS / "torch_model.py", PARAMS, LABELS, out=tmp_path / "one", client=client)
        client_side = received.bytes
        received.bytes = 0
        two = train(
            data, MODELS / "torch_model.py", PARAMS, LABELS, out=tmp_path / "two", client=client, trainers=2
        )
        on_workers = received.bytes
    assert one.metrics["final"]["trainers"] == 1
    assert two.metrics["final"]["trainers"] == 2
    assert abs(two.metrics["final"]["val_auc"] - one.metrics["final"]["val_auc"]) < 0.01
    assert two.metrics["final"]["val_auc"] > 0.78
    assert [row["epoch"] for row in two.metrics["epochs"]] == [1, 2, 3]
    assert len(two.metrics["final"]["data_wait"]) == 2
    # the client-side trainer received the training events of 3 epochs (less those an epoch's
    # last chunks share with the next one's first, kept); the trainers on the workers sent the
    # client only weights, metrics and the scores of the held-out events
    loader = BatchLoader(data, one.path / "specs.json", PARAMS, labels=LABELS, client="sync")
    run = loader._executor
    sent = [run.result(run.submit(loader._task(p))) for p in range(len(loader.dataset.partitions))]
    train_bytes = sum(a.nbytes for packed in sent for a in packed if a is not None)  # one epoch, as sent
    assert client_side > 2.5 * train_bytes
    # packed events are small (this data: 3 MB an epoch): held-out scores and weights are not
    assert on_workers < train_bytes / 2, (on_workers, train_bytes)
    # a bundle trained by 2 ranks has the form of one trained by 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    bundles = [json.loads((tmp_path / r / "bundle.json").read_text()) for r in ("one", "two")]
    assert bundles[0].keys() == bundles[1].keys()
    assert bundles[0]["features"] == bundles[1]["features"]


def test_a_batch_per_trainer_learns_like_one_trainer_with_the_threads_set(
    data: list[Path], client: Any, tmp_path: Path
) -> None:
    from mlaas4hep_dask.fit._data_parallel import thread_counts

    params = {**PARAMS, "batch_size_per_trainer": 128, "lr_scaling": "linear", "warmup_epochs": 1}
    one = train(data, MODELS / "torch_model.py", params, LABELS, out=tmp_path / "one", client=client)
    two = train(
        data, MODELS / "torch_model.py", params, LABELS, out=tmp_path / "two", client=client, trainers=2
    )
    assert abs(two.metrics["final"]["val_auc"] - one.metrics["final"]["val_auc"]) < 0.01
    steps = two.metrics["final"]["step_times"]
    cores = client.scheduler_info()["workers"].values()
    assert [s["threads"] for s in steps] == [thread_counts(w["nthreads"]) for w in cores]
    train_events = sum(
        BatchLoader(data, one.path / "specs.json", params, labels=LABELS, client="sync").counts
    )
    # the step's batch grew with the trainers: half the steps of one trainer
    assert [s["steps"] for s in steps] == [3 * -(-train_events // 256)] * 2
    assert one.metrics["final"]["step_times"][0]["steps"] == 3 * -(-train_events // 128)
    for s in steps:  # every phase of a step timed, and together less than the training
        assert all(s[k] > 0 for k in ("batch", "compute", "all_reduce", "optimizer"))
        assert sum(s[k] for k in ("data", "batch", "compute", "all_reduce", "optimizer")) < 1.0


def test_every_train_event_is_seen_once_per_epoch_across_the_ranks(
    data: list[Path], client: Any, tmp_path: Path
) -> None:
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    model = tmp_path / "model.py"
    model.write_text(
        f"""
import os
import numpy as np
import torch

class Recorder(torch.nn.Module):
    def __init__(self, idim):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(idim, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        self.weights = torch.from_numpy(np.linspace(1.0, 2.0, idim))

    def forward(self, X):
        if self.training:  # the rows this rank trains on, appended to its own file
            with open(os.path.join({str(seen_dir)!r}, f"{{os.getpid()}}.bin"), "ab") as f:
                f.write(np.round(X.double() @ self.weights, 6).numpy().tobytes())
        return self.net(X)

def model(idim):
    return Recorder(idim)
"""
    )
    params = {**PARAMS, "epochs": 2}
    run = train(data, model, params, LABELS, out=tmp_path / "run", client=client, trainers=2)
    files = sorted(seen_dir.glob("*.bin"))
    assert len(files) == 2  # one trainer process per worker
    seen = Counter(np.concatenate([np.frombuffer(f.read_bytes()) for f in files]).tolist())
    loader = BatchLoader(data, run.path / "specs.json", params, labels=LABELS, client="sync")
    expected = Counter(_fingerprints(np.concatenate([X for X, _ in loader])))
    assert seen == Counter({k: 2 * v for k, v in expected.items()})  # 2 epochs, each event once in each


def test_keras_trains_with_two_trainers(data: list[Path], client: Any, tmp_path: Path) -> None:
    run = train(
        data, MODELS / "keras_model.py", PARAMS, LABELS, out=tmp_path / "run", client=client, trainers=2
    )
    assert run.metrics["final"]["trainers"] == 2
    assert run.metrics["final"]["val_auc"] > 0.78
    from mlaas4hep_dask.bundle._bundle import load_bundle

    bundle = load_bundle(run.path)  # saved in Keras's own format, loaded back on its default backend
    assert bundle.manifest["framework"] == "keras"
    loader = BatchLoader(data, bundle.specs, bundle.params, labels=LABELS, split="test", client="sync")
    chunk = next(loader.iter_chunks(shuffle=False))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(chunk.y, bundle.predict_features(chunk.X)) > 0.78


def test_xgboost_trains_on_as_many_workers_as_trainers(data: list[Path], client: Any, tmp_path: Path) -> None:
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        run = train(
            data, MODELS / "xgboost_model.py", PARAMS, LABELS, out=tmp_path / "run", client=client, trainers=1
        )
    assert run.metrics["final"]["val_auc"] > 0.78
    trained_on = {t["worker"] for t in stream.data if str(t["key"]).lstrip("('").startswith("fn-")}
    assert len(trained_on) == 1


def test_what_cannot_be_data_parallel_is_refused_in_one_line(
    data: list[Path], client: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="scikit-learn model trains in one process"):
        train(
            data, MODELS / "sklearn_model.py", PARAMS, LABELS, out=tmp_path / "a", client=client, trainers=2
        )
    with pytest.raises(ConfigError, match=r"--trainers 3: the cluster has 2 workers"):
        train(data, MODELS / "torch_model.py", PARAMS, LABELS, out=tmp_path / "b", client=client, trainers=3)
    with pytest.raises(ConfigError, match="run on the workers of a Dask cluster"):
        train(
            data, MODELS / "torch_model.py", PARAMS, LABELS, out=tmp_path / "c", client="threads", trainers=2
        )
    with pytest.raises(ConfigError, match="'trainers' must be a positive number or 'all'"):
        train(data, MODELS / "torch_model.py", {"trainers": 0}, LABELS, out=tmp_path / "d", client="threads")
    with pytest.raises(ConfigError, match="not a run directory"):
        train(None, None, resume=tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"run\.json' cannot be read"):
        train(None, None, resume=tmp_path / "e")
    from mlaas4hep_dask.config._params import Params
    from mlaas4hep_dask.fit._checkpoint import write_record

    write_record(tmp_path / "e", list(map(str, data)), LABELS, Params(), None, None, "auto")
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(None, None, resume=tmp_path / "e")
    with pytest.raises(ConfigError, match="give no other inputs"):
        train(data, None, resume=tmp_path / "e")


def _worker_pids(client: Any) -> dict[str, int]:
    return client.run(os.getpid)


@pytest.mark.parametrize("restarts", [2, 0])
def test_a_worker_killed_mid_training_resumes_or_fails_in_one_line(
    data: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, restarts: int
) -> None:
    import dask
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    caplog.set_level("INFO", logger="mlaas4hep_dask")
    run_dir = tmp_path / "run"
    params = {**PARAMS, "epochs": 6, "batch_size": 32}
    outcome: dict[str, Any] = {}
    with (
        dask.config.set({"mlaas4hep.train.restarts": restarts}),
        local_cluster(2) as cluster,
        Client(cluster) as client,
    ):
        pids = _worker_pids(client)

        def go() -> None:
            try:
                outcome["run"] = train(
                    data, MODELS / "torch_model.py", params, LABELS, out=run_dir, client=client, trainers=2
                )
            except Exception as err:  # what the user would see
                outcome["error"] = err
            outcome["end"] = time.monotonic()

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoint.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "checkpoint.json").is_file(), "no checkpoint was written"
        victim = sorted(pids)[1]  # rank 1's worker
        os.kill(pids[victim], signal.SIGKILL)
        killed = time.monotonic()
        thread.join(timeout=300)
    assert "end" in outcome
    assert outcome["end"] - killed < 120
    if restarts == 0:  # not allowed to resume: one line that names the lost worker
        message = str(outcome["error"])
        assert isinstance(outcome["error"], TrainingError), message
        assert victim in message
        assert "lost" in message
        assert "\n" not in message
        return
    assert "error" not in outcome, outcome["error"]  # a checkpoint and a worker remain: it resumes
    run = outcome["run"]
    assert [row["epoch"] for row in run.metrics["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert run.metrics["final"]["val_auc"] > 0.78
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(victim in w and "resuming from its last checkpoint" in w for w in warnings), warnings


def test_resume_continues_a_run_stopped_after_epoch_one(data: list[Path], tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(
        (MODELS / "torch_model.py").read_text()
        + "\n\nimport time\n_build = model\n\n\nclass Slow(torch.nn.Module):\n"
        "    def __init__(self, idim):\n        super().__init__()\n        self.net = _build(idim)\n\n"
        "    def forward(self, X):\n        if self.training:\n            time.sleep(0.01)\n"
        "        return self.net(X)\n\n\ndef model(idim):\n    return Slow(idim)\n"
    )
    files = ",".join(map(str, data))
    params = tmp_path / "params.json"
    params.write_text(json.dumps(PARAMS))
    args = ["--files", files, "--labels", "1,0,1,0", "--model", str(model), "--params", str(params)]
    cli = [sys.executable, "-m", "mlaas4hep_dask.cli._main", "train", "--cluster", "threads", "-q"]
    run_dir = tmp_path / "run"
    # the same run, never stopped, runs meanwhile (the one to stop sleeps in every batch)
    with open(tmp_path / "whole.log", "w") as log:
        whole = subprocess.Popen([*cli, *args, "--out", str(tmp_path / "whole")], stdout=log, stderr=log)
    proc = subprocess.Popen(
        [*cli, *args, "--out", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    meta = run_dir / "checkpoint.json"
    while time.monotonic() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["epoch"] >= 1:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert json.loads(meta.read_text())["epoch"] == 1
    assert not (run_dir / "metrics.json").exists()

    done = subprocess.run([*cli, "--resume", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    # the same run, never stopped: the same shuffles, the same weights, the same result
    assert whole.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()
    uninterrupted = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["final"]["val_auc"] == pytest.approx(uninterrupted["final"]["val_auc"], abs=1e-6)


def test_trainers_fed_by_the_other_workers_of_a_tls_cluster(
    data: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster that admits only its own (``--tls``, as each service job has): the trainers'
    processes reach its scheduler with the workers' certificate, the third worker feeds them."""
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    with local_cluster(3, secure=True) as cluster, Client(cluster) as c:
        assert cluster.scheduler_address.startswith("tls://")
        caplog.set_level("INFO", logger="mlaas4hep_dask")
        run = train(
            data, MODELS / "torch_model.py", {**PARAMS, "epochs": 1}, LABELS,
            out=tmp_path / "run", client=c, trainers=2,
        )  # fmt: skip
    assert run.metrics["final"]["trainers"] == 2
    assert "training on 2 workers (fed by the other workers)" in caplog.text


def test_a_cluster_with_gpus_trains_one_trainer_per_gpu_by_default(data: list[Path], tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from mlaas4hep_dask.fit._data_parallel import thread_counts

    # two workers that declare a GPU each (as dask-cuda's and a batch farm's do); the trainers
    # then find none and train on the CPU, so the choice is tested where CI has no GPU
    params = {**PARAMS, "epochs": 1}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, resources={"GPU": 1}, processes=True) as cluster,
        Client(cluster) as gpus,
    ):
        run = train(data, MODELS / "torch_model.py", params, LABELS, out=tmp_path / "gpu", client=gpus)
    assert run.metrics["final"]["trainers"] == 2
    assert [s["threads"] for s in run.metrics["final"]["step_times"]] == [thread_counts(1)] * 2
