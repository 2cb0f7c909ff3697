"""Direct uproot/awkward/NumPy computations that the pipeline's results are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot


def read_all(paths: Sequence[Path | str], tree: str, branches: Sequence[str]) -> ak.Array:
    return ak.concatenate([uproot.open(p)[tree].arrays(list(branches), library="ak") for p in paths])


def branch_stats(column: ak.Array) -> dict[str, Any]:
    """min/max/mean/std over finite values, nonfinite count, and jdim/mean_len for jagged."""
    jagged = column.ndim == 2
    values = ak.to_numpy(ak.flatten(column, axis=1) if jagged else column)
    finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    good = values[finite]
    out: dict[str, Any] = {
        "min": good.min().item() if good.size else None,
        "max": good.max().item() if good.size else None,
        "mean": float(good.astype(np.float64).mean()) if good.size else None,
        "std": float(good.astype(np.float64).std()) if good.size else None,
        "nonfinite": int((~finite).sum()),
    }
    if jagged:
        counts = ak.to_numpy(ak.num(column, axis=1))
        out["jdim"] = int(counts.max()) if counts.size else 0
        out["mean_len"] = float(counts.mean()) if counts.size else 0.0
    return out


def assert_branch_matches(spec: Any, expected: dict[str, Any], name: str) -> None:
    """Exact min/max/jdim/nonfinite; mean/std to float64 rounding."""
    assert spec.min == expected["min"], name
    assert spec.max == expected["max"], name
    assert spec.nonfinite == expected["nonfinite"], name
    if expected["mean"] is None:
        assert spec.mean is None, name
    else:
        assert spec.mean == _approx(expected["mean"]), name
        assert spec.std == _approx(expected["std"]), name
    if "jdim" in expected:
        assert spec.jdim == expected["jdim"], name
        assert spec.mean_len == _approx(expected["mean_len"]), name


def _approx(x: float) -> Any:
    import pytest

    return pytest.approx(x, rel=1e-9, abs=1e-9)
