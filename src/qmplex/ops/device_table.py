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
- ``None`` means "not given" for every optional property: it is left out.
- A property that needs a newer QEMU (``since``) is refused, naming the peer's version,
  when given to an older peer.
- A property a device model does not have (``drivers``, from the model's name: see
  :func:`pci` and the functions after it) is refused when given for that model, so
  QEMU never sees it; a model the name does not tell about gets it and judges.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import (
    _shown,
    check_bool,
    check_fd,
    check_id,
    check_int,
    check_str,
    wire_name,
)
from .executor import Executor, command, with_named_fds
from .versions import IOMMUFD, SHARE_RW, Feature, require

__all__ = ["SCSI_DRIVERS", "DeviceSpec", "Prop", "Send", "device_args", "plug"]

#: The drivers :meth:`~qmplex.ops.DeviceOps.scsi_device_add` accepts.
SCSI_DRIVERS = frozenset({"scsi-hd", "scsi-cd", "scsi-disk"})


class Send(enum.Enum):
    """How a property is checked, and when it is sent."""

    #: A non-empty string, always sent.
    ID = "id"
    #: One of :attr:`Prop.choices`, always sent.
    ONE_OF = "one of"
    #: None: left out; else a non-empty string (QEMU refuses an empty ``bus``, ``addr``).
    OPTIONAL_ID = "optional id"
    #: None: left out; else a string, sent even when empty (``romfile`` "" means none).
    OPTIONAL_STR = "optional string"
    #: A bool, sent as ``true`` when true, left out when false.
    FLAG = "flag"
    #: An integer of at least :attr:`Prop.minimum`, always sent.
    INT = "int"
    #: None: left out; else an integer of at least :attr:`Prop.minimum` (0 if not given).
    OPTIONAL_INT = "optional int"
    #: None: left out; else a block size: a power of two, 512 or more.
    BLOCK_SIZE = "block size"
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
        since: the QEMU feature it needs: given to a peer without it, it is refused
            (:func:`~qmplex.ops.versions.require`).
        excludes: another argument that must be None when this one is given.
        fdname: for :attr:`Send.FD_OR_NAME`, the ``getfd`` name, a format string over
            the call's arguments (``"vhostfd-{vsock_id}"``).
        value: what is sent, computed from the checked value (default: the value).
        drivers: which device models have the property: True, False, or None when
            not known (see :func:`pci`); None: every model. Given for a model that
            lacks it, the property is refused (or, with ``drop``, left out).
        drop: leave the property out, rather than refuse it, for a model that lacks it.
    """

    __slots__ = ("name", "send", "wire", "minimum", "choices", "since", "excludes",
                 "fdname", "value", "drivers", "drop")

    def __init__(self, name: str, send: Send, wire: str = "", *, minimum: int | None = None,
                 choices: frozenset[str] = frozenset(), since: Feature | None = None,
                 excludes: str = "", fdname: str = "",
                 value: Callable[[Any], Any] | None = None,
                 drivers: Callable[[str], bool | None] | None = None,
                 drop: bool = False) -> None:
        self.name = name
        self.send = send
        self.wire = wire or wire_name(name)
        self.minimum = minimum
        self.choices = choices
        self.since = since
        self.excludes = excludes
        self.fdname = fdname
        self.value = value
        self.drivers = drivers
        self.drop = drop

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
                f"{op}: {name} must be one of {sorted(prop.choices)}, "
                f"not {_shown(op, name, raw)}")
        return raw
    if raw is None and send is not Send.FLAG and send is not Send.INT:
        return _OMIT  # every optional kind: None is "not given"
    if send is Send.OPTIONAL_ID:
        return check_id(op, name, raw)
    if send is Send.OPTIONAL_STR:
        return check_str(op, name, raw)
    if send is Send.FLAG:
        return True if check_bool(op, name, raw) else _OMIT
    if send is Send.INT or send is Send.OPTIONAL_INT:
        return check_int(op, name, raw, 0 if prop.minimum is None else prop.minimum)
    if send is Send.BLOCK_SIZE:
        size = check_int(op, name, raw, 512)
        if size & (size - 1):
            raise ValidationError(f"{op}: {name} must be a power of two, not {size}")
        return size
    raise AssertionError(f"{op}: {name}: {send} is handled by device_args")


def device_args(executor: Executor, spec: DeviceSpec, values: Mapping[str, object],
                ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Check a call's ``values`` (keyed by argument name) and build ``device_add``'s
    arguments for the peer behind ``executor``.

    Returns:
        The arguments, and the ``(getfd name, descriptor)`` pairs to send before them.

    Raises:
        ValidationError: a value breaks its property's rule, the device model lacks
            the property, or the peer's QEMU lacks what it needs (nothing is sent).
    """
    op = spec.op
    model = spec.driver or values.get("driver")
    args: dict[str, Any] = {"driver": spec.driver} if spec.driver else {}
    named: list[tuple[str, int]] = []
    for prop in spec.props:
        raw = values[prop.name]
        if prop.excludes and raw is not None and values[prop.excludes] is not None:
            raise ValidationError(f"{op}: give {prop.excludes} or {prop.name}, not both")
        if prop.send is Send.FD_OR_NAME:
            if raw is None:
                continue
            if isinstance(raw, str):
                value: Any = check_id(op, prop.name, raw)
            else:
                value = prop.fdname.format_map(values)
                named.append((value, check_fd(op, prop.name, raw)))
        else:
            value = _checked(op, prop, raw)
            if value is _OMIT:
                continue
        if prop.drivers is not None and isinstance(model, str) and prop.drivers(model) is False:
            if prop.drop:
                continue
            raise ValidationError(f"{op}: a {model} device has no {prop.wire!r} property "
                                  f"({prop.name}={_shown(op, prop.name, raw)})")
        if prop.since is not None:
            require(executor, op, prop.since, f"{prop.name}={_shown(op, prop.name, raw)}")
        args[prop.wire] = value if prop.value is None else prop.value(value)
    logical = args.get("logical_block_size")
    physical = args.get("physical_block_size")
    if logical is not None and physical is not None and logical > physical:
        # QEMU: "logical_block_size > physical_block_size not supported"
        raise ValidationError(f"{op}: logical_block_size {logical} is larger than "
                              f"physical_block_size {physical}")
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


