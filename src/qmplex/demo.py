"""Deprecated alias of :mod:`qmplex.cli.demo`, where the bulk hot-plug demo moved.

Importing it warns (``DeprecationWarning``); it will be removed in the next release.
Import ``qmplex.cli.demo`` instead (same names).
"""

import warnings

from .cli.demo import (
    DEFAULT_DISKS,
    DEFAULT_QEMU,
    DemoError,
    DemoResult,
    Phase,
    ProgressBar,
    ProgressCallback,
    run_demo,
)

__all__ = [
    "DEFAULT_DISKS",
    "DEFAULT_QEMU",
    "DemoError",
    "DemoResult",
    "Phase",
    "ProgressBar",
    "ProgressCallback",
    "run_demo",
]

warnings.warn("qmplex.demo is deprecated: import qmplex.cli.demo instead",
              DeprecationWarning, stacklevel=2)
