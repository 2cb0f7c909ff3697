"""A model repository: run bundles by name and version, on disk or any fsspec URL, indexed in SQLite.

``Repository("models")`` keeps bundles in a local folder.  ``Repository("s3://bucket/models")``
(any fsspec URL: shared storage for several servers) keeps them there: each version carries an
``info.json``, the SQLite index lives in a local cache folder and is rebuilt from those files
(at start, when listing, and when a model is not found), and bundles are downloaded into the
cache to be loaded.

Uploads are tarballs of a run directory.  They are unpacked into a private staging folder
(refusing absolute paths, ``..``, links and special files, and bounded in size), checked by
loading the bundle, and only then moved into ``ROOT/NAME/VERSION`` and recorded, so a failed
upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mlaas4hep_dask._tarball import UnsafeArchiveError, pack, unpack
from mlaas4hep_dask.bundle._bundle import Bundle, load_bundle
from mlaas4hep_dask.errors import MLaaSError, SchemaError

__all__ = [
    "BundleError",
    "ModelInfo",
    "ModelNotFoundError",
    "Repository",
    "check_name",
    "manifest_of",
    "pack",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_UNPACKED = 2 * 2**30


class ModelNotFoundError(SchemaError):
    """No model (or no such version) in the repository."""


class BundleError(MLaaSError, ValueError):
    """An upload that is not a usable run bundle."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """One stored model version."""

    name: str
    version: int
    framework: str
    idim: int
    task: str
    created: str
    path: str
    inputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "inputs": list(self.inputs)}

    def row(self) -> tuple[Any, ...]:
        """The SQLite row (inputs as a JSON list)."""
        return (*dataclasses.astuple(self)[:-1], json.dumps(list(self.inputs)))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ModelInfo:
        name, version, framework, idim, task, created, path, inputs = row
        return cls(name, version, framework, idim, task, created, path, tuple(json.loads(inputs or "[]")))


def check_name(name: str) -> str:
    """A model name: letters, digits and ``_``, ``.``, ``-`` (at most 64 characters, no path)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BundleError(f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' (max 64)")
    return name


def _bundle_root(folder: Path) -> Path:
    if (folder / "bundle.json").is_file():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir()]
    if len(inner) == 1 and (inner[0] / "bundle.json").is_file():
        return inner[0]
    raise BundleError("upload refused: no bundle.json at the top of the tarball (or in its one folder)")


