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
    "RowBuffers",
    "Selection",
    "Specs",
    "split_codes",
    "SPLITS",
    "Tensorize",
]

_WHERE = {
    "Block": "_tensorize",
    "BranchCuts": "_preprocess",
    "BranchSpec": "_specs",
    "build_specs_graph": "_specs",
    "Chunk": "_tensorize",
    "compute_specs": "_specs",
    "Cut": "_preprocess",
    "Expression": "_expressions",
    "FileSpec": "_specs",
    "FUNCTIONS": "_expressions",
    "Layout": "_tensorize",
    "load_preproc": "_preprocess",
    "make_plan": "_preprocess",
    "NewBranch": "_preprocess",
    "Packed": "_tensorize",
    "parse": "_expressions",
    "passing": "_preprocess",
    "Plan": "_preprocess",
    "Preproc": "_preprocess",
    "RowBuffers": "_tensorize",
    "Selection": "_preprocess",
    "Specs": "_specs",
    "split_codes": "_tensorize",
    "SPLITS": "_tensorize",
    "Tensorize": "_tensorize",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
