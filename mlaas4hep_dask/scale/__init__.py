"""Where Dask runs: local schedulers, LocalCluster, HTCondor, Kubernetes, scheduler addresses; campaigns."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "Campaign",
    "CampaignRun",
    "CLUSTERS",
    "compute",
    "connect",
    "load_campaign",
    "load_cluster_config",
    "local_cluster",
    "run_campaign",
    "WORKER_ENVIRON",
]

_WHERE = {
    "Campaign": "_campaign",
    "CampaignRun": "_campaign",
    "CLUSTERS": "_cluster",
    "compute": "_cluster",
    "connect": "_cluster",
    "load_campaign": "_campaign",
    "load_cluster_config": "_cluster",
    "local_cluster": "_cluster",
    "run_campaign": "_campaign",
    "WORKER_ENVIRON": "_cluster",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
