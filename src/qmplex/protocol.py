"""Deprecated alias of :mod:`qmplex.core.protocol` (moved in 0.2; removed in 0.3)."""

import warnings

from .core.messages import Greeting, QMPVersion, Reply  # noqa: F401
from .core.protocol import *  # noqa: F403
from .core.protocol import __all__  # noqa: F401

warnings.warn("qmplex.protocol moved to qmplex.core.protocol", DeprecationWarning,
              stacklevel=2)
