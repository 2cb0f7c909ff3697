"""Which library uproot inflates ZLIB baskets with.

Most ROOT files are ZLIB-compressed, and inflating is most of the cost of reading them.  ISA-L
(the ``isal`` package, a dependency) inflates the same bytes faster than Python's ``zlib``
(1.3-2x for a whole read here), so every process that imports this package reads with it
unless ``MLAAS4HEP_ZLIB=zlib`` is set.  uproot's third choice, ``deflate``, fails with the
current ``deflate`` package, so it is not offered.

uproot looks the choice up on ``uproot.compression._DecompressZLIB``; setting
``uproot.ZLIB.library``, as its docstring suggests, does not reach the decompressor in uproot
5.7, so the class is where it is set.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import uproot.compression

from mlaas4hep_dask.errors import ConfigError

__all__ = ["LIBRARIES", "zlib_library"]

LIBRARIES = ("isal", "zlib")
_ENV = "MLAAS4HEP_ZLIB"


def zlib_library(choice: str | None = None) -> str:
    """Make uproot inflate ZLIB with ``choice`` (default: ``$MLAAS4HEP_ZLIB``, else ISA-L); return it.

    A library that is not installed falls back to ``zlib``; an unknown name in the environment
    is reported with a warning (this runs when the package is imported) and ignored.

    Examples
    --------
    >>> zlib_library("zlib")
    'zlib'
    >>> zlib_library("isal")
    'isal'
    """
    if choice is None:
        choice = os.environ.get(_ENV) or "isal"
        if choice not in LIBRARIES:
            warnings.warn(f"{_ENV}={choice!r} is not one of {', '.join(LIBRARIES)}: using isal", stacklevel=2)
            choice = "isal"
    elif choice not in LIBRARIES:
        raise ConfigError(f"unknown ZLIB library {choice!r}: use one of {', '.join(LIBRARIES)}")
    if choice == "isal" and importlib.util.find_spec("isal") is None:
        choice = "zlib"
    uproot.compression._DecompressZLIB.library = choice
    return choice
