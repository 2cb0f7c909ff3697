"""The inference service, run by uvicorn on 127.0.0.1 and used over real HTTP."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import httpx
import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.bundle._bundle import load_bundle
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.serve import Repository, pack
from mlaas4hep_dask.serve._events import prepare_events
from mlaas4hep_dask.serve.app import create_app
from mlaas4hep_dask.train import train

from ._servers import CHROMIUM, colours, render_offline, uvicorn_server

MODELS = Path(__file__).resolve().parent.parent / "configs" / "models"
PREPROC = {"flat_cut": {"nLeptons": {"cut": "nLeptons >= 1"}}}
N = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate(tmp_path_factory.mktemp("serve-data"), events=3000, files=1, seed=8)


@pytest.fixture(scope="module")
def runs(data: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("serve-runs")
    params = {"epochs": 1, "chunk_size": 3000, "batch_size": 256}
    return {
        fw: train(
            data,
            MODELS / f"{fw}_model.py",
            params,
            labels=[1, 0],
            preproc=PREPROC,
            out=out / fw,
            client="sync",
        ).path
        for fw in ("sklearn", "torch", "xgboost", "keras")
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = Repository(tmp_path_factory.mktemp("serve-repo"))
    with uvicorn_server(create_app(repo, max_body=4 * 2**20)) as url:
        yield url


def _upload(url: str, run: Path, name: str, version: int | None = None) -> httpx.Response:
    data = {"name": name} | ({"version": str(version)} if version else {})
    return httpx.post(f"{url}/upload", files={"file": ("run.tar.gz", pack(run))}, data=data, timeout=60)


def _raw_events(path: Path, bundle: m.bundle.Bundle, n: int = N) -> list[dict]:
    arrays = uproot.open(path)["events"].arrays(list(bundle.plan.columns), entry_stop=n)
    return [
        {k: (v if not isinstance(v, list) else [float(x) for x in v]) for k, v in ev.items()}
        for ev in ak.to_list(arrays)
    ]


def _expected(path: Path, bundle: m.bundle.Bundle) -> list[float | None]:
    """In-process: the training pipeline's rows (plan, layout) for the first N entries, then the model."""
    raw = uproot.open(path)["events"].arrays(list(bundle.plan.columns), entry_stop=N)
    selection = bundle.plan.select(raw)
    X, _ = bundle.layout.transform(selection.record)
    scores = bundle.predict_features(X).tolist()
    out: list[float | None] = [None] * N
    for position, score in zip(np.flatnonzero(selection.keep), scores, strict=True):
        out[position] = score
    return out


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["sklearn", "torch", "xgboost", "keras"])
def test_http_predictions_equal_in_process(
    server: str, runs: dict[str, Path], data: list[Path], framework: str
) -> None:
    assert _upload(server, runs[framework], framework).status_code == 201
    bundle = load_bundle(runs[framework])
    expected = _expected(data[0], bundle)
    assert any(e is None for e in expected)  # events without leptons fail the bundle's cut
    got = httpx.post(
        f"{server}/predict/{framework}", json={"events": _raw_events(data[0], bundle)}, timeout=60
    )
    assert got.status_code == 200, got.text
    scores = got.json()["scores"]
    assert [s is None for s in scores] == [e is None for e in expected]
    np.testing.assert_allclose(
        [s for s in scores if s is not None], [e for e in expected if e is not None], rtol=1e-5
    )
    # prepared rows give the same scores, as JSON and as a .npy body
    raw = uproot.open(data[0])["events"].arrays(list(bundle.plan.columns), entry_stop=N)
    X, _ = bundle.layout.transform(bundle.plan.select(raw).record)
    rows = httpx.post(f"{server}/predict/{framework}", json={"inputs": X.tolist()}, timeout=60).json()[
        "scores"
    ]
    np.testing.assert_allclose(rows, [e for e in expected if e is not None], rtol=1e-5)
    buffer = io.BytesIO()
    np.save(buffer, X)
    npy = httpx.post(
        f"{server}/predict/{framework}",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy"},
        timeout=60,
    )
    np.testing.assert_allclose(npy.json()["scores"], rows, rtol=1e-6)


