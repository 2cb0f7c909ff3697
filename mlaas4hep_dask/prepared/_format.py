"""A shard on disk: one partition's handled events as an Arrow IPC file (Feather v2), uncompressed.

Columns, in this order: the event's entry number in its file (int64); its row of X, as the
training takes it (normalized, every jagged branch padded to its slots), one fixed-size list
of float32 (``manifest.json``'s ``columns.features`` names its items, as does the field's
metadata); then the label and the weight branch (as it is, float32) when the training has
them.  Uncompressed, the file is memory-mapped and its rows are viewed as one ``(events,
features)`` matrix without a copy: a training gathers its batches straight from the page
cache.  Any Arrow reader opens it (``pyarrow.feather.read_table``, ``pandas.read_feather``,
``polars.read_ipc``, ``ak.from_arrow``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask._atomic import replacing
from mlaas4hep_dask.errors import OutputError, PreparedError
from mlaas4hep_dask.handle._layout import Layout
from mlaas4hep_dask.handle._rows import Block, take_rows

__all__ = [
    "FORMAT",
    "Roles",
    "ShardInfo",
    "checksum",
    "read_rows",
    "read_table",
    "shard_table",
    "write_shard",
]

#: Version of the shard and manifest layout; part of every key.
FORMAT = 2


@dataclasses.dataclass(frozen=True)
class Roles:
    """The names of the columns: entry number, rows of X, label, weight."""

    entry: str = "entry"
    label: str | None = None
    weight: str | None = None
    rows: str = "X"

    @classmethod
    def choose(cls, features: Sequence[str], label: bool, weight: bool) -> Roles:
        """``entry``, ``X``, ``label`` and ``weight``, each prefixed by ``_`` until no branch has its name."""
        taken = set(features) | {f"len({name})" for name in features}

        def free(name: str) -> str:
            while name in taken:
                name = f"_{name}"
            taken.add(name)
            return name

        entry, rows = free("entry"), free("X")
        return cls(entry, free("label") if label else None, free("weight") if weight else None, rows)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest lists it.

    Attributes
    ----------
    name
        File name in the dataset's folder.
    file
        Index of its input file in the manifest's ``files``.
    start, stop
        The entries of that file it was made from.
    rows, bytes, crc32
        Events it holds (after the cuts), its size and its CRC-32.
    sums
        Sums of the weight branch over ``[start, stop)`` before any cut (the samples' scaling).
    """

    name: str
    file: int
    start: int
    stop: int
    rows: int = 0
    bytes: int = 0
    crc32: int = 0
    sums: Mapping[str, float] = dataclasses.field(default_factory=dict)


def shard_table(layout: Layout, roles: Roles, events: Block, entries: np.ndarray) -> Any:
    """The Arrow table of a partition's handled events (``events.w``: the weight branch)."""
    import pyarrow as pa

    X = np.ascontiguousarray(events.X, dtype=np.float32)
    items = pa.array(X.reshape(-1))
    rows = pa.FixedSizeListArray.from_arrays(items, X.shape[1])
    features = {b"features": json.dumps(layout.features).encode()}
    fields = [pa.field(roles.entry, pa.int64()), pa.field(roles.rows, rows.type, metadata=features)]
    columns = [pa.array(np.asarray(entries, np.int64)), rows]
    for name, values in ((roles.label, events.y), (roles.weight, events.w)):
        if name is not None and values is not None:
            fields.append(pa.field(name, pa.from_numpy_dtype(values.dtype)))
            columns.append(pa.array(values))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def checksum(data: Any) -> int:
    """CRC-32 of a buffer (ISA-L's: several GB/s)."""
    from isal import isal_zlib

    return int(isal_zlib.crc32(data)) & 0xFFFFFFFF


def write_shard(path: Path, table: Any, key: str) -> tuple[int, int]:
    """Write ``table`` to ``path`` under a temporary name, then rename it into place.

    Returns its size and CRC-32.  A full disk (or any write error) leaves nothing behind.
    """
    import pyarrow as pa

    try:
        with replacing(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=max(1, len(table)))
            with open(tmp, "rb") as f:
                data = f.read()
                os.fsync(f.fileno())
    except OSError as err:
        why = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise OutputError(
            f"cannot write shard {path.name} of prepared dataset {key}: {why} ({path.parent})"
        ) from None
    return len(data), checksum(data)


_VERIFIED: set[tuple[Any, ...]] = set()  # shards whose checksum this process has checked
_VERIFIED_LOCK = threading.Lock()


def _damaged(path: Path, key: str, why: str) -> PreparedError:
    return PreparedError(
        f"shard {path.name} of prepared dataset {key} is damaged ({why}): run `mlaas4hep prepare "
        f"--repair` with the same inputs, or train again, to prepare it anew",
        shard=path,
    )


def read_table(path: Path, info: ShardInfo, key: str) -> Any:
    """The shard's table, memory-mapped; its size checked, and its CRC-32 the first time this
    process reads it.

    Raises
    ------
    PreparedError
        The file is missing, or its size, checksum or content are not the manifest's.
    """
    import pyarrow as pa

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _damaged(path, key, "the file is missing") from None
    if st.st_size != info.bytes:
        raise _damaged(path, key, f"{st.st_size} bytes where the manifest says {info.bytes}")
    data = pa.memory_map(str(path)).read_buffer()
    identity = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if identity not in _VERIFIED:
        found = checksum(data)
        if found != info.crc32:
            raise _damaged(path, key, f"CRC-32 {found:08x} where the manifest says {info.crc32:08x}")
        with _VERIFIED_LOCK:
            _VERIFIED.add(identity)
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise _damaged(path, key, f"not a readable Arrow file: {err}") from None
    if len(table) != info.rows:
        raise _damaged(path, key, f"{len(table)} events where the manifest says {info.rows}")
    return table


def read_rows(table: Any, roles: Roles, mine: np.ndarray | None) -> Block:
    """The events ``mine`` selects (``None``: all) of a shard's table: views of its memory when
    it selects them all, else copies of just those."""

    def column(name: str) -> np.ndarray:
        col = table.column(name)
        return (col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()).to_numpy()

    rows = table.column(roles.rows)
    rows = rows.chunk(0) if rows.num_chunks == 1 else rows.combine_chunks()
    X = rows.flatten().to_numpy().reshape(len(rows), rows.type.list_size)
    y = column(roles.label) if roles.label is not None else None
    w = column(roles.weight) if roles.weight is not None else None
    if mine is None or mine.all():
        return Block(X, y, w)
    index = np.flatnonzero(mine)
    return Block(X.take(index, axis=0), take_rows(y, index), take_rows(w, index))
