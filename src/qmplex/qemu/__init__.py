"""Launching a real QEMU for VM managers, tests, benchmarks and tools.

:class:`QemuProcess` starts ``qemu-system-x86_64`` (or any compatible binary) headless,
with QMP monitors on Unix sockets, waits until QEMU answers on them and, optionally,
connects a :class:`~qmplex.Client`. It starts without blocking (:meth:`~QemuProcess.launch`
returns a :class:`~qmplex.Future`, so one reactor thread can start many QEMUs at once),
restarts QEMU on the same socket paths, stops it cleanly, and kills, freezes and thaws
it, which is what fault and timeout tests need. When QEMU fails or dies, the error names
its exit status (or the signal) and ends with the last lines of its stderr.

This package speaks no QMP beyond a raw readiness probe; the connected client comes from
:mod:`qmplex.client`, imported only when a client is wanted.

Theory of operation:

- Everything a QemuProcess owns lives in a fresh ``tempfile.mkdtemp`` directory (mode
  0700), so no other user can reach it: QEMU's stderr (a file: a pipe could fill up and
  block QEMU), the monitor the launcher itself probes and connects :attr:`~QemuProcess.client`
  to, and, unless the caller chose paths (``qmp_path=``, ``extra_monitors=``), the
  monitors. The directory is removed when the process is stopped or killed; the last
  part of stderr is kept in memory first. A restart keeps it (or makes it again at the
  same path), so every socket path stays the same.
- Sockets at the caller's paths are checked before each start and only the socket
  files QEMU made are removed afterwards (``paths.py``).
- The launch and the exit watch run on a reactor: the process's own (``reactor=``), or
  a private one made at the first start and closed by :meth:`~QemuProcess.stop`. The
  blocking methods (:meth:`~QemuProcess.start`, :meth:`~QemuProcess.restart`,
  :meth:`~QemuProcess.stop`) wait on the futures of the non-blocking ones
  (:meth:`~QemuProcess.launch`, :meth:`~QemuProcess.relaunch`,
  :meth:`~QemuProcess.shutdown`), driving the reactor when nobody else does.

Where things live (import the names from ``qmplex.qemu``; the modules are its rooms,
not separate APIs): ``binary.py`` (finding QEMU, its version, the default command
line), ``errors.py`` (:class:`QemuError`, :class:`SocketPathError`), ``paths.py`` (the
private directory and the caller's socket paths), ``child.py`` (spawning, the exit
watch, the :mod:`atexit` safety net), ``launch.py`` (the readiness probe and one start),
``stop.py`` (``quit``, SIGTERM, SIGKILL), ``process.py`` (:class:`QemuProcess`).
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
from .errors import QemuError, SocketPathError, describe_exit
from .paths import MAX_UNIX_PATH
from .process import QemuProcess

__all__ = [
    "DEFAULT_BINARY",
    "ENV_BINARY",
    "ENV_REQUIRE",
    "MAX_UNIX_PATH",
    "QemuError",
    "QemuProcess",
    "SocketPathError",
    "default_args",
    "describe_exit",
    "find_qemu",
    "qemu_or_skip",
    "qemu_version",
]
