"""Specs given to a loader checked against its inputs after preprocessing."""

from __future__ import annotations

import dataclasses
import warnings

from mlaas4hep_dask.errors import SpecsError
from mlaas4hep_dask.handle._preprocess import Plan, Preproc
from mlaas4hep_dask.handle._specs import Specs
from mlaas4hep_dask.read._dataset import Dataset

__all__ = ["check_specs"]


def check_specs(specs: Specs, plan: Plan, recipe: Preproc | None, dataset: Dataset) -> Specs:
    """Refuse specs that do not describe these inputs after this preprocessing.

    Specs of the original tool list the flat branches, then the jagged ones: they are put in
    the tree's order (with a warning saying what moved); ours must match it already.
    """
    ours: dict[str, str] = {n: b.kind for n, b in plan.branches.items()}
    theirs = {n: b.kind for n, b in specs.branches.items()}
    if specs.from_original_tool and ours == theirs and list(ours) != list(theirs):
        moved = [n for n, o in zip(ours, theirs, strict=True) if n != o]
        warnings.warn(
            f"the original tool's specs list their branches in another order: {len(moved)} put in the "
            f"tree's order ({', '.join(moved[:6])}{', ...' if len(moved) > 6 else ''})",
            UserWarning,
            stacklevel=3,
        )
        specs = dataclasses.replace(specs, branches={n: specs.branches[n] for n in ours})
        theirs = ours
    if ours != theirs or list(ours) != list(theirs):
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        detail = (
            f"in the specs only: {missing[:5]}; in the data only: {extra[:5]}"
            if missing or extra
            else "order or kinds differ"
        )
        raise SpecsError(
            f"the specs do not describe these inputs after preprocessing ({detail}): "
            "compute the specs again with the same files, params.json and preproc.json"
        )
    recorded = (specs.preproc or {}).get("definition")
    current = dict(recipe.source) if recipe is not None else None
    if specs.from_original_tool:
        if current:
            warnings.warn(
                "specs in the original tool's format do not say which preproc.json made them", stacklevel=3
            )
    elif recorded != current:
        raise SpecsError("the specs were computed with a different preproc.json: compute them again")
    spec_paths = [f.path for f in specs.files]
    if spec_paths and spec_paths != [f.path for f in dataset.files]:
        warnings.warn(
            "the specs were computed on other input files: normalization uses their min/max",
            UserWarning,
            stacklevel=3,
        )
    return specs
