"""Campaigns: several trainings (a list, or a grid of models, params and preproc variants) on one cluster.

``campaign.yaml``::

    out: campaigns/tth                 # paths are relative to this file
    files: ../demo-output/data/files.txt
    labels: ../demo-output/data/labels.txt
    params: params.json                # the base params (a file or a mapping)
    preproc: preproc.json              # the base preproc (a file, a mapping, or null)
    runs:                              # explicit runs: their keys override the base
      - {name: torch, model: models/torch_model.py}
      - {name: xgboost, model: models/xgboost_model.py, params: {epochs: 1}}
    grid:                              # and/or every combination of these
      model: [models/sklearn_model.py]
      params.epochs: [2, 5]
      preproc: [preproc.json, null]

Each run writes its run directory under ``out``; the campaign writes ``summary.csv``,
``summary.json`` and ``roc.png`` (the test ROC curves of every binary run). Runs that read
the same data with the same params and preproc share one specs pass.  A failing run is
recorded with its error and the others go on.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlaas4hep_dask.config._files import load_json, load_yaml_mapping
from mlaas4hep_dask.config._params import load_params
from mlaas4hep_dask.errors import ConfigError, MLaaSError

__all__ = ["Campaign", "CampaignRun", "load_campaign", "run_campaign"]

_KEYS = {"out", "files", "labels", "params", "preproc", "runs", "grid"}
_RUN_KEYS = {"name", "model", "params", "preproc", "labels"}
#: params that only steer training: runs differing only in these share their specs pass
_TRAINING_ONLY = {
    "epochs",
    "batch_size",
    "learning_rate",
    "shuffle",
    "verbose",
    "max_fit_events",
    "prefetch",
    "hist",
    "trainers",
}


@dataclasses.dataclass(frozen=True)
class CampaignRun:
    """One training of a campaign."""

    name: str
    model: Path
    params: dict[str, Any]
    preproc: dict[str, Any] | None
    labels: Any


@dataclasses.dataclass(frozen=True)
class Campaign:
    """Where the inputs are, where the runs go, and the runs."""

    files: Any
    out: Path
    runs: tuple[CampaignRun, ...]


def _path(base: Path, value: Any) -> Any:
    return str(base / value) if isinstance(value, str) and "://" not in value and "," not in value else value


def _mapping(base: Path, value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    data = load_json(base / str(value), what)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {value!r} must hold a JSON object")
    return data


def _short(value: Any) -> str:
    """A name part for a grid value: a file's stem, ``none``, a mapping's short digest, or the value."""
    if isinstance(value, Mapping):
        return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]
    if value is None:
        return "none"
    text = Path(value).stem if isinstance(value, str) and value.endswith((".py", ".json")) else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def load_campaign(path: str | Path, out: str | Path | None = None) -> Campaign:
    """Read ``campaign.yaml``; every mistake is a :class:`ConfigError` naming the file and key."""
    path = Path(path)
    data = load_yaml_mapping(path, "campaign")
    where = f"campaign file {str(path)!r}"
    if unknown := set(data) - _KEYS:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    if "files" not in data:
        raise ConfigError(f"{where}: 'files' is required")
    base = path.resolve().parent
    base_params = _mapping(base, data.get("params"), "params") or {}
    base_preproc = _mapping(base, data.get("preproc"), "preproc")
    runs: list[CampaignRun] = []

    def add(name: str, spec: Mapping[str, Any], context: str) -> None:
        if unknown := set(spec) - _RUN_KEYS:
            raise ConfigError(
                f"{where}: {context}: unknown keys {sorted(unknown)} (known: {sorted(_RUN_KEYS)})"
            )
        if "model" not in spec:
            raise ConfigError(f"{where}: {context}: 'model' is required")
        params = copy.deepcopy(base_params) | (spec.get("params") or {})
        try:
            load_params(params)
        except MLaaSError as err:
            raise ConfigError(f"{where}: {context}: {err}") from None
        preproc = _mapping(base, spec["preproc"], "preproc") if "preproc" in spec else base_preproc
        labels = _path(base, spec.get("labels", data.get("labels")))
        model = base / str(spec["model"])
        if not model.is_file():
            raise ConfigError(f"{where}: {context}: model file {str(spec['model'])!r} does not exist")
        runs.append(CampaignRun(name, model, params, preproc, labels))

    for i, listed in enumerate(data.get("runs") or []):
        if not isinstance(listed, Mapping):
            raise ConfigError(f"{where}: runs[{i}] must be a mapping")
        add(str(listed.get("name") or _short(listed.get("model", f"run{i}"))), listed, f"runs[{i}]")
    grid = data.get("grid") or {}
    if not isinstance(grid, Mapping) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(
            f"{where}: 'grid' maps keys (model, preproc, labels, params.NAME) to non-empty lists"
        )
    for values in itertools.product(*grid.values()):
        spec: dict[str, Any] = {"params": {}}
        for key, value in zip(grid, values, strict=True):
            if key.startswith("params."):
                spec["params"][key.removeprefix("params.")] = value
            elif key in ("model", "preproc", "labels"):
                spec[key] = value
            else:
                raise ConfigError(f"{where}: grid key {key!r}: use model, preproc, labels or params.NAME")
        name = "-".join(
            f"{k.removeprefix('params.')}={_short(v)}" if k != "model" else _short(v)
            for k, v in zip(grid, values, strict=True)
        )
        add(name, spec, f"grid {name}")
    if not runs:
        raise ConfigError(f"{where}: no runs: give 'runs' and/or 'grid'")
    names = [r.name for r in runs]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}: run names must differ; repeated: {duplicates}")
    target = Path(out) if out else base / str(data.get("out", f"campaigns/{path.stem}"))
    return Campaign(_path(base, data["files"]), target, tuple(runs))


def _specs_key(run: CampaignRun) -> str:
    params = {k: v for k, v in run.params.items() if k not in _TRAINING_ONLY}
    return json.dumps([params, run.preproc], sort_keys=True, default=str)


def run_campaign(
    campaign: Campaign, client: Any = None, log_every: float | None = None, store: Any = None
) -> list[dict[str, Any]]:
    """Train every run of ``campaign`` on ``client``; write and return the summary rows.

    With a ``store`` (see :mod:`mlaas4hep_dask.prepared`), the runs that share inputs and
    preprocessing train from one prepared dataset: the ROOT files are read by the first.
    """
    import numpy as np

    from mlaas4hep_dask.bundle._plots import write_roc
    from mlaas4hep_dask.handle._specs import compute_specs
    from mlaas4hep_dask.train import train

    campaign.out.mkdir(parents=True, exist_ok=True)
    specs_cache: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    curves = []
    for run in campaign.runs:
        start = time.perf_counter()
        row: dict[str, Any] = {"name": run.name, "model": run.model.name}
        try:
            key = _specs_key(run)
            if key not in specs_cache and store is None:
                params = load_params(run.params)
                specs_cache[key] = compute_specs(campaign.files, params, run.preproc, client=client)
            result = train(
                campaign.files, run.model, run.params, run.labels, run.preproc, specs=specs_cache.get(key),
                out=campaign.out / run.name, client=client, log_every=log_every, store=store,
            )  # fmt: skip
        except MLaaSError as err:
            row |= {"state": "failed", "error": str(err), "seconds": time.perf_counter() - start}
            rows.append(row)
            continue
        final = result.metrics["final"]
        row |= {"state": "succeeded", "framework": result.framework, "seconds": time.perf_counter() - start}
        row |= {k: v for k, v in final.items() if k.startswith(("val_", "test_")) or k == "events_trained"}
        row["run_dir"] = str(result.path)
        rows.append(row)
        scores = result.path / "test_scores.npz"
        if result.metrics["task"]["kind"] == "binary" and scores.is_file():
            with np.load(scores) as z:
                curves.append((run.name, z["y"], z["score"], z.get("w")))
    _write_summary(campaign.out, rows)
    if curves:
        write_roc(campaign.out / "roc.png", curves, "test ROC of the campaign's runs")
    return rows


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(columns)]
    for row in rows:
        lines.append(
            ",".join(
                json.dumps(row[c]) if isinstance(row.get(c), str) else str(row.get(c, "")) for c in columns
            )
        )
    (out / "summary.csv").write_text("\n".join(lines) + "\n")
