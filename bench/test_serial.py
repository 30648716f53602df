"""Serial round trips against the C fake peer: one command, its reply, the next."""

from __future__ import annotations

import pytest

from .conftest import Measure


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_serial_round_trips(measure: Measure, impl: str) -> None:
    measure("serial", impl)
