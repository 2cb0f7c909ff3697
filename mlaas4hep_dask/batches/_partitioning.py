"""The loader's partitions (their size) and the counting pass's sums of weights per sample."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.read._dataset import Dataset

__all__ = ["SumOf", "partition_step", "sample_scales"]


_MIN_STEP = 20_000


class SumOf:
    """Sum of one branch over a partition (for the samples' sums of weights)."""

    def __init__(self, branch: str) -> None:
        self.branch = branch

    def __call__(self, partition: Any, file_index: int, start: int) -> float:
        import awkward as ak

        return float(np.sum(ak.to_numpy(partition[self.branch]), dtype=np.float64))


def partition_step(chunk_size: int, nfiles: int) -> int:
    """Entries per loader partition.

    A chunk takes about ``chunk_size / nfiles`` events of every file, and each file's current
    partition stays in memory until consumed; partitions of twice that keep memory near two
    chunks whatever the number of files (but not below 20 000 entries, where task overhead
    would dominate).
    """
    if chunk_size == -1:
        return -1
    return min(chunk_size, max(2 * math.ceil(chunk_size / nfiles), _MIN_STEP))


def sample_scales(
    dataset: Dataset, params: Params, each_partition: Callable[[Any, list[str]], list[Any]]
) -> tuple[float, ...] | None:
    """Each file's weight factor ``xsec * lumi / (its sample's sum of weights)``, or ``None``
    when the samples are not to be scaled.  Sums that the samples do not give are counted by
    ``each_partition(call, columns)``, which runs ``call`` on every partition."""
    samples = dataset.samples
    if samples is None or not samples.scaled:
        return None
    of_file = samples.of_file
    totals: dict[str, float] = {s.name: float(s.sum_weights) for s in samples.samples if s.sum_weights}
    by_branch: dict[str | None, list[str]] = {}
    for s in samples.samples:
        if s.name not in totals:
            by_branch.setdefault(s.sum_weights_branch or params.weight_branch, []).append(s.name)
    partitions = dataset.partitions
    for branch, names in by_branch.items():
        if branch is None:  # no weights at all: the sample's number of events
            values = [float(b - a) for _, a, b in partitions]
        else:
            if branch not in dataset.available:
                raise ConfigError(
                    f"{samples.source}: the sum of weights of sample {names[0]!r} needs branch "
                    f"{branch!r}, which the tree does not have"
                )
            values = [float(v) for v in each_partition(SumOf(branch), [branch])]
        for (f, _, _), value in zip(partitions, values, strict=True):
            if of_file[f].name in names:
                totals[of_file[f].name] = totals.get(of_file[f].name, 0.0) + value
    lumi = float(samples.lumi or 0.0)
    for s in samples.samples:
        if totals.get(s.name, 0.0) <= 0:
            raise ConfigError(
                f"{samples.source}: the weights of sample {s.name!r} sum to {totals.get(s.name, 0.0):g}: "
                "its events cannot be scaled to xsec * lumi; give 'sum_weights'"
            )
    return tuple(float(s.xsec) * lumi / totals[s.name] for s in of_file)  # type: ignore[arg-type]
