"""The device_add table (qmplex.ops.device_table): its rows match their methods, and
the builder sends members in the row's order.

The wire behaviour of every row is tested through the operations in
test_operations.py; this file checks the table itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from qmplex import QMPVersion
from qmplex.errors import ValidationError
from qmplex.ops import CPUOps, DeviceOps, MemoryOps, VFIOOps
from qmplex.ops import device_table as table
from qmplex.ops.device_table import DeviceSpec, Prop, Send, device_args

from .recorder import Recorder

# Each row, and the method whose arguments it names.
ROWS: dict[DeviceSpec, Callable[..., Any]] = {
    table.DEVICE: DeviceOps.device_add,
    table.SCSI_DEVICE: DeviceOps.scsi_device_add,
    table.PCI_DEVICE: DeviceOps.pci_device_add,
    table.PCI_VHOST_USER_DEVICE: DeviceOps.pci_vhost_user_device_add,
    table.NET_PCI_DEVICE: DeviceOps.net_pci_device_add,
    table.NET_CCW_DEVICE: DeviceOps.net_ccw_device_add,
    table.PCI_VSOCK: DeviceOps.pci_vsock_add,
    table.VIRT_SERIAL_PORT: DeviceOps.virt_serial_port_add,
    table.VFIO_DEVICE: VFIOOps.vfio_device_add,
    table.PCI_VFIO_DEVICE: VFIOOps.pci_vfio_device_add,
    table.PCI_VFIO_MEDIATED_DEVICE: VFIOOps.pci_vfio_mediated_device_add,
    table.CCW_VFIO_DEVICE: VFIOOps.ccw_vfio_device_add,
    table.AP_VFIO_MEDIATED_DEVICE: VFIOOps.ap_vfio_mediated_device_add,
    table.CPU_DEVICE: CPUOps.cpu_device_add,
}


def test_every_row_is_listed() -> None:
    rows = {v for v in vars(table).values() if isinstance(v, DeviceSpec)}
    assert rows == set(ROWS) | {table.MEMORY_DEVICE}


@pytest.mark.parametrize("spec", list(ROWS), ids=lambda s: s.op)
def test_row_names_its_methods_arguments(spec: DeviceSpec) -> None:
    method = ROWS[spec]
    assert spec.op == method.__name__
    params = set(inspect.signature(method).parameters) - {"self", "timeout", "create_iommufd"}
    assert spec.names == params


def test_memory_row_names_memdev_adds_device_arguments() -> None:
    params = set(inspect.signature(MemoryOps.memdev_add).parameters)
    assert table.MEMORY_DEVICE.names <= params


def test_members_are_sent_in_the_rows_order() -> None:
    args, named = device_args(Recorder(None), table.SCSI_DEVICE, {
        "blockdev_id": "b0", "dev_id": "d0", "driver": "scsi-hd", "bus": "scsi0.0",
        "scsi_id": 1, "lun": 2, "shared": True, "logical_block_size": 4096,
        "physical_block_size": 4096})
    assert list(args) == ["driver", "id", "drive", "bus", "scsi-id", "lun", "share-rw",
                          "logical_block_size", "physical_block_size"]
    assert named == []


def test_a_property_since_a_version_is_refused_for_older_peers() -> None:
    values = {"blockdev_id": "b0", "dev_id": "d0", "driver": "scsi-hd", "bus": None,
              "devno": None, "romfile": None, "shared": True, "disable_modern": False,
              "discard": False, "iothread": None, "logical_block_size": None,
              "physical_block_size": None}
    new, _ = device_args(Recorder(QMPVersion(2, 10, 0)), table.DEVICE, values)
    assert new["share-rw"] is True
    with pytest.raises(ValidationError, match=r"device_add: shared=True needs share-rw "
                                              r"\(QEMU 2.10 or newer\); the peer is QEMU 2.9.0"):
        device_args(Recorder(QMPVersion(2, 9, 0)), table.DEVICE, values)
    old, _ = device_args(Recorder(QMPVersion(2, 9, 0)), table.DEVICE, {**values, "shared": False})
    assert "share-rw" not in old  # not asked: nothing to refuse


def test_wire_names() -> None:
    assert Prop("scsi_id", Send.OPTIONAL_INT).wire == "scsi-id"
    assert Prop("dev_id", Send.ID, "id").wire == "id"
    # Device properties spelled with "_" keep it: the rows give their wire names.
    assert table.DEVICE.props[-2].wire == "logical_block_size"
    assert {p.wire for p in table.PCI_DEVICE.props} >= {
        "logical_block_size", "physical_block_size", "num-queues", "share-rw"}


def test_the_first_bad_argument_in_row_order_is_reported() -> None:
    with pytest.raises(ValidationError, match="dev_id"):
        device_args(Recorder(None), table.PCI_VHOST_USER_DEVICE, {
            "driver": "vhost-user-fs-pci", "dev_id": "", "chardev_id": "", "addr": 1,
            "bus": ""})
