"""Typed QMP operations: hot-plug, migration, QOM, status, file descriptors ...

:class:`Operations` is the base class of :class:`~qmplex.Client`. Each of its methods
builds the arguments of one or a few QMP commands, checks the caller's input, submits
the commands with ``self.execute`` and returns a :class:`~qmplex.Future` at once; nothing
here blocks, touches a socket or keeps state. Methods run on the reactor's thread like
every other ``Client`` method (callbacks may call them).

What a subclass must provide: ``execute(name, arguments, *, timeout, until, fds)``,
``wait_event(filter, *, timeout)`` (only :meth:`Operations.wait_migration` uses it) and
the ``version`` attribute (the peer's :class:`~qmplex.QMPVersion`, None before the
greeting: then the newest QEMU is assumed).

Rules every operation follows:

- Invalid input (a wrong type, an empty id, an unknown driver ...) raises
  :class:`~qmplex.errors.ValidationError` (a ``ValueError``) before any command is sent.
- Argument names are the snake_case of QMP's; the wire names stay as QMP spells them.
- ``timeout`` is passed to every command the operation sends (each command gets the
  whole ``timeout``); a command that times out fails the operation with
  :class:`~qmplex.errors.Timeout`.
- A multi-step operation (``object-add`` then ``device_add``; ``getfd`` then
  ``netdev_add``) undoes its earlier steps when a later one fails (a timeout included),
  and then fails with the error of the step that failed: a failed undo is logged, never
  reported instead. Cancelling its future cancels the step under way (a command already
  written may still run in QEMU) and undoes nothing.
- An operation completes when QEMU answers, except those whose effect comes later
  (``device_del``, ``system_powerdown``, :meth:`Operations.migrate_and_wait`): they
  complete on their event, whose wait is registered before the command is written, so
  an event that overtakes the reply is not missed.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ._types import (
    AddFdInfo,
    CPUInfo,
    CPUProperties,
    HotpluggableCPU,
    MemoryDevice,
    MigrationInfo,
    ObjectProperty,
    StatusInfo,
    parse_list,
)
from .core.messages import QMPVersion
from .errors import CommandError, ValidationError
from .events import Event, EventFilter
from .futures import Future
from .names import wire_name  # re-exported: qmplex.operations.wire_name is that one

__all__ = [
    "AddFdInfo",
    "CPUInfo",
    "CPUProperties",
    "HotpluggableCPU",
    "MIGRATION_FINAL_STATES",
    "MemoryDevice",
    "MigrationInfo",
    "ObjectProperty",
    "Operations",
    "SCSI_DRIVERS",
    "StatusInfo",
    "wire_name",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The drivers :meth:`Operations.scsi_device_add` accepts.
SCSI_DRIVERS = frozenset({"scsi-hd", "scsi-cd", "scsi-disk"})
#: ``MIGRATION`` event statuses after which a migration is over.
MIGRATION_FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: The events :meth:`Operations.system_powerdown` can wait for.
_POWERDOWN_EVENTS = ("POWERDOWN", "SHUTDOWN")
#: Netdev types that take ``ifname``, ``script`` and ``downscript``.
_TAP_TYPES = frozenset({"tap"})
_DECIMAL = re.compile(r"[0-9]+\Z")


# ------------------------------------------------------------------ validation
def _check_id(op: str, what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{op}: {what} must be a non-empty string, not {value!r}")
    return value


def _check_str(op: str, what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{op}: {what} must be a string, not {value!r}")
    return value


def _check_opt_str(op: str, what: str, value: object) -> str | None:
    return None if value is None else _check_str(op, what, value)


def _put_placement(op: str, args: dict[str, Any], *, addr: object = "", bus: object = "",
                   romfile: object = None) -> None:
    """Add the non-empty ``addr`` and ``bus`` and a given ``romfile`` to ``args``
    (QEMU refuses empty strings there)."""
    if _check_str(op, "addr", addr):
        args["addr"] = addr
    if _check_str(op, "bus", bus):
        args["bus"] = bus
    rom = _check_opt_str(op, "romfile", romfile)
    if rom is not None:
        args["romfile"] = rom


def _check_bool(op: str, what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{op}: {what} must be a bool, not {value!r}")
    return value


def _check_int(op: str, what: str, value: object, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{op}: {what} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{op}: {what} must be at least {minimum}, not {value}")
    return value


def _check_fd(op: str, what: str, fd: object) -> int:
    value = _check_int(op, what, fd, 0)
    try:
        os.fstat(value)
    except OSError as exc:
        raise ValidationError(f"{op}: {what} {value} is not an open file descriptor: "
                              f"{exc.strerror}") from exc
    return value


def _check_fdname(op: str, name: object) -> str:
    fdname = _check_id(op, "fdname", name)
    if fdname[0].isdigit():
        # QEMU reads a name starting with a digit as a descriptor number (getfd refuses it).
        raise ValidationError(f"{op}: fdname must not start with a digit: {fdname!r}")
    return fdname


def _check_topology_id(op: str, what: str, value: object) -> int | None:
    """A CPU topology id: an int, a decimal string (govmm style), or None/"" (omitted)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise ValidationError(f"{op}: {what} must be a decimal number, not {value!r}")
        return int(value)
    return _check_int(op, what, value, 0)


# ----------------------------------------------------------------- combinators
def _discard(_: object) -> None:
    """Drop a QMP ``return`` value (``{}`` for commands that only act)."""
    return None


def _done(reactor_of: Future[Any], value: T) -> Future[T]:
    fut: Future[T] = Future(reactor_of.reactor)
    fut.set_result(value)
    return fut


def _failed(reactor_of: Future[Any], exc: BaseException) -> Future[T]:
    fut: Future[T] = Future(reactor_of.reactor)
    fut.set_exception(exc)
    return fut


def _settle(futures: Sequence[Future[Any]]) -> Future[list[Future[Any]]]:
    """Return a future for ``futures`` themselves, done once every one of them is done
    (whatever their outcome; it never fails). Cancelling it cancels them all."""
    items = list(futures)
    left = [len(items)]

    def _cancel_all() -> None:
        for f in items:
            f.cancel()

    out: Future[list[Future[Any]]] = Future(futures[0].reactor, on_cancel=_cancel_all)

    def _one(_: Future[Any]) -> None:
        left[0] -= 1
        if left[0] == 0:
            out.set_result(items)

    for f in items:
        f.add_done_callback(_one)
    return out


def _fail_after(cleanups: Sequence[Future[Any]], error: BaseException, what: str,
                level: int = logging.WARNING) -> Future[T]:
    """Return a future that fails with ``error`` once every cleanup step is done; a
    failed cleanup step is logged at ``level`` (it must never hide ``error``)."""
    out: Future[T] = Future(cleanups[0].reactor)

    def _after(done: Future[list[Future[Any]]]) -> None:
        for step in cleanups:
            problem = step.exception()
            if problem is not None:
                logger.log(level, "%s failed while undoing after %r: %s", what, error, problem)
        out.set_exception(error)

    _settle(cleanups).add_done_callback(_after)
    return out


def _first_error(futures: Sequence[Future[Any]]) -> BaseException | None:
    for f in futures:
        exc = f.exception()
        if exc is not None:
            return exc
    return None


def _migration_over(event: Event) -> bool:
    return event.data.get("status") in MIGRATION_FINAL_STATES


