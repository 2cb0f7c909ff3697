"""preproc.json: new branches and cuts, validated before any data is read, applied per partition.

Order of the steps (the order of the cut-flow table):

1. ``new_branch`` entries in file order; each is built, then its own cuts (``cut`` or
   ``cut_1``, ``cut_2``, ... in numeric order) are applied, then its ``keys_to_remove`` are
   dropped.  A new branch may use earlier new branches.
2. ``flat_cut`` entries in file order.
3. ``jagged_cut`` entries in file order.

All cuts combine as a logical AND over events, so the order changes only the cut-flow table.
A jagged cut ``[expr, "any"]`` keeps an event if at least one element passes; ``"all"`` keeps
it if every element passes.  An event with an empty list fails ``any`` and passes ``all``
(there is no element that fails), as in NumPy and awkward.

``remove: "True"`` drops a branch from the features after its cuts (later steps may still use
it); ``keys_to_remove`` drops existing branches for good: a later step that uses one is an
error.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep_dask.errors import ConfigError, ExpressionError
from mlaas4hep_dask.handle._expressions import Expression
from mlaas4hep_dask.handle._jagged import Jagged
from mlaas4hep_dask.handle._recipe import BranchCuts, Cut, NewBranch, Preproc, _lib, load_preproc
from mlaas4hep_dask.read._branches import Branch

__all__ = [
    "BranchCuts", "Cut", "NewBranch", "Plan", "Preproc", "Selection", "load_preproc", "make_plan", "passing",
]  # fmt: skip


def passing(keep: np.ndarray | None, n: int) -> np.ndarray:
    """Positions of the events that pass, from a keep mask (``None``: all ``n`` events)."""
    return np.arange(n) if keep is None else np.flatnonzero(keep)


def _empty(branch: Branch) -> ak.Array:
    values = np.zeros(0, dtype=branch.dtype)
    return ak.unflatten(values, np.zeros(0, dtype=np.int64)) if branch.is_jagged else ak.Array(values)


@dataclasses.dataclass(frozen=True)
class Selection:
    """One preprocessed partition.

    Attributes
    ----------
    record
        Features and extra columns of the events that pass every cut.
    cutflow
        Events before any cut, then after each cut in turn.
    keep
        Which input events pass (``None``: all of them).
    """

    record: ak.Array
    cutflow: list[int]
    keep: np.ndarray | None

    @property
    def positions(self) -> np.ndarray:
        """Positions, in the input partition, of the events in :attr:`record`."""
        return passing(self.keep, self.cutflow[0])


@dataclasses.dataclass(frozen=True)
class Plan:
    """Preprocessing checked against a tree's branches: what to read, what comes out.

    Attributes
    ----------
    columns
        Branches to read from the files.
    branches
        The features after preprocessing (selected branches, then new ones), with kinds.
    cuts
        The cuts, in cut-flow order.
    preproc
        The preprocessing (``None``: nothing to do).
    extras
        Columns carried along that are not features (a label or weight branch).
    """

    columns: tuple[str, ...]
    branches: Mapping[str, Branch]
    cuts: tuple[Cut, ...]
    preproc: Preproc | None
    extras: Mapping[str, Branch] = dataclasses.field(default_factory=dict)

    def evaluate(self, array: Any) -> tuple[dict[str, Any], list[Any]]:
        """Feature columns and per-cut event masks of an (awkward or dask-awkward) array."""
        return self._evaluate({c: array[c] for c in array.fields})

    def select_plain(
        self, flat: Mapping[str, np.ndarray], lists: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
        """:meth:`select` on plain arrays (each flat branch's values, each jagged branch's
        ``(starts, stops, content)``), for a few events: the passing events' flat values and
        lists, and their positions.  The same numbers as on awkward arrays, without their
        fixed cost per operation (see :mod:`mlaas4hep_dask.handle._jagged`).
        """
        env: dict[str, Any] = dict(flat)
        env.update((name, Jagged.of(*parts)) for name, parts in lists.items())
        n = len(next(iter(env.values()))) if env else 0
        fields, masks = self._evaluate(env)
        keep = _cumulative(masks)[1] if masks else None
        out_flat: dict[str, np.ndarray] = {}
        out_lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, value in fields.items():
            if isinstance(value, Jagged):
                out_lists[name] = value.lists(keep)
            else:
                value = np.broadcast_to(np.asarray(value), (n,))  # a constant new branch
                out_flat[name] = value if keep is None else value[keep]
        return out_flat, out_lists, np.arange(n) if keep is None else np.flatnonzero(keep)

    def _evaluate(self, env: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        new = self.preproc.new_branches if self.preproc else ()
        masks = []
        with np.errstate(all="ignore"):  # log(0) = -inf is data, counted as non-finite in specs
            for nb in new:
                env[nb.name] = _run(f"new_branch {nb.name!r} def", nb.expr, nb.expr.evaluate, env)
            for cut in self.cuts:
                masks.append(_run(cut.key, cut.expr, cut.mask, env))
        return {name: env[name] for name in (*self.branches, *self.extras) if name in env}, masks

    def select(self, array: ak.Array) -> Selection:
        """Apply to one concrete partition: the passing events, the cut flow, the keep mask."""
        fields, masks = self.evaluate(array)
        record = ak.zip(fields, depth_limit=1)
        if not masks:
            return Selection(record, [len(array)], None)
        flow, keep = _cumulative(masks)
        return Selection(record[keep], [len(array), *flow], keep)

    def for_scoring(self) -> Plan:
        """This plan without what only the label or weight needs: what scoring raw events reads.

        New branches that no feature, cut or other kept new branch uses are dropped, and with
        them the raw branches only they read (a truth branch that made the label, say).
        """
        need = set(self.branches) | {n for cut in self.cuts for n in cut.expr.names}
        kept = []
        for nb in reversed(self.preproc.new_branches if self.preproc else ()):
            if nb.name in need:
                need |= set(nb.expr.names)
                kept.append(nb)
        preproc = (
            None
            if self.preproc is None
            else dataclasses.replace(self.preproc, new_branches=tuple(kept[::-1]))
        )
        return Plan(tuple(c for c in self.columns if c in need), self.branches, self.cuts, preproc)

    @property
    def cut_columns(self) -> tuple[str, ...]:
        """The branches to read to decide which events pass (nothing when there is no cut)."""
        if not self.cuts or self.preproc is None:
            return ()
        names: dict[str, None] = {}
        for expr in [nb.expr for nb in self.preproc.new_branches] + [c.expr for c in self.cuts]:
            names.update((n, None) for n in expr.names if n in self.columns)
        return tuple(names)

    def keep(self, array: ak.Array) -> np.ndarray | None:
        """Which events of a concrete partition pass every cut (``None``: no cuts).

        ``array`` needs only :attr:`cut_columns`.
        """
        _, masks = self.evaluate(array)
        return _cumulative(masks)[1] if masks else None

    def lazy(self, array: Any) -> Any:
        """Apply to a dask-awkward array: the features of the passing events, lazily."""
        fields, masks = self.evaluate(array)
        lib = _lib(array)
        record = lib.zip(fields, depth_limit=1)
        if not masks:
            return record
        keep = masks[0]
        for mask in masks[1:]:
            keep = keep & mask
        return record[keep]


def _cumulative(masks: Sequence[Any]) -> tuple[list[int], np.ndarray]:
    """Events passing after each mask in turn, and the final AND of all of them."""
    keep = np.ones(len(masks[0]), dtype=bool)
    flow = []
    for mask in masks:
        keep &= (mask if isinstance(mask, np.ndarray) else ak.to_numpy(mask)).astype(bool, copy=False)
        flow.append(int(np.count_nonzero(keep)))
    return flow, keep


def _run(where: str, expr: Expression, fn: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate, turning a failure on the data into an error naming the preproc.json entry."""
    try:
        return fn(env)
    except (ValueError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExpressionError(f"preproc {where}: {expr.text!r} failed on the data: {reason}") from None


def _unknown(where: str, name: str, known: Mapping[str, Branch], removed: Mapping[str, str]) -> ConfigError:
    if name in removed:
        return ConfigError(f"{where}: branch {name!r} was removed by {removed[name]} (keys_to_remove)")
    near = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; nearest: {', '.join(map(repr, near))}" if near else ""
    return ConfigError(f"{where}: unknown branch {name!r}{hint}")


def _check_names(
    where: str, expr: Expression, known: Mapping[str, Branch], removed: Mapping[str, str]
) -> None:
    for name in expr.names:
        if name not in known or name in removed:
            raise _unknown(where, name, known, removed)


def _infer(where: str, expr: Expression, known: Mapping[str, Branch]) -> tuple[str, str, str | None]:
    """Kind, dtype and counter of an expression, evaluating it on empty arrays of the right types."""
    jagged = [known[n] for n in expr.names if known[n].is_jagged]
    counters = {b.counter for b in jagged}
    if len(counters) > 1 and None not in counters:
        listed = ", ".join(f"{b.name!r} (counted by {b.counter!r})" for b in jagged)
        raise ConfigError(f"{where}: {expr.text!r} combines jagged branches of different lengths: {listed}")
    with np.errstate(all="ignore"):
        try:
            value = ak.Array(expr.evaluate({n: _empty(known[n]) for n in expr.names}))
        except Exception as err:  # awkward's own message says what does not fit
            raise ConfigError(f"{where}: {expr.text!r} cannot be computed: {err}") from None
    if value.ndim > 2:
        raise ConfigError(f"{where}: {expr.text!r} is doubly jagged")
    dtype = ak.to_numpy(ak.flatten(value, axis=None)).dtype
    counter = counters.pop() if len(counters) == 1 else None
    return ("jagged" if value.ndim == 2 else "flat"), dtype.name, counter


def make_plan(
    preproc: Preproc | None,
    available: Mapping[str, Branch],
    selected: Mapping[str, Branch],
    extras: Sequence[str] = (),
) -> Plan:
    """Check ``preproc`` against a tree's branches and return the :class:`Plan`.

    Every name, kind and removal is checked here, before any data is read.

    Parameters
    ----------
    preproc
        The preprocessing, or ``None``.
    available
        Every usable branch of the tree (cuts and definitions may use any of them).
    selected
        The branches chosen as features by params.json.
    extras
        Flat branches to carry along without being features (label, weight); they may be
        raw branches or new branches.
    """
    if preproc is None:
        return dataclasses.replace(make_plan(Preproc(), available, selected, extras), preproc=None)
    known = dict(available)
    features = dict(selected)
    removed: dict[str, str] = {}
    read: dict[str, None] = dict.fromkeys(selected)

    def use(where: str, expr: Expression) -> None:
        _check_names(where, expr, known, removed)
        read.update((n, None) for n in expr.names if n in available)

    for nb in preproc.new_branches:
        where = f"preproc new_branch {nb.name!r}"
        if nb.name in known:
            raise ConfigError(f"{where}: a branch named {nb.name!r} already exists; choose another name")
        use(f"{where} def", nb.expr)
        kind, dtype, counter = _infer(f"{where} def", nb.expr, known)
        if kind != nb.kind:
            raise ConfigError(f"{where}: 'type' is {nb.kind!r} but {nb.expr.text!r} is {kind}")
        known[nb.name] = features[nb.name] = Branch(nb.name, kind, dtype, counter)
        _check_cuts(where, nb.cuts, known, use)
        if nb.remove:
            del features[nb.name]
        for key in nb.keys_to_remove:
            if key not in known or key in removed:
                raise _unknown(f"{where} keys_to_remove", key, known, removed)
            removed[key] = f"new_branch {nb.name!r}"
            features.pop(key, None)
    for entry in (*preproc.flat_cuts, *preproc.jagged_cuts):
        where = f"preproc {entry.section} {entry.branch!r}"
        if entry.branch not in known or entry.branch in removed:
            raise _unknown(where, entry.branch, known, removed)
        kind = known[entry.branch].kind
        wanted = "flat" if entry.section == "flat_cut" else "jagged"
        if kind != wanted:
            other = "jagged_cut with 'any' or 'all'" if kind == "jagged" else "flat_cut"
            raise ConfigError(f"{where}: {entry.branch!r} is a {kind} branch; put its cut under {other}")
        _check_cuts(where, entry.cuts, known, use)
        if entry.remove:
            features.pop(entry.branch, None)
    extra: dict[str, Branch] = {}
    for name in extras:
        if name not in known or name in removed:
            raise _unknown("params (label_branch / weight_branch)", name, known, removed)
        if known[name].is_jagged:
            raise ConfigError(f"params: {name!r} is a jagged branch; a label or weight branch must be flat")
        if name in features:
            raise ConfigError(
                f"params: {name!r} is a feature; a label or weight branch must not be one: "
                "add it to 'exclude_branches' and compute the specs again"
            )
        extra[name] = known[name]
        if name in available:
            read.setdefault(name)
    if not features:
        raise ConfigError("preproc: every feature branch was removed; nothing is left to train on")
    return Plan(
        columns=tuple(read), branches=features, cuts=tuple(preproc.cuts), preproc=preproc, extras=extra
    )


def _check_cuts(where: str, cuts: Sequence[Cut], known: Mapping[str, Branch], use: Any) -> None:
    for cut in cuts:
        at = f"{where} {cut.key.rsplit('.', 1)[1]}"
        use(at, cut.expr)
        kind, _, _ = _infer(at, cut.expr, known)
        if cut.reduce is None and kind == "jagged":
            raise ConfigError(f'{at}: {cut.expr.text!r} is per element; make it ["...", "any"|"all"]')
        if cut.reduce is not None and kind == "flat":
            raise ConfigError(
                f"{at}: {cut.expr.text!r} is one value per event; 'any'/'all' needs a jagged branch"
            )
