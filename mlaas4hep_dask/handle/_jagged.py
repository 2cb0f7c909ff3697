"""Lists of numbers as two NumPy arrays, for preprocessing a few events without awkward's overhead.

Scoring raw events runs the bundle's preproc.json on a handful of events per request; on
awkward arrays each operation costs a fixed ~0.1 ms of dispatch, about 25 ms for the demo's
recipe whatever the number of events.  :class:`Jagged` holds the events' lists as ``counts``
and one ``content`` array, and every whitelisted expression (element-wise NumPy ufuncs and
operators, see :mod:`mlaas4hep_dask.handle._expressions`) acts on the content: a flat branch is
repeated over its event's items, as awkward broadcasts it.  The results are the same numbers
as on awkward arrays (tested): training keeps the awkward path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Jagged"]


class Jagged(np.lib.mixins.NDArrayOperatorsMixin):
    """Event ``i`` holds ``content[offsets[i]:offsets[i + 1]]``.

    Examples
    --------
    >>> x = Jagged(np.array([2, 0, 1]), np.array([1.0, 2.0, 3.0]))
    >>> y = (x * np.array([10.0, 20.0, 30.0]) > 15).reduce("any")
    >>> y
    array([ True, False,  True])
    """

    __slots__ = ("content", "counts")

    def __init__(self, counts: np.ndarray, content: np.ndarray) -> None:
        self.counts = counts
        self.content = content

    @classmethod
    def of(cls, starts: np.ndarray, stops: np.ndarray, content: np.ndarray) -> Jagged:
        """From ``(starts, stops, content)``; the lists are copied together unless they already are."""
        counts = stops - starts
        if len(starts) and starts[0] == 0 and np.array_equal(starts[1:], stops[:-1]):
            return cls(counts, content[: stops[-1]])
        index = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return cls(counts, content[index + np.arange(len(index))])

    def __len__(self) -> int:
        return len(self.counts)

    def lists(self, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(starts, stops, content)`` of the events ``keep`` selects (all: ``None``)."""
        stops = np.cumsum(self.counts)
        starts = stops - self.counts
        if keep is not None:
            starts, stops = starts[keep], stops[keep]
        return starts, stops, self.content

    def reduce(self, how: str) -> np.ndarray:
        """Per event: whether ``any`` or ``all`` of its items are true."""
        true = np.concatenate([[0], np.cumsum(self.content.astype(bool), dtype=np.int64)])
        stops = np.cumsum(self.counts)
        passing = true[stops] - true[stops - self.counts]
        return passing > 0 if how == "any" else passing == self.counts

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__" or kwargs:
            return NotImplemented
        counts = self.counts
        operands = []
        for x in inputs:
            if isinstance(x, Jagged):
                if x.counts is not counts and not np.array_equal(x.counts, counts):
                    raise ValueError("cannot broadcast lists of different lengths in one event")
                operands.append(x.content)
            elif isinstance(x, np.ndarray) and x.ndim == 1:
                if len(x) != len(counts):
                    raise ValueError(f"cannot broadcast {len(x)} events against {len(counts)}")
                operands.append(np.repeat(x, counts))
            else:
                operands.append(x)
        return Jagged(counts, ufunc(*operands))
