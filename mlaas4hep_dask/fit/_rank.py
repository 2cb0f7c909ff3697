"""One data-parallel trainer: a Dask task on its worker, and the process it starts there.

The task (:func:`run_rank`) writes the trainer's job to a private folder and starts
``python -m mlaas4hep_dask.fit._trainer JOB FD`` (:func:`main`): a process of its own, so that every trainer
has a clean ``torch.distributed`` state and Keras can be put on its torch backend, and so that
a cancel or a dead peer can end it for certain.  The process reads, preprocesses and tensorizes
its shard of the data itself (a :class:`~mlaas4hep_dask.BatchLoader` with a thread pool, on
the worker's machine) or, when the cluster has more workers than trainers, has the other
workers read and tensorize it (``scheduler``: the trainer is a client of the cluster, and
fetches the tensorized partitions straight from the workers), trains the model with its
gradients averaged over the trainers (:mod:`._data_parallel`), and reports on the pipe ``FD``
in JSON lines: progress, epochs, checkpoints, and one error line if it fails.  Rank 0's task
forwards these to the client through a ``distributed.Queue``; batches never reach the client.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.batches._plan import Shard
from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import MLaaSError, TrainingError, first_line
from mlaas4hep_dask.fit._common import (
    OVERTRAINING_SAMPLE,
    EpochClock,
    Fitting,
    StepTimes,
    Task,
    Waited,
    collect,
    metrics,
)
from mlaas4hep_dask.fit._data_parallel import averaging, thread_counts
from mlaas4hep_dask.handle._preprocess import Preproc
from mlaas4hep_dask.handle._rows import Block
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.read._dataset import Dataset

__all__ = ["RankJob", "free_port", "main", "run_rank"]

_PEER_LOST = ("Connection closed by peer", "Connection reset", "Broken pipe", "Timed out", "timed out")


@dataclasses.dataclass(frozen=True)
class RankJob:
    """Everything one trainer needs (pickled to its process)."""

    rank: int
    world: int
    rendezvous: str
    device: str
    dataset: Dataset
    specs: Specs
    params: Params
    recipe: Preproc | None
    labels: list[float] | None
    shards: Mapping[str, Shard]
    model_source: str
    task: Task
    resume: bytes | None
    timeout: float
    threads: int
    scheduler: str | None = None
    store: Any = None  # the Prepared dataset to read instead of the ROOT files
    profile: bool = False  # time a GPU step's phases to their end (a synchronize each)


def free_port() -> tuple[str, int]:
    """A host name and a free TCP port of this worker, for rank 0's rendezvous."""
    import socket

    from distributed import get_worker
    from distributed.comm import get_address_host

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return get_address_host(get_worker().address), port


def run_rank(job: bytes, rank: int, channel: str) -> dict[str, Any]:
    """The Dask task of trainer ``rank``: start its process, relay rank 0's reports, return its result.

    Raises
    ------
    TrainingError
        The trainer failed (its one-line error), or was stopped by the client.
    """
    from distributed import Event, Queue, get_worker

    worker = get_worker()
    stop = Event(f"{channel}-stop")
    relay = Queue(channel) if rank == 0 else None
    with tempfile.TemporaryDirectory(prefix=f"mlaas4hep-trainer-{rank}-") as tmp:
        path = Path(tmp) / "job.pkl"
        path.write_bytes(job)
        if worker.security.require_encryption:  # the trainer's Client needs this cluster's certificate
            secret = path.with_suffix(".security")  # in a folder of this user's only, removed after
            secret.touch(mode=0o600)
            secret.write_bytes(pickle.dumps(worker.security))
        read, write = os.pipe()
        env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env["OMP_NUM_THREADS"] = str(thread_counts(worker.state.nthreads)["torch"])  # the worker's cores
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlaas4hep_dask.fit._trainer", str(path), str(write)],
            pass_fds=(write,), env=env, cwd=tmp,
        )  # fmt: skip
        os.close(write)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            with os.fdopen(read) as pipe:
                for line in pipe:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        error: dict[str, Any] | None = None
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if stop.is_set():
                    proc.kill()
                    proc.wait()
                    raise TrainingError(
                        f"trainer {rank} on {worker.address} was stopped", peer=True
                    ) from None
                continue
            if line is None:
                break
            message = json.loads(line)
            if message["kind"] == "error":
                error = message
            elif relay is not None:
                if message["kind"] == "checkpoint":
                    message["state"] = Path(message.pop("path")).read_bytes()
                relay.put(message)
        rc = proc.wait()
        if error is not None or rc != 0:
            text = error["message"] if error else f"its process exited with status {rc}"
            raise TrainingError(
                f"trainer {rank} on {worker.address}: {text}", peer=bool(error and error["peer"])
            )
        result: dict[str, Any] = pickle.loads(path.with_suffix(".result").read_bytes())
        return result


