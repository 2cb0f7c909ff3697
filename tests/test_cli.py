from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas4hep_dask.cli._main import main

ROOT = Path(__file__).resolve().parent.parent


def test_generate_then_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["generate", "--out", str(tmp_path / "data"), "--events", "500", "--files", "2", "--seed", "3"])
        == 0
    )
    files = (tmp_path / "data" / "files.txt").read_text().split()
    assert len(files) == 4
    assert (tmp_path / "data" / "labels.txt").read_text().split() == ["1", "0", "1", "0"]
    out = tmp_path / "specs.json"
    code = main(
        [
            "specs",
            "--files",
            str(tmp_path / "data" / "files.txt"),
            "--out",
            str(out),
            "--scheduler",
            "threads",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "2000 events" in printed
    assert "jetPt" in printed
    specs = json.loads(out.read_text())
    assert [f["nevents"] for f in specs["files"]] == [500] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--files", "/nonexistent/x.root"], "input file '/nonexistent/x.root' does not exist"),
        (["--files", "nofiles.txt"], "files list 'nofiles.txt' does not exist"),
        (["--files", "GEN", "--params", "bad.json"], "bad.json' is not valid JSON"),
        (["--files", "GEN", "--scheduler", "warp-drive"], "unknown cluster 'warp-drive'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    generated: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "bad.json").write_text("{oops")
    os.chdir(tmp_path)
    args = [str(generated[0]) if a == "GEN" else a for a in args]
    assert main(["specs", *args, "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mlaas4hep: error: ")
    assert message in err
    assert "Traceback" not in err


def test_console_script_runs(generated: list[Path], tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mlaas4hep"
    result = subprocess.run(
        [str(exe), "specs", "--files", str(generated[0]), "--out", str(tmp_path / "s.json"),
         "--scheduler", "sync", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert json.loads((tmp_path / "s.json").read_text())["idim"] > 10
    bad = subprocess.run(
        [str(exe), "specs", "--files", "/nope.root"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "mlaas4hep: error: input file '/nope.root' does not exist"


def test_specs_with_preproc_prints_the_cut_flow(
    generated: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "specs.json"
    args = [
        "specs",
        "--files",
        ",".join(map(str, generated)),
        "--preproc",
        str(ROOT / "configs" / "preproc.json"),
    ]
    assert main([*args, "--out", str(out), "--scheduler", "sync"]) == 0
    printed = capsys.readouterr().out
    assert "Cut flow (preproc.json)" in printed
    assert "flat_cut.nLeptons.cut" in printed
    assert "log_partonE<8.5 (any)" in printed
    saved = json.loads(out.read_text())
    assert saved["preproc"]["cutflow"][0] == {"step": "read", "events": 6000}
    assert "log_partonE" in saved["branches"]


def test_bad_preproc_is_one_line(
    generated: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "preproc.json"
    bad.write_text(json.dumps({"new_branch": {"x": {"def": "log(partonEE)", "type": "jagged"}}}))
    assert main(["specs", "--files", str(generated[0]), "--preproc", str(bad), "--scheduler", "sync"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "mlaas4hep: error: preproc new_branch 'x' def: unknown branch 'partonEE'; nearest: 'partonE'"
    )
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("0.0.0.0", "--host '0.0.0.0' is not one"),
        ("192.0.2.1", "--host '192.0.2.1' is not one"),
        ("no-such-host.invalid", "--host 'no-such-host.invalid': no such host"),
    ],
)
def test_insecure_dev_service_refuses_a_host_that_is_not_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, message: str
) -> None:
    args = ["service", "--insecure-dev", "--host", host, "--workdir", str(tmp_path / "work")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlaas4hep: error: ")
    assert message in err
    assert "Traceback" not in err


def test_the_service_refuses_to_run_jobs_unsandboxed_unless_told(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on this PATH
    args = [
        sys.executable,
        "-m",
        "mlaas4hep_dask.cli._main",
        "service",
        "--insecure-dev",
        "--workdir",
        str(tmp_path / "w"),
    ]
    refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "jobs cannot be sandboxed here: bubblewrap (bwrap) is not installed" in refused.stderr
    assert "--unsandboxed-jobs" in refused.stderr
    assert not (tmp_path / "w").exists()  # refused before creating anything


def test_the_specs_table_flags_constant_branches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import uproot

    path = tmp_path / "constant.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {"pt": np.float32, "btag": np.float32}).extend(
            {"pt": np.linspace(1, 50, 400, dtype=np.float32), "btag": np.full(400, -1.0, np.float32)}
        )
    assert (
        main(["specs", "--files", str(path), "--out", str(tmp_path / "s.json"), "--scheduler", "sync"]) == 0
    )
    printed = capsys.readouterr().out
    assert re.search(r"btag .* constant", printed)
    assert not re.search(r"pt .* constant", printed)
    assert "1 constant branches (one value in every event" in printed
    assert "'exclude_branches'): btag" in printed


_NOISE = (
    "Nanny", "Scheduler at", "Register worker", "jupyter-server-proxy",
    "cpu_feature_guard", "absl", "oneDNN", "port.cc", "To enable the following instructions",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "workers", "noise", "library_line"),
    [
        # TensorFlow's C++ notes (oneDNN's through absl, past TF_CPP_MIN_LOG_LEVEL), Dask's
        ("keras_model.py", "1", _NOISE, "oneDNN custom operations are on"),
        ("xgboost_model.py", "2", ("got rank",), "got rank 1"),  # XGBoost's tracker, from C++
    ],
    ids=["keras", "xgboost"],
)
def test_only_our_own_lines_at_the_default_verbosity(
    generated: list[Path], tmp_path: Path, model: str, workers: str, noise: tuple[str, ...], library_line: str
) -> None:
    exe = Path(sys.executable).parent / "mlaas4hep"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochs": 2, "chunk_size": 3000}))
    cmd = [
        str(exe), "train", "--files", ",".join(map(str, generated)), "--labels", "1,0",
        "--model", str(ROOT / "configs" / "models" / model), "--params", str(params),
        "--cluster", "local", "--workers", workers, "--log-progress", "5", "-q",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MLAAS4HEP_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    # oneDNN on, as TensorFlow has it by default on Intel CPUs with AVX-512 VNNI or AMX: its note
    # comes through absl whatever TF_CPP_MIN_LOG_LEVEL says, so this test fails on any CPU without
    # the filter, not only on those
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    # both runs at once (most of each is starting Python, TensorFlow and a cluster, which overlap),
    # their output in files: a full pipe would stall one run until the other ends
    runs = []
    for out, e in (("quiet", env), ("loud", {**env, "MLAAS4HEP_VERBOSE": "1"})):
        with open(tmp_path / f"{out}.log", "w") as log:  # the run writes through its own descriptor
            runs.append(subprocess.Popen([*cmd, "--out", str(tmp_path / out)], stdout=log, stderr=log, env=e))
    for run in runs:
        run.wait(timeout=600)
    printed, loud = ((tmp_path / f"{out}.log").read_text() for out in ("quiet", "loud"))
    assert runs[0].returncode == 0, printed
    assert not [line for line in noise if line in printed]
    assert "run directory written" in printed  # ours are there
    assert runs[1].returncode == 0, loud
    assert library_line in loud  # verbose lets the libraries speak: the line exists
