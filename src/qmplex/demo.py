"""Deprecated alias of :mod:`qmplex.cli.demo`, where the bulk hot-plug demo moved.

Importing it warns (``DeprecationWarning``); it will be removed in the next release.
Import ``qmplex.cli.demo`` instead (same names).
"""

import warnings

from .cli.demo import *  # noqa: F403
from .cli.demo import __all__  # noqa: F401

warnings.warn("qmplex.demo is deprecated: import qmplex.cli.demo instead",
              DeprecationWarning, stacklevel=2)
