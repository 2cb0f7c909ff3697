"""The model repository: versions, deletion, and uploads that must be refused whole."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.serve import BundleError, ModelNotFoundError, Repository, pack
from mlaas4hep_dask.train import train

MODELS = Path(__file__).resolve().parent.parent / "configs" / "models"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate(tmp_path_factory.mktemp("repo-data"), events=2000, files=1, seed=5)
    params = {"epochs": 1, "chunk_size": 2000}
    out = tmp_path_factory.mktemp("repo-run") / "run"
    return train(data, MODELS / "sklearn_model.py", params, labels=[1, 0], out=out, client="sync").path


def _leftovers(repo: Repository) -> list[str]:
    """Everything in the repository folder besides the index and stored models."""
    names = {m.name for m in repo.models()}
    incoming = list((repo.root / ".incoming").glob("*")) if (repo.root / ".incoming").exists() else []
    others = [p.name for p in repo.root.iterdir() if p.name not in names | {"index.sqlite", ".incoming"}]
    return [str(p) for p in incoming] + others


def test_versions_latest_and_delete(run_dir: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    blob = pack(run_dir)
    first = repo.add("tth", blob)
    second = repo.add("tth", io.BytesIO(blob))
    third = repo.add("other", blob, version=7)
    assert (first.version, second.version, third.version) == (1, 2, 7)
    assert first.framework == "sklearn"
    assert first.task == "binary"
    assert [(m.name, m.version) for m in repo.models()] == [("other", 7), ("tth", 1), ("tth", 2)]
    assert repo.get("tth").version == 2
    info, bundle = repo.load("tth", 1)
    assert info.version == 1
    assert bundle.predict_features(np.zeros((3, info.idim), np.float32)).shape == (3,)
    with pytest.raises(BundleError, match="version 7 exists already"):
        repo.add("other", blob, version=7)
    assert [m.version for m in repo.delete("tth", 1)] == [1]
    assert repo.get("tth").version == 2
    with pytest.raises(ModelNotFoundError, match="model 'tth' version 1 is not in the repository"):
        repo.get("tth", 1)
    repo.delete("tth")
    with pytest.raises(ModelNotFoundError, match="model 'tth' is not in the repository"):
        repo.load("tth")
    assert not (repo.root / "tth" / "2").exists()
    # a second Repository on the same folder sees the same index (a restarted server)
    assert [m.name for m in Repository(repo.root).models()] == ["other"]


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (lambda run: _tar([_file("../../evil.txt")]), "path '../../evil.txt' leaves the archive"),
        (lambda run: _tar([_file("/etc/evil.txt")]), "path '/etc/evil.txt' leaves the archive"),
        (lambda run: _tar([_link("bundle.json", "/etc/passwd")]), "'bundle.json' is a link or special file"),
        (lambda run: _tar([_link("x", "/etc/passwd", tarfile.LNKTYPE)]), "'x' is a link or special file"),
        (lambda run: b"this is not a tarball", "not a readable tarball"),
        (lambda run: _tar([_file("README", b"hello")]), "no bundle.json"),
        (lambda run: _tar([_file("bundle.json", b"{broken")]), "the bundle does not load"),
        (lambda run: pack(run)[: len(pack(run)) // 2], "not a readable tarball"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(run_dir: Path, tmp_path: Path, blob, message: str) -> None:  # type: ignore[no-untyped-def]
    repo = Repository(tmp_path / "repo")
    with pytest.raises(BundleError, match=message):
        repo.add("bad", blob(run_dir))
    assert repo.models() == []
    assert _leftovers(repo) == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "x" * 65, "spaces here"])
def test_bad_names(run_dir: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleError, match="is not allowed"):
        Repository(tmp_path / "repo").add(name, pack(run_dir))


def test_fsspec_store_shared_by_two_servers(run_dir: Path, tmp_path: Path) -> None:
    """Two repositories with their own caches on one fsspec URL see each other's models."""
    import fsspec

    url = "memory://mlaas4hep-test-store"
    first = Repository(url, cache_dir=tmp_path / "cache-a", refresh=0)
    second = Repository(url, cache_dir=tmp_path / "cache-b", refresh=0)
    info = first.add("shared", pack(run_dir))
    assert info.path == f"{url}/shared/1"
    assert fsspec.filesystem("memory").exists("/mlaas4hep-test-store/shared/1/bundle.json")
    assert [(m.name, m.version) for m in second.models()] == [("shared", 1)]
    loaded, bundle = second.load("shared")
    assert loaded == info
    assert bundle.predict_features(np.zeros((2, info.idim), np.float32)).shape == (2,)
    assert second.add("shared", pack(run_dir)).version == 2  # versions are counted on the store
    assert first.get("shared").version == 2  # found after a miss triggers a sync
    first.delete("shared")
    assert second.models() == []
    assert not fsspec.filesystem("memory").exists("/mlaas4hep-test-store/shared")
