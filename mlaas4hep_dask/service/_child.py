"""``python -m mlaas4hep_dask.service._child ARGS``: ``mlaas4hep ARGS``, ending when its parent does.

A job's workflow runs in this child of the Dask worker's task, so that a timeout or a cancel
can stop it for certain.  If the worker dies, the child must not live on as an orphan that
keeps training.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from mlaas4hep_dask._lifeline import die_with_parent

    die_with_parent()
    from mlaas4hep_dask.cli import main

    sys.exit(main(sys.argv[1:]))
