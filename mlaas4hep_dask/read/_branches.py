"""Classify TTree branches by what the pipeline can do with them, and select them."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import uproot

from mlaas4hep_dask.errors import SchemaError

__all__ = ["Branch", "classify", "select_branches"]

Kind = Literal["flat", "jagged"]
_GLOB = set("*?[")


@dataclasses.dataclass(frozen=True)
class Branch:
    """A numeric branch the pipeline can use: one value per event, or a list per event.

    ``counter`` names the branch holding a jagged branch's list lengths, when the file has
    one (jagged branches with the same counter have equal lengths in every event).
    """

    name: str
    kind: Kind
    dtype: str
    counter: str | None = None

    @property
    def is_jagged(self) -> bool:
        return self.kind == "jagged"


def _numeric_dtype(interp: Any) -> np.dtype | None:
    """The native dtype of a plain numerical interpretation, else ``None``."""
    if not isinstance(interp, uproot.interpretation.numerical.Numerical):
        return None
    dtype = np.dtype(interp.to_dtype)
    if dtype.shape != () or dtype.kind not in "biuf":
        return None
    return dtype


def classify(name: str, branch: Any) -> Branch | str | None:
    """Return a :class:`Branch`, the reason it is unsupported, or ``None`` for containers.

    Parameters
    ----------
    name
        The branch's full path in the tree.
    branch
        The ``uproot.TBranch``.
    """
    if len(branch.branches) > 0:
        return None  # a split object: its leaves are listed on their own
    typename = branch.typename
    try:
        interp = branch.interpretation
    except uproot.interpretation.identify.UnknownInterpretation:
        return f"unreadable branch ({typename})"
    if isinstance(interp, uproot.interpretation.grouped.AsGrouped):
        return None
    dtype = _numeric_dtype(interp)
    if dtype is not None:
        return Branch(name, "flat", dtype.name)
    if isinstance(interp, uproot.interpretation.numerical.Numerical):
        return f"fixed-size array branch ({typename}) is not supported"
    if isinstance(interp, uproot.interpretation.jagged.AsJagged):
        dtype = _numeric_dtype(interp.content)
        if dtype is not None:
            counter = branch.count_branch
            return Branch(name, "jagged", dtype.name, counter.name if counter is not None else None)
        return f"object branch ({typename}) is not supported"
    if isinstance(interp, uproot.interpretation.strings.AsStrings):
        return f"non-numeric branch ({typename})"
    depth = typename.count("vector<") + typename.count("[]")
    if depth >= 2:
        return f"doubly-jagged branch ({typename}) is not supported"
    return f"object branch ({typename}) is not supported"


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a name is one of ``patterns`` (names or globs): a set lookup and one compiled regex,
    not a pattern at a time (trees have a thousand branches, selections dozens of patterns)."""
    exact = {p for p in patterns if not _GLOB & set(p)}
    globs = [p for p in patterns if _GLOB & set(p)]
    regex = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None
    return lambda name: name in exact or (regex is not None and regex.match(name) is not None)


def _no_match_error(pattern: str, key: str, names: Iterable[str]) -> SchemaError:
    near = difflib.get_close_matches(pattern, list(names), n=3)
    hint = f"; nearest: {', '.join(map(repr, near))}" if near else ""
    return SchemaError(f"params {key!r}: {pattern!r} matches no branch in the tree{hint}")


def select_branches(
    classified: Mapping[str, Branch | str],
    selected: Sequence[str],
    excluded: Sequence[str],
    identifiers: Sequence[str],
    source: str,
) -> tuple[dict[str, Branch], dict[str, str]]:
    """Apply ``selected_branches``/``exclude_branches``/``identifier`` to a tree's branches.

    Returns the usable branches (in tree order) and the skipped ones with their reasons.
    An unsupported branch named explicitly (not through a glob) is an error; one picked up
    by a glob or by default is skipped with a warning.

    Parameters
    ----------
    classified
        Every leaf branch of the tree: a :class:`Branch` or the reason it is unsupported.
    selected, excluded
        Names or glob patterns; empty ``selected`` means every branch.
    identifiers
        Event-identifying branches, never used as features.
    source
        The file, for messages.
    """
    names = list(classified)
    for pattern in selected:
        if pattern not in classified and not any(map(_matcher([pattern]), names)):
            raise _no_match_error(pattern, "selected_branches", names)
    is_selected, is_excluded = _matcher(selected), _matcher(excluded)
    chosen = [n for n in names if (not selected or is_selected(n)) and not is_excluded(n)]
    chosen = [n for n in chosen if n not in identifiers]

    usable: dict[str, Branch] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        info = classified[name]
        if isinstance(info, Branch):
            usable[name] = info
        elif name in selected:
            raise SchemaError(f"branch {name!r} in {source!r} cannot be used: {info}")
        else:
            skipped[name] = info
    if skipped:
        listed = ", ".join(f"{n!r} ({r})" for n, r in list(skipped.items())[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"skipping {len(skipped)} unsupported branches: {listed}{more}", UserWarning, stacklevel=3
        )
    if not usable:
        raise SchemaError(f"no usable numeric branch selected in {source!r}")
    return usable, skipped