def _gather(block: Block | None, rank: int, world: int) -> Block | None:
    """Every rank's block, concatenated on rank 0 (``None`` elsewhere)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object(block, parts if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    blocks = [b for b in parts if b is not None and len(b)]
    return Block.concatenate(blocks) if blocks else Block(np.zeros(0, np.float32), np.zeros(0), None)


def _train(job: RankJob, send: Callable[..., None], workdir: Path, security: Any) -> dict[str, Any]:
    import dask
    import torch
    import torch.distributed as dist

    from mlaas4hep_dask.fit._common import backend
    from mlaas4hep_dask.fit._model_file import build_model, load_model_file

    threads = thread_counts(job.threads)
    torch.set_num_threads(threads["torch"])
    torch.set_num_interop_threads(threads["interop"])
    dask.config.set({"mlaas4hep.loader.threads": threads["loader"]})
    be = backend("torch")
    device = be.pick_device(job.device)
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo",  # gradients by NCCL, metrics by gloo
        init_method=f"tcp://{job.rendezvous}",
        rank=job.rank,
        world_size=job.world,
        timeout=datetime.timedelta(seconds=job.timeout),
    )
    (workdir / "model.py").write_text(job.model_source)
    module = load_model_file(workdir / "model.py")
    feeders: Any = "threads"
    if job.scheduler is not None:
        from distributed import Client

        feeders = Client(job.scheduler, set_as_default=False, security=security)
    loaders = {
        split: BatchLoader(
            job.dataset, job.specs, job.params, job.recipe, job.labels, split, feeders, shard, job.store
        )
        for split, shard in job.shards.items()
    }
    framework, net = build_model(module, loaders["train"].idim, job.params.seed)
    train = Waited(loaders["train"])
    clock = EpochClock(train)
    last = time.monotonic()
    done = 0

    def predict(X: np.ndarray) -> np.ndarray:
        return np.asarray(be.predict(net, X, job.task))

    def evaluate(split: str) -> Block | None:
        return _gather(collect(loaders[split], predict), job.rank, job.world)

    def on_batch(n: int) -> None:
        nonlocal last, done
        done += n
        if job.rank == 0 and time.monotonic() - last > 1.0:
            last = time.monotonic()
            send(kind="progress", events=done * job.world)

    scored: dict[str, Block | None] = {}  # the validation scores of the last epoch: the final model's

    def on_epoch(epoch: int, loss: float) -> None:
        seconds, wait = clock.lap()
        total = torch.tensor([loss * len(train), len(train)], dtype=torch.float64)
        dist.all_reduce(total)
        waits: list[Any] = [None] * job.world
        dist.all_gather_object(waits, round(wait, 4))
        block = scored["validation"] = evaluate("validation")  # on every rank: a collective
        if block is not None:
            val = metrics(job.task, block.y, block.X, block.w)
            row = {"epoch": epoch, "loss": float(total[0] / total[1]), "val_loss": val.get("loss")}
            row |= {f"val_{job.task.metric}": val.get(job.task.metric), "seconds": round(seconds, 4)}
            send(kind="epoch", row=row | {"data_wait": waits})
        clock.restart()

    def checkpoint(epoch: int, state: bytes) -> None:
        if job.rank == 0:
            path = workdir / f"checkpoint-{epoch}.bin"
            path.write_bytes(state)
            send(kind="checkpoint", epoch=epoch, path=str(path))

    start = time.perf_counter()
    times = StepTimes(synchronize=job.profile)
    how = Fitting(
        job.task, job.params, device, on_epoch, on_batch, None, checkpoint, job.resume,
        lambda model: averaging(model, job.world), times=times,
    )  # fmt: skip
    net = be.fit(net, train, how)
    seconds = time.perf_counter() - start
    waits: list[Any] = [None] * job.world
    dist.all_gather_object(waits, train.waited / max(seconds, 1e-9))
    steps: list[Any] = [None] * job.world
    pools = {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}
    pools["loader"] = loaders["train"]._executor.pool._max_workers if job.scheduler is None else 0
    dist.all_gather_object(steps, times.as_dict(train.waited, seconds) | {"threads": pools})
    val_block = scored["validation"] if "validation" in scored else evaluate("validation")
    test_block = evaluate("test")
    # rank 0's share takes of every file, in proportion: its first events are a fair sample
    sampled = job.rank == 0 and job.task.kind != "regression"
    train_sample = collect(loaders["train"], predict, OVERTRAINING_SAMPLE) if sampled else None
    dist.barrier()
    dist.destroy_process_group()
    if job.scheduler is not None:
        feeders.close()
    if job.rank != 0:
        return {"rank": job.rank}
    return {
        "framework": framework,
        "weights": be.state(net.to("cpu") if framework == "torch" else net, None, job.params.epochs),
        "validation": val_block,
        "test": test_block,
        "train_sample": train_sample,
        "seconds": seconds,
        "data_wait": waits,
        "step_times": steps,
        "device": device,
    }


def _peer_lost(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return type(err).__name__ == "DistBackendError" or any(s in text for s in _PEER_LOST)


def main(job_path: str, fd: str) -> int:
    """The trainer process: run the job in ``job_path``, report on the pipe ``fd``; the exit status."""
    from mlaas4hep_dask._lifeline import die_with_parent
    from mlaas4hep_dask._quiet import ignore_known_warnings

    die_with_parent()
    ignore_known_warnings()
    out = os.fdopen(int(fd), "w", buffering=1)

    def send(**message: Any) -> None:
        out.write(json.dumps(message) + "\n")

    path = Path(job_path)
    try:
        job: RankJob = pickle.loads(path.read_bytes())
        secret = path.with_suffix(".security")  # written by run_rank for a TLS cluster
        security = pickle.loads(secret.read_bytes()) if secret.exists() else None
        result = _train(job, send, path.parent, security)
    except BaseException as err:  # the one line the client shows, whatever failed
        first = first_line(err)
        text = first if isinstance(err, MLaaSError) else f"{type(err).__name__}: {first}"
        send(kind="error", peer=_peer_lost(err), message=text[:500])
        return 1
    path.with_suffix(".result").write_bytes(pickle.dumps(result))
    return 0
