"""``python -m mlaas4hep_dask.fit._trainer JOB FD``: one data-parallel trainer's process."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from mlaas4hep_dask.fit._rank import main

    sys.exit(main(*sys.argv[1:3]))
