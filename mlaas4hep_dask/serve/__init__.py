"""Inference: a repository of trained run bundles and (next) the HTTP service that serves them."""

from __future__ import annotations

from .repository import BundleError, ModelInfo, ModelNotFoundError, Repository, pack

__all__ = ["BundleError", "ModelInfo", "ModelNotFoundError", "Repository", "pack"]
