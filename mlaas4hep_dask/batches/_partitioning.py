"""The loader's partitions (their size) and the counting pass's sums of weights per sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.handle._tensorize import Tensorize, split_codes
from mlaas4hep_dask.handle._weights import scale_of
from mlaas4hep_dask.read._dataset import Dataset

if TYPE_CHECKING:
    from mlaas4hep_dask.batches._loader import BatchLoader

__all__ = ["SumOf", "count_events", "sample_scales"]


class SumOf:
    """Sum of one branch over a partition (for the samples' sums of weights)."""

    def __init__(self, branch: str) -> None:
        self.branch = branch

    def __call__(self, partition: Any, file_index: int, start: int) -> float:
        import awkward as ak

        return float(np.sum(ak.to_numpy(partition[self.branch]), dtype=np.float64))


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


def count_events(loader: BatchLoader) -> list[int]:
    """Events of the loader's split in each partition; the training weights' factors are set
    on the loader in the same pass (its ``_scale``)."""
    p, t = loader.params, loader._tensorize
    from_codes = not (loader.plan.cuts or loader.layout.drop_nonfinite)  # no data needed
    summing = loader._needs_scale()  # and the weights summed per class, in the same pass
    if summing and not (from_codes and p.weight_branch is None and p.label_branch is None):
        summer = Tensorize(
            loader.plan,
            loader.layout,
            p,
            loader.split,
            loader.labels,
            summing=True,
            file_scale=loader.file_scale,
        )
        extras = [b for b in (p.label_branch, p.weight_branch) if b]
        parts = loader._pass(summer, (*loader.plan.cut_columns, *extras) if summer.reads_little else None)
        loader._scale = scale_of(parts, p, summer.classes)
        return [int(n.sum()) for _, n, _ in parts]
    if not from_codes:
        counter = Tensorize(loader.plan, loader.layout, p, loader.split, loader.labels, count_only=True)
        columns = None if loader.layout.drop_nonfinite else loader.plan.cut_columns
        return [int(n) for n in loader._pass(counter, columns)]
    partitions = loader.dataset.partitions
    codes = (split_codes(f, np.arange(a, b), p.seed, p.split, p.test_fraction) for f, a, b in partitions)
    counts = [int(np.count_nonzero(c == t.code)) for c in codes]
    if summing:  # one label per file, no weight branch: every event weighs its file's factor
        labels = t.labels if t.labels is not None else np.zeros(len(loader.dataset.files))
        factor = loader.file_scale or (1.0,) * len(loader.dataset.files)
        parts = [
            (labels[f : f + 1], np.array([n]), np.array([n * factor[f]]))
            for (f, _, _), n in zip(partitions, counts, strict=True)
        ]
        loader._scale = scale_of(parts, p, t.classes)
    return counts
