"""The specs pass: one Dask reduction over every partition, saved as ``specs.json``.

Specs describe the data *after* preprocessing: per file, its tree and events; per branch,
min/max/mean/std over all finite values (and ``nonfinite``, the NaN/inf count), and for
jagged branches the maximum list length ``jdim`` and the mean length.  They fix the feature
order used by every later stage: flat branches, then each jagged branch expanded to
``jdim`` slots ``name[0] ... name[jdim-1]``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlaas4hep_dask._atomic import replacing
from mlaas4hep_dask._compute import compute
from mlaas4hep_dask.config._files import load_json
from mlaas4hep_dask.config._params import Params, load_params
from mlaas4hep_dask.errors import ConfigError, SpecsError
from mlaas4hep_dask.handle._preprocess import Plan, Preproc, load_preproc, make_plan
from mlaas4hep_dask.handle._stats import BranchStats, PartitionStats, StatsOfPartition, combine
from mlaas4hep_dask.read._dataset import Dataset, open_dataset

__all__ = ["BranchSpec", "FileSpec", "Specs", "build_specs_graph", "compute_specs"]

VERSION = 1
_FAN_IN = 8


@dataclasses.dataclass(frozen=True)
class BranchSpec:
    """Statistics of one branch over all files (finite values only)."""

    kind: str
    dtype: str
    min: float | int | None
    max: float | int | None
    mean: float | None
    std: float | None
    nonfinite: int = 0
    jdim: int | None = None
    mean_len: float | None = None

    @property
    def constant(self) -> bool:
        """One value in every event (or no value at all): a feature that carries nothing."""
        return self.min is None or self.min == self.max

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.kind == "flat":
            del out["jdim"], out["mean_len"]
        return out


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One input file: path as given, tree, events after preprocessing, entries in the tree."""

    path: str
    tree: str
    nevents: int
    entries: int | None = None


