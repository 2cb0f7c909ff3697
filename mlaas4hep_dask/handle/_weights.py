"""Training weights: the events' own weights, scaled for the fit.

The metrics and plots weigh events as they come (the ``weight_branch``): those are the
physical weights.  The fit gets them scaled so that their size does not matter: weights of
0.007 (HZZ's ``EventWeight``) would otherwise fall under XGBoost's ``min_child_weight`` and
shrink every gradient step of the others.  The factors come from one pass over the training
split (:func:`sums` per partition, added up), made with the count of its events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from mlaas4hep_dask.config._params import Params
from mlaas4hep_dask.errors import ConfigError

__all__ = ["WeightScale", "scale_of", "sums"]

Sums = tuple[np.ndarray, np.ndarray, np.ndarray]  # classes (empty: no classes), counts, sums of weights


@dataclasses.dataclass(frozen=True)
class WeightScale:
    """One factor per class (``classes`` sorted), or one for every event (``classes`` empty)."""

    classes: tuple[float, ...]
    factors: tuple[float, ...]

    def apply(self, y: np.ndarray | None, w: np.ndarray | None, n: int) -> np.ndarray:
        """The training weights of ``n`` events with targets ``y`` and weights ``w`` (``None``: 1)."""
        base = np.ones(n, np.float32) if w is None else w
        factors = np.asarray(self.factors, np.float32)
        if not self.classes or y is None:
            return base * factors[0]
        at = np.searchsorted(np.asarray(self.classes), y).clip(0, len(factors) - 1)
        return base * factors[at]


def sums(y: np.ndarray | None, w: np.ndarray | None, classes: bool) -> Sums:
    """Events and summed weights of one partition, per class when ``classes``."""
    n = len(y) if y is not None else (0 if w is None else len(w))
    weights = np.ones(n) if w is None else w.astype(np.float64)
    if not classes or y is None:
        return np.zeros(0), np.array([n]), np.array([weights.sum()])
    values, inverse = np.unique(y, return_inverse=True)
    return values, np.bincount(inverse, minlength=len(values)), np.bincount(inverse, weights, len(values))


def scale_of(parts: Iterable[Sums], params: Params, classes: bool) -> WeightScale | None:
    """The factors for ``params.weight_norm`` and ``params.class_weight`` (``None``: weights as they are).

    Raises
    ------
    ConfigError
        A class whose weights do not sum to a positive number (they cannot be normalized),
        or ``class_weight`` without classes.
    """
    if params.class_weight is not None and not classes:
        raise ConfigError("params: 'class_weight' needs classes (labels, or an integer label_branch)")
    if params.class_weight is None and params.weight_norm == "none":
        return None
    count: dict[float, int] = {}
    total: dict[float, float] = {}
    for values, n, s in parts:
        keys = values.tolist() if classes else [0.0]
        for key, ni, si in zip(keys, n.tolist(), s.tolist(), strict=True):
            count[key] = count.get(key, 0) + ni
            total[key] = total.get(key, 0.0) + si
    what = f"the weights ('{params.weight_branch}')" if params.weight_branch else "the weights"
    for key, summed in total.items():
        if count[key] and summed <= 0:
            of = f" of class {key:g}" if classes else ""
            raise ConfigError(
                f"{what}{of} sum to {summed:g} in the training split: they cannot be normalized; "
                "set 'weight_norm' to 'none' (and no 'class_weight') to train on them as they are"
            )
    keys = sorted(k for k in count if count[k])
    n_all = sum(count.values())
    if params.class_weight == "balanced":
        factors = [n_all / (len(keys) * total[k]) for k in keys]
    elif params.weight_norm == "class" and classes:
        factors = [count[k] / total[k] for k in keys]
    else:  # "mean", and "class" without classes
        factor = n_all / sum(total.values())
        factors = [factor] * len(keys)
    if not classes:
        return WeightScale((), (factors[0],)) if factors else None
    return WeightScale(tuple(float(k) for k in keys), tuple(factors))
