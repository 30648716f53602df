"""QemuProcess: one QEMU process with its QMP monitor (see the package docstring)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import QMPError, StateError
from .binary import DEFAULT_BINARY, default_args
from .errors import STDERR_TAIL_CHARS, QemuError

if TYPE_CHECKING:
    from ..client import Client
    from ..reactor import Reactor

__all__ = ["QemuProcess"]

#: How much of QEMU's stderr is kept in memory once its file is removed, in bytes.
_STDERR_KEEP_BYTES = 64 * 1024
#: AF_UNIX paths longer than this do not fit in ``sockaddr_un.sun_path`` (108 with NUL).
_MAX_UNIX_PATH = 107
_SOCKET_NAME = "qmp.sock"
_STDERR_NAME = "stderr.log"


def _qemu_opt_escape(value: str) -> str:
    """Escape a value for a QEMU ``-opt a=b,c=d`` list (a comma is written twice)."""
    return value.replace(",", ",,")


# pid -> (process, private directory) for every process started and not yet reaped.
_LIVE: dict[int, tuple[subprocess.Popen[bytes], str]] = {}


def _kill_leftovers() -> None:
    """``atexit`` hook: kill and reap every QEMU still running, remove its directory."""
    for pid, (popen, directory) in list(_LIVE.items()):
        if popen.poll() is None:
            _signal_group(popen, signal.SIGKILL)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(directory, ignore_errors=True)
        _LIVE.pop(pid, None)


atexit.register(_kill_leftovers)


def _read_line(sock: socket.socket, limit: int = 64 * 1024) -> bytes:
    """Read one line (up to ``limit`` bytes) from a blocking socket; b"" on EOF."""
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the process group of an unreaped ``popen``.

    Its pid (the group id, since it leads its own session) cannot be reused before it
    is reaped, so this never reaches a stranger. Nothing is sent once it is reaped.
    """
    if popen.returncode is not None:
        return
    try:
        os.killpg(popen.pid, signum)
    except ProcessLookupError:
        pass


