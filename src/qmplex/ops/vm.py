"""The virtual machine as a whole: run state, reset, power, balloon, memory dump.

:class:`VMOps` is ``client.vm``. Part of :mod:`qmplex.ops`; its rules (checks before
sending, ``timeout`` per command, futures that complete on events) are in that
package's docstring.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from ..events import Event, EventFilter
from ..futures import Future
from .args import check_bool, check_id, check_int
from .executor import command
from .namespace import Namespace
from .results import StatusInfo

__all__ = ["VMOps"]

#: The events :meth:`VMOps.system_powerdown` can wait for.
_POWERDOWN_EVENTS = ("POWERDOWN", "SHUTDOWN")


def _status_info(value: Any) -> StatusInfo:
    return StatusInfo.from_qmp(value)


class VMOps(Namespace):
    """The virtual machine as a whole (``client.vm``): ``stop``, ``cont``, ``quit``,
    ``system_reset``, ``system_powerdown``, ``query_status``, ``balloon``,
    ``dump_guest_memory``."""

    __slots__ = ()

    def stop(self, *, timeout: float | None = None) -> Future[None]:
        """Pause the guest's vCPUs (``stop``).

        Returns:
            A future done (None) when QEMU answers. A ``STOP`` event, when the guest
            was running, comes before the answer.
        """
        return command(self._executor, "stop", None, timeout)

    def cont(self, *, timeout: float | None = None) -> Future[None]:
        """Resume the guest's vCPUs (``cont``); also starts a ``-S`` machine.

        Returns:
            A future done (None) when QEMU answers (the ``RESUME`` event comes before).
        """
        return command(self._executor, "cont", None, timeout)

    def quit(self, *, timeout: float | None = None) -> Future[None]:
        """Make QEMU exit (``quit``).

        Returns:
            A future done (None) when QEMU answers; QEMU then closes the connection
            (the ``SHUTDOWN`` event comes before the answer).
        """
        return command(self._executor, "quit", None, timeout)

    def system_reset(self, *, timeout: float | None = None) -> Future[None]:
        """Reset the machine (``system_reset``).

        Returns:
            A future done (None) when QEMU answers (the ``RESET`` event comes before).
        """
        return command(self._executor, "system_reset", None, timeout)

    def system_powerdown(self, *, until: str = "POWERDOWN",
                         timeout: float | None = None) -> Future[Event]:
        """Press the ACPI power button (``system_powerdown``) and wait for an event.

        govmm's ``ExecuteSystemPowerdown`` waits for ``POWERDOWN`` too (its comment
        says ``SHUTDOWN``, its code waits for ``POWERDOWN``).

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
        fut: Future[Event] = self._executor.execute("system_powerdown", None, timeout=timeout,
                                                    until=EventFilter(until))
        return fut

    def query_status(self, *, timeout: float | None = None) -> Future[StatusInfo]:
        """Ask for the run state (``query-status``).

        Returns:
            A future for a :class:`StatusInfo`.
        """
        return self._executor.execute("query-status", None, timeout=timeout).then(_status_info)

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
        value = check_int("balloon", "value", value, 1)
        return command(self._executor, "balloon", {"value": value}, timeout)

    def dump_guest_memory(self, protocol: str, paging: bool, *, format: str | None = None,
                          timeout: float | None = None) -> Future[None]:
        """Dump the guest's memory (``dump-guest-memory``).

        Sends ``{"protocol": PROTOCOL, "paging": PAGING}`` plus ``"format"`` when given
        (govmm always sends ``"format"``, "" when not set, which QEMU refuses).

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
        args: dict[str, Any] = {"protocol": check_id(op, "protocol", protocol),
                                "paging": check_bool(op, "paging", paging)}
        if format is not None:
            args["format"] = check_id(op, "format", format)
        return command(self._executor, "dump-guest-memory", args, timeout)
