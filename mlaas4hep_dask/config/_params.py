"""Typed configuration: ``params.json`` and ``files.txt``, loaded and validated.

The original MLaaS4HEP ``params.json`` keeps working: every key it knew is accepted, the
ones without an effect here produce a warning, and unknown keys are an error that suggests
the nearest known key (a typo should not be ignored silently).
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlaas4hep_dask.config._files import load_json
from mlaas4hep_dask.config._samples import is_sample_list, load_samples
from mlaas4hep_dask.errors import ConfigError

__all__ = ["Params", "load_labels", "load_params", "read_file_list"]

_DEFAULT_IDENTIFIERS = ("run", "event", "luminosityBlock")

#: Keys of the original tool's params.json that are accepted but do nothing here.
_WITHOUT_EFFECT = {
    "hist": "plots are written by `mlaas4hep train` into the run directory",
    "dtype": "features are always float32",
}

#: Original key -> our key.
_ALIASES = {"branch": "tree"}


@dataclasses.dataclass(frozen=True)
class Params:
    """Run parameters, read from ``params.json``.

    Attributes
    ----------
    nevts
        Total number of events to use over all files, ``-1`` for all.  Each file contributes
        in proportion to its number of entries.
    chunk_size
        Events per Dask partition (and per mixed training chunk).  The original tool's
        default was 1000, far too small for Dask tasks; ours is 100 000.
    epochs, batch_size, shuffle, split
        Training settings (used by the training stage).
    tree
        Path of the TTree in each file (the original key ``branch`` is accepted); ``None``
        takes the file's only TTree.
    identifier
        Branches that identify events (run, event number, ...): never features.
    selected_branches, exclude_branches
        Names or glob patterns choosing the branches to use; empty selection means all.
    redirector
        XRootD redirector prefixed to ``/store/...`` paths that do not exist locally.
    xrootd_handler
        ``"xrootd"`` (XRootD client, the fastest here) or ``"fsspec"`` (fsspec-xrootd).
    split, test_fraction
        ``split`` is the fraction of events held out from training (the original key);
        ``test_fraction`` of the held-out events form the test set, the rest validation.
        Defaults 0.3 and 0.5: 70% train, 15% validation, 15% test.
    normalize
        ``"minmax"`` (to [0, 1] with the specs' min/max), ``"standard"`` (mean 0, std 1) or
        ``"none"``.  A constant branch maps to 0.
    max_jagged
        Cap on the slots of every jagged branch (``None``: the specs' ``jdim``).
    pad_value
        Value of padded slots, after normalization (default 0).
    jagged_counts
        Append one ``count(NAME)`` column per jagged branch (its true number of items,
        normalized by its ``jdim``), so padded slots are distinguishable from real values.
    nan_policy, nan
        Non-finite feature values: ``"replace"`` them by ``nan`` (after normalization;
        default 0) or ``"drop"`` the event.
    label_branch
        Take the target from this flat branch (regression, per-event truth) instead of
        labels.txt.
    weight_branch
        Per-event weights from this flat branch.  The metrics and plots use them as they are;
        the fit uses them normalized (``weight_norm``).
    weight_norm
        How the training split's weights are scaled for the fit: ``"class"`` (default; each
        class's weights sum to its number of events, so weights of any size train as well as
        weights of 1: XGBoost's ``min_child_weight`` and the learning rate assume that scale),
        ``"mean"`` (the mean weight is 1; regression always uses this) or ``"none"``.
    class_weight
        ``"balanced"``: every class weighs the same in the fit (each sums to
        ``events / classes``), for classes of very different sizes.  ``null`` (default): as
        the events come.
    prefetch
        Chunks prepared ahead of the trainer (memory holds at most ``prefetch + 1`` chunks).
    learning_rate
        Optimizer step size for PyTorch models (and Keras models we compile).
    batch_size_per_trainer, lr_scaling, warmup_epochs
        Data-parallel training with a batch per trainer (``null``, default: ``batch_size`` is
        the batch of one step, split over the trainers, as one trainer would take it): each
        of ``N`` trainers takes this many events a step, so a step takes ``N`` times as many
        and an epoch ``N`` times fewer steps; its learning rate is ``learning_rate`` times
        ``N`` (``lr_scaling`` ``"linear"``), ``sqrt(N)`` (``"sqrt"``) or 1 (``"none"``),
        reached linearly over the first ``warmup_epochs`` (default 0: from the start).
    max_fit_events
        Largest training set given at once to a scikit-learn estimator without
        ``partial_fit`` (which cannot stream).
    trainers
        ``N > 1`` puts data-parallel PyTorch or Keras trainers on ``N`` Dask workers
        (``"all"``: one per worker, or per GPU worker), each reading its own share of the data;
        ``null`` (default) or ``1`` trains them in the client process.  For XGBoost, the number
        of workers it trains on (default: all).
    seed
        Seed for everything random (generation, shuffling, splits).
    verbose
        0 quiet, 1 progress, 2 debug.
    """

    nevts: int = -1
    chunk_size: int = 100_000
    epochs: int = 10
    batch_size: int = 50
    shuffle: bool = True
    split: float = 0.3
    tree: str | None = None
    identifier: tuple[str, ...] = _DEFAULT_IDENTIFIERS
    selected_branches: tuple[str, ...] = ()
    exclude_branches: tuple[str, ...] = ()
    redirector: str = "root://cms-xrd-global.cern.ch"
    xrootd_handler: str = "xrootd"
    nan: float = 0.0
    test_fraction: float = 0.5
    normalize: str = "minmax"
    max_jagged: int | None = None
    pad_value: float = 0.0
    jagged_counts: bool = False
    nan_policy: str = "replace"
    label_branch: str | None = None
    weight_branch: str | None = None
    weight_norm: str = "class"
    class_weight: str | None = None
    prefetch: int = 2
    learning_rate: float = 1e-3
    batch_size_per_trainer: int | None = None
    lr_scaling: str = "linear"
    warmup_epochs: float = 0.0
    max_fit_events: int = 2_000_000
    trainers: int | str | None = None
    seed: int = 42
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 and self.chunk_size != -1:
            raise ConfigError(f"params: 'chunk_size' must be positive or -1, not {self.chunk_size!r}")
        if self.nevts < -1 or self.nevts == 0:
            raise ConfigError(f"params: 'nevts' must be positive or -1 (all), not {self.nevts!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("params: 'epochs' and 'batch_size' must be at least 1")
        if not 0.0 <= self.split < 1.0:
            raise ConfigError(f"params: 'split' must be in [0, 1), not {self.split!r}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ConfigError(f"params: 'test_fraction' must be in [0, 1], not {self.test_fraction!r}")
        for key, allowed in (
            ("normalize", ("minmax", "standard", "none")),
            ("nan_policy", ("replace", "drop")),
            ("weight_norm", ("class", "mean", "none")),
            ("class_weight", (None, "balanced")),
            ("lr_scaling", ("linear", "sqrt", "none")),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"params: {key!r} must be one of {allowed}, not {getattr(self, key)!r}")
        if self.max_jagged is not None and self.max_jagged < 0:
            raise ConfigError(f"params: 'max_jagged' must be >= 0 or null, not {self.max_jagged!r}")
        if self.trainers not in (None, "all") and (
            isinstance(self.trainers, bool) or not isinstance(self.trainers, int) or self.trainers < 1
        ):
            raise ConfigError(f"params: 'trainers' must be a positive number or 'all', not {self.trainers!r}")
        if self.batch_size_per_trainer is not None and self.batch_size_per_trainer < 1:
            raise ConfigError("params: 'batch_size_per_trainer' must be at least 1, or null")
        if self.warmup_epochs < 0:
            raise ConfigError(f"params: 'warmup_epochs' must be >= 0, not {self.warmup_epochs!r}")
        if self.prefetch < 0:
            raise ConfigError(f"params: 'prefetch' must be >= 0, not {self.prefetch!r}")
        if self.xrootd_handler not in ("xrootd", "fsspec"):
            raise ConfigError(
                f"params: 'xrootd_handler' must be 'xrootd' or 'fsspec', not {self.xrootd_handler!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "params") -> Params:
        """Build params from a mapping, validating names and types.

        Parameters
        ----------
        data
            The decoded ``params.json``.
        source
            Where the mapping came from, for error messages.

        Examples
        --------
        >>> Params.from_dict({"branch": "events", "chunk_size": 5000}).tree
        'events'
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in _WITHOUT_EFFECT:
                warnings.warn(
                    f"{source}: key {key!r} has no effect in mlaas4hep-dask ({_WITHOUT_EFFECT[key]})",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            name = _ALIASES.get(key, key)
            if name not in fields:
                near = difflib.get_close_matches(key, [*fields, *_ALIASES], n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
            kwargs[name] = _coerce(name, value, fields[name].default, source)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(str(err).replace("params:", f"{source}:", 1)) from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A JSON schema of params.json (new keys and the original tool's, with defaults)."""
        kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
        properties: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            default = f.default
            if isinstance(default, tuple):
                prop: dict[str, Any] = {"type": ["array", "string"], "items": {"type": "string"}}
                default = list(default)
            elif f.name == "trainers":
                prop = {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "all"}, {"type": "null"}]}
            elif default is None:
                prop = {"type": ["integer", "null"] if f.name in _OPTIONAL_INTS else ["string", "null"]}
            else:
                prop = {"type": kinds[type(default)]}
            properties[f.name] = {**prop, "default": default}
        for old, new in _ALIASES.items():
            properties[old] = {"$ref": f"#/properties/{new}", "description": f"original name of {new!r}"}
        for key, why in _WITHOUT_EFFECT.items():
            properties[key] = {"description": f"accepted, no effect: {why}"}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "mlaas4hep-dask params.json",
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }

    def to_dict(self) -> dict[str, Any]:
        """The params as a JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


_OPTIONAL_INTS = ("max_jagged", "batch_size_per_trainer")


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Check one value against the type of its default and normalise lists."""
    bad = ConfigError(f"{source}: key {name!r} has the wrong type: {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise bad
    if name in ("tree", "label_branch", "weight_branch", "class_weight"):
        if value is None or isinstance(value, str):
            return value
        raise bad
    if name == "trainers":
        if value is None or value == "all" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise bad
    if name in _OPTIONAL_INTS:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise bad
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise bad
    return value


def load_params(params: Params | Mapping[str, Any] | str | Path | None) -> Params:
    """Return :class:`Params` from a path to ``params.json``, a dict, or ``None`` (defaults).

    Examples
    --------
    >>> load_params(None).chunk_size
    100000
    """
    if params is None:
        return Params()
    if isinstance(params, Params):
        return params
    if isinstance(params, Mapping):
        return Params.from_dict(params)
    data = load_json(params, "params")
    if not isinstance(data, dict):
        raise ConfigError(f"params file {str(params)!r} must hold a JSON object, not {type(data).__name__}")
    return Params.from_dict(data, source=f"params file {str(params)!r}")


def read_file_list(files: str | Path | Sequence[str | Path]) -> list[str]:
    """Return the input files from a ``files.txt``, a sample list, a comma-separated string, or a list.

    In ``files.txt`` blank lines and lines starting with ``#`` are ignored, as in the original
    tool.  A ``.yaml``/``.json`` file is a sample list (see :mod:`mlaas4hep_dask.config._samples`).

    Examples
    --------
    >>> read_file_list("a.root,b.root")
    ['a.root', 'b.root']
    """
    if is_sample_list(files):
        return load_samples(files).files  # type: ignore[arg-type]
    if isinstance(files, (str, Path)):
        text = str(files)
        path = Path(text)
        if "," not in text and not text.endswith(".root") and "://" not in text:
            if not path.is_file():
                raise ConfigError(f"files list {text!r} does not exist")
            lines = (line.strip() for line in path.read_text().splitlines())
            out = [line for line in lines if line and not line.startswith("#")]
            if not out:
                raise ConfigError(f"files list {text!r} names no input file")
            return out
        out = [part.strip() for part in text.split(",") if part.strip()]
    else:
        out = [str(f) for f in files]
    if not out:
        raise ConfigError("no input files given")
    return out


def load_labels(labels: str | Path | Sequence[float] | None, nfiles: int) -> list[float] | None:
    """Return one label per input file from a ``labels.txt`` path, a comma list, or a list.

    ``labels.txt`` holds one number per line (the original MLaaS4HEP format), in the order of
    ``files.txt``; blank lines and ``#`` comments are ignored.

    Examples
    --------
    >>> load_labels([1, 0], 2)
    [1.0, 0.0]
    """
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        text = str(labels)
        path = Path(text)
        if path.is_file():
            lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
            raw: list[Any] = [line for line in lines if line]
            where = f"labels file {text!r}"
        elif "," in text or _is_number(text):
            raw, where = [p.strip() for p in text.split(",") if p.strip()], "labels"
        else:
            raise ConfigError(f"labels file {text!r} does not exist")
    else:
        raw, where = list(labels), "labels"
    out = []
    for i, value in enumerate(raw, 1):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or _is_number(str(value))):
            raise ConfigError(f"{where}: entry {i} is {value!r}, not a number")
        out.append(float(value))
    if len(out) != nfiles:
        raise ConfigError(
            f"{where} gives {len(out)} labels for {nfiles} input files: give one label per file"
        )
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