_MIGRATION_OVER = EventFilter("MIGRATION", predicate=_migration_over)


def _event_status(event: Event) -> str:
    return str(event.data.get("status"))


def _status_info(value: Any) -> StatusInfo:
    return StatusInfo.from_qmp(value)


def _hotpluggable_cpus(value: Any) -> list[HotpluggableCPU]:
    return [HotpluggableCPU.from_qmp(x) for x in parse_list("query-hotpluggable-cpus", value)]


def _memory_devices(value: Any) -> list[MemoryDevice]:
    return [MemoryDevice.from_qmp(x) for x in parse_list("query-memory-devices", value)]


def _cpus_fast(value: Any) -> list[CPUInfo]:
    return [CPUInfo.from_fast(x) for x in parse_list("query-cpus-fast", value)]


def _cpus_legacy(value: Any) -> list[CPUInfo]:
    return [CPUInfo.from_legacy(x) for x in parse_list("query-cpus", value)]


def _object_properties(value: Any) -> list[ObjectProperty]:
    return [ObjectProperty.from_qmp(x) for x in parse_list("qom-list", value)]


def _schema(value: Any) -> list[dict[str, Any]]:
    return [dict(x) for x in parse_list("query-qmp-schema", value)]


def _hmp_output(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class Operations:
    """The typed QMP operations, as methods of :class:`~qmplex.Client`.

    Every method returns a :class:`~qmplex.Future` immediately; its callbacks run on the
    client's reactor thread. Failures arrive through the future: a QMP error reply as
    :class:`~qmplex.errors.CommandError`, :class:`~qmplex.errors.Timeout`,
    :class:`~qmplex.errors.ConnectionLost` or :class:`~qmplex.errors.Cancelled`; a reply
    of the wrong shape as :class:`~qmplex.errors.ProtocolError`. Only invalid input is
    raised directly, as :class:`~qmplex.errors.ValidationError`, with nothing sent.
    """

    __slots__ = ()

    #: The peer's version (None: assume the newest QEMU). Set by the subclass.
    version: QMPVersion | None = None

    # ------------------------------------------------- what the subclass provides
    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        """Submit one QMP command (provided by :class:`~qmplex.Client`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def wait_event(
        self,
        name: str | EventFilter,
        match: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Future[Event]:
        """Wait for the next matching event (provided by :class:`~qmplex.Client`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement wait_event()")

    # ------------------------------------------------------------------ helpers
    def _qemu_at_least(self, major: int, minor: int) -> bool:
        version = self.version
        return version is None or version.at_least(major, minor)

    def _command(self, name: str, arguments: Mapping[str, Any] | None,
                 timeout: float | None) -> Future[None]:
        return self.execute(name, arguments, timeout=timeout).then(_discard)

    def _attempt(self, name: str, arguments: Mapping[str, Any],
                 timeout: float | None, like: Future[Any]) -> Future[Any]:
        """Submit an undo step; a refusal to submit becomes a failed future."""
        try:
            return self.execute(name, arguments, timeout=timeout)
        except Exception as exc:  # e.g. StateError: the connection is gone
            return _failed(like, exc)

    def _undo_on_failure(self, step: Future[Any], undo: str, undo_args: Mapping[str, Any],
                         timeout: float | None) -> Future[None]:
        """``step``'s outcome; if it fails, send ``undo`` first, then fail with its error."""

        def _roll_back(error: BaseException) -> Future[None]:
            cleanup = self._attempt(undo, undo_args, timeout, step)
            return _fail_after([cleanup], error, f"{undo} {dict(undo_args)}")

        return step.then(_discard).recover(_roll_back)

    def _with_named_fds(self, op: str, named: Sequence[tuple[str, int]], command: str,
                        arguments: Mapping[str, Any], timeout: float | None) -> Future[None]:
        """Send ``getfd`` for each ``(name, fd)``, then ``command``, all at once.

        They are submitted back to back, so they reach QEMU in this order with no other
        command of this client in between: the fixed names (``fd0`` ...) cannot be
        taken over by a concurrent operation before ``command`` consumes them. When
        anything fails, the names registered are released with ``closefd`` and the
        operation fails with the first error (a ``getfd``'s before ``command``'s).
        """
        getfds = [self.execute("getfd", {"fdname": name}, fds=[fd], timeout=timeout)
                  for name, fd in named]
        main = self.execute(command, arguments, timeout=timeout)

        def _conclude(done: list[Future[Any]]) -> Future[None]:
            error = _first_error(getfds) or _first_error([main])
            if error is None:
                return _done(main, None)
            registered = [name for (name, _), f in zip(named, getfds, strict=True)
                          if f.exception() is None]
            if not registered:
                return _failed(main, error)
            closes = [self._attempt("closefd", {"fdname": name}, timeout, main)
                      for name in registered]
            # QEMU takes a name off its list as soon as a command uses it, even when the
            # command then fails: "not found" is the usual answer here, so log quietly.
            return _fail_after(closes, error, f"{op}: closefd", logging.DEBUG)

        return _settle([*getfds, main]).chain(_conclude)

    def _object_add_args(self, qom_type: str, object_id: str,
                         props: dict[str, Any]) -> dict[str, Any]:
        # QEMU 5.0 deprecated the "props" wrapper (flat members instead); 6.0 removed it.
        if self._qemu_at_least(5, 0):
            return {"qom-type": qom_type, "id": object_id, **props}
        return {"qom-type": qom_type, "id": object_id, "props": props}

    # ---------------------------------------------------------------- lifecycle
    def qmp_capabilities(self, *, timeout: float | None = None) -> Future[None]:
        """Send ``qmp_capabilities``.

        The client negotiates capabilities itself when it connects, and QEMU accepts
        the command only once per connection: on a negotiated connection QEMU answers
        ``CommandNotFound`` ("Capabilities negotiation is already complete"), so the
        future fails with that :class:`~qmplex.errors.CommandError`. Useful only to
        probe a peer.

        Returns:
            A future done (None) when QEMU accepts the command.
        """
        return self._command("qmp_capabilities", None, timeout)

    def stop(self, *, timeout: float | None = None) -> Future[None]:
        """Pause the guest's vCPUs (``stop``).

        Returns:
            A future done (None) when QEMU answers. A ``STOP`` event, when the guest
            was running, comes before the answer.
        """
        return self._command("stop", None, timeout)

    def cont(self, *, timeout: float | None = None) -> Future[None]:
        """Resume the guest's vCPUs (``cont``); also starts a ``-S`` machine.

        Returns:
            A future done (None) when QEMU answers (the ``RESUME`` event comes before).
        """
        return self._command("cont", None, timeout)

    def quit(self, *, timeout: float | None = None) -> Future[None]:
        """Make QEMU exit (``quit``).

        Returns:
            A future done (None) when QEMU answers; QEMU then closes the connection
            (the ``SHUTDOWN`` event comes before the answer).
        """
        return self._command("quit", None, timeout)

    def system_reset(self, *, timeout: float | None = None) -> Future[None]:
        """Reset the machine (``system_reset``).

        Returns:
            A future done (None) when QEMU answers (the ``RESET`` event comes before).
        """
        return self._command("system_reset", None, timeout)

    def system_powerdown(self, until: str = "POWERDOWN", *,
                         timeout: float | None = None) -> Future[Event]:
        """Press the ACPI power button (``system_powerdown``) and wait for an event.

        Args:
            until: ``"POWERDOWN"`` (QEMU emits it at once, with or without a guest) or
                ``"SHUTDOWN"`` (emitted only when the guest's OS acts on the request
                and powers off: without a guest that never happens, so give a
                ``timeout``).
            timeout: seconds for the command and the event together.

        Returns:
            A future for the ``until`` event.

        Raises:
            ValidationError: ``until`` is neither ``"POWERDOWN"`` nor ``"SHUTDOWN"``.
        """
        if until not in _POWERDOWN_EVENTS:
            raise ValidationError(
                f"system_powerdown: until must be 'POWERDOWN' or 'SHUTDOWN', not {until!r}")
        fut: Future[Event] = self.execute("system_powerdown", None, timeout=timeout,
                                          until=EventFilter(until))
        return fut

    def query_status(self, *, timeout: float | None = None) -> Future[StatusInfo]:
        """Ask for the run state (``query-status``).

        Returns:
            A future for a :class:`StatusInfo`.
        """
        return self.execute("query-status", None, timeout=timeout).then(_status_info)

    # -------------------------------------------------------------------- block
    def _blockdev_args(self, driver: str, device: str, blockdev_id: str, read_only: bool,
                       cache: dict[str, bool] | None) -> dict[str, Any]:
        # QEMU 2.9 made blockdev-add take the node's options flat, named by node-name;
        # before, they were wrapped in "options" and named by "id".
        flat = self._qemu_at_least(2, 9)
        node: dict[str, Any] = {
            "driver": "raw",
            "node-name" if flat else "id": blockdev_id,
            "read-only": read_only,
            "file": {"driver": driver, "filename": device},
        }
        if cache is not None:
            node["cache"] = cache
        return node if flat else {"options": node}

    @staticmethod
    def _file_driver(device: str) -> str:
        try:
            mode = os.stat(device).st_mode
        except OSError:
            return "file"  # not here (e.g. QEMU runs elsewhere): let QEMU judge it
        return "host_device" if stat.S_ISBLK(mode) else "file"

    def _blockdev_add(self, op: str, driver: str | None, device: str, blockdev_id: str,
                      read_only: bool, cache: tuple[bool, bool] | None,
                      timeout: float | None) -> Future[None]:
        device = _check_id(op, "device", device)
        driver = self._file_driver(device) if driver is None else _check_id(op, "driver", driver)
        blockdev_id = _check_id(op, "blockdev_id", blockdev_id)
        read_only = _check_bool(op, "read_only", read_only)
        cache_args = None
        if cache is not None:
            cache_args = {"direct": _check_bool(op, "direct", cache[0]),
                          "no-flush": _check_bool(op, "no_flush", cache[1])}
        args = self._blockdev_args(driver, device, blockdev_id, read_only, cache_args)
        return self._command("blockdev-add", args, timeout)

    def blockdev_add(self, device: str, blockdev_id: str, *, read_only: bool = False,
                     timeout: float | None = None) -> Future[None]:
        """Add a raw block node over a file or a block device (``blockdev-add``).

        The protocol node is ``host_device`` when ``device`` is a block device here,
        else ``file`` (also when ``device`` does not exist locally). With QEMU 2.9 or
        newer::

            {"driver": "raw", "node-name": ID, "read-only": RO,
             "file": {"driver": "file" | "host_device", "filename": DEVICE}}

        and before 2.9 the same wrapped as ``{"options": {...}}``, with ``"id"``
        instead of ``"node-name"``.

        Args:
            device: the image file or block device path, as QEMU sees it.
            blockdev_id: the node name (the ``drive`` of a later ``device_add``).
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or non-string argument.
        """
        return self._blockdev_add("blockdev_add", None, device, blockdev_id, read_only,
                                  None, timeout)

    def blockdev_add_with_cache(self, device: str, blockdev_id: str, direct: bool,
                                no_flush: bool, *, read_only: bool = False,
                                timeout: float | None = None) -> Future[None]:
        """Like :meth:`blockdev_add`, with the node's cache mode
        (``"cache": {"direct": DIRECT, "no-flush": NO_FLUSH}``).

        Args:
            device: the image file or block device path.
            blockdev_id: the node name.
            direct: bypass the host page cache (O_DIRECT).
            no_flush: ignore the guest's flush requests.
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        return self._blockdev_add("blockdev_add_with_cache", None, device, blockdev_id,
                                  read_only, (direct, no_flush), timeout)

    def blockdev_add_with_driver_cache(self, driver: str, device: str, blockdev_id: str,
                                       direct: bool, no_flush: bool, read_only: bool = False,
                                       *, timeout: float | None = None) -> Future[None]:
        """Like :meth:`blockdev_add_with_cache`, with the protocol driver chosen by the
        caller (``"file"``, ``"host_device"``, ``"host_cdrom"`` ...).

        Args:
            driver: the driver of the ``file`` child node.
            device: its ``filename``.
            blockdev_id: the node name.
            direct: bypass the host page cache.
            no_flush: ignore flush requests.
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        return self._blockdev_add("blockdev_add_with_driver_cache", driver, device,
                                  blockdev_id, read_only, (direct, no_flush), timeout)

    def blockdev_del(self, blockdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a block node: ``blockdev-del {"node-name": ID}`` (QEMU 2.9 or newer),
        ``x-blockdev-del {"id": ID}`` before.

        A node still attached to a device fails with "Node ... is in use": after
        :meth:`device_del`, wait for its future (the ``DEVICE_DELETED`` event) first.

        Returns:
            A future done (None) when the node is gone.

        Raises:
            ValidationError: ``blockdev_id`` is empty or not a string.
        """
        blockdev_id = _check_id("blockdev_del", "blockdev_id", blockdev_id)
        if self._qemu_at_least(2, 9):
            return self._command("blockdev-del", {"node-name": blockdev_id}, timeout)
        return self._command("x-blockdev-del", {"id": blockdev_id}, timeout)

    # ------------------------------------------------------------------ devices
    def _device_extras(self, op: str, args: dict[str, Any], *, romfile: str | None,
                       shared: bool, disable_modern: bool) -> dict[str, Any]:
        if _check_bool(op, "shared", shared) and self._qemu_at_least(2, 10):
            args["share-rw"] = True  # the property exists since QEMU 2.10
        romfile = _check_opt_str(op, "romfile", romfile)
        if romfile is not None:
            args["romfile"] = romfile
        if _check_bool(op, "disable_modern", disable_modern):
            args["disable-modern"] = True
        return args

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
        op = "device_add"
        args: dict[str, Any] = {
            "driver": _check_id(op, "driver", driver),
            "id": _check_id(op, "dev_id", dev_id),
            "drive": _check_id(op, "blockdev_id", blockdev_id),
        }
        bus = _check_str(op, "bus", bus)
        if devno is not None:
            if bus:
                raise ValidationError(f"{op}: give bus or devno, not both")
            args["devno"] = _check_id(op, "devno", devno)
        elif bus:
            args["bus"] = bus
        self._device_extras(op, args, romfile=romfile, shared=shared,
                            disable_modern=disable_modern)
        return self._command("device_add", args, timeout)

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
        op = "scsi_device_add"
        if driver not in SCSI_DRIVERS:
            raise ValidationError(
                f"{op}: driver must be one of {sorted(SCSI_DRIVERS)}, not {driver!r}")
        args: dict[str, Any] = {
            "driver": driver,
            "id": _check_id(op, "dev_id", dev_id),
            "drive": _check_id(op, "blockdev_id", blockdev_id),
            "bus": _check_id(op, "bus", bus),
        }
        if _check_int(op, "scsi_id", scsi_id) >= 0:
            args["scsi-id"] = scsi_id
        if _check_int(op, "lun", lun) >= 0:
            args["lun"] = lun
        self._device_extras(op, args, romfile=romfile, shared=shared,
                            disable_modern=disable_modern)
        return self._command("device_add", args, timeout)

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
        op = "pci_device_add"
        args: dict[str, Any] = {
            "driver": _check_id(op, "driver", driver),
            "id": _check_id(op, "dev_id", dev_id),
            "drive": _check_id(op, "blockdev_id", blockdev_id),
        }
        _put_placement(op, args, addr=addr, bus=bus)
        if _check_int(op, "queues", queues, 0) > 0:
            args["num-queues"] = queues
        self._device_extras(op, args, romfile=romfile, shared=shared,
                            disable_modern=disable_modern)
        return self._command("device_add", args, timeout)

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
        op = "pci_vhost_user_device_add"
        args: dict[str, Any] = {
            "driver": _check_id(op, "driver", driver),
            "id": _check_id(op, "dev_id", dev_id),
            "chardev": _check_id(op, "chardev_id", chardev_id),
        }
        _put_placement(op, args, addr=addr, bus=bus)
        return self._command("device_add", args, timeout)

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
        op = "vfio_device_add"
        args: dict[str, Any] = {
            "driver": "vfio-pci",
            "id": _check_id(op, "dev_id", dev_id),
            "host": _check_id(op, "bdf", bdf),
        }
        romfile = _check_opt_str(op, "romfile", romfile)
        if romfile is not None:
            args["romfile"] = romfile
        return self._command("device_add", args, timeout)

    def pci_vfio_device_add(self, dev_id: str, bdf: str, addr: str, bus: str = "",
                            romfile: str | None = None, *,
                            timeout: float | None = None) -> Future[None]:
        """Like :meth:`vfio_device_add`, at a given slot (``"addr"``) and bus.

        Returns:
            A future done (None) when QEMU has created the device.

        Raises:
            ValidationError: an empty id or address, wrong types.
        """
        op = "pci_vfio_device_add"
        args: dict[str, Any] = {
            "driver": "vfio-pci",
            "id": _check_id(op, "dev_id", dev_id),
            "host": _check_id(op, "bdf", bdf),
        }
        _put_placement(op, args, addr=addr, bus=bus, romfile=romfile)
        return self._command("device_add", args, timeout)

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
        op = "pci_vfio_mediated_device_add"
        args: dict[str, Any] = {
            "driver": "vfio-pci",
            "id": _check_id(op, "dev_id", dev_id),
            "sysfsdev": _check_id(op, "sysfsdev", sysfsdev),
        }
        _put_placement(op, args, addr=addr, bus=bus, romfile=romfile)
        return self._command("device_add", args, timeout)

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
        op = "ap_vfio_mediated_device_add"
        args: dict[str, Any] = {"driver": "vfio-ap",
                                "sysfsdev": _check_id(op, "sysfsdev", sysfsdev)}
        if dev_id is not None:
            args["id"] = _check_id(op, "dev_id", dev_id)
        return self._command("device_add", args, timeout)

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
        op = "net_pci_device_add"
        args: dict[str, Any] = {
            "driver": "virtio-net-pci",
            "id": _check_id(op, "dev_id", dev_id),
            "netdev": _check_id(op, "netdev_id", netdev_id),
        }
        if _check_str(op, "mac", mac):
            args["mac"] = mac
        _put_placement(op, args, addr=addr, bus=bus)
        self._device_extras(op, args, romfile=romfile, shared=False,
                            disable_modern=disable_modern)
        if _check_int(op, "queues", queues, 0) > 0:
            args["mq"] = True
            args["vectors"] = 2 * queues + 2
        return self._command("device_add", args, timeout)

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
        op = "net_ccw_device_add"
        args: dict[str, Any] = {
            "driver": "virtio-net-ccw",
            "id": _check_id(op, "dev_id", dev_id),
            "netdev": _check_id(op, "netdev_id", netdev_id),
            "devno": _check_id(op, "devno", devno),
        }
        if _check_str(op, "mac", mac):
            args["mac"] = mac
        if _check_int(op, "queues", queues, 0) > 0:
            args["mq"] = True
        return self._command("device_add", args, timeout)

    def cpu_device_add(self, driver: str, cpu_id: str, socket_id: int | str | None,
                       core_id: int | str | None, thread_id: int | str | None, *,
                       die_id: int | str | None = None, node_id: int | str | None = None,
                       timeout: float | None = None) -> Future[None]:
        """Plug a vCPU into a free slot (``device_add``).

        Pass exactly the topology ids that the slot's ``props`` in
        :meth:`query_hotpluggable_cpus` have (the others as None): QEMU refuses an id
        the machine does not use. Ids are sent as JSON integers; a decimal string
        (``"1"``) is converted, an empty string is omitted like None.

        Args:
            driver: the CPU type, the slot's :attr:`HotpluggableCPU.type`.
            cpu_id: the new device's id.
            socket_id: ``socket-id``.
            core_id: ``core-id``.
            thread_id: ``thread-id``.
            die_id: ``die-id``.
            node_id: ``node-id``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the vCPU. Without a guest OS,
            unplugging it never completes.

        Raises:
            ValidationError: an empty driver or id, a negative or non-numeric id.
        """
        op = "cpu_device_add"
        args: dict[str, Any] = {
            "driver": _check_id(op, "driver", driver),
            "id": _check_id(op, "cpu_id", cpu_id),
        }
        for wire, what, value in (("socket-id", "socket_id", socket_id),
                                  ("die-id", "die_id", die_id),
                                  ("core-id", "core_id", core_id),
                                  ("thread-id", "thread_id", thread_id),
                                  ("node-id", "node_id", node_id)):
            number = _check_topology_id(op, what, value)
            if number is not None:
                args[wire] = number
        return self._command("device_add", args, timeout)

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
        op = "pci_vsock_add"
        vsock_id = _check_id(op, "vsock_id", vsock_id)
        args: dict[str, Any] = {
            "driver": "vhost-vsock-pci",
            "id": vsock_id,
            "guest-cid": _check_int(op, "guest_cid", guest_cid, 3),
        }
        named: list[tuple[str, int]] = []
        if isinstance(vhostfd, str):
            args["vhostfd"] = _check_id(op, "vhostfd", vhostfd)
        elif vhostfd is not None:
            name = f"vhostfd-{vsock_id}"
            named.append((name, _check_fd(op, "vhostfd", vhostfd)))
            args["vhostfd"] = name
        _put_placement(op, args, addr=addr, bus=bus)
        self._device_extras(op, args, romfile=romfile, shared=False,
                            disable_modern=disable_modern)
        if named:
            return self._with_named_fds(op, named, "device_add", args, timeout)
        return self._command("device_add", args, timeout)

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
        op = "virt_serial_port_add"
        args: dict[str, Any] = {
            "driver": "virtserialport",
            "id": _check_id(op, "dev_id", dev_id),
            "chardev": _check_id(op, "chardev_id", chardev_id),
            "name": _check_id(op, "name", name),
        }
        if _check_str(op, "bus", bus):
            args["bus"] = bus
        return self._command("device_add", args, timeout)

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
        dev_id = _check_id("device_del", "dev_id", dev_id)
        fut: Future[Event] = self.execute(
            "device_del", {"id": dev_id}, timeout=timeout,
            until=EventFilter("DEVICE_DELETED", {"device": dev_id}))
        return fut

    # ------------------------------------------------------------------- memory
    def _memory_backend_then_device(self, object_args: dict[str, Any],
                                    device_args: dict[str, Any],
                                    timeout: float | None) -> Future[None]:
        """``object-add``, then ``device_add``; if ``device_add`` fails, ``object-del``
        the backend and fail with ``device_add``'s error."""
        object_id = object_args["id"]

        def _plug(_: object) -> Future[None]:
            step = self.execute("device_add", device_args, timeout=timeout)
            return self._undo_on_failure(step, "object-del", {"id": object_id}, timeout)

        return self.execute("object-add", object_args, timeout=timeout).chain(_plug)

    def memdev_add(self, qom_type: str, mem_id: str, mem_path: str, size: int, share: bool,
                   driver: str, driver_id: str, addr: str = "", bus: str = "", *,
                   timeout: float | None = None) -> Future[None]:
        """Hot-plug memory: a memory backend (``object-add``), then the device that
        shows it to the guest (``device_add``).

        The backend is ``{"qom-type": QOM_TYPE, "id": MEM_ID, "size": SIZE MiB in
        bytes}`` plus ``"mem-path"`` when not empty and ``"share": true`` when asked
        (QEMU before 5.0 gets them inside ``"props"``). The device is
        ``{"driver": DRIVER, "id": DRIVER_ID, "memdev": MEM_ID}`` plus ``"addr"`` and
        ``"bus"`` when not empty. When ``device_add`` fails, the backend is removed
        (``object-del``) and the future fails with ``device_add``'s error.

        Args:
            qom_type: the backend type: ``"memory-backend-ram"``,
                ``"memory-backend-file"`` (needs ``mem_path``) or another
                ``memory-backend-*``.
            mem_id: the backend's id.
            mem_path: the backing file or hugetlbfs directory ("" for none).
            size: the size in MiB (as govmm's; :meth:`nvdimm_device_add` takes bytes).
            share: map the memory shared (needed by vhost-user devices).
            driver: the device: ``"pc-dimm"``, ``"virtio-mem-pci"``, ``"nvdimm"`` ...
            driver_id: the device's id.
            addr: the device's address ("": QEMU chooses).
            bus: the device's bus ("": QEMU chooses).
            timeout: seconds for each command.

        Returns:
            A future done (None) when the device exists. Without a guest OS, unplugging
            a DIMM never completes.

        Raises:
            ValidationError: a type that is not a memory backend, a file backend
                without a path, a size below 1, an empty id, wrong types.
        """
        op = "memdev_add"
        qom_type = _check_id(op, "qom_type", qom_type)
        if not qom_type.startswith("memory-backend-"):
            raise ValidationError(f"{op}: qom_type must be a memory-backend-* type, "
                                  f"not {qom_type!r}")
        mem_id = _check_id(op, "mem_id", mem_id)
        mem_path = _check_str(op, "mem_path", mem_path)
        if qom_type == "memory-backend-file" and not mem_path:
            raise ValidationError(f"{op}: memory-backend-file needs a mem_path")
        size = _check_int(op, "size", size, 1)
        props: dict[str, Any] = {"size": size << 20}
        if mem_path:
            props["mem-path"] = mem_path
        if _check_bool(op, "share", share):
            props["share"] = True
        device: dict[str, Any] = {
            "driver": _check_id(op, "driver", driver),
            "id": _check_id(op, "driver_id", driver_id),
            "memdev": mem_id,
        }
        if _check_str(op, "bus", bus):
            device["bus"] = bus
        if _check_str(op, "addr", addr):
            device["addr"] = addr
        return self._memory_backend_then_device(
            self._object_add_args(qom_type, mem_id, props), device, timeout)

    def hotplug_memory(self, qom_type: str, mem_id: str, mem_path: str, size: int,
                       share: bool = False, *, timeout: float | None = None) -> Future[None]:
        """Hot-plug a ``pc-dimm`` with id ``"dimm" + mem_id`` over a new backend: the
        same as ``memdev_add(qom_type, mem_id, mem_path, size, share, "pc-dimm",
        "dimm" + mem_id)`` (see :meth:`memdev_add`; ``size`` in MiB).

        Returns:
            A future done (None) when the DIMM exists.

        Raises:
            ValidationError: as :meth:`memdev_add`.
        """
        return self.memdev_add(qom_type, mem_id, mem_path, size, share, "pc-dimm",
                               f"dimm{_check_id('hotplug_memory', 'mem_id', mem_id)}",
                               timeout=timeout)

    def nvdimm_device_add(self, dev_id: str, mem_path: str, size: int,
                          pmem: bool | None = None, *,
                          timeout: float | None = None) -> Future[None]:
        """Hot-plug an NVDIMM: a shared ``memory-backend-file`` with id
        ``"nvdimmbackmem" + dev_id`` (``object-add``), then an ``nvdimm`` device with id
        ``"nvdimm" + dev_id`` over it (``device_add``). When ``device_add`` fails, the
        backend is removed (``object-del``) and the future fails with
        ``device_add``'s error. The machine needs ``nvdimm=on``.

        Args:
            dev_id: the suffix of both ids.
            mem_path: the backing file.
            size: the size in bytes.
            pmem: the backend's ``pmem`` property (omitted when None).
            timeout: seconds for each command.

        Returns:
            A future done (None) when the NVDIMM exists.

        Raises:
            ValidationError: an empty id or path, a size below 1, wrong types.
        """
        op = "nvdimm_device_add"
        dev_id = _check_id(op, "dev_id", dev_id)
        backend_id = f"nvdimmbackmem{dev_id}"
        props: dict[str, Any] = {
            "mem-path": _check_id(op, "mem_path", mem_path),
            "size": _check_int(op, "size", size, 1),
            "share": True,
        }
        if pmem is not None:
            props["pmem"] = _check_bool(op, "pmem", pmem)
        device = {"driver": "nvdimm", "id": f"nvdimm{dev_id}", "memdev": backend_id}
        return self._memory_backend_then_device(
            self._object_add_args("memory-backend-file", backend_id, props), device, timeout)

    # --------------------------------------------------------------- net, char
    def netdev_add(self, netdev_type: str, netdev_id: str, ifname: str = "",
                   downscript: str = "no", script: str = "no", queues: int = 0,
                   vhost: bool = False, *, timeout: float | None = None,
                   **extra: Any) -> Future[None]:
        """Add a network backend (``netdev_add``).

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID}``; for ``tap`` also
        ``"ifname"``, ``"downscript"`` and ``"script"`` (as govmm does; other types get
        them only when not empty / not ``"no"``, and QEMU refuses them for types that
        lack them, e.g. ``user``); ``"queues"`` when above 1; ``"vhost": true`` when
        asked; and each ``extra`` keyword under its QMP name (``ipv6_prefix=...`` ->
        ``"ipv6-prefix"``, see :func:`wire_name`).

        Args:
            netdev_type: ``"tap"``, ``"user"``, ``"socket"``, ``"vhost-user"`` ...
            netdev_id: the netdev's id.
            ifname: the tap interface's name ("" lets the kernel choose).
            downscript: the tap down script (``"no"``: none).
            script: the tap up script (``"no"``: none).
            queues: the number of queues (sent when above 1).
            vhost: use vhost-net.
            timeout: seconds for the command.
            **extra: further netdev options (values sent as given).

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type or id, negative queues, wrong types.
        """
        op = "netdev_add"
        netdev_type = _check_id(op, "netdev_type", netdev_type)
        args: dict[str, Any] = {"type": netdev_type,
                                "id": _check_id(op, "netdev_id", netdev_id)}
        ifname = _check_str(op, "ifname", ifname)
        downscript = _check_str(op, "downscript", downscript)
        script = _check_str(op, "script", script)
        tap = netdev_type in _TAP_TYPES
        if tap or ifname:
            args["ifname"] = ifname
        if tap or downscript != "no":
            args["downscript"] = downscript
        if tap or script != "no":
            args["script"] = script
        if _check_int(op, "queues", queues, 0) > 1:
            args["queues"] = queues
        if _check_bool(op, "vhost", vhost):
            args["vhost"] = True
        for key, value in extra.items():
            wire = wire_name(key)
            if wire in args:
                raise ValidationError(f"{op}: {key!r} repeats the argument {wire!r}")
            args[wire] = value
        return self._command("netdev_add", args, timeout)

    def netdev_chardev_add(self, netdev_type: str, netdev_id: str, chardev: str,
                           queues: int = 0, *, timeout: float | None = None) -> Future[None]:
        """Add a network backend over a chardev (``netdev_add``), i.e. ``vhost-user``.

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID, "chardev": CHARDEV}`` plus
        ``"queues"`` when above 1.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type or id, negative queues, wrong types.
        """
        op = "netdev_chardev_add"
        args: dict[str, Any] = {
            "type": _check_id(op, "netdev_type", netdev_type),
            "id": _check_id(op, "netdev_id", netdev_id),
            "chardev": _check_id(op, "chardev", chardev),
        }
        if _check_int(op, "queues", queues, 0) > 1:
            args["queues"] = queues
        return self._command("netdev_add", args, timeout)

    def netdev_add_by_fds(self, netdev_type: str, netdev_id: str, fds: Sequence[int],
                          vhost_fds: Sequence[int] = (), *,
                          timeout: float | None = None) -> Future[None]:
        """Add a network backend over open descriptors (a tap or macvtap queue each).

        Each of ``fds`` is passed to QEMU with ``getfd`` (SCM_RIGHTS) as ``"fd0"``,
        ``"fd1"`` ..., each of ``vhost_fds`` as ``"vhostfd0"`` ..., then ``netdev_add``
        gets ``{"type", "id", "fds": "fd0:fd1"}`` and, when there are vhost
        descriptors, ``"vhost": true, "vhostfds": "vhostfd0:vhostfd1"``.

        All the commands are submitted together, so no other command of this client
        comes between them and two such operations cannot swap their ``fdN`` names
        (QEMU consumes a name when ``netdev_add`` uses it). When a ``getfd`` or
        ``netdev_add`` fails, the names already registered are released with
        ``closefd`` and the future fails with the first error.

        Args:
            netdev_type: usually ``"tap"``.
            netdev_id: the netdev's id.
            fds: the queue descriptors (at least one). The caller keeps them; QEMU
                gets copies.
            vhost_fds: ``/dev/vhost-net`` descriptors, one per queue, or none.
            timeout: seconds for each command.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: no ``fds``, a descriptor that is not open, an empty type
                or id (nothing is sent).
        """
        op = "netdev_add_by_fds"
        args: dict[str, Any] = {"type": _check_id(op, "netdev_type", netdev_type),
                                "id": _check_id(op, "netdev_id", netdev_id)}
        if isinstance(fds, (str, bytes)) or isinstance(vhost_fds, (str, bytes)):
            raise ValidationError(f"{op}: fds and vhost_fds are sequences of descriptors")
        if not fds:
            raise ValidationError(f"{op}: at least one descriptor is needed in fds")
        named = [(f"fd{i}", _check_fd(op, f"fds[{i}]", fd)) for i, fd in enumerate(fds)]
        vhost_named = [(f"vhostfd{i}", _check_fd(op, f"vhost_fds[{i}]", fd))
                       for i, fd in enumerate(vhost_fds)]
        args["fds"] = ":".join(name for name, _ in named)
        if vhost_named:
            args["vhost"] = True
            args["vhostfds"] = ":".join(name for name, _ in vhost_named)
        return self._with_named_fds(op, named + vhost_named, "netdev_add", args, timeout)

    def netdev_del(self, netdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a network backend (``netdev_del {"id"}``).

        Returns:
            A future done (None) when the netdev is gone.

        Raises:
            ValidationError: ``netdev_id`` is empty or not a string.
        """
        netdev_id = _check_id("netdev_del", "netdev_id", netdev_id)
        return self._command("netdev_del", {"id": netdev_id}, timeout)

    def chardev_unix_socket_add(self, chardev_id: str, path: str, wait: bool = False,
                                server: bool = True, *, reconnect: int = 0,
                                timeout: float | None = None) -> Future[None]:
        """Add a chardev on a Unix socket (``chardev-add`` with a ``socket`` backend).

        Sends ``{"id": ID, "backend": {"type": "socket", "data": {"server": SERVER,
        "addr": {"type": "unix", "data": {"path": PATH}}}}}``, with ``"wait": WAIT``
        in ``data`` for a server (QEMU refuses ``wait`` for a client) and
        ``"reconnect"`` when above 0.

        Args:
            chardev_id: the chardev's id.
            path: the socket's path.
            wait: a server waits for a client before QEMU goes on (blocks QEMU).
            server: listen (True) or connect (False).
            reconnect: a client reconnects after this many seconds (0: never).
            timeout: seconds for the command.

        Returns:
            A future done (None) when the chardev exists (a server is listening).

        Raises:
            ValidationError: an empty id or path, wrong types.
        """
        op = "chardev_unix_socket_add"
        server = _check_bool(op, "server", server)
        data: dict[str, Any] = {
            "server": server,
            "addr": {"type": "unix", "data": {"path": _check_id(op, "path", path)}},
        }
        wait = _check_bool(op, "wait", wait)
        if server:
            data["wait"] = wait
        if _check_int(op, "reconnect", reconnect, 0) > 0:
            data["reconnect"] = reconnect
        args = {"id": _check_id(op, "chardev_id", chardev_id),
                "backend": {"type": "socket", "data": data}}
        return self._command("chardev-add", args, timeout)

    def chardev_del(self, chardev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a chardev (``chardev-remove {"id"}``); QEMU refuses one in use.

        Returns:
            A future done (None) when the chardev is gone.

        Raises:
            ValidationError: ``chardev_id`` is empty or not a string.
        """
        chardev_id = _check_id("chardev_del", "chardev_id", chardev_id)
        return self._command("chardev-remove", {"id": chardev_id}, timeout)

    # -------------------------------------------------------------- fd passing
    def getfd(self, fdname: str, fd: int, *, timeout: float | None = None) -> Future[None]:
        """Pass a file descriptor to QEMU under a name (``getfd {"fdname"}``, the
        descriptor travelling with the command as SCM_RIGHTS).

        A later command names it (``"fd": NAME``, ``"vhostfd": NAME`` ...), which
        consumes the name; :meth:`closefd` releases an unused one. Giving a name again
        replaces (and closes, in QEMU) the earlier descriptor.

        Args:
            fdname: the name; it must not start with a digit.
            fd: an open descriptor. The caller keeps it: QEMU gets a copy.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU holds the descriptor.

        Raises:
            ValidationError: an empty name or one starting with a digit, a descriptor
                that is not open.
        """
        op = "getfd"
        fdname = _check_fdname(op, fdname)
        fd = _check_fd(op, "fd", fd)
        return self.execute("getfd", {"fdname": fdname}, fds=[fd],
                            timeout=timeout).then(_discard)

    def closefd(self, fdname: str, *, timeout: float | None = None) -> Future[None]:
        """Close a descriptor QEMU received with :meth:`getfd` (``closefd {"fdname"}``).

        Returns:
            A future done (None) when QEMU has closed it.

        Raises:
            ValidationError: ``fdname`` is empty or not a string.
        """
        fdname = _check_id("closefd", "fdname", fdname)
        return self._command("closefd", {"fdname": fdname}, timeout)

    def add_fd(self, fd: int, fdset_id: int | None = None, opaque: str | None = None, *,
               timeout: float | None = None) -> Future[AddFdInfo]:
        """Add a descriptor to an fd set (``add-fd``, the descriptor travelling as
        SCM_RIGHTS), usable as ``/dev/fdset/ID`` where QEMU opens a file.

        Args:
            fd: an open descriptor. The caller keeps it: QEMU gets a copy.
            fdset_id: the set (None: QEMU picks a free one).
            opaque: a free-form note QEMU stores with it.
            timeout: seconds for the command.

        Returns:
            A future for the :class:`AddFdInfo` (the set's id, QEMU's fd number).

        Raises:
            ValidationError: a descriptor that is not open, a negative set id.
        """
        op = "add_fd"
        fd = _check_fd(op, "fd", fd)
        args: dict[str, Any] = {}
        if fdset_id is not None:
            args["fdset-id"] = _check_int(op, "fdset_id", fdset_id, 0)
        opaque = _check_opt_str(op, "opaque", opaque)
        if opaque is not None:
            args["opaque"] = opaque
        return self.execute("add-fd", args or None, fds=[fd],
                            timeout=timeout).then(AddFdInfo.from_qmp)

    def remove_fd(self, fdset_id: int, fd: int | None = None, *,
                  timeout: float | None = None) -> Future[None]:
        """Remove a descriptor, or a whole fd set, from QEMU (``remove-fd``).

        QEMU closes the descriptor once nothing uses it; on a paused VM the set may
        stay listed by ``query-fdsets``.

        Args:
            fdset_id: the set.
            fd: QEMU's fd number (:attr:`AddFdInfo.fd`); None removes the whole set.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has removed it.

        Raises:
            ValidationError: negative or non-integer ids.
        """
        op = "remove_fd"
        args: dict[str, Any] = {"fdset-id": _check_int(op, "fdset_id", fdset_id, 0)}
        if fd is not None:
            args["fd"] = _check_int(op, "fd", fd, 0)
        return self._command("remove-fd", args, timeout)

    # ------------------------------------------------------------------ queries
    def query_hotpluggable_cpus(self, *, timeout: float | None = None,
                                ) -> Future[list[HotpluggableCPU]]:
        """List the vCPU slots (``query-hotpluggable-cpus``).

        Returns:
            A future for the slots, as QEMU orders them (highest first); a slot with
            :attr:`HotpluggableCPU.qom_path` None is free.
        """
        return self.execute("query-hotpluggable-cpus", None,
                            timeout=timeout).then(_hotpluggable_cpus)

    def query_memory_devices(self, *, timeout: float | None = None,
                             ) -> Future[list[MemoryDevice]]:
        """List the memory devices (``query-memory-devices``): DIMMs, NVDIMMs,
        virtio-mem ...

        Returns:
            A future for the devices (empty without hot-plugged memory).
        """
        return self.execute("query-memory-devices", None,
                            timeout=timeout).then(_memory_devices)

    def query_cpus(self, *, timeout: float | None = None) -> Future[list[CPUInfo]]:
        """List the vCPUs.

        Sends ``query-cpus-fast`` (which does not interrupt the vCPUs) to QEMU 2.12
        or newer, and when the version is unknown; to an older QEMU ``query-cpus``,
        falling back to ``query-cpus-fast`` if QEMU answers ``CommandNotFound`` (QEMU
        6.0 removed ``query-cpus``). Both shapes become :class:`CPUInfo`.

        Returns:
            A future for the vCPUs.
        """
        if self._qemu_at_least(2, 12):
            return self.execute("query-cpus-fast", None, timeout=timeout).then(_cpus_fast)
        legacy = self.execute("query-cpus", None, timeout=timeout).then(_cpus_legacy)

        def _fallback(error: BaseException) -> Future[list[CPUInfo]]:
            if isinstance(error, CommandError) and error.error_class == "CommandNotFound":
                return self.execute("query-cpus-fast", None, timeout=timeout).then(_cpus_fast)
            return _failed(legacy, error)

        return legacy.recover(_fallback)

    def query_migrate(self, *, timeout: float | None = None) -> Future[MigrationInfo]:
        """Ask for the state of the outgoing migration (``query-migrate``).

        Returns:
            A future for a :class:`MigrationInfo` (``status`` None when no migration
            was started).
        """
        return self.execute("query-migrate", None,
                            timeout=timeout).then(MigrationInfo.from_qmp)

    def query_qmp_schema(self, *, timeout: float | None = None,
                         ) -> Future[list[dict[str, Any]]]:
        """Fetch the QMP schema (``query-qmp-schema``; about 200 KB on QEMU 7.2).

        Returns:
            A future for the schema's entities, as QEMU sent them.
        """
        return self.execute("query-qmp-schema", None, timeout=timeout).then(_schema)

    # ---------------------------------------------------------------- migration
    def migrate_set_capabilities(self, capabilities: Mapping[str, bool], *,
                                 timeout: float | None = None) -> Future[None]:
        """Turn migration capabilities on or off (``migrate-set-capabilities`` with
        ``{"capabilities": [{"capability": NAME, "state": BOOL}, ...]}``).

        ``{"events": True}`` makes QEMU emit the ``MIGRATION`` events that
        :meth:`wait_migration` and :meth:`migrate_and_wait` wait for.

        Returns:
            A future done (None) when QEMU has applied them.

        Raises:
            ValidationError: an empty mapping, a non-string name, a non-bool state.
        """
        op = "migrate_set_capabilities"
        if not isinstance(capabilities, Mapping) or not capabilities:
            raise ValidationError(f"{op}: capabilities must be a non-empty mapping "
                                  "of names to bools")
        caps = [{"capability": _check_id(op, "a capability name", name),
                 "state": _check_bool(op, f"the state of {name!r}", state)}
                for name, state in capabilities.items()]
        return self._command("migrate-set-capabilities", {"capabilities": caps}, timeout)

    def migrate(self, uri: str, *, timeout: float | None = None) -> Future[None]:
        """Start migrating out (``migrate {"uri"}``), e.g. to ``"tcp:HOST:PORT"``,
        ``"unix:PATH"`` or ``"exec:cat > FILE"``.

        Returns:
            A future done (None) when the migration has started (not finished: use
            :meth:`wait_migration`, or :meth:`migrate_and_wait` instead).

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = _check_id("migrate", "uri", uri)
        return self._command("migrate", {"uri": uri}, timeout)

    def migrate_incoming(self, uri: str, *, timeout: float | None = None) -> Future[None]:
        """Start listening for an incoming migration (``migrate-incoming {"uri"}``);
        QEMU must have been started with ``-incoming defer``.

        Returns:
            A future done (None) when QEMU listens.

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = _check_id("migrate_incoming", "uri", uri)
        return self._command("migrate-incoming", {"uri": uri}, timeout)

    def migrate_and_wait(self, uri: str, *, timeout: float | None = None) -> Future[str]:
        """Start migrating out (``migrate {"uri"}``) and wait until it is over.

        The wait for a ``MIGRATION`` event with status ``completed``, ``failed`` or
        ``cancelled`` is registered before ``migrate`` is written. Needs the
        ``events`` capability (see :meth:`migrate_set_capabilities`): without it the
        future only ends by ``timeout``.

        Args:
            uri: the destination.
            timeout: seconds for the whole migration.

        Returns:
            A future for the final status (``"completed"``, ``"failed"`` or
            ``"cancelled"``); it fails with :class:`~qmplex.errors.CommandError` when
            QEMU refuses to start.

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = _check_id("migrate_and_wait", "uri", uri)
        done: Future[Event] = self.execute("migrate", {"uri": uri}, timeout=timeout,
                                           until=_MIGRATION_OVER)
        return done.then(_event_status)

    def wait_migration(self, timeout: float | None = None) -> Future[str]:
        """Wait until the outgoing migration is over.

        Registers a wait for a ``MIGRATION`` event with status ``completed``,
        ``failed`` or ``cancelled`` first, then sends ``query-migrate``: when that
        already reports a final status (the migration ended before this call), the
        future completes with it at once, so an end that came before the call is not
        missed. That also means a finished earlier migration is reported if no new
        one was started: call it after :meth:`migrate`, or use
        :meth:`migrate_and_wait`. Needs the ``events`` capability.

        Args:
            timeout: seconds to wait.

        Returns:
            A future for the final status.
        """
        waiter = self.wait_event(_MIGRATION_OVER, timeout=timeout)

        def _decide(info: MigrationInfo) -> Future[str]:
            if info.status in MIGRATION_FINAL_STATES:
                return _done(waiter, info.status)
            return waiter.then(_event_status)

        def _release(_: Future[str]) -> None:
            waiter.cancel()  # no effect if the event came

        out = self.query_migrate(timeout=timeout).chain(_decide)
        out.add_done_callback(_release)
        return out

    # -------------------------------------------------------------------- other
    def balloon(self, value: int, *, timeout: float | None = None) -> Future[None]:
        """Ask the guest's balloon driver for a memory size (``balloon {"value"}``).

        QEMU answers ``DeviceNotActive`` (a :class:`~qmplex.errors.CommandError`)
        when the machine has no balloon device; with one, it accepts the request even
        without a guest (no ``BALLOON_CHANGE`` event then).

        Args:
            value: the target size of the guest's memory, in bytes.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has passed the request on.

        Raises:
            ValidationError: ``value`` is not a positive integer.
        """
        value = _check_int("balloon", "value", value, 1)
        return self._command("balloon", {"value": value}, timeout)

    def qom_set(self, path: str, property: str, value: Any, *,
                timeout: float | None = None) -> Future[None]:
        """Set a QOM property (``qom-set {"path", "property", "value"}``).

        Returns:
            A future done (None) when QEMU has set it.

        Raises:
            ValidationError: an empty path or property name.
        """
        op = "qom_set"
        args = {"path": _check_id(op, "path", path),
                "property": _check_id(op, "property", property), "value": value}
        return self._command("qom-set", args, timeout)

    def qom_get(self, path: str, property: str, *,
                timeout: float | None = None) -> Future[Any]:
        """Read a QOM property (``qom-get {"path", "property"}``).

        Returns:
            A future for the value, as QEMU sent it (any JSON value).

        Raises:
            ValidationError: an empty path or property name.
        """
        op = "qom_get"
        args = {"path": _check_id(op, "path", path),
                "property": _check_id(op, "property", property)}
        return self.execute("qom-get", args, timeout=timeout)

    def qom_list(self, path: str, *,
                 timeout: float | None = None) -> Future[list[ObjectProperty]]:
        """List the properties (and children) of a QOM object (``qom-list {"path"}``).

        Returns:
            A future for the properties.

        Raises:
            ValidationError: an empty path.
        """
        path = _check_id("qom_list", "path", path)
        return self.execute("qom-list", {"path": path},
                            timeout=timeout).then(_object_properties)

    def dump_guest_memory(self, protocol: str, paging: bool, format: str | None = None, *,
                          timeout: float | None = None) -> Future[None]:
        """Dump the guest's memory (``dump-guest-memory``).

        Sends ``{"protocol": PROTOCOL, "paging": PAGING}`` plus ``"format"`` when given.

        Args:
            protocol: ``"file:PATH"`` or ``"fd:NAME"`` (a name from :meth:`getfd`).
            paging: use the guest's page tables (needs a running guest OS).
            format: ``"elf"``, ``"kdump-zlib"``, ``"kdump-lzo"``, ``"kdump-snappy"``,
                ``"win-dmp"`` (None: QEMU's default, ELF).
            timeout: seconds for the command.

        Returns:
            A future done (None) when the dump is written.

        Raises:
            ValidationError: an empty protocol, wrong types.
        """
        op = "dump_guest_memory"
        args: dict[str, Any] = {"protocol": _check_id(op, "protocol", protocol),
                                "paging": _check_bool(op, "paging", paging)}
        if format is not None:
            args["format"] = _check_id(op, "format", format)
        return self._command("dump-guest-memory", args, timeout)

    def human_monitor_command(self, command_line: str, cpu_index: int | None = None, *,
                              timeout: float | None = None) -> Future[str]:
        """Run a human monitor (HMP) command (``human-monitor-command``).

        Args:
            command_line: the HMP command, e.g. ``"info version"``.
            cpu_index: the vCPU to make current for the command (None: QEMU's).
            timeout: seconds for the command.

        Returns:
            A future for the command's output (lines end with CRLF; "" for none). HMP
            reports its errors in the output, not as a QMP error.

        Raises:
            ValidationError: an empty command line, a negative cpu_index.
        """
        op = "human_monitor_command"
        args: dict[str, Any] = {"command-line": _check_id(op, "command_line", command_line)}
        if cpu_index is not None:
            args["cpu-index"] = _check_int(op, "cpu_index", cpu_index, 0)
        return self.execute("human-monitor-command", args,
                            timeout=timeout).then(_hmp_output)
