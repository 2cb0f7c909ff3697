"""The submit service end to end: a real ``mlaas4hep service`` process, a real LocalCluster, a real issuer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlaas4hep_dask.serve import Repository
from mlaas4hep_dask.service.sandbox import sandbox_of

from ._oidc import AUDIENCE, Issuer, oidc_issuer
from ._service import TERMINAL as TERMINAL_STATES
from ._service import Caller, ServiceProcess, tarball, worker_pid_running

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

MODEL = "from sklearn.linear_model import SGDClassifier\n\ndef model():\n    return SGDClassifier(loss='log_loss', random_state=0)\n"
SLEEPER = "import time\ntime.sleep(600)\n\ndef model():\n    return None\n"
PARAMS = {
    "tree": "events",
    "chunk_size": 2000,
    "epochs": 2,
    "batch_size": 256,
    "identifier": ["run", "event"],
    "exclude_branches": ["weight"],
}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with oidc_issuer() as it:
        yield it


#: Why jobs cannot be sandboxed on this machine (bubblewrap missing, no namespaces, not root).
NO_SANDBOX = sandbox_of().unavailable()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """The shared cluster; with sandboxed jobs, one that takes only peers with its TLS certificate."""
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    cluster = local_cluster(n_workers=2, secure=NO_SANDBOX is None)
    with Client(cluster) as client:
        yield client
    cluster.close()


def _args(issuer: Issuer, cluster: Any, data: Path, repo: Path, *more: str) -> list[str]:
    data.chmod(0o755)  # a job runs as a user of its own: its inputs must be readable by others
    unsandboxed = ["--unsandboxed-jobs"] if NO_SANDBOX else []
    return [
        "--scheduler", cluster.scheduler.address, "--issuer", issuer.url, "--audience", AUDIENCE,
        "--data-root", str(data), "--repository", str(repo), *unsandboxed, *more,
    ]  # fmt: skip


def _credentials(cluster: Any, folder: Path) -> dict[str, str]:
    """The Dask settings that give the service process the cluster's TLS certificate (files 0600)."""
    security = cluster.security
    if not security.require_encryption:
        return {}
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    for name, value in (
        ("TLS__CA_FILE", security.tls_ca_file),
        ("TLS__CLIENT__CERT", security.tls_client_cert),
        ("TLS__CLIENT__KEY", security.tls_client_key),
    ):
        path = folder / name.lower().replace("__", "-")
        path.touch(mode=0o600)
        path.write_text(value)
        env[f"DASK_DISTRIBUTED__COMM__{name}"] = str(path)
    return env


