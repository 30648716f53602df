"""Event floods from the C fake peer: delivered to a callback, and wanted by nobody."""

from __future__ import annotations

import pytest

from .conftest import Measure


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_event_flood_to_a_callback(measure: Measure, impl: str) -> None:
    measure("events", impl)


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp", "floor, split only"])
def test_event_flood_nobody_wants(measure: Measure, impl: str) -> None:
    measure("events_unwanted", impl)
