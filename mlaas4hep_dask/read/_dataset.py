"""Open ROOT inputs (local, ``root://``, ``http(s)://``) and read them as Dask partitions.

:func:`open_dataset` does the only eager work: it opens each file's metadata (never its
baskets) to validate it, classify its branches and count its entries.  :meth:`Dataset.to_dask`
then builds a lazy ``dask_awkward.Array`` with one partition per ``chunk_size`` entries.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import glob
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uproot

from mlaas4hep_dask.config._params import Params, load_params, read_file_list
from mlaas4hep_dask.config._samples import Samples, is_sample_list, load_samples
from mlaas4hep_dask.errors import (
    ConfigError,
    InputError,
    SchemaError,
)
from mlaas4hep_dask.read._apportion import apportion
from mlaas4hep_dask.read._branches import Branch, classify, select_branches
from mlaas4hep_dask.read._inflate import zlib_library
from mlaas4hep_dask.read._partitions import BasketLayout, basket_layout, file_partitions
from mlaas4hep_dask.read._sources import (
    OPEN_TIMEOUT,
    file_identity,
    handler_for,
    open_file,
    resolve_path,
)

__all__ = ["Dataset", "InputFile", "open_dataset", "resolve_path"]

zlib_library()  # every process that reads (client and workers) inflates with ISA-L


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input file: as given, as opened, its tree, number of entries and basket layout."""

    path: str
    url: str
    tree: str
    entries: int
    baskets: Mapping[str, BasketLayout] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    uuid: str = dataclasses.field(default="", compare=False, repr=False)  # the same in a copy of the file


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Validated inputs, ready to be read lazily.

    Attributes
    ----------
    files
        The input files, in the order given.
    branches
        The selected, supported branches, in tree order.
    available
        Every supported branch of the tree (preprocessing may read ones not selected).
    skipped
        Selected branches that cannot be used, with the reason.
    partitions
        ``(file index, first entry, stop entry)`` of each Dask partition, in order; their
        edges lie on the basket boundaries of the ``aligned`` branches (see
        :meth:`with_step`).
    params
        The run parameters.
    aligned
        The branches whose baskets the partitions are aligned to.
    """

    files: tuple[InputFile, ...]
    branches: Mapping[str, Branch]
    available: Mapping[str, Branch]
    skipped: Mapping[str, str]
    partitions: tuple[tuple[int, int, int], ...]
    params: Params
    aligned: tuple[str, ...] = ()
    samples: Samples | None = dataclasses.field(default=None, compare=False, repr=False)

    def map_partitions(
        self, call: Callable[[Any, int, int], Any], columns: Sequence[str] | None = None
    ) -> list[Any]:
        """``call(partition, file_index, start)`` on every partition, as ``dask.delayed`` values.

        One task per partition (in :attr:`partitions` order) reads ``columns`` (default: the
        selected branches) of entries ``[start, stop)`` of file ``file_index``, through a tree
        its worker opened once for all the partitions of that file (see ``_reader``), and hands
        the awkward array to ``call``: the raw partition is never a task result of its own
        (half the scheduler's work of a read task and a call task, and no copy kept on the
        worker between them).

        Examples
        --------
        >>> sizes = dataset.map_partitions(lambda part, f, start: len(part), ["MET"])  # doctest: +SKIP
        >>> dask.compute(*sizes)  # doctest: +SKIP
        (200000, 200000, 87311)
        """
        import dask

        from mlaas4hep_dask.read._reader import ReadThen, slim

        columns = tuple(self.branches) if columns is None else tuple(columns)
        unknown = [c for c in columns if c not in self.available]
        if unknown:
            raise SchemaError(f"unknown branches {unknown!r} in tree {self.files[0].tree!r}")
        files = [slim(f) for f in self.files]
        task = dask.delayed(ReadThen(call), pure=True)
        return [task(files[i], self.params, columns, i, start, stop) for i, start, stop in self.partitions]

    def with_step(self, step: int, columns: Sequence[str] | None = None) -> Dataset:
        """The same inputs cut into partitions of about ``step`` entries (``-1``: one per file).

        The edges lie on basket boundaries common to ``columns`` (default: the branches the
        partitions are aligned to now), so a pass that reads those columns inflates every
        basket once; a basket longer than ``step`` makes a longer partition.

        Examples
        --------
        >>> aligned = dataset.with_step(50_000, ["MET", "jet_pt"])  # doctest: +SKIP
        """
        aligned = self.aligned if columns is None else tuple(columns)
        params = dataclasses.replace(self.params, chunk_size=step)
        return dataclasses.replace(self, partitions=_partitions(self.files, params, aligned), aligned=aligned)

    def aligned_to(self, columns: Sequence[str]) -> Dataset:
        """The same partitioning step, with edges on the basket boundaries of ``columns``."""
        if tuple(columns) == self.aligned:
            return self
        return self.with_step(self.params.chunk_size, columns)

    @property
    def nevents(self) -> int:
        """Entries that the partitions cover (after ``nevts``)."""
        return sum(stop - start for _, start, stop in self.partitions)

    def to_dask(self, columns: Sequence[str] | None = None) -> Any:
        """Return a lazy ``dask_awkward.Array`` over ``columns`` (default: the selected branches).

        Partitions follow :attr:`partitions`; nothing is read until it is computed, and then
        only the columns that the computation needs.

        Examples
        --------
        >>> arr = dataset.to_dask(["MET"])  # doctest: +SKIP
        >>> arr.npartitions == len(dataset.partitions)  # doctest: +SKIP
        True
        """
        columns = list(self.branches) if columns is None else list(columns)
        unknown = [c for c in columns if c not in self.available]
        if unknown:
            raise SchemaError(f"unknown branches {unknown!r} in tree {self.files[0].tree!r}")
        steps: dict[int, list[list[int]]] = {}
        for ifile, start, stop in self.partitions:
            steps.setdefault(ifile, []).append([start, stop])
        spec = {self.files[i].url: {"object_path": self.files[i].tree, "steps": s} for i, s in steps.items()}
        # one source class for all the files: dask-awkward loses columns when it concatenates
        # arrays read with different ones, so mixed local and remote inputs use uproot's default
        handlers = {handler_for(f.url, self.params) for f in self.files}
        return uproot.dask(
            spec,
            filter_name=[glob.escape(c) for c in columns],
            full_paths=True,
            open_files=False,
            handler=handlers.pop() if len(handlers) == 1 else None,
            timeout=OPEN_TIMEOUT,
        )


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


_INSPECTIONS = _Inspections()


def _inspect(path: str, params: Params) -> _Inspected:
    """The file's :class:`InputFile` and its tree's leaf branches, classified."""
    url = resolve_path(path, params.redirector)
    identity = file_identity(url)
    key = None if identity is None else (url, params.tree, *identity)
    known = _INSPECTIONS.get(key) if key is not None else None
    if known is None:
        known = _inspect_file(path, url, params)
        if key is not None:
            _INSPECTIONS.put(key, known)
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
    return InputFile(path, url, tree_path, int(ttree.num_entries), baskets, uuid), classified


def _check_same_schema(
    first: tuple[InputFile, dict[str, Branch | str]],
    other: tuple[InputFile, dict[str, Branch | str]],
    needed: Mapping[str, Branch],
) -> None:
    missing = [n for n in needed if n not in other[1]]
    if missing:
        raise SchemaError(
            f"input file {other[0].path!r} lacks branches {missing[:5]!r} that {first[0].path!r} has"
        )
    differ = [n for n, b in needed.items() if other[1][n] != b]
    if differ:
        name = differ[0]
        raise SchemaError(
            f"branch {name!r} is {needed[name].dtype} {needed[name].kind} in {first[0].path!r} "
            f"but {other[1][name]!r} in {other[0].path!r}: all files must have the same branch types"
        )


def _partitions(
    files: Sequence[InputFile], params: Params, columns: Sequence[str]
) -> tuple[tuple[int, int, int], ...]:
    entries = [f.entries for f in files]
    if params.nevts != -1 and params.nevts < sum(entries):
        entries = apportion(entries, params.nevts)
    return tuple(
        (ifile, start, stop)
        for ifile, (f, n) in enumerate(zip(files, entries, strict=True))
        for start, stop in file_partitions(f.baskets, columns, n, params.chunk_size)
    )


def _check_unique(files: Sequence[InputFile]) -> None:
    """Refuse a file given twice: its events would be read (and trained on) twice.

    Two names of one file (a copy, a link) carry the same ROOT file UUID: a warning, since a
    signal and a background that are the same data teach a model nothing.
    """
    seen: dict[str, int] = {}
    copies: dict[str, int] = {}
    for i, f in enumerate(files):
        if f.url in seen:
            raise InputError(f"input file {f.path!r} is listed twice (entries {seen[f.url] + 1} and {i + 1})")
        seen[f.url] = i
        if f.uuid and f.uuid in copies:
            first = files[copies[f.uuid]]
            warnings.warn(
                f"input files {first.path!r} and {f.path!r} are the same ROOT file (UUID {f.uuid}, "
                f"{f.entries} entries each): its events count twice",
                UserWarning,
                stacklevel=4,
            )
        copies.setdefault(f.uuid, i)


def open_dataset(
    files: str | Path | Sequence[str | Path] | Dataset,
    params: Params | Mapping[str, Any] | str | Path | None = None,
) -> Dataset:
    """Validate the input files and return a :class:`Dataset` to read lazily.

    Parameters
    ----------
    files
        A ``files.txt`` path, a comma-separated string, a list of paths/URLs, or a
        :class:`Dataset` opened with the same params (returned as it is).
    params
        :class:`~mlaas4hep_dask.config._params.Params`, a dict, a ``params.json`` path, or ``None``.

    Raises
    ------
    InputError
        A file is missing, unreachable or not ROOT.
    SchemaError
        The tree or a selected branch is missing, or files differ in their branches.

    Examples
    --------
    >>> ds = open_dataset(["ttH_0.root"], {"chunk_size": 10000})  # doctest: +SKIP
    >>> ds.nevents, list(ds.branches)[:2]  # doctest: +SKIP
    (50000, ['nJets', 'MET'])
    """
    params = load_params(params)
    if isinstance(files, Dataset):  # already opened: reuse it (its metadata reads are done)
        if files.params != params:
            raise ConfigError(
                "an opened Dataset was given with other params than the ones it was opened with"
            )
        return files
    samples = load_samples(files) if is_sample_list(files) else None  # type: ignore[arg-type]
    paths = samples.files if samples is not None else read_file_list(files)
    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        inspected = list(pool.map(lambda p: _inspect(p, params), paths))
    first_file, first_branches = inspected[0]
    selected, skipped = select_branches(
        first_branches,
        params.selected_branches,
        params.exclude_branches,
        params.identifier,
        first_file.path,
    )
    available = {n: b for n, b in first_branches.items() if isinstance(b, Branch)}
    for other in inspected[1:]:
        _check_same_schema(inspected[0], other, selected)
    input_files = tuple(f for f, _ in inspected)
    _check_unique(input_files)
    extras = [b for b in (params.label_branch, params.weight_branch) if b in available and b not in selected]
    aligned = (*selected, *extras)
    return Dataset(
        files=input_files,
        branches=selected,
        available=available,
        skipped=skipped,
        partitions=_partitions(input_files, params, aligned),
        params=params,
        aligned=aligned,
        samples=samples,
    )
