"""Per-test scripting of the fake server: what :meth:`FakeQMPServer.on` records.

A :class:`Script` says how one command is answered: its outcome (a handler, a return
value or an error; with none of them the built-in handler decides), when (``delay``,
``never``), with which events around the reply, and with which fault on the wire
(``close_mid_line``, ``reply_without_id``). :class:`Scripts` holds the scripts in force
and retires those given a number of ``times``. :class:`FakeCommandError` is what any
handler, a test's or a built-in one, raises to answer with ``{"error": ...}``.

The session (:mod:`.session`) carries a script out; this module only describes it.
Server-wide faults (stalling, garbage, dropped connections, greeting switches) are the
server's methods and attributes.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MISSING", "FakeCommandError", "Script", "Scripts", "generic_error"]


class _Missing:
    """The type of :data:`MISSING`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


#: Default of :meth:`FakeQMPServer.on`'s ``returns``: no scripted return value.
MISSING: Final = _Missing()


class FakeCommandError(Exception):
    """Raised by a command handler to make the server answer ``{"error": ...}``.

    Args:
        error_class: the QMP error class, e.g. ``"GenericError"``, ``"DeviceNotFound"``.
        desc: the human-readable description.
    """

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


def generic_error(desc: str) -> FakeCommandError:
    """A ``GenericError``, the class of most of QEMU's errors."""
    return FakeCommandError("GenericError", desc)


@dataclass(slots=True)
class Script:
    """How one command is answered (the arguments of :meth:`FakeQMPServer.on`)."""

    handler: Callable[[dict[str, Any]], Any] | None
    returns: Any
    error: tuple[str, str] | None
    delay: float
    never: bool
    events: tuple[tuple[str, Mapping[str, Any] | None], ...]
    events_after: tuple[tuple[str, Mapping[str, Any] | None, float], ...]
    close_mid_line: bool
    reply_without_id: bool
    times: int | None  # executions left; None: every execution

    @property
    def decides(self) -> bool:
        """True when the script, not the built-in handler, gives the outcome."""
        return self.error is not None or self.handler is not None or self.returns is not MISSING

    def answer(self, args: dict[str, Any]) -> Any:
        """Return the scripted ``"return"`` value (only when :attr:`decides`).

        Raises:
            FakeCommandError: the scripted error, or the handler's.
        """
        if self.error is not None:
            raise FakeCommandError(*self.error)
        if self.handler is not None:
            return self.handler(args)
        return self.returns


class Scripts:
    """The scripts in force, by command name (used on the reactor thread only)."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, Script] = {}

    def set(self, command: str, script: Script) -> None:
        """Script ``command``, replacing an earlier script."""
        self._by_name[command] = script

    def remove(self, command: str) -> None:
        """Forget the script of ``command``, if any."""
        self._by_name.pop(command, None)

    def get(self, command: str) -> Script | None:
        """The script of ``command``, or None."""
        return self._by_name.get(command)

    def names(self) -> KeysView[str]:
        """The scripted command names."""
        return self._by_name.keys()

    def used(self, command: str, script: Script) -> None:
        """Count one execution of ``script``; one with no ``times`` left is retired
        (unless a newer script replaced it meanwhile)."""
        if script.times is None:
            return
        script.times -= 1
        if script.times <= 0 and self._by_name.get(command) is script:
            del self._by_name[command]
