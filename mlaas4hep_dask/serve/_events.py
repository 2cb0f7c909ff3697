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

__all__ = ["EventError", "ignored_branches", "prepare_events", "prepare_inputs"]


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


def _plain_columns(
    events: Sequence[Any], inputs: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] | None:
    """Each flat branch's values and each jagged branch's ``(starts, stops, content)``, with
    NumPy alone; ``None`` when anything looks off (then :func:`_columns` names the field)."""
    from itertools import chain

    if not isinstance(events, list) or not events:
        return None
    flat: dict[str, np.ndarray] = {}
    lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    try:
        for name, branch in inputs.items():
            column = [event[name] for event in events]
            if branch.is_jagged:
                if not all(type(v) is list for v in column):
                    return None
                counts = np.fromiter(map(len, column), np.int64, len(column))
                values = np.array(list(chain.from_iterable(column)), dtype=np.float64)
            else:
                values = np.array(column, dtype=np.float64)
            if values.ndim != 1 or not np.isfinite(values).all():
                return None
            if np.dtype(branch.dtype).kind in "iub" and (values % 1 != 0).any():
                return None  # a fraction in an integer branch
            if branch.is_jagged:
                stops = np.cumsum(counts)
                lists[name] = (stops - counts, stops, values)
            else:
                flat[name] = values
    except (KeyError, TypeError, ValueError):
        return None
    return flat, lists


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


def prepare_events(bundle: Bundle, events: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of X for the events that pass the bundle's cuts, and their positions in ``events``.

    Without preprocessing (no new branch, no cut) the events' numbers go straight into the
    row kernels of the training loader (:meth:`~mlaas4hep_dask.tensorize.Layout.rows`);
    otherwise through the bundle's plan on awkward arrays, as in training.
    """
    inputs = {name: bundle.inputs[name] for name in bundle.plan.columns}
    plain = _plain_columns(events, inputs)
    n = len(events)
    preproc = bundle.plan.preproc
    if plain is not None and (preproc is None or not (preproc.new_branches or bundle.plan.cuts)):
        X, rows = bundle.layout.rows(n, *plain)
        positions = np.arange(n)
        return X, positions if rows is None else positions[rows]
    if plain is not None:
        flat, lists = plain
        columns: dict[str, Any] = {k: v.astype(inputs[k].dtype) for k, v in flat.items()}
        for k, (starts, stops, values) in lists.items():
            columns[k] = ak.unflatten(values.astype(inputs[k].dtype), stops - starts)
    else:
        columns = _columns(events, inputs)
    selection = bundle.plan.select(ak.zip(columns, depth_limit=1))
    X, rows = bundle.layout.transform(selection.record)
    positions = selection.positions
    return X, positions if rows is None else positions[rows]


def ignored_branches(bundle: Bundle, events: Sequence[Any]) -> list[str]:
    """The branches the events give that the bundle does not read."""
    return sorted(set().union(*events) - set(bundle.plan.columns))


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
