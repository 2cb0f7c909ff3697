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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from ._branches import Branch
from .config import load_json
from .errors import ConfigError, ExpressionError
from .expressions import Expression, parse

__all__ = ["BranchCuts", "Cut", "NewBranch", "Plan", "Preproc", "Selection", "load_preproc", "make_plan"]

_SECTIONS = ("new_branch", "flat_cut", "jagged_cut")
_CUT_KEY = re.compile(r"^cut(?:_(\d+))?$")
_NEW_BRANCH_KEYS = {"def", "type", "remove", "keys_to_remove"}
_CUT_SECTION_KEYS = {"remove"}


@dataclasses.dataclass(frozen=True)
class Cut:
    """One cut: where it is in preproc.json, its comparison, and ``any``/``all`` if jagged."""

    key: str
    branch: str
    expr: Expression
    reduce: Literal["any", "all"] | None = None

    @property
    def label(self) -> str:
        return f"{self.expr.text} ({self.reduce})" if self.reduce else self.expr.text

    def mask(self, namespace: Mapping[str, Any]) -> Any:
        """Events passing, on awkward or dask-awkward arrays."""
        value = self.expr.evaluate(namespace)
        if self.reduce is None:
            return value
        lib = _lib(value)
        return lib.any(value, axis=1) if self.reduce == "any" else lib.all(value, axis=1)


@dataclasses.dataclass(frozen=True)
class NewBranch:
    """A ``new_branch`` entry."""

    name: str
    expr: Expression
    kind: Literal["flat", "jagged"]
    cuts: tuple[Cut, ...]
    remove: bool
    keys_to_remove: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BranchCuts:
    """A ``flat_cut`` or ``jagged_cut`` entry."""

    section: Literal["flat_cut", "jagged_cut"]
    branch: str
    cuts: tuple[Cut, ...]
    remove: bool


