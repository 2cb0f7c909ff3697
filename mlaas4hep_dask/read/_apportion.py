"""Split an integer total in proportion to weights (largest-remainder method)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["apportion"]


def apportion(weights: Sequence[int], total: int) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that add up to ``total``.

    Each share is the floor of its exact quota plus at most one, so every share is within
    one of exact; no share exceeds its weight when ``total <= sum(weights)``.

    Examples
    --------
    >>> apportion([300, 100], 10)
    [8, 2]
    >>> apportion([1, 1, 1], 2)
    [1, 1, 0]
    """
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return [0] * len(w)
    quota = w / w.sum() * total
    shares = np.floor(quota).astype(np.int64)
    remainder = total - int(shares.sum())
    # stable order: larger fractional part first, then earlier index
    order = np.lexsort((np.arange(len(w)), -(quota - shares)))
    shares[order[:remainder]] += 1
    return [int(s) for s in shares]