# ------------------------------------------------------------- device models
# Which device models have a property, from their names: True, False, or None when
# the name does not tell (the property is then sent, and QEMU judges). The answers
# agree with the property lists of every captured release (tests/test_versions.py).
_BUS_DEVICE_PREFIXES = ("scsi-", "ide-", "usb-")
_NOT_PCI = frozenset({"vfio-ap", "virtserialport", "virtconsole", "nvdimm", "pc-dimm"})


def pci(driver: str) -> bool | None:
    """A PCI device: ``addr`` (its slot), ``romfile``."""
    if driver.endswith("-pci"):
        return True
    if (driver.endswith(("-ccw", "-device")) or driver.startswith(_BUS_DEVICE_PREFIXES)
            or driver in _NOT_PCI):
        return False
    return None


def virtio_pci(driver: str) -> bool | None:
    """A virtio PCI device: ``disable-modern``."""
    if driver.endswith("-pci"):
        return driver.startswith(("virtio-", "vhost-"))
    return False if pci(driver) is False else None


def ccw(driver: str) -> bool | None:
    """A CCW device (s390x): ``devno``."""
    if driver.endswith("-ccw"):
        return True
    known_other = driver.endswith(("-pci", "-device")) or driver.startswith(
        _BUS_DEVICE_PREFIXES) or driver in _NOT_PCI
    return False if known_other else None


def virtio_blk(driver: str) -> bool | None:
    """A virtio-blk device: ``iothread``, ``discard``, ``num-queues``."""
    if driver.startswith("virtio-blk"):
        return True
    # (other virtio devices vary: virtio-scsi and virtio-balloon have an iothread too)
    if driver.startswith(_BUS_DEVICE_PREFIXES) or driver.startswith("vfio-"):
        return False
    return None


