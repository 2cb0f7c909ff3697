"""Whether a job's user can read an input: checked at submit, so a 4xx names the file.

A sandboxed job runs as a uid of its own, with no account and no group but its own (see
:mod:`mlaas4hep_dask.service.sandbox`): it reads what *others* may read, a file with ``r`` for
others in folders with ``x`` for others from the data root it is under (which the sandbox
shows the job at its own path) down to the file.  An unsandboxed job runs as the
service's user, which the operating system asks directly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["unreadable"]


def unreadable(path: Path, root: Path, as_service: bool) -> str | None:
    """Why a job cannot read ``path`` (an existing file under data root ``root``), or ``None``.

    ``as_service``: the job runs as this process's user, not as a job uid of its own.

    Examples
    --------
    >>> unreadable(Path("/data/x.root"), Path("/data"), as_service=False)  # doctest: +SKIP
    "file '/data/x.root' is not readable by others (mode 640): a job runs as a user of its own"
    """
    if as_service:
        if not os.access(path, os.R_OK):
            return f"file {str(path)!r} is not readable by the service's user"
        return None
    for folder in [f for f in reversed(path.parents) if f.is_relative_to(root)]:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            mode = stat.S_IMODE(os.stat(folder).st_mode)
            return (
                f"folder {str(folder)!r} of file {str(path)!r} cannot be entered by others (mode "
                f"{mode:o}, no x): a job runs as a user of its own"
            )
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & stat.S_IROTH:
        return (
            f"file {str(path)!r} is not readable by others (mode {mode:o}): a job runs as a user of its own"
        )
    return None
