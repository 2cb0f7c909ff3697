"""Whole baskets of plain numeric branches, read without uproot's per-basket machinery.

uproot reads a basket through a general model (a TKey and TBasket object, a cursor, a queue of
notifications, the interpretation's hooks): about 100 us of Python per basket, whatever its
size.  For files of small baskets that is most of the reading (2 000-entry baskets: 6 000 per
2 M events of six branches).  The branches this package reads are mostly plain numbers
(``float``, ``int``...) and C-style variable-length lists of them (``float x[n]``): their
baskets are a fixed TBasket header, the data, and (for lists) a table of byte offsets.  Here
those baskets are parsed with two ``struct`` calls, inflated by uproot's own
:func:`uproot.compression.decompress` (every algorithm and ROOT's block headers, and the same
ISA-L setting), and concatenated once per branch.

Anything else falls back to uproot, branch by branch: other interpretations (objects,
strings, ``std::vector`` with its per-entry headers, fixed-size arrays), baskets embedded in
the TTree's metadata, lists whose baskets carry no offsets, and any basket whose header does
not add up (uproot then reads it and reports what is wrong).  The same byte ranges are
fetched from the file's source in one request per partition, so remote inputs are read once.
"""

from __future__ import annotations

import queue
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plain_branch", "read_plain"]

_KEY = struct.Struct(">ihiIhh")  # fNbytes, key version, fObjlen, fDatime, fKeylen, fCycle
_BASKET = struct.Struct(">Hiiii")  # fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast


class _NotPlain(Exception):
    """A basket this reader does not take: uproot reads the branch instead."""


def plain_branch(branch: Any, start: int, stop: int) -> bool:
    """Whether entries ``[start, stop)`` of ``branch`` can be read here.

    Plain numbers (``AsDtype`` of a scalar type) or lists of them without per-entry headers
    (``AsJagged`` with ``header_bytes == 0``), all in baskets of their own on disk.
    """
    import uproot

    interpretation = branch.interpretation
    if isinstance(interpretation, uproot.AsJagged):
        if interpretation.header_bytes != 0:
            return False
        interpretation = interpretation.content
    if type(interpretation) is not uproot.AsDtype:
        return False
    dtype = interpretation.from_dtype
    if dtype.kind not in "biuf" or dtype.shape != () or dtype.fields is not None:
        return False
    normal = getattr(branch, "_num_normal_baskets", None)  # uproot's count of baskets on disk
    if not isinstance(normal, int):  # another uproot than the one this was written for
        return False
    on_disk = int(branch.member("fBasketEntry")[normal]) if normal else 0
    return stop <= on_disk


def read_plain(source: Any, branches: Sequence[Any], start: int, stop: int) -> list[Any]:
    """Entries ``[start, stop)`` of each branch (each checked with :func:`plain_branch`).

    Returns one awkward layout per branch (``NumpyArray`` or ``ListOffsetArray``), or
    ``None`` for a branch whose baskets turned out not to be plain (read it with uproot).
    """
    import uproot

    wanted: list[tuple[Any, list[int]]] = []
    ranges: list[tuple[int, int]] = []
    for branch in branches:
        entries = branch.member("fBasketEntry")[: branch._num_normal_baskets + 1]
        first = int(np.searchsorted(entries, start, side="right")) - 1
        last = int(np.searchsorted(entries, stop, side="left"))
        numbers = list(range(max(first, 0), last))
        seeks, sizes = branch.member("fBasketSeek"), branch.member("fBasketBytes")
        ranges.extend((int(seeks[i]), int(seeks[i]) + int(sizes[i])) for i in numbers)
        wanted.append((branch, numbers))
    pieces = iter(_fetch(source, ranges))
    out = []
    for branch, numbers in wanted:
        mine = [next(pieces) for _ in numbers]
        try:
            out.append(_branch_array(uproot, source, branch, numbers, mine, start, stop))
        except _NotPlain:
            out.append(None)
    return out


def _fetch(source: Any, ranges: list[tuple[int, int]]) -> list[tuple[int, np.ndarray]]:
    """The bytes of each range, with where it starts: slices of a memory-mapped local file,
    else one request for all of them (a vector read of a remote file)."""
    import uproot

    if isinstance(source, uproot.source.file.MemmapSource) and source._fallback is None:
        mapped = source.file.view(np.ndarray)  # slices of a plain array cost less than of a memmap
        return [(a, mapped[a:b]) for a, b in ranges]
    return [(c.start, c.raw_data) for c in source.chunks(ranges, notifications=queue.Queue())]


