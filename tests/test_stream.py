"""The streaming loader: mixing, completeness, splits, shuffling, schedulers, memory."""

from __future__ import annotations

import functools
import tracemalloc
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest

import mlaas4hep_dask as m
from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.batches._plan import plan_chunks
from mlaas4hep_dask.generate import generate

from ._reference import read_all


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three files of different sizes (3000, 3000, 1200 events)."""
    out = tmp_path_factory.mktemp("three")
    files = generate(out / "a", events=3000, files=1, seed=3, basket=500)
    files += generate(out / "b", events=1200, files=1, seed=4, basket=400)[:1]
    return files


def _ids(loader: BatchLoader) -> list[tuple[int, int]]:
    """(file label, event number) of every event an epoch yields; event number comes as weight."""
    out: list[tuple[int, int]] = []
    for X, y, w in loader:
        assert X.shape[1] == loader.idim
        out.extend(zip(y.tolist(), w.astype(np.int64).tolist(), strict=True))
    return out


PARAMS = {"chunk_size": 700, "batch_size": 64, "weight_branch": "event", "weight_norm": "none", "seed": 5}


def _loader(
    files: list[Path], split: str = "train", client: object = "threads", **params: object
) -> BatchLoader:
    p = {**PARAMS, **params}
    specs = m.compute_specs(files, p, client="sync")
    return BatchLoader(files, specs, p, labels=list(range(len(files))), split=split, client=client)


def test_no_event_lost_or_duplicated_across_splits(three: list[Path]) -> None:
    every = []
    for split in ("train", "validation", "test"):
        ids = _ids(_loader(three, split))
        assert len(ids) == len(set(ids))
        every += ids
    expected = {
        (i, e) for i, path in enumerate(three) for e in read_all([path], "events", ["event"]).event.tolist()
    }
    assert len(every) == len(expected) == 7200
    assert set(every) == expected


def test_batches_kept_by_the_trainer_are_never_written_over(three: list[Path]) -> None:
    """Chunks' rows are reused for later chunks; the batches handed out are not (shuffled:
    gathered copies; unshuffled: views of rows that are never reused)."""
    for shuffle in (True, False):
        loader = _loader(three, shuffle=shuffle)
        given: list[np.ndarray] = []  # every row array handed to a chunk (kept: ids stay unique)
        loader._buffers.get = functools.partial(_noted, loader._buffers.get, given)  # type: ignore[method-assign]
        expected = _ids(loader)
        held = [list(loader) for _ in range(2)]  # two epochs' batches, all kept until now
        for batches in held:
            ids = [(int(y), int(w)) for _, ys, ws in batches for y, w in zip(ys, ws, strict=True)]
            assert sorted(ids) == sorted(expected)
            rows = np.concatenate([X for X, _, _ in batches])
            assert len(np.unique(rows, axis=0)) == len(rows)  # no batch overwritten by another's rows
        reused = len(given) - len({id(rows) for rows in given})
        assert reused > 0 if shuffle else reused == 0


def _noted(get: Any, given: list[np.ndarray], n: int, width: int) -> np.ndarray:
    rows = get(n, width)
    given.append(rows.base if rows.base is not None else rows)
    return rows


def test_len_and_batches(three: list[Path]) -> None:
    loader = _loader(three)
    sizes = [len(X) for X, _, _ in loader]
    assert sum(sizes) == len(loader)
    assert 0.65 < len(loader) / 7200 < 0.75
    assert all(s == 64 for s in sizes[:-1])
    assert 0 < sizes[-1] <= 64


def test_every_chunk_mixes_files_in_proportion(three: list[Path]) -> None:
    loader = _loader(three)
    counts = np.zeros(3)
    chunks = list(loader.iter_chunks())
    assert len(chunks) == len(loader.chunks()) > 3
    per_chunk = [np.bincount(c.y, minlength=3) for c in chunks]
    totals = np.sum(per_chunk, axis=0)
    for shares in per_chunk:
        counts += shares
        exact = totals / len(chunks)
        assert np.all(np.abs(shares - exact) < 1), (shares, exact)
    assert counts.sum() == len(loader)


def test_plan_chunks_covers_every_event_once() -> None:
    counts, files = [5, 0, 7, 3, 9, 9], [0, 0, 0, 1, 2, 2]
    chunks = plan_chunks(counts, files, 4)
    seen = {p: np.zeros(n, int) for p, n in enumerate(counts)}
    for chunk in chunks:
        for piece in chunk:
            seen[piece.partition][piece.lo : piece.hi] += 1
    assert all(np.all(v == 1) for v in seen.values())
    assert len(chunks) == 9  # ceil(33 / 4)
    assert plan_chunks([0, 0], [0, 1], 10) == []
    assert len(plan_chunks(counts, files, -1)) == 1


def test_split_is_independent_of_partitioning(three: list[Path]) -> None:
    a = sorted(_ids(_loader(three, "validation", chunk_size=500)))
    b = sorted(_ids(_loader(three, "validation", chunk_size=1900, client="sync")))
    assert a == b


def test_shuffle_is_seeded_and_changes_with_epoch(three: list[Path]) -> None:
    first, second = _loader(three), _loader(three)
    epoch0 = _ids(first)
    assert epoch0 == _ids(second)
    epoch1 = _ids(first)
    assert epoch1 != epoch0
    assert sorted(epoch1) == sorted(epoch0)
    assert _ids(_loader(three, seed=6)) != epoch0
    ordered = _ids(_loader(three, shuffle=False))
    assert ordered != epoch0
    assert sorted(ordered) == sorted(epoch0)


def test_cuts_are_applied_and_counted_without_features(three: list[Path]) -> None:
    preproc = {
        "flat_cut": {"nLeptons": {"cut": "nLeptons >= 1"}},
        "jagged_cut": {"jetPt": {"cut": ["jetPt > 40", "any"]}},
    }
    p = {**PARAMS, "split": 0.0}
    specs = m.compute_specs(three, p, preproc=preproc, client="sync")
    loader = BatchLoader(three, specs, p, preproc=preproc, labels=[0, 1, 2], client="threads")
    assert set(loader.plan.cut_columns) == {"jetPt", "nLeptons"}  # counting reads only these
    ids = _ids(loader)
    assert len(ids) == specs.nevents == len(loader)
    expected = set()
    for i, path in enumerate(three):
        a = read_all([path], "events", ["event", "nLeptons", "jetPt"])
        keep = (a.nLeptons >= 1) & ak.any(a.jetPt > 40, axis=1)
        expected |= {(i, e) for e in a.event[keep].tolist()}
    assert set(ids) == expected


@pytest.mark.distributed
@pytest.mark.slow
def test_same_split_on_one_and_two_workers(three: list[Path]) -> None:
    from distributed import Client, LocalCluster

    reference = sorted(_ids(_loader(three, "test", client="sync")))
    for workers in (1, 2):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
        with cluster, Client(cluster.scheduler_address) as client:  # by address, as a remote scheduler
            assert sorted(_ids(_loader(three, "test", client=client))) == reference


def _scheduler_gathers(dask_scheduler: object) -> int:
    """Count the scheduler's relays of data to clients (run on the scheduler)."""
    handlers = dask_scheduler.handlers  # type: ignore[attr-defined]
    if not hasattr(dask_scheduler, "relayed"):
        dask_scheduler.relayed = 0  # type: ignore[attr-defined]
        relay = handlers["gather"]

        async def counting(*args: object, **kwargs: object) -> object:
            dask_scheduler.relayed += 1  # type: ignore[attr-defined]
            return await relay(*args, **kwargs)

        handlers["gather"] = counting
    return dask_scheduler.relayed  # type: ignore[attr-defined, no-any-return]