@dataclasses.dataclass(frozen=True)
class Preproc:
    """A parsed preproc.json (see the module docstring for the semantics).

    Examples
    --------
    >>> p = Preproc.from_dict({"flat_cut": {"nLeptons": {"cut": "0<=nLeptons<=2"}}})
    >>> [c.label for c in p.cuts]
    ['0<=nLeptons<=2']
    """

    new_branches: tuple[NewBranch, ...] = ()
    flat_cuts: tuple[BranchCuts, ...] = ()
    jagged_cuts: tuple[BranchCuts, ...] = ()
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def cuts(self) -> list[Cut]:
        """Every cut, in the order of the cut-flow table."""
        out = [c for nb in self.new_branches for c in nb.cuts]
        return out + [c for entry in (*self.flat_cuts, *self.jagged_cuts) for c in entry.cuts]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "preproc") -> Preproc:
        """Parse and check the structure of a decoded preproc.json (names are checked later)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} must hold a JSON object, not {type(data).__name__}")
        unknown = [k for k in data if k not in _SECTIONS]
        if unknown:
            raise ConfigError(
                f"{source}: unknown section {unknown[0]!r}; sections are {', '.join(_SECTIONS)}"
            )
        for section in _SECTIONS:
            if not isinstance(data.get(section, {}), Mapping):
                raise ConfigError(f"{source}: {section!r} must be an object of branch entries")
        new = tuple(_new_branch(n, e, source) for n, e in data.get("new_branch", {}).items())
        flat = tuple(_branch_cuts("flat_cut", n, e, source) for n, e in data.get("flat_cut", {}).items())
        jagged = tuple(
            _branch_cuts("jagged_cut", n, e, source) for n, e in data.get("jagged_cut", {}).items()
        )
        return cls(new, flat, jagged, source=dict(data))


def _entry(section: str, name: str, entry: Any, source: str, allowed: set[str]) -> tuple[str, dict[str, Any]]:
    where = f"{source} {section} {name!r}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be an object")
    for key in entry:
        if key not in allowed and not _CUT_KEY.match(key):
            near = difflib.get_close_matches(key, [*allowed, "cut", "cut_1"], n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    return where, dict(entry)


def _flag(where: str, entry: Mapping[str, Any], key: str) -> bool:
    value = entry.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f'{where}: {key!r} must be true/false or "True"/"False", not {value!r}')


def _parse(where: str, text: Any) -> Expression:
    try:
        return parse(text)
    except ExpressionError as err:
        raise ExpressionError(f"{where}: {err}") from None


def _cuts(where: str, section: str, name: str, entry: Mapping[str, Any], jagged: bool) -> tuple[Cut, ...]:
    keyed = []
    for key, value in entry.items():
        match = _CUT_KEY.match(key)
        if match:
            keyed.append((int(match.group(1) or 0), key, value))
    if any(k == "cut" for _, k, _ in keyed) and len(keyed) > 1:
        raise ConfigError(f"{where}: use either 'cut' or 'cut_1', 'cut_2', ..., not both")
    out = []
    for _, key, value in sorted(keyed):
        at = f"{where} {key}"
        if jagged:
            if not (isinstance(value, list) and len(value) == 2 and value[1] in ("any", "all")):
                raise ConfigError(
                    f'{at}: a cut on a jagged branch is ["expression", "any"|"all"], not {value!r}'
                )
            expr, reduce = _parse(at, value[0]), value[1]
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{at}: a cut on a flat branch is an expression string, not {value!r}")
            expr, reduce = _parse(at, value), None
        if not expr.is_comparison:
            raise ConfigError(
                f"{at}: a cut must be a comparison such as 'x > 3' or '1 <= x <= 16', not {expr.text!r}"
            )
        if name not in expr.names:
            raise ConfigError(
                f"{at}: the cut {expr.text!r} does not use the branch {name!r} it is listed under"
            )
        out.append(Cut(key=f"{section}.{name}.{key}", branch=name, expr=expr, reduce=reduce))
    return tuple(out)


def _new_branch(name: str, entry: Any, source: str) -> NewBranch:
    where, entry = _entry("new_branch", name, entry, source, _NEW_BRANCH_KEYS)
    if not name.isidentifier():
        raise ConfigError(f"{where}: the name must be an identifier (letters, digits, _)")
    if "def" not in entry:
        raise ConfigError(f"{where}: missing 'def' (the expression that defines it)")
    kind = entry.get("type")
    if kind not in ("flat", "jagged"):
        raise ConfigError(f'{where}: \'type\' must be "flat" or "jagged", not {kind!r}')
    keys = entry.get("keys_to_remove", [])
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ConfigError(f"{where}: 'keys_to_remove' must be a list of branch names")
    return NewBranch(
        name=name,
        expr=_parse(f"{where} def", entry["def"]),
        kind=kind,
        cuts=_cuts(where, "new_branch", name, entry, kind == "jagged"),
        remove=_flag(where, entry, "remove"),
        keys_to_remove=tuple(keys),
    )


def _branch_cuts(
    section: Literal["flat_cut", "jagged_cut"], name: str, entry: Any, source: str
) -> BranchCuts:
    where, entry = _entry(section, name, entry, source, _CUT_SECTION_KEYS)
    cuts = _cuts(where, section, name, entry, section == "jagged_cut")
    if not cuts:
        raise ConfigError(f"{where}: no 'cut' given")
    return BranchCuts(section=section, branch=name, cuts=cuts, remove=_flag(where, entry, "remove"))


def load_preproc(preproc: Preproc | Mapping[str, Any] | str | Path | None) -> Preproc | None:
    """Return a :class:`Preproc` from a preproc.json path, a dict, or ``None``."""
    if preproc is None or isinstance(preproc, Preproc):
        return preproc
    if isinstance(preproc, Mapping):
        return Preproc.from_dict(preproc)
    return Preproc.from_dict(load_json(preproc, "preproc"), source=f"preproc file {str(preproc)!r}")


def _lib(array: Any) -> Any:
    """``dask_awkward`` for lazy arrays, else ``awkward``."""
    if type(array).__module__.startswith("dask_awkward"):
        import dask_awkward as dak

        return dak
    return ak


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
        env = {c: array[c] for c in array.fields}
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
        keep &= ak.to_numpy(mask).astype(bool, copy=False)
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
