"""``python -m mlaas4hep_dask.cli._child [--as UID --limits JSON] ARGS``: ``mlaas4hep ARGS``.

A job's workflow runs in this child of the Dask worker's task, so that a timeout or a cancel
can stop it for certain.  If the worker dies, the child must not live on as an orphan that
keeps training.  In the sandbox (``--as``), it sets its limits and drops to the job's user
before it imports anything of the job's.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from mlaas4hep_dask._lifeline import die_with_parent

    die_with_parent()
    argv = sys.argv[1:]
    if argv[:1] == ["--as"]:
        import json

        from mlaas4hep_dask.service.sandbox import enter

        enter(int(argv[1]), json.loads(argv[3]))
        argv = argv[4:]
    from mlaas4hep_dask.cli._main import main

    sys.exit(main(argv))
