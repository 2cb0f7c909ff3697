"""Inference: a repository of trained run bundles and (next) the HTTP service that serves them."""

from __future__ import annotations

from mlaas4hep_dask.serve.repository import BundleError, ModelInfo, ModelNotFoundError, Repository, pack

__all__ = ["BundleError", "ModelInfo", "ModelNotFoundError", "Repository", "pack"]
