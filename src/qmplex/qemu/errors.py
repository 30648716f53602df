"""The launcher's errors: :class:`QemuError` and what it carries.

This module only describes failures; it runs nothing.
"""

from __future__ import annotations

from ..errors import QMPError

__all__ = ["STDERR_TAIL_CHARS", "QemuError"]

#: How much of QEMU's stderr an error message carries, in characters.
STDERR_TAIL_CHARS = 4096


class QemuError(QMPError):
    """QEMU failed to start, exited, or could not be run.

    Attributes:
        returncode: the exit status (negative: killed by that signal), or None when
            the process was not started or had not exited when the error was raised.
        stderr: at most :data:`STDERR_TAIL_CHARS` of the end of QEMU's stderr.
    """

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        if stderr.strip():
            message = f"{message}; stderr:\n{stderr.rstrip()}"
        super().__init__(message)
