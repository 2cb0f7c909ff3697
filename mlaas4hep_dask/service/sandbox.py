"""Run a job's workflow sandboxed: its own user, its own view of the disk, limits, a clean environment.

A job runs the user's model.py; it must not touch anything but its own job.  On the worker,
its child process is started through Debian's ``bubblewrap`` (``bwrap``) as:

- **a user of its own**: an unprivileged uid per job (``JOB_UIDS``; no account is needed), with
  no supplementary groups and umask 077.  The child drops to it itself
  (``mlaas4hep_dask.cli._child --as UID``) after the sandbox is built, so the worker
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

The sandbox is pluggable (``mlaas4hep service --sandbox NAME``, see :data:`SANDBOXES`):
``bubblewrap`` (the default, from the package registries), ``podman`` (a rootful container
with the same view of the disk, from an empty root or a site's image) and ``apptainer`` (what
HEP sites run payloads in, with a site's image).  Each builds the same child command: the
limits and the switch to the job's user happen inside, whatever the container.

Where the sandbox cannot run (not installed, no namespaces, the worker not root), the service
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
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["JOB_UIDS", "SANDBOXES", "Apptainer", "Bubblewrap", "Limits", "Podman", "Sandbox", "sandbox_of"]

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


def _child(args: Sequence[str], uid: int, limits: Limits) -> list[str]:
    """The job's process: it sets its limits and drops to ``uid`` before anything else."""
    child = [sys.executable, "-m", "mlaas4hep_dask.cli._child"]
    return [*child, "--as", str(uid), "--limits", json.dumps(dataclasses.asdict(limits)), *args]


_Visible = list[tuple[str, bool]]


def _visible(folder: Path, reads: Sequence[Path]) -> _Visible:
    """What a job sees besides the system: ``(path, writable)``, the job folder last."""
    return [(p, False) for p in [*_python_dirs(), *map(str, reads)]] + [(str(folder), True)]


_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt")


