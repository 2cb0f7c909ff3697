"""Files written at once: a temporary sibling renamed over the target, so that a crash or a full
disk never leaves half a file under the target's name."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["replacing", "sibling"]


def sibling(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``: unique, so that two writers (two processes,
    two machines of a shared file system) never write the same temporary file."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` when the block ends,
    and is removed when the block (or the rename) fails.

    Examples
    --------
    >>> with replacing(Path("specs.json")) as tmp:  # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    tmp = sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
