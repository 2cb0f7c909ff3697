"""A shard on disk: one partition's handled events as an Arrow IPC file (Feather v2), uncompressed.

Columns, in this order: the event's entry number in its file, each flat branch (float32,
normalized), each jagged branch as a list of float32 (normalized, at most its slots) followed by
``len(NAME)`` (its items before clipping, int32), then the label and the weight branch (as it
is, float32) when the training has them.  Uncompressed, the file is memory-mapped and its
columns are viewed without a copy: reading it costs what gathering one split's rows costs.
Any Arrow reader opens it (``pyarrow.feather.read_table``, ``pandas.read_feather``,
``polars.read_ipc``, ``ak.from_arrow``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask._atomic import replacing
from mlaas4hep_dask.errors import OutputError, PreparedError
from mlaas4hep_dask.handle._layout import Layout, Packed

__all__ = [
    "FORMAT",
    "Roles",
    "ShardInfo",
    "checksum",
    "read_packed",
    "read_table",
    "shard_table",
    "write_shard",
]

#: Version of the shard and manifest layout; part of every key.
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Roles:
    """The names of the columns that are not features: entry number, label, weight."""

    entry: str = "entry"
    label: str | None = None
    weight: str | None = None

    @classmethod
    def choose(cls, features: Sequence[str], label: bool, weight: bool) -> Roles:
        """``entry``, ``label`` and ``weight``, each prefixed by ``_`` until no branch has its name."""
        taken = set(features) | {f"len({name})" for name in features}

        def free(name: str) -> str:
            while name in taken:
                name = f"_{name}"
            taken.add(name)
            return name

        return cls(free("entry"), free("label") if label else None, free("weight") if weight else None)


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


def shard_table(layout: Layout, roles: Roles, packed: Packed, entries: np.ndarray) -> Any:
    """The Arrow table of a partition's handled events (``packed.w``: the weight branch)."""
    import pyarrow as pa

    columns: dict[str, Any] = {roles.entry: pa.array(np.asarray(entries, np.int64))}
    for c, name in enumerate(layout.flat):
        columns[name] = pa.array(np.ascontiguousarray(packed.flat[:, c]))
    at = 0
    for b, (name, slots) in enumerate(layout.jagged):
        kept = np.minimum(packed.lengths[:, b], slots)
        offsets = np.zeros(len(kept) + 1, np.int32)
        np.cumsum(kept, out=offsets[1:])
        values = packed.values[at : at + offsets[-1]]
        at += int(offsets[-1])
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        columns[f"len({name})"] = pa.array(np.ascontiguousarray(packed.lengths[:, b]))
    if roles.label is not None and packed.y is not None:
        columns[roles.label] = pa.array(packed.y)
    if roles.weight is not None and packed.w is not None:
        columns[roles.weight] = pa.array(packed.w)
    return pa.table(columns)


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
    source = pa.memory_map(str(path))
    identity = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if identity not in _VERIFIED:
        found = checksum(source.read_buffer())
        source.seek(0)
        if found != info.crc32:
            raise _damaged(path, key, f"CRC-32 {found:08x} where the manifest says {info.crc32:08x}")
        with _VERIFIED_LOCK:
            _VERIFIED.add(identity)
    try:
        table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise _damaged(path, key, f"not a readable Arrow file: {err}") from None
    if len(table) != info.rows:
        raise _damaged(path, key, f"{len(table)} events where the manifest says {info.rows}")
    return table


def read_packed(table: Any, layout: Layout, roles: Roles, mine: np.ndarray | None) -> Packed:
    """The events ``mine`` selects (``None``: all) of a shard's table, as the workers send them."""

    def column(name: str) -> Any:
        col = table.column(name)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()

    def values(name: str) -> np.ndarray:
        out = column(name).to_numpy(zero_copy_only=False)
        return out if mine is None else out[mine]

    n = len(table) if mine is None else int(np.count_nonzero(mine))
    flat = np.empty((n, len(layout.flat)), np.float32)
    for c, name in enumerate(layout.flat):
        flat[:, c] = values(name)
    lengths = np.empty((n, len(layout.jagged)), np.int32)
    items = []
    for b, (name, _) in enumerate(layout.jagged):
        lengths[:, b] = values(f"len({name})")
        lists = column(name)
        offsets = lists.offsets.to_numpy()
        content = lists.values.to_numpy()[offsets[0] : offsets[-1]]
        items.append(content if mine is None else content[np.repeat(mine, np.diff(offsets))])
    flat_values = np.concatenate(items) if items else np.zeros(0, np.float32)
    y = values(roles.label) if roles.label is not None else None
    w = values(roles.weight) if roles.weight is not None else None
    return Packed(flat, lengths, flat_values.astype(np.float32, copy=False), y, w)
