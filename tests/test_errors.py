"""Every bad input stops with a clear error that names it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m


def test_missing_local_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.root"
    with pytest.raises(m.InputNotFoundError, match=r"missing\.root' does not exist") as info:
        m.compute_specs([missing], client="sync")
    assert isinstance(info.value, FileNotFoundError)


def test_file_listed_twice(generated: list[Path]) -> None:
    again = f"{generated[0].parent}/./{generated[0].name}"  # the same file, spelled differently
    with pytest.raises(m.InputError, match=r"ttH_0\.root' is listed twice \(entries 1 and 3\)"):
        m.compute_specs([generated[0], generated[1], again], client="sync")


def test_a_copy_of_an_input_under_another_name_is_flagged(generated: list[Path], tmp_path: Path) -> None:
    import shutil

    copy = shutil.copy(generated[1], tmp_path / "signal.root")  # a background relabelled as signal
    with pytest.warns(UserWarning, match=r"'.*ttbar_0\.root' and '.*signal\.root' are the same ROOT file"):
        m.open_dataset([generated[0], generated[1], copy])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.open_dataset(generated)  # two files written apart: different UUIDs


@pytest.mark.parametrize("content", [b"hello, not ROOT", b"\x89PNG" + b"\0" * 5000])
def test_not_a_root_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.root"
    path.write_bytes(content)
    with pytest.raises(m.NotRootFileError, match=r"fake\.root' is not a ROOT file"):
        m.compute_specs([path], client="sync")


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="becoming another user needs root")
def test_a_file_this_user_cannot_read_is_named_with_what_is_missing(
    generated: list[Path], tmp_path: Path
) -> None:
    import shutil
    import tempfile

    # pytest's own folders are its user's alone: this one others may enter
    folder = Path(tempfile.mkdtemp(prefix="mlaas4hep-perm-"))
    folder.chmod(0o755)
    closed, locked = folder / "closed.root", folder / "locked" / "in.root"
    shutil.copyfile(generated[0], closed)
    closed.chmod(0o600)
    locked.parent.mkdir()
    shutil.copyfile(generated[0], locked)
    locked.parent.chmod(0o700)
    for path, missing in ((closed, "the file has no r (read) permission"), (locked, "has no x (search)")):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child becomes nobody and opens the file
            os.close(read)
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                m.open_dataset([str(p) for p in (path, generated[1])], {"tree": "events"})
                message = "opened"
            except BaseException as err:
                message = f"{type(err).__name__}: {err}"
            os.write(write, message.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
        assert message.startswith("InputError: input file"), message
        assert str(path) in message
        assert "cannot be read by this user" in message
        assert missing in message
    shutil.rmtree(folder)


def test_directory_given_as_file(tmp_path: Path) -> None:
    with pytest.raises(m.InputError, match="is a directory"):
        m.compute_specs([f"{tmp_path}/"], client="sync")


def test_unknown_tree_lists_the_trees(generated: list[Path]) -> None:
    with pytest.raises(m.SchemaError, match=r"has no tree 'Events'; trees in it: 'events'"):
        m.compute_specs(generated, {"tree": "Events"}, client="sync")


def test_original_branch_key_names_the_tree(generated: list[Path]) -> None:
    specs = m.compute_specs(generated, {"branch": "events"}, client="sync")
    assert specs.files[0].tree == "events"


def test_several_trees_need_a_choice(tmp_path: Path) -> None:
    path = tmp_path / "two.root"
    with uproot.recreate(path) as f:
        for name in ("a", "b"):
            f.mktree(name, {"x": "float32"})
            f[name].extend({"x": ak.Array([1.0, 2.0])})
    with pytest.raises(m.SchemaError, match=r"several TTrees \['a', 'b'\]: choose one with 'tree'"):
        m.compute_specs([path], client="sync")
    assert m.compute_specs([path], {"tree": "b"}, client="sync").files[0].tree == "b"


def test_an_rntuple_is_named_with_how_to_write_a_ttree(tmp_path: Path) -> None:
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["events"] = {"x": ak.Array([1.0, 2.0])}  # uproot >= 5.4 writes an RNTuple for this
    if uproot.open(path).classnames().get("events;1") != "ROOT::RNTuple":
        pytest.skip("this uproot writes a TTree here")
    with pytest.raises(m.SchemaError, match=r"holds no TTree but an RNTuple 'events', which is not read yet"):
        m.compute_specs([path], client="sync")


def test_unknown_branch_suggests_nearest(generated: list[Path]) -> None:
    with pytest.raises(m.SchemaError, match=r"'jetPT' matches no branch.*nearest: 'jetPt'"):
        m.compute_specs(generated, {"selected_branches": ["jetPT"]}, client="sync")


def test_glob_matching_nothing(generated: list[Path]) -> None:
    with pytest.raises(m.SchemaError, match=r"'muon\*' matches no branch"):
        m.compute_specs(generated, {"selected_branches": ["muon*"]}, client="sync")


def test_files_with_different_branches(generated: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "other.root"
    with uproot.recreate(other) as f:
        f.mktree("events", {"MET": "float32"})
        f["events"].extend({"MET": ak.Array([1.0])})
    with pytest.raises(m.SchemaError, match=r"other.root' lacks branches"):
        m.compute_specs([generated[0], other], client="sync")


def test_files_with_different_types(tmp_path: Path) -> None:
    paths = []
    for i, dtype in enumerate(("float32", "float64")):
        paths.append(tmp_path / f"f{i}.root")
        with uproot.recreate(paths[-1]) as f:
            f.mktree("t", {"x": dtype})
            f["t"].extend({"x": ak.values_astype(ak.Array([1.0]), dtype)})
    with pytest.raises(m.SchemaError, match=r"'x' is float32 flat in .*f0.root' but .* in .*f1.root'"):
        m.compute_specs(paths, client="sync")


def test_empty_files_list(tmp_path: Path) -> None:
    files = tmp_path / "files.txt"
    files.write_text("# only a comment\n\n")
    with pytest.raises(m.ConfigError, match="names no input file"):
        m.compute_specs(files, client="sync")


def _two_branches(path: Path, n: int = 50_000) -> None:
    rng = np.random.default_rng(5)
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {"a": "f8", "b": "f8"})
        # compressible values: one zlib-compressed basket per branch
        tree.extend({"a": rng.integers(0, 9, n).astype("f8"), "b": rng.integers(0, 9, n).astype("f8")})


def test_truncated_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cut.root"
    _two_branches(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(m.InputError, match=r"cut\.root' is truncated: [\d,]+ bytes of the [\d,]+ its header"):
        m.compute_specs([path], client="sync")


def test_damaged_basket_names_file_tree_branch_and_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlaas4hep_dask.cli._main import main

    path = tmp_path / "flipped.root"
    _two_branches(path)
    seek = int(uproot.open(path)["events"]["b"].member("fBasketSeek")[0])
    data = bytearray(path.read_bytes())
    for i in range(seek + 100, seek + 2100):  # 2 000 bytes inside the basket of 'b'
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        m.InputError, match=r"flipped\.root' is damaged: tree 'events', branch 'b', entries 0-50000"
    ):
        m.compute_specs([path], client="sync")
    assert main(["specs", "--files", str(path), "--out", str(tmp_path / "s.json"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "is damaged: tree 'events', branch 'b'" in err[0]