@pytest.mark.slow
def test_versions_listing_and_deletion(server: str, runs: dict[str, Path]) -> None:
    assert _upload(server, runs["sklearn"], "versions").json()["version"] == 1
    assert _upload(server, runs["torch"], "versions").json()["version"] == 2
    everything = httpx.get(f"{server}/models").json()
    listed = [(x["name"], x["version"], x["framework"]) for x in everything]
    assert {"name", "version", "framework", "idim", "inputs", "created"} <= set(everything[0])
    assert "jetPt" in next(x for x in everything if x["name"] == "versions")["inputs"]
    assert ("versions", 1, "sklearn") in listed
    assert ("versions", 2, "torch") in listed
    detail = httpx.get(f"{server}/models/versions").json()
    assert (detail["version"], detail["versions"], detail["bundle"]["framework"]) == (2, [1, 2], "torch")
    row = [[0.5] * detail["idim"]]
    assert httpx.post(f"{server}/predict/versions", json={"inputs": row}).json()["version"] == 2
    assert httpx.post(f"{server}/predict/versions?version=1", json={"inputs": row}).json()["version"] == 1
    assert httpx.delete(f"{server}/models/versions/2").status_code == 200
    assert httpx.get(f"{server}/models/versions").json()["version"] == 1
    assert httpx.delete(f"{server}/models/versions").status_code == 200
    gone = httpx.post(f"{server}/predict/versions", json={"inputs": row})
    assert gone.status_code == 404
    assert gone.json() == {"error": "model 'versions' is not in the repository"}


