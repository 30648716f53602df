"""Host devices passed through with VFIO: PCI devices, mediated devices (vGPUs), AP.

:class:`VFIOOps` is ``client.vfio``. Part of :mod:`qmplex.ops`. What each operation
sends is a row of :mod:`qmplex.ops.device_table`; ``client.devices.device_del``
unplugs them.
"""

from __future__ import annotations

from ..futures import Future
from . import device_table as table
from .device_table import plug
from .namespace import Namespace

__all__ = ["VFIOOps"]


class VFIOOps(Namespace):
    """VFIO pass-through (``client.vfio``): ``vfio_device_add``,
    ``pci_vfio_device_add``, ``pci_vfio_mediated_device_add``,
    ``ap_vfio_mediated_device_add``."""

    __slots__ = ()

    def vfio_device_add(self, dev_id: str, bdf: str, romfile: str | None = None, *,
                        timeout: float | None = None) -> Future[None]:
        """Pass a host PCI device through (``device_add`` of ``vfio-pci``).

        Sends ``{"driver": "vfio-pci", "id": DEV_ID, "host": BDF}`` plus ``"romfile"``
        when given.

        Args:
            dev_id: the new device's id.
            bdf: the host device's PCI address, e.g. ``"0000:01:00.0"``.
            romfile: the option ROM file ("" for none); omitted when None.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or address, wrong types.
        """
        return plug(self._executor, table.VFIO_DEVICE, timeout, dev_id=dev_id, bdf=bdf,
                    romfile=romfile)

    def pci_vfio_device_add(self, dev_id: str, bdf: str, addr: str, bus: str = "",
                            romfile: str | None = None, *,
                            timeout: float | None = None) -> Future[None]:
        """Like :meth:`vfio_device_add`, at a given slot (``"addr"``) and bus.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or address, wrong types.
        """
        return plug(self._executor, table.PCI_VFIO_DEVICE, timeout, dev_id=dev_id, bdf=bdf,
                    addr=addr, bus=bus, romfile=romfile)

    def pci_vfio_mediated_device_add(self, dev_id: str, sysfsdev: str, addr: str = "",
                                     bus: str = "", romfile: str | None = None, *,
                                     timeout: float | None = None) -> Future[None]:
        """Plug a VFIO mediated device (``device_add`` of ``vfio-pci`` with
        ``"sysfsdev"``), e.g. a vGPU.

        Args:
            dev_id: the new device's id.
            sysfsdev: the mediated device's sysfs path
                (``/sys/bus/mdev/devices/UUID``).
            addr: the slot ("": QEMU chooses).
            bus: the PCI bus ("": QEMU chooses).
            romfile: the option ROM file; omitted when None.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or path, wrong types.
        """
        return plug(self._executor, table.PCI_VFIO_MEDIATED_DEVICE, timeout, dev_id=dev_id,
                    sysfsdev=sysfsdev, addr=addr, bus=bus, romfile=romfile)

    def ap_vfio_mediated_device_add(self, sysfsdev: str, *, dev_id: str | None = None,
                                    timeout: float | None = None) -> Future[None]:
        """Plug an s390x crypto (AP) mediated device (``device_add`` of ``vfio-ap``).

        Args:
            sysfsdev: the mediated device's sysfs path.
            dev_id: the new device's id (omitted when None; QEMU then names it by
                its QOM path only).
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty path or id, wrong types.
        """
        return plug(self._executor, table.AP_VFIO_MEDIATED_DEVICE, timeout,
                    sysfsdev=sysfsdev, dev_id=dev_id)
