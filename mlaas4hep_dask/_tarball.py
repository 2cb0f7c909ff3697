"""Tarballs of folders: packing a run directory, and unpacking uploads without trusting them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import IO

from mlaas4hep_dask.errors import MLaaSError

__all__ = ["UnsafeArchiveError", "pack", "unpack"]


class UnsafeArchiveError(MLaaSError, ValueError):
    """A tarball that is unreadable, or would write outside its folder, or is too big."""


def pack(folder: str | Path) -> bytes:
    """The plain files under ``folder`` as a gzipped tarball, with paths relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return buffer.getvalue()


def unpack(data: bytes | IO[bytes], target: Path, max_bytes: int) -> None:
    """Extract a (compressed) tarball into ``target``, refusing anything unsafe.

    Absolute paths, ``..``, drive letters, links and special files are refused, and so is an
    archive whose members add up to more than ``max_bytes``: all before anything is written.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with tarfile.open(fileobj=source, mode="r:*") as archive:
            total = 0
            members = archive.getmembers()
            for member in members:
                name = member.name
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise UnsafeArchiveError(f"path {name!r} leaves the archive's folder")
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"{name!r} is a link or special file")
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchiveError(f"more than {max_bytes} bytes unpacked")
            archive.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UnsafeArchiveError(f"not a readable tarball ({err})") from None