class QemuProcess:
    """One QEMU process with its QMP monitor on a private Unix socket.

    Use it as a context manager (``with QemuProcess(...) as vm:``), which starts it and
    stops it, or call :meth:`start` and :meth:`stop` yourself. One object runs QEMU
    once. Its methods are not thread-safe: call them from one thread at a time (which
    need not be the thread driving the client's reactor).

    Args:
        binary: the QEMU binary (name on ``PATH`` or path).
        args: the machine part of the command line, replacing the default
            (see :func:`default_args`; ``machine``, ``memory_mib`` and ``paused`` are
            then ignored). ``-qmp`` is always added by the launcher.
        machine: the ``-machine`` type of the default command line.
        memory_mib: guest memory of the default command line, in MiB.
        paused: pass ``-S`` in the default command line (the guest never runs; status
            ``prelaunch``).
        extra_args: appended after the machine part (default or ``args``), e.g.
            ``["-device", "virtio-scsi-pci,id=scsi0"]``.
        reactor: the reactor the connected client lives on (a private one if None).
        start_timeout: seconds to wait for the QMP socket, and then for the client's
            handshake.
        connect: connect :attr:`client` once the socket is ready.
        name: a label: passed to QEMU as ``-name`` and shown in errors and ``repr``.
    """

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        args: Sequence[str] | None = None,
        *,
        machine: str = "pc",
        memory_mib: int = 64,
        paused: bool = True,
        extra_args: Sequence[str] = (),
        reactor: Reactor | None = None,
        start_timeout: float = 10.0,
        connect: bool = True,
        name: str | None = None,
    ) -> None:
        if isinstance(args, str) or isinstance(extra_args, str):
            raise TypeError("args and extra_args are sequences of arguments, not a string")
        self.binary = binary
        self.name = name
        self.start_timeout = start_timeout
        self._connect = connect
        self._reactor = reactor
        machine_args = list(args) if args is not None else default_args(machine, memory_mib, paused)
        if name is not None:
            machine_args += ["-name", _qemu_opt_escape(name)]
        self._machine_args = machine_args + list(extra_args)
        #: The connected client (``connect=True``), closed by :meth:`stop`.
        self.client: Client | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._qmp_path: str | None = None
        self._argv: list[str] | None = None
        self._frozen = False
        self._stopped = False
        self._stderr_kept = b""

    # ----------------------------------------------------------------- properties

    @property
    def reactor(self) -> Reactor | None:
        """The reactor :attr:`client` lives on (None: a private one, made at connect)."""
        return self._reactor

    @property
    def connects(self) -> bool:
        """Whether :meth:`start` connects :attr:`client` by default."""
        return self._connect

    @property
    def qmp_path(self) -> str:
        """The QMP socket's path (it exists only while the process runs).

        Raises:
            StateError: :meth:`start` was never called.
        """
        if self._qmp_path is None:
            raise StateError("QemuProcess.qmp_path: the process was never started")
        return self._qmp_path

    @property
    def pid(self) -> int:
        """QEMU's process id.

        Raises:
            StateError: :meth:`start` was never called.
        """
        return self._require_popen("pid").pid

    @property
    def argv(self) -> list[str]:
        """The full command line QEMU was (or will be) started with."""
        if self._argv is not None:
            return list(self._argv)
        return [self.binary, *self._machine_args, "-qmp", "unix:SOCKET,server=on,wait=off"]

    @property
    def returncode(self) -> int | None:
        """The exit status once QEMU has exited (negative: killed by that signal), else None.

        Reading it reaps an exited process, so it never stays a zombie.
        """
        if self._popen is None:
            return None
        return self._popen.poll()

    def alive(self) -> bool:
        """Whether QEMU was started and has not exited (a frozen QEMU is alive)."""
        return self._popen is not None and self._popen.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, connect: bool | None = None) -> QemuProcess:
        """Start QEMU and wait until its QMP socket accepts connections.

        With ``connect=True``, :attr:`client` is then connected (and negotiated) with
        :func:`qmplex.connect` on the given reactor. In a coroutine, use
        ``await qmplex.aio.start(vm)`` instead: it does not block the loop.

        Args:
            connect: connect :attr:`client` (None: as the constructor said).

        Returns:
            self, so ``vm = QemuProcess(...).start()`` works.

        Raises:
            QemuError: QEMU could not be run, exited during start-up (the message and
                ``.stderr`` carry the end of its stderr), or did not open its socket
                within ``start_timeout`` (it is then killed).
            StateError: the process was already started.
            QMPError: the client could not connect although QEMU is running (QEMU is
                killed first).
        """
        if self._popen is not None or self._stopped:
            raise StateError("QemuProcess.start: a QemuProcess runs once; make a new one")
        directory = self._make_dir()
        self._dir = directory
        self._qmp_path = os.path.join(directory, _SOCKET_NAME)
        qmp_opt = f"unix:{_qemu_opt_escape(self._qmp_path)},server=on,wait=off"
        self._argv = [self.binary, *self._machine_args, "-qmp", qmp_opt]
        try:
            with open(os.path.join(directory, _STDERR_NAME), "wb") as stderr_file:
                self._popen = subprocess.Popen(
                    self._argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError as exc:
            self._stopped = True
            shutil.rmtree(directory, ignore_errors=True)
            raise QemuError(f"cannot run {self.binary}: {exc}") from exc
        _LIVE[self._popen.pid] = (self._popen, directory)
        try:
            self._wait_for_socket(time.monotonic() + self.start_timeout)
            if self._connect if connect is None else connect:
                self._connect_client()
        except BaseException:
            self.kill()
            self._stopped = True
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int:
        """Stop QEMU cleanly if possible, and release everything.

        Steps: a frozen QEMU is thawed; with a connected :attr:`client`, ``quit`` is
        sent (a lost connection is expected and ignored) and the exit awaited; then
        SIGTERM and a wait; then SIGKILL. Finally the client is closed and the socket
        directory removed. Each clean step waits at most ``timeout`` seconds. Calling
        it again returns the same exit status.

        May be called from any thread. Inside a callback of the client's reactor it
        cannot wait for ``quit`` and goes straight to signals (which block briefly).

        Returns:
            QEMU's exit status (0 after ``quit``, and also after SIGTERM, on which QEMU
            exits cleanly; ``-9`` after SIGKILL).

        Raises:
            StateError: :meth:`start` was never called.
        """
        popen = self._require_popen("stop")
        if popen.poll() is None:
            if self._frozen:
                self.thaw()
            if self.client is not None:
                self._quit(popen, timeout)
            if popen.poll() is None:
                _signal_group(popen, signal.SIGTERM)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            if popen.poll() is None:
                _signal_group(popen, signal.SIGKILL)
                popen.wait()
        self._close_client()
        self._cleanup()
        self._stopped = True
        assert popen.returncode is not None
        return popen.returncode

    def kill(self) -> None:
        """SIGKILL QEMU now, reap it and remove its socket directory.

        Meant for fault tests: :attr:`client`, if any, is left open so the test can
        watch it see the connection drop; :meth:`stop` (or leaving the ``with``
        block) closes it.

        Raises:
            StateError: :meth:`start` was never called.
        """
        popen = self._require_popen("kill")
        _signal_group(popen, signal.SIGKILL)
        popen.wait()
        self._frozen = False
        self._cleanup()

    def freeze(self) -> None:
        """Stop QEMU with SIGSTOP: its socket stays open but nothing is answered.

        Raises:
            StateError: QEMU is not running.
        """
        popen = self._require_alive("freeze")
        _signal_group(popen, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """Let a frozen QEMU continue (SIGCONT).

        Raises:
            StateError: QEMU is not running.
        """
        popen = self._require_alive("thaw")
        _signal_group(popen, signal.SIGCONT)
        self._frozen = False

    def stderr_tail(self, limit: int = STDERR_TAIL_CHARS) -> str:
        """Return at most the last ``limit`` characters QEMU wrote to stderr.

        Works also after :meth:`stop` or :meth:`kill` (from a copy of the last 64 KiB
        kept before the file was removed). Invalid UTF-8 is replaced.
        """
        if limit <= 0:
            return ""
        data = self._read_stderr(limit * 4)  # enough bytes for ``limit`` characters
        return data.decode("utf-8", "replace")[-limit:]

    def __enter__(self) -> QemuProcess:
        """Call :meth:`start` and return the process; leaving the ``with`` block calls
        :meth:`stop` (if it was started).
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Call :meth:`stop` if QEMU was started (exceptions propagate)."""
        if self._popen is not None:
            self.stop()

    def __repr__(self) -> str:
        """Show the name and the process state: not started, pid (and frozen), or exit status
        (for logs; not a stable format).
        """
        label = f" {self.name!r}" if self.name is not None else ""
        if self._popen is None:
            state = "not started"
        elif self._popen.poll() is None:
            state = f"pid {self._popen.pid}" + (" frozen" if self._frozen else "")
        else:
            state = f"exited {self._popen.returncode}"
        return f"<QemuProcess{label} {state}>"

    # ------------------------------------------------------------------- internals

    def _require_popen(self, what: str) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise StateError(f"QemuProcess.{what}: the process was never started")
        return self._popen

    def _require_alive(self, what: str) -> subprocess.Popen[bytes]:
        popen = self._require_popen(what)
        if popen.poll() is not None:
            raise StateError(f"QemuProcess.{what}: QEMU has exited ({popen.returncode})")
        return popen

    def _make_dir(self) -> str:
        """Create the private directory, in /tmp if TMPDIR makes the socket path too long."""
        directory = tempfile.mkdtemp(prefix="qmplex-")
        if len(os.fsencode(os.path.join(directory, _SOCKET_NAME))) > _MAX_UNIX_PATH:
            os.rmdir(directory)
            directory = tempfile.mkdtemp(prefix="qmplex-", dir="/tmp")
        os.chmod(directory, 0o700)  # mkdtemp already does; say it explicitly
        return directory

    def _wait_for_socket(self, deadline: float) -> None:
        """Probe the socket until QEMU answers, exits, or the deadline passes."""
        popen = self._require_popen("start")
        delay = 0.001
        while True:
            if popen.poll() is not None:
                raise QemuError(
                    f"{self._label()} exited with status {popen.returncode} during start-up",
                    returncode=popen.returncode,
                    stderr=self.stderr_tail(),
                )
            if self._probe(deadline):
                return
            if time.monotonic() >= deadline:
                tail = self.stderr_tail()
                self.kill()
                raise QemuError(
                    f"{self._label()} did not answer on its QMP socket within "
                    f"{self.start_timeout:g} s (killed)",
                    returncode=self.returncode,
                    stderr=tail,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _probe(self, deadline: float) -> bool:
        """One readiness probe: connect, read the greeting, negotiate, read the reply.

        A successful ``connect()`` is not enough: QEMU listens (and even greets) before
        it creates the devices of its command line, and a bad ``-device`` makes it exit
        only then. An in-band reply is proof that start-up is over, because in-band
        commands run in QEMU's main loop, which starts after machine creation. The
        probe then closes; QMP-NOTES.md: the next client is served normally.

        Returns:
            True when ``qmp_capabilities`` was answered; False to try again.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                probe.connect(self.qmp_path)
                if not _read_line(probe):  # the greeting
                    return False
                probe.sendall(b'{"execute": "qmp_capabilities"}\n')
                return bool(_read_line(probe))
            except OSError:  # ENOENT, ECONNREFUSED, ECONNRESET, timeout: not ready
                return False

    def _connect_client(self) -> None:
        # Imported here: the launcher must not need the client to exist or import.
        from ..client import connect

        try:
            self.client = connect(self.qmp_path, reactor=self._reactor, timeout=self.start_timeout)
        except QMPError as exc:
            popen = self._require_popen("start")
            if popen.poll() is not None:
                raise QemuError(
                    f"{self._label()} exited with status {popen.returncode} while "
                    "the client was connecting",
                    returncode=popen.returncode,
                    stderr=self.stderr_tail(),
                ) from exc
            raise

    def _quit(self, popen: subprocess.Popen[bytes], timeout: float) -> None:
        """Send ``quit`` and wait for the exit; any failure just leads to signals.

        The exit of the process, not the reply, is what counts (QEMU may close the
        socket before replying). The command may be sent from any thread; its reply is
        waited for only off the reactor thread (inside one of its callbacks, waiting
        would block the reactor).
        """
        client = self.client
        assert client is not None
        try:
            reply = client.execute("quit")
            if not client.reactor.in_reactor_thread():
                reply.result(timeout=timeout)
        except QMPError:  # ConnectionLost (QEMU closed first), Timeout, StateError...
            pass
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _read_stderr(self, limit: int) -> bytes:
        """The last ``limit`` bytes of stderr, from the file or the kept copy."""
        if self._dir is not None:
            try:
                with open(os.path.join(self._dir, _STDERR_NAME), "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - limit))
                    return f.read()
            except OSError:
                pass
        return self._stderr_kept[-limit:]

    def _cleanup(self) -> None:
        """Keep the end of stderr, remove the directory, forget the reaped process."""
        if self._dir is not None:
            self._stderr_kept = self._read_stderr(_STDERR_KEEP_BYTES)
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._popen is not None and self._popen.returncode is not None:
            _LIVE.pop(self._popen.pid, None)

    def _label(self) -> str:
        return f"QEMU {self.name!r}" if self.name is not None else f"QEMU ({self.binary})"
