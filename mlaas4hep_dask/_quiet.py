"""Drop a library's lines that bypass Python's logging (C++ code writing to file descriptor 2).

XGBoost's collective prints one ``Task [xgboost.dask-N]:ADDRESS got rank N`` line in every
Dask worker that trains, from C++, past any verbosity setting.  :func:`drop_lines` puts a
pipe in front of descriptor 2 for the duration and passes every other line through
unchanged, in order; :func:`dropping_on_workers` does it in a cluster's worker processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["drop_lines", "dropping_on_workers"]

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
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not wanted.search(line):
                    os.write(shown, line)

    thread = threading.Thread(target=pump, name="mlaas4hep-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(shown, 2)  # the pipe's last writer goes: the pump reads to its end and stops
        thread.join(timeout=5)
        os.close(shown)


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