def _branch_array(
    uproot: Any,
    source: Any,
    branch: Any,
    numbers: list[int],
    pieces: list[tuple[int, np.ndarray]],
    start: int,
    stop: int,
) -> Any:
    import awkward as ak

    interpretation = branch.interpretation
    jagged = isinstance(interpretation, uproot.AsJagged)
    dtype = (interpretation.content if jagged else interpretation).from_dtype
    entries = branch.member("fBasketEntry")
    baskets = []
    for number, (at, raw) in zip(numbers, pieces, strict=True):
        n = int(entries[number + 1] - entries[number])
        data, table, keylen = _basket(uproot, source, at, raw, n)
        if jagged and (table is None or len(data) % dtype.itemsize):
            raise _NotPlain
        if not jagged and len(data) != n * dtype.itemsize:
            raise _NotPlain
        baskets.append((data, table, keylen))
    content = _joined_data([data for data, _, _ in baskets], dtype)
    first = int(entries[numbers[0]]) if numbers else start
    lo, hi = start - first, stop - first
    if not jagged:
        return ak.contents.NumpyArray(content[lo:hi])
    ends = _list_ends(baskets, dtype.itemsize)[lo : hi + 1] if baskets else np.zeros(hi - lo + 1, np.int64)
    return ak.contents.ListOffsetArray(ak.index.Index64(ends), ak.contents.NumpyArray(content))


def _joined_data(datas: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The baskets' data as one array in native byte order: each basket converted straight into
    its place (one pass over the bytes, where joining then converting takes two)."""
    out = np.empty(sum(len(d) for d in datas) // dtype.itemsize, dtype=dtype.newbyteorder("="))
    at = 0
    for data in datas:
        values = data.view(dtype)
        out[at : at + len(values)] = values
        at += len(values)
    return out


def _list_ends(baskets: list[tuple[np.ndarray, Any, int]], itemsize: int) -> np.ndarray:
    """Where each list ends in the joined items of consecutive baskets (a leading 0 first),
    from each basket's table of byte offsets (big-endian, from the key's start)."""
    from mlaas4hep_dask.read._kernels import basket_list_ends

    out = np.empty(sum(len(table) // 4 - 2 for _, table, _ in baskets) + 1, dtype=np.int64)
    out[0], at, base = 0, 1, 0
    for data, table, keylen in baskets:
        if not basket_list_ends(table.view(np.uint32), keylen, len(data), itemsize, out, at, base):
            raise _NotPlain
        at += len(table) // 4 - 2
        base += len(data) // itemsize
    return out


def _basket(
    uproot: Any, source: Any, at: int, raw: np.ndarray, entries: int
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The data of one basket, its table of byte offsets (``None`` without) and its key's length,
    as uproot's TBasket reads them.

    The data may be a view of the file's memory map: the caller copies it (joining).
    """
    nbytes, _, objlen, _, keylen, _ = _KEY.unpack_from(raw.data, 0)
    if nbytes != len(raw) or keylen <= _BASKET.size or keylen >= nbytes:
        raise _NotPlain
    _, _, _, nevbuf, last = _BASKET.unpack_from(raw.data, keylen - _BASKET.size - 1)
    if nevbuf != entries:
        raise _NotPlain
    compressed = nbytes - keylen
    if compressed == objlen:
        body = raw[keylen:nbytes]
    else:
        chunk = uproot.source.chunk.Chunk.wrap(source, raw, at)
        cursor = uproot.source.cursor.Cursor(at + keylen)
        try:
            body = uproot.compression.decompress(chunk, cursor, {}, compressed, objlen).raw_data
        except Exception as err:  # a damaged basket: uproot reads it again and names it
            raise _NotPlain from err
    border = last - keylen
    if not 0 <= border <= len(body):
        raise _NotPlain
    if border == len(body):
        return body, None, keylen
    table = body[border:]
    if len(table) != 4 * (entries + 2):  # their number, one per entry, and a last one
        raise _NotPlain
    return body[:border], table, keylen
