"""Bulk plug and unplug of SCSI disks on a real QEMU (skipped without one)."""

from __future__ import annotations

import pytest

from .conftest import Measure
from .hotplug import QemuVM

pytestmark = pytest.mark.qemu

IMPLS = ["qmplex", "floor", "qemu.qmp", "qmplex serial"]


@pytest.mark.parametrize("impl", IMPLS)
def test_plug_scsi_disks(measure: Measure, qemu_vm: QemuVM, impl: str) -> None:
    measure("plug", impl, qemu_vm)


@pytest.mark.parametrize("impl", IMPLS)
def test_unplug_scsi_disks(measure: Measure, qemu_vm: QemuVM, impl: str) -> None:
    measure("unplug", impl, qemu_vm)
