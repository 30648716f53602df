"""Starting QEMU on a reactor: spawn, then wait for its monitor without blocking.

Theory of operation:

- Spawning (fork and exec) takes a few milliseconds and is done at once. Everything
  after that is driven by the reactor: the exit watch of :class:`~.child.Child`, one
  deadline timer, and the readiness probe below. Any number of launches share one
  reactor thread, and its other work (timers, clients) goes on meanwhile.
- QEMU can create the socket file before it listens on it (QMP-NOTES.md), and it
  listens and greets before it creates the devices of its command line (a bad
  ``-device`` makes it exit after the greeting). So readiness means "``qmp_capabilities``
  was answered" on a probe connection: in-band commands run in QEMU's main loop, which
  starts only after the machine is created. A probe that finds nothing to connect to,
  or is cut off, is tried again after a delay that doubles from
  :data:`FIRST_RETRY` to at most :data:`MAX_RETRY` seconds.
- The probe talks to the launcher's own monitor (in the private directory), never to
  one the caller named: QEMU serves one client per monitor, and a client of the
  caller (one with a reconnect policy, say) may well get there first.
- QEMU exiting ends the launch at once (the exit watch), with its exit status and the
  end of its stderr; so does the deadline, after QEMU is killed and reaped; and so does
  cancelling the launch's future (QEMU is killed; the caller cleans up once it is
  reaped).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..futures import Future
from . import paths
from .child import Child
from .errors import QemuError, describe_exit

if TYPE_CHECKING:
    from ..reactor import Reactor, TimerHandle

__all__ = ["FIRST_RETRY", "MAX_RETRY", "Launch", "Plan", "Probe"]

#: Seconds before the probe's second attempt; the delay doubles from there.
FIRST_RETRY = 0.001
#: The longest delay between two probe attempts, in seconds.
MAX_RETRY = 0.05
_CAPABILITIES = b'{"execute": "qmp_capabilities"}\n'
_MAX_PROBE_BYTES = 64 * 1024  # a greeting is ~150 bytes; more than this is not QEMU


@dataclass(frozen=True, slots=True)
class Plan:
    """What one launch does.

    Attributes:
        argv: the full command line.
        stderr_path: where QEMU's stderr goes.
        private_dir: the launcher's private directory (it exists).
        public_paths: the caller's socket paths, checked and claimed before spawning.
        probe_path: the launcher's own monitor, probed for readiness.
        timeout: seconds from the spawn until QEMU must have answered.
        label: how errors name this QEMU.
    """

    argv: tuple[str, ...]
    stderr_path: str
    private_dir: str
    public_paths: tuple[str, ...]
    probe_path: str
    timeout: float
    label: str


class Probe:
    """Wait on the reactor until a QMP monitor answers ``qmp_capabilities``.

    Reactor-thread code. Each attempt connects a non-blocking Unix socket, reads the
    greeting, sends ``qmp_capabilities`` and reads one more line, then closes; a
    failed attempt is retried after a growing delay (see the module docstring). It
    stops only when ready or closed: the caller owns the deadline.

    Args:
        reactor: the reactor to run on.
        path: the monitor socket.
        on_ready: called once the monitor answered (the probe is closed by then).
    """

    def __init__(self, reactor: Reactor, path: str, on_ready: Callable[[], object]) -> None:
        self._reactor = reactor
        self._path = path
        self._on_ready = on_ready
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._greeted = False
        self._delay = FIRST_RETRY
        self._timer: TimerHandle | None = None
        self._closed = False
        #: Attempts made so far (for tests and logs).
        self.attempts = 0

    def start(self) -> None:
        """Make the first attempt now."""
        self._attempt()

    def close(self) -> None:
        """Stop probing (idempotent)."""
        self._closed = True
        self._drop()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _attempt(self) -> None:
        self._timer = None
        if self._closed:
            return
        self.attempts += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self._path)  # a Unix connect completes or fails at once
        if err != 0:  # ENOENT, ECONNREFUSED (not listening yet), EAGAIN (backlog full)
            sock.close()
            self._again()
            return
        self._sock = sock
        self._buffer = b""
        self._greeted = False
        self._reactor.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # cut off: QEMU is exiting, or not ready
            self._retry()
            return
        self._buffer += data
        if not self._greeted and b"\n" in self._buffer:
            self._greeted = True
            self._buffer = self._buffer.split(b"\n", 1)[1]
            try:
                sent = sock.send(_CAPABILITIES)  # into an empty buffer: all of it
            except OSError:  # EPIPE, ECONNRESET: cut off
                sent = 0
            if sent != len(_CAPABILITIES):
                self._retry()
                return
        if self._greeted and b"\n" in self._buffer:
            self.close()
            self._on_ready()
        elif len(self._buffer) > _MAX_PROBE_BYTES:
            self._retry()

    def _retry(self) -> None:
        self._drop()
        self._again()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._reactor.remove_reader(sock.fileno())
            sock.close()

    def _again(self) -> None:
        if self._closed:
            return
        delay = self._delay
        self._delay = min(delay * 2, MAX_RETRY)
        self._timer = self._reactor.call_later(delay, self._attempt)


class Launch:
    """One start of QEMU, on a reactor: claim the paths, spawn, probe, or fail.

    Reactor-thread code: make it and call :meth:`start` on the reactor thread.
    :attr:`future` completes with the :class:`~.child.Child` once its monitor answered;
    it fails with :class:`~.errors.SocketPathError` (nothing spawned) or
    :class:`~.errors.QemuError` (QEMU could not be run, exited, or did not answer in
    time; in the last two cases it is reaped before the future fails). Cancelling the
    future kills QEMU; :attr:`child` then tells when it is reaped.

    Args:
        reactor: the reactor to run on.
        plan: what to start and where.
        stderr_tail: returns the end of QEMU's stderr, for the errors.
    """

    def __init__(self, reactor: Reactor, plan: Plan, stderr_tail: Callable[[], str]) -> None:
        self._reactor = reactor
        self._plan = plan
        self._stderr_tail = stderr_tail
        self.future: Future[Child] = Future(reactor, on_cancel=self._abort)
        #: The spawned process (None until spawned, or when spawning failed).
        self.child: Child | None = None
        self._probe: Probe | None = None
        self._deadline: TimerHandle | None = None
        self._ending = False

    def start(self) -> None:
        """Claim the caller's paths, spawn QEMU and start probing."""
        plan = self._plan
        try:
            for path in plan.public_paths:
                paths.claim(path)
        except QemuError as exc:
            refused = exc  # (``exc`` is unbound once the except clause ends)
            self._end(lambda _rc: refused)
            return
        try:
            child = Child(self._reactor, plan.argv, plan.stderr_path, plan.private_dir,
                          plan.public_paths)
        except OSError as exc:
            error = QemuError(f"cannot run {plan.argv[0]}: {exc}")
            error.__cause__ = exc
            self._end(lambda _rc: error)
            return
        self.child = child
        child.exited.add_done_callback(self._on_exit)
        self._deadline = self._reactor.call_later(plan.timeout, self._on_deadline)
        self._probe = Probe(self._reactor, plan.probe_path, self._on_ready)
        self._probe.start()

    def _on_ready(self) -> None:
        if self._ending:
            return
        self._stop_waiting()
        assert self.child is not None
        self.future.set_result(self.child)

    def _on_exit(self, exited: Future[int]) -> None:
        if self.future.done() or self._ending:
            return
        label = self._plan.label
        returncode = exited.result()
        self._end(lambda _rc: QemuError(f"{label} {describe_exit(returncode)} during start-up",
                                        returncode=returncode, stderr=self._stderr_tail()))

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.future.done() or self._ending:
            return
        plan = self._plan
        self._end(lambda rc: QemuError(
            f"{plan.label} did not answer on its QMP socket within {plan.timeout:g} s "
            "(killed)", returncode=rc, stderr=self._stderr_tail()))

    def _abort(self) -> None:
        """The future was cancelled: kill QEMU (the caller waits for :attr:`child`)."""
        self._ending = True
        self._stop_waiting()
        if self.child is not None:
            self.child.signal(signal.SIGKILL)

    def _end(self, error: Callable[[int | None], QemuError]) -> None:
        """Fail the launch: kill QEMU if it runs, and fail once it is reaped."""
        self._ending = True
        self._stop_waiting()
        child = self.child
        if child is None:
            self.future.set_exception(error(None))
            return
        child.signal(signal.SIGKILL)
        child.exited.add_done_callback(
            lambda f: self.future.set_exception(error(f.result())))

    def _stop_waiting(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.close()
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()
