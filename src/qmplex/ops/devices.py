"""Plugging and unplugging devices: disks, NICs, vhost-user, vsock, serial ports.

:class:`DeviceOps` is ``client.devices``. Part of :mod:`qmplex.ops`. What each
``..._device_add`` sends is a row of :mod:`qmplex.ops.device_table`; the methods here
only name their arguments. VFIO devices are in :mod:`qmplex.ops.vfio`, vCPUs in
:mod:`qmplex.ops.cpu`, memory devices in :mod:`qmplex.ops.memory`; ``device_del``
unplugs them all.
"""

from __future__ import annotations

from ..events import Event, EventFilter
from ..futures import Future
from . import device_table as table
from .args import check_id
from .device_table import plug
from .namespace import Namespace

__all__ = ["DeviceOps"]


class DeviceOps(Namespace):
    """Devices (``client.devices``): ``device_add``, ``scsi_device_add``,
    ``pci_device_add``, ``pci_vhost_user_device_add``, ``net_pci_device_add``,
    ``net_ccw_device_add``, ``pci_vsock_add``, ``virt_serial_port_add``,
    ``device_del``."""

    __slots__ = ()

    def device_add(self, blockdev_id: str, dev_id: str, driver: str, bus: str = "", *,
                   romfile: str | None = None, shared: bool = False,
                   disable_modern: bool = False, devno: str | None = None,
                   timeout: float | None = None) -> Future[None]:
        """Plug a device backed by a block node (``device_add`` with ``drive``).

        Sends ``{"driver": DRIVER, "id": DEV_ID, "drive": BLOCKDEV_ID}`` plus ``"bus"``
        (when not empty) or ``"devno"`` (a CCW device number, instead of the bus),
        ``"share-rw": true`` when ``shared`` (QEMU 2.10 or newer), ``"romfile"`` when
        given and ``"disable-modern": true`` when asked.

        Args:
            blockdev_id: the block node (from :meth:`blockdev_add`).
            dev_id: the new device's id.
            driver: the device model, e.g. ``"virtio-blk-pci"``.
            bus: the bus to plug into ("" lets QEMU choose).
            romfile: the option ROM file ("" for none); omitted when None.
            shared: allow the node to be shared with other devices (``share-rw``).
            disable_modern: force a legacy virtio device.
            devno: a CCW device number (s390x); replaces ``bus``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or driver, a wrongly typed argument, or both
                ``bus`` and ``devno``.
        """
        return plug(self._executor, table.DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, bus=bus, romfile=romfile, shared=shared,
                    disable_modern=disable_modern, devno=devno)

    def scsi_device_add(self, blockdev_id: str, dev_id: str, driver: str, bus: str,
                        scsi_id: int = -1, lun: int = -1, *, romfile: str | None = None,
                        shared: bool = False, disable_modern: bool = False,
                        timeout: float | None = None) -> Future[None]:
        """Plug a SCSI disk or CD-ROM on a SCSI bus (``device_add``).

        Sends ``{"driver": DRIVER, "id": DEV_ID, "drive": BLOCKDEV_ID, "bus": BUS}``
        plus ``"scsi-id"`` and ``"lun"`` when not negative, and the extras of
        :meth:`device_add`. Left unset, QEMU assigns ids itself, and stops at 256
        disks per bus: set both for more (e.g. ``scsi_id = i % 256``,
        ``lun = i // 256``).

        Args:
            blockdev_id: the block node.
            dev_id: the new device's id.
            driver: ``"scsi-hd"``, ``"scsi-cd"`` or ``"scsi-disk"``.
            bus: the SCSI bus, e.g. ``"scsi0.0"``.
            scsi_id: the target id (negative: omitted).
            lun: the logical unit number (negative: omitted).
            romfile: the option ROM file; omitted when None.
            shared: allow the node to be shared (``share-rw``).
            disable_modern: ``disable-modern``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: another driver, an empty id, a wrongly typed argument.
        """
        return plug(self._executor, table.SCSI_DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, bus=bus, scsi_id=scsi_id, lun=lun,
                    romfile=romfile, shared=shared, disable_modern=disable_modern)

    def pci_device_add(self, blockdev_id: str, dev_id: str, driver: str, addr: str,
                       bus: str = "", *, romfile: str | None = None, shared: bool = False,
                       disable_modern: bool = False, queues: int = 0,
                       timeout: float | None = None) -> Future[None]:
        """Plug a PCI block device at a slot (``device_add``), e.g. on a bridge.

        Sends ``{"driver", "id", "drive"}`` plus ``"addr"`` and ``"bus"`` when not
        empty, ``"num-queues"`` when ``queues`` > 0, and the extras of
        :meth:`device_add`.

        Args:
            blockdev_id: the block node.
            dev_id: the new device's id.
            driver: the device model, e.g. ``"virtio-blk-pci"``.
            addr: the slot on the bus, e.g. ``"0x2"`` or ``"02.0"``.
            bus: the PCI bus, e.g. ``"pci-bridge-0"`` ("": QEMU chooses).
            romfile: the option ROM file; omitted when None.
            shared: allow the node to be shared (``share-rw``).
            disable_modern: ``disable-modern``.
            queues: the device's ``num-queues`` (0: QEMU's default).
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device. Without a guest
            OS, unplugging a PCI device from a hot-plug slot never completes
            (QMP-NOTES.md).

        Raises:
            ValidationError: an empty id or driver, negative queues, wrong types.
        """
        return plug(self._executor, table.PCI_DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, addr=addr, bus=bus, romfile=romfile,
                    shared=shared, disable_modern=disable_modern, queues=queues)

    def pci_vhost_user_device_add(self, chardev_id: str, dev_id: str, driver: str,
                                  addr: str, bus: str = "", *,
                                  timeout: float | None = None) -> Future[None]:
        """Plug a vhost-user PCI device over a chardev (``device_add``), e.g.
        ``vhost-user-blk-pci`` or ``vhost-user-fs-pci``.

        Sends ``{"driver", "id", "chardev"}`` plus ``"addr"`` and ``"bus"`` when not
        empty.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or driver, wrong types.
        """
        return plug(self._executor, table.PCI_VHOST_USER_DEVICE, timeout,
                    chardev_id=chardev_id, dev_id=dev_id, driver=driver, addr=addr, bus=bus)

    def net_pci_device_add(self, netdev_id: str, dev_id: str, mac: str, addr: str,
                           bus: str = "", romfile: str | None = None, queues: int = 0,
                           disable_modern: bool = False, *,
                           timeout: float | None = None) -> Future[None]:
        """Plug a ``virtio-net-pci`` NIC over a netdev (``device_add``).

        Sends ``{"driver": "virtio-net-pci", "id", "netdev"}`` plus ``"mac"``,
        ``"addr"`` and ``"bus"`` when not empty, ``"romfile"`` when given,
        ``"disable-modern": true`` when asked, and for ``queues`` > 0 multi-queue:
        ``"mq": true, "vectors": 2 * queues + 2`` (a vector per receive and per
        transmit queue, one for configuration and one for the control queue).

        Args:
            netdev_id: the netdev (from :meth:`netdev_add`...).
            dev_id: the new device's id.
            mac: the MAC address, e.g. ``"52:54:00:12:34:56"`` ("": QEMU's default).
            addr: the slot ("": QEMU chooses).
            bus: the PCI bus ("": QEMU chooses).
            romfile: the option ROM file; omitted when None.
            queues: the number of queue pairs (0: single queue).
            disable_modern: ``disable-modern``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id, negative queues, wrong types.
        """
        return plug(self._executor, table.NET_PCI_DEVICE, timeout, netdev_id=netdev_id,
                    dev_id=dev_id, mac=mac, addr=addr, bus=bus, romfile=romfile,
                    queues=queues, disable_modern=disable_modern)

    def net_ccw_device_add(self, netdev_id: str, dev_id: str, mac: str, devno: str,
                           queues: int = 0, *, timeout: float | None = None) -> Future[None]:
        """Plug a ``virtio-net-ccw`` NIC (s390x) over a netdev (``device_add``).

        Sends ``{"driver": "virtio-net-ccw", "id", "netdev", "devno"}`` plus ``"mac"``
        when not empty and ``"mq": true`` when ``queues`` > 0.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or devno, negative queues, wrong types.
        """
        return plug(self._executor, table.NET_CCW_DEVICE, timeout, netdev_id=netdev_id,
                    dev_id=dev_id, mac=mac, devno=devno, queues=queues)

    def pci_vsock_add(self, vsock_id: str, guest_cid: int, vhostfd: int | str | None = None,
                      addr: str = "", bus: str = "", disable_modern: bool = False, *,
                      romfile: str | None = None,
                      timeout: float | None = None) -> Future[None]:
        """Plug a ``vhost-vsock-pci`` device.

        With ``vhostfd`` an int (an open ``/dev/vhost-vsock`` descriptor), it is first
        passed to QEMU with ``getfd`` as ``"vhostfd-<vsock_id>"`` and then named in
        ``device_add`` (both are submitted together, see :meth:`netdev_add_by_fds`);
        if ``device_add`` fails, the name is released with ``closefd``. A string is
        passed as is (a name given to :meth:`getfd` earlier). None lets QEMU open
        ``/dev/vhost-vsock`` itself.

        Args:
            vsock_id: the new device's id.
            guest_cid: the guest's context id (3 or more; 0-2 are reserved).
            vhostfd: see above. The caller keeps its descriptor (QEMU gets a copy).
            addr: the slot ("": QEMU chooses).
            bus: the PCI bus ("": QEMU chooses).
            disable_modern: ``disable-modern``.
            romfile: the option ROM file; omitted when None.
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id, a context id below 3, a closed descriptor.
        """
        return plug(self._executor, table.PCI_VSOCK, timeout, vsock_id=vsock_id,
                    guest_cid=guest_cid, vhostfd=vhostfd, addr=addr, bus=bus,
                    disable_modern=disable_modern, romfile=romfile)

    def virt_serial_port_add(self, dev_id: str, chardev_id: str, name: str, bus: str = "",
                             *, timeout: float | None = None) -> Future[None]:
        """Plug a ``virtserialport`` over a chardev (``device_add``).

        Sends ``{"driver": "virtserialport", "id", "chardev", "name"}`` plus ``"bus"``
        when not empty (a ``virtio-serial`` bus, e.g. ``"vser0.0"``).

        Args:
            dev_id: the new device's id.
            chardev_id: the chardev (from :meth:`chardev_unix_socket_add`...).
            name: the port's name, seen by the guest (``org.qemu.guest_agent.0``...).
            bus: the virtio-serial bus ("": QEMU chooses).
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the port.

        Raises:
            ValidationError: an empty id or name, wrong types.
        """
        return plug(self._executor, table.VIRT_SERIAL_PORT, timeout, dev_id=dev_id,
                    chardev_id=chardev_id, name=name, bus=bus)

    def device_del(self, dev_id: str, *, timeout: float | None = None) -> Future[Event]:
        """Unplug a device (``device_del``) and wait until it is gone.

        QEMU answers at once and emits ``DEVICE_DELETED`` when the unplug completes
        (for SCSI disks about 50 ms later; for devices that need the guest's consent,
        such as PCI devices in hot-plug slots, vCPUs and DIMMs, only when a guest OS
        agrees: never without one). The future waits for the event whose
        ``data.device`` is ``dev_id``: events of other devices, and the events of the
        device's children (which have a ``path`` but no ``device``), do not count. The
        wait is registered before the command is written.

        Args:
            dev_id: the device's id.
            timeout: seconds for the command and the event together.

        Returns:
            A future for the ``DEVICE_DELETED`` :class:`~qmplex.Event`.

        Raises:
            ValidationError: ``dev_id`` is empty or not a string.
        """
        dev_id = check_id("device_del", "dev_id", dev_id)
        fut: Future[Event] = self._executor.execute(
            "device_del", {"id": dev_id}, timeout=timeout,
            until=EventFilter("DEVICE_DELETED", {"device": dev_id}))
        return fut