@pytest.mark.slow
def test_bad_requests_are_4xx_and_the_server_keeps_serving(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    assert _upload(server, runs["sklearn"], "bad").status_code == 201
    bundle = load_bundle(runs["sklearn"])
    event = _raw_events(data[0], bundle)[0]
    idim = bundle.layout.idim
    cases = [
        ({"events": [{k: v for k, v in event.items() if k != "HT"}]}, 422, "events[0]: missing branch 'HT'"),
        ({"events": [{**event, "HT": "big"}]}, 422, "events[0].HT must be a number"),
        ({"events": [{**event, "jetPt": 3.0}]}, 422, "events[0].jetPt must be a list of numbers"),
        (
            {"events": [event, {**event, "nJets": 2.5}]},
            422,
            "events[1].nJets is 2.5, but the branch holds integers (int32)",
        ),
        ({"events": []}, 422, "'events' must be a non-empty list"),
        ({"events": [event, [1.0, 2.0]]}, 422, "events[1] must be an object of branch values, not list"),
        ({"inputs": [[0.1] * (idim - 1)]}, 422, f"rows have {idim - 1} values; the model takes {idim}"),
        ({"inputs": [[0.1] * idim], "events": []}, 422, "give exactly one of 'events' or 'inputs'"),
    ]
    whole = httpx.post(f"{server}/predict/bad", json={"events": [{**event, "bogus": 1, "Jet_x": [1.0]}]})
    alone = httpx.post(f"{server}/predict/bad", json={"events": [event]}).json()
    assert whole.status_code == 200, whole.text  # a whole event: what the model does not read is ignored
    assert whole.json()["ignored"] == ["Jet_x", "bogus"]
    assert whole.json()["scores"] == alone["scores"]
    assert "ignored" not in alone
    for body, status, message in cases:
        response = httpx.post(f"{server}/predict/bad", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"]
    nan = httpx.post(
        f"{server}/predict/bad",
        content='{"inputs": [[NaN' + ", 0.1" * (idim - 1) + "]]}",
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422
    assert "not finite" in nan.json()["error"]
    broken = httpx.post(
        f"{server}/predict/bad", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert "not valid JSON" in broken.json()["error"]
    assert httpx.post(f"{server}/predict/nobody", json={"inputs": [[0.0]]}).status_code == 404
    huge = httpx.post(
        f"{server}/predict/bad", content=b"0" * (5 * 2**20), headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    deep = httpx.post(
        f"{server}/predict/bad",
        content=b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert deep.status_code == 400, deep.text
    assert "nested too deeply" in deep.json()["error"]
    corrupt = httpx.post(
        f"{server}/upload", files={"file": ("x.tar.gz", b"not a tarball")}, data={"name": "corrupt"}
    )
    assert corrupt.status_code == 400
    assert "not a readable tarball" in corrupt.json()["error"]
    assert "corrupt" not in [x["name"] for x in httpx.get(f"{server}/models").json()]
    traversal = httpx.post(
        f"{server}/upload", files={"file": ("x.tar.gz", pack(runs["sklearn"]))}, data={"name": "../etc"}
    )
    assert traversal.status_code == 400
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}


@pytest.mark.slow
def test_tfaas_json_route_and_metrics(server: str, runs: dict[str, Path]) -> None:
    assert _upload(server, runs["sklearn"], "tfaas").status_code == 201
    features = httpx.get(f"{server}/models/tfaas").json()["bundle"]["features"]
    row = [0.3] * len(features)
    direct = httpx.post(f"{server}/predict/tfaas", json={"inputs": [row]}).json()["scores"]
    reversed_keys = list(reversed(features))
    tfaas = httpx.post(f"{server}/json", json={"keys": reversed_keys, "values": row[::-1], "model": "tfaas"})
    assert tfaas.status_code == 200
    assert tfaas.json() == pytest.approx(direct)
    bad = httpx.post(f"{server}/json", json={"keys": ["x"], "values": [1.0], "model": "tfaas"})
    assert bad.status_code == 422
    text = httpx.get(f"{server}/metrics").text
    assert 'mlaas4hep_requests_total{model="tfaas",route="/predict/{name}",status="200"}' in text
    assert "mlaas4hep_request_seconds_bucket" in text
    assert math.isfinite(json.loads(json.dumps(direct))[0])


@pytest.mark.slow
def test_cli_push(server: str, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from mlaas4hep_dask.cli._main import main

    assert main(["push", str(runs["torch"]), "--server", server, "--name", "pushed"]) == 0
    assert "uploaded" in capsys.readouterr().out
    assert httpx.get(f"{server}/models/pushed").json()["framework"] == "torch"
    assert main(["push", str(runs["torch"]), "--server", "http://127.0.0.1:9", "--name", "x"]) == 2
    assert "cannot reach the inference server" in capsys.readouterr().err


def test_a_warm_server_has_loaded_and_used_the_latest_version_of_every_model(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add("a", pack(runs["sklearn"]))
    repo.add("a", pack(runs["torch"]))
    repo.add("b", pack(runs["xgboost"]))
    (tmp_path / "repo" / "b" / "1" / "bundle.json").write_text("{broken")  # logged, not fatal
    create_app(repo, warm=True)
    assert repo.loaded == [("a", 2)]
    assert create_app(Repository(tmp_path / "repo"), warm=False) is not None  # nothing loaded


def test_a_models_objects_leave_the_garbage_collectors_view_after_its_first_batch(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    # its full passes over the frameworks' objects made the p99 of single events 4x the p90
    import gc

    assert _upload(server, runs["xgboost"], "frozen").status_code == 201
    event = _raw_events(data[0], load_bundle(runs["xgboost"]), 1)
    before = gc.get_freeze_count()
    assert httpx.post(f"{server}/predict/frozen", json={"events": event}).status_code == 200
    after_first = gc.get_freeze_count()
    assert after_first > before
    assert httpx.post(f"{server}/predict/frozen", json={"events": event}).status_code == 200
    assert gc.get_freeze_count() <= after_first  # once per model version, not per request


def _npz(columns: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **columns)
    return buffer.getvalue()


def _columns_of(path: Path, bundle: m.bundle.Bundle, n: int) -> dict[str, np.ndarray]:
    """Raw events branch by branch, as a physicist sends them from uproot: a jagged branch's
    items and NAME.counts."""
    arrays = uproot.open(path)["events"].arrays(list(bundle.plan.columns), entry_stop=n)
    out: dict[str, np.ndarray] = {}
    for name in arrays.fields:
        if arrays[name].ndim == 2:
            out[name], out[f"{name}.counts"] = (
                ak.to_numpy(ak.flatten(arrays[name])),
                ak.to_numpy(ak.num(arrays[name])),
            )
        else:
            out[name] = ak.to_numpy(arrays[name])
    return out


@pytest.mark.slow
def test_raw_events_as_npz_columns_score_as_the_json_events(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    assert _upload(server, runs["torch"], "columns").status_code == 201
    bundle = load_bundle(runs["torch"])  # with the flat cut: some events get no score
    by_json = httpx.post(
        f"{server}/predict/columns", json={"events": _raw_events(data[1], bundle, 300)}
    ).json()
    columns = _columns_of(data[1], bundle, 300)
    npz = {"content-type": "application/x-npz"}
    extra = {**columns, "bogus": np.zeros(300)}
    by_npz = httpx.post(f"{server}/predict/columns", content=_npz(extra), headers=npz)
    assert by_npz.status_code == 200, by_npz.text
    assert by_npz.json()["scores"] == by_json["scores"]
    assert None in by_npz.json()["scores"]
    assert by_npz.json()["ignored"] == ["bogus"]
    jagged = next(k.removesuffix(".counts") for k in columns if k.endswith(".counts"))
    flat = next(
        k for k in columns if k != jagged and f"{k}.counts" not in columns and not k.endswith(".counts")
    )
    counts = f"{jagged}.counts"
    cases = [
        ({k: v for k, v in columns.items() if k != flat}, f"the body lacks branch {flat!r}"),
        ({k: v for k, v in columns.items() if k != counts}, f"jagged branch {jagged!r} needs {counts!r}"),
        ({**columns, counts: columns[counts] + 1}, f"{counts!r} counts"),
        ({**columns, flat: columns[flat][:-1]}, "events; the branches before it gave"),
        ({**columns, flat: np.where(np.arange(300) == 7, np.nan, columns[flat])}, "holds NaN or infinities"),
    ]
    for body, message in cases:
        response = httpx.post(f"{server}/predict/columns", content=_npz(body), headers=npz)
        assert response.status_code == 422, (message, response.text)
        assert message in response.json()["error"]
    garbage = httpx.post(f"{server}/predict/columns", content=b"PK\x03\x04 not a zip", headers=npz)
    assert garbage.status_code == 422
    assert "not a NumPy .npy array or .npz archive" in garbage.json()["error"]


def _arrow(table: object) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:  # type: ignore[attr-defined]
        writer.write_table(table)
    return sink.getvalue()


@pytest.mark.slow
def test_raw_events_as_an_arrow_stream_score_as_the_json_events(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    import pyarrow as pa

    assert _upload(server, runs["torch"], "arrow").status_code == 201
    bundle = load_bundle(runs["torch"])
    by_json = httpx.post(f"{server}/predict/arrow", json={"events": _raw_events(data[1], bundle, 300)}).json()
    arrays = uproot.open(data[1])["events"].arrays(list(bundle.plan.columns), entry_stop=300)
    arrow = {"content-type": "application/vnd.apache.arrow.stream"}
    # as a physicist sends them: awkward's table of the branches uproot read (extension types and all)
    by_arrow = httpx.post(f"{server}/predict/arrow", content=_arrow(ak.to_arrow_table(arrays)), headers=arrow)
    assert by_arrow.status_code == 200, by_arrow.text
    assert by_arrow.json()["scores"] == by_json["scores"]
    plain = ak.to_arrow_table(arrays, extensionarray=False)  # and a plain Arrow table, sliced
    sliced = httpx.post(f"{server}/predict/arrow", content=_arrow(plain.slice(100, 50)), headers=arrow)
    assert sliced.json()["scores"] == by_json["scores"][100:150]
    jagged = next(name for name in arrays.fields if arrays[name].ndim == 2)
    holes = plain.set_column(
        plain.column_names.index(jagged), jagged, pa.array([None, *plain.column(jagged).to_pylist()[1:]])
    )
    cases = [
        (b"ARROW1 not a stream", "the body is not an Arrow IPC stream"),
        (_arrow(holes), f"branch {jagged!r} holds missing values (nulls)"),
        (_arrow(pa.table({jagged: pa.array(["a"] * 3)})), f"branch {jagged!r} is string: give numbers"),
    ]
    for body, message in cases:
        response = httpx.post(f"{server}/predict/arrow", content=body, headers=arrow)
        assert response.status_code == 422, (message, response.text)
        assert message in response.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "root"])
def test_batch_predict_writes_scores_per_partition(
    runs: dict[str, Path], data: list[Path], tmp_path: Path, fmt: str
) -> None:
    from mlaas4hep_dask.cli._main import main

    repo = Repository(tmp_path / "repo")
    repo.add("batch", pack(runs["torch"]))
    out = tmp_path / "scores"
    args = [
        "predict",
        "--model",
        f"{repo.root}/batch:1",
        "--files",
        str(data[0]),
        "--out",
        str(out),
        "--format",
        fmt,
        "--scheduler",
        "threads",
    ]
    assert main(args) == 0
    parts = sorted(out.glob(f"part-*.{fmt}"))
    assert len(parts) == 1  # 3000 events, one partition
    table = ak.from_parquet(parts[0]) if fmt == "parquet" else uproot.open(parts[0])["scores"].arrays()
    assert ak.to_list(table.entry) == list(range(3000))
    ids = uproot.open(data[0])["events"].arrays(["run", "event"], library="np")
    assert table.fields[:4] == ["file", "entry", "run", "event"]  # scores join back to the events
    np.testing.assert_array_equal(ak.to_numpy(table.event), ids["event"])
    np.testing.assert_array_equal(ak.to_numpy(table.run), ids["run"])
    bundle = load_bundle(runs["torch"])
    raw = uproot.open(data[0])["events"].arrays(list(bundle.plan.columns))
    selection = bundle.plan.select(raw)
    X, _ = bundle.layout.transform(selection.record)
    np.testing.assert_array_equal(ak.to_numpy(table.passed), selection.keep)
    np.testing.assert_allclose(
        ak.to_numpy(table.score)[selection.keep], bundle.predict_features(X), rtol=1e-5
    )
    assert np.isnan(ak.to_numpy(table.score)[~selection.keep]).all()


def test_batch_predict_parts_chain_into_a_friend_of_each_input_tree(
    runs: dict[str, Path], data: list[Path], tmp_path: Path
) -> None:
    from mlaas4hep_dask.serve.batch import predict_files

    inputs = [tmp_path / f"baskets-of-1000-{k}.root" for k in range(len(data))]
    for source, target in zip(data, inputs, strict=True):
        events = uproot.open(source)["events"].arrays()
        with uproot.recreate(target) as f:  # small baskets: partitions end on them, inside the file
            tree = f.mktree("events", {k: events[k].type.content for k in events.fields})
            for start in range(0, len(events), 1000):
                tree.extend({k: events[k][start : start + 1000] for k in events.fields})
    written = predict_files(
        runs["sklearn"], inputs, tmp_path / "out", fmt="root", client="sync", chunk_size=700
    )
    assert len(written) > len(inputs)  # several parts per input file
    # numbered in partition order (files, then entries), and nothing else left in the folder
    assert [p.name for p in written] == [f"part-{i:05d}.root" for i in range(len(written))]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in written] + ["friends.json"]
    )
    friends = json.loads((tmp_path / "out" / "friends.json").read_text())
    assert friends["tree"] == "scores"
    for k, entry in enumerate(friends["inputs"]):
        assert Path(entry["file"]).name == inputs[k].name
        chain = uproot.concatenate([f"{tmp_path / 'out' / part}:scores" for part in entry["parts"]])
        tree = uproot.open(inputs[k])[entry["tree"]]
        assert len(chain) == tree.num_entries == entry["entries"]  # one row per entry, in order
        assert ak.to_list(chain.entry) == list(range(tree.num_entries))
        assert set(ak.to_list(chain.file)) == {k}
        np.testing.assert_array_equal(ak.to_numpy(chain.event), tree["event"].array(library="np"))


def test_batch_predict_bad_model_spec(tmp_path: Path, data: list[Path]) -> None:
    from mlaas4hep_dask.serve.batch import predict_files

    with pytest.raises(m.ConfigError, match="is not a model repository"):
        predict_files(tmp_path / "nowhere/model", data, tmp_path / "out")


def test_raw_events_make_exactly_the_training_rows(
    runs: dict[str, Path], data: list[Path], tmp_path: Path
) -> None:
    from mlaas4hep_dask.serve._events import prepare_events

    plain, demo = (
        train(
            data, MODELS / "sklearn_model.py", {"epochs": 1, "chunk_size": 3000}, labels=[1, 0],
            preproc=preproc, out=tmp_path / name, client="sync",
        ).path
        for name, preproc in (("plain", None), ("demo", MODELS.parent / "preproc.json"))
    )  # fmt: skip
    # no preprocessing; a flat cut; the demo's new flat and jagged branches with any/all cuts
    for run in (plain, runs["sklearn"], demo):
        bundle = load_bundle(run)
        raw = uproot.open(data[1])["events"].arrays(list(bundle.plan.columns), entry_stop=400)
        selection = bundle.plan.select(raw)
        expected, _ = bundle.layout.transform(selection.record)
        X, positions = prepare_events(bundle, _raw_events(data[1], bundle, 400))
        assert len(X) > 50
        np.testing.assert_array_equal(X, expected)
        np.testing.assert_array_equal(
            positions, np.flatnonzero(selection.keep) if selection.keep is not None else np.arange(400)
        )


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_scores(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    import asyncio
    import re

    assert _upload(server, runs["torch"], "batched").status_code == 201
    bundle = load_bundle(runs["torch"])
    events = _raw_events(data[0], bundle, 1000)
    sizes = [1 + (i * 7) % 23 for i in range(64)]  # 64 requests of 1 to 23 events
    starts = np.cumsum([0, *sizes])
    bodies = [{"events": events[a:b]} for a, b in itertools.pairwise(starts)]
    rows = np.random.default_rng(0).random((5, bundle.layout.idim)).astype(np.float32)
    bodies[::9] = [
        {"inputs": rows[: 1 + i % 5].tolist()} for i in range(len(bodies[::9]))
    ]  # prepared rows too

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{server}/predict/batched", json=b) for b in bodies))

    answers = asyncio.run(post_all())
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        scores = answer.json()["scores"]
        if "inputs" in body:
            expected = bundle.predict_features(np.asarray(body["inputs"], np.float32)).tolist()
        else:  # alone, as an unbatched request would be scored
            X, positions = prepare_events(bundle, body["events"])
            expected = [None] * len(body["events"])
            for p, v in zip(positions.tolist(), bundle.predict_features(X).tolist(), strict=True):
                expected[p] = v
        assert [s is None for s in scores] == [e is None for e in expected]
        np.testing.assert_allclose(
            [s for s in scores if s is not None], [e for e in expected if e is not None], rtol=1e-5
        )
    text = httpx.get(f"{server}/metrics").text
    count = float(re.search(r'mlaas4hep_batch_events_count\{model="batched"\} (\S+)', text).group(1))  # type: ignore[union-attr]
    total = float(re.search(r'mlaas4hep_batch_events_sum\{model="batched"\} (\S+)', text).group(1))  # type: ignore[union-attr]
    assert count == 64
    assert total / count > sum(sizes) / 64  # requests shared their batches with others


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after_and_the_server_recovers(
    runs: dict[str, Path], data: list[Path], tmp_path: Path
) -> None:
    import asyncio

    repo = Repository(tmp_path / "repo")
    repo.add("busy", pack(runs["keras"]))
    bundle = load_bundle(runs["keras"])
    body = {"events": _raw_events(data[0], bundle, 1000)}
    with uvicorn_server(create_app(repo, max_queue=1000, max_batch_size=1000)) as url:

        async def post_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(
                    *(client.post(f"{url}/predict/busy", json=body) for _ in range(12))
                )

        answers = asyncio.run(post_all())
        codes = [a.status_code for a in answers]
        assert 200 in codes
        assert 503 in codes, codes
        refused = next(a for a in answers if a.status_code == 503)
        assert int(refused.headers["retry-after"]) >= 1
        assert "events waiting: try again later" in refused.json()["error"]
        assert httpx.post(f"{url}/predict/busy", json=body, timeout=120).status_code == 200  # recovered


@pytest.mark.slow
def test_triton_clients_infer_unchanged_over_the_open_inference_protocol(
    server: str, runs: dict[str, Path], data: list[Path]
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    assert _upload(server, runs["torch"], "v2model").status_code == 201
    bundle = load_bundle(runs["torch"])
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("v2model")
    meta = client.get_model_metadata("v2model")
    assert meta["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, bundle.layout.idim]}
    # prepared rows, as binary tensor data (the client's default)
    X = np.random.default_rng(3).random((7, bundle.layout.idim)).astype(np.float32)
    features = triton.InferInput("features", list(X.shape), "FP32")
    features.set_data_from_numpy(X)
    for binary_out in (True, False):  # the scores as raw bytes after the header, or as JSON data
        wanted = [triton.InferRequestedOutput("scores", binary_data=binary_out)]
        result = client.infer("v2model", [features], outputs=wanted)
        assert ("binary_data_size" in str(result.get_response())) is binary_out
        np.testing.assert_allclose(result.as_numpy("scores"), bundle.predict_features(X), rtol=1e-5)
    asked = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [2, X.shape[1]], "data": X[:2].ravel().tolist()}
        ],
        "parameters": {"binary_data_output": True},
    }
    answer = httpx.post(f"{server}/v2/models/v2model/infer", json=asked)
    split = int(answer.headers["Inference-Header-Content-Length"])
    header = json.loads(answer.content[:split])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    np.testing.assert_allclose(
        np.frombuffer(answer.content[split:], "<f4"), bundle.predict_features(X[:2]), rtol=1e-5
    )
    # raw events: one JSON text per element of a BYTES tensor; rejected events score NaN
    events = _raw_events(data[0], bundle)
    texts = np.array([json.dumps(e).encode() for e in events], dtype=np.object_)
    for binary in (True, False):
        raw = triton.InferInput("events", [len(texts)], "BYTES")
        raw.set_data_from_numpy(texts, binary_data=binary)
        scores = client.infer("v2model", [raw]).as_numpy("scores")
        expected = np.array(
            [np.nan if e is None else e for e in _expected(data[0], bundle)], dtype=np.float32
        )
        np.testing.assert_allclose(scores, expected, rtol=1e-5)  # NaN where the cut rejects
    wrong = triton.InferInput("jets", [1, 2], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match="unknown input 'jets'"):
        client.infer("v2model", [wrong])
    with pytest.raises(InferenceServerException, match="not in the repository"):
        client.infer("nope", [features])


@pytest.mark.slow
def test_onnx_exports_score_like_the_native_models(
    runs: dict[str, Path], data: list[Path], tmp_path: Path
) -> None:
    from mlaas4hep_dask.errors import SpecsError

    X = np.random.default_rng(5).random((64, load_bundle(runs["torch"]).layout.idim)).astype(np.float32)
    for framework in ("sklearn", "torch", "xgboost"):
        native, onnx = load_bundle(runs[framework]), load_bundle(runs[framework], runtime="onnx")
        assert (runs[framework] / "model.onnx").is_file()
        np.testing.assert_allclose(
            onnx.predict_features(X), native.predict_features(X), atol=1e-5, err_msg=framework
        )
    assert json.loads((runs["keras"] / "bundle.json").read_text())["onnx"]["file"] is None
    with pytest.raises(SpecsError, match=r"has no model\.onnx to score with: no ONNX converter for keras"):
        load_bundle(runs["keras"], runtime="onnx")
    repo = Repository(tmp_path / "repo", runtime="onnx")
    repo.add("onnx", pack(runs["torch"]))
    with uvicorn_server(create_app(repo)) as url:
        answer = httpx.post(f"{url}/predict/onnx", json={"inputs": X[:3].tolist()}).json()
    np.testing.assert_allclose(
        answer["scores"], load_bundle(runs["torch"]).predict_features(X[:3]), atol=1e-5
    )


def test_export_writes_a_triton_model_repository_entry(runs: dict[str, Path], tmp_path: Path) -> None:
    import re

    import onnxruntime

    from mlaas4hep_dask.cli._main import main

    repo = tmp_path / "triton"
    for _ in range(2):
        assert main(["export", "--triton", str(repo), str(runs["torch"]), "--name", "tth"]) == 0
    config = (repo / "tth" / "config.pbtxt").read_text()
    idim = load_bundle(runs["torch"]).layout.idim
    assert 'backend: "onnxruntime"' in config
    assert re.search(rf'name: "features"\s+data_type: TYPE_FP32\s+dims: \[ -1, {idim} \]', config)
    assert sorted(p.name for p in (repo / "tth").iterdir()) == ["1", "2", "config.pbtxt", "mlaas4hep"]
    assert (repo / "tth" / "mlaas4hep" / "preproc.json").is_file()  # the recipe for raw events
    X = np.random.default_rng(1).random((4, idim)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        str(repo / "tth" / "2" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        session.run(["scores"], {"features": X})[0], load_bundle(runs["torch"]).predict_features(X), atol=1e-5
    )
    assert main(["export", "--triton", str(repo), str(runs["keras"])]) == 2  # no model.onnx: one line, exit 2


def test_the_api_page_works_offline_and_documents_the_bodies(server: str) -> None:
    page = httpx.get(f"{server}/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()  # no asset from the internet
    assets = [a for a in ("docs-assets/swagger-ui-bundle.js", "docs-assets/swagger-ui.css") if a in page.text]
    assert len(assets) == 2
    for asset in assets:  # relative links: they resolve next to /docs, also under a proxy's prefix
        served = httpx.get(f"{server}/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 10_000
    spec = httpx.get(f"{server}/openapi.json").json()
    predict = spec["paths"]["/predict/{name}"]["post"]["requestBody"]["content"]
    assert set(predict["application/json"]["examples"]) == {"raw events", "prepared rows"}
    assert "application/x-npy" in predict
    tfaas = spec["paths"]["/json"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert tfaas["required"] == ["keys", "values", "model"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make test installs Debian's)")
def test_the_api_page_renders_in_a_browser_without_internet(server: str, tmp_path: Path) -> None:
    dom = render_offline(f"{server}/docs", tmp_path / "docs.png")
    assert "Failed to load API definition" not in dom
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {"/predict/{name}", "/json", "/upload", "/v2/models/{name}/infer"} <= shown
    assert colours(tmp_path / "docs.png") > 50  # not a white page
