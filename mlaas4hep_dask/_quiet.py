"""Drop a library's lines that bypass Python's logging (C++ code writing to file descriptor 2).

XGBoost's collective prints one ``Task [xgboost.dask-N]:ADDRESS got rank N`` line in every
Dask worker that trains, from C++, past any verbosity setting.  TensorFlow's C++ runtime
writes its start-up notes (:data:`TENSORFLOW_NOTES`) through absl's logging before absl is
initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach all of them: on a CPU where TensorFlow
turns oneDNN on by default (Intel CPUs with AVX-512 VNNI or AMX, not the AMD ones of our
older machines), ``port.cc`` says so at INFO level at every import, whatever the level.
:func:`drop_lines` puts a pipe in front of descriptor 2 for the duration and passes every
other line through unchanged, in order; processes started meanwhile (a LocalCluster's
workers, their trainers) inherit the pipe, so their lines are filtered too.
:func:`dropping_on_workers` does it in a cluster's worker processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["TENSORFLOW_NOTES", "drop_lines", "dropping_on_workers", "ignore_known_warnings"]

#: TensorFlow's C++ start-up notes: absl's line before its logging is initialised, INFO lines
#: of absl's format (``I0000 00:00:... 2863 port.cc:153] oneDNN custom operations are on``) and
#: the second line of the CPU-instructions note.  Warnings and errors (``W``, ``E``) pass.
TENSORFLOW_NOTES = (
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def ignore_known_warnings() -> None:
    """Warnings of libraries that are not the user's to act on, off in this process."""
    import warnings

    # XRootD's finalizer walks every object at exit and trips torch's deprecated attributes
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op", category=FutureWarning)


#: The filters :func:`dropping_on_workers` started in this process, by pattern.
_started: dict[str, contextlib.AbstractContextManager[None]] = {}


@contextlib.contextmanager
def drop_lines(pattern: str) -> Iterator[None]:
    """Within the block, lines written to descriptor 2 that match ``pattern`` are not shown.

    Examples
    --------
    >>> with drop_lines(r"got rank"):  # doctest: +SKIP
    ...     xgboost.dask.train(client, params, dtrain)
    """
    wanted = re.compile(pattern.encode())
    sys.stderr.flush()
    shown = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        # the pump owns ``shown``: a child still holding the pipe past the block may write after it
        try:
            with os.fdopen(read, "rb") as lines:
                for line in lines:
                    if not wanted.search(line):
                        os.write(shown, line)
        finally:
            os.close(shown)

    thread = threading.Thread(target=pump, name="mlaas4hep-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(shown, 2)  # this process's last writer goes: the pump reads to its end and stops
        thread.join(timeout=5)


@contextlib.contextmanager
def dropping_on_workers(client: Any, pattern: str) -> Iterator[None]:
    """:func:`drop_lines` in every worker process of ``client``'s cluster, within the block."""
    client.run(_start, pattern)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a worker lost meanwhile has nothing to restore
            client.run(_stop, pattern)


def _start(pattern: str) -> None:
    if pattern not in _started:
        _started[pattern] = drop_lines(pattern)
        _started[pattern].__enter__()


def _stop(pattern: str) -> None:
    started = _started.pop(pattern, None)
    if started is not None:
        started.__exit__(None, None, None)
