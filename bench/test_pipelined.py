"""Pipelined throughput against the C fake peer, 64 commands in flight."""

from __future__ import annotations

import pytest

from .conftest import Measure


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_pipelined_window_64(measure: Measure, impl: str) -> None:
    measure("pipelined", impl)
