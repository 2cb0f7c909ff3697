"""Prepared datasets: the key, the shards on disk, damage and repair, kills, concurrency, eviction,
and training from the store with the same batches and metrics as from ROOT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas4hep_dask import BatchLoader
from mlaas4hep_dask.config import load_params
from mlaas4hep_dask.errors import PreparedError
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.handle import load_preproc
from mlaas4hep_dask.prepared import Store, dataset_key, prepare
from mlaas4hep_dask.read import open_dataset

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "configs" / "models"
PARAMS = {"epochs": 2, "batch_size": 128, "chunk_size": 2000, "seed": 5, "max_jagged": 6}
LABELS = [1, 0]
CUT = {"flat_cut": {"MET": {"cut": "MET>10"}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A signal and a background file of 3000 events, baskets of 700."""
    return [
        str(p)
        for p in generate(tmp_path_factory.mktemp("prepared"), events=3000, files=1, seed=4, basket=700)
    ]


def _batches(loader: BatchLoader) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.copy(a) for a in batch) for batch in loader]


def _key(files: list[str], params: dict[str, Any], preproc: Any = None, labels: list[int] = LABELS) -> str:
    p = load_params(params)
    return dataset_key(open_dataset(files, p), load_preproc(preproc), labels, p, None)


def test_the_key_names_the_data_not_the_order_or_partitioning(data: list[str], tmp_path: Path) -> None:
    key = _key(data, PARAMS)
    assert _key(data[::-1], PARAMS, labels=LABELS[::-1]) == key  # the same inputs listed the other way
    assert _key(data, {**PARAMS, "chunk_size": 500, "seed": 9, "epochs": 7}) == key
    assert _key(data, PARAMS, CUT) != key
    assert _key(data, {**PARAMS, "exclude_branches": ["MET"]}) != key
    assert _key(data, {**PARAMS, "max_jagged": 3}) != key
    assert _key(data, PARAMS, labels=[0, 1]) != key
    copy = tmp_path / "copy.root"  # the same bytes at another place, then other bytes
    copy.write_bytes(Path(data[0]).read_bytes())
    renamed = _key([str(copy), data[1]], PARAMS)
    other = generate(tmp_path / "other", events=3000, files=1, seed=5, basket=700)[0]
    os.replace(other, copy)
    assert _key([str(copy), data[1]], PARAMS) != renamed


def test_loader_from_the_store_gives_the_same_batches(data: list[str], tmp_path: Path) -> None:
    params = {**PARAMS, "weight_branch": "weight", "exclude_branches": ["weight"], "nan_policy": "drop"}
    ready = prepare(data, tmp_path / "store", params, LABELS, CUT, client="threads")
    assert (ready.events, len(ready.shards)) == (
        sum(s.rows for s in ready.shards),
        len(list(ready.path.glob("*.arrow"))),
    )
    other = {**params, "chunk_size": 4000}  # other partitions than the store's: the same events per chunk
    for split in ("train", "test"):
        a = BatchLoader(data, ready.specs, other, CUT, LABELS, split, "threads")
        b = BatchLoader(data, ready.specs, other, CUT, LABELS, split, "threads", store=ready)
        assert a.counts != []
        assert sum(a.counts) == sum(b.counts)
        assert a.weight_scale == b.weight_scale
        for _ in range(2):  # two epochs: reshuffled the same way
            left, right = _batches(a), _batches(b)
            assert len(left) == len(right) > 3
            for x, y in zip(left, right, strict=True):
                assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
        assert [len(s) for s in a.shards(2)] == [len(s) for s in b.shards(2)]  # the same events per rank
        a.close()
        b.close()