@pytest.fixture(scope="module")
def service(
    issuer: Issuer, cluster: Any, generated: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("service")
    svc = ServiceProcess(
        work,
        *_args(issuer, cluster, generated[0].parent, work / "models", "--max-jobs-per-user", "1"),
        env=_credentials(cluster, tmp_path_factory.mktemp("tls")),
    )
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def alice(service: ServiceProcess, issuer: Issuer) -> Caller:
    return Caller(service.url, issuer.token("alice", lifetime=3600))  # the module's tests take minutes


@pytest.fixture(scope="module")
def bob(service: ServiceProcess, issuer: Issuer) -> Caller:
    return Caller(service.url, issuer.token("bob", lifetime=3600))


def _job(generated: list[Path], **more: Any) -> dict[str, Any]:
    return {"files": [str(p) for p in generated], "labels": [1, 0], "params": PARAMS, "model": MODEL, **more}


def test_a_job_runs_from_submit_to_results_and_pushes_its_bundle(
    alice: Caller, service: ServiceProcess, generated: list[Path]
) -> None:
    # model.py, params.json and labels.txt from an upload; the files inline
    up = alice.upload(
        "tth",
        {"inputs/model.py": MODEL, "inputs/params.json": json.dumps(PARAMS), "inputs/labels.txt": "1\n0\n"},
    )
    assert up.status_code == 201, up.text
    assert up.json()["files"] == ["labels.txt", "model.py", "params.json"]
    response = alice.submit(
        name="tth-sgd", upload="tth", files="\n".join(map(str, generated)) + "\n# a comment\n", push=True
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] in ("queued", "running")
    assert job["owner"] == "alice"
    done = alice.wait(job["id"])
    assert done["state"] == "succeeded", alice.client.get(f"/logs?id={job['id']}").text
    assert done["progress"] == 1.0
    assert done["started"]
    assert done["finished"]

    results = alice.client.get(f"/jobs/{job['id']}/results").json()
    assert results["framework"] == "sklearn"
    assert results["metrics"]["val_auc"] > 0.75
    assert {"bundle.json", "metrics.json", "job.log", "plots/roc.png"} <= set(results["files"])
    assert results["push"] == {"name": "tth-sgd", "version": 1}
    assert Repository(service.workdir / "models").get("tth-sgd").framework == "sklearn"
    plot = alice.client.get(results["files"]["plots/roc.png"])
    assert plot.status_code == 200
    assert plot.content.startswith(b"\x89PNG")
    bundle = alice.client.get(results["bundle"])
    assert bundle.status_code == 200
    assert bundle.content[:2] == b"\x1f\x8b"

    logs = alice.client.get(f"/jobs/{job['id']}/logs").json()["lines"]
    text = "\n".join(line["line"] for line in logs)
    assert "progress: training" in text
    assert "[service] job succeeded" in text
    assert [line["seq"] for line in logs] == sorted(line["seq"] for line in logs)
    later = alice.client.get(f"/jobs/{job['id']}/logs", params={"after": logs[-2]["seq"]}).json()["lines"]
    assert [line["seq"] for line in later] == [logs[-1]["seq"]]
    streamed = alice.client.get(f"/jobs/{job['id']}/logs", params={"follow": True}).text
    assert streamed.splitlines() == [line["line"] for line in logs]
    # the original server's routes
    assert alice.client.get("/status", params={"id": job["id"]}).json()["state"] == "succeeded"
    assert "progress: training" in alice.client.get("/logs", params={"id": job["id"]}).text
    assert alice.client.get(f"/jobs/{job['id']}/results/../../jobs.sqlite").status_code == 404


def test_users_see_and_cancel_only_their_own_jobs(
    alice: Caller, bob: Caller, issuer: Issuer, service: ServiceProcess, generated: list[Path]
) -> None:
    job = alice.submit(**_job(generated, model=SLEEPER, name="sleepy")).json()
    assert [j["id"] for j in bob.client.get("/jobs").json()] == []
    for method, path in [("GET", ""), ("GET", "/logs"), ("GET", "/results"), ("DELETE", "")]:
        response = bob.client.request(method, f"/jobs/{job['id']}{path}")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == f"no job {job['id']!r}"
    assert bob.client.get("/status", params={"id": job["id"]}).status_code == 404
    assert bob.submit(**_job(generated, upload="tth")).json()["error"] == "you have no upload named 'tth'"
    admin = Caller(service.url, issuer.token("root", groups=["mlaas-admin"]))
    assert job["id"] in [j["id"] for j in admin.client.get("/jobs", params={"all": True}).json()]
    assert admin.job(job["id"])["owner"] == "alice"

    alice.wait(job["id"], {"running"})
    cancelled = alice.client.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert alice.client.delete(f"/jobs/{job['id']}").status_code == 409
    # the workflow's processes are gone: alice (limit: 1 running job) gets her next job run
    nxt = alice.submit(**_job(generated)).json()
    assert alice.wait(nxt["id"])["state"] == "succeeded"
    assert alice.job(job["id"])["state"] == "cancelled"
    assert "[service] cancelled by the user" in alice.client.get("/logs", params={"id": job["id"]}).text


def test_per_user_limit_queues_and_a_queued_job_can_be_cancelled(
    alice: Caller, bob: Caller, generated: list[Path]
) -> None:
    first = alice.submit(**_job(generated, model=SLEEPER)).json()
    second = alice.submit(**_job(generated)).json()
    alice.wait(first["id"], {"running"})
    time.sleep(2)
    assert alice.job(second["id"])["state"] == "queued"  # alice may run one job at a time
    other = bob.submit(**_job(generated)).json()  # bob is not held up by alice
    assert bob.wait(other["id"])["state"] == "succeeded"
    assert alice.client.delete(f"/jobs/{second['id']}").json()["state"] == "cancelled"
    assert alice.client.delete(f"/jobs/{first['id']}").json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("model", "extra", "error"),
    [
        (
            "def model():\n    raise RuntimeError('boom')\n",
            {},
            "model file 'model.py', line 2: model() failed: RuntimeError: boom",
        ),
        (
            "import time\ntime.sleep(600)\ndef model():\n    return None\n",
            {"resources": {"timeout": 3}},
            "timed out after 3 s",
        ),
        (MODEL, {"files": ["root://127.0.0.1:9//store/none.root"]}, "root://127.0.0.1:9//store/none.root"),
    ],
    ids=["model-crashes", "model-never-ends", "unreachable-input"],
)
def test_failing_jobs_end_failed_with_a_clear_error(
    alice: Caller, generated: list[Path], model: str, extra: dict[str, Any], error: str
) -> None:
    body = _job(generated, model=model) | extra
    if "files" in extra:
        body["labels"] = [1]
    job = alice.submit(**body).json()
    done = alice.wait(job["id"])
    assert done["state"] == "failed"
    assert error in done["error"]
    assert alice.client.get(f"/jobs/{job['id']}/results").status_code == 409


