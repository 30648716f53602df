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
     +-- Cancelled                       the operation was cancelled

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
    "Cancelled",
    "EXCERPT_BYTES",
    "excerpt",
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


class ConnectionLost(QMPError):
    """The connection ended (EOF, reset, close) while an operation was pending."""


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
    """

    def __init__(
        self,
        command: str,
        error_class: str,
        desc: str,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        self.arguments = arguments
        super().__init__(f"{command}: {error_class}: {desc}")


class ValidationError(QMPError, ValueError):
    """Arguments were rejected before anything was sent (by the schema or an operation)."""


class StateError(QMPError):
    """The caller used an object in a state that does not allow it.

    Examples: ``execute`` on a closed client, a blocking ``Future.result()`` inside a
    reactor callback (it would deadlock).
    """


class Timeout(QMPError, TimeoutError):
    """A deadline passed before the operation completed."""


class Cancelled(QMPError):
    """The operation was cancelled before it completed."""