@pytest.mark.distributed
@pytest.mark.slow
def test_batches_come_straight_from_workers_on_this_machine(three: list[Path]) -> None:
    from distributed import Client

    from mlaas4hep_dask.batches._executors import _on_this_machine
    from mlaas4hep_dask.scale._cluster import local_cluster

    reference = sorted(_ids(_loader(three, "validation", client="sync")))
    with local_cluster(2) as cluster:
        for direct, relayed in ((None, False), (False, True)):
            with Client(cluster, direct_to_workers=direct) as client:
                before = client.run_on_scheduler(_scheduler_gathers)
                assert sorted(_ids(_loader(three, "validation", client=client))) == reference
                assert (client.run_on_scheduler(_scheduler_gathers) > before) is relayed
    assert not _on_this_machine("tcp://203.0.113.77:8786")  # a worker elsewhere goes through the scheduler


@pytest.mark.slow
def test_memory_does_not_grow_with_the_data(tmp_path: Path) -> None:
    peaks = []
    for scale in (1, 4):
        files = generate(tmp_path / f"x{scale}", events=6000 * scale, files=1, seed=1, basket=1000)
        p = {"chunk_size": 3000, "batch_size": 500, "split": 0.0, "prefetch": 1}
        specs = m.compute_specs(files, p, client="sync")
        loader = BatchLoader(files, specs, p, labels=[1, 0], client="sync")
        tracemalloc.start()
        n = sum(len(X) for X, _ in loader)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n == 12000 * scale
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_framework_views_of_the_stream(three: list[Path]) -> None:
    torch = pytest.importorskip("torch")
    loader = _loader(three, "validation", client="sync", shuffle=False)
    numpy_batches = list(loader)
    torch_batches = list(loader.torch())
    assert len(torch_batches) == len(numpy_batches)
    X, y, w = torch_batches[0]
    assert isinstance(X, torch.Tensor)
    assert w.dtype == torch.float32
    assert X.dtype == torch.float32
    assert y.dtype == torch.int64
    assert torch.equal(X, torch.from_numpy(numpy_batches[0][0]))

    dataset = loader.tf_dataset()
    tf_batches = list(dataset.as_numpy_iterator())
    assert len(tf_batches) == len(numpy_batches)
    np.testing.assert_array_equal(tf_batches[-1][0], numpy_batches[-1][0])
    assert tf_batches[0][1].dtype == np.int64

    dmatrix = loader.dmatrix()
    assert (dmatrix.num_row(), dmatrix.num_col()) == (len(loader), loader.idim)
    assert sorted(dmatrix.get_label().tolist()) == sorted(
        np.concatenate([b[1] for b in numpy_batches]).tolist()
    )
    assert np.array_equal(
        np.sort(dmatrix.get_weight()), np.sort(np.concatenate([b[2] for b in numpy_batches]))
    )


