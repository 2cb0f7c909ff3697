"""Run a job's workflow sandboxed: its own user, its own view of the disk, limits, a clean environment.

A job runs the user's model.py; it must not touch anything but its own job.  On the worker,
its child process is started through Debian's ``bubblewrap`` (``bwrap``) as:

- **a user of its own**: an unprivileged uid per job (``JOB_UIDS``; no account is needed), with
  no supplementary groups and umask 077.  The child drops to it itself
  (``mlaas4hep_dask.service._child --as UID``) after the sandbox is built, so the worker
  may run as root (needed to switch users) while the job never does;
- **a view of the disk of its own**: the system directories and the Python environment
  read-only, its job folder read-write, a private ``/tmp``, the service's data roots
  read-only, nothing else: not the service's work directory or database, not the other jobs,
  not the uploads, the model repository or the worker's credentials.  New PID, IPC and UTS
  namespaces: it sees only its own processes, which all end with it;
- **limits** (``setrlimit``): address space (the job's ``resources.memory``, else 16 GiB), CPU
  seconds (its timeout times the cores), processes and threads (512), file size (4 GiB), open files
  (4096); a disk quota of its job folder (``resources.disk``, else 20 GiB, watched by the
  worker every second), a 2 GiB ``/tmp`` and a 256 MiB ``/dev/shm``.  A job over a limit ends
  ``failed`` with the limit named;
- **an allowlist of environment variables** (no database URL, no OIDC secrets, no tokens, no
  Dask settings: not the shared cluster's address or its TLS credentials);
- **no way into the shared cluster**: the job computes on a LocalCluster of its own inside the
  sandbox (``resources.workers`` processes, under the same user and limits); the service's
  scheduler must require TLS client certificates (``--scheduler local`` makes temporary ones
  that never touch the disk), so that a job that finds its port cannot connect to it.

Where ``bwrap`` cannot run (not installed, no namespaces, the worker not root), the service
refuses to run jobs unless started with ``--unsandboxed-jobs``.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["JOB_UIDS", "Limits", "sandboxed", "unavailable"]

#: The uids jobs run as: one per job, picked from this range by the job's id.
JOB_UIDS = range(200_000, 265_000)

_ENV_ALLOWED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "PYTHONUNBUFFERED",
    "TF_CPP_MIN_LOG_LEVEL",
    "MLAAS4HEP_ZLIB",
    "XRD_CONNECTIONRETRY",
    "XRD_CONNECTIONWINDOW",
    "XRD_RUNFORKHANDLER",
)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a job may use (``setrlimit`` values)."""

    memory: int = 16 * 2**30
    cpu_seconds: int = 24 * 3600
    processes: int = 512
    file_size: int = 4 * 2**30
    open_files: int = 4096
    #: The job folder's quota (watched by the worker); ``/tmp`` and ``/dev/shm`` are capped apart.
    disk: int = 20 * 2**30
    tmp: int = 2 * 2**30
    shm: int = 256 * 2**20

    @classmethod
    def of(cls, resources: Mapping[str, Any], timeout: float) -> Limits:
        """The limits of a job from its ``resources`` and timeout."""
        from dask.utils import parse_bytes

        memory = parse_bytes(resources["memory"]) if resources.get("memory") else cls.memory
        disk = parse_bytes(resources["disk"]) if resources.get("disk") else cls.disk
        cpu = int(max(timeout, 60) * (os.cpu_count() or 1))
        return cls(memory=int(memory), cpu_seconds=cpu, disk=int(disk))

    def describe(self, kind: str) -> str:
        """The limit, in words, for a job's error."""
        words = {
            "memory": f"its memory limit ({self.memory / 2**30:.1f} GiB of address space)",
            "cpu": f"its CPU-time limit ({self.cpu_seconds} s)",
            "processes": f"its limit of {self.processes} processes and threads",
            "file_size": f"its file-size limit ({self.file_size / 2**30:.1f} GiB)",
            "disk": f"its disk quota ({self.disk / 2**30:.2f} GiB in its job folder)",
            "space": f"the space it has ({self.tmp / 2**30:.0f} GiB in /tmp, or the worker's disk is full)",
        }
        return words[kind]


