"""``device_add`` as data: each operation's properties in a table, one builder.

The operations that plug a device (``scsi_device_add``, ``pci_vfio_device_add``,
``cpu_device_add`` ...) differ only in which properties they send, under which QMP
names, how each is checked and when it is left out. :class:`DeviceSpec` writes that
down for one operation; :func:`device_args` turns a call into the arguments of
``device_add`` and :func:`plug` sends them. The tables at the end are the whole list:
to compare an operation with QEMU's documentation, read its row.

Rules for a row:

- Properties are checked and sent in the row's order (which is also the order of the
  members on the wire), so a call with several bad arguments reports the first.
- ``name`` is the Python argument; ``wire`` is QMP's property, :func:`wire_name` of the
  argument when not given.
- A property that needs a newer QEMU (``since``) is left out for an older peer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import (
    check_bool,
    check_fd,
    check_id,
    check_int,
    check_opt_str,
    check_str,
    check_topology_id,
    wire_name,
)
from .executor import Executor, command, qemu_at_least, with_named_fds

__all__ = ["SCSI_DRIVERS", "DeviceSpec", "Prop", "Send", "device_args", "plug"]

#: The drivers :meth:`~qmplex.ops.DeviceOps.scsi_device_add` accepts.
SCSI_DRIVERS = frozenset({"scsi-hd", "scsi-cd", "scsi-disk"})


class Send(enum.Enum):
    """How a property is checked, and when it is sent."""

    #: A non-empty string, always sent.
    ID = "id"
    #: One of :attr:`Prop.choices`, always sent.
    ONE_OF = "one of"
    #: None: left out; else a non-empty string.
    OPTIONAL_ID = "optional id"
    #: A string, sent unless empty (QEMU refuses empty strings for ``bus``, ``addr``...).
    NON_EMPTY = "non-empty"
    #: A string or None, sent unless None ("" is sent: e.g. ``romfile`` "" means none).
    OPTIONAL_STR = "optional string"
    #: A bool, sent as ``true`` when true, left out when false.
    FLAG = "flag"
    #: An integer, sent when not negative (negative: let QEMU choose).
    NON_NEGATIVE = "non-negative"
    #: An integer of 0 or more, sent when above 0.
    POSITIVE = "positive"
    #: An integer of at least :attr:`Prop.minimum`, always sent.
    INT = "int"
    #: A CPU topology id: an int, a decimal string, or None / "" (left out).
    TOPOLOGY = "topology id"
    #: A descriptor name (a string), an open descriptor (an int: passed first with
    #: ``getfd`` under :attr:`Prop.fdname`, which is then sent), or None (left out).
    FD_OR_NAME = "fd or name"


# Prop and DeviceSpec are plain classes, not dataclasses: a dataclass costs ~0.7 ms of
# `import qmplex` to build, and these are only ever read.
class Prop:
    """One property of a ``device_add`` row.

    Attributes:
        name: the operation's argument.
        send: how it is checked and when it is sent.
        wire: QMP's name for it (when not given: :func:`wire_name` of ``name``).
        minimum: for :attr:`Send.INT`, the least value accepted.
        choices: for :attr:`Send.ONE_OF`, the values accepted.
        since: sent only to QEMU of this ``(major, minor)`` version or newer.
        excludes: another argument that must be empty when this one is given.
        fdname: for :attr:`Send.FD_OR_NAME`, the ``getfd`` name, a format string over
            the call's arguments (``"vhostfd-{vsock_id}"``).
        value: what is sent, computed from the checked value (default: the value).
    """

    __slots__ = ("name", "send", "wire", "minimum", "choices", "since", "excludes",
                 "fdname", "value")

    def __init__(self, name: str, send: Send, wire: str = "", *, minimum: int | None = None,
                 choices: frozenset[str] = frozenset(), since: tuple[int, int] | None = None,
                 excludes: str = "", fdname: str = "",
                 value: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self.send = send
        self.wire = wire or wire_name(name)
        self.minimum = minimum
        self.choices = choices
        self.since = since
        self.excludes = excludes
        self.fdname = fdname
        self.value = value

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"Prop({self.name!r}, {self.send}, {self.wire!r})"


class DeviceSpec:
    """What one operation sends with ``device_add``.

    Attributes:
        op: the operation's name (errors start with it).
        props: its properties, in the order they are checked and sent.
        driver: the device model, sent first; "" when the caller gives it (then
            ``props`` has a ``driver`` property).
    """

    __slots__ = ("op", "props", "driver")

    def __init__(self, op: str, props: tuple[Prop, ...], driver: str = "") -> None:
        self.op = op
        self.props = props
        self.driver = driver

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<DeviceSpec {self.op}>"

    @property
    def names(self) -> frozenset[str]:
        """The arguments the operation passes to :func:`device_args`."""
        return frozenset(p.name for p in self.props)


#: A property left out of the arguments.
_OMIT: Any = object()


def _checked(op: str, prop: Prop, raw: object) -> Any:
    """``raw`` checked by ``prop``'s rule: the value to send, or ``_OMIT``."""
    send, name = prop.send, prop.name
    if send is Send.ID:
        return check_id(op, name, raw)
    if send is Send.ONE_OF:
        if raw not in prop.choices:
            raise ValidationError(
                f"{op}: {name} must be one of {sorted(prop.choices)}, not {raw!r}")
        return raw
    if send is Send.OPTIONAL_ID:
        return _OMIT if raw is None else check_id(op, name, raw)
    if send is Send.NON_EMPTY:
        return check_str(op, name, raw) or _OMIT
    if send is Send.OPTIONAL_STR:
        text = check_opt_str(op, name, raw)
        return _OMIT if text is None else text
    if send is Send.FLAG:
        return True if check_bool(op, name, raw) else _OMIT
    if send is Send.NON_NEGATIVE:
        return raw if check_int(op, name, raw) >= 0 else _OMIT
    if send is Send.POSITIVE:
        return raw if check_int(op, name, raw, 0) > 0 else _OMIT
    if send is Send.INT:
        return check_int(op, name, raw, prop.minimum)
    if send is Send.TOPOLOGY:
        number = check_topology_id(op, name, raw)
        return _OMIT if number is None else number
    raise AssertionError(f"{op}: {name}: {send} is handled by device_args")


