"""``python -m mlaas4hep_dask.cli``: the ``mlaas4hep`` command."""

from __future__ import annotations

import sys

from mlaas4hep_dask.cli._main import main

sys.exit(main())