_HOSTILE = {
    "reads-shadow": (
        "open('/etc/shadow').read()",
        "PermissionError: [Errno 13] Permission denied: '/etc/shadow'",
    ),
    "opens-the-database": (
        "import glob, sqlite3\nfound = glob.glob('/tmp/**/jobs.sqlite', recursive=True)\n"
        "assert not found, f'the service database is visible: {found}'\nsqlite3.connect(WORKDIR + '/jobs.sqlite', uri=False).execute('select * from jobs')",
        "OperationalError: unable to open database file",
    ),
    "lists-other-jobs": (
        "import glob, os\nothers = [p for p in glob.glob('/tmp/mlaas4hep-job-*') + glob.glob(WORKDIR + '/*') if p != os.getcwd()]\n"
        "raise SystemExit(f'I see {others}')",
        "I see []",
    ),
    "allocates-30-GB": ("import numpy\nnumpy.ones(30 * 2**30 // 8)", "over its memory limit"),
    "forks-1000": (
        "import os, time\nfor _ in range(1000):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)",
        "over its limit of 512 processes and threads",
    ),
    "reaches-the-scheduler": (  # every listening port of the machine, as a scheduler, plain and TLS
        "import os, threading, time\nports = set()\n"
        "for table in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for line in open(table).read().splitlines()[1:]:\n"
        "        fields = line.split()\n"
        "        if fields[3] == '0A':\n"
        "            ports.add(int(fields[1].rsplit(':', 1)[1], 16))\n"
        "from distributed import Client\nreached = []\n"
        "def attempt(address):\n"
        "    try:\n"
        "        with Client(address, timeout=2) as c:\n"
        "            c.submit(open, '/etc/shadow', pure=False).result(timeout=20)\n"
        "            reached.append(address)\n"
        "    except Exception:\n"
        "        pass\n"
        "tries = [threading.Thread(target=attempt, args=(f'{s}://127.0.0.1:{p}',), daemon=True)"
        " for p in sorted(ports) for s in ('tcp', 'tls')]\n"
        "for t in tries:\n    t.start()\n"
        "deadline = time.time() + 15\n"  # a port that never answers a handshake is no way in
        "for t in tries:\n    t.join(max(0.0, deadline - time.time()))\n"
        "print(f'reached {reached or \"no scheduler\"} on {len(ports)} ports', flush=True)\nos._exit(3)",
        "reached no scheduler on",
    ),
    "fills-the-disk": (
        "import time\nwith open('filler', 'wb') as f:\n    for _ in range(64):\n"
        "        f.write(b'x' * 8 * 2**20)\n        f.flush()\ntime.sleep(120)",
        "over its disk quota (0.28 GiB in its job folder)",
    ),
    "runs-as-root": (
        "import os\nassert os.getuid() != 0 and os.geteuid() != 0\nraise SystemExit(f'uid {os.getuid()}')",
        "uid 2",
    ),
}


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"jobs cannot be sandboxed here: {NO_SANDBOX}")
def test_hostile_model_files_are_contained_and_the_other_user_is_unaffected(
    alice: Caller, bob: Caller, service: ServiceProcess, issuer: Issuer, generated: list[Path]
) -> None:
    prelude = f"WORKDIR = {str(service.workdir)!r}\n"
    # three hostile users (one running job each: three at a time), and bob, honest, beside them
    hostile = [
        alice,
        *(Caller(service.url, issuer.token(who, lifetime=3600)) for who in ("mallory", "trudy")),
    ]
    jobs: dict[str, tuple[Caller, str]] = {}
    for i, (name, (code, _)) in enumerate(_HOSTILE.items()):
        caller = hostile[i % len(hostile)]
        body = _job(generated, model=prelude + code + "\n" + MODEL, resources={"disk": "300MB"})
        jobs[name] = (caller, caller.submit(**body).json()["id"])
    honest = bob.submit(**_job(generated)).json()["id"]
    for name, (caller, job_id) in jobs.items():
        done = caller.wait(job_id)
        assert done["state"] == "failed", (name, done)
        assert _HOSTILE[name][1] in done["error"], (name, done["error"])
    assert bob.wait(honest)["state"] == "succeeded"
    assert httpx.get(f"{service.url}/healthz").status_code == 200


