"""Reliability suites: long runs are marked ``slow`` and skipped unless asked for.

Run them with ``QMPLEX_SLOW=1`` in the environment or with ``-m slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def _slow_requested(config: pytest.Config) -> bool:
    if os.environ.get("QMPLEX_SLOW") == "1":
        return True
    expr = str(config.getoption("markexpr") or "")
    return "slow" in expr and "not slow" not in expr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_requested(config):
        return
    skip = pytest.mark.skip(reason="slow: set QMPLEX_SLOW=1 or run with -m slow")
    for item in items:
        if "slow" in item.keywords and _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)
