"""Read one partition (entries ``[start, stop)`` of some branches) from trees opened once per process.

Opening a ROOT file reads its header, streamers and the TTree's metadata: for a tree of a
thousand branches that costs more than reading a partition of the thirty used.  Every Dask
worker (and trainer) therefore keeps the trees it opened, the most recently used
``_MAX_OPEN`` of them, and reads every partition of a file through the same tree.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ReadThen", "read_partition"]

_MAX_OPEN = 32
_LOCK = threading.Lock()
_OPEN: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()


def _tree(file: Any, params: Any) -> Any:
    from mlaas4hep_dask.read._sources import file_identity, open_file

    identity = file_identity(file.url)  # a file written anew is opened anew
    key = (file.url, file.tree, params.xrootd_handler, identity)
    with _LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
    tree = open_file(file.path, file.url, params)[file.tree]  # outside the lock: other files go on
    with _LOCK:
        tree = _OPEN.setdefault(key, tree)
        _OPEN.move_to_end(key)
        while len(_OPEN) > _MAX_OPEN:
            _OPEN.popitem(last=False)  # dropped, not closed: a thread may still read through it
    return tree


def read_partition(file: Any, params: Any, columns: Sequence[str], start: int, stop: int) -> Any:
    """The awkward array of ``columns`` for entries ``[start, stop)`` of ``file``'s tree.

    Raises
    ------
    InputError
        A basket cannot be inflated or interpreted (a damaged file): the error names the file,
        the tree, the branch and the entries.
    """
    tree = _tree(file, params)
    try:
        return _read(tree, columns, start, stop)
    except (OSError, TimeoutError) as err:  # the server went away, the disk failed
        raise _unreadable(file, start, stop, err) from None
    except Exception as err:  # uproot's DeserializationError, zlib.error, ValueError...
        raise _damaged(tree, file, columns, start, stop, err) from None


class ReadThen:
    """A task that reads one partition and hands it to ``call(partition, file_index, start)``."""

    def __init__(self, call: Callable[[Any, int, int], Any]) -> None:
        self.call = call
        self.__name__ = f"read-{getattr(call, '__name__', type(call).__name__)}"  # the tasks' name in Dask

    def __call__(
        self, file: Any, params: Any, columns: Sequence[str], file_index: int, start: int, stop: int
    ) -> Any:
        return self.call(read_partition(file, params, columns, start, stop), file_index, start)

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("ReadThen", tokenize(self.call))


def _read(tree: Any, columns: Sequence[str], start: int, stop: int) -> Any:
    """Plain numeric branches basket by basket (:mod:`._baskets`), the others through uproot."""
    import awkward as ak

    from mlaas4hep_dask.read._baskets import plain_branch, read_plain

    branches = [tree[name] for name in columns]  # full paths of branches, taken as names
    plain = [(name, b) for name, b in zip(columns, branches, strict=True) if plain_branch(b, start, stop)]
    read = read_plain(tree.file.source, [b for _, b in plain], start, stop) if plain else []
    layouts = {name: layout for (name, _), layout in zip(plain, read, strict=True) if layout is not None}
    rest = [name for name in columns if name not in layouts]
    if rest:
        arrays = tree.arrays(
            rest,
            entry_start=start,
            entry_stop=stop,
            library="ak",
            array_cache=None,  # uproot's default keeps 100 MB of arrays per open file: ours stream
        )
        if not layouts:
            return arrays
        layouts.update((name, arrays[name].layout) for name in rest)
    return ak.Array(
        ak.contents.RecordArray([layouts[name] for name in columns], list(columns), length=stop - start)
    )


def _unreadable(file: Any, start: int, stop: int, err: BaseException) -> Exception:
    """The error of an input that stopped answering while its partition was read."""
    from mlaas4hep_dask.errors import InputError, MLaaSError, RemoteInputError, first_line
    from mlaas4hep_dask.read._sources import REMOTE

    if isinstance(err, MLaaSError):
        return err
    first = first_line(err) or type(err).__name__
    kind = RemoteInputError if file.url.startswith(REMOTE) else InputError
    return kind(f"cannot read input {file.path!r} (tree {file.tree!r}, entries {start}-{stop}): {first}")


def _damaged(
    tree: Any, file: Any, columns: Sequence[str], start: int, stop: int, err: Exception
) -> Exception:
    """The error of a damaged file, naming the first branch that cannot be read (found branch by branch)."""
    from mlaas4hep_dask.errors import InputError, first_line

    culprit = None
    for name in columns:
        try:
            tree[name].array(entry_start=start, entry_stop=stop, library="np", array_cache=None)
        except Exception:
            culprit = name
            break
    first = first_line(err) or type(err).__name__
    where = f"branch {culprit!r}, " if culprit is not None else ""
    return InputError(
        f"input file {file.path!r} is damaged: tree {file.tree!r}, {where}entries {start}-{stop} "
        f"cannot be read ({type(err).__name__}: {first})"
    )


def slim(file: Any) -> Any:
    """``file`` without its basket layouts (a task needs only where to read)."""
    return dataclasses.replace(file, baskets={})
