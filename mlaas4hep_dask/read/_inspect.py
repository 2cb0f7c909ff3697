"""One input file inspected: its tree found, its branches classified, its basket layout.

What inspecting a local file found is kept while the file is unchanged (:data:`INSPECTIONS`).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import threading
from collections.abc import Mapping
from typing import Any

import uproot

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import (
    SchemaError,
)
from mlaas4hep_dask.read._branches import Branch, classify
from mlaas4hep_dask.read._partitions import BasketLayout, basket_layout
from mlaas4hep_dask.read._sources import (
    file_identity,
    open_file,
    resolve_path,
)

__all__ = ["INSPECTIONS", "InputFile", "inspect_input"]


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input file: as given, as opened, its tree, number of entries and basket layout."""

    path: str
    url: str
    tree: str
    entries: int
    baskets: Mapping[str, BasketLayout] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    uuid: str = dataclasses.field(default="", compare=False, repr=False)  # the same in a copy of the file
    size: int = dataclasses.field(default=0, compare=False, repr=False)  # bytes (0: the server did not say)


def _find_tree(directory: Any, path: str, tree: str | None) -> Any:
    trees = [k.split(";")[0] for k, v in directory.classnames().items() if v == "TTree"]
    if tree is None:
        unique = list(dict.fromkeys(trees))
        if len(unique) == 1:
            return directory[unique[0]]
        if not unique:
            others = [k.split(";")[0] for k, v in directory.classnames().items() if v == "ROOT::RNTuple"]
            if others:  # what uproot >= 5.4 writes for `file[name] = arrays`
                raise SchemaError(
                    f"input file {path!r} holds no TTree but an RNTuple {others[0]!r}, which is not "
                    "read yet: write a TTree (uproot: file.mktree(name, types).extend(arrays))"
                )
            raise SchemaError(f"input file {path!r} holds no TTree")
        raise SchemaError(
            f"input file {path!r} holds several TTrees {unique!r}: choose one with 'tree' in params.json"
        )
    try:
        obj = directory[tree]
    except KeyError:
        near = difflib.get_close_matches(tree, trees, n=3) or trees[:5]
        raise SchemaError(
            f"input file {path!r} has no tree {tree!r}; trees in it: {', '.join(map(repr, near))}"
        ) from None
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        raise SchemaError(f"{tree!r} in input file {path!r} is a {obj.classname}, not a TTree")
    return obj


_Inspected = tuple[InputFile, dict[str, Branch | str]]


class _Inspections:
    """What inspecting local files found, by file identity (device, inode, size, modification
    time) and tree, least recently used first out.

    Parsing a tree of a thousand branches costs more than reading thirty of them, and a session
    opens the same files for the specs, the loader and the training.  Remote files are inspected
    every time (their identity would cost a round trip).  Bounded by the memory it holds (about
    0.6 MB for a file of 520 branches of 40 baskets).
    """

    def __init__(self, budget: int = 64 * 2**20) -> None:
        self.budget = budget
        self._found: collections.OrderedDict[tuple[Any, ...], tuple[_Inspected, int]] = (
            collections.OrderedDict()
        )
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Inspected | None:
        with self._lock:
            known = self._found.get(key)
            if known is None:
                return None
            self._found.move_to_end(key)
            return known[0]

    def put(self, key: tuple[Any, ...], found: _Inspected) -> None:
        file, classified = found
        size = 200 * len(classified) + sum(
            b.offsets.nbytes + b.nbytes.nbytes + 300 for b in file.baskets.values()
        )
        with self._lock:
            if key in self._found:
                self._held -= self._found.pop(key)[1]
            self._found[key] = (found, size)
            self._held += size
            while self._held > self.budget and self._found:
                self._held -= self._found.popitem(last=False)[1][1]


INSPECTIONS = _Inspections()


def inspect_input(path: str, params: Params) -> _Inspected:
    """The file's :class:`InputFile` and its tree's leaf branches, classified."""
    url = resolve_path(path, params.redirector)
    identity = file_identity(url)
    key = None if identity is None else (url, params.tree, *identity)
    known = INSPECTIONS.get(key) if key is not None else None
    if known is None:
        known = _inspect_file(path, url, params)
        if key is not None:
            INSPECTIONS.put(key, known)
    return dataclasses.replace(known[0], path=path), dict(known[1])


def _inspect_file(path: str, url: str, params: Params) -> _Inspected:
    directory = open_file(path, url, params)
    ttree = _find_tree(directory, path, params.tree)
    classified: dict[str, Branch | str] = {}
    for name, branch in ttree.items(recursive=True, full_paths=True):
        info = classify(name, branch)
        if info is not None:
            classified[name] = info
    tree_path = ttree.object_path.lstrip("/").split(";")[0]
    baskets = {
        name: layout
        for name, info in classified.items()
        if isinstance(info, Branch) and (layout := basket_layout(ttree[name])) is not None
    }
    uuid = str(getattr(ttree.file, "uuid", "") or "")
    try:
        size = int(ttree.file.source.num_bytes or 0)
    except Exception:  # a server that does not say: the UUID alone names the file
        size = 0
    return InputFile(path, url, tree_path, int(ttree.num_entries), baskets, uuid, size), classified
