"""Read and handle once, train many times: :func:`prepare` and the :class:`Prepared` dataset.

On the Dask cluster each partition is read, preprocessed, normalized, padded and written as one shard
(:class:`WriteShard`); reading the ROOT files costs one pass when the specs are given or a
preparation of the key already stored them, else a specs pass and a shard pass.  The shards
keep every event that passes the cuts, of all splits, with its entry number: training from
them (:class:`ReadShard`) makes the same split, the same chunks and the same batches as
training from ROOT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask._compute import compute
from mlaas4hep_dask.config._params import Params, load_labels, load_params
from mlaas4hep_dask.errors import ConfigError, PreparedError
from mlaas4hep_dask.handle._checks import check_specs
from mlaas4hep_dask.handle._layout import Layout
from mlaas4hep_dask.handle._preprocess import Preproc, load_preproc, make_plan
from mlaas4hep_dask.handle._rows import Block
from mlaas4hep_dask.handle._specs import Specs, compute_specs
from mlaas4hep_dask.handle._tensorize import Tensorize
from mlaas4hep_dask.prepared._format import (
    FORMAT,
    Roles,
    ShardInfo,
    read_rows,
    read_table,
    shard_table,
    write_shard,
)
from mlaas4hep_dask.prepared._key import dataset_key, identity
from mlaas4hep_dask.prepared._store import Folder, Store, write_json
from mlaas4hep_dask.read._dataset import Dataset, open_dataset
from mlaas4hep_dask.read._partitions import partition_step

__all__ = ["Prepared", "ReadShard", "WriteShard", "prepare", "targets"]

_log = logging.getLogger("mlaas4hep_dask")


def targets(
    labels: str | Path | Sequence[float] | None, params: Params, dataset: Dataset
) -> list[float] | None:
    """One label per input file: given, or the sample list's, or ``None`` (a ``label_branch``)."""
    if labels is not None and params.label_branch is not None:
        raise ConfigError("give either labels (labels.txt) or 'label_branch' in params, not both")
    out = load_labels(labels, len(dataset.files))
    if out is None and params.label_branch is None and dataset.samples is not None:
        out = dataset.samples.labels
    return out


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A complete prepared dataset in a store (what ``manifest.json`` says of it).

    Attributes
    ----------
    path
        Its folder, ``STORE/KEY``.
    key
        The content key (see :func:`~mlaas4hep_dask.prepared.dataset_key`).
    identities
        The input files' identities, sorted; a shard's ``file`` indexes them.
    shards
        The shards, in the order of the inputs' identities and entries.
    specs
        The specs the events were normalized with.
    roles
        The names of the entry, label and weight columns.
    """

    path: Path
    key: str
    identities: tuple[str, ...]
    shards: tuple[ShardInfo, ...]
    specs: Specs
    roles: Roles

    @property
    def events(self) -> int:
        """Events it holds (after the cuts)."""
        return sum(s.rows for s in self.shards)

    @property
    def bytes(self) -> int:
        """Bytes of its shards."""
        return sum(s.bytes for s in self.shards)

    @classmethod
    def load(cls, folder: Folder) -> Prepared | None:
        """The complete dataset in ``folder``, or ``None``."""
        doc = folder.manifest()
        return None if doc is None else cls.of(folder, doc)

    @classmethod
    def of(cls, folder: Folder, doc: Mapping[str, Any]) -> Prepared:
        """The dataset that manifest ``doc`` of ``folder`` describes."""
        return cls(
            folder.path,
            folder.key,
            tuple(doc["identities"]),
            tuple(ShardInfo(**s) for s in doc["shards"]),
            Specs.from_dict(doc["specs"], source=str(folder.path / "manifest.json")),
            Roles(**doc["roles"]),
        )

    def on(self, dataset: Dataset) -> tuple[Dataset, tuple[ShardInfo, ...]]:
        """``dataset`` cut into the shards' partitions (in its own file order), and the shard of each."""
        index = {identity(f): i for i, f in enumerate(dataset.files)}
        placed = sorted(((index[self.identities[s.file]], s.start, s.stop), s) for s in self.shards)
        partitions = tuple(p for p, _ in placed)
        return dataclasses.replace(dataset, partitions=partitions), tuple(s for _, s in placed)

    def use(self) -> contextlib.ExitStack:
        """Mark the dataset in use (and used now) until the returned stack is closed."""
        stack = contextlib.ExitStack()
        stack.enter_context(Folder(self.path, self.key).using())
        return stack

    def summary(self) -> dict[str, Any]:
        """The JSON line ``mlaas4hep prepare`` prints."""
        return {
            "key": self.key,
            "path": str(self.path),
            "events": self.events,
            "shards": len(self.shards),
            "bytes": self.bytes,
        }


