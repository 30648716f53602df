"""Many connections on one reactor: aggregate rate, memory per idle connection."""

from __future__ import annotations

import pytest

from .conftest import Measure


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_many_vms_aggregate_rate(measure: Measure, impl: str) -> None:
    measure("many_vms", impl)


@pytest.mark.parametrize("impl", ["qmplex", "floor", "qemu.qmp"])
def test_memory_per_idle_connection(measure: Measure, impl: str) -> None:
    measure("idle_memory", impl)
