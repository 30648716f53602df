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

    def device_add(self, blockdev_id: str, dev_id: str, driver: str, *,
                   bus: str | None = None, devno: str | None = None,
                   romfile: str | None = None, shared: bool = False,
                   disable_modern: bool = False, discard: bool = False,
                   iothread: str | None = None, logical_block_size: int | None = None,
                   physical_block_size: int | None = None,
                   timeout: float | None = None) -> Future[None]:
        """Plug a device backed by a block node (``device_add`` with ``drive``).

        Sends ``{"driver": DRIVER, "id": DEV_ID, "drive": BLOCKDEV_ID}`` plus each
        property given: ``"bus"``, or ``"devno"`` (a CCW device number, instead of
        the bus), ``"share-rw": true``, ``"romfile"``, ``"disable-modern": true``,
        ``"discard": true``, ``"iothread"``, ``"logical_block_size"``,
        ``"physical_block_size"``. A property the device model does not have (e.g.
        ``romfile`` for a ``scsi-hd``, ``discard`` for anything but ``virtio-blk``) is
        refused before anything is sent.

        Args:
            blockdev_id: the block node (from :meth:`BlockOps.add`).
            dev_id: the new device's id.
            driver: the device model, e.g. ``"virtio-blk-pci"``.
            bus: the bus to plug into (None: QEMU chooses).
            devno: a CCW device number (s390x), e.g. ``"fe.0.0001"``; not with ``bus``.
            romfile: the option ROM file of a PCI device ("" for none; None: QEMU's).
            shared: allow the node to be shared with other devices (``share-rw``).
            disable_modern: force a legacy virtio PCI device.
            discard: pass the guest's discard requests on (``virtio-blk``; the node
                needs ``BlockDevice(discard=True)`` to act on them).
            iothread: an ``iothread`` object to run the device's I/O (``virtio-blk``).
            logical_block_size: the sector size the guest sees (a power of two, 512
                or more).
            physical_block_size: the physical sector size the guest sees.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or driver, a wrongly typed argument, both
                ``bus`` and ``devno``, a property the model lacks.
        """
        return plug(self._executor, table.DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, bus=bus, devno=devno, romfile=romfile,
                    shared=shared, disable_modern=disable_modern, discard=discard,
                    iothread=iothread, logical_block_size=logical_block_size,
                    physical_block_size=physical_block_size)

    def scsi_device_add(self, blockdev_id: str, dev_id: str, driver: str, bus: str, *,
                        scsi_id: int | None = None, lun: int | None = None,
                        shared: bool = False, logical_block_size: int | None = None,
                        physical_block_size: int | None = None,
                        timeout: float | None = None) -> Future[None]:
        """Plug a SCSI disk or CD-ROM on a SCSI bus (``device_add``).

        Sends ``{"driver": DRIVER, "id": DEV_ID, "drive": BLOCKDEV_ID, "bus": BUS}``
        plus ``"scsi-id"``, ``"lun"``, ``"share-rw": true``, ``"logical_block_size"``
        and ``"physical_block_size"`` when given. Left unset, QEMU assigns ids itself,
        and stops at 256 disks per bus: set both for more (e.g. ``scsi_id = i % 256``,
        ``lun = i // 256``). SCSI devices have no ``romfile`` or ``disable-modern``
        (govmm's ``romfile`` and ``disableModern`` arguments have no effect there).

        Args:
            blockdev_id: the block node.
            dev_id: the new device's id.
            driver: ``"scsi-hd"``, ``"scsi-cd"`` or ``"scsi-disk"``.
            bus: the SCSI bus, e.g. ``"scsi0.0"``.
            scsi_id: the target id (None: QEMU assigns one).
            lun: the logical unit number (None: QEMU assigns one).
            shared: allow the node to be shared (``share-rw``).
            logical_block_size: the sector size the guest sees.
            physical_block_size: the physical sector size the guest sees.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: another driver, an empty id, a negative id, a wrongly
                typed argument.
        """
        return plug(self._executor, table.SCSI_DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, bus=bus, scsi_id=scsi_id, lun=lun,
                    shared=shared, logical_block_size=logical_block_size,
                    physical_block_size=physical_block_size)

    def pci_device_add(self, blockdev_id: str, dev_id: str, driver: str, *,
                       addr: str | None = None, bus: str | None = None,
                       queues: int | None = None, shared: bool = False,
                       romfile: str | None = None, disable_modern: bool = False,
                       discard: bool = False, iothread: str | None = None,
                       logical_block_size: int | None = None,
                       physical_block_size: int | None = None,
                       timeout: float | None = None) -> Future[None]:
        """Plug a PCI block device at a slot (``device_add``), e.g. on a bridge.

        Sends ``{"driver", "id", "drive"}`` plus ``"addr"``, ``"bus"``,
        ``"num-queues"`` and the properties of :meth:`device_add` when given.

        Args:
            blockdev_id: the block node.
            dev_id: the new device's id.
            driver: the device model, e.g. ``"virtio-blk-pci"``.
            addr: the slot on the bus, e.g. ``"0x2"`` or ``"02.0"`` (None: QEMU's).
            bus: the PCI bus, e.g. ``"pci-bridge-0"`` (None: QEMU chooses).
            queues: the device's ``num-queues`` (None: QEMU's default).
            shared: allow the node to be shared (``share-rw``).
            romfile: the option ROM file ("" for none).
            disable_modern: ``disable-modern``.
            discard: pass the guest's discard requests on (``virtio-blk``).
            iothread: an ``iothread`` object to run the device's I/O.
            logical_block_size: the sector size the guest sees.
            physical_block_size: the physical sector size the guest sees.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device. Without a guest
            OS, unplugging a PCI device from a hot-plug slot never completes
            (QMP-NOTES.md).

        Raises:
            ValidationError: an empty id or driver, queues below 1, wrong types, a
                property the model lacks.
        """
        return plug(self._executor, table.PCI_DEVICE, timeout, blockdev_id=blockdev_id,
                    dev_id=dev_id, driver=driver, addr=addr, bus=bus, queues=queues,
                    shared=shared, romfile=romfile, disable_modern=disable_modern,
                    discard=discard, iothread=iothread,
                    logical_block_size=logical_block_size,
                    physical_block_size=physical_block_size)

    def pci_vhost_user_device_add(self, dev_id: str, *, driver: str, chardev_id: str,
                                  addr: str | None = None, bus: str | None = None,
                                  timeout: float | None = None) -> Future[None]:
        """Plug a vhost-user PCI device over a chardev (``device_add``), e.g.
        ``vhost-user-blk-pci`` or ``vhost-user-fs-pci``.

        Sends ``{"driver", "id", "chardev"}`` plus ``"addr"`` and ``"bus"`` when
        given. ``driver`` and ``chardev_id`` are keyword-only: govmm takes
        ``(driver, devID, chardevID, ...)`` and qmplex 0.1 took
        ``(chardev_id, dev_id, driver, ...)``, so a positional call could swap them.

        Args:
            dev_id: the new device's id.
            driver: the device model.
            chardev_id: the chardev of the vhost-user socket.
            addr: the slot (None: QEMU chooses).
            bus: the PCI bus (None: QEMU chooses).
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or driver, wrong types.
        """
        return plug(self._executor, table.PCI_VHOST_USER_DEVICE, timeout,
                    driver=driver, dev_id=dev_id, chardev_id=chardev_id, addr=addr, bus=bus)

    def net_pci_device_add(self, netdev_id: str, dev_id: str, *, mac: str | None = None,
                           addr: str | None = None, bus: str | None = None,
                           romfile: str | None = None, queues: int | None = None,
                           disable_modern: bool = False,
                           timeout: float | None = None) -> Future[None]:
        """Plug a ``virtio-net-pci`` NIC over a netdev (``device_add``).

        Sends ``{"driver": "virtio-net-pci", "id", "netdev"}`` plus ``"mac"``,
        ``"addr"``, ``"bus"`` and ``"romfile"`` when given, ``"disable-modern": true``
        when asked, and with ``queues`` multi-queue: ``"mq": true, "vectors": 2 *
        queues + 2`` (a vector per receive and per transmit queue, one for
        configuration and one for the control queue).

        Args:
            netdev_id: the netdev (from :meth:`NetOps.netdev_add` ...).
            dev_id: the new device's id.
            mac: the MAC address, e.g. ``"52:54:00:12:34:56"`` (None: QEMU's).
            addr: the slot (None: QEMU chooses).
            bus: the PCI bus (None: QEMU chooses).
            romfile: the option ROM file ("" for none).
            queues: the number of queue pairs (None: single queue).
            disable_modern: ``disable-modern``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id, queues below 1, wrong types.
        """
        return plug(self._executor, table.NET_PCI_DEVICE, timeout, netdev_id=netdev_id,
                    dev_id=dev_id, mac=mac, addr=addr, bus=bus, romfile=romfile,
                    queues=queues, disable_modern=disable_modern)

    def net_ccw_device_add(self, netdev_id: str, dev_id: str, *, devno: str,
                           mac: str | None = None, queues: int | None = None,
                           timeout: float | None = None) -> Future[None]:
        """Plug a ``virtio-net-ccw`` NIC (s390x) over a netdev (``device_add``).

        Sends ``{"driver": "virtio-net-ccw", "id", "netdev", "devno"}`` plus ``"mac"``
        when given and ``"mq": true`` with ``queues``.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or devno, queues below 1, wrong types.
        """
        return plug(self._executor, table.NET_CCW_DEVICE, timeout, netdev_id=netdev_id,
                    dev_id=dev_id, devno=devno, mac=mac, queues=queues)

    def pci_vsock_add(self, vsock_id: str, guest_cid: int, *,
                      vhostfd: int | str | None = None, addr: str | None = None,
                      bus: str | None = None, romfile: str | None = None,
                      disable_modern: bool = False,
                      timeout: float | None = None) -> Future[None]:
        """Plug a ``vhost-vsock-pci`` device.

        ``"guest-cid"`` is sent as a JSON integer (govmm sends a string, which QEMU
        9.2 and later refuse). With ``vhostfd`` an int (an open ``/dev/vhost-vsock``
        descriptor), it is first passed to QEMU with ``getfd`` as
        ``"vhostfd-<vsock_id>"`` and then named in ``device_add`` (both are submitted
        together, see :meth:`NetOps.netdev_add_by_fds`); if ``device_add`` fails, the
        name is released with ``closefd``. A string is passed as is (a name given to
        :meth:`FdOps.getfd` earlier). None lets QEMU open ``/dev/vhost-vsock`` itself.

        Args:
            vsock_id: the new device's id.
            guest_cid: the guest's context id (3 or more; 0-2 are reserved).
            vhostfd: see above. The caller keeps its descriptor (QEMU gets a copy).
            addr: the slot (None: QEMU chooses).
            bus: the PCI bus (None: QEMU chooses).
            romfile: the option ROM file ("" for none).
            disable_modern: ``disable-modern``.
            timeout: seconds for each command.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id, a context id below 3, a closed descriptor.
        """
        return plug(self._executor, table.PCI_VSOCK, timeout, vsock_id=vsock_id,
                    guest_cid=guest_cid, vhostfd=vhostfd, addr=addr, bus=bus,
                    romfile=romfile, disable_modern=disable_modern)

    def virt_serial_port_add(self, dev_id: str, *, chardev_id: str, name: str,
                             bus: str | None = None,
                             timeout: float | None = None) -> Future[None]:
        """Plug a ``virtserialport`` over a chardev (``device_add``).

        Sends ``{"driver": "virtserialport", "id", "chardev", "name"}`` plus ``"bus"``
        when given (a ``virtio-serial`` bus, e.g. ``"vser0.0"``). ``chardev_id`` and
        ``name`` are keyword-only: govmm takes ``(id, name, chardev)`` and qmplex 0.1
        took ``(dev_id, chardev_id, name)``.

        Args:
            dev_id: the new device's id.
            chardev_id: the chardev (from :meth:`ChardevOps.chardev_unix_socket_add` ...).
            name: the port's name, seen by the guest (``org.qemu.guest_agent.0`` ...).
            bus: the virtio-serial bus (None: QEMU chooses).
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
