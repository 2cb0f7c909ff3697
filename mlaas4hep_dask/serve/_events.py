"""Raw events (JSON objects) to the rows a bundle's model was trained on.

Each event must give the raw branches the bundle reads (features and branches its cuts use):
a number for a flat branch, a list of numbers for a jagged one.  Other branches of a whole
event are ignored (and named once in the answer); a branch that only made the label or the
weight is not asked for.  They go through
the bundle's own preprocessing, padding and normalization.  Events that fail the bundle's
cuts get no score (``None``), so the answer keeps the order and length of the request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask.bundle import Bundle
from mlaas4hep_dask.errors import ConfigError

__all__ = ["EventError", "prepare_events", "prepare_inputs"]


class EventError(ConfigError):
    """A request whose events or inputs do not fit the model; the message names the field."""


def _number(value: Any, where: str, dtype: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError(f"{where} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise EventError(f"{where} is {value!r}: NaN and infinities are not accepted")
    if np.dtype(dtype).kind in "iub" and not float(value).is_integer():
        raise EventError(f"{where} is {value!r}, but the branch holds integers ({dtype})")
    return float(value)


def _fast_columns(events: Sequence[Any], inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Columns through awkward's C++ ``from_iter``; ``None`` when anything looks off.

    Then :func:`_columns` checks every value in Python and names the offending one.
    """
    try:
        array = ak.from_iter(events)
    except (ValueError, TypeError):
        return None
    if not set(inputs) <= set(array.fields):
        return None
    out: dict[str, Any] = {}
    for name, branch in inputs.items():
        layout = array[name].layout
        if branch.is_jagged:
            if not isinstance(layout, ak.contents.ListOffsetArray):
                return None
            content = layout.content
            if isinstance(content, ak.contents.EmptyArray):
                values = np.zeros(0, dtype=branch.dtype)
            elif isinstance(content, ak.contents.NumpyArray) and content.data.dtype.kind in "iuf":
                values = np.asarray(content.data)
            else:
                return None
            counts = np.diff(np.asarray(layout.offsets))
            values = values[int(np.asarray(layout.offsets)[0]) :][: counts.sum()]
        elif isinstance(layout, ak.contents.NumpyArray) and layout.data.dtype.kind in "iuf":
            values, counts = np.asarray(layout.data), None
        else:
            return None
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return None
        if np.dtype(branch.dtype).kind in "iub" and values.dtype.kind == "f" and (values % 1 != 0).any():
            return None  # a fraction in an integer branch: the slow path names it
        values = values.astype(branch.dtype)
        out[name] = values if counts is None else ak.unflatten(values, counts)
    return out


def _columns(events: Sequence[Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(events, list) or not events:
        raise EventError("'events' must be a non-empty list of objects")
    columns: dict[str, list[Any]] = {name: [] for name in inputs}
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise EventError(f"events[{i}] must be an object of branch values")
        missing = [n for n in inputs if n not in event]
        if missing:
            raise EventError(f"events[{i}]: missing branch {missing[0]!r} (the model reads {sorted(inputs)})")
        for name, branch in inputs.items():
            value = event[name]
            where = f"events[{i}].{name}"
            if branch.is_jagged:
                if not isinstance(value, list):
                    raise EventError(f"{where} must be a list of numbers (a jagged branch)")
                columns[name].append([_number(v, f"{where}[{j}]", branch.dtype) for j, v in enumerate(value)])
            else:
                columns[name].append(_number(value, where, branch.dtype))
    out: dict[str, Any] = {}
    for name, branch in inputs.items():
        if branch.is_jagged:
            counts = np.array([len(v) for v in columns[name]], dtype=np.int64)
            flat = np.array([x for v in columns[name] for x in v], dtype=branch.dtype)
            out[name] = ak.unflatten(flat, counts)
        else:
            out[name] = np.array(columns[name], dtype=branch.dtype)
    return out


def prepare_events(bundle: Bundle, events: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of X for the events that pass the bundle's cuts, their positions in ``events``, and
    the branches the events gave that the bundle does not read."""
    inputs = {name: bundle.inputs[name] for name in bundle.plan.columns}
    columns = _fast_columns(events, inputs) if isinstance(events, list) and events else None
    array = ak.zip(columns if columns is not None else _columns(events, inputs), depth_limit=1)
    selection = bundle.plan.select(array)
    X, rows = bundle.layout.transform(selection.record)
    positions = selection.positions
    ignored = sorted(set().union(*events) - set(inputs))
    return X, positions if rows is None else positions[rows], ignored


def prepare_inputs(bundle: Bundle, inputs: Any) -> np.ndarray:
    """Check prepared feature rows (a list of lists or an array) against the model's width."""
    try:
        X = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError):
        raise EventError("'inputs' must be a list of rows of numbers") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise EventError(f"'inputs' must be a non-empty list of rows, got shape {list(X.shape)}")
    if X.shape[1] != bundle.layout.idim:
        raise EventError(f"'inputs' rows have {X.shape[1]} values; the model takes {bundle.layout.idim}")
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        raise EventError(
            f"'inputs'[{bad[0][0]}][{bad[0][1]}] is not finite: NaN and infinities are not accepted"
        )
    return X
