"""The key of a prepared dataset: a hash of everything that changes its bytes, and nothing else.

In the key: each input file's identity (its ROOT file UUID and size; for a local file also
its modification time), tree and entry range, and its label; the selected branches, the
preprocessing, the label and weight branches; what normalizing and padding depend on
(``normalize``, ``max_jagged``, ``nan_policy``, ``nan``, ``pad_value``, ``jagged_counts``, and
the specs when given, else the fact that they are computed from these inputs); the format
version.  Not in the key: the
order of the files, the partition size, the seed and split fractions (the split is made when
reading, from the entry numbers the shards keep), the batch size, the epochs, the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import InputNotFoundError
from mlaas4hep_dask.handle._preprocess import Preproc
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.prepared._format import FORMAT
from mlaas4hep_dask.read._dataset import Dataset
from mlaas4hep_dask.read._inspect import InputFile
from mlaas4hep_dask.read._sources import REMOTE, file_identity

__all__ = ["dataset_key", "identity"]


def identity(f: InputFile) -> str:
    """What names one input file's bytes: ``UUID:size`` (local files: ``UUID:size:mtime_ns``).

    Two copies of one file have one identity remotely (the UUID stays with the bytes); a local
    file written anew has another (its modification time changed).
    """
    if f.url.startswith(REMOTE):
        return f"{f.uuid or f.url}:{f.size}"
    local = file_identity(f.url)
    if local is None:
        raise InputNotFoundError(f"input file {f.path!r} is gone")
    _, _, size, mtime_ns = local
    return f"{f.uuid or os.path.realpath(f.url)}:{size}:{mtime_ns}"


def _ranges(dataset: Dataset) -> list[tuple[int, int]]:
    spans: dict[int, list[int]] = {}
    for i, a, b in dataset.partitions:
        lo, hi = spans.setdefault(i, [a, b])
        spans[i] = [min(lo, a), max(hi, b)]
    return [tuple(spans.get(i, [0, 0])) for i in range(len(dataset.files))]  # type: ignore[misc]


def dataset_key(
    dataset: Dataset,
    recipe: Preproc | None,
    labels: Sequence[float] | None,
    params: Params,
    specs: Specs | None,
) -> str:
    """The hex SHA-256 key of the prepared data of these inputs (``specs``: given, else ``None``).

    Examples
    --------
    >>> dataset_key(dataset, None, [1, 0], Params(), None)[:12]  # doctest: +SKIP
    '3f9c1e0a7b42'
    """
    files = sorted(
        [identity(f), f.tree, lo, hi, None if labels is None else float(labels[i])]
        for i, (f, (lo, hi)) in enumerate(zip(dataset.files, _ranges(dataset), strict=True))
    )
    document: dict[str, Any] = {
        "format": FORMAT,
        "files": files,
        "branches": list(dataset.branches),
        "preproc": None if recipe is None else recipe.source,
        "label_branch": params.label_branch,
        "weight_branch": params.weight_branch,
        "normalize": params.normalize,
        "max_jagged": params.max_jagged,
        "nan_policy": params.nan_policy,
        "nan": params.nan,
        "pad_value": params.pad_value,
        "jagged_counts": params.jagged_counts,
        "specs": None if specs is None else specs.to_dict(),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
