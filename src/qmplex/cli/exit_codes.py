"""How the ``qmplex`` command ends: its exit codes, and which error gives which.

The codes are part of the command's interface (scripts test them): ``--help`` lists
:data:`EXIT_CODES`, and :func:`exit_code_for` maps what a sub-command failed with to
its code. :class:`UsageError` is the command line's own error (exit code 2).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import (
    CommandError,
    ConnectError,
    ConnectionLost,
    ProtocolError,
    QMPError,
    Timeout,
    ValidationError,
)
from .demo import DemoError

__all__ = [
    "EXIT_CODES",
    "EXIT_COMMAND_ERROR",
    "EXIT_CONNECTION",
    "EXIT_DEMO_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
    "exit_code_for",
]

#: Success.
EXIT_OK = 0
#: QEMU answered the command with an error.
EXIT_COMMAND_ERROR = 1
#: Bad options or arguments (also argparse's own code).
EXIT_USAGE = 2
#: Cannot connect, the peer is not QMP, or the connection was lost.
EXIT_CONNECTION = 3
#: A deadline passed.
EXIT_TIMEOUT = 4
#: The demo failed (QEMU could not be started, or a check failed).
EXIT_DEMO_FAILED = 5
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: Every exit code and what it means (shown by ``--help``).
EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "success",
    EXIT_COMMAND_ERROR: "QEMU answered with an error (CLASS: desc on stderr)",
    EXIT_USAGE: "usage error (bad options or arguments, or arguments the schema rejects)",
    EXIT_CONNECTION: "connection or protocol error (cannot connect, lost, not QMP)",
    EXIT_TIMEOUT: "timeout",
    EXIT_DEMO_FAILED: "the demo failed (QEMU did not start, or a check failed)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class UsageError(QMPError, ValueError):
    """The command line is wrong in a way argparse cannot see (exit code 2)."""


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the command's exit code (see :data:`EXIT_CODES`).

    Args:
        exc: what a sub-command failed with.

    Returns:
        The exit code; 1 for anything not listed (it is a failure all the same).
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Timeout):
        return EXIT_TIMEOUT
    if isinstance(exc, CommandError):
        return EXIT_COMMAND_ERROR
    if isinstance(exc, (UsageError, ValidationError)):
        return EXIT_USAGE
    if isinstance(exc, (ConnectError, ConnectionLost, ProtocolError, OSError)):
        return EXIT_CONNECTION
    if isinstance(exc, DemoError):
        return EXIT_DEMO_FAILED
    return EXIT_COMMAND_ERROR
