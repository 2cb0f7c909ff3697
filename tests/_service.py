"""The submit service as a real process (``mlaas4hep service``), for the job tests."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

from ._servers import free_port

TERMINAL = {"succeeded", "failed", "cancelled"}


class ServiceProcess:
    """``mlaas4hep service`` on a free loopback port; kill it and start it again at will."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> ServiceProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (self.workdir / "service.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            "mlaas4hep_dask.cli._main",
            "service",
            "--port",
            str(port),
            "--workdir",
            str(self.workdir),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return (self.workdir / "service.log").read_text(errors="replace")

    def kill(self) -> None:
        """Die at once, as on a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()


class Caller:
    """A user of the service, with a bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def submit(self, **body: Any) -> httpx.Response:
        return self.client.post("/submit", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, states: set[str] = TERMINAL, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                logs = self.client.get(f"/logs?id={job_id}").text
                raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s:\n{logs}")
            time.sleep(0.5)

    def upload(self, name: str, files: dict[str, str | bytes]) -> httpx.Response:
        return self.client.post(
            "/upload", files={"file": ("inputs.tar.gz", tarball(files))}, data={"name": name}
        )


def tarball(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def worker_pid_running(client: Any, key_prefix: str = "") -> int | None:
    """The pid of a worker process running a task whose key starts with ``key_prefix`` (any task: "")."""
    for address, keys in client.processing().items():
        if any(str(k).startswith(key_prefix) for k in keys):
            return int(client.run(os.getpid, workers=[address])[address])
    return None