class Repository:
    """Run bundles under ``root``, one folder per name and version, indexed in ``index.sqlite``.

    Examples
    --------
    >>> repo = Repository("models")  # doctest: +SKIP
    >>> repo.add("tth", open("run.tar.gz", "rb"))  # doctest: +SKIP
    ModelInfo(name='tth', version=1, framework='torch', ...)
    >>> repo.load("tth").predict_features(X)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        cache_size: int = 8,
        cache_dir: str | Path | None = None,
        refresh: float = 5.0,
        runtime: str = "native",
    ) -> None:
        text = str(root)
        self.runtime = runtime
        self.fs: Any = None
        self.refresh = refresh
        self._synced = -float("inf")
        if "://" in text and not text.startswith("file://"):
            import fsspec

            self.fs, self.store = fsspec.core.url_to_fs(text)
            self.url = text.rstrip("/")
            digest = hashlib.sha1(text.encode()).hexdigest()[:16]
            self.root = (
                Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "mlaas4hep-repo" / digest
            )
        else:
            self.root = Path(text.removeprefix("file://"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, int], Bundle] = {}
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._lookups: dict[tuple[str, int | None], tuple[tuple[int, int], ModelInfo]] = {}
        self.cache_size = cache_size
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS models (name TEXT NOT NULL, version INTEGER NOT NULL, "
                "framework TEXT, idim INTEGER, task TEXT, created TEXT, path TEXT, inputs TEXT, "
                "PRIMARY KEY (name, version))"
            )
        self._sync()

    def _sync(self, force: bool = True) -> None:
        """Rebuild the local index from the ``info.json`` files of a remote store.

        Without ``force``, only when the index is older than ``refresh`` seconds.
        """
        if self.fs is None or (not force and time.monotonic() - self._synced < self.refresh):
            return
        self._synced = time.monotonic()
        rows = []
        for path in self.fs.glob(f"{self.store}/*/*/info.json"):
            with self.fs.open(path) as fh:
                data = json.load(fh)
                rows.append(ModelInfo(**{**data, "inputs": tuple(data.get("inputs", ()))}))
        with self._db() as db:
            db.execute("DELETE FROM models")
            db.executemany("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [r.row() for r in rows])

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "index.sqlite", timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def add(self, name: str, tarball: bytes | IO[bytes] | Path, version: int | None = None) -> ModelInfo:
        """Store a bundle tarball as ``name`` (next version unless ``version`` is given)."""
        check_name(name)
        if version is not None and (not isinstance(version, int) or version < 1):
            raise BundleError(f"version must be a positive integer, not {version!r}")
        staging = self.root / ".incoming" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            try:
                unpack(tarball.read_bytes() if isinstance(tarball, Path) else tarball, staging, MAX_UNPACKED)
            except UnsafeArchiveError as err:
                raise BundleError(f"upload refused: {err}") from None
            root = _bundle_root(staging)
            try:
                bundle = load_bundle(root)
            except Exception as err:
                raise BundleError(f"upload refused: the bundle does not load: {err}") from None
            with self._lock:
                self._sync()
                version = version or self._next_version(name)
                target = (
                    f"{self.url}/{name}/{version}"
                    if self.fs is not None
                    else str(self.root / name / str(version))
                )
                if self._exists(name, version):
                    raise BundleError(f"model {name!r} version {version} exists already")
                info = ModelInfo(
                    name=name,
                    version=version,
                    framework=bundle.framework,
                    idim=bundle.layout.idim,
                    inputs=tuple(bundle.plan.columns),
                    task=bundle.manifest["task"]["kind"],
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    path=target,
                )
                (root / "info.json").write_text(json.dumps(info.to_dict()))
                if self.fs is not None:
                    self.fs.put(f"{root}/", f"{self.store}/{name}/{version}", recursive=True)
                else:
                    Path(target).parent.mkdir(parents=True, exist_ok=True)
                    root.rename(target)
                with self._db() as db:
                    db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)", info.row())
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _exists(self, name: str, version: int) -> bool:
        if self.fs is not None:
            return bool(self.fs.exists(f"{self.store}/{name}/{version}"))
        return (self.root / name / str(version)).exists()

    def _next_version(self, name: str) -> int:
        with self._db() as db:
            (latest,) = db.execute("SELECT MAX(version) FROM models WHERE name = ?", (name,)).fetchone()
        return int(latest or 0) + 1

    def models(self) -> list[ModelInfo]:
        """Every stored version, by name then version."""
        self._sync(force=False)
        with self._db() as db:
            rows = db.execute("SELECT * FROM models ORDER BY name, version").fetchall()
        return [ModelInfo.from_row(row) for row in rows]

    def get(self, name: str, version: int | None = None) -> ModelInfo:
        """One version (the latest when ``version`` is ``None``).

        A local repository answers again from memory while its index file is unchanged (a
        stat instead of a query: the inference server asks on every request).
        """
        stamp = self._stamp()
        known = self._lookups.get((name, version))
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1]
        info = self._query(name, version)
        if stamp is not None:
            if len(self._lookups) > 1024:
                self._lookups.clear()
            self._lookups[name, version] = (stamp, info)
        return info

    def _stamp(self) -> tuple[int, int] | None:
        """The local index file's modification time and size (``None`` for a remote store)."""
        if self.fs is not None:
            return None
        st = (self.root / "index.sqlite").stat()
        return st.st_mtime_ns, st.st_size

    def _query(self, name: str, version: int | None) -> ModelInfo:
        query = "SELECT * FROM models WHERE name = ?" + (" AND version = ?" if version else "")
        query += " ORDER BY version DESC LIMIT 1"
        args = (name, version) if version else (name,)
        self._sync(force=False)
        with self._db() as db:
            rows = db.execute(query, args).fetchall()
        if not rows and self.fs is not None:  # perhaps stored by another server since the last sync
            self._sync()
            with self._db() as db:
                rows = db.execute(query, args).fetchall()
        if not rows:
            what = f"model {name!r}" + (f" version {version}" if version else "")
            raise ModelNotFoundError(f"{what} is not in the repository")
        return ModelInfo.from_row(rows[0])

    def delete(self, name: str, version: int | None = None) -> list[ModelInfo]:
        """Remove one version, or every version of ``name``; return what was removed."""
        with self._lock:
            gone = [self.get(name, version)] if version else [m for m in self.models() if m.name == name]
            if not gone:
                raise ModelNotFoundError(f"model {name!r} is not in the repository")
            with self._db() as db:
                for info in gone:
                    db.execute("DELETE FROM models WHERE name = ? AND version = ?", (info.name, info.version))
            for info in gone:
                self._cache.pop((info.name, info.version), None)
                if self.fs is not None:
                    self.fs.rm(f"{self.store}/{info.name}/{info.version}", recursive=True)
                    shutil.rmtree(self.root / "bundles" / info.name / str(info.version), ignore_errors=True)
                else:
                    shutil.rmtree(info.path, ignore_errors=True)
            if version is None:  # the whole model: its folder too
                if self.fs is not None and self.fs.exists(f"{self.store}/{name}"):
                    self.fs.rm(f"{self.store}/{name}", recursive=True)
                shutil.rmtree(self.root / name, ignore_errors=True)
        return gone

    def _local_copy(self, info: ModelInfo) -> Path:
        """The bundle folder on this machine (downloaded once from a remote store)."""
        if self.fs is None:
            return Path(info.path)
        local = self.root / "bundles" / info.name / str(info.version)
        if not (local / "bundle.json").is_file():
            staging = local.with_name(f".{info.version}-{uuid.uuid4().hex}")
            self.fs.get(f"{self.store}/{info.name}/{info.version}/", f"{staging}/", recursive=True)
            local.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(local)
        return local

    @property
    def loaded(self) -> list[tuple[str, int]]:
        """``(name, version)`` of the bundles loaded in this process (the cache's, oldest first)."""
        with self._lock:
            return list(self._cache)

    def cached(self, name: str, version: int | None = None) -> tuple[ModelInfo, Bundle] | None:
        """The stored bundle if this process has it loaded already, else ``None`` (no loading)."""
        info = self.get(name, version)
        with self._lock:
            bundle = self._cache.get((info.name, info.version))
        return None if bundle is None else (info, bundle)

    def load(self, name: str, version: int | None = None) -> tuple[ModelInfo, Bundle]:
        """The stored bundle, loaded once and kept in a small cache.

        A version is loaded by one thread at a time, outside the repository's lock: loading
        takes seconds, and the versions already loaded stay at hand meanwhile.
        """
        info = self.get(name, version)
        key = (info.name, info.version)
        with self._lock:
            if key in self._cache:
                return info, self._cache[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._cache:  # another thread loaded it meanwhile
                    return info, self._cache[key]
            bundle = load_bundle(self._local_copy(info), self.runtime)
            with self._lock:
                if len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = bundle
                self._loading.pop(key, None)
            return info, bundle


def manifest_of(info: ModelInfo) -> dict[str, Any]:
    """``bundle.json`` of a stored version."""
    return dict(json.loads((Path(info.path) / "bundle.json").read_text()))
