"""Data-parallel training on the Dask workers: choose them, deal the data, watch, resume.

The client never sees a batch.  It counts the events of each split (no data read without
cuts), deals them to ``N`` trainers (:meth:`~mlaas4hep_dask.BatchLoader.shards`), asks rank
0's worker for a free port (the rendezvous of the ``torch.distributed`` group), and submits
one task per trainer, each pinned to its worker (:func:`._rank.run_rank`).  While they train it
relays rank 0's reports (progress, epoch metrics, checkpoints) to the caller.

A worker lost mid-training (killed, out of memory) ends the others' collectives at once
(gloo sees the closed connection; a hung peer times out after ``timeout`` seconds).  The
client then resumes from the last checkpoint on the workers that remain, up to
``restarts`` times, or fails with one line naming the lost worker.  Both are Dask config
keys: ``mlaas4hep.train.restarts`` (default 2) and ``mlaas4hep.train.timeout`` (seconds,
default 90).  ``mlaas4hep.train.profile`` (default false) times a GPU step's phases to their
end (a synchronize each), for the benchmark.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.errors import ConfigError, TrainingError
from mlaas4hep_dask.fit._common import Task
from mlaas4hep_dask.fit._rank import RankJob, free_port, run_rank

__all__ = ["Reports", "choose_workers", "train_on_workers"]

_log = logging.getLogger("mlaas4hep_dask")

#: Seconds a collective waits for a silent peer before the trainers give up.
TIMEOUT = 90.0
#: Times a lost worker is survived.
RESTARTS = 2


@dataclasses.dataclass(frozen=True)
class Reports:
    """Where rank 0's reports go: events trained, an epoch's metrics row, a checkpoint."""

    on_batch: Callable[[int], None]
    on_epoch: Callable[[dict[str, Any]], None]
    on_checkpoint: Callable[[int, bytes], None]


def choose_workers(client: Any, trainers: int | str, device: str) -> list[str]:
    """The workers that will train: ``trainers`` of them (``"all"``: every one), GPUs first.

    Raises
    ------
    ConfigError
        More trainers than workers, or a GPU asked for and none offered.
    """
    client.wait_for_workers(1, timeout=120)
    workers: dict[str, Any] = client.scheduler_info()["workers"]
    gpus = [a for a, w in workers.items() if w.get("resources", {}).get("GPU")]
    pool = gpus if gpus and device != "cpu" else sorted(workers)  # no GPU resource: any may see one
    count = len(pool) if trainers == "all" else int(trainers)
    if count > len(pool):
        kind = "GPU workers" if pool is gpus else "workers"
        raise ConfigError(
            f"--trainers {trainers}: the cluster has {len(pool)} {kind}; ask for at most that many"
        )
    return sorted(pool)[:count]


def _feeding(client: Any, everyone: Mapping[str, Any], workers: list[str]) -> str | None:
    """The scheduler's address when other workers can feed the trainers, else ``None``.

    With as many trainers as workers, each trainer reads its shard itself; with more workers
    (a GPU trainer and CPU workers), the others read and tensorize for the trainers.
    """
    return str(client.scheduler.address) if len(everyone) > len(workers) else None


def _alive(client: Any) -> set[str]:
    return set(client.run_on_scheduler(_worker_addresses))


def _worker_addresses(dask_scheduler: Any) -> list[str]:
    return list(dask_scheduler.workers)


def _attempt(
    client: Any,
    workers: list[str],
    jobs: list[RankJob],
    reports: Reports,
) -> dict[str, Any]:
    """Run one group of trainers to the end; raise :class:`TrainingError` on any failure."""
    from distributed import Event, Queue, wait

    channel = f"mlaas4hep-train-{uuid.uuid4().hex[:12]}"
    relay, stop = Queue(channel, client=client), Event(f"{channel}-stop", client=client)
    futures = [
        client.submit(
            run_rank,
            pickle.dumps(job),
            job.rank,
            channel,
            key=f"{channel}-rank-{job.rank}",
            workers=[w],
            allow_other_workers=False,
            pure=False,
        )
        for job, w in zip(jobs, workers, strict=True)
    ]
    try:
        while True:
            _drain(relay, reports)
            if all(f.status == "finished" for f in futures):
                _drain(relay, reports)
                return dict(futures[0].result())
            alive = _alive(client)
            lost = [w for w in workers if w not in alive]
            failed = [f for f in futures if f.status == "error"]
            if lost:
                raise TrainingError(f"worker {lost[0]} was lost (killed, or out of memory)", peer=True)
            if failed:
                wait(futures, timeout=5, return_when="ALL_COMPLETED")  # the other ranks' errors
                raise _first_cause(f.exception() for f in futures if f.status == "error")
            time.sleep(0.2)
    finally:
        stop.set()  # trainers still running end their processes
        client.cancel([f for f in futures if not f.done()])


def _first_cause(errors: Any) -> TrainingError:
    """The error that caused the others (not a rank that only lost its peer)."""
    errors = [e if isinstance(e, TrainingError) else TrainingError(str(e)) for e in errors]
    own = [e for e in errors if not e.peer]
    return (own or errors)[0]


def _drain(relay: Any, reports: Reports) -> None:
    for message in relay.get(batch=True):  # what is waiting, without blocking
        if message["kind"] == "progress":
            reports.on_batch(int(message["events"]))
        elif message["kind"] == "epoch":  # msgpack gave back tuples for lists
            reports.on_epoch({k: list(v) if isinstance(v, tuple) else v for k, v in message["row"].items()})
        elif message["kind"] == "checkpoint":
            reports.on_checkpoint(int(message["epoch"]), message["state"])


def train_on_workers(
    client: Any,
    trainers: int | str,
    loaders: Mapping[str, BatchLoader],
    model: Path,
    task: Task,
    device: str,
    resume: bytes | None,
    reports: Reports,
    restarts: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Train ``model.py`` data-parallel on ``trainers`` workers; return rank 0's result.

    Parameters
    ----------
    client
        The ``distributed.Client`` of the cluster.
    trainers
        How many (``"all"``: one per worker, or per GPU worker).
    loaders
        The train, validation and test loaders (only counted here, never iterated).
    model
        ``model.py``; its source travels to the workers.
    task, device
        What is learned; ``"auto"``, ``"cpu"`` or ``"cuda"``.
    resume
        The checkpoint to start from, or ``None``.
    reports
        Callbacks for rank 0's progress, epochs and checkpoints.
    restarts
        Times a lost worker is survived by resuming from the last checkpoint (default: the
        Dask config key ``mlaas4hep.train.restarts``, else 2).
    timeout
        Seconds a collective waits for a silent trainer (``mlaas4hep.train.timeout``, else 90).

    Returns
    -------
    dict
        ``framework``, ``weights`` (a checkpoint blob), ``validation`` and ``test`` score
        blocks, ``seconds``, ``data_wait`` and ``step_times`` (per rank) and ``device``.
    """
    import dask

    restarts = int(dask.config.get("mlaas4hep.train.restarts", RESTARTS)) if restarts is None else restarts
    timeout = float(dask.config.get("mlaas4hep.train.timeout", TIMEOUT)) if timeout is None else timeout
    source = model.read_text()
    profile = bool(dask.config.get("mlaas4hep.train.profile", False))
    last = resume

    def keep(epoch: int, state: bytes) -> None:
        nonlocal last
        last = state
        reports.on_checkpoint(epoch, state)

    kept = dataclasses.replace(reports, on_checkpoint=keep)
    for attempt in range(restarts + 1):
        workers = choose_workers(
            client, trainers if attempt == 0 else min(_count(trainers), len(_alive(client))), device
        )
        world = len(workers)
        shards = {split: loader.shards(world) for split, loader in loaders.items()}
        host, port = client.submit(
            free_port, workers=[workers[0]], allow_other_workers=False, pure=False
        ).result()
        everyone = client.scheduler_info()["workers"]
        scheduler = _feeding(client, everyone, workers)
        first = loaders["train"]
        jobs = [
            RankJob(
                rank=r,
                world=world,
                rendezvous=f"{host}:{port}",
                device=device,
                dataset=first.dataset,
                specs=first.specs,
                params=first.params,
                recipe=first.recipe,
                labels=first.labels,
                shards={split: s[r] for split, s in shards.items()},
                model_source=source,
                task=task,
                resume=last,
                timeout=timeout,
                threads=int(everyone[w].get("nthreads", 1)),
                scheduler=scheduler,
                store=first.store,
                profile=profile,
            )
            for r, w in enumerate(workers)
        ]
        fed = "fed by the other workers" if scheduler else "each reading its own shard"
        _log.info("training on %d workers (%s): %s", world, fed, ", ".join(workers))
        try:
            result = _attempt(client, workers, jobs, kept)
        except TrainingError as err:
            if not err.peer or attempt == restarts or not _alive(client):
                raise
            where = "its last checkpoint" if last is not None else "the start"
            _log.warning("%s; resuming from %s on the workers that remain", err, where)
            continue
        result["trainers"] = world
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _count(trainers: int | str) -> int:
    return 1 << 30 if trainers == "all" else int(trainers)
