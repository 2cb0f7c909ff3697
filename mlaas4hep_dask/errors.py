"""The one exception hierarchy of mlaas4hep-dask.

Every error a user can cause derives from :class:`MLaaSError` and also from the builtin
exception it refines, so ``except FileNotFoundError`` keeps working::

    MLaaSError(Exception)
    ├── ConfigError(ValueError)            params.json, preproc.json, labels, CLI arguments
    │   └── ExpressionError                 a preproc.json expression that does not parse or is not allowed
    ├── InputError(OSError)                 an input file cannot be read
    │   ├── InputNotFoundError(FileNotFoundError)   missing local file
    │   ├── NotRootFileError               the file is not ROOT
    │   ├── RemoteInputError(ConnectionError)       an XRootD/HTTP server does not answer
    │   └── PreparedError                  a prepared dataset's shard is missing or damaged
    ├── OutputError(OSError)                a run directory or specs file cannot be written
    ├── SchemaError(KeyError)               unknown tree or branch, unsupported branch type,
    │                                       files whose branches differ
    ├── SpecsError(ValueError)              a specs file that cannot be read or used
    └── TrainingError(RuntimeError)         data-parallel trainers failed or a worker was lost

The CLI prints ``str(error)`` on one line and exits with code 2.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExpressionError",
    "InputError",
    "InputNotFoundError",
    "MLaaSError",
    "NotRootFileError",
    "OutputError",
    "PreparedError",
    "RemoteInputError",
    "SchemaError",
    "SpecsError",
    "TrainingError",
]


class MLaaSError(Exception):
    """Base class of every error that mlaas4hep-dask raises on purpose."""

    def __str__(self) -> str:
        # KeyError quotes its message; our messages are sentences, so print them as they are.
        return str(self.args[0]) if self.args else self.__class__.__name__


def first_line(err: BaseException) -> str:
    """The first line of an error's message (``""`` when it has none): for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


class ConfigError(MLaaSError, ValueError):
    """A configuration input (params.json, preproc.json, labels, arguments) is invalid."""


class ExpressionError(ConfigError):
    """An expression in preproc.json does not parse or uses something not allowed."""


class InputError(MLaaSError, OSError):
    """An input data file cannot be opened or read."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A local input file does not exist."""


class NotRootFileError(InputError):
    """An input file exists but is not a ROOT file."""


class RemoteInputError(InputError, ConnectionError):
    """A remote input (``root://``, ``http(s)://``) cannot be reached."""


class PreparedError(InputError):
    """A shard of a prepared dataset is missing, or its size or checksum is not its manifest's.

    ``shard`` is the path of the shard (``None`` when the error is of the whole dataset).
    """

    def __init__(self, message: str, shard: object = None) -> None:
        super().__init__(message)
        self.shard = shard

    def __reduce__(self) -> tuple[object, ...]:  # raised on a worker, re-raised on the client
        return (type(self), (str(self), self.shard))


class OutputError(MLaaSError, OSError):
    """An output (a run directory, a specs file) cannot be written: a full disk, no permission."""


class SchemaError(MLaaSError, KeyError):
    """A tree or branch is missing, unsupported, or differs between files."""


class SpecsError(MLaaSError, ValueError):
    """A specs file cannot be read, or does not fit the data it is used with."""


class TrainingError(MLaaSError, RuntimeError):
    """Training on the workers failed: a trainer's error, or a worker lost beyond recovery.

    ``peer`` is true when a trainer failed only because another one was lost.
    """

    def __init__(self, message: str, peer: bool = False) -> None:
        super().__init__(message, peer)
        self.peer = peer
