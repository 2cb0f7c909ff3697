"""One submit service per work directory: a lock file that holds the service's pid.

Two services on one work dir would share its job database and uploads, and the second to
start would mark the first one's running jobs failed.  :func:`hold_workdir` takes an
exclusive ``flock`` on ``WORKDIR/service.lock`` before the database is opened and keeps it
for the service's life.  The kernel drops the lock when its process ends, however it ends,
so a lock left by a killed service is free; its pid is still in the file (a service that
stops cleanly empties it), so it is taken over with a warning naming that pid, and only then
does the new service mark that one's running jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from mlaas4hep_dask.errors import ConfigError

__all__ = ["WorkdirBusyError", "hold_workdir"]

_log = logging.getLogger("mlaas4hep_dask.service")
LOCK_NAME = "service.lock"


class WorkdirBusyError(ConfigError):
    """Another live service holds the work directory."""


@contextlib.contextmanager
def hold_workdir(workdir: Path) -> Iterator[None]:
    """Hold ``workdir`` for this process within the block.

    Raises
    ------
    WorkdirBusyError
        A live service holds it (the message names the work dir and that service's pid).

    Examples
    --------
    >>> with hold_workdir(Path(tmp)):  # doctest: +SKIP
    ...     serve()
    """
    path = workdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirBusyError(
                f"work dir {str(workdir)!r} is in use by another service (pid {holder}): "
                "stop it, or give this one its own --workdir"
            ) from None
        if before := os.pread(fd, 32, 0).decode(errors="replace").strip():
            _log.warning(
                "work dir %s: taking over from service pid %s, which ended without releasing it",
                workdir, before,
            )  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean stop: nothing to take over
    finally:
        os.close(fd)  # releases the lock
