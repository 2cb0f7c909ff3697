"""Reading configuration files (JSON, YAML): every failure a :class:`ConfigError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlaas4hep_dask.errors import ConfigError

__all__ = ["load_json", "load_yaml_mapping", "parse_json"]


def load_json(path: str | Path, what: str) -> Any:
    """Read a JSON file, turning every failure into a :class:`ConfigError` naming it.

    Parameters
    ----------
    path
        The JSON file.
    what
        What the file is (``"params"``, ``"preproc"``...), for messages.
    """
    return parse_json(_read(path, what), f"{what} file {str(path)!r}")


def _read(path: str | Path, what: str) -> str:
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {str(path)!r} does not exist") from None
    except OSError as err:
        raise ConfigError(f"{what} file {str(path)!r} cannot be read: {err.strerror}") from None


def parse_json(text: str, where: str) -> Any:
    """Parse JSON text; a :class:`ConfigError` says ``where`` it is not valid (line and column)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every failure is a :class:`ConfigError` naming it."""
    import yaml

    try:
        data = yaml.safe_load(_read(path, what))
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {str(path)!r} must hold a mapping")
    return data
