"""Reading through a real xrootd server and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import mlaas4hep_dask as m
from mlaas4hep_dask.read._sources import resolve_path

from ._servers import free_port


def _same(a: m.Specs, b: m.Specs) -> None:
    assert a.to_dict()["branches"] == b.to_dict()["branches"]
    assert [f.nevents for f in a.files] == [f.nevents for f in b.files]


@pytest.mark.xrootd
@pytest.mark.parametrize("handler", ["xrootd", "fsspec"])
def test_xrootd_specs_identical_to_local(generated: list[Path], xrootd_url: str, handler: str) -> None:
    remote = [f"{xrootd_url}/{p.name}" for p in generated]
    params = {"chunk_size": 1000, "xrootd_handler": handler}
    local = m.compute_specs(generated, params, client="sync")
    over_xrootd = m.compute_specs(remote, params, client="threads")
    _same(local, over_xrootd)
    assert over_xrootd.files[0].path == remote[0]


@pytest.mark.xrootd
def test_redirector_is_prefixed_to_store_paths(
    generated: list[Path], xrootd_url: str, tmp_path: Path
) -> None:
    redirector = xrootd_url.removesuffix("//store/mc") + "/"
    files_txt = tmp_path / "files.txt"
    files_txt.write_text("".join(f"/store/mc/{p.name}\n" for p in generated))
    specs = m.compute_specs(files_txt, {"redirector": redirector}, client="sync")
    assert [f.path for f in specs.files] == [f"/store/mc/{p.name}" for p in generated]
    _same(specs, m.compute_specs(generated, client="sync"))
    # a local path that exists is never redirected
    assert resolve_path(str(generated[0]), redirector) == str(generated[0])


@pytest.mark.xrootd
def test_missing_file_on_xrootd_server(xrootd_url: str) -> None:
    with pytest.raises(m.InputError, match=r"nope\.root"):
        m.compute_specs([f"{xrootd_url}/nope.root"], client="sync")


@pytest.mark.xrootd
def test_unreachable_xrootd_server_fails_fast() -> None:
    url = f"root://127.0.0.1:{free_port()}//data/x.root"
    start = time.monotonic()
    with pytest.raises(
        m.RemoteInputError, match=r"cannot (reach|read) input 'root://127\.0\.0\.1:\d+//data/x\.root'"
    ):
        m.compute_specs([url], client="sync")
    assert time.monotonic() - start < 60


def test_http_specs_identical_to_local(generated: list[Path], http_url: str) -> None:
    remote = [f"{http_url}/{p.name}" for p in generated]
    local = m.compute_specs(generated, {"chunk_size": 1000}, client="sync")
    over_http = m.compute_specs(remote, {"chunk_size": 1000}, client="threads")
    _same(local, over_http)


def test_http_missing_file(http_url: str) -> None:
    with pytest.raises(m.InputError, match=r"missing\.root"):
        m.compute_specs([f"{http_url}/missing.root"], client="sync")


def test_mixed_local_and_remote_inputs(generated: list[Path], http_url: str) -> None:
    mixed = [generated[0], f"{http_url}/{generated[1].name}"]
    _same(m.compute_specs(mixed, client="sync"), m.compute_specs(generated, client="sync"))


@pytest.mark.xrootd
def test_mixed_local_and_xrootd_inputs_train_batches(generated: list[Path], xrootd_url: str) -> None:
    mixed = [f"{xrootd_url}/{generated[0].name}", generated[1]]
    params = {"split": 0.0, "shuffle": False, "batch_size": 100_000}
    specs = m.compute_specs(generated, params, client="sync")
    mixed_specs = m.compute_specs(mixed, params, client="sync")
    _same(mixed_specs, specs)
    (X, _), *rest = m.BatchLoader(mixed, mixed_specs, params, labels=[1, 0], client="sync")
    (expected, _), *_ = m.BatchLoader(generated, specs, params, labels=[1, 0], client="sync")
    assert not rest
    np.testing.assert_array_equal(X, expected)


@pytest.mark.xrootd
def test_xrootd_server_killed_during_a_pass_names_the_input(generated: list[Path]) -> None:
    from ._servers import xrootd_server

    with xrootd_server(generated) as url:
        remote = [f"{url}/{p.name}" for p in generated]
        dataset = m.open_dataset(remote, {"chunk_size": 500})  # the metadata came through
        for proc in _xrootd_processes(url):
            proc.kill()
        start = time.monotonic()
        with pytest.raises(
            m.RemoteInputError, match=r"cannot read input 'root://127\.0\.0\.1:\d+//store/mc/"
        ):
            m.compute_specs(dataset, {"chunk_size": 500}, client="sync")
        assert time.monotonic() - start < 60


def _xrootd_processes(url: str) -> list[object]:
    import psutil

    port = url.split(":")[2].split("/")[0]
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "xrootd" and port in (p.info["cmdline"] or [])
    ]
