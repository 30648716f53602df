"""Typed results of the operations in :mod:`qmplex.ops` (re-exported by :mod:`qmplex`).

Each class is a frozen, slotted dataclass built from a QMP ``return`` value by its
``from_qmp`` class method. Those methods only read what QEMU sent: they never talk to
QEMU and never raise anything but :class:`~qmplex.errors.ProtocolError`, which tells
the caller that the reply does not have the shape QEMU documents (the peer's fault,
not the caller's). Members QEMU may add in later versions are ignored, members it may
leave out are optional.

Wire names are spelled as QMP spells them only in the ``from_qmp`` methods and the
member tables at the end (attribute, QMP's name, reader); the attributes use the
Python spelling (``"vcpus-count"`` -> ``vcpus_count``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ProtocolError

__all__ = [
    "AddFdInfo",
    "CPUInfo",
    "CPUProperties",
    "HotpluggableCPU",
    "MemoryDevice",
    "MigrationInfo",
    "ObjectProperty",
    "StatusInfo",
]

# How much of an unexpected reply goes into the error message.
_SHOWN_CHARS = 200


def _shape_error(command: str, value: Any, expected: str) -> ProtocolError:
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    return ProtocolError(f"{command}: expected {expected} in the reply, got {text}")


def _object(command: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _shape_error(command, value, "an object")
    return value


def _list(command: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _shape_error(command, value, "an array")
    return value


def _str(command: str, obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _shape_error(command, obj, f"a string member {key!r}")
    return value


def _int(command: str, obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _shape_error(command, obj, f"an integer member {key!r}")
    return value


def _opt_int(command: str, obj: Mapping[str, Any], key: str) -> int | None:
    if obj.get(key) is None:
        return None
    return _int(command, obj, key)


def _opt_str(command: str, obj: Mapping[str, Any], key: str) -> str | None:
    if obj.get(key) is None:
        return None
    return _str(command, obj, key)


def _props(command: str, obj: Mapping[str, Any], key: str) -> CPUProperties:
    return CPUProperties.from_qmp(obj.get(key), command)


#: A member of a result: (attribute, QMP's member name, the reader that checks it).
_Member = tuple[str, str, Callable[[str, Mapping[str, Any], str], Any]]
_T = TypeVar("_T")


def _decode(cls: type[_T], command: str, value: Any, members: tuple[_Member, ...]) -> _T:
    """Build ``cls`` from a reply object, reading ``members`` in order (so the first
    one of the wrong shape is the one reported)."""
    obj = _object(command, value)
    return cls(**{attr: read(command, obj, key) for attr, key, read in members})


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """The run state of the virtual machine (``query-status``).

    Attributes:
        status: QEMU's run state, e.g. ``"running"``, ``"paused"``, ``"prelaunch"``,
            ``"postmigrate"``, ``"shutdown"``.
        running: True if the guest's vCPUs are running.
        singlestep: True if single-step mode is on (False when QEMU omits it, as
            QEMU 8.1 and later may).
    """

    status: str
    running: bool
    singlestep: bool = False

    @classmethod
    def from_qmp(cls, value: Any) -> StatusInfo:
        """Build from the ``return`` of ``query-status``.

        Raises:
            ProtocolError: the reply does not have the documented shape.
        """
        obj = _object("query-status", value)
        running = obj.get("running")
        if not isinstance(running, bool):
            raise _shape_error("query-status", obj, "a boolean member 'running'")
        return cls(_str("query-status", obj, "status"), running,
                   bool(obj.get("singlestep", False)))


@dataclass(frozen=True, slots=True)
class CPUProperties:
    """Where a vCPU sits in the machine's topology (``CpuInstanceProperties``).

    Each member is None when the machine type does not use that level (for example
    ``node`` without NUMA, ``die`` on machines without dies).

    Attributes:
        node: ``node-id``, the NUMA node.
        socket: ``socket-id``.
        die: ``die-id``.
        core: ``core-id``.
        thread: ``thread-id``.
    """

    node: int | None = None
    socket: int | None = None
    die: int | None = None
    core: int | None = None
    thread: int | None = None

    @classmethod
    def from_qmp(cls, value: Any, command: str = "query-hotpluggable-cpus") -> CPUProperties:
        """Build from a ``props`` object (missing members become None).

        Raises:
            ProtocolError: ``value`` is not an object, or a member is not an integer.
        """
        if value is None:
            return cls()
        return _decode(cls, command, value, _CPU_PROPERTIES)


@dataclass(frozen=True, slots=True)
class HotpluggableCPU:
    """One vCPU slot of ``query-hotpluggable-cpus``.

    Attributes:
        type: the QOM type to pass as ``driver`` to ``device_add`` for this slot.
        vcpus_count: how many vCPUs one device in this slot provides.
        properties: the slot's topology; pass exactly the ids that are not None to
            :meth:`~qmplex.ops.CPUOps.cpu_device_add`.
        qom_path: the QOM path of the CPU plugged in this slot, None if the slot is free.
    """

    type: str
    vcpus_count: int
    properties: CPUProperties
    qom_path: str | None = None

    @classmethod
    def from_qmp(cls, value: Any) -> HotpluggableCPU:
        """Build from one element of the ``query-hotpluggable-cpus`` return.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        return _decode(cls, "query-hotpluggable-cpus", value, _HOTPLUGGABLE_CPU)


