"""The store: one folder of prepared datasets on local or shared storage (NFS, CephFS, EOS-FUSE).

Layout of ``STORE/KEY/``::

    plan.json          the shards to write (input files, entry ranges), the specs, the columns;
                       created once, exclusively: a second preparation of the key adopts it
    NAME.arrow         a shard, renamed into place when complete
    NAME.json          its rows, size and CRC-32, written after it
    NAME.lock          held (create-exclusive) while a process writes the shard
    manifest.json      written last, when every shard is there: the dataset is complete
    used               touched by every use (least recently used goes first)
    users/HOST-PID-ID  present while a process uses the dataset (never evicted then)

Only ``link`` / ``O_EXCL`` creation and ``rename`` are relied on, which NFS and the FUSE
file systems of the grid keep atomic; no ``flock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlaas4hep_dask._atomic import replacing, sibling
from mlaas4hep_dask.errors import ConfigError, OutputError
from mlaas4hep_dask.prepared._format import ShardInfo

__all__ = ["STALE_LOCK", "Folder", "Store", "StoreEntry"]

#: Seconds after which a shard's lock is taken over (its writer died on another machine).
STALE_LOCK = 300.0
#: Seconds after which another machine's use of a dataset no longer protects it from eviction.
STALE_USE = 24 * 3600.0

_HOST = socket.gethostname()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` at once (a temporary file renamed into place)."""
    try:
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read: {err}: remove it (mlaas4hep store rm)") from None