def test_the_store_reads_with_pyarrow_alone(data: list[str], tmp_path: Path) -> None:
    import pyarrow.feather as feather
    import uproot

    from mlaas4hep_dask.prepared._key import identity

    ready = prepare(data, tmp_path / "store", PARAMS, LABELS, client="threads")
    manifest = json.loads((ready.path / "manifest.json").read_text())
    columns = manifest["columns"]
    wanted = [columns["entry"], columns["rows"], columns["label"]]
    tables = [feather.read_table(ready.path / shard["name"]) for shard in manifest["shards"]]
    assert [len(t) for t in tables] == [s["rows"] for s in manifest["shards"]]
    assert all(t.column_names == wanted for t in tables)
    features = columns["features"]
    assert json.loads(tables[0].schema.field(columns["rows"]).metadata[b"features"]) == features
    assert sum(map(len, tables)) == manifest["events"] == 6000
    by_identity = {identity(f): f.path for f in open_dataset(data, PARAMS).files}
    for shard, table in zip(manifest["shards"], tables, strict=True):
        path = by_identity[manifest["identities"][shard["file"]]]
        met = uproot.open(path)["events"]["MET"].array(library="np")
        lo, hi = ready.specs.branches["MET"].min, ready.specs.branches["MET"].max
        entries = table.column(columns["entry"]).to_numpy()
        assert entries.min() >= shard["start"]
        assert entries.max() < shard["stop"]
        expected = (met[entries] - lo) / (hi - lo)
        X = table.column(columns["rows"]).combine_chunks().flatten().to_numpy().reshape(len(table), -1)
        assert X.shape == (len(table), len(features))
        np.testing.assert_allclose(X[:, features.index("MET")], expected, rtol=1e-5, atol=1e-6)
        assert set(table.column(columns["label"]).to_numpy()) <= {0, 1}


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_shard_is_named_then_repaired(data: list[str], tmp_path: Path, damage: str) -> None:
    store = tmp_path / "store"
    ready = prepare(data, store, PARAMS, LABELS, client="threads")
    before = _batches(BatchLoader(data, ready.specs, PARAMS, None, LABELS, "train", "threads", store=ready))
    shard = ready.path / ready.shards[1].name
    if damage == "flipped":
        _flip(shard)
    else:
        shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(
        PreparedError, match=rf"shard {shard.name} of prepared dataset {ready.key} is damaged"
    ):
        # a fresh process would check the CRC; this one checked it already, so compare from a new one
        _read_in_child(data, store)
    again = prepare(data, store, PARAMS, LABELS, client="threads", repair=True)
    assert again.key == ready.key
    assert again.shards == ready.shards
    after = _batches(BatchLoader(data, again.specs, PARAMS, None, LABELS, "train", "threads", store=again))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(before, after, strict=True))