@dataclass(frozen=True, slots=True)
class CPUInfo:
    """One vCPU, from ``query-cpus-fast`` (or the older ``query-cpus``).

    Attributes:
        cpu_index: QEMU's index of the vCPU.
        qom_path: its QOM path.
        thread_id: the host thread id running it.
        props: its topology (all None when QEMU reports none).
        target: the QEMU target, e.g. ``"x86_64"`` (``query-cpus-fast`` since QEMU 3.0;
            None from ``query-cpus``).
    """

    cpu_index: int
    qom_path: str
    thread_id: int
    props: CPUProperties = field(default_factory=CPUProperties)
    target: str | None = None

    @classmethod
    def from_fast(cls, value: Any) -> CPUInfo:
        """Build from one element of the ``query-cpus-fast`` return.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        return _decode(cls, "query-cpus-fast", value, _CPU_FAST)

    @classmethod
    def from_legacy(cls, value: Any) -> CPUInfo:
        """Build from one element of the ``query-cpus`` return (QEMU before 6.0),
        whose members are spelled ``CPU``, ``qom_path`` and ``thread_id``.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        return _decode(cls, "query-cpus", value, _CPU_LEGACY)


@dataclass(frozen=True, slots=True)
class MemoryDevice:
    """One memory device of ``query-memory-devices``.

    Attributes:
        type: the kind, e.g. ``"dimm"``, ``"nvdimm"``, ``"virtio-mem"``.
        data: its ``data`` object as QEMU sent it (members depend on ``type``; for a
            DIMM: ``id``, ``addr``, ``size``, ``slot``, ``node``, ``memdev``,
            ``hotplugged``, ``hotpluggable``).
    """

    type: str
    data: dict[str, Any]

    @classmethod
    def from_qmp(cls, value: Any) -> MemoryDevice:
        """Build from one element of the ``query-memory-devices`` return.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        command = "query-memory-devices"
        obj = _object(command, value)
        return cls(_str(command, obj, "type"), dict(_object(command, obj.get("data"))))


@dataclass(frozen=True, slots=True)
class MigrationInfo:
    """The state of the outgoing migration (``query-migrate``).

    Attributes:
        status: ``"setup"``, ``"active"``, ``"completed"``, ``"failed"``,
            ``"cancelled"``... or None when no migration was ever started (QEMU then
            returns ``{}``).
        raw: the whole ``return`` object (``ram``, ``total-time``, ``error-desc``...).
    """

    status: str | None
    raw: dict[str, Any]

    @classmethod
    def from_qmp(cls, value: Any) -> MigrationInfo:
        """Build from the ``return`` of ``query-migrate``.

        Raises:
            ProtocolError: the reply does not have the documented shape.
        """
        obj = _object("query-migrate", value)
        return cls(_opt_str("query-migrate", obj, "status"), dict(obj))


@dataclass(frozen=True, slots=True)
class ObjectProperty:
    """One property of a QOM object (``qom-list``).

    Attributes:
        name: the property's name.
        type: its type: a QAPI type (``"bool"``, ``"string"``...), or
            ``"child<TYPE>"`` / ``"link<TYPE>"`` for a child or link.
        description: QEMU's description, when it gives one.
    """

    name: str
    type: str
    description: str | None = None

    @classmethod
    def from_qmp(cls, value: Any) -> ObjectProperty:
        """Build from one element of the ``qom-list`` return.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        return _decode(cls, "qom-list", value, _OBJECT_PROPERTY)


@dataclass(frozen=True, slots=True)
class AddFdInfo:
    """Where ``add-fd`` put a file descriptor.

    Attributes:
        fdset_id: the fd set, usable as ``/dev/fdset/<fdset_id>`` in file names.
        fd: the descriptor's number inside QEMU.
    """

    fdset_id: int
    fd: int

    @classmethod
    def from_qmp(cls, value: Any) -> AddFdInfo:
        """Build from the ``return`` of ``add-fd``.

        Raises:
            ProtocolError: the reply does not have the documented shape.
        """
        return _decode(cls, "add-fd", value, _ADD_FD_INFO)


# ------------------------------------------------------------------ the members
_CPU_PROPERTIES: tuple[_Member, ...] = (
    ("node", "node-id", _opt_int),
    ("socket", "socket-id", _opt_int),
    ("die", "die-id", _opt_int),
    ("core", "core-id", _opt_int),
    ("thread", "thread-id", _opt_int),
)
_HOTPLUGGABLE_CPU: tuple[_Member, ...] = (
    ("type", "type", _str),
    ("vcpus_count", "vcpus-count", _int),
    ("properties", "props", _props),
    ("qom_path", "qom-path", _opt_str),
)
_CPU_FAST: tuple[_Member, ...] = (
    ("cpu_index", "cpu-index", _int),
    ("qom_path", "qom-path", _str),
    ("thread_id", "thread-id", _int),
    ("props", "props", _props),
    ("target", "target", _opt_str),
)
# query-cpus (before QEMU 6.0) spells its members differently and has no target.
_CPU_LEGACY: tuple[_Member, ...] = (
    ("cpu_index", "CPU", _int),
    ("qom_path", "qom_path", _str),
    ("thread_id", "thread_id", _int),
    ("props", "props", _props),
)
_OBJECT_PROPERTY: tuple[_Member, ...] = (
    ("name", "name", _str),
    ("type", "type", _str),
    ("description", "description", _opt_str),
)
_ADD_FD_INFO: tuple[_Member, ...] = (
    ("fdset_id", "fdset-id", _int),
    ("fd", "fd", _int),
)


def parse_list(command: str, value: Any) -> list[Any]:
    """Return ``value`` if it is a JSON array, else raise :class:`ProtocolError`."""
    return _list(command, value)