@functools.cache
def unavailable() -> str | None:
    """Why jobs cannot be sandboxed on this machine, or ``None`` when they can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    if os.geteuid() != 0:
        return "the Dask worker does not run as root, so it cannot switch a job to a user of its own"
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"bwrap cannot create a sandbox here: {probe.stderr.strip() or probe.returncode}"
    return None


def job_uid(job_id: str) -> int:
    """The uid job ``job_id`` runs as."""
    digest = int(hashlib.sha256(job_id.encode()).hexdigest(), 16)
    return JOB_UIDS[digest % len(JOB_UIDS)]


def _python_dirs() -> list[str]:
    """What the job's Python needs: the interpreter's prefix, the environment, our package."""
    import mlaas4hep_dask

    dirs = {sys.base_prefix, sys.prefix, str(Path(mlaas4hep_dask.__file__).resolve().parent)}
    dirs.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(d for d in dirs if Path(d).exists())


def environment(base: Mapping[str, str], folder: Path) -> dict[str, str]:
    """The job's environment: the allowed variables of ``base``, and its own home and caches."""
    env = {k: v for k, v in base.items() if k in _ENV_ALLOWED}
    env.update(
        HOME=str(folder),
        TMPDIR="/tmp",
        MPLCONFIGDIR="/tmp/matplotlib",
        NUMBA_CACHE_DIR="/tmp/numba",
        KERAS_HOME="/tmp/keras",
    )
    return env


def sandboxed(
    args: Sequence[str], folder: Path, reads: Sequence[Path], uid: int, limits: Limits, gpu: bool = False
) -> list[str]:
    """The command that runs ``python -m mlaas4hep_dask.service._child ARGS`` in the sandbox.

    Parameters
    ----------
    args
        The ``mlaas4hep`` arguments.
    folder
        The job's folder (read-write; the working directory).
    reads
        Folders the job may read (the service's data roots).
    uid
        The job's user.
    limits
        Its resource limits.
    gpu
        Whether the job sees the machine's NVIDIA devices (``/dev/nvidia*``).
    """
    bwrap = shutil.which("bwrap") or "bwrap"
    cmd = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    for system in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt"):
        if Path(system).is_symlink():
            cmd += ["--symlink", os.readlink(system), system]
        elif Path(system).exists():
            cmd += ["--ro-bind", system, system]
    made: set[str] = set()

    def parents(path: str) -> list[str]:
        """``--dir`` for the folders above ``path``, traversable by the job's user (bwrap's are not)."""
        out = []
        for parent in reversed(Path(path).parents):
            name = str(parent)
            system = name.startswith(("/usr", "/etc", "/opt")) or name == "/tmp"  # there already
            if name != "/" and name not in made and not system:
                made.add(name)
                out += ["--perms", "0755", "--dir", name]
        return out

    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for path, size in (("/tmp", limits.tmp), ("/dev/shm", limits.shm)):  # /dev/shm: its cluster's semaphores
        cmd += ["--perms", "1777", "--size", str(size), "--tmpfs", path]
    for device in sorted(glob.glob("/dev/nvidia*")) if gpu else []:
        cmd += ["--dev-bind", device, device]
    for path in [*_python_dirs(), *map(str, reads)]:
        cmd += [*parents(path), "--ro-bind", path, path]
    cmd += [*parents(str(folder)), "--bind", str(folder), str(folder)]
    cmd += ["--chdir", str(folder)]
    child = [sys.executable, "-m", "mlaas4hep_dask.service._child"]
    child += ["--as", str(uid), "--limits", json.dumps(dataclasses.asdict(limits))]
    return [*cmd, "--", *child, *args]


def folder_bytes(folder: Path) -> int:
    """Bytes that the files under ``folder`` hold on disk (what its quota counts)."""
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # removed meanwhile
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def enter(uid: int, limits: Mapping[str, int]) -> None:
    """In the sandboxed child, before anything else: set the limits, drop to ``uid``."""
    import resource

    for name, value in (
        ("RLIMIT_AS", limits["memory"]),
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_FSIZE", limits["file_size"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    os.umask(0o077)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if os.geteuid() == 0:  # pragma: no cover - setresuid raises before this could happen
        raise SystemExit("mlaas4hep: error: the job could not leave the root user")
