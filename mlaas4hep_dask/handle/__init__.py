"""Handling events: safe expressions, preprocessing (new branches, cuts), specs, tensorizing, weights."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "Block",
    "BranchCuts",
    "BranchSpec",
    "build_specs_graph",
    "Chunk",
    "compute_specs",
    "Cut",
    "Expression",
    "FileSpec",
    "FUNCTIONS",
    "Layout",
    "load_preproc",
    "make_plan",
    "NewBranch",
    "Packed",
    "parse",
    "passing",
    "Plan",
    "Preproc",
    "received",
    "RowBuffers",
    "Selection",
    "Specs",
    "split_codes",
    "SPLITS",
    "Tensorize",
]

_WHERE = {
    "Block": "_rows",
    "BranchCuts": "_recipe",
    "BranchSpec": "_specs",
    "build_specs_graph": "_specs",
    "Chunk": "_rows",
    "compute_specs": "_specs",
    "Cut": "_recipe",
    "Expression": "_expressions",
    "FileSpec": "_specs",
    "FUNCTIONS": "_expressions",
    "Layout": "_layout",
    "load_preproc": "_recipe",
    "make_plan": "_preprocess",
    "NewBranch": "_recipe",
    "Packed": "_layout",
    "parse": "_expressions",
    "passing": "_preprocess",
    "Plan": "_preprocess",
    "Preproc": "_recipe",
    "received": "_rows",
    "RowBuffers": "_rows",
    "Selection": "_preprocess",
    "Specs": "_specs",
    "split_codes": "_tensorize",
    "SPLITS": "_tensorize",
    "Tensorize": "_tensorize",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
