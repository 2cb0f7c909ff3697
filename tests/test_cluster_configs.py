"""The deployment configurations in cluster/: built and validated by the tools that consume them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask_jobqueue  # noqa: F401  (their config defaults are loaded before any snapshot of the config)
import distributed  # noqa: F401
import pytest
import tomllib
import yaml

from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.scale._cluster import connect, load_cluster_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
K8S_VERSION = "1.30.0"


@pytest.fixture
def clean_config() -> Iterator[None]:
    saved = copy.deepcopy(dask.config.config)  # load_cluster_config merges into the global config
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def test_the_htcondor_config_builds_a_worker_job_with_credentials(clean_config: None) -> None:
    from dask_jobqueue import HTCondorCluster

    data = load_cluster_config(CLUSTER / "htcondor.yaml")
    assert data["mlaas4hep"]["cluster"]["kind"] == "htcondor"
    assert dask.config.get("mlaas4hep.cluster.adapt") == {"minimum": 1, "maximum": 50}
    with dask.config.set({"jobqueue.htcondor.scheduler-options": {"port": 0, "dashboard_address": ":0"}}):
        cluster = HTCondorCluster()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env condor_submit"
    for expected in (
        "MY.DaskWorkerCores = 4",
        "MY.DaskWorkerMemory = 16000000000",
        "use_x509userproxy = true",
        "use_oauth_services = scitokens",
        "universe = container",
        "Executable = /bin/sh",
        "Queue",
    ):
        assert expected in lines, expected
    arguments = next(line for line in lines if line.startswith("Arguments = "))
    # the credentials are exported for the worker's XRootD reads, with the worker's own variables
    assert "export X509_USER_PROXY=${X509_USER_PROXY:-$_CONDOR_CREDS/x509up};" in arguments
    assert "export XRD_RUNFORKHANDLER=1;" in arguments
    assert "python3 -m distributed.cli.dask_worker tcp://" in arguments
    assert "--resources CPU=4" in arguments
    assert "--local-directory $_CONDOR_SCRATCH_DIR" in arguments


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _pod(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_the_kubernetes_manifests_are_valid() -> None:
    kinds: list[str] = []
    for path in sorted((CLUSTER / "kubernetes").glob("*.yaml")):
        for doc in _documents(path):
            kinds.append(doc["kind"])
            if doc["apiVersion"] != "kubernetes.dask.org/v1":
                _validate(doc)
                continue
            # the operator's resources embed core objects: validate those against the Kubernetes schema
            name, spec = doc["metadata"]["name"], doc["spec"]
            if doc["kind"] == "DaskCluster":
                _validate(_pod(spec["worker"]["spec"], f"{name}-worker"))
                _validate(_pod(spec["scheduler"]["spec"], f"{name}-scheduler"))
                service = {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name},
                    "spec": spec["scheduler"]["service"],
                }
                _validate(service)
                assert isinstance(spec["worker"]["replicas"], int)
            elif doc["kind"] == "DaskWorkerGroup":
                assert spec["cluster"] == "mlaas4hep"
                _validate(_pod(spec["worker"]["spec"], name))
                limits = spec["worker"]["spec"]["containers"][0]["resources"]["limits"]
                assert limits["nvidia.com/gpu"] == "1"
                assert "GPU=1" in spec["worker"]["spec"]["containers"][0]["args"]
            else:
                assert doc["kind"] == "DaskAutoscaler"
                assert spec["minimum"] <= spec["maximum"]
    assert sorted(set(kinds)) == sorted(
        {
            "DaskCluster",
            "DaskWorkerGroup",
            "DaskAutoscaler",
            "Deployment",
            "Service",
            "PersistentVolumeClaim",
            "NetworkPolicy",
        }
    )


def test_a_broken_manifest_would_be_caught() -> None:
    import kubernetes_validate

    doc = _documents(CLUSTER / "kubernetes" / "inference.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(doc)


def test_the_service_sits_behind_its_oauth2_proxy_sidecar() -> None:
    deployment = _documents(CLUSTER / "kubernetes" / "service.yaml")[0]
    service, _proxy = deployment["spec"]["template"]["spec"]["containers"]
    assert "--host=127.0.0.1" in service["args"]
    assert "--trusted-proxy=127.0.0.1/32" in service["args"]
    assert "ports" not in service  # only the proxy is reachable
    config = tomllib.loads((CLUSTER / "oauth2-proxy" / "oauth2-proxy.cfg").read_text())
    assert config["upstreams"] == ["http://127.0.0.1:8080/"]
    assert config["pass_user_headers"] is True
    assert config["pass_access_token"] is True
    assert config["skip_jwt_bearer_tokens"] is True
    assert config["provider"] == "oidc"


def test_the_kubernetes_target_names_its_missing_package(clean_config: None) -> None:
    load_cluster_config(CLUSTER / "kubernetes.yaml")
    assert dask.config.get("mlaas4hep.cluster.kind") == "kubernetes"
    try:
        import dask_kubernetes  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'mlaas4hep-dask\[kubernetes\]'"), connect(None):
            pass
    else:  # pragma: no cover - no Kubernetes API to talk to in CI
        pytest.skip("dask-kubernetes is installed: starting a KubeCluster needs a Kubernetes API")


def test_a_local_cluster_config_sets_workers_and_threads(clean_config: None, tmp_path: Path) -> None:
    config = tmp_path / "local.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mlaas4hep": {
                    "cluster": {
                        "kind": "local",
                        "workers": 2,
                        "threads": 2,
                        "memory": "1GB",
                        "direct-to-workers": False,
                    }
                }
            }
        )
    )
    load_cluster_config(config)
    with connect(None) as client:
        workers = client.scheduler_info()["workers"].values()
        assert [w["nthreads"] for w in workers] == [2, 2]
        assert {w["memory_limit"] for w in workers} == {10**9}
        assert client.direct_to_workers is False
        with connect(client.scheduler.address) as by_address:
            assert by_address.direct_to_workers is False
    assert yaml.safe_load((CLUSTER / "local.yaml").read_text())["mlaas4hep"]["cluster"]["kind"] == "local"


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [1, 2", "is not valid YAML"), ("- 1\n- 2\n", "must hold a mapping")],
)
def test_bad_cluster_configs_are_named(tmp_path: Path, text: str, message: str, clean_config: None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_cluster_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_cluster_config(tmp_path / "nope.yaml")


def test_the_dashboard_serves_its_pages_while_a_computation_runs() -> None:
    import time

    import httpx
    from distributed import Client

    from mlaas4hep_dask.scale._cluster import local_cluster

    with local_cluster(1) as cluster, Client(cluster) as client:
        running = client.submit(time.sleep, 5, pure=False)
        link = client.dashboard_link
        page = httpx.get(link, timeout=30, follow_redirects=True)
        assert page.status_code == 200, link
        assert "Bokeh" in page.text or "bokeh" in page.text  # the real page, not "install bokeh"
        workers = httpx.get(link.replace("/status", "/info/main/workers.html"), timeout=30)
        assert workers.status_code == 200
        assert next(iter(client.scheduler_info()["workers"])) in workers.text  # live content
        running.cancel()


def test_dashboard_address_pins_the_port(
    generated: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlaas4hep_dask.cli._main import main

    from ._servers import free_port

    port = free_port()
    args = ["specs", "--files", str(generated[0]), "--out", str(tmp_path / "s.json"), "--cluster", "local"]
    assert main([*args, "--workers", "1", "--dashboard-address", f"127.0.0.1:{port}"]) == 0
    assert f"Dask dashboard: http://127.0.0.1:{port}/status" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--dashboard-address"])  # a flag without its address: argparse's usage error
