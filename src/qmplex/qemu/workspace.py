"""The files of one QemuProcess: its private directory, QEMU's stderr, its monitor sockets.

Theory of operation: a :class:`Workspace` outlives the QEMU runs of its process. The
private directory is made at the first start and kept across a restart (or made again
at the same path after a kill removed it), so every socket path stays the same from
run to run; it is removed by a final stop, after the end of QEMU's stderr was copied
into memory. Monitors at the caller's paths are claimed before each start and their
socket files released after each run (see ``paths.py``). Everything here runs on the
thread that owns the process at that moment; nothing is spawned, nothing speaks QMP.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence

from ..errors import StateError
from . import paths

__all__ = ["StrPath", "Workspace", "qemu_opt_escape"]

StrPath = str | os.PathLike[str]

#: How much of QEMU's stderr is kept in memory once its file is removed, in bytes.
_STDERR_KEEP_BYTES = 64 * 1024
_MAIN_NAME = "qmp.sock"
_LAUNCHER_NAME = "launcher.sock"
_STDERR_NAME = "stderr.log"
_MONITOR_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def qemu_opt_escape(value: str) -> str:
    """Escape a value for a QEMU ``-opt a=b,c=d`` list (a comma is written twice)."""
    return value.replace(",", ",,")


def _sibling(main: str, name: str) -> str:
    """Extra monitor ``name`` beside the main one: ``vm1.sock`` -> ``vm1-ops.sock``."""
    stem, ext = os.path.splitext(main)
    return f"{stem}-{name}{ext}"


class Workspace:
    """Where one process's monitors, stderr and launcher socket live.

    Args:
        qmp_path: the main monitor's path (None: in the private directory).
        extra_monitors: names (each beside the main monitor), or a mapping from name
            to path.

    Raises:
        SocketPathError: a given path is too long for a Unix socket.
        ValueError: a monitor name is invalid or given twice, or two monitors share a
            path.
    """

    def __init__(self, qmp_path: StrPath | None,
                 extra_monitors: Sequence[str] | Mapping[str, StrPath]) -> None:
        fixed: dict[str | None, str] = {}
        if qmp_path is not None:
            fixed[None] = os.path.abspath(os.fspath(qmp_path))
        names = tuple(extra_monitors.keys() if isinstance(extra_monitors, Mapping)
                      else extra_monitors)
        for name in names:
            if not isinstance(name, str) or not _MONITOR_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid monitor name {name!r}: use 1 to 32 letters, "
                                 "digits, '-' or '_'")
        if len(set(names)) != len(names):
            raise ValueError(f"a monitor name is given twice: {list(names)}")
        for name in names:
            if isinstance(extra_monitors, Mapping):
                fixed[name] = os.path.abspath(os.fspath(extra_monitors[name]))
            elif None in fixed:
                fixed[name] = _sibling(fixed[None], name)
        if len(set(fixed.values())) != len(fixed):
            raise ValueError("two monitors share a socket path")
        for path in fixed.values():
            paths.check_length(path)
        #: The extra monitors' names, in the order given.
        self.names = names
        self._fixed = fixed
        #: The private directory, once made (its path is kept for the next runs).
        self.directory: str | None = None
        self._exists = False
        self._made: dict[str, paths.Identity | None] = {}
        self._stderr_kept = b""

    # ---------------------------------------------------------------- paths
    @property
    def public_paths(self) -> tuple[str, ...]:
        """The socket paths the caller chose (checked and claimed before each start)."""
        return tuple(self._fixed.values())

    def monitor_path(self, name: str | None) -> str:
        """The socket path of monitor ``name`` (None: the main one).

        Raises:
            KeyError: no extra monitor has that name.
            StateError: it is in the private directory, not made yet.
        """
        if name is not None and name not in self.names:
            raise KeyError(f"no monitor named {name!r} (extra monitors: {list(self.names)})")
        fixed = self._fixed.get(name)
        if fixed is not None:
            return fixed
        if self.directory is None:
            raise StateError("QemuProcess.monitor_path: the socket goes in the private "
                             "directory, made when the process starts")
        return self._private(name)

    def _private(self, name: str | None, where: str | None = None) -> str:
        return os.path.join(where or self.directory or "PRIVATE",
                            _MAIN_NAME if name is None else f"qmp-{name}.sock")

    @property
    def launcher_path(self) -> str:
        """The launcher's own monitor (probed for readiness, used by its client)."""
        return os.path.join(self.directory or "PRIVATE", _LAUNCHER_NAME)

    @property
    def stderr_path(self) -> str:
        """Where QEMU's stderr goes."""
        return os.path.join(self.directory or "PRIVATE", _STDERR_NAME)

    def qmp_options(self) -> list[str]:
        """The ``-qmp`` options: the main monitor, the extra ones, the launcher's (before
        the directory is made, ``PRIVATE`` stands for it)."""
        options: list[str] = []
        for name in (None, *self.names):
            path = self._fixed.get(name) or self._private(name)
            options += ["-qmp", f"unix:{qemu_opt_escape(path)},server=on,wait=off"]
        return options + ["-qmp", f"unix:{qemu_opt_escape(self.launcher_path)},"
                                  "server=on,wait=off"]

    # ------------------------------------------------------------ lifecycle
    def make(self) -> None:
        """Make the private directory, unless it exists (kept across a restart).

        Raises:
            QemuError: it cannot be made (again, at the same path).
        """
        if self._exists:
            return
        names = [_MAIN_NAME, _LAUNCHER_NAME] + [f"qmp-{n}.sock" for n in self.names]
        self.directory = paths.make_private_dir(max(names, key=len), self.directory)
        self._exists = True

    def record(self) -> None:
        """QEMU is ready: remember which socket files at the caller's paths it made."""
        self._made = {path: paths.identity(path) for path in self._fixed.values()}

    def release(self, final: bool) -> None:
        """QEMU is gone: keep the end of its stderr, remove the socket files it made,
        and with ``final`` the private directory (else only the sockets in it)."""
        self._stderr_kept = self.read_stderr(_STDERR_KEEP_BYTES)
        for path in self._fixed.values():
            paths.release(path, self._made.get(path))
        self._made = {}
        if final:
            self.remove()
        elif self.directory is not None and self._exists:
            for entry in os.listdir(self.directory):
                if entry.endswith(".sock"):
                    try:
                        os.unlink(os.path.join(self.directory, entry))
                    except OSError:
                        pass

    def remove(self) -> None:
        """Remove the private directory (idempotent), keeping the end of stderr."""
        if self.directory is not None and self._exists:
            self._stderr_kept = self.read_stderr(_STDERR_KEEP_BYTES)
            shutil.rmtree(self.directory, ignore_errors=True)
            self._exists = False

    def read_stderr(self, limit: int) -> bytes:
        """The last ``limit`` bytes of stderr, from the file or the kept copy."""
        if self.directory is not None and self._exists:
            try:
                with open(os.path.join(self.directory, _STDERR_NAME), "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - limit))
                    return f.read()
            except OSError:
                pass
        return self._stderr_kept[-limit:]