def _read_in_child(data: list[str], store: Path) -> None:
    code = (
        "import sys, json; from mlaas4hep_dask import BatchLoader; from mlaas4hep_dask.prepared import prepare\n"
        f"r = prepare({data!r}, {str(store)!r}, {PARAMS!r}, {LABELS!r}, client='threads')\n"
        f"list(BatchLoader({data!r}, r.specs, {PARAMS!r}, None, {LABELS!r}, 'train', 'sync', store=r))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise PreparedError(proc.stderr.strip().splitlines()[-1].split(": ", 1)[1])


def _params_file(store: Path) -> Path:
    path = store.parent / "params.json"  # partitions of 20 000 entries: three shards a file
    path.write_text(json.dumps({"chunk_size": 20_000}))
    return path


def _prepare_cli(data: list[str], store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlaas4hep_dask.cli", "prepare", "--files", ",".join(data), "--labels", "1,0",
         "--store", str(store), "--cluster", "sync", "--params", str(_params_file(store)), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two files of 60 000 events: three shards each."""
    return [
        str(p)
        for p in generate(tmp_path_factory.mktemp("big"), events=60_000, files=1, seed=8, basket=20_000)
    ]


@pytest.mark.slow
def test_a_killed_prepare_leaves_no_half_shard_and_resumes(big: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    specs = tmp_path / "specs.json"
    from mlaas4hep_dask import compute_specs

    compute_specs(big, {}, client="threads").save(specs)
    proc = _prepare_cli(big, store, "--specs", str(specs))
    deadline = time.monotonic() + 120
    while not list(store.glob("*/*.arrow.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (folder,) = store.iterdir()
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.arrow")}
    assert not (folder / "manifest.json").exists()
    assert 1 <= len(kept) < 6
    import pyarrow.feather as feather

    assert all(feather.read_table(p).num_rows > 0 for p in folder.glob("*.arrow"))  # renamed when whole
    again = _prepare_cli(big, store, "--specs", str(specs), "-q")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["shards"] == 6
    assert line["events"] == 120_000
    for name, mtime in kept.items():  # what was written before the kill is not written again
        if (folder / f"{name}.json").exists():
            assert (folder / name).stat().st_mtime_ns == mtime
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_two_prepares_of_one_key_at_once_make_one_copy(big: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    procs = [_prepare_cli(big, store, "-q") for _ in range(2)]
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines.append(json.loads(out.strip().splitlines()[-1]))
    assert lines[0] == lines[1]
    (folder,) = store.iterdir()
    assert len(list(folder.glob("*.arrow"))) == 6
    assert not list(folder.glob("*.lock"))
    assert not list(folder.glob(".*"))


def test_eviction_keeps_the_store_bounded_and_spares_datasets_in_use(data: list[str], tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first = prepare(data, store, PARAMS, LABELS, client="threads")
    in_use = prepare(data, store, {**PARAMS, "max_jagged": 3}, LABELS, client="threads")
    held = in_use.use()
    bounded = Store(tmp_path / "store", max_bytes=first.bytes * 2.2)
    third = prepare(data, bounded, {**PARAMS, "max_jagged": 4}, LABELS, client="threads")
    keys = {e.key for e in bounded.entries()}
    assert first.key not in keys
    assert {in_use.key, third.key} <= keys
    held.close()


def test_prepare_reads_root_urls_as_local_files(
    generated: list[Path], xrootd_url: str, tmp_path: Path
) -> None:
    import pyarrow.feather as feather

    data = [str(p) for p in generated]  # what the xrootd server exports
    local = prepare(data, tmp_path / "store", PARAMS, LABELS, client="threads")
    remote = prepare(
        [f"{xrootd_url}/{Path(p).name}" for p in data], tmp_path / "store", PARAMS, LABELS, client="threads"
    )
    assert remote.key != local.key
    assert remote.events == local.events
    for a, b in zip(local.shards, remote.shards, strict=True):
        assert feather.read_table(local.path / a.name).equals(feather.read_table(remote.path / b.name))


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("model", ["torch_model.py", "xgboost_model.py"])
def test_two_trainers_from_the_store_give_the_metrics_of_root(
    data: list[str], client: Any, tmp_path: Path, model: str
) -> None:
    from mlaas4hep_dask.train import train

    runs = [
        train(
            data, MODELS / model, PARAMS, LABELS, out=tmp_path / name, client=client, trainers=2, store=store
        )
        for name, store in (("root", None), ("store", tmp_path / "store"))
    ]
    finals = [{k: v for k, v in r.metrics["final"].items() if k.startswith(("val_", "test_"))} for r in runs]
    assert finals[0]
    assert finals[0] == finals[1]


def test_store_commands_list_remove_and_refuse_in_one_line(
    data: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlaas4hep_dask.cli import main

    store = tmp_path / "store"
    files = ",".join(data)
    assert (
        main(["prepare", "--files", files, "--labels", "1,0", "--store", str(store), "--cluster", "sync"])
        == 0
    )
    out, err = capsys.readouterr()
    line = json.loads(out.strip().splitlines()[-1])  # the JSON line on stdout, the table on stderr
    assert line["events"] == 6000
    assert "prepared dataset" in err
    assert main(["store", "ls", "--store", str(store)]) == 0
    assert line["key"][:12] in capsys.readouterr().out
    assert main(["store", "rm", "ffff", "--store", str(store)]) == 2
    assert "has no dataset whose key starts with 'ffff'" in capsys.readouterr().err
    (store / line["key"] / ".x.arrow.1234.tmp").write_text("half")
    assert main(["store", "gc", "--store", str(store)]) == 0
    assert ".x.arrow.1234.tmp" in capsys.readouterr().out
    assert main(["store", "rm", line["key"][:8], "--store", str(store)]) == 0
    assert not (store / line["key"]).exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["prepare", "--files", files, "--labels", "1,0", "--store", str(blocked / "s")]) == 2
    assert f"cannot use {str(blocked / 's')!r} as a store" in capsys.readouterr().err
