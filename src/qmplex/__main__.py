"""``python -m qmplex``: the same as the ``qmplex`` command (see :mod:`qmplex.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