class WriteShard:
    """Callable run on a worker: one raw partition handled and written as its shard."""

    def __init__(
        self,
        tensorize: Tensorize,
        folder: Folder,
        names: Mapping[tuple[int, int], tuple[str, int]],
        roles: Roles,
    ) -> None:
        self.tensorize, self.folder, self.names, self.roles = tensorize, folder, dict(names), roles

    def __call__(self, partition: Any, file_index: int, start: int) -> ShardInfo:
        name, file_id = self.names[(file_index, start)]
        with self.folder.writing(name) as done:
            if done is not None:
                return done
            packed, entries = self.tensorize.handled(partition, file_index, start)
            events = Block(self.tensorize.layout.unpacked(packed), packed.y, packed.w)
            table = shard_table(self.tensorize.layout, self.roles, events, entries)
            size, crc = write_shard(self.folder.path / name, table, self.folder.key)
            weight = self.tensorize.weight_branch
            sums = (
                {}
                if weight is None
                else {weight: float(np.sum(ak.to_numpy(partition[weight]), dtype=np.float64))}
            )
            info = ShardInfo(name, file_id, start, start + len(partition), len(table), size, crc, sums)
            write_json(self.folder.path / f"{name}.json", dataclasses.asdict(info))
        return info


class ReadShard:
    """Callable run on a worker: a shard read back as ``call`` (a :class:`Tensorize`) would have
    made it from ROOT: one split's packed events, their count, or their sums of weights."""

    def __init__(self, call: Tensorize, path: Path, key: str, roles: Roles) -> None:
        self.call, self.path, self.key, self.roles = call, path, key, roles

    def __call__(self, info: ShardInfo, file_index: int) -> Any:
        try:
            table = read_table(self.path / info.name, info, self.key)
        except PreparedError:
            Folder(self.path, self.key).forget(info.name)  # the next preparation writes it anew
            raise
        mine = self.call.mine(file_index, table.column(self.roles.entry).to_numpy())
        return self.call.of_handled(read_rows(table, self.roles, mine), file_index)


def _shard_names(dataset: Dataset) -> tuple[list[str], dict[tuple[int, int], tuple[str, int]]]:
    ids = [identity(f) for f in dataset.files]
    order = sorted(set(ids))
    names = {
        (i, a): (f"{order.index(ids[i]):05d}-{a:012d}-{b:012d}.arrow", order.index(ids[i]))
        for i, a, b in dataset.partitions
    }
    return order, names