class _Recording:
    """The loader's own executor, noting the partitions asked for (and when)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.asked: list[str] = []

    def submit(self, task: object) -> object:
        self.asked.append(str(task.key))  # type: ignore[attr-defined]
        return self.inner.submit(task)  # type: ignore[attr-defined]

    def fetch(self, handle: object) -> object:
        return self.inner.fetch(handle)  # type: ignore[attr-defined]

    def result(self, handle: object) -> object:
        return self.inner.result(handle)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]


def test_the_next_epoch_starts_reading_before_this_one_ends(three: list[Path]) -> None:
    loader = _loader(three, epochs=2, prefetch=1)
    loader._executor = recording = _Recording(loader._executor)
    first = {str(loader._task(p.partition).key) for p in loader.chunks()[0]}
    chunks = loader.iter_chunks()
    for _ in range(len(loader.chunks())):
        next(chunks)
    asked = len(recording.asked)
    assert len(set(recording.asked)) == len(loader.dataset.partitions)
    assert first <= set(recording.asked[len(loader.dataset.partitions) :])  # asked again, ahead
    assert next(chunks, None) is None
    assert len(list(loader.iter_chunks())) == len(loader.chunks())
    assert len(recording.asked) == asked + len(loader.dataset.partitions) - len(first)
    # the last epoch (epochs=2) reads nothing ahead, and other splits never do
    assert not loader._next
    validation = _loader(three, "validation", epochs=3)
    list(validation.iter_chunks())
    assert not validation._next


def test_files_of_one_basket_are_read_once_for_all_epochs(tmp_path: Path) -> None:
    """A file of one basket is one partition, used by every chunk: the epochs that follow keep it."""
    files = generate(tmp_path, events=2000, files=1, seed=8, basket=2000)
    keeping = _loader(files, epochs=3, prefetch=1)
    assert len(keeping.dataset.partitions) == 2
    assert len(keeping.chunks()) > 2
    keeping._executor = recording = _Recording(keeping._executor)
    rereading = _loader(files, epochs=3, prefetch=1)  # the same epochs, nothing read ahead or kept
    for epoch in range(3):
        kept = [(b.X, b.y, b.w) for b in keeping.iter_chunks()]
        read = [(b.X, b.y, b.w) for b in rereading.iter_chunks(ahead=False)]
        assert len(kept) == len(read) == len(keeping.chunks())
        for ours, theirs in zip(kept, read, strict=True):
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_array_equal(a, b)
        assert len(recording.asked) == 2, f"epoch {epoch} read a partition again"
    assert not keeping._kept  # the last epoch keeps nothing


def test_the_loader_thread_raises_errors_and_stops_with_its_consumer(three: list[Path]) -> None:
    import threading

    from mlaas4hep_dask.batches._pipeline import read_ahead

    def broken() -> object:
        yield 1
        raise OSError("basket 3 of a.root is damaged")

    got = read_ahead(broken())
    assert next(got) == 1
    with pytest.raises(OSError, match="basket 3"):
        next(got)
    before = threading.active_count()
    chunks = _loader(three).iter_chunks()
    next(chunks)
    chunks.close()  # a trainer that stops mid-epoch
    for _ in range(100):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.05)
    assert not [t for t in threading.enumerate() if t.name == "mlaas4hep-loader"]


def test_where_the_workers_are_is_asked_at_most_every_recheck_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlaas4hep_dask.batches import _executors as _executors

    class Client:  # what the executor reads of a distributed.Client
        direct_to_workers = None

        def __init__(self) -> None:
            self.workers: dict[str, dict] = {"tcp://127.0.0.1:40001": {}}
            self.asked = 0

        def scheduler_info(self) -> dict:
            self.asked += 1
            return {"workers": dict(self.workers)}

    client = Client()
    executor = _executors.Distributed(client)
    clock = [100.0]
    monkeypatch.setattr(_executors.time, "monotonic", lambda: clock[0])
    assert all(executor._direct() for _ in range(50))
    assert client.asked == 1
    client.workers["tcp://203.0.113.77:8786"] = {}  # a worker elsewhere joins
    clock[0] += executor.recheck / 2
    assert (executor._direct(), client.asked) == (True, 1)
    clock[0] += executor.recheck
    assert (executor._direct(), client.asked) == (False, 2)
