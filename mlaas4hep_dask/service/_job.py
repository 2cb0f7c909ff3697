"""The task that runs one job on a Dask worker.

:func:`run_job` secedes from the worker's thread pool (so the job's own data tasks can use
it), writes the job's inputs into a private folder, and runs ``mlaas4hep train`` on the same
scheduler in a child process.  The child's output goes to the service as Dask events (topic
:data:`TOPIC`), with its progress lines parsed; a cancel (a Dask ``Event``) or the timeout
ends the child's whole process group.  The run directory comes back as a tarball in the
task's result, so the service and the workers need no shared disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from mlaas4hep_dask._tarball import pack

__all__ = ["TOPIC", "cancel_event_name", "run_job"]

TOPIC = "mlaas4hep-jobs"
_PROGRESS = re.compile(r"progress: (\w+) (\d+)/(\d+) events")
_TAIL = 40


def cancel_event_name(job_id: str) -> str:
    """The Dask ``Event`` that, once set, cancels job ``job_id``."""
    return f"mlaas4hep-cancel-{job_id}"


def _write_inputs(folder: Path, spec: dict[str, Any], extra: dict[str, bytes]) -> list[str]:
    """Write the job's files into ``folder``; return the ``mlaas4hep train`` arguments for them."""
    for relative, data in extra.items():
        target = (folder / relative).resolve()
        if target.is_relative_to(folder.resolve()):  # checked on upload; checked again here
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    (folder / "model.py").write_text(spec["model_source"])
    (folder / "files.txt").write_text("\n".join(spec["files"]) + "\n")
    (folder / "params.json").write_text(json.dumps(spec["params"]))
    args = ["--files", "files.txt", "--model", "model.py", "--params", "params.json"]
    if spec.get("labels") is not None:
        (folder / "labels.txt").write_text("\n".join(map(str, spec["labels"])) + "\n")
        args += ["--labels", "labels.txt"]
    if spec.get("preproc") is not None:
        (folder / "preproc.json").write_text(json.dumps(spec["preproc"]))
        args += ["--preproc", "preproc.json"]
    if spec.get("resources", {}).get("gpu"):
        args += ["--device", "cuda"]
    if spec.get("resources", {}).get("trainers") is not None:
        args += ["--trainers", str(spec["resources"]["trainers"])]
    return args


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the child and everything it started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


def _error_of(tail: deque[str], rc: int, folder: Path) -> str:
    """The workflow's one-line error, with the job's private folder left out of the paths."""
    message = ""
    for line in reversed(tail):
        if line.startswith("mlaas4hep: "):
            message = line.removeprefix("mlaas4hep: ").removeprefix("error: ")
            break
    else:
        last = [line for line in tail if line.strip()][-3:]
        message = f"the workflow exited with status {rc}" + (": " + " | ".join(last) if last else "")
    return message.replace(f"{folder}/", "")


def run_job(job_id: str, spec: dict[str, Any], extra: dict[str, bytes]) -> dict[str, Any]:
    """Run one job (on a Dask worker); return its outcome: ``state`` and ``error`` or ``tarball``."""
    from distributed import Event, get_worker, secede

    worker = get_worker()
    secede()
    cancel = Event(cancel_event_name(job_id))

    def emit(**msg: Any) -> None:
        worker.log_event(TOPIC, {"job": job_id, **msg})

    with tempfile.TemporaryDirectory(prefix=f"mlaas4hep-job-{job_id[:12]}-") as tmp:
        folder = Path(tmp)
        cmd = [sys.executable, "-m", "mlaas4hep_dask.service._child", "train"]
        cmd += _write_inputs(folder, spec, extra)
        cmd += ["--out", "run", "--scheduler", worker.scheduler.address, "--log-progress", "2", "-q"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env["DASK_MLAAS4HEP__CLUSTER__DIRECT_TO_WORKERS"] = "true"  # a worker reaches the other workers
        emit(line=f"[service] running on worker {worker.address} (scheduler {worker.scheduler.address})")
        emit(progress=0.0, phase="starting")
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1, start_new_session=True,
        )  # fmt: skip
        tail: deque[str] = deque(maxlen=_TAIL)
        log = (folder / "job.log").open("w")

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                log.write(raw)
                emit(line=line)
                if match := _PROGRESS.search(line):
                    phase, done, total = match.group(1), int(match.group(2)), int(match.group(3))
                    emit(progress=done / max(total, 1), phase=phase)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        outcome: dict[str, Any] | None = None
        while proc.poll() is None:
            if cancel.wait(timeout=0.5):
                _stop(proc)
                outcome = {"state": "cancelled", "error": "cancelled by the user"}
            elif time.monotonic() - start > spec["timeout"]:
                _stop(proc)
                outcome = {"state": "failed", "error": f"timed out after {spec['timeout']:.0f} s"}
        reader.join(timeout=30)
        log.close()
        if outcome is not None:
            return outcome
        if proc.returncode != 0:
            return {"state": "failed", "error": _error_of(tail, proc.returncode, folder)}
        run = folder / "run"
        (folder / "job.log").replace(run / "job.log")
        metrics = json.loads((run / "metrics.json").read_text())
        return {"state": "succeeded", "tarball": pack(run), "metrics": metrics}