def prepare(
    files: str | Path | Sequence[str | Path] | Dataset,
    store: Store | str | Path,
    params: Params | Mapping[str, Any] | str | Path | None = None,
    labels: str | Path | Sequence[float] | None = None,
    preproc: Preproc | Mapping[str, Any] | str | Path | None = None,
    specs: Specs | str | Path | None = None,
    client: Any = None,
    repair: bool = False,
) -> Prepared:
    """Read and handle the inputs once into ``store``; return the prepared dataset.

    Parameters
    ----------
    files, params, labels, preproc, specs
        As for :func:`~mlaas4hep_dask.train.train` (the specs are computed when not given, unless
        an earlier preparation of the same key stored them).
    store
        A :class:`Store` or its folder.
    client
        A ``distributed.Client`` or a scheduler name; the shards are written by its workers.
    repair
        Check every shard's checksum and prepare again the ones that do not match.

    Returns
    -------
    Prepared
        At once when the key is present (no ROOT basket read), else once its shards are written.
        A preparation that stopped midway is completed: only the missing shards are written.

    Examples
    --------
    >>> ready = prepare("files.txt", "/ssd/prepared", "params.json", labels="labels.txt")  # doctest: +SKIP
    >>> ready.key[:12], ready.events  # doctest: +SKIP
    ('3f9c1e0a7b42', 1000000)
    """
    p = load_params(params)
    recipe = load_preproc(preproc)
    store = store if isinstance(store, Store) else Store(store)
    dataset = open_dataset(files, p)
    labels = targets(labels, p, dataset)
    given = None if specs is None else specs if isinstance(specs, Specs) else Specs.load(specs)
    folder = store.folder(dataset_key(dataset, recipe, labels, p, given))
    with folder.using():
        ready = Prepared.load(folder)
        if ready is not None and not repair:
            return ready
        start = time.perf_counter()
        extras = [b for b in (p.label_branch, p.weight_branch) if b]
        plan = make_plan(recipe, dataset.available, dataset.branches, extras)
        claimed = folder.plan()
        if claimed is not None:
            specs_ = Specs.from_dict(claimed["specs"], source=str(folder.path / "plan.json"))
        else:
            specs_ = given or compute_specs(dataset, p, recipe, client=client)
        specs_ = check_specs(specs_, plan, recipe, dataset)
        layout = Layout.from_specs(specs_, p)
        dataset = dataset.with_step(partition_step(p.chunk_size, len(dataset.files)), plan.columns)
        dataset, roles, claimed = _claim(folder, dataset, layout, specs_, p, labels is not None)
        _, names = _shard_names(dataset)
        if repair:
            _check_all(folder, [names[i, a][0] for i, a, _ in dataset.partitions])
        found = [folder.written(names[i, a][0]) for i, a, _ in dataset.partitions]
        missing = [k for k, info in enumerate(found) if info is None]
        writer = WriteShard(Tensorize(plan, layout, p, "train", labels), folder, names, roles)
        tasks = dataset.map_partitions(writer, plan.columns)
        if missing:  # each task returns the record of the shard it wrote (or found written)
            for k, info in zip(missing, compute([tasks[k] for k in missing], client), strict=True):
                found[k] = info
        infos = [info for info in found if info is not None]
        manifest = {
            **claimed,
            "shards": [dataclasses.asdict(s) for s in sorted(infos, key=lambda s: (s.file, s.start))],
            "events": sum(s.rows for s in infos),
            "columns": _columns(layout, roles),
            "package": _version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(folder.path / "manifest.json", manifest)
        ready = Prepared.of(folder, manifest)
        seconds = time.perf_counter() - start
        _log.info(
            "prepared %s: %d events in %d shards (%d written) in %.1f s", folder.key[:12], ready.events,
            len(ready.shards), len(missing), seconds,
        )  # fmt: skip
        removed = store.evict(keep=folder.key)
        if removed:
            _log.info("store over %d bytes: evicted %s", store.max_bytes, ", ".join(k[:12] for k in removed))
        return ready


def _claim(
    folder: Folder, dataset: Dataset, layout: Layout, specs: Specs, p: Params, labelled: bool
) -> tuple[Dataset, Roles, dict[str, Any]]:
    """Claim the key's plan (or adopt the one another preparation claimed first): ``dataset`` cut
    into its shards' partitions, the column roles and the plan."""
    order, names = _shard_names(dataset)
    roles = Roles.choose(
        [*layout.flat, *(n for n, _ in layout.jagged)],
        label=labelled or p.label_branch is not None,
        weight=p.weight_branch is not None,
    )
    proposed = {
        "format": FORMAT, "key": folder.key, "identities": order,
        "paths": [f.path for f in dataset.files], "specs": specs.to_dict(),
        "roles": dataclasses.asdict(roles),
        "shards": [{"name": names[i, a][0], "file": names[i, a][1], "start": a, "stop": b}
                   for i, a, b in dataset.partitions],
    }  # fmt: skip
    claimed = folder.claim(proposed)
    current = {identity(f): i for i, f in enumerate(dataset.files)}
    parts = sorted(
        (current[claimed["identities"][s["file"]]], s["start"], s["stop"]) for s in claimed["shards"]
    )
    return dataclasses.replace(dataset, partitions=tuple(parts)), Roles(**claimed["roles"]), claimed


def _check_all(folder: Folder, names: Sequence[str]) -> None:
    """Forget every shard whose size or checksum is not its record's (``--repair``)."""
    for name in names:
        info = folder.written(name)
        if info is None:
            continue
        try:
            read_table(folder.path / name, info, folder.key)
        except PreparedError as err:
            _log.warning("%s", err)
            folder.forget(name)


def _columns(layout: Layout, roles: Roles) -> dict[str, Any]:
    return {
        "entry": roles.entry,
        "rows": roles.rows,
        "features": layout.features,
        "flat": list(layout.flat),
        "jagged": dict(layout.jagged),
        "label": roles.label,
        "weight": roles.weight,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlaas4hep-dask")
    except PackageNotFoundError:
        return "unknown"
