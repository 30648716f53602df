"""Launching a real QEMU for tests, benchmarks and tools.

:class:`QemuProcess` starts ``qemu-system-x86_64`` (or any compatible binary) headless,
with its QMP monitor on a Unix socket in a private directory, waits until that socket
accepts connections and, optionally, connects a :class:`~qmplex.Client` to it. It also
stops, kills, freezes and thaws the process, which is what fault and timeout tests need.

This module speaks no QMP beyond a raw readiness probe; a connected client comes from
:func:`qmplex.connect`, imported lazily so the launcher works without the client.

Theory of operation:

- The socket lives in a fresh ``tempfile.mkdtemp`` directory (mode 0700), so no other
  user can reach the monitor, and QEMU's stderr goes to a file in the same directory:
  a pipe could fill up and block QEMU, a file cannot. The directory is removed when the
  process is stopped or killed; the last part of stderr is kept in memory first.
- QEMU runs in its own session (``start_new_session=True``): a Ctrl-C in the terminal
  does not reach it, and signals go to its whole process group, so helpers it spawned
  (``migrate exec:...``) go with it.
- QEMU can create the socket file before it listens on it (QMP-NOTES.md), and it
  listens and greets before it creates the devices of its command line (a bad
  ``-device`` makes it exit after the greeting). So readiness means "``qmp_capabilities``
  was answered" on a probe connection, retried until that happens, the process exits,
  or ``start_timeout`` passes.
- Every started process is recorded in a module-level table until it is reaped; an
  :mod:`atexit` hook kills whatever is still running when the interpreter exits normally.
  (Nothing can help when the Python process itself is SIGKILLed.)

Where things live (import the names from ``qmplex.qemu``; the modules are its rooms,
not separate APIs): ``binary.py`` (finding QEMU, its version, the default command
line), ``errors.py`` (:class:`QemuError`), ``process.py`` (:class:`QemuProcess`).
"""

from __future__ import annotations

from .binary import (
    DEFAULT_BINARY,
    ENV_BINARY,
    ENV_REQUIRE,
    default_args,
    find_qemu,
    qemu_or_skip,
    qemu_version,
)
from .errors import STDERR_TAIL_CHARS as STDERR_TAIL_CHARS
from .errors import QemuError
from .process import QemuProcess

__all__ = [
    "DEFAULT_BINARY",
    "ENV_BINARY",
    "ENV_REQUIRE",
    "QemuError",
    "QemuProcess",
    "default_args",
    "find_qemu",
    "qemu_or_skip",
    "qemu_version",
]
