"""Host devices passed through with VFIO: PCI devices, mediated devices (vGPUs), CCW, AP.

:class:`VFIOOps` is ``client.vfio``. Part of :mod:`qmplex.ops`. What each operation
sends is a row of :mod:`qmplex.ops.device_table`; ``client.devices.device_del``
unplugs them.

Every operation can use the ``iommufd`` backend (QEMU 9.0 or newer) instead of the
VFIO container: ``iommufd="iommufd0"`` names an ``iommufd`` object, which is
created first (``object-add``) unless ``create_iommufd=False`` (one object can serve
every VFIO device of a VM), and is removed again (``object-del``) if ``device_add``
fails.
"""

from __future__ import annotations

from typing import Any

from ..futures import Future
from . import device_table as table
from .args import check_bool
from .device_table import DeviceSpec, device_args
from .executor import command, object_add_args, undo_on_failure
from .namespace import Namespace

__all__ = ["VFIOOps"]


class VFIOOps(Namespace):
    """VFIO pass-through (``client.vfio``): ``vfio_device_add``,
    ``pci_vfio_device_add``, ``pci_vfio_mediated_device_add``,
    ``ccw_vfio_device_add``, ``ap_vfio_mediated_device_add``."""

    __slots__ = ()

    def _plug(self, spec: DeviceSpec, timeout: float | None, create_iommufd: bool,
              **values: Any) -> Future[None]:
        executor = self._executor
        check_bool(spec.op, "create_iommufd", create_iommufd)
        args, _ = device_args(executor, spec, values)
        iommufd = args.get("iommufd")
        if iommufd is None or not create_iommufd:
            return command(executor, "device_add", args, timeout)

        def _device(_: object) -> Future[None]:
            step = executor.execute("device_add", args, timeout=timeout)
            return undo_on_failure(executor, step, "object-del", {"id": iommufd}, timeout)

        backend = object_add_args(executor, "iommufd", iommufd, {})
        return executor.execute("object-add", backend, timeout=timeout).chain(_device)

    def vfio_device_add(self, dev_id: str, bdf: str, *, bus: str | None = None,
                        romfile: str | None = None, iommufd: str | None = None,
                        create_iommufd: bool = True,
                        timeout: float | None = None) -> Future[None]:
        """Pass a host PCI device through (``device_add`` of ``vfio-pci``).

        Sends ``{"driver": "vfio-pci", "id": DEV_ID, "host": BDF}`` plus ``"bus"``,
        ``"romfile"`` and ``"iommufd"`` when given.

        Args:
            dev_id: the new device's id.
            bdf: the host device's PCI address, e.g. ``"0000:01:00.0"``.
            bus: the bus, e.g. a ``pcie-root-port``'s id (None: QEMU chooses).
            romfile: the option ROM file ("" for none; None: QEMU's).
            iommufd: the id of an ``iommufd`` object to use (see the module).
            create_iommufd: create that object first (``object-add``).
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or address, wrong types, ``iommufd`` for a
                QEMU older than 9.0.
        """
        return self._plug(table.VFIO_DEVICE, timeout, create_iommufd, dev_id=dev_id,
                          bdf=bdf, bus=bus, romfile=romfile, iommufd=iommufd)

    def pci_vfio_device_add(self, dev_id: str, bdf: str, *, addr: str | None = None,
                            bus: str | None = None, romfile: str | None = None,
                            iommufd: str | None = None, create_iommufd: bool = True,
                            timeout: float | None = None) -> Future[None]:
        """Like :meth:`vfio_device_add`, at a given slot (``"addr"``) and bus.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or address, wrong types, ``iommufd`` for a
                QEMU older than 9.0.
        """
        return self._plug(table.PCI_VFIO_DEVICE, timeout, create_iommufd, dev_id=dev_id,
                          bdf=bdf, addr=addr, bus=bus, romfile=romfile, iommufd=iommufd)

    def pci_vfio_mediated_device_add(self, dev_id: str, sysfsdev: str, *,
                                     addr: str | None = None, bus: str | None = None,
                                     romfile: str | None = None, iommufd: str | None = None,
                                     create_iommufd: bool = True,
                                     timeout: float | None = None) -> Future[None]:
        """Plug a VFIO mediated device (``device_add`` of ``vfio-pci`` with
        ``"sysfsdev"``), e.g. a vGPU.

        Args:
            dev_id: the new device's id.
            sysfsdev: the mediated device's sysfs path
                (``/sys/bus/mdev/devices/UUID``).
            addr: the slot (None: QEMU chooses).
            bus: the PCI bus (None: QEMU chooses).
            romfile: the option ROM file ("" for none).
            iommufd: the id of an ``iommufd`` object to use (see the module).
            create_iommufd: create that object first (``object-add``).
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or path, wrong types, ``iommufd`` for a QEMU
                older than 9.0.
        """
        return self._plug(table.PCI_VFIO_MEDIATED_DEVICE, timeout, create_iommufd,
                          dev_id=dev_id, sysfsdev=sysfsdev, addr=addr, bus=bus,
                          romfile=romfile, iommufd=iommufd)

    def ccw_vfio_device_add(self, dev_id: str, sysfsdev: str, *, devno: str | None = None,
                            iommufd: str | None = None, create_iommufd: bool = True,
                            timeout: float | None = None) -> Future[None]:
        """Pass an s390x channel I/O device (a subchannel) through (``device_add`` of
        ``vfio-ccw``).

        Sends ``{"driver": "vfio-ccw", "id": DEV_ID, "sysfsdev": SYSFSDEV}`` plus
        ``"devno"`` and ``"iommufd"`` when given.

        Args:
            dev_id: the new device's id.
            sysfsdev: the mediated device's sysfs path
                (``/sys/bus/mdev/devices/UUID``).
            devno: the device number the guest sees, e.g. ``"fe.0.1234"`` (None: QEMU
                assigns one).
            iommufd: the id of an ``iommufd`` object to use (see the module).
            create_iommufd: create that object first (``object-add``).
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or path, wrong types, ``iommufd`` for a QEMU
                older than 9.0.
        """
        return self._plug(table.CCW_VFIO_DEVICE, timeout, create_iommufd, dev_id=dev_id,
                          sysfsdev=sysfsdev, devno=devno, iommufd=iommufd)

    def ap_vfio_mediated_device_add(self, sysfsdev: str, *, dev_id: str | None = None,
                                    iommufd: str | None = None, create_iommufd: bool = True,
                                    timeout: float | None = None) -> Future[None]:
        """Plug an s390x crypto (AP) mediated device (``device_add`` of ``vfio-ap``).
        AP devices have no device number: the AP bus addresses them by the adapters
        and domains of the mediated device.

        Args:
            sysfsdev: the mediated device's sysfs path.
            dev_id: the new device's id (None: QEMU names it by its QOM path only).
            iommufd: the id of an ``iommufd`` object to use (see the module).
            create_iommufd: create that object first (``object-add``).
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty path or id, wrong types, ``iommufd`` for a QEMU
                older than 9.0.
        """
        return self._plug(table.AP_VFIO_MEDIATED_DEVICE, timeout, create_iommufd,
                          sysfsdev=sysfsdev, dev_id=dev_id, iommufd=iommufd)
