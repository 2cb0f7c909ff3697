"""Opening one input: local paths (memory-mapped), ``root://`` and HTTP(S) URLs, the redirector.

Every process that reads imports this module first: it sets the XRootD client's retry and
fork settings and initialises XRootD's TLS before TensorFlow can load its own (see below).
Failures become errors that name the input.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

# XRootD's client retries a dead server for minutes by default; fail within seconds instead,
# and make forked workers safe.  Users can still override these in their environment.
os.environ.setdefault("XRD_CONNECTIONRETRY", "1")
os.environ.setdefault("XRD_CONNECTIONWINDOW", "10")
os.environ.setdefault("XRD_REQUESTTIMEOUT", "60")
os.environ.setdefault("XRD_RUNFORKHANDLER", "1")

# XRootD's TLS initialiser must run before TensorFlow loads its bundled BoringSSL: the other
# order segfaults as soon as a root:// file is opened (or TF is imported after XRootD is used
# lazily).  Importing it here, before any user model.py, makes the order right in our processes.
with contextlib.suppress(ImportError):  # xrootd is a dependency; a broken install is reported later
    import XRootD.client  # noqa: F401

import uproot

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import InputError, InputNotFoundError, NotRootFileError, RemoteInputError

__all__ = ["OPEN_TIMEOUT", "REMOTE", "file_identity", "handler_for", "open_file", "resolve_path"]

REMOTE = ("root://", "http://", "https://")

OPEN_TIMEOUT = 30


def resolve_path(entry: str, redirector: str = "") -> str:
    """Turn one ``files.txt`` entry into something uproot opens.

    Local paths are made absolute; ``root://`` and ``http(s)://`` URLs pass through; a bare
    ``/store/...`` path that does not exist locally gets the ``redirector`` prefixed, as in
    the original tool.

    Examples
    --------
    >>> resolve_path("/store/mc/x.root", "root://eos.example.org:1094/")
    'root://eos.example.org:1094//store/mc/x.root'
    """
    entry = entry.strip()
    if entry.startswith(REMOTE):
        return entry
    if entry.startswith("file://"):
        entry = entry[len("file://") :]
    if entry.startswith("/store/") and redirector and not Path(entry).exists():
        return f"{redirector.rstrip('/')}/{entry}"
    return str(Path(entry).expanduser().absolute())


def handler_for(url: str, params: Params) -> type | None:
    """The uproot source class for ``url``: the XRootD client's, a memory map, or uproot's default."""
    if url.startswith("root://") and params.xrootd_handler == "xrootd":
        return uproot.source.xrootd.XRootDSource
    if not url.startswith(REMOTE):
        return uproot.source.file.MemmapSource  # 10-20 % faster than uproot's fsspec default
    return None


def open_file(path: str, url: str, params: Params) -> Any:
    """Open a ROOT file's directory, turning failures into errors that name the input."""
    if not url.startswith(REMOTE):
        local = Path(url)
        try:
            if not local.exists():
                raise InputNotFoundError(f"input file {path!r} does not exist")
            if local.is_dir():
                raise InputError(f"input {path!r} is a directory, not a ROOT file")
            with local.open("rb") as fh:
                header = fh.read(20)
        except PermissionError:
            raise InputError(f"input file {path!r} cannot be read by this user: {_denied(local)}") from None
        if header[:4] != b"root":
            raise NotRootFileError(f"input file {path!r} is not a ROOT file")
        _check_complete(path, header, local.stat().st_size)
    try:
        return uproot.open(url, handler=handler_for(url, params), timeout=OPEN_TIMEOUT)
    except FileNotFoundError:
        raise InputNotFoundError(f"input file {path!r} does not exist") from None
    except (TimeoutError, ConnectionError) as err:
        raise RemoteInputError(f"cannot reach input {path!r}: {err}") from None
    except ImportError as err:
        raise InputError(f"cannot open {path!r}: {err}") from None
    except (OSError, ValueError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "not a ROOT file" in text or "expected Chunk" in text:
            raise NotRootFileError(f"input file {path!r} is not a ROOT file") from None
        if url.startswith(REMOTE):
            raise RemoteInputError(f"cannot read input {path!r}: {text}") from None
        raise InputError(f"cannot read input {path!r}: {text}") from None


def _denied(local: Path) -> str:
    """What keeps this process's user from reading ``local``: a folder it cannot enter, or the file."""
    for folder in reversed(local.absolute().parents):
        if not os.access(folder, os.X_OK):
            return f"folder {str(folder)!r} has no x (search) permission for it"
    return "the file has no r (read) permission for it"


def _check_complete(path: str, header: bytes, size: int) -> None:
    """Refuse a local ROOT file shorter than the end its header records (a cut-off copy)."""
    import struct

    if len(header) < 20:
        raise InputError(f"input file {path!r} is truncated: {size} bytes, not even a ROOT header")
    version, _begin = struct.unpack(">ii", header[4:12])
    end = (
        struct.unpack(">q", header[12:20])[0]
        if version >= 1_000_000
        else struct.unpack(">i", header[12:16])[0]
    )
    if size < end:
        raise InputError(
            f"input file {path!r} is truncated: {size:,} bytes of the {end:,} its header records "
            "(an interrupted copy or download?)"
        )


def file_identity(url: str) -> tuple[int, int, int, int] | None:
    """A local file's device, inode, size and modification time (a file written anew is another
    file); ``None`` for a remote file (asking would cost a round trip) or one that cannot be
    found (opening it says what is wrong)."""
    if url.startswith(REMOTE):
        return None
    try:
        st = os.stat(url)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