def block_sizes(driver: str) -> bool | None:
    """A disk with ``logical_block_size`` and ``physical_block_size``."""
    if driver.startswith(("virtio-blk", "scsi-hd", "scsi-cd", "scsi-disk", "ide-hd",
                          "ide-cd", "ide-drive")) or driver == "usb-storage":
        return True
    if driver.startswith("virtio-") or driver.startswith("vfio-"):
        return False
    return None


#: The ``-cpu`` suffixes of CPU models that take only ``core-id`` (and, for ppc64,
#: ``node-id``): s390x and ppc64 (pseries) hot-plug cores by core id alone.
_CORE_ONLY_CPUS = ("-s390x-cpu", "-spapr-cpu-core", "-powerpc64-cpu")


def _core_only(driver: str) -> bool:
    return driver.endswith(_CORE_ONLY_CPUS)


def cpu_socket_thread(driver: str) -> bool | None:
    """A CPU model taking ``socket-id`` and ``thread-id`` (not s390x, not ppc64)."""
    return False if _core_only(driver) else None


def cpu_die(driver: str) -> bool | None:
    """A CPU model taking ``die-id`` (x86 only)."""
    if driver.endswith(("-x86_64-cpu", "-i386-cpu")):
        return True
    return False if _core_only(driver) or driver.endswith("-cpu") else None


def cpu_node(driver: str) -> bool | None:
    """A CPU model taking ``node-id`` (not s390x)."""
    return False if driver.endswith("-s390x-cpu") else None


# ------------------------------------------------------------------ the table
def _true(_: int) -> bool:
    return True


def _vectors(queues: int) -> int:
    # A vector per receive and per transmit queue, one for configuration and one for
    # the control queue.
    return 2 * queues + 2


_ADDR = Prop("addr", Send.OPTIONAL_ID, drivers=pci)
_BUS = Prop("bus", Send.OPTIONAL_ID)
_ROMFILE = Prop("romfile", Send.OPTIONAL_STR, drivers=pci)
_DISABLE_MODERN = Prop("disable_modern", Send.FLAG, drivers=virtio_pci)
_DEV_ID = Prop("dev_id", Send.ID, "id")
_DRIVER = Prop("driver", Send.ID)
_SHARED = Prop("shared", Send.FLAG, "share-rw", since=SHARE_RW)
_DRIVE = Prop("blockdev_id", Send.ID, "drive")
_NETDEV = Prop("netdev_id", Send.ID, "netdev")
_CHARDEV = Prop("chardev_id", Send.ID, "chardev")
_MAC = Prop("mac", Send.OPTIONAL_ID)
_MULTIQUEUE = Prop("queues", Send.OPTIONAL_INT, "mq", minimum=1, value=_true)
_DEVNO = Prop("devno", Send.OPTIONAL_ID, excludes="bus", drivers=ccw)
# Device properties spelled with "_" in QEMU: wire names given, never derived.
_LOGICAL = Prop("logical_block_size", Send.BLOCK_SIZE, "logical_block_size",
                drivers=block_sizes)
_PHYSICAL = Prop("physical_block_size", Send.BLOCK_SIZE, "physical_block_size",
                 drivers=block_sizes)
_IOTHREAD = Prop("iothread", Send.OPTIONAL_ID, drivers=virtio_blk)
_DISCARD = Prop("discard", Send.FLAG, drivers=virtio_blk)
_IOMMUFD = Prop("iommufd", Send.OPTIONAL_ID, since=IOMMUFD)

#: ``DeviceOps.device_add``: a device over a block node.
DEVICE = DeviceSpec("device_add", (
    _DRIVER, _DEV_ID, _DRIVE, _BUS, _DEVNO, _SHARED, _ROMFILE, _DISABLE_MODERN, _DISCARD,
    _IOTHREAD, _LOGICAL, _PHYSICAL))
#: ``DeviceOps.scsi_device_add``.
SCSI_DEVICE = DeviceSpec("scsi_device_add", (
    Prop("driver", Send.ONE_OF, choices=SCSI_DRIVERS), _DEV_ID, _DRIVE,
    Prop("bus", Send.ID), Prop("scsi_id", Send.OPTIONAL_INT),
    Prop("lun", Send.OPTIONAL_INT), _SHARED, _LOGICAL, _PHYSICAL))
