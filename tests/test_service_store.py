"""The job store on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.service.store import JobStore

from ._servers import postgres_server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        s = JobStore(f"sqlite:///{tmp_path / 'deep' / 'jobs.sqlite'}")
        yield s
        s.close()
        return
    try:
        with postgres_server() as url:
            s = JobStore(url)
            yield s
            s.close()
    except FileNotFoundError:
        message = "Debian's postgresql is not installed (make test installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_jobs_move_through_their_states_once(store: JobStore) -> None:
    job = store.create("alice", "tth", {"files": ["a.root"], "timeout": 10})
    assert (job.state, job.owner, job.spec["files"]) == ("queued", "alice", ["a.root"])
    assert store.transition(job.id, ["queued"], "running")
    assert not store.transition(job.id, ["queued"], "running")  # only one dispatcher wins
    store.update_progress(job.id, 0.5, "training")
    assert store.transition(job.id, ["running"], "succeeded", result={"metrics": {"val_auc": 0.8}})
    store.update_progress(job.id, 0.9, "late")  # ignored: the job is over
    done = store.get(job.id)
    assert done is not None
    assert (done.state, done.progress, done.phase, done.result) == (
        "succeeded",
        0.5,
        "training",
        {"metrics": {"val_auc": 0.8}},
    )
    assert done.started
    assert done.finished
    assert done.created <= done.started <= done.finished
    assert store.get("nope") is None


def test_listing_logs_and_recovery(store: JobStore) -> None:
    a = store.create("alice", "a", {})
    b = store.create("bob", "b", {})
    c = store.create("alice", "c", {})
    store.transition(a.id, ["queued"], "running")
    assert [j.id for j in store.jobs(owner="alice")] == [a.id, c.id]
    assert [j.id for j in store.jobs(states=["queued"])] == [b.id, c.id]

    threads = [
        threading.Thread(target=store.append_logs, args=([(a.id, f"{t}-{i}") for i in range(50)],))
        for t in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = store.logs(a.id, limit=10_000)
    assert len(lines) == 200
    assert len({s for s, _, _ in lines}) == 200
    page = store.logs(a.id, after=lines[99][0], limit=10)
    assert [s for s, _, _ in page] == [s for s, _, _ in lines[100:110]]

    assert store.recover("the service stopped") == [a.id]
    failed = store.get(a.id)
    assert failed is not None
    assert (failed.state, failed.error) == ("failed", "the service stopped")
    assert store.logs(a.id, after=lines[-1][0])[0][2] == "[service] the service stopped"
    assert {j.state for j in store.jobs(owner="bob")} == {"queued"}


def test_an_unusable_database_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("cannot open the job database 'nosuchdb://x'")):
        JobStore("nosuchdb://x")
    with pytest.raises(
        ConfigError, match=re.escape("cannot open the job database 'postgresql+psycopg://u@127.0.0.1:9/db'")
    ):
        JobStore("postgresql://u@127.0.0.1:9/db")


def test_the_default_workdir_is_outside_any_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import subprocess

    from mlaas4hep_dask.service.config import ServiceConfig

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert ServiceConfig(insecure_dev=True).workdir == tmp_path / "state" / "mlaas4hep" / "service"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert (
        ServiceConfig(insecure_dev=True).workdir == Path.home() / ".local" / "state" / "mlaas4hep" / "service"
    )
    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    assert not [f for f in tracked.stdout.split() if ".sqlite" in f]  # no runtime database committed