@dataclasses.dataclass(frozen=True)
class Specs:
    """What the data look like; saved as ``specs.json`` and used by every later stage.

    Examples
    --------
    >>> specs = compute_specs("files.txt", "params.json")  # doctest: +SKIP
    >>> specs.idim, specs.features[:3]  # doctest: +SKIP
    (123, ['nJets', 'MET', 'jet_pt[0]'])
    >>> specs.save("specs.json")  # doctest: +SKIP
    """

    files: tuple[FileSpec, ...]
    branches: Mapping[str, BranchSpec]
    skipped: Mapping[str, str] = dataclasses.field(default_factory=dict)
    preproc: Mapping[str, Any] | None = None
    version: int = VERSION

    @property
    def flat(self) -> list[str]:
        """Flat branches, in feature order."""
        return [n for n, b in self.branches.items() if b.kind == "flat"]

    @property
    def jagged(self) -> list[str]:
        """Jagged branches, in feature order."""
        return [n for n, b in self.branches.items() if b.kind == "jagged"]

    @property
    def features(self) -> list[str]:
        """Feature names: flat branches, then ``name[i]`` for each jagged slot."""
        out = self.flat
        for name in self.jagged:
            out.extend(f"{name}[{i}]" for i in range(self.branches[name].jdim or 0))
        return out

    @property
    def idim(self) -> int:
        """Input dimension: the number of features."""
        return len(self.features)

    @property
    def from_original_tool(self) -> bool:
        """Whether these specs were read from the original MLaaS4HEP format (no trees, no preproc)."""
        return not self.files or not all(f.tree for f in self.files)

    @property
    def constant(self) -> list[str]:
        """Branches with one value in every event of every file (see :attr:`BranchSpec.constant`)."""
        return [n for n, b in self.branches.items() if b.constant and not self.from_original_tool]

    @property
    def nevents(self) -> int:
        """Events over all files, after preprocessing."""
        return sum(f.nevents for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON layout (see docs/guide/specs.md)."""
        out: dict[str, Any] = {
            "version": self.version,
            "files": [dataclasses.asdict(f) for f in self.files],
            "branches": {n: b.to_dict() for n, b in self.branches.items()},
            "skipped": dict(self.skipped),
            "features": self.features,
            "idim": self.idim,
        }
        if self.preproc is not None:
            out["preproc"] = self.preproc
        return out

    def save(self, path: str | Path) -> None:
        """Write ``specs.json`` (atomically: a crash never leaves half a file)."""
        with replacing(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "specs") -> Specs:
        """Read our layout, or the original MLaaS4HEP one (``jdim``, ``minv``, ``maxv``...)."""
        try:
            if "branches" in data:
                return cls(
                    files=tuple(FileSpec(**f) for f in data["files"]),
                    branches={n: BranchSpec(**b) for n, b in data["branches"].items()},
                    skipped=dict(data.get("skipped", {})),
                    preproc=data.get("preproc"),
                    version=int(data.get("version", VERSION)),
                )
            if "minv" in data and "maxv" in data:
                return _from_original(data)
        except (KeyError, TypeError, ValueError) as err:
            raise SpecsError(f"{source} is not a valid specs file: {err!r}") from None
        raise SpecsError(f"{source} is not a specs file: it has neither 'branches' nor 'minv'/'maxv'")

    @classmethod
    def load(cls, path: str | Path) -> Specs:
        """Read a specs file written by :meth:`save` or by the original tool."""
        try:
            data = load_json(path, "specs")
        except ConfigError as err:
            raise SpecsError(str(err)) from None
        return cls.from_dict(data, source=f"specs file {str(path)!r}")


def _from_original(data: Mapping[str, Any]) -> Specs:
    """Convert the original tool's specs (no dtypes, means or per-file trees) to ours."""
    jkeys = list(data.get("jkeys", []))
    fkeys = list(data.get("fkeys", [k for k in data["minv"] if k not in jkeys]))
    events = dict(data.get("events", {}))
    events.pop("total", None)
    branches: dict[str, BranchSpec] = {}
    for name in [*fkeys, *jkeys]:
        jagged = name in jkeys
        branches[name] = BranchSpec(
            kind="jagged" if jagged else "flat",
            dtype="float64",
            min=data["minv"][name],
            max=data["maxv"][name],
            mean=None,
            std=None,
            jdim=int(data.get("jdim", {}).get(name, 0)) if jagged else None,
        )
    files = tuple(FileSpec(path=p, tree="", nevents=int(n)) for p, n in events.items())
    return Specs(files=files, branches=branches)


def _branch_spec(kind: str, dtype: str, stats: BranchStats) -> BranchSpec:
    jagged = kind == "jagged"
    return BranchSpec(
        kind=kind,
        dtype=dtype,
        min=stats.min,
        max=stats.max,
        mean=stats.mean if stats.count else None,
        std=stats.std,
        nonfinite=stats.nonfinite,
        jdim=stats.jdim if jagged else None,
        mean_len=(stats.items / stats.lists if stats.lists else 0.0) if jagged else None,
    )


class _DescribePartition:
    """Preprocess one partition, count its cut flow, and reduce it to statistics."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.stats = StatsOfPartition({name: b.kind for name, b in plan.branches.items()})

    def __call__(self, partition: Any, file_index: int, start: int) -> PartitionStats:
        selection = self.plan.select(partition)
        stats = self.stats(selection.record, file_index)
        stats.cutflow = selection.cutflow if self.plan.cuts else []
        return stats


def build_specs_graph(dataset: Dataset, plan: Plan | None = None) -> Any:
    """Return one ``dask.delayed`` object computing the :class:`PartitionStats` of everything.

    Each partition is preprocessed and reduced to its statistics in the task that reads it;
    the statistics are then combined in a tree of fan-in 8, so the graph has about
    ``2.15 times`` as many tasks as partitions, whatever the number of branches.

    Parameters
    ----------
    dataset
        The opened inputs.
    plan
        The preprocessing plan; by default the dataset's selected branches, no cuts.
    """
    import dask

    plan = make_plan(None, dataset.available, dataset.branches) if plan is None else plan
    dataset = dataset.aligned_to(plan.columns)
    reduce = dask.delayed(combine, pure=True)
    parts = dataset.map_partitions(_DescribePartition(plan), plan.columns)
    while len(parts) > 1:
        parts = [reduce(*parts[i : i + _FAN_IN]) for i in range(0, len(parts), _FAN_IN)]
    return parts[0]


def _cutflow_section(plan: Plan, stats: PartitionStats) -> dict[str, Any] | None:
    if plan.preproc is None:
        return None
    steps = [{"step": "read", "events": stats.cutflow[0] if stats.cutflow else None}]
    steps += [
        {"step": cut.key, "cut": cut.label, "events": n}
        for cut, n in zip(plan.cuts, stats.cutflow[1:], strict=True)
    ]
    return {"cutflow": steps, "definition": dict(plan.preproc.source)}


def specs_from_stats(dataset: Dataset, stats: PartitionStats, plan: Plan | None = None) -> Specs:
    """Turn the reduced statistics into :class:`Specs`."""
    plan = make_plan(None, dataset.available, dataset.branches) if plan is None else plan
    files = tuple(
        FileSpec(path=f.path, tree=f.tree, nevents=stats.events.get(i, 0), entries=f.entries)
        for i, f in enumerate(dataset.files)
    )
    branches = {
        name: _branch_spec(b.kind, b.dtype, stats.branches[name]) for name, b in plan.branches.items()
    }
    return Specs(
        files=files, branches=branches, skipped=dict(dataset.skipped), preproc=_cutflow_section(plan, stats)
    )


def compute_specs(
    files: str | Path | Sequence[str | Path] | Dataset,
    params: Params | Mapping[str, Any] | str | Path | None = None,
    preproc: Preproc | Mapping[str, Any] | str | Path | None = None,
    client: Any = None,
    progress: bool = False,
) -> Specs:
    """Compute the specs of ROOT inputs with one Dask graph.

    Parameters
    ----------
    files
        A ``files.txt`` path, a comma-separated string, or a list of paths/URLs.
    params
        ``params.json`` path, dict, :class:`Params`, or ``None`` for defaults.
    preproc
        ``preproc.json`` path, dict or :class:`~mlaas4hep_dask.handle.Preproc`; specs then
        describe the data after preprocessing and report the cut flow.
    client
        A ``distributed.Client``, a scheduler name (``"threads"``, ``"processes"``,
        ``"sync"``), or ``None`` for Dask's current default.
    progress
        Show a progress bar.

    Returns
    -------
    Specs

    Examples
    --------
    >>> specs = compute_specs(["sig.root", "bkg.root"], {"tree": "events"})  # doctest: +SKIP
    >>> specs.branches["nJets"].max  # doctest: +SKIP
    14
    """
    recipe = load_preproc(preproc)  # a malformed preproc.json fails before any file is opened
    dataset = open_dataset(files, load_params(params))
    plan = make_plan(recipe, dataset.available, dataset.branches)
    (stats,) = compute([build_specs_graph(dataset, plan)], client, progress=progress)
    specs = specs_from_stats(dataset, stats, plan)
    if not dataset.params.selected_branches:
        _warn_if_many(specs)
    return specs


_MANY_BRANCHES = 100
_NOT_FOR_TRAINING = {
    "generator truth": ("Gen", "LHE", "Generator_", "genWeight"),
    "trigger bits": ("HLT_", "L1_"),
}


def _warn_if_many(specs: Specs) -> None:
    """A tree of hundreds of branches, none selected: say what that makes the model's input."""
    if len(specs.branches) <= _MANY_BRANCHES:
        return
    among = [
        f"{what} ({'/'.join(p + '*' for p in prefixes[:2])}: {n})"
        for what, prefixes in _NOT_FOR_TRAINING.items()
        if (n := sum(name.startswith(prefixes) for name in specs.branches))
    ]
    warnings.warn(
        f"no 'selected_branches': all {len(specs.branches)} branches of the tree are features, "
        f"input dimension {specs.idim} ({len(specs.jagged)} jagged branches padded to their longest "
        f"lists; {len(specs.constant)} constant)"
        + (f", {' and '.join(among)} among them" if among else "")
        + "; list the ones the model should see in 'selected_branches' (wildcards allowed)",
        UserWarning,
        stacklevel=3,
    )
