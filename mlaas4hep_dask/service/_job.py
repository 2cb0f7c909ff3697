"""The task that runs one job on a Dask worker.

:func:`run_job` secedes from the worker's thread pool (so the job's own data tasks can use
it), writes the job's inputs into a private folder, and runs ``mlaas4hep train`` in a child
process: a sandboxed job (:mod:`.sandbox`) on a LocalCluster of its own inside its sandbox
(the shared cluster's workers would run any task it sent them with their own powers), secured
with TLS and a certificate of its own so that no other job can use it, an
unsandboxed one on the same scheduler as the service.  The child's output goes to the
service as Dask events (topic :data:`TOPIC`), with its progress lines parsed; a cancel (a
Dask ``Event``) or the timeout ends the child's whole process group.  The run directory
comes back as a tarball in the task's result, so the service and the workers need no shared
disk.
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
from mlaas4hep_dask.service import sandbox

__all__ = ["TOPIC", "cancel_event_name", "own_workers", "run_job"]

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


def own_workers(resources: dict[str, Any]) -> int:
    """Worker processes of a sandboxed job's own cluster: ``resources.workers``, else enough for
    its trainers, else two (or the machine's cores, if fewer)."""
    trainers = resources.get("trainers")
    wanted = resources.get("workers") or (trainers if isinstance(trainers, int) else None)
    return int(wanted or min(2, os.cpu_count() or 1))


#: Where a job's data credentials go in its folder, and the variable that points the clients to them.
_CREDENTIALS = {"token": ("token", "BEARER_TOKEN_FILE"), "x509_proxy": ("x509up", "X509_USER_PROXY")}


def _credentials(folder: Path, spec: dict[str, Any]) -> dict[str, str]:
    """Write the user's data credentials for this job (files 0600); return the variables naming them."""
    given = spec.get("credentials") or {}
    env: dict[str, str] = {}
    for key, (name, variable) in _CREDENTIALS.items():
        if given.get(key):
            path = folder / ".credentials" / name
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(given[key])
            env[variable] = str(path)
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the child and everything it started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


def _hand_over(folder: Path, uid: int) -> None:
    """Give the job's folder and its inputs to the job's user (nobody else may read them)."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    folder.chmod(0o700)


_OVER = (
    ("memory", ("MemoryError", "Cannot allocate memory", "std::bad_alloc")),
    ("processes", ("BlockingIOError", "Resource temporarily unavailable", "can't start new thread")),
    ("file_size", ("File too large",)),
    ("space", ("No space left on device",)),
)


def _over_limit(tail: deque[str], rc: int, limits: sandbox.Limits) -> str | None:
    """Which limit a sandboxed job went over, in words, if one."""
    if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return limits.describe("cpu")
    if rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return limits.describe("file_size")
    text = "\n".join(tail)
    for kind, signs in _OVER:
        if any(sign in text for sign in signs):
            return limits.describe(kind)
    return None


def _error_of(tail: deque[str], rc: int, folder: Path, limits: sandbox.Limits | None = None) -> str:
    """The workflow's one-line error, with the job's private folder left out of the paths."""
    message = ""
    for line in reversed(tail):
        if line.startswith("mlaas4hep: "):
            message = line.removeprefix("mlaas4hep: ").removeprefix("error: ")
            break
    else:
        last = [line for line in tail if line.strip()][-3:]
        message = f"the workflow exited with status {rc}" + (": " + " | ".join(last) if last else "")
    message = message.replace(f"{folder}/", "")
    over = _over_limit(tail, rc, limits) if limits is not None else None
    return f"the job went over {over}: {message}" if over else message


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
        args = ["train", *_write_inputs(folder, spec, extra), "--out", "run", "--log-progress", "2", "-q"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        credentials = _credentials(folder, spec)  # the user's own, for this job only
        limits = None
        if spec.get("sandbox"):
            # jobs stored before the sandbox was pluggable say only True: bubblewrap
            chosen = spec["sandbox"] if isinstance(spec["sandbox"], dict) else {}
            box = sandbox.sandbox_of(**chosen)
            if (why := box.unavailable()) is not None:
                return {"state": "failed", "error": f"worker {worker.address} cannot sandbox jobs: {why}"}
            uid, limits = sandbox.job_uid(job_id), sandbox.Limits.of(spec["resources"], spec["timeout"])
            # a cluster of its own, inside the sandbox: the shared scheduler runs code as the workers' user
            workers = own_workers(spec["resources"])
            # ... that admits only this job: another job on the machine sees its ports, nothing more
            args += ["--scheduler", "local", "--tls", "--workers", str(workers), "--threads", "1"]
            if spec["resources"].get("memory"):
                args += ["--memory-limit", str(spec["resources"]["memory"])]
            _hand_over(folder, uid)
            reads = [Path(r) for r in spec.get("reads", [])]
            cmd = box.command(args, folder, reads, uid, limits, gpu=bool(spec["resources"].get("gpu")))
            env = sandbox.environment(env, folder) | credentials
            where = f"in its {box.name} sandbox, {workers} workers of its own"
        else:
            args += ["--scheduler", worker.scheduler.address]
            env["DASK_MLAAS4HEP__CLUSTER__DIRECT_TO_WORKERS"] = "true"  # a worker reaches the other workers
            env.update(credentials)
            cmd = [sys.executable, "-m", "mlaas4hep_dask.cli._child", *args]
            where = f"on the cluster of scheduler {worker.scheduler.address}"
        emit(line=f"[service] running on worker {worker.address}, {where}")
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
        checked = start
        while proc.poll() is None:
            if cancel.wait(timeout=0.5):
                _stop(proc)
                outcome = {"state": "cancelled", "error": "cancelled by the user"}
            elif time.monotonic() - start > spec["timeout"]:
                _stop(proc)
                outcome = {"state": "failed", "error": f"timed out after {spec['timeout']:.0f} s"}
            elif limits is not None and time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if sandbox.folder_bytes(folder) > limits.disk:
                    _stop(proc)
                    outcome = {"state": "failed", "error": f"the job went over {limits.describe('disk')}"}
        reader.join(timeout=30)
        log.close()
        if outcome is not None:
            return outcome
        if proc.returncode != 0:
            return {"state": "failed", "error": _error_of(tail, proc.returncode, folder, limits)}
        run = folder / "run"
        (folder / "job.log").replace(run / "job.log")
        metrics = json.loads((run / "metrics.json").read_text())
        return {"state": "succeeded", "tarball": pack(run), "metrics": metrics}
