"""Every error qmplex raises.

The hierarchy::

    QMPError(Exception)                  base of everything qmplex raises
     +-- ConnectError                    connect or greeting failed; __cause__ is the OSError
     +-- ConnectionLost                  EOF/reset while commands or waits were pending
     +-- ProtocolError                   the peer broke QMP (bounded .excerpt of its bytes)
     |    +-- LineTooLong                .limit, .received
     |    +-- DecodeError                invalid JSON, or JSON that is not an object
     |    +-- GreetingError              the first line is not a QMP greeting
     |    +-- NegotiationError           qmp_capabilities was refused
     |    +-- UnexpectedReply            a reply whose id matches no command
     +-- CommandError                    QMP answered {"error": ...}: .command, .error_class, .desc
     +-- ValidationError                 arguments rejected before anything was sent
     +-- StateError                      caller misuse: closed client, blocking inside a callback
     +-- Timeout(QMPError, TimeoutError) a deadline passed
     |    +-- OperationTimeout           the operation's own timeout: its future failed
     |    +-- WaitTimeout                result(timeout) stopped waiting: the future is
     |                                   still pending (wait again, or cancel it)
     +-- Cancelled                       the operation was cancelled

Errors about a connection name it (``.connection``: the client's ``name``, by default
its socket path) in their message, so that a manager running hundreds of VMs can tell
which one failed.

Errors caused by the peer (``ProtocolError`` and its children) are raised by the layer
that detects them (framing, protocol) and fail only that connection; the reactor and
every other connection keep running.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "QMPError",
    "ConnectError",
    "ConnectionLost",
    "ProtocolError",
    "LineTooLong",
    "DecodeError",
    "GreetingError",
    "NegotiationError",
    "UnexpectedReply",
    "CommandError",
    "ValidationError",
    "StateError",
    "Timeout",
    "OperationTimeout",
    "WaitTimeout",
    "Cancelled",
    "EXCERPT_BYTES",
    "excerpt",
    "detail",
]

#: At most this many bytes of peer input are kept in an error.
EXCERPT_BYTES = 200


def excerpt(data: bytes | bytearray | memoryview, limit: int = EXCERPT_BYTES) -> bytes:
    """Return at most ``limit`` bytes of ``data`` (with a marker when cut) for an error."""
    raw = bytes(data[: limit + 1])
    if len(raw) > limit:
        return raw[:limit] + b"..."
    return raw


class QMPError(Exception):
    """Base class of every error raised by qmplex."""


class ConnectError(QMPError):
    """Connecting to the QMP socket or reading its greeting failed."""


def _named(connection: str | None, message: str) -> str:
    return message if connection is None else f"{connection}: {message}"


def detail(error: BaseException) -> str:
    """``error``'s message without the connection's name it may start with."""
    text = getattr(error, "detail", None)
    return text if isinstance(text, str) else str(error)


class ConnectionLost(QMPError):
    """The connection ended (EOF, reset, close) while an operation was pending.

    Attributes:
        connection: the name of the client whose connection ended (None if unknown).
        detail: the message without the connection's name.
    """

    def __init__(self, message: str, *, connection: str | None = None) -> None:
        self.connection = connection
        self.detail = message
        super().__init__(_named(connection, message))


class ProtocolError(QMPError):
    """The peer sent something that is not valid QMP.

    Attributes:
        excerpt: at most ``EXCERPT_BYTES`` of the offending bytes.
    """

    def __init__(self, message: str, *, excerpt: bytes = b"") -> None:
        self.excerpt = excerpt
        if excerpt:
            message = f"{message}: {excerpt!r}"
        super().__init__(message)


class LineTooLong(ProtocolError):
    """A line from the peer exceeded the client's ``max_line_bytes``.

    Attributes:
        limit: the configured maximum line length in bytes.
        received: how many bytes of the line had arrived when it was refused.
    """

    def __init__(self, limit: int, received: int, excerpt: bytes = b"") -> None:
        self.limit = limit
        self.received = received
        super().__init__(
            f"line of at least {received} bytes exceeds the limit of {limit} bytes",
            excerpt=excerpt,
        )


class DecodeError(ProtocolError):
    """A line from the peer is not a JSON object."""


class GreetingError(ProtocolError):
    """The first message from the peer is not a QMP greeting."""


class NegotiationError(ProtocolError):
    """The peer refused ``qmp_capabilities``."""


class UnexpectedReply(ProtocolError):
    """A reply whose id matches no command in flight (it was dropped)."""


class CommandError(QMPError):
    """QMP answered a command with ``{"error": {"class": ..., "desc": ...}}``.

    Attributes:
        command: the QMP command name.
        error_class: QMP's error class, e.g. ``"GenericError"``, ``"DeviceNotFound"``.
        desc: QMP's human-readable description.
        arguments: the arguments that were sent (may be ``None``).
        connection: the name of the client that sent it (None if unknown).
    """

    def __init__(
        self,
        command: str,
        error_class: str,
        desc: str,
        arguments: dict[str, Any] | None = None,
        *,
        connection: str | None = None,
    ) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        self.arguments = arguments
        self.connection = connection
        super().__init__(_named(connection, f"{command}: {error_class}: {desc}"))


class ValidationError(QMPError, ValueError):
    """Arguments were rejected before anything was sent (by the schema or an operation)."""


class StateError(QMPError):
    """The caller used an object in a state that does not allow it.

    Examples: ``execute`` on a closed client, a blocking ``Future.result()`` inside a
    reactor callback (it would deadlock).
    """


class Timeout(QMPError, TimeoutError):
    """A deadline passed before the operation completed (see its two kinds).

    Attributes:
        connection: the name of the client concerned (None if unknown).
        command: the command concerned (None if it was not one command).
        detail: the message without the connection's name.
    """

    def __init__(self, message: str, *, connection: str | None = None,
                 command: str | None = None) -> None:
        self.connection = connection
        self.command = command
        self.detail = message
        super().__init__(_named(connection, message))


class OperationTimeout(Timeout):
    """The operation's own ``timeout`` passed: its future failed with this error.

    A command that was already written may still run in QEMU; its late reply (or
    event) is discarded.
    """


class WaitTimeout(Timeout):
    """``Future.result(timeout)`` (or ``exception(timeout)``) stopped waiting.

    The future is still pending: wait again, or cancel it.
    """


class Cancelled(QMPError):
    """The operation was cancelled before it completed."""