def _alive(marker: Path, stale: float) -> bool:
    """Whether the process that made ``marker`` (``HOST PID`` inside) may still run."""
    try:
        host, pid = marker.read_text().split()[:2]
        age = time.time() - marker.stat().st_mtime
    except (OSError, ValueError):
        return False
    if host != _HOST:
        return age < stale
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass(frozen=True)
class Folder:
    """The folder of one key in a store."""

    path: Path
    key: str

    def plan(self) -> dict[str, Any] | None:
        """``plan.json``, or ``None`` before a first preparation claimed the key."""
        return _read_json(self.path / "plan.json")  # type: ignore[no-any-return,unused-ignore]

    def claim(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Create ``plan.json`` unless another preparation did first; return the one in place."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = sibling(self.path / "plan.json")
        tmp.write_text(json.dumps(plan, indent=1))
        try:
            os.link(tmp, self.path / "plan.json")  # fails if it exists: the first one wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return self.plan()  # type: ignore[return-value]

    def manifest(self) -> dict[str, Any] | None:
        """``manifest.json``, or ``None`` while the dataset is not complete."""
        return _read_json(self.path / "manifest.json")  # type: ignore[no-any-return,unused-ignore]

    def written(self, name: str) -> ShardInfo | None:
        """A shard written completely (its file and its ``.json`` agree on the size), else ``None``."""
        info = _read_json(self.path / f"{name}.json")
        if info is None:
            return None
        shard = ShardInfo(**info)
        try:
            return shard if (self.path / name).stat().st_size == shard.bytes else None
        except FileNotFoundError:
            return None

    def forget(self, name: str) -> None:
        """Mark a damaged shard to be prepared again: its record and the manifest go."""
        for path in (self.path / f"{name}.json", self.path / "manifest.json"):
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def writing(self, name: str, stale: float = STALE_LOCK) -> Iterator[ShardInfo | None]:
        """Hold ``NAME.lock`` while writing a shard; yield the shard instead when another process
        wrote it meanwhile (then nothing is to be written)."""
        lock = self.path / f"{name}.lock"
        while True:
            done = self.written(name)
            if done is not None:
                yield done
                return
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _alive(lock, stale):
                    lock.unlink(missing_ok=True)  # its writer died: take it over
                else:
                    time.sleep(0.1)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{_HOST} {os.getpid()}\n")
            try:
                yield None
            finally:
                lock.unlink(missing_ok=True)
            return

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Keep the dataset from eviction while this block runs; it counts as used now."""
        users = self.path / "users"
        users.mkdir(parents=True, exist_ok=True)
        marker = users / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        marker.write_text(f"{_HOST} {os.getpid()}\n")
        try:
            self.touch()
            yield
        finally:
            marker.unlink(missing_ok=True)

    def touch(self) -> None:
        """Record a use now."""
        (self.path / "used").touch()

    def in_use(self) -> bool:
        """Whether a live process uses the dataset."""
        users = self.path / "users"
        return users.is_dir() and any(_alive(m, STALE_USE) for m in users.iterdir())

    def last_used(self) -> float:
        for name in ("used", "manifest.json", "plan.json"):
            with contextlib.suppress(OSError):
                return (self.path / name).stat().st_mtime
        return 0.0

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    """One dataset of a store, as ``mlaas4hep store ls`` shows it."""

    key: str
    complete: bool
    events: int
    files: int
    first_file: str
    bytes: int
    last_used: float
    in_use: bool


class Store:
    """A folder of prepared datasets, bounded by ``max_bytes`` (default ``MLAAS4HEP_STORE_MAX_BYTES``).

    Examples
    --------
    >>> store = Store("/ssd/prepared", max_bytes=200e9)  # doctest: +SKIP
    >>> [e.key[:12] for e in store.entries()]  # doctest: +SKIP
    ['3f9c1e0a7b42']
    """

    def __init__(self, root: str | Path, max_bytes: float | None = None) -> None:
        self.root = Path(root).absolute()
        if max_bytes is None and os.environ.get("MLAAS4HEP_STORE_MAX_BYTES"):
            max_bytes = _bytes(os.environ["MLAAS4HEP_STORE_MAX_BYTES"], "MLAAS4HEP_STORE_MAX_BYTES")
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot use {str(self.root)!r} as a store: {err.strerror or err}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise OutputError(f"cannot use {str(self.root)!r} as a store: it is not writable")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, max_bytes={self.max_bytes})"

    def folder(self, key: str) -> Folder:
        """The folder of ``key`` (made when a preparation claims it)."""
        return Folder(self.root / key, key)

    def folders(self) -> list[Folder]:
        return [Folder(p, p.name) for p in sorted(self.root.iterdir()) if p.is_dir() and len(p.name) == 64]

    def find(self, prefix: str) -> Folder:
        """The dataset whose key starts with ``prefix``."""
        found = [f for f in self.folders() if f.key.startswith(prefix)]
        if len(found) != 1:
            what = "no dataset" if not found else f"{len(found)} datasets"
            raise ConfigError(f"store {str(self.root)!r} has {what} whose key starts with {prefix!r}")
        return found[0]

    def entries(self) -> list[StoreEntry]:
        """Every dataset, most recently used first."""
        out = []
        for f in self.folders():
            doc = f.manifest() or f.plan() or {}
            files = doc.get("paths", [])
            out.append(
                StoreEntry(
                    f.key,
                    f.manifest() is not None,
                    int(doc.get("events", 0)),
                    len(files),
                    files[0] if files else "",
                    f.size(),
                    f.last_used(),
                    f.in_use(),
                )
            )
        return sorted(out, key=lambda e: -e.last_used)

    def remove(self, folder: Folder) -> None:
        """Remove a dataset (refused while a process uses it)."""
        if folder.in_use():
            raise ConfigError(f"prepared dataset {folder.key} is in use: not removed")
        shutil.rmtree(folder.path, ignore_errors=True)

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used datasets until the store fits ``max_bytes``; never one in use
        or ``keep``.  Returns the keys removed."""
        if self.max_bytes is None:
            return []
        folders = sorted(self.folders(), key=Folder.last_used)
        sizes = {f.key: f.size() for f in folders}
        total, removed = sum(sizes.values()), []
        for f in folders:
            if total <= self.max_bytes:
                break
            if f.key == keep or f.in_use():
                continue
            shutil.rmtree(f.path, ignore_errors=True)
            total -= sizes[f.key]
            removed.append(f.key)
        return removed

    def gc(self) -> list[str]:
        """Remove leftovers (temporary files, stale locks, incomplete datasets no one is preparing),
        then evict to ``max_bytes``.  Returns what was removed."""
        removed = []
        for f in self.folders():
            for leftover in f.path.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
                removed.append(str(leftover))
            locks = [lock for lock in f.path.glob("*.lock") if _alive(lock, STALE_LOCK)]
            if f.manifest() is None and not locks and not f.in_use():
                shutil.rmtree(f.path, ignore_errors=True)
                removed.append(f.key)
        return removed + self.evict()


def _bytes(text: str, what: str) -> int:
    """``200e9``, ``200G``, ``1.5TB``, ``500MiB`` as a number of bytes (Dask's notation)."""
    from dask.utils import parse_bytes

    t = text.strip()
    try:
        if not t[:1].isdigit() and t[:1] != ".":  # Dask reads "" as 1 byte and "G" as 1e9
            raise ValueError(t)
        return int(parse_bytes(t))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a size (e.g. 200G, 1.5T, 5e11)") from None


def parse_bytes(text: str) -> int:
    """The ``--store-max-bytes`` argument."""
    return _bytes(text, "--store-max-bytes")
