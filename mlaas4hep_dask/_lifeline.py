"""Children that must not outlive the process that started them (a Dask worker's task)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["die_with_parent"]


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def die_with_parent() -> None:
    """End this process (exit status 3) within a second of its parent's death.

    A worker that is killed cannot end its children; a child that lived on as an orphan would
    keep training (and hold a GPU, or a rank of a process group).
    """
    threading.Thread(target=_watch, args=(os.getppid(),), daemon=True, name="lifeline").start()
