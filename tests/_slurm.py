"""A real one-node Slurm on loopback for the tests: munged, slurmctld and slurmd as child processes.

Debian's ``slurmctld slurmd slurm-client munge`` (installed by ``make slurm``; ``make slurm-up``
and ``make slurm-down`` start and stop the same on a laptop): munged runs in
the foreground as the ``munge`` user, slurmctld and slurmd in the foreground (``-D``) with a
``slurm.conf`` of one node ``localhost`` (``NodeAddr=127.0.0.1``, the machine's CPUs and
memory, no accounting, state and spool in a temporary folder), each stopped by its PID.
``SLURM_CONF`` points the clients (``sbatch``, ``squeue``, ``scancel``, dask-jobqueue) at it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")


def missing() -> str | None:
    """Why a Slurm cannot be started here (``None``: it can)."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"{', '.join(absent)} not installed (make slurm installs Debian's slurmctld, slurmd, munge)"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _config(folder: Path) -> Path:
    cpus = os.cpu_count() or 1
    probe = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    memory = int(re.search(r"RealMemory=(\d+)", probe).group(1))  # type: ignore[union-attr]
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""ClusterName=mlaas4hep-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "log" / "slurmctld.log"}
SlurmdLogFile={folder / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""
    )
    return conf


def squeue(conf: Path) -> list[str]:
    """The names of the jobs Slurm has pending or running."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%j %T"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": str(conf)},
    )
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def start(folder: Path) -> tuple[Path, list[subprocess.Popen[bytes]]]:
    """Start munged, slurmctld and slurmd (in ``folder``); their ``slurm.conf`` and processes."""
    munge = pwd.getpwnam("munge")
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    os.chown(run, munge.pw_uid, munge.pw_gid)
    conf = _config(folder)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen[bytes]] = []
    with open(folder / "log" / "daemons.log", "ab") as log:
        try:
            munged = [_binary("munged"), "-F", "--force"]
            procs.append(subprocess.Popen(["runuser", "-u", "munge", "--", *munged], stdout=log, stderr=log))
            _wait(lambda: Path("/run/munge/munge.socket.2").exists(), "munged", folder)
            for cmd in ([_binary("slurmctld"), "-D"], [_binary("slurmd"), "-D", "-N", "localhost"]):
                procs.append(subprocess.Popen([*cmd, "-f", str(conf)], env=env, stdout=log, stderr=log))

            def idle() -> bool:
                out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
                return out.stdout.strip().startswith(("idle", "mix", "alloc"))

            _wait(idle, "slurmd (node idle in sinfo)", folder)
        except BaseException:
            stop(conf, [p.pid for p in procs])
            raise
    (folder / "pids").write_text(" ".join(str(p.pid) for p in procs))
    return conf, procs


def stop(conf: Path, pids: list[int]) -> None:
    """Cancel every job, then stop the daemons (the last started first)."""
    subprocess.run(
        ["scancel", "--full", "-u", "root"], env={**os.environ, "SLURM_CONF": str(conf)}, capture_output=True
    )
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for pid in reversed(pids):
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def slurm(folder: Path) -> Iterator[Path]:
    """Start munged, slurmctld and slurmd; yield the ``slurm.conf``; stop them by PID."""
    conf, procs = start(folder)
    try:
        yield conf
    finally:
        stop(conf, [p.pid for p in procs])


def _wait(ready: object, what: str, folder: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.25)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in (folder / "log").glob("*.log"))
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s:\n{logs}")


if __name__ == "__main__":  # make slurm-up / slurm-down: a Slurm to try --cluster slurm on
    import sys

    action, where = sys.argv[1], Path(sys.argv[2]).resolve()
    if action == "up":
        where.mkdir(parents=True, exist_ok=True)
        conf, _ = start(where)
        print(
            f"Slurm is up on 127.0.0.1; for sbatch, squeue and mlaas4hep --cluster slurm:\n  export SLURM_CONF={conf}"
        )
    else:
        stop(where / "slurm.conf", [int(p) for p in (where / "pids").read_text().split()])
        print("Slurm stopped")