#: ``DeviceOps.pci_device_add``.
PCI_DEVICE = DeviceSpec("pci_device_add", (
    _DRIVER, _DEV_ID, _DRIVE, _ADDR, _BUS,
    Prop("queues", Send.OPTIONAL_INT, "num-queues", minimum=1, drivers=virtio_blk),
    _SHARED, _ROMFILE, _DISABLE_MODERN, _DISCARD, _IOTHREAD, _LOGICAL, _PHYSICAL))
#: ``DeviceOps.pci_vhost_user_device_add``.
PCI_VHOST_USER_DEVICE = DeviceSpec("pci_vhost_user_device_add", (
    _DRIVER, _DEV_ID, _CHARDEV, _ADDR, _BUS))
#: ``DeviceOps.net_pci_device_add``.
NET_PCI_DEVICE = DeviceSpec("net_pci_device_add", (
    _DEV_ID, _NETDEV, _MAC, _ADDR, _BUS, _ROMFILE, _DISABLE_MODERN, _MULTIQUEUE,
    Prop("queues", Send.OPTIONAL_INT, "vectors", minimum=1, value=_vectors)),
    driver="virtio-net-pci")
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
    _DEV_ID, Prop("bdf", Send.ID, "host"), _BUS, _ROMFILE, _IOMMUFD), driver="vfio-pci")
#: ``VFIOOps.pci_vfio_device_add``.
PCI_VFIO_DEVICE = DeviceSpec("pci_vfio_device_add", (
    _DEV_ID, Prop("bdf", Send.ID, "host"), _ADDR, _BUS, _ROMFILE, _IOMMUFD),
    driver="vfio-pci")
#: ``VFIOOps.pci_vfio_mediated_device_add``.
PCI_VFIO_MEDIATED_DEVICE = DeviceSpec("pci_vfio_mediated_device_add", (
    _DEV_ID, Prop("sysfsdev", Send.ID), _ADDR, _BUS, _ROMFILE, _IOMMUFD), driver="vfio-pci")
#: ``VFIOOps.ccw_vfio_device_add``.
CCW_VFIO_DEVICE = DeviceSpec("ccw_vfio_device_add", (
    _DEV_ID, Prop("sysfsdev", Send.ID), Prop("devno", Send.OPTIONAL_ID), _IOMMUFD),
    driver="vfio-ccw")
#: ``VFIOOps.ap_vfio_mediated_device_add``.
AP_VFIO_MEDIATED_DEVICE = DeviceSpec("ap_vfio_mediated_device_add", (
    Prop("sysfsdev", Send.ID), Prop("dev_id", Send.OPTIONAL_ID, "id"), _IOMMUFD),
    driver="vfio-ap")
#: ``CPUOps.cpu_device_add``: ids a CPU model does not take are left out (as govmm does).
CPU_DEVICE = DeviceSpec("cpu_device_add", (
    _DRIVER, Prop("cpu_id", Send.ID, "id"),
    Prop("socket_id", Send.OPTIONAL_INT, drivers=cpu_socket_thread, drop=True),
    Prop("die_id", Send.OPTIONAL_INT, drivers=cpu_die, drop=True),
    Prop("core_id", Send.OPTIONAL_INT),
    Prop("thread_id", Send.OPTIONAL_INT, drivers=cpu_socket_thread, drop=True),
    Prop("node_id", Send.OPTIONAL_INT, drivers=cpu_node, drop=True)))
#: The device of ``MemoryOps.memdev_add`` (its backend comes first, from ``object-add``):
#: ``addr`` is the PCI slot of a ``virtio-mem-pci`` / ``virtio-pmem-pci``, ``devno``
#: the device number of a ``virtio-mem-ccw`` (s390x).
MEMORY_DEVICE = DeviceSpec("memdev_add", (
    _DRIVER, Prop("driver_id", Send.ID, "id"), Prop("mem_id", Send.ID, "memdev"),
    _BUS, Prop("addr", Send.OPTIONAL_ID, excludes="devno"),
    Prop("devno", Send.OPTIONAL_ID, excludes="bus", drivers=ccw)))
