"""End-to-end training for every framework, the run directory, and model.py errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import uproot

import mlaas4hep_dask as m
from mlaas4hep_dask.bundle._bundle import load_bundle
from mlaas4hep_dask.cli._main import main
from mlaas4hep_dask.generate import generate
from mlaas4hep_dask.train import ModelFileError, train

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "configs" / "models"
PARAMS = {"epochs": 3, "batch_size": 128, "chunk_size": 4000, "seed": 11}
WORKING_AUC = 0.78  # what these models reach on the generated data (about 0.85)
BROKEN_AUC = 0.6  # labels that do not follow the classes


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two signal and two background files of 4000 events: signal, background, signal, background."""
    return generate(tmp_path_factory.mktemp("train"), events=4000, files=2, seed=21)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["keras", "torch", "xgboost", "sklearn"])
def test_each_framework_learns_and_writes_a_run(
    data: list[Path], tmp_path: Path, framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mlaas4hep_dask")
    run = train(
        data,
        MODELS / f"{framework}_model.py",
        PARAMS,
        labels=[1, 0, 1, 0],
        out=tmp_path / "run",
        client="threads",
        log_every=0.0,
    )
    assert run.framework == framework
    # the progress lines (which the submit service parses) end at exactly 100 %
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: training")]
    done, total = re.match(r"progress: training (\d+)/(\d+) events", progress[-1]).groups()  # type: ignore[union-attr]
    assert int(done) == int(total) > 0
    if framework != "xgboost":  # the epoch, and the last epoch's validation metrics, are shown
        assert any(
            re.search(r", epoch 2/3 \(epoch 1: val_loss [\d.]+, val_auc [\d.]+\)$", p) for p in progress
        )
    final = run.metrics["final"]
    assert final["val_auc"] > WORKING_AUC
    assert final["test_auc"] > WORKING_AUC
    assert final["events_trained"] > 0
    assert final["device"] == "cpu"
    saved = json.loads((run.path / "metrics.json").read_text())
    assert saved["framework"] == framework
    assert {"epoch", "loss", "val_loss", "val_auc"} <= set(saved["epochs"][0])
    assert {"val_auc", "test_auc", "events_trained", "seconds"} <= set(saved["final"])
    for name in ("bundle.json", "specs.json", "params.json", "model.py", "metrics.csv"):
        assert (run.path / name).is_file(), name
    for plot in ("training.png", "roc.png", "scores.png"):
        assert (run.path / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved model, loaded back, scores exactly like the trained one did
    bundle = load_bundle(run.path)
    assert bundle.manifest["framework"] == framework
    assert bundle.manifest["features"] == bundle.layout.features
    loader = m.BatchLoader(
        data, bundle.specs, bundle.params, labels=[1, 0, 1, 0], split="test", client="sync"
    )
    chunk = next(loader.iter_chunks(shuffle=False))
    from sklearn.metrics import roc_auc_score

    scores = bundle.predict_features(chunk.X)
    assert roc_auc_score(chunk.y, scores) > WORKING_AUC


@pytest.mark.slow
def test_broken_labels_do_not_learn(data: list[Path], tmp_path: Path) -> None:
    run = train(
        data, MODELS / "torch_model.py", PARAMS, labels=[1, 1, 0, 0], out=tmp_path / "run", client="threads"
    )
    assert run.metrics["final"]["val_auc"] < BROKEN_AUC


@pytest.mark.slow
def test_runs_are_reproducible(data: list[Path], tmp_path: Path) -> None:
    runs = [
        train(
            data,
            MODELS / "torch_model.py",
            PARAMS,
            labels=[1, 0, 1, 0],
            out=tmp_path / f"r{i}",
            client="threads",
        )
        for i in range(2)
    ]
    first, second = (r.metrics["epochs"] for r in runs)
    assert [e["val_auc"] for e in first] == [e["val_auc"] for e in second]
    assert runs[0].metrics["final"]["test_auc"] == runs[1].metrics["final"]["test_auc"]


@pytest.mark.slow
@pytest.mark.distributed
def test_xgboost_dask_trains_on_two_workers_without_gathering(data: list[Path], tmp_path: Path) -> None:
    from distributed import Client, get_task_stream

    from mlaas4hep_dask.scale._cluster import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as client, get_task_stream(client) as stream:
        run = train(
            data,
            MODELS / "xgboost_model.py",
            PARAMS,
            labels=[1, 0, 1, 0],
            out=tmp_path / "run",
            client=client,
        )
    assert run.metrics["final"]["val_auc"] > WORKING_AUC

    # both workers read partitions, and xgboost.dask ran one training task on each of them,
    # on the partitions in their own memory: the client never held the training set
    def workers(prefix: str) -> set[str]:
        return {t["worker"] for t in stream.data if str(t["key"]).lstrip("('").startswith(prefix)}

    assert len(workers("read-Tensorize")) == 2
    assert len(workers("fn-")) == 2
    assert len(run.metrics["epochs"]) == 60  # one row per boosting round, from XGBoost's own evals


def test_custom_fit_hook(data: list[Path], tmp_path: Path) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(
        "from sklearn.linear_model import LogisticRegression\n"
        "def model():\n    return LogisticRegression(max_iter=300)\n"
        "def fit(model, train, valid, params):\n"
        "    import numpy as np\n"
        "    chunks = list(train.iter_chunks())\n"
        "    model.fit(np.concatenate([c.X for c in chunks]), np.concatenate([c.y for c in chunks]))\n"
        "    return model\n"
    )
    run = train(data, model_py, PARAMS, labels=[1, 0, 1, 0], out=tmp_path / "run", client="threads")
    assert run.framework == "sklearn"
    assert run.metrics["final"]["val_auc"] > 0.7


def test_regression_from_a_label_branch(data: list[Path], tmp_path: Path) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(
        "from sklearn.linear_model import SGDRegressor\ndef model():\n    return SGDRegressor(random_state=0)\n"
    )
    params = {**PARAMS, "label_branch": "HT", "exclude_branches": ["HT"], "epochs": 2}
    run = train(data, model_py, params, out=tmp_path / "run", client="threads")
    final = run.metrics["final"]
    assert run.metrics["task"]["kind"] == "regression"
    ht = np.concatenate([uproot.open(p)["events"]["HT"].array(library="np") for p in data])
    assert final["val_mse"] < 0.5 * np.var(ht)  # the jets' pT explain most of HT (their sum)
    assert "val_auc" not in final


BAD_MODELS = [
    ("def model(idim)\n    return 1\n", r"model.py', line 1: SyntaxError"),
    ("import os\nraise RuntimeError('boom')\n", r"model.py', line 2: RuntimeError: boom"),
    ("x = 1\n", r"defines no function model\(idim\)"),
    ("def model(idim):\n    return [1, 2]\n", r"model\(\) returned a builtins.list"),
    (
        "def model(idim):\n    x = 1\n    return 1 / 0\n",
        r"model.py', line 3: model\(\) failed: ZeroDivisionError",
    ),
    (
        "import torch\ndef model(idim):\n    return torch.nn.Linear(idim, 3)\n",
        r"model.py': model\(\) returns 3 outputs per event, but the labels make a binary task \(one output\)",
    ),
    (
        "import torch\ndef model(idim):\n    return torch.nn.Linear(7, 1)\n",
        r"model.py': the model fails on a batch of \d+ features: RuntimeError",
    ),
]


@pytest.mark.parametrize(("source", "message"), BAD_MODELS)
def test_model_file_errors_name_the_file_and_line(
    data: list[Path], tmp_path: Path, source: str, message: str
) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(source)
    with pytest.raises(ModelFileError, match=message):
        train(data[:2], model_py, PARAMS, labels=[1, 0], out=tmp_path / "run", client="sync")


def test_labels_of_one_class_are_refused_before_training(data: list[Path], tmp_path: Path) -> None:
    with pytest.raises(m.ConfigError, match="every input file has the label 1: a classifier needs events of"):
        train(
            data, MODELS / "torch_model.py", PARAMS, labels=[1, 1, 1, 1], out=tmp_path / "run", client="sync"
        )


def test_training_needs_targets(data: list[Path], tmp_path: Path) -> None:
    with pytest.raises(m.ConfigError, match="training needs targets"):
        train(data, MODELS / "sklearn_model.py", PARAMS, out=tmp_path / "run", client="sync")


def test_cli_train_and_bad_model(
    data: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = ",".join(map(str, data))
    args = [
        "train",
        "--files",
        files,
        "--labels",
        "1,0,1,0",
        "--model",
        str(MODELS / "sklearn_model.py"),
        "--scheduler",
        "threads",
        "-q",
    ]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "sklearn: val_loss" in out
    assert "val_auc 0." in out
    assert f"run directory: {tmp_path / 'run'}" in out
    missing = [
        "workflow",
        "--files",
        files,
        "--labels",
        "1,0,1,0",
        "--model",
        str(tmp_path / "missing.py"),
        "-q",
    ]
    assert main(missing) == 2
    assert "model file" in capsys.readouterr().err


@pytest.mark.gpu
def test_torch_uses_the_gpu_when_present(data: list[Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (the CPU path is tested above)")
    run = train(
        data, MODELS / "torch_model.py", PARAMS, labels=[1, 0, 1, 0], out=tmp_path / "run", client="threads"
    )
    assert run.metrics["final"]["device"] == "cuda"
    assert run.metrics["final"]["val_auc"] > WORKING_AUC


def test_a_full_disk_under_out_leaves_no_run_that_looks_complete(data: list[Path], tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from mlaas4hep_dask.service.sandbox import sandbox_of

    bwrap = shutil.which("bwrap")
    if bwrap is None or (why := sandbox_of().unavailable()) is not None:
        pytest.skip(
            f"a small filesystem to fill needs bubblewrap's mount namespaces: {why if bwrap else 'no bwrap'}"
        )
    files = ",".join(map(str, data))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**PARAMS, "epochs": 1}))
    train_cmd = [
        sys.executable, "-m", "mlaas4hep_dask.cli._main", "train", "--files", files, "--labels", "1,0,1,0",
        "--model", str(MODELS / "sklearn_model.py"), "--params", str(params), "--out", "/out/run",
        "--cluster", "threads", "-q",
    ]  # fmt: skip
    script = " ".join(f"'{a}'" for a in train_cmd) + "; echo rc=$?; ls /out/run"
    # 120 kB: enough for the specs, model.py and run.json written first, not for the plots
    cmd = [
        bwrap,
        "--dev-bind",
        "/",
        "/",
        "--size",
        str(120_000),
        "--tmpfs",
        "/out",
        "--",
        "bash",
        "-c",
        script,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    errors = [line for line in out.stderr.splitlines() if line.startswith("mlaas4hep: error")]
    assert errors == [
        "mlaas4hep: error: cannot write the run directory '/out/run': No space left on device"
    ], out.stdout + out.stderr
    assert "rc=2" in out.stdout
    left = set(out.stdout.split("rc=2", 1)[1].split())
    assert "bundle.json" not in left
    assert "metrics.json" not in left
    assert "specs.json" in left  # what was written before the disk filled stays
