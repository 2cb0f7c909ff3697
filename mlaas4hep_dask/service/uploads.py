"""Each user's uploaded tarballs (model.py, files.txt, small inputs...), unpacked safely."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import IO, Any

from mlaas4hep_dask._tarball import UnsafeArchiveError, unpack
from mlaas4hep_dask.errors import SchemaError
from mlaas4hep_dask.service.config import ServiceConfig
from mlaas4hep_dask.service.submission import NAME_PATTERN, SubmissionError

__all__ = ["UploadNotFoundError", "Uploads"]


class UploadNotFoundError(SchemaError):
    """The caller has no upload of that name (HTTP 404)."""


class Uploads:
    """Uploads under ``root/<user digest>/<name>``: a user sees only their own."""

    def __init__(self, root: Path, max_unpacked: int) -> None:
        self.root = root
        self.max_unpacked = max_unpacked
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def of(cls, config: ServiceConfig) -> Uploads:
        """The uploads of the service of ``config``: in its work dir, at most 4x an upload unpacked."""
        return cls(config.workdir / "uploads", max_unpacked=4 * config.max_upload)

    def _home(self, user: str) -> Path:
        # user names are e-mail addresses, DNs, subjects...: never used as paths themselves
        return self.root / hashlib.sha256(user.encode()).hexdigest()[:32]

    def add(self, user: str, name: str, data: bytes | IO[bytes]) -> dict[str, Any]:
        """Unpack a tarball as upload ``name`` of ``user`` (replacing an older one of that name)."""
        if not re.match(NAME_PATTERN, name):
            raise SubmissionError(
                f"upload name {name!r} is not allowed: letters, digits, '_', '.', '-' (max 64)"
            )
        staging = self._home(user) / f".incoming-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            try:
                unpack(data, staging, self.max_unpacked)
            except UnsafeArchiveError as err:
                raise SubmissionError(f"upload {name!r} refused: {err}") from None
            inner = list(staging.iterdir())
            top = inner[0] if len(inner) == 1 and inner[0].is_dir() else staging  # one folder: its content
            target = self._home(user) / name
            if target.exists():
                shutil.rmtree(target)
            top.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.describe(user, name)

    def path(self, user: str, name: str) -> Path:
        """The folder of ``user``'s upload ``name``."""
        folder = self._home(user) / name
        if not folder.is_dir():
            raise UploadNotFoundError(f"you have no upload named {name!r}")
        return folder

    def describe(self, user: str, name: str) -> dict[str, Any]:
        folder = self.path(user, name)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        size = sum((folder / f).stat().st_size for f in files)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(folder.stat().st_mtime))
        return {"name": name, "files": files, "bytes": size, "created": created}

    def list(self, user: str) -> list[dict[str, Any]]:
        home = self._home(user)
        names = (
            sorted(p.name for p in home.iterdir() if p.is_dir() and not p.name.startswith("."))
            if home.is_dir()
            else []
        )
        return [self.describe(user, n) for n in names]

    def delete(self, user: str, name: str) -> None:
        shutil.rmtree(self.path(user, name))

    def contents(self, user: str, name: str) -> dict[str, bytes]:
        """Every file of the upload, by relative path (shipped to the worker that runs the job)."""
        folder = self.path(user, name)
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
