"""Run queued jobs on the Dask cluster: dispatch within limits, follow their logs, collect their results.

One thread owns the loop: it stores the log lines and progress that jobs send as Dask
events, submits queued jobs (oldest first, within the per-user and total limits) as
:func:`~mlaas4hep_dask.service._job.run_job` tasks, and turns each finished task into the
job's final state, unpacking its run directory and pushing its bundle when asked.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from mlaas4hep_dask._tarball import unpack
from mlaas4hep_dask.service._job import TOPIC, cancel_event_name, run_job
from mlaas4hep_dask.service.config import ServiceConfig
from mlaas4hep_dask.service.store import JobStore
from mlaas4hep_dask.service.uploads import UploadNotFoundError, Uploads

__all__ = ["Runner"]

_log = logging.getLogger("mlaas4hep_dask.service")
_GRACE = 120.0  # how long past its timeout a job's task may stay silent before the service gives up on it


class Runner:
    """Dispatch the jobs of ``store`` onto ``client``'s cluster."""

    def __init__(self, config: ServiceConfig, store: JobStore, uploads: Uploads, client: Any) -> None:
        self.config = config
        self.store = store
        self.uploads = uploads
        self.client = client
        self.results = config.workdir / "jobs"
        self._futures: dict[str, Any] = {}
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Settle jobs a previous service left running, then start dispatching."""
        stale = self.store.recover("the service stopped while the job was running; submit it again")
        for job_id in stale:  # its task may still run on a surviving cluster: stop it
            self._signal_cancel(job_id)
        self.client.subscribe_topic(TOPIC, self._on_event)
        self._thread = threading.Thread(target=self._loop, name="mlaas4hep-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; jobs still running are stopped and marked failed."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(TOPIC)
        for job_id in list(self._futures):
            self._signal_cancel(job_id)
            self.store.transition(
                job_id, ["running"], "failed", phase="failed",
                error="the service was stopped while the job was running; submit it again",
            )  # fmt: skip
        self._flush()

    def wake(self) -> None:
        """Look at the queue now (after a submit or cancel)."""
        self._wake.set()

    # --- what the cluster offers -----------------------------------------------------------
    def capacity(self) -> dict[str, Any]:
        """Workers, the largest worker memory limit, and the workers offering the ``GPU`` resource."""
        workers = self.client.scheduler_info().get("workers", {}).values()
        return {
            "workers": len(workers),
            "memory": max((w.get("memory_limit") or 0 for w in workers), default=0),
            "gpus": sum(1 for w in workers if w.get("resources", {}).get("GPU")),
        }

    # --- events from the jobs ---------------------------------------------------------------
    def _on_event(self, event: tuple[float, Any]) -> None:
        self._events.put(event[1])

    def _flush(self) -> None:
        lines: list[tuple[str, str]] = []
        progress: dict[str, tuple[float, str]] = {}
        while True:
            try:
                msg = self._events.get_nowait()
            except queue.Empty:
                break
            if not isinstance(msg, dict) or "job" not in msg:
                continue
            if "line" in msg:
                lines.append((str(msg["job"]), str(msg["line"])))
            if "progress" in msg:
                progress[str(msg["job"])] = (float(msg["progress"]), str(msg.get("phase", "")))
        self.store.append_logs(lines)
        for job_id, (fraction, phase) in progress.items():
            self.store.update_progress(job_id, fraction, phase)

    # --- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._flush()
                self._collect()
                self._dispatch()
                self._watch()
            except Exception:  # the loop must outlive any one bad job or database hiccup
                _log.exception("job runner loop")

    def _dispatch(self) -> None:
        running = Counter(job.owner for job in self.store.jobs(states=["running"]))
        total = sum(running.values())
        for job in self.store.jobs(states=["queued"]):
            if total >= self.config.max_running:
                return
            if running[job.owner] >= self.config.max_jobs_per_user:
                continue
            if not self.store.transition(job.id, ["queued"], "running", phase="submitted to Dask"):
                continue  # cancelled meanwhile
            running[job.owner] += 1
            total += 1
            try:
                extra = self.uploads.contents(job.owner, job.spec["upload"]) if job.spec.get("upload") else {}
            except UploadNotFoundError:
                self._finish(
                    job.id, {"state": "failed", "error": f"upload {job.spec['upload']!r} was deleted"}
                )
                continue
            resources = None
            if job.spec["resources"].get("gpu"):
                if not self.capacity()["gpus"]:
                    self._finish(
                        job.id, {"state": "failed", "error": "no Dask worker offers the resource 'GPU'"}
                    )
                    continue
                resources = {"GPU": 1}
            self.store.append_logs([(job.id, "[service] submitted to the Dask cluster")])
            future = self.client.submit(
                run_job,
                job.id,
                job.spec,
                extra,
                key=f"mlaas4hep-job-{job.id}",
                pure=False,
                resources=resources,
            )
            self._futures[job.id] = future
            future.add_done_callback(lambda _, job_id=job.id: self._on_done(job_id))

    def _on_done(self, job_id: str) -> None:
        self._done.put(job_id)
        self._wake.set()

    def _collect(self) -> None:
        while True:
            try:
                job_id = self._done.get_nowait()
            except queue.Empty:
                return
            future = self._futures.pop(job_id, None)
            if future is None:
                continue
            if future.status == "finished":
                outcome = future.result()
            elif future.status == "cancelled":
                outcome = {"state": "failed", "error": "the Dask cluster dropped the job (scheduler lost?)"}
            else:
                err = future.exception()
                if type(err).__name__ == "KilledWorker":
                    message = "the Dask workers running the job died (it was retried, then given up)"
                else:
                    message = f"{type(err).__name__}: {err}"
                outcome = {"state": "failed", "error": message}
            self._finish(job_id, outcome)
            self._flush()

    def _finish(self, job_id: str, outcome: dict[str, Any]) -> None:
        state = outcome["state"]
        result: dict[str, Any] | None = None
        if state == "succeeded":
            folder = self.results / job_id
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "run.tar.gz").write_bytes(outcome["tarball"])
            unpack(outcome["tarball"], folder / "run", 2**34)
            result = {
                "metrics": outcome["metrics"].get("final", {}),
                "framework": outcome["metrics"].get("framework"),
            }
            job = self.store.get(job_id)
            if job is not None and job.spec.get("push"):
                result["push"] = self._push(job.spec["push"], folder / "run.tar.gz")
        changed = self.store.transition(
            job_id, ["running"], state, error=outcome.get("error"), result=result,
            phase=state, **({"progress": 1.0} if state == "succeeded" else {}),
        )  # fmt: skip
        if changed:
            self.store.append_logs(
                [
                    (
                        job_id,
                        f"[service] job {state}" + (f": {outcome['error']}" if outcome.get("error") else ""),
                    )
                ]
            )
        with contextlib.suppress(Exception):
            self._cancel_event(job_id).clear()

    def _push(self, name: str, tarball: Path) -> dict[str, Any]:
        from mlaas4hep_dask.serve import Repository

        try:
            info = Repository(str(self.config.repository)).add(name, tarball)
        except Exception as err:
            return {"error": f"{type(err).__name__}: {err}"}
        return {"name": info.name, "version": info.version}

    def _watch(self) -> None:
        """Give up on a job whose task outlived its timeout by far (a worker that hangs)."""
        now = time.time()
        for job in self.store.jobs(states=["running"]):
            if job.id not in self._futures or job.started is None:
                continue
            elapsed = now - datetime.fromisoformat(job.started).timestamp()
            if elapsed > job.spec["timeout"] + _GRACE:
                self._signal_cancel(job.id)
                self._futures.pop(job.id).cancel()
                self._finish(
                    job.id, {"state": "failed", "error": f"timed out after {job.spec['timeout']:.0f} s"}
                )

    # --- cancellation -----------------------------------------------------------------------
    def _cancel_event(self, job_id: str) -> Any:
        from distributed import Event

        return Event(cancel_event_name(job_id), client=self.client)

    def _signal_cancel(self, job_id: str) -> None:
        with contextlib.suppress(Exception):
            self._cancel_event(job_id).set()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had already finished."""
        reason = {"error": "cancelled by the user", "phase": "cancelled"}
        if self.store.transition(job_id, ["queued"], "cancelled", **reason):
            return True
        if self.store.transition(job_id, ["running"], "cancelled", **reason):
            self._signal_cancel(job_id)  # the task stops the workflow's processes and returns
            self.store.append_logs([(job_id, "[service] cancelled by the user")])
            return True
        return False
