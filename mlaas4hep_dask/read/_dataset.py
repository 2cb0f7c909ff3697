"""Open ROOT inputs (local, ``root://``, ``http(s)://``) and read them as Dask partitions.

:func:`open_dataset` does the only eager work: it opens each file's metadata (never its
baskets) to validate it, classify its branches and count its entries.  :meth:`Dataset.to_dask`
then builds a lazy ``dask_awkward.Array`` with one partition per ``chunk_size`` entries.
"""

from __future__ import annotations

import dataclasses
import glob
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
from mlaas4hep_dask.read._branches import Branch, select_branches
from mlaas4hep_dask.read._inflate import zlib_library
from mlaas4hep_dask.read._inspect import InputFile, inspect_input
from mlaas4hep_dask.read._partitions import file_partitions
from mlaas4hep_dask.read._sources import (
    OPEN_TIMEOUT,
    handler_for,
)

__all__ = ["Dataset", "open_dataset"]

zlib_library()  # every process that reads (client and workers) inflates with ISA-L


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
        :class:`~mlaas4hep_dask.config.Params`, a dict, a ``params.json`` path, or ``None``.

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
        inspected = list(pool.map(lambda p: inspect_input(p, params), paths))
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
