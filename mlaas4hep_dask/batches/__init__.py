"""Training batches: the BatchLoader (proportional mixing, shuffling, splits, prefetch), where it computes."""

from __future__ import annotations

from mlaas4hep_dask._lazy import exports

__all__ = [
    "BatchLoader",
    "deal",
    "Piece",
    "plan_chunks",
    "Shard",
]

_WHERE = {
    "BatchLoader": "_loader",
    "deal": "_plan",
    "Piece": "_plan",
    "plan_chunks": "_plan",
    "Shard": "_plan",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