_SHOWS_CREDENTIALS = """import hashlib, os
token = os.environ.get('BEARER_TOKEN_FILE')
token = token and ('given' if hashlib.sha256(open(token, 'rb').read()).hexdigest() == 'HASH' else 'wrong')
proxy = os.environ.get('X509_USER_PROXY')
proxy = proxy and open(proxy).read().splitlines()[0]
raise SystemExit(f'token {token} proxy {proxy}')
""".replace("HASH", hashlib.sha256(b"tok-alice-1").hexdigest())  # the token itself is not in the source
_PROXY = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_a_users_data_credential_reaches_their_job_only_and_is_never_shown(
    alice: Caller, bob: Caller, service: ServiceProcess, generated: list[Path]
) -> None:
    import sqlite3

    model = _SHOWS_CREDENTIALS + MODEL
    mine = alice.submit(**_job(generated, model=model), data_token="tok-alice-1", x509_proxy=_PROXY)
    assert mine.status_code == 201, mine.text
    theirs = bob.submit(**_job(generated, model=model)).json()["id"]
    job_id = mine.json()["id"]
    secrets = ("tok-alice-1", "MIIBfake")
    assert not [s for s in secrets if s in mine.text + alice.client.get(f"/jobs/{job_id}").text]
    assert "token given proxy -----BEGIN CERTIFICATE-----" in alice.wait(job_id)["error"]
    assert "token None proxy None" in bob.wait(theirs)["error"]
    shown = alice.client.get(f"/jobs/{job_id}").text + alice.client.get(f"/logs?id={job_id}").text
    assert not [s for s in secrets if s in shown]
    with sqlite3.connect(service.workdir / "jobs.sqlite") as db:  # forgotten once the job ended
        stored = " ".join(str(row) for row in db.execute("select * from jobs"))
    assert job_id in stored
    assert not [s for s in secrets if s in stored]


