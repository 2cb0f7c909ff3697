"""What every data-parallel trainer sets up: its threads, and the averaging of its gradients.

A trainer on a worker gets that worker's cores (its ``nthreads``) and nothing more: PyTorch's
intra-op pool takes them, its inter-op pool one thread (a training step is one chain of
operators), and the loader's pool, which reads and tensorizes the trainer's share of the
data between steps, a quarter of them (at least one).  Without these limits each of ``N``
trainers on a machine sized its pools to every core of the machine, and ``N`` trainers and
their readers fought over the same cores.

Gradients are averaged with one all-reduce of all of them flattened into a single buffer
after the backward pass (what ``DistributedDataParallel`` does in buckets, overlapped with
the backward pass): for the models trained here, of 10^4 to 10^6 weights, one call is cheaper
than several, and the step's phases (compute, all-reduce, update) can be timed apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["averaging", "thread_counts"]


def thread_counts(cores: int) -> dict[str, int]:
    """The threads of a trainer given ``cores``: PyTorch's two pools and the loader's.

    Examples
    --------
    >>> thread_counts(1), thread_counts(8)
    ({'torch': 1, 'interop': 1, 'loader': 1}, {'torch': 8, 'interop': 1, 'loader': 2})
    """
    cores = max(1, int(cores))
    return {"torch": cores, "interop": 1, "loader": max(1, cores // 4)}


def averaging(model: Any, world: int) -> Callable[[], None]:
    """Start every rank from rank 0's weights; return what averages the gradients over the ranks.

    The returned function, called after each backward pass, sums every parameter's gradient
    over the ``world`` ranks in one all-reduce and divides by ``world`` (a parameter the step
    did not reach counts with a zero gradient, as ``DistributedDataParallel`` does with
    ``find_unused_parameters``).
    """
    import torch
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if world == 1:  # nothing to average (and no collective to wait in)
        return lambda: None
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        weights = _flatten_dense_tensors([p.data for p in params])
        dist.broadcast(weights, 0)
        for p, w in zip(params, _unflatten_dense_tensors(weights, [p.data for p in params]), strict=True):
            p.copy_(w)

    def average() -> None:
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(world)
        for g, mean in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(mean)

    return average
