"""``python -m mlaas4hep_dask.service._child ARGS``: ``mlaas4hep ARGS``, ending when its parent does.

A job's workflow runs in this child of the Dask worker's task, so that a timeout or a cancel
can stop it for certain.  If the worker dies, the child must not live on as an orphan that
keeps training: a watchdog thread ends it once its parent is gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


if __name__ == "__main__":
    threading.Thread(target=_watch, args=(os.getppid(),), daemon=True).start()
    from mlaas4hep_dask.cli import main

    sys.exit(main(sys.argv[1:]))
