"""Deprecated alias of :mod:`qmplex.core.framing` (moved in 0.2; removed in 0.3)."""

import warnings

from .core.framing import *  # noqa: F403
from .core.framing import __all__  # noqa: F401

warnings.warn("qmplex.framing moved to qmplex.core.framing", DeprecationWarning, stacklevel=2)
