"""Typed results of the operations in :mod:`qmplex.ops` (re-exported by :mod:`qmplex`).

Each class is a frozen, slotted dataclass built from a QMP ``return`` value by its
``from_qmp`` class method. Those methods only read what QEMU sent: they never talk to
QEMU and never raise anything but :class:`~qmplex.errors.ProtocolError`, which tells
the caller that the reply does not have the shape QEMU documents (the peer's fault,
not the caller's). Members QEMU may add in later versions are ignored, members it may
leave out are optional.

Wire names are spelled as QMP spells them only in the ``from_qmp`` methods; the
attributes use the Python spelling (``"vcpus-count"`` -> ``vcpus_count``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
        obj = _object(command, value)
        return cls(
            node=_opt_int(command, obj, "node-id"),
            socket=_opt_int(command, obj, "socket-id"),
            die=_opt_int(command, obj, "die-id"),
            core=_opt_int(command, obj, "core-id"),
            thread=_opt_int(command, obj, "thread-id"),
        )


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
        command = "query-hotpluggable-cpus"
        obj = _object(command, value)
        return cls(
            type=_str(command, obj, "type"),
            vcpus_count=_int(command, obj, "vcpus-count"),
            properties=CPUProperties.from_qmp(obj.get("props"), command),
            qom_path=_opt_str(command, obj, "qom-path"),
        )


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
        command = "query-cpus-fast"
        obj = _object(command, value)
        return cls(
            cpu_index=_int(command, obj, "cpu-index"),
            qom_path=_str(command, obj, "qom-path"),
            thread_id=_int(command, obj, "thread-id"),
            props=CPUProperties.from_qmp(obj.get("props"), command),
            target=_opt_str(command, obj, "target"),
        )

    @classmethod
    def from_legacy(cls, value: Any) -> CPUInfo:
        """Build from one element of the ``query-cpus`` return (QEMU before 6.0),
        whose members are spelled ``CPU``, ``qom_path`` and ``thread_id``.

        Raises:
            ProtocolError: the element does not have the documented shape.
        """
        command = "query-cpus"
        obj = _object(command, value)
        return cls(
            cpu_index=_int(command, obj, "CPU"),
            qom_path=_str(command, obj, "qom_path"),
            thread_id=_int(command, obj, "thread_id"),
            props=CPUProperties.from_qmp(obj.get("props"), command),
            target=None,
        )


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
        command = "qom-list"
        obj = _object(command, value)
        return cls(_str(command, obj, "name"), _str(command, obj, "type"),
                   _opt_str(command, obj, "description"))


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
        obj = _object("add-fd", value)
        return cls(_int("add-fd", obj, "fdset-id"), _int("add-fd", obj, "fd"))


def parse_list(command: str, value: Any) -> list[Any]:
    """Return ``value`` if it is a JSON array, else raise :class:`ProtocolError`."""
    return _list(command, value)