def device_args(executor: Executor, spec: DeviceSpec, values: Mapping[str, object],
                ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Check a call's ``values`` (keyed by argument name) and build ``device_add``'s
    arguments for the peer behind ``executor``.

    Returns:
        The arguments, and the ``(getfd name, descriptor)`` pairs to send before them.

    Raises:
        ValidationError: a value breaks its property's rule (nothing is sent).
    """
    op = spec.op
    args: dict[str, Any] = {"driver": spec.driver} if spec.driver else {}
    named: list[tuple[str, int]] = []
    for prop in spec.props:
        raw = values[prop.name]
        if prop.excludes and raw is not None and values[prop.excludes]:
            raise ValidationError(f"{op}: give {prop.excludes} or {prop.name}, not both")
        if prop.send is Send.FD_OR_NAME:
            if raw is None:
                continue
            if isinstance(raw, str):
                args[prop.wire] = check_id(op, prop.name, raw)
                continue
            fdname = prop.fdname.format_map(values)
            named.append((fdname, check_fd(op, prop.name, raw)))
            args[prop.wire] = fdname
            continue
        value = _checked(op, prop, raw)
        if value is _OMIT:
            continue
        if prop.since is not None and not qemu_at_least(executor, *prop.since):
            continue
        args[prop.wire] = value if prop.value is None else prop.value(value)
    return args, named


def plug(executor: Executor, spec: DeviceSpec, timeout: float | None,
         **values: object) -> Future[None]:
    """Send ``device_add`` for a call of ``spec``'s operation (``getfd`` first for
    descriptors, released again if ``device_add`` fails).

    Returns:
        A future done (None) when QEMU has created the device.

    Raises:
        ValidationError: as :func:`device_args`.
    """
    args, named = device_args(executor, spec, values)
    if named:
        return with_named_fds(executor, spec.op, named, "device_add", args, timeout)
    return command(executor, "device_add", args, timeout)


# ------------------------------------------------------------------ the table
def _true(_: int) -> bool:
    return True


def _vectors(queues: int) -> int:
    # A vector per receive and per transmit queue, one for configuration and one for
    # the control queue.
    return 2 * queues + 2


_ADDR = Prop("addr", Send.NON_EMPTY)
_BUS = Prop("bus", Send.NON_EMPTY)
_ROMFILE = Prop("romfile", Send.OPTIONAL_STR)
_DISABLE_MODERN = Prop("disable_modern", Send.FLAG)
_DEV_ID = Prop("dev_id", Send.ID, "id")
_DRIVER = Prop("driver", Send.ID)
# share-rw exists since QEMU 2.10.
_SHARED = Prop("shared", Send.FLAG, "share-rw", since=(2, 10))
_DRIVE = Prop("blockdev_id", Send.ID, "drive")
_NETDEV = Prop("netdev_id", Send.ID, "netdev")
_CHARDEV = Prop("chardev_id", Send.ID, "chardev")
_MAC = Prop("mac", Send.NON_EMPTY)
_MULTIQUEUE = Prop("queues", Send.POSITIVE, "mq", value=_true)

#: ``DeviceOps.device_add``: a device over a block node.
DEVICE = DeviceSpec("device_add", (
    _DRIVER, _DEV_ID, _DRIVE, _BUS, Prop("devno", Send.OPTIONAL_ID, excludes="bus"),
    _SHARED, _ROMFILE, _DISABLE_MODERN))
#: ``DeviceOps.scsi_device_add``.
SCSI_DEVICE = DeviceSpec("scsi_device_add", (
    Prop("driver", Send.ONE_OF, choices=SCSI_DRIVERS), _DEV_ID, _DRIVE,
    Prop("bus", Send.ID), Prop("scsi_id", Send.NON_NEGATIVE), Prop("lun", Send.NON_NEGATIVE),
    _SHARED, _ROMFILE, _DISABLE_MODERN))
#: ``DeviceOps.pci_device_add``.
PCI_DEVICE = DeviceSpec("pci_device_add", (
    _DRIVER, _DEV_ID, _DRIVE, _ADDR, _BUS, Prop("queues", Send.POSITIVE, "num-queues"),
    _SHARED, _ROMFILE, _DISABLE_MODERN))
#: ``DeviceOps.pci_vhost_user_device_add``.
PCI_VHOST_USER_DEVICE = DeviceSpec("pci_vhost_user_device_add", (
    _DRIVER, _DEV_ID, _CHARDEV, _ADDR, _BUS))
#: ``DeviceOps.net_pci_device_add``.
NET_PCI_DEVICE = DeviceSpec("net_pci_device_add", (
    _DEV_ID, _NETDEV, _MAC, _ADDR, _BUS, _ROMFILE, _DISABLE_MODERN, _MULTIQUEUE,
    Prop("queues", Send.POSITIVE, "vectors", value=_vectors)), driver="virtio-net-pci")
#: ``DeviceOps.net_ccw_device_add``.
NET_CCW_DEVICE = DeviceSpec("net_ccw_device_add", (
    _DEV_ID, _NETDEV, Prop("devno", Send.ID), _MAC, _MULTIQUEUE), driver="virtio-net-ccw")
#: ``DeviceOps.pci_vsock_add``.
PCI_VSOCK = DeviceSpec("pci_vsock_add", (
    Prop("vsock_id", Send.ID, "id"), Prop("guest_cid", Send.INT, minimum=3),
    Prop("vhostfd", Send.FD_OR_NAME, fdname="vhostfd-{vsock_id}"),
    _ADDR, _BUS, _ROMFILE, _DISABLE_MODERN), driver="vhost-vsock-pci")
#: ``DeviceOps.virt_serial_port_add``.
VIRT_SERIAL_PORT = DeviceSpec("virt_serial_port_add", (
    _DEV_ID, _CHARDEV, Prop("name", Send.ID), _BUS), driver="virtserialport")
#: ``VFIOOps.vfio_device_add``.
VFIO_DEVICE = DeviceSpec("vfio_device_add", (
    _DEV_ID, Prop("bdf", Send.ID, "host"), _ROMFILE), driver="vfio-pci")
#: ``VFIOOps.pci_vfio_device_add``.
PCI_VFIO_DEVICE = DeviceSpec("pci_vfio_device_add", (
    _DEV_ID, Prop("bdf", Send.ID, "host"), _ADDR, _BUS, _ROMFILE), driver="vfio-pci")
#: ``VFIOOps.pci_vfio_mediated_device_add``.
PCI_VFIO_MEDIATED_DEVICE = DeviceSpec("pci_vfio_mediated_device_add", (
    _DEV_ID, Prop("sysfsdev", Send.ID), _ADDR, _BUS, _ROMFILE), driver="vfio-pci")
#: ``VFIOOps.ap_vfio_mediated_device_add``.
AP_VFIO_MEDIATED_DEVICE = DeviceSpec("ap_vfio_mediated_device_add", (
    Prop("sysfsdev", Send.ID), Prop("dev_id", Send.OPTIONAL_ID, "id")), driver="vfio-ap")
#: ``CPUOps.cpu_device_add``.
CPU_DEVICE = DeviceSpec("cpu_device_add", (
    _DRIVER, Prop("cpu_id", Send.ID, "id"), Prop("socket_id", Send.TOPOLOGY),
    Prop("die_id", Send.TOPOLOGY), Prop("core_id", Send.TOPOLOGY),
    Prop("thread_id", Send.TOPOLOGY), Prop("node_id", Send.TOPOLOGY)))
#: The device of ``MemoryOps.memdev_add`` (its backend comes first, from ``object-add``).
MEMORY_DEVICE = DeviceSpec("memdev_add", (
    _DRIVER, Prop("driver_id", Send.ID, "id"), Prop("mem_id", Send.ID, "memdev"),
    _BUS, _ADDR))