def _probe(cmd: Sequence[str]) -> str | None:
    """``None`` when ``cmd`` runs, else why not."""
    try:
        probe = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if probe.returncode != 0:
        lines = [line for line in (probe.stderr or probe.stdout).splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {probe.returncode}"
    return None


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How a worker runs a job's child sandboxed.

    Parameters
    ----------
    image
        The container image (``podman``: an image or a root folder, default an empty root with
        the system folders bound read-only; ``apptainer``: a SIF file or folder, required).
    """

    name: ClassVar[str] = ""
    tool: ClassVar[str] = ""
    install: ClassVar[str] = ""
    image: str | None = None

    def unavailable(self) -> str | None:
        """Why jobs cannot be sandboxed this way on this machine, or ``None`` when they can."""
        return _unavailable(self)

    def _check(self) -> str | None:
        raise NotImplementedError

    def command(
        self,
        args: Sequence[str],
        folder: Path,
        reads: Sequence[Path],
        uid: int,
        limits: Limits,
        gpu: bool = False,
    ) -> list[str]:
        """The command that runs ``python -m mlaas4hep_dask.cli._child ARGS`` in the sandbox.

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
        return self._wrap(_child(args, uid, limits), folder, _visible(folder, reads), limits, gpu)

    def _wrap(
        self, child: list[str], folder: Path, visible: _Visible, limits: Limits, gpu: bool
    ) -> list[str]:
        """``child`` run in this sandbox, in ``folder``, seeing ``visible`` besides the system."""
        raise NotImplementedError


@functools.cache
def _unavailable(sandbox: Sandbox) -> str | None:
    if shutil.which(sandbox.tool) is None:
        return f"{sandbox.name} ({sandbox.tool}) is not installed ({sandbox.install})"
    if os.geteuid() != 0:
        return "the Dask worker does not run as root, so it cannot switch a job to a user of its own"
    return sandbox._check()


class Bubblewrap(Sandbox):
    """Debian's ``bubblewrap``: new PID, IPC and UTS namespaces and a view of the disk made of binds."""

    name, tool, install = "bubblewrap", "bwrap", "Debian: apt-get install bubblewrap"

    def _check(self) -> str | None:
        why = _probe(["bwrap", "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"])
        return None if why is None else f"bwrap cannot create a sandbox here: {why}"

    def _wrap(
        self, child: list[str], folder: Path, visible: _Visible, limits: Limits, gpu: bool
    ) -> list[str]:
        bwrap = shutil.which("bwrap") or "bwrap"
        cmd = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        for system in _SYSTEM:
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
        # /dev/shm: its own cluster's semaphores
        for path, size in (("/tmp", limits.tmp), ("/dev/shm", limits.shm)):
            cmd += ["--perms", "1777", "--size", str(size), "--tmpfs", path]
        for device in sorted(glob.glob("/dev/nvidia*")) if gpu else []:
            cmd += ["--dev-bind", device, device]
        for path, writable in visible:
            cmd += [*parents(path), "--bind" if writable else "--ro-bind", path, path]
        cmd += ["--chdir", str(folder)]
        return [*cmd, "--", *child]


class Podman(Sandbox):
    """A rootful ``podman`` container: the same view of the disk as bubblewrap's, no capabilities
    but switching users, no new privileges, the host's network (inputs may be remote)."""

    name, tool, install = "podman", "podman", "Debian: apt-get install podman"

    def _root(self) -> list[str]:
        if self.image is not None:
            return [self.image] if not Path(self.image).is_dir() else ["--rootfs", self.image]
        empty = Path(tempfile.gettempdir()) / "mlaas4hep-empty-root"
        empty.mkdir(mode=0o755, exist_ok=True)
        return ["--rootfs", str(empty)]

    def _check(self) -> str | None:
        why = _probe(["podman", "run", "--rm", *self._binds(), *self._root(), "/bin/true"])
        return None if why is None else f"podman cannot run a container here: {why}"

    def _binds(self) -> list[str]:
        out = []
        for system in _SYSTEM if self.image is None else ():
            if Path(system).exists():
                out += ["--volume", f"{Path(system).resolve()}:{system}:ro"]
        return out

    def _wrap(
        self, child: list[str], folder: Path, visible: _Visible, limits: Limits, gpu: bool
    ) -> list[str]:
        cmd = ["podman", "run", "--rm", "--init", "--env-host", "--network", "host", "--ipc", "private"]
        cmd += ["--uts", "private"]
        cmd += ["--cap-drop", "all", "--cap-add", "setuid,setgid", "--security-opt", "no-new-privileges"]
        cmd += ["--pids-limit", str(limits.processes), "--shm-size", str(limits.shm)]
        cmd += ["--tmpfs", f"/tmp:rw,size={limits.tmp},mode=1777", "--workdir", str(folder)]
        cmd += [*self._binds()]
        for device in sorted(glob.glob("/dev/nvidia*")) if gpu else []:
            cmd += ["--device", device]
        for path, writable in visible:
            cmd += ["--volume", f"{path}:{path}:{'rw' if writable else 'ro'}"]
        return [*cmd, *self._root(), *child]


class Apptainer(Sandbox):
    """``apptainer exec`` of a site's image, contained (no home, no host /tmp, own PID and IPC
    namespaces), the Python environment, inputs and job folder bound in; run as root, the job
    drops to its user."""

    name, tool, install = "apptainer", "apptainer", "see apptainer.org; not in Debian"

    def _check(self) -> str | None:
        if self.image is None:
            return "apptainer needs an image: --sandbox-image PATH (a SIF file or folder)"
        why = _probe(["apptainer", "exec", "--contain", "--cleanenv", self.image, "/bin/true"])
        return None if why is None else f"apptainer cannot run {self.image!r} here: {why}"

    def _wrap(
        self, child: list[str], folder: Path, visible: _Visible, limits: Limits, gpu: bool
    ) -> list[str]:
        # the worker's allowlisted environment passes (no --cleanenv); the job drops root itself
        cmd = ["apptainer", "exec", "--contain", "--no-home", "--pid", "--ipc"]
        cmd += ["--pwd", str(folder), *(["--nv"] if gpu else [])]
        for path, writable in visible:
            cmd += ["--bind", f"{path}:{path}:{'rw' if writable else 'ro'}"]
        return [*cmd, str(self.image), *child]


#: The sandboxes a service can run jobs in, by name.
SANDBOXES: dict[str, type[Sandbox]] = {s.name: s for s in (Bubblewrap, Podman, Apptainer)}


def sandbox_of(name: str = "bubblewrap", image: str | None = None) -> Sandbox:
    """The sandbox called ``name`` (see :data:`SANDBOXES`).

    Examples
    --------
    >>> sandbox_of("podman").name
    'podman'
    """
    if name not in SANDBOXES:
        from mlaas4hep_dask.errors import ConfigError

        raise ConfigError(f"unknown sandbox {name!r}: use one of {', '.join(SANDBOXES)}")
    return SANDBOXES[name](image)


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
