"""Sample lists: input files grouped into samples with a label and a cross-section each.

A physicist trains on several Monte Carlo samples whose events must count as
``xsec * lumi / sum of generator weights``.  A sample list (YAML or JSON, in the spirit of
coffea's filesets) says so; it can stand wherever ``files.txt`` can::

    lumi: 59.7                      # so that xsec * lumi is a number of events (pb and 1/pb)
    samples:
      ttH:
        files: [data/ttH_0.root, data/ttH_1.root]
        label: 1
        xsec: 0.5071
        sum_weights_branch: genWeight   # summed over every entry of the sample's files
      ttbar:
        files: [data/ttbar_0.root]
        label: 0
        xsec: 831.76
        sum_weights: 1.2e7              # or given (from the production's bookkeeping)

Every event of sample ``s`` then weighs ``w * xsec_s * lumi / sum_weights_s``, with ``w``
its ``weight_branch`` (1 without one).  Without ``sum_weights`` or ``sum_weights_branch``
the sum is of the ``weight_branch`` over the sample's entries (its number of entries
without one).  Negative weights (NLO generators) are summed as they are.  The labels come
from the samples: no ``labels.txt`` is needed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlaas4hep_dask.errors import ConfigError

__all__ = ["Sample", "Samples", "is_sample_list", "load_samples"]

_SUFFIXES = (".yaml", ".yml", ".json")
_KEYS = {"files", "label", "xsec", "sum_weights", "sum_weights_branch"}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample: its files, label, cross-section and how its weights sum."""

    name: str
    files: tuple[str, ...]
    label: float | None = None
    xsec: float | None = None
    sum_weights: float | None = None
    sum_weights_branch: str | None = None


@dataclasses.dataclass(frozen=True)
class Samples:
    """The samples of a sample list, in its order, and the luminosity."""

    samples: tuple[Sample, ...]
    lumi: float | None
    source: str

    @property
    def files(self) -> list[str]:
        """Every file, sample after sample."""
        return [f for s in self.samples for f in s.files]

    @property
    def of_file(self) -> list[Sample]:
        """The sample of each file, in :attr:`files` order."""
        return [s for s in self.samples for _ in s.files]

    @property
    def labels(self) -> list[float] | None:
        """One label per file, or ``None`` when the samples give none."""
        if all(s.label is None for s in self.samples):
            return None
        return [float(s.label) for s in self.of_file]  # type: ignore[arg-type]

    @property
    def scaled(self) -> bool:
        """Whether the samples have cross-sections (events then weigh ``xsec * lumi / sum``)."""
        return self.samples[0].xsec is not None


def is_sample_list(files: Any) -> bool:
    """Whether ``files`` names a sample list (a ``.yaml``, ``.yml`` or ``.json`` file)."""
    return isinstance(files, (str, Path)) and str(files).endswith(_SUFFIXES) and "," not in str(files)


def load_samples(path: str | Path) -> Samples:
    """Read and check a sample list; every error names the file and the sample.

    Raises
    ------
    ConfigError
        Malformed YAML/JSON, no samples, unknown keys, a sample without files, a label or a
        cross-section that is not a number, cross-sections on some samples only, or
        cross-sections without ``lumi``.
    """
    from mlaas4hep_dask.config._files import load_json, load_yaml_mapping

    where = f"sample list {str(path)!r}"
    data = (
        load_json(path, "sample list")
        if str(path).endswith(".json")
        else load_yaml_mapping(path, "sample list")
    )
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold an object with 'samples' (and 'lumi')")
    unknown = set(data) - {"samples", "lumi"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; the keys are 'samples' and 'lumi'")
    raw = data.get("samples")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: 'samples' must map sample names to their files, label and xsec")
    samples = tuple(_sample(f"{where}, sample {name!r}", str(name), entry) for name, entry in raw.items())
    lumi = data.get("lumi")
    with_xsec = [s.name for s in samples if s.xsec is not None]
    if with_xsec and len(with_xsec) != len(samples):
        missing = next(s.name for s in samples if s.xsec is None)
        raise ConfigError(
            f"{where}: sample {missing!r} has no 'xsec', but others have: give every sample one"
        )
    if with_xsec and not _positive(lumi):
        raise ConfigError(f"{where}: cross-sections need 'lumi', a positive number (got {lumi!r})")
    if lumi is not None and not _positive(lumi):
        raise ConfigError(f"{where}: 'lumi' must be a positive number, not {lumi!r}")
    labelled = [s.label is not None for s in samples]
    if any(labelled) and not all(labelled):
        raise ConfigError(
            f"{where}: sample {samples[labelled.index(False)].name!r} has no 'label', but others have"
        )
    return Samples(samples, None if lumi is None else float(lumi), str(path))


def _sample(where: str, name: str, entry: Any) -> Sample:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping with 'files' (and 'label', 'xsec', ...)")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; the keys are {sorted(_KEYS)}")
    files = entry.get("files")
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{where}: 'files' must be a non-empty list of paths or URLs")
    for key in ("label", "xsec", "sum_weights"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: {key!r} must be a number, not {value!r}")
    for key in ("xsec", "sum_weights"):
        if entry.get(key) is not None and not _positive(entry[key]):
            raise ConfigError(f"{where}: {key!r} must be positive, not {entry[key]!r}")
    branch = entry.get("sum_weights_branch")
    if branch is not None and not isinstance(branch, str):
        raise ConfigError(f"{where}: 'sum_weights_branch' must be a branch name, not {branch!r}")
    if branch is not None and entry.get("sum_weights") is not None:
        raise ConfigError(f"{where}: give 'sum_weights' or 'sum_weights_branch', not both")
    return Sample(name, tuple(files), entry.get("label"), entry.get("xsec"), entry.get("sum_weights"), branch)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
