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

from mlaas4hep_dask.bundle._bundle import Bundle
from mlaas4hep_dask.errors import ConfigError

__all__ = [
    "ARROW_STREAM",
    "EventError",
    "arrow_columns",
    "check_events",
    "ignored_branches",
    "prepare_columns",
    "prepare_events",
    "prepare_inputs",
]


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


def check_events(events: Any) -> None:
    """Raise :class:`EventError` unless ``events`` is a non-empty list of objects (naming the first
    element that is not one)."""
    if not isinstance(events, list) or not events:
        raise EventError("'events' must be a non-empty list of objects")
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise EventError(f"events[{i}] must be an object of branch values, not {type(event).__name__}")


def _columns(events: Sequence[Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    check_events(events)
    columns: dict[str, list[Any]] = {name: [] for name in inputs}
    for i, event in enumerate(events):
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

    The events' numbers go through the bundle's plan on NumPy arrays
    (:meth:`~mlaas4hep_dask.handle.Plan.select_plain`) into the row kernels of the
    training loader (:meth:`~mlaas4hep_dask.handle.Layout.rows`); events that the fast
    reading cannot take (a value that is not a finite number, say) go the awkward way, as in
    training, which names the offending value.
    """
    inputs = {name: bundle.inputs[name] for name in bundle.plan.columns}
    plain = _plain_columns(events, inputs)
    if plain is not None:
        return _rows(bundle, len(events), *plain)
    selection = bundle.plan.select(ak.zip(_columns(events, inputs), depth_limit=1))
    X, rows = bundle.layout.transform(selection.record)
    positions = selection.positions
    return X, positions if rows is None else positions[rows]


def _rows(
    bundle: Bundle,
    n: int,
    flat: Mapping[str, np.ndarray],
    lists: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Checked plain columns through the bundle's plan (on NumPy) into the loader's row kernels."""
    preproc, positions = bundle.plan.preproc, np.arange(n)
    if preproc is not None and (preproc.new_branches or bundle.plan.cuts):
        # as read from a file: each branch's own type, so the expressions give the same numbers
        types = bundle.inputs
        flat = {k: v.astype(types[k].dtype, copy=False) for k, v in flat.items()}
        lists = {k: (a, b, v.astype(types[k].dtype, copy=False)) for k, (a, b, v) in lists.items()}
        flat, lists, positions = bundle.plan.select_plain(flat, lists)
    X, rows = bundle.layout.rows(len(positions), flat, lists)
    return X, positions if rows is None else positions[rows]


def prepare_columns(bundle: Bundle, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of X from raw events given column by column (an ``.npz`` body), their positions,
    and the number of events.

    A flat branch is one array of a value per event; a jagged branch ``NAME`` is its items,
    all events' one after the other, and ``NAME.counts``, the number of items of each event.
    """
    inputs = {name: bundle.inputs[name] for name in bundle.plan.columns}
    flat: dict[str, np.ndarray] = {}
    lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    n: int | None = None
    for name, branch in inputs.items():
        if name not in arrays:
            raise EventError(f"the body lacks branch {name!r} (the model reads {sorted(inputs)})")
        values = _column(arrays[name], name, branch.dtype)
        if branch.is_jagged:
            key = f"{name}.counts"
            if key not in arrays:
                raise EventError(f"jagged branch {name!r} needs {key!r}: the number of items of each event")
            counts = np.asarray(arrays[key])
            if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
                raise EventError(f"{key!r} must be one non-negative integer per event")
            if int(counts.sum()) != len(values):
                raise EventError(f"{key!r} counts {int(counts.sum())} items; {name!r} has {len(values)}")
            stops = np.cumsum(counts, dtype=np.int64)
            lists[name], size = (stops - counts, stops, values), len(counts)
        else:
            flat[name], size = values, len(values)
        if n is not None and size != n:
            raise EventError(f"branch {name!r} gives {size} events; the branches before it gave {n}")
        n = size
    if not n:
        raise EventError("the body holds no event")
    X, positions = _rows(bundle, n, flat, lists)
    return X, positions, n


#: The media type of an Arrow IPC stream (raw events as a table of branches).
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def arrow_columns(raw: bytes) -> dict[str, np.ndarray]:
    """Raw events from an Arrow IPC stream, as :func:`prepare_columns` takes them.

    The stream holds one table: a column per branch, numbers or lists of numbers (what
    ``ak.to_arrow_table(tree.arrays(...), extensionarray=False)`` writes; awkward's extension
    types are taken too, but cost 5 ms a request to decode); a jagged branch ``NAME`` becomes
    its items and ``NAME.counts``.  Arrow hands the numbers over without copying them.
    """
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
    except (pa.ArrowException, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EventError(f"the body is not an Arrow IPC stream: {first}") from None
    out: dict[str, np.ndarray] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = _storage(column.combine_chunks())
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            items = _storage(array.flatten())
            if array.null_count or items.null_count:
                raise EventError(f"branch {name!r} holds missing values (nulls), which are not accepted")
            out[f"{name}.counts"] = np.diff(array.offsets.to_numpy())  # the slice's own offsets
            array = items
        if not (
            pa.types.is_integer(array.type)
            or pa.types.is_floating(array.type)
            or pa.types.is_boolean(array.type)
        ):
            raise EventError(f"branch {name!r} is {array.type}: give numbers or lists of numbers")
        if array.null_count:
            raise EventError(f"branch {name!r} holds missing values (nulls), which are not accepted")
        out[name] = array.to_numpy(zero_copy_only=False)
    return out


def _storage(array: Any) -> Any:
    """An Arrow array without its extension types (awkward's wrap every level)."""
    import pyarrow as pa

    while isinstance(array.type, pa.ExtensionType):
        array = array.storage
    return array


def _column(values: Any, name: str, dtype: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise EventError(f"branch {name!r} must be a 1-D array of numbers, not {array.dtype} {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise EventError(f"branch {name!r} holds NaN or infinities, which are not accepted")
    if np.dtype(dtype).kind in "iub" and array.dtype.kind == "f" and (array % 1 != 0).any():
        raise EventError(f"branch {name!r} holds fractions, but the branch holds integers ({dtype})")
    return array


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
