"""Peak RSS of an event flood, import time, and callgrind instructions per command."""

from __future__ import annotations

import pytest

from .conftest import Measure


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_flood_peak_rss(measure: Measure, impl: str) -> None:
    measure("flood_rss", impl)


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_import_time(measure: Measure, impl: str) -> None:
    measure("import", impl)


@pytest.mark.parametrize("impl", ["qmplex", "floor"])
def test_instructions_per_pipelined_command(measure: Measure, impl: str) -> None:
    measure("instructions", impl)
