"""Every pluggable job sandbox runs the same child, confined the same way: tested for real with
each tool this machine has (bubblewrap always in CI; podman where installed), by a model.py
that reports what it can reach and stops before training."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from mlaas4hep_dask.service.sandbox import SANDBOXES, Limits, environment, job_uid, sandbox_of

#: A model.py that looks around and stops the workflow with what it found (as JSON).
_LOOKS_AROUND = """import json, os
def can_read(path):
    try:
        open(path, 'rb').read(1)
        return True
    except OSError:
        return False
def can_write(path):
    try:
        open(path, 'w').write('x')
        return True
    except OSError:
        return False
raise SystemExit('REPORT ' + json.dumps({
    'uid': os.getuid(), 'euid': os.geteuid(), 'groups': os.getgroups(),
    'shadow': can_read('/etc/shadow'), 'secret': can_read(SECRET), 'service': os.path.exists(SERVICE),
    'writes_own': can_write('own.txt'), 'writes_data': can_write(os.path.join(DATA, 'x')),
    'reads_data': can_read(os.path.join(DATA, 'input.txt')),
    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[:5],
    'env': sorted(os.environ),
}))
"""


def _runnable() -> list[str]:
    return [name for name in SANDBOXES if sandbox_of(name, None).unavailable() is None]


@pytest.mark.parametrize("name", list(SANDBOXES))
def test_each_sandbox_runs_the_same_child_with_only_its_folders(name: str, tmp_path: Path) -> None:
    box = sandbox_of(name, "/images/site.sif" if name == "apptainer" else None)
    folder, data = tmp_path / "job", tmp_path / "data"
    cmd = box.command(["train", "--model", "model.py"], folder, [data], 200_001, Limits(), gpu=False)
    child = cmd[cmd.index("-m") - 1 :]
    assert child[1:5] == ["-m", "mlaas4hep_dask.cli._child", "--as", "200001"]
    assert json.loads(child[6])["memory"] == Limits().memory
    assert child[-3:] == ["train", "--model", "model.py"]
    under = {path for path, writable in _bound(cmd) if path.startswith(str(tmp_path))}
    assert under == {(str(folder)), str(data)}  # nothing else of the machine's tmp_path
    assert (str(folder), True) in _bound(cmd)
    assert (str(data), False) in _bound(cmd)


def _bound(cmd: list[str]) -> set[tuple[str, bool]]:
    """``(source, writable)`` of every folder a sandbox command binds in."""
    out = set()
    for flag, value in itertools.pairwise(cmd):
        if flag in ("--bind", "--ro-bind") and ":" not in value:  # bubblewrap
            out.add((value, flag == "--bind"))
        elif flag in ("--volume", "--bind") and value.count(":") == 2:  # podman, apptainer
            source, _, mode = value.split(":")
            out.add((source, mode == "rw"))
    return out


def test_an_unknown_sandbox_or_a_missing_image_is_named() -> None:
    from mlaas4hep_dask.errors import ConfigError

    with pytest.raises(
        ConfigError, match="unknown sandbox 'docker': use one of bubblewrap, podman, apptainer"
    ):
        sandbox_of("docker")
    why = sandbox_of("apptainer").unavailable()
    assert why is not None
    assert "not installed" in why or "needs an image" in why


@pytest.mark.skipif(
    os.geteuid() != 0, reason="sandboxes switch a job to its own user: the worker runs as root"
)
@pytest.mark.parametrize("name", _runnable() or ["none"])
def test_a_sandboxed_child_reaches_only_its_own_job(name: str, tmp_path: Path) -> None:
    if name == "none":
        pytest.skip("no sandbox can run on this machine")
    service = tmp_path / "service"  # what a job must not see: the service's work directory
    service.mkdir()
    secret = service / "jobs.sqlite"
    secret.write_text("every user's jobs")
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "input.txt").write_text("events")
    (data / "input.txt").chmod(0o644)
    folder = tmp_path / "job"
    folder.mkdir()
    tmp_path.chmod(0o755)
    prelude = f"SECRET, SERVICE, DATA = {str(secret)!r}, {str(service)!r}, {str(data)!r}\n"
    (folder / "model.py").write_text(prelude + _LOOKS_AROUND)
    uid = job_uid(f"test-{name}")
    os.chown(folder, uid, uid)
    os.chmod(folder, 0o700)
    box = sandbox_of(name)
    cmd = box.command(
        ["train", "--files", str(data / "input.txt"), "--model", "model.py", "-q"],
        folder,
        [data],
        uid,
        Limits(),
    )
    env = environment({**os.environ, "OIDC_CLIENT_SECRET": "s3cret"}, folder)
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "REPORT " in line]
    assert lines, done.stdout + done.stderr
    seen = json.loads(lines[-1].split("REPORT ", 1)[1])
    assert seen["uid"] == seen["euid"] == uid
    assert seen["groups"] == []
    assert not seen["shadow"]
    assert not seen["secret"]
    assert not seen["service"]
    assert seen["writes_own"]
    assert seen["reads_data"]
    assert not seen["writes_data"]
    assert seen["pids"][0] == 1
    assert len(seen["pids"]) < 5
    assert "OIDC_CLIENT_SECRET" not in seen["env"]
    assert (folder / "own.txt").exists()
