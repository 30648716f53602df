"""The launcher's errors: :class:`QemuError`, :class:`SocketPathError`, and how an exit
status is told.

This module only describes failures; it runs nothing.
"""

from __future__ import annotations

import os
import signal

from ..errors import QMPError

__all__ = ["STDERR_TAIL_CHARS", "STDERR_MESSAGE_LINES", "QemuError", "SocketPathError",
           "describe_exit"]

#: How much of QEMU's stderr an error carries (``.stderr``), in characters.
STDERR_TAIL_CHARS = 4096
#: How many of the last lines of QEMU's stderr an error's message shows.
STDERR_MESSAGE_LINES = 20


def describe_exit(returncode: int) -> str:
    """Say how a process ended, from its ``Popen``-style exit status.

    Returns:
        ``"exited with status 1"``, or, for a negative status, ``"was killed by SIGKILL
        (signal 9)"``.
    """
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"was killed by signal {-returncode}"
    return f"was killed by {name} (signal {-returncode})"


class QemuError(QMPError):
    """QEMU failed to start, exited, or could not be run.

    The message says what happened (with the exit status or the signal, when QEMU
    exited) and ends with the last :data:`STDERR_MESSAGE_LINES` lines QEMU wrote to
    stderr.

    Attributes:
        returncode: the exit status (negative: killed by that signal), or None when
            the process was not started or had not exited when the error was raised.
        stderr: at most :data:`STDERR_TAIL_CHARS` of the end of QEMU's stderr.
    """

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        if stderr.strip():
            lines = stderr.rstrip().splitlines()[-STDERR_MESSAGE_LINES:]
            message = f"{message}; stderr:\n" + "\n".join(lines)
        super().__init__(message)


class SocketPathError(QemuError):
    """A QMP socket path cannot be used, found before QEMU is started.

    Raised (or delivered through the start's future) when the path is too long for a
    Unix socket address (at most :data:`~qmplex.qemu.MAX_UNIX_PATH` bytes), when its
    directory does not exist, when something is listening on it, or when a file that
    is not a socket is in the way. QEMU itself would silently unlink whatever is
    there, so the launcher refuses instead.

    Attributes:
        path: the path, as given.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"QMP socket path {self.path!r}: {reason}")
