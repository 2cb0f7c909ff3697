"""preproc.json as data: its sections, entries and cuts, parsed and checked for structure.

Names are checked against a tree's branches later, by :func:`mlaas4hep_dask.handle.make_plan`;
see that module for the semantics.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import awkward as ak

from mlaas4hep_dask.config._files import load_json
from mlaas4hep_dask.errors import ConfigError, ExpressionError
from mlaas4hep_dask.handle._expressions import Expression, parse
from mlaas4hep_dask.handle._jagged import Jagged

__all__ = ["BranchCuts", "Cut", "NewBranch", "Preproc", "load_preproc"]

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
        """Events passing, on awkward, dask-awkward or :class:`._jagged.Jagged` arrays."""
        value = self.expr.evaluate(namespace)
        if self.reduce is None:
            return value
        if isinstance(value, Jagged):
            return value.reduce(self.reduce)
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
