"""A loader's batches in the frameworks' own types: torch tensors, a ``tf.data.Dataset``, an
``xgboost.QuantileDMatrix``.  Each framework is imported only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlaas4hep_dask.errors import ConfigError

if TYPE_CHECKING:
    from mlaas4hep_dask.batches._loader import BatchLoader
    from mlaas4hep_dask.handle._rows import Block

__all__ = ["dmatrix", "tf_dataset", "torch_batches"]


def torch_batches(loader: BatchLoader, device: str | None = None) -> Iterator[tuple[Any, ...]]:
    """One epoch of ``loader``'s batches as ``torch.Tensor`` (see :meth:`BatchLoader.torch`)."""
    import torch

    for batch in loader:
        tensors = tuple(None if a is None else torch.from_numpy(a) for a in batch)
        if device is not None:
            tensors = tuple(None if t is None else t.to(device, non_blocking=True) for t in tensors)
        yield tensors


def tf_dataset(loader: BatchLoader) -> Any:
    """``loader`` as a ``tf.data.Dataset`` (see :meth:`BatchLoader.tf_dataset`)."""
    import tensorflow as tf

    target = loader._tensorize.target_dtype
    if target is None:
        raise ConfigError("a tf.data.Dataset of (X, y) needs targets: give labels or 'label_branch'")
    signature: list[Any] = [tf.TensorSpec((None, loader.idim), tf.float32), tf.TensorSpec((None,), target)]
    if loader.weighted:
        signature.append(tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(lambda: iter(loader), output_signature=tuple(signature))


def dmatrix(loader: BatchLoader, ref: Any = None) -> Any:
    """``loader``'s chunks as an ``xgboost.QuantileDMatrix`` (see :meth:`BatchLoader.dmatrix`)."""
    import xgboost

    class _Chunks(xgboost.DataIter):
        def __init__(self) -> None:
            super().__init__()
            self.it: Iterator[Block] | None = None

        def next(self, input_data: Any) -> bool:
            if self.it is None:
                self.it = loader.iter_chunks(shuffle=False)
            chunk = next(self.it, None)
            if chunk is None:
                return False
            input_data(data=chunk.X, label=chunk.y, weight=chunk.w)
            return True

        def reset(self) -> None:
            self.it = None

    return xgboost.QuantileDMatrix(_Chunks(), ref=ref)
