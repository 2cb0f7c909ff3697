"""Real local servers for the tests: Debian's xrootd, and an HTTP server with Range support."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    proc: subprocess.Popen[bytes], port: int, name: str, seconds: float, hint: str = ""
) -> None:
    """Wait until ``proc`` accepts connections on 127.0.0.1:``port``; raise if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}{hint}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start within {seconds:.0f} s")
        time.sleep(0.1)


@contextlib.contextmanager
def xrootd_server(files: list[Path]) -> Iterator[str]:
    """Run ``xrootd`` on a free port serving ``files`` as ``/store/mc/NAME``; yield the base URL.

    Like a CMS storage element, the server exports ``/store`` (mapped onto a temp dir with
    ``oss.localroot``), so bare ``/store/...`` paths with a redirector can be tested.  xrootd
    refuses to run as root, so as root it drops to user ``daemon`` (``-R``); the files are
    made world-readable for that.
    """
    binary = shutil.which("xrootd")
    if binary is None:
        raise FileNotFoundError("xrootd")
    localroot = Path(tempfile.mkdtemp(prefix="mlaas4hep-xrootd-"))
    export = localroot / "store" / "mc"
    export.mkdir(parents=True)
    for folder in (localroot, localroot / "store", export):
        folder.chmod(0o755)
    for f in files:
        target = export / f.name
        shutil.copyfile(f, target)
        target.chmod(0o644)
    config = localroot / "xrootd.cfg"
    config.write_text(f"all.export /store\noss.localroot {localroot}\n")
    config.chmod(0o644)
    logdir = Path(tempfile.mkdtemp(prefix="mlaas4hep-xrootd-log-"))
    logdir.chmod(0o777)
    port = free_port()
    cmd = [binary, "-p", str(port), "-c", str(config), "-l", str(logdir / "xrootd.log")]
    if os.geteuid() == 0:
        cmd[1:1] = ["-R", "daemon"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(proc, port, "xrootd", 20, f"; see {logdir}")
        yield f"root://127.0.0.1:{port}//store/mc"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(localroot, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=a-b`` requests (what fsspec's HTTP client sends)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first_s, _, last_s = rng.removeprefix("bytes=").partition("-")
        first = int(first_s) if first_s else max(size - int(last_s), 0)
        last = min(int(last_s), size - 1) if first_s and last_s else size - 1
        fh = path.open("rb")
        fh.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.range_left = last - first + 1
        return fh

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        left = getattr(self, "range_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(left))
        return None


class ByteCounter:
    """Bytes a :func:`counting_proxy` relayed from the server to its clients."""

    def __init__(self) -> None:
        self.sent = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.sent += n


@contextlib.contextmanager
def counting_proxy(port: int) -> Iterator[tuple[int, ByteCounter]]:
    """A TCP relay on 127.0.0.1 in front of the server on ``port``; yields its port and byte counter."""
    counter = ByteCounter()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if count:
                    counter.add(len(data))
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], counter
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 over HTTP; yield the base URL."""

    def handler(*args: object, **kwargs: object) -> _RangeHandler:
        return _RangeHandler(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def uvicorn_server(app: object) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(  # type: ignore[arg-type]
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off", proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a throw-away PostgreSQL (Debian's) on a free loopback port; yield its SQLAlchemy URL.

    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
    """
    initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
    if initdb is None or postgres is None:
        raise FileNotFoundError("postgres")
    data = Path(tempfile.mkdtemp(prefix="mlaas4hep-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "mlaas", "--auth=trust", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        proc = subprocess.Popen(
            [*prefix, postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(proc, port, "postgres", 30)
            time.sleep(0.5)  # accepting connections a moment after the port opens
            yield f"postgresql://mlaas@127.0.0.1:{port}/postgres"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)


#: Debian's chromium, for the tests that render a page in a real browser (``make test`` installs it).
CHROMIUM = shutil.which("chromium")


def render_offline(url: str, screenshot: Path) -> str:
    """Load ``url`` in headless Chromium with every host but 127.0.0.1 unresolvable (no internet);
    let its scripts run, save a screenshot and return the page's DOM after them."""
    assert CHROMIUM is not None
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--virtual-time-budget=10000",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        run = [CHROMIUM, *flags, f"--user-data-dir={profile}"]
        subprocess.run(
            [*run, "--window-size=1280,1400", f"--screenshot={screenshot}", url],
            capture_output=True, timeout=120, check=True, cwd=profile,
        )  # fmt: skip
        dom = subprocess.run(
            [*run, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True, cwd=profile
        )
    return dom.stdout


def colours(png: Path) -> int:
    """Distinct colours of a screenshot (a blank page has one or two)."""
    import numpy as np
    from matplotlib.image import imread

    image = imread(png)
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))