def test_a_worker_that_dies_mid_job_is_retried_and_the_job_finishes(
    alice: Caller, cluster: Any, generated: list[Path]
) -> None:
    slow = "import time\ntime.sleep(4)\n" + MODEL
    job = alice.submit(**_job(generated, model=slow)).json()
    alice.wait(job["id"], {"running"})
    deadline = time.monotonic() + 30
    while (pid := worker_pid_running(cluster, f"mlaas4hep-job-{job['id']}")) is None:
        assert time.monotonic() < deadline, "the job's task never showed up on a worker"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    done = alice.wait(job["id"])
    assert done["state"] == "succeeded", done["error"]  # Dask ran the task again on a live worker


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 422, "the body is not valid JSON at line 1, column 2"),
        (b"[1, 2]", 422, "Input should be a valid dictionary"),
        (
            json.dumps({"files": ["a.root"], "model": MODEL, "shell": "rm -rf /"}).encode(),
            422,
            "unknown field 'shell'",
        ),
        (
            json.dumps({"files": ["/etc/passwd"], "model": MODEL}).encode(),
            422,
            "local path '/etc/passwd' is outside the service's data roots",
        ),
        (
            json.dumps({"files": ["file:///etc/passwd"], "model": MODEL}).encode(),
            422,
            "only root://, http:// and https:// URLs",
        ),
        (
            json.dumps({"files": ["../../jobs.sqlite"], "model": MODEL}).encode(),
            422,
            "needs an 'upload' holding it",
        ),
        (
            json.dumps({"files": ["root://h//a.root"], "model": "def model(:\n"}).encode(),
            422,
            "model: syntax error at line 1",
        ),
        (
            json.dumps({"files": ["root://h//a.root"], "model": "x = 1\n"}).encode(),
            422,
            "defines no function model(idim)",
        ),
        (
            json.dumps({"files": ["root://h//a.root"], "model": MODEL, "params": {"epochs": "ten"}}).encode(),
            422,
            "epochs",
        ),
        (
            json.dumps(
                {
                    "files": ["root://h//a.root"],
                    "model": MODEL,
                    "preproc": {"cuts": {"x": "__import__('os')"}},
                }
            ).encode(),
            422,
            "preproc",
        ),
        (
            json.dumps({"files": ["root://h//a.root"], "model": MODEL, "labels": [1, 0]}).encode(),
            422,
            "labels",
        ),
        (
            json.dumps(
                {"files": ["root://h//a.root"], "model": MODEL, "resources": {"workers": 99}}
            ).encode(),
            422,
            "the cluster has 2 workers, not 99",
        ),
        (
            json.dumps({"files": ["root://h//a.root"], "model": MODEL, "resources": {"gpu": True}}).encode(),
            422,
            "no worker of the cluster offers a GPU",
        ),
        (json.dumps({"files": ["root://h//a.root"], "model": MODEL, "name": "../x"}).encode(), 422, "name"),
        (json.dumps({"files": ["root://h//a.root"], "model": "x" * 2**21}).encode(), 413, "over the limit"),
        (
            json.dumps(
                {"files": ["root://h//a.root"], "model": MODEL, "resources": {"trainers": 3}}
            ).encode(),
            422,
            "resources.trainers: the cluster has 2 workers, not 3",
        ),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (
            json.dumps({"files": ["root://h//a.root"], "model": MODEL, "x509_proxy": "not a proxy"}).encode(),
            422,
            "x509_proxy: not a PEM proxy",
        ),
        (
            json.dumps(
                {"files": ["root://h//a.root"], "model": MODEL, "resources": {"disk": "lots"}}
            ).encode(),
            422,
            "'lots' is not a size such as '4GB'",
        ),
    ],
    ids=[
        "malformed",
        "not-object",
        "unknown-field",
        "local-outside",
        "file-url",
        "relative",
        "syntax",
        "no-model",
        "params",
        "preproc",
        "labels",
        "workers",
        "gpu",
        "name",
        "huge",
        "trainers",
        "deep",
        "proxy-not-pem",
        "disk-not-a-size",
    ],
)
def test_bad_submissions_are_refused_with_the_field_named(
    alice: Caller, body: bytes, status: int, message: str
) -> None:
    response = alice.client.post("/submit", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_an_input_the_jobs_user_cannot_read_is_refused_at_submit_naming_it(
    alice: Caller, service: ServiceProcess, generated: list[Path]
) -> None:
    import shutil

    if NO_SANDBOX and os.geteuid() == 0:
        pytest.skip("jobs run unsandboxed, as root, who reads every file: nothing to refuse")
    root = generated[0].parent
    closed, locked = root / "closed.root", root / "locked" / "in.root"
    shutil.copyfile(generated[0], closed)
    closed.chmod(0o600)  # the owner's alone
    locked.parent.mkdir(exist_ok=True)
    shutil.copyfile(generated[0], locked)
    locked.parent.chmod(0o700)  # a folder others cannot enter
    try:
        for path, why in (
            (closed, "is not readable by others (mode 600)"),
            (locked, "cannot be entered by others"),
        ):
            response = alice.submit(**_job([path, generated[1]]))
            assert response.status_code == 422, response.text
            expected = "is not readable by the service's user" if NO_SANDBOX else why
            assert str(path) in response.json()["error"]
            assert expected in response.json()["error"]
    finally:
        closed.unlink()
        shutil.rmtree(locked.parent)


def test_bad_uploads_are_refused_and_write_nothing_outside(alice: Caller, service: ServiceProcess) -> None:
    before = set(service.workdir.rglob("*"))
    evil = {"../../evil.py": "x", "/etc/evil": "x"}
    for name, content in evil.items():
        response = alice.client.post(
            "/upload", files={"file": ("x.tar.gz", tarball({name: content}))}, data={"name": "evil"}
        )
        assert response.status_code == 422
        assert "leaves the archive's folder" in response.json()["error"]
    assert (
        alice.client.post(
            "/upload", files={"file": ("x.tar.gz", b"not a tarball")}, data={"name": "junk"}
        ).status_code
        == 422
    )
    assert (
        alice.client.post(
            "/upload", files={"file": ("x.tar.gz", tarball({"a": "b"}))}, data={"name": "../up"}
        ).status_code
        == 422
    )
    huge = alice.client.post("/upload", params={"name": "huge"}, content=os.urandom(65 * 2**20))
    assert huge.status_code == 413
    after = {p for p in service.workdir.rglob("*") if "jobs" not in p.parts and p.name != "service.log"}
    assert after - before <= {p for p in after if p.name.startswith(("jobs.sqlite", "uploads"))}
    assert not (service.workdir.parent / "evil.py").exists()
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    # a raw tarball body with ?name= (the original server's upload) works
    raw = alice.client.post("/upload", params={"name": "raw"}, content=tarball({"model.py": MODEL}))
    assert raw.status_code == 201
    assert raw.json()["files"] == ["model.py"]
    assert [u["name"] for u in alice.client.get("/uploads").json()] == ["raw", "tth"]


def test_a_restart_fails_running_jobs_clearly_and_runs_queued_ones(
    issuer: Issuer, cluster: Any, generated: list[Path], tmp_path: Path
) -> None:
    args = _args(issuer, cluster, generated[0].parent, tmp_path / "models", "--max-jobs-per-user", "1")
    svc = ServiceProcess(tmp_path, *args, env=_credentials(cluster, tmp_path)).start()
    carol = Caller(svc.url, issuer.token("carol"))
    running = carol.submit(**_job(generated, model=SLEEPER)).json()
    queued = carol.submit(**_job(generated)).json()
    carol.wait(running["id"], {"running"})
    killed = svc.proc.pid if svc.proc is not None else None
    svc.kill()
    svc.start()  # same work dir and database
    assert f"taking over from service pid {killed}, which ended without releasing it" in svc.output()
    carol = Caller(svc.url, issuer.token("carol"))
    lost = carol.job(running["id"])
    assert lost["state"] == "failed"
    assert "the service stopped while the job was running" in lost["error"]
    assert carol.wait(queued["id"])["state"] == "succeeded"
    # the task of the lost job was told to stop: no worker still runs it
    deadline = time.monotonic() + 30
    while worker_pid_running(cluster, f"mlaas4hep-job-{running['id']}") is not None:
        assert time.monotonic() < deadline, "the lost job's task still runs"
        time.sleep(0.5)
    svc.stop()


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"jobs cannot be sandboxed here: {NO_SANDBOX}")
def test_sandboxed_jobs_refuse_a_scheduler_that_takes_anyone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", dashboard_address=None) as open_one:
        address = open_one.scheduler_address
        args = ["service", "--insecure-dev", "--workdir", str(tmp_path / "w"), "--scheduler", address]
        refused = subprocess.run(
            [sys.executable, "-m", "mlaas4hep_dask.cli._main", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert refused.returncode == 2, refused.stderr
    assert f"the Dask scheduler {address} takes connections without credentials" in refused.stderr
    assert "--unsandboxed-jobs" in refused.stderr
    assert "Traceback" not in refused.stderr


#: A model.py that, once its job's cluster is up (``model()`` is called after the specs pass),
#: waits for another job's listening sockets and then tries every listening port of the
#: machine that is not its own: Dask's ``identity`` over plain TCP, over TLS with its own
#: cluster's certificate and with a fresh one, a ``Client`` and ``run`` on any scheduler that
#: answers, the HTTP pages of the other job's cluster; and the other job's folder and data
#: token.  It reports what it reached on one log line, then trains as usual.
_PROBES = r"""
import asyncio, glob, hashlib, json, os, time, urllib.request

OTHER_JOBS = range(200_000, 265_000)


def _listening():
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                found.add((int(fields[1].rsplit(":", 1)[1], 16), int(fields[7])))
    return found


async def _identity(address, args):
    from distributed.comm import connect

    try:
        comm = await asyncio.wait_for(connect(address, timeout=3, **args), 6)
    except BaseException:
        return None
    try:
        await comm.write({"op": "identity", "reply": True})
        return await asyncio.wait_for(comm.read(), 6)
    except BaseException:
        return None
    finally:
        comm.abort()


def _securities():
    from distributed import get_client
    from distributed.security import Security

    own = {}
    try:
        own = {"own-certificate": get_client().security}
    except Exception:
        pass
    return {"plain": None, "fresh-certificate": Security.temporary(), **own}


async def _probe(ports):
    tries = []
    for port in ports:
        for name, security in _securities().items():
            scheme = "tcp" if security is None else "tls"
            args = {} if security is None else security.get_connection_args("client")
            tries.append((port, name, security, _identity(f"{scheme}://127.0.0.1:{port}", args)))
    replies = await asyncio.gather(*(t[3] for t in tries))
    return [(p, n, s, r) for (p, n, s, _), r in zip(tries, replies) if isinstance(r, dict)]


def _pages(ports):
    opened = []
    for port in ports:
        for route in ("/json/identity.json", "/info/main/workers.html", "/metrics", "/status"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=3) as page:
                    opened.append([port, route, page.status])
            except Exception:
                pass
    return opened


def _report():
    me = os.getuid()
    deadline = time.monotonic() + 150
    while not any(uid in OTHER_JOBS and uid != me for _, uid in _listening()):
        if time.monotonic() > deadline:
            return {"others": []}
        time.sleep(0.5)
    time.sleep(3)  # the other job's workers come up beside its scheduler
    listening = _listening()
    theirs = sorted(port for port, uid in listening if uid != me)
    reached, ran = [], []
    for port, name, security, reply in asyncio.run(_probe(theirs)):
        reached.append([port, name, reply.get("type")])
        from distributed import Client

        scheme = "tcp" if security is None else "tls"
        try:
            with Client(f"{scheme}://127.0.0.1:{port}", security=security, timeout=5) as client:
                ran.append([port, name, client.run(os.getuid)])
        except Exception:
            pass
    here = os.getcwd()
    folders = sorted(
        set(glob.glob("/tmp/mlaas4hep-job-*") + glob.glob(os.path.dirname(here) + "/mlaas4hep-job-*")) - {here}
    )
    tokens = []
    for path in glob.glob("/tmp/*/.credentials/token") + glob.glob(os.path.dirname(here) + "/*/.credentials/token"):
        try:
            tokens.append(hashlib.sha256(open(path, "rb").read()).hexdigest())
        except OSError:
            pass
    others = sorted(port for port, uid in listening if uid in OTHER_JOBS and uid != me)
    return {"others": others, "reached": reached, "ran": ran, "pages": _pages(others),
            "folders": folders, "tokens": sorted(set(tokens))}


def model():
    print("PROBES " + json.dumps(_report()), flush=True)
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", random_state=0)
"""


def _probes(caller: Caller, job_id: str) -> dict[str, Any]:
    logs = caller.client.get(f"/logs?id={job_id}").text
    lines = [line for line in logs.splitlines() if "PROBES " in line]
    assert len(lines) == 1, logs
    return dict(json.loads(lines[0].split("PROBES ", 1)[1]))


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"jobs cannot be sandboxed here: {NO_SANDBOX}")
def test_two_users_jobs_at_once_reach_nothing_of_each_other(
    alice: Caller, bob: Caller, issuer: Issuer, generated: list[Path]
) -> None:
    tokens = {"alice": "tok-alice-probe", "bob": "tok-bob-probe"}
    jobs = {
        who: caller.submit(**_job(generated, model=_PROBES), data_token=tokens[who]).json()["id"]
        for who, caller in (("alice", alice), ("bob", bob))
    }
    done = {who: caller.wait(jobs[who], timeout=400) for who, caller in (("alice", alice), ("bob", bob))}
    for who, caller in (("alice", alice), ("bob", bob)):
        assert done[who]["state"] == "succeeded", caller.client.get(f"/logs?id={jobs[who]}").text
        found = _probes(caller, jobs[who])
        assert found["others"], f"{who}'s probe never saw the other job's cluster listening"
        assert found["reached"] == [], found
        assert found["ran"] == [], found
        assert found["pages"] == [], found
        assert found["folders"] == [], found
        assert found["tokens"] == [hashlib.sha256(tokens[who].encode()).hexdigest()], found
    # results as if alone: the same as each other's and as the same job's run on its own
    carol = Caller(alice.client.base_url.__str__(), issuer.token("carol", lifetime=3600))
    alone = carol.wait(carol.submit(**_job(generated)).json()["id"])
    assert alone["state"] == "succeeded"
    metrics = {
        who: caller.client.get(f"/jobs/{jobs[who]}/results").json()["metrics"]
        for who, caller in (("alice", alice), ("bob", bob))
    }
    reference = carol.client.get(f"/jobs/{alone['id']}/results").json()["metrics"]
    assert metrics["alice"]["val_auc"] == metrics["bob"]["val_auc"] == reference["val_auc"]
    assert metrics["alice"]["test_auc"] == metrics["bob"]["test_auc"] == reference["test_auc"]


def test_a_second_service_on_a_held_work_dir_exits_2_and_the_first_ones_job_finishes(
    alice: Caller, service: ServiceProcess, issuer: Issuer, cluster: Any, generated: list[Path]
) -> None:
    import subprocess
    import sys

    assert service.proc is not None
    job = alice.submit(**_job(generated)).json()["id"]
    alice.wait(job, {"running", *TERMINAL_STATES})
    args = _args(issuer, cluster, generated[0].parent, service.workdir / "models")
    second = subprocess.run(
        [sys.executable, "-m", "mlaas4hep_dask.cli._main", "service", "--workdir", str(service.workdir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **_credentials(cluster, service.workdir)},
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert (
        f"mlaas4hep: error: work dir {str(service.workdir)!r} is in use by another service "
        f"(pid {service.proc.pid}): stop it, or give this one its own --workdir"
    ) in second.stderr
    assert "Traceback" not in second.stderr
    assert alice.wait(job)["state"] == "succeeded"
