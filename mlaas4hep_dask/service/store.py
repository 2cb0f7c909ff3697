"""Job records and their logs, in SQLite or PostgreSQL (SQLAlchemy Core).

A job moves ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled`` (a queued
job may also be cancelled).  Every change is one transaction, so a service that dies loses
nothing that was acknowledged; :meth:`JobStore.recover` settles the jobs a dead service left
running.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mlaas4hep_dask.errors import ConfigError

__all__ = ["STATES", "TERMINAL", "Job", "JobStore"]

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

_meta = sa.MetaData()
_jobs = sa.Table(
    "jobs",
    _meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True)),
    sa.Column("finished", sa.DateTime(timezone=True)),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("phase", sa.String(256), nullable=False, default=""),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("result", sa.Text),
)
_logs = sa.Table(
    "job_logs",
    _meta,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("job", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Index("job_logs_by_job", "job", "seq"),
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes: they were stored in UTC
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Job:
    """One job record."""

    id: str
    owner: str
    name: str
    state: str
    created: str
    started: str | None
    finished: str | None
    progress: float
    phase: str
    spec: dict[str, Any]
    error: str | None
    result: dict[str, Any] | None

    def public(self) -> dict[str, Any]:
        """What ``GET /jobs/{id}`` shows (the inputs without the model source or credentials)."""
        spec = {k: v for k, v in self.spec.items() if k not in ("model_source", "extra_files", "credentials")}
        out = dataclasses.asdict(self) | {"spec": spec}
        return out


class JobStore:
    """Jobs and log lines behind a SQLAlchemy URL (``sqlite:///path`` or ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):  # psycopg 3 is what we install
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            parsed = sa.engine.make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            with self.engine.begin() as db:
                _meta.create_all(db)
        except (sa.exc.SQLAlchemyError, ImportError, OSError) as err:
            raise ConfigError(f"cannot open the job database {url!r}: {err}") from None
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as db:
                db.exec_driver_sql("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        self.engine.dispose()

    def _job(self, row: Any) -> Job:
        m = row._mapping
        return Job(
            id=m["id"], owner=m["owner"], name=m["name"], state=m["state"],
            created=_iso(m["created"]) or "", started=_iso(m["started"]), finished=_iso(m["finished"]),
            progress=m["progress"], phase=m["phase"], spec=json.loads(m["spec"]), error=m["error"],
            result=json.loads(m["result"]) if m["result"] else None,
        )  # fmt: skip

    def create(self, owner: str, name: str, spec: dict[str, Any]) -> Job:
        """Record a new queued job."""
        job_id = uuid.uuid4().hex
        with self.engine.begin() as db:
            db.execute(
                _jobs.insert().values(
                    id=job_id,
                    owner=owner,
                    name=name,
                    state="queued",
                    created=_now(),
                    progress=0.0,
                    phase="queued",
                    spec=json.dumps(spec),
                )
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(_jobs).where(_jobs.c.id == job_id)).first()
        return self._job(row) if row is not None else None

    def jobs(self, owner: str | None = None, states: Iterable[str] | None = None) -> list[Job]:
        """Jobs, oldest first; of one owner and/or in some states."""
        query = sa.select(_jobs).order_by(_jobs.c.created, _jobs.c.id)
        if owner is not None:
            query = query.where(_jobs.c.owner == owner)
        if states is not None:
            query = query.where(_jobs.c.state.in_(list(states)))
        with self.engine.connect() as db:
            return [self._job(row) for row in db.execute(query)]

    def transition(self, job_id: str, old: Sequence[str], new: str, **fields: Any) -> bool:
        """Move a job from one of ``old`` states to ``new`` (atomically); False if it was not in ``old``.

        A job that ends forgets the user's data credentials, in the same transaction.
        """
        values: dict[str, Any] = {"state": new, **fields}
        if new == "running":
            values.setdefault("started", _now())
        if new in TERMINAL:
            values.setdefault("finished", _now())
        if "result" in values and values["result"] is not None:
            values["result"] = json.dumps(values["result"])
        with self.engine.begin() as db:
            done = db.execute(
                _jobs.update().where(_jobs.c.id == job_id, _jobs.c.state.in_(list(old))).values(**values)
            )
            if done.rowcount and new in TERMINAL:
                spec = json.loads(
                    db.execute(sa.select(_jobs.c.spec).where(_jobs.c.id == job_id)).scalar_one()
                )
                if spec.pop("credentials", None) is not None:
                    db.execute(_jobs.update().where(_jobs.c.id == job_id).values(spec=json.dumps(spec)))
        return bool(done.rowcount)

    def update_progress(self, job_id: str, progress: float | None, phase: str) -> None:
        values: dict[str, Any] = {"phase": phase[:256]}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        with self.engine.begin() as db:
            db.execute(
                _jobs.update().where(_jobs.c.id == job_id, _jobs.c.state == "running").values(**values)
            )

    def append_logs(self, lines: Iterable[tuple[str, str]]) -> None:
        """Store ``(job id, line)`` pairs."""
        rows = [{"job": job, "time": _now(), "line": line} for job, line in lines]
        if rows:
            with self.engine.begin() as db:
                db.execute(_logs.insert(), rows)

    def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Log lines ``(seq, time, line)`` of a job with ``seq > after``, at most ``limit``."""
        query = (
            sa.select(_logs.c.seq, _logs.c.time, _logs.c.line)
            .where(_logs.c.job == job_id, _logs.c.seq > after)
            .order_by(_logs.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as db:
            return [(seq, _iso(when) or "", line) for seq, when, line in db.execute(query)]

    def recover(self, reason: str) -> list[str]:
        """Mark the jobs left running by a service that stopped as failed; return their ids."""
        stale = [job.id for job in self.jobs(states=["running"])]
        for job_id in stale:
            self.transition(job_id, ["running"], "failed", error=reason, phase="failed")
        if stale:
            self.append_logs((job_id, f"[service] {reason}") for job_id in stale)
        return stale
