"""One QEMU process: spawned, its exit watched on a reactor, reaped exactly once.

Theory of operation:

- QEMU runs in its own session (``start_new_session=True``): a Ctrl-C in the terminal
  does not reach it, and signals go to its whole process group, so helpers it spawned
  (``migrate exec:...``) go with it. Its stderr goes to a file: a pipe could fill up
  and block QEMU, a file cannot.
- The exit is watched on the reactor, without a thread: on Linux a pidfd
  (``os.pidfd_open``) is registered as a reader and becomes readable when the process
  exits; elsewhere (or when the kernel has no pidfd) ``Popen.poll()`` runs on a timer
  every :data:`POLL_INTERVAL` seconds. Either way the reactor thread reaps the process
  and completes :attr:`Child.exited` with the exit status.
- ``Popen`` reaps under a lock: while another thread sits in ``Popen.wait()``,
  ``poll()`` says "running" although the pidfd is readable. The reader then steps aside
  (a short timer) instead of spinning, and looks again.
- Every spawned process is recorded in a module-level table until the launcher has
  cleaned up after it; an :mod:`atexit` hook kills whatever is still running when the
  interpreter exits normally and removes its files. (Nothing can help when the Python
  process itself is SIGKILLed.)
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..futures import Future
from . import paths

if TYPE_CHECKING:
    from ..reactor import Reactor, TimerHandle

__all__ = ["POLL_INTERVAL", "Child", "signal_group"]

#: Seconds between two ``Popen.poll()`` calls where no pidfd can watch the exit.
POLL_INTERVAL = 0.1
#: Seconds the pidfd reader steps aside while another thread is reaping.
_STEP_ASIDE = 0.002

# pid -> (process, private directory, the caller's socket paths) for every process
# spawned and not yet cleaned up after.
_LIVE: dict[int, tuple[subprocess.Popen[bytes], str, tuple[str, ...]]] = {}


def _kill_leftovers() -> None:
    """``atexit`` hook: kill and reap every QEMU still running, remove its files."""
    for pid, (popen, directory, public) in list(_LIVE.items()):
        if popen.poll() is None:
            signal_group(popen, signal.SIGKILL)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(directory, ignore_errors=True)
        for path in public:
            paths.release(path, None)
        _LIVE.pop(pid, None)


atexit.register(_kill_leftovers)


def signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
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


class Child:
    """A spawned QEMU and the watch on its exit.

    Made on the reactor thread (or while nobody drives the reactor); its methods are
    reactor-thread code unless they say otherwise.

    Args:
        reactor: where the exit is watched and :attr:`exited` completes.
        argv: the command line.
        stderr_path: the file QEMU's stderr goes to (created or truncated).
        private_dir: the launcher's private directory (removed at interpreter exit if
            the launcher did not clean up).
        public_paths: the caller's socket paths (released likewise).

    Raises:
        OSError: the process could not be spawned.
    """

    def __init__(self, reactor: Reactor, argv: Sequence[str], stderr_path: str,
                 private_dir: str, public_paths: Sequence[str]) -> None:
        with open(stderr_path, "wb") as stderr_file:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                close_fds=True,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        _LIVE[self.pid] = (self.popen, private_dir, tuple(public_paths))
        self._reactor = reactor
        #: Completed with the exit status (negative: the signal) once reaped.
        self.exited: Future[int] = Future(reactor)
        self._pidfd: int | None = None
        self._timer: TimerHandle | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            self._timer = reactor.call_later(POLL_INTERVAL, self._on_timer)
        else:
            reactor.add_reader(self._pidfd, self._on_exit)

    def poll(self) -> int | None:
        """The exit status, or None while QEMU runs (any thread; reaps an exited one)."""
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to QEMU's process group (any thread; never after reaping)."""
        signal_group(self.popen, signum)

    def _on_exit(self) -> None:
        """The pidfd is readable: QEMU has exited."""
        returncode = self.popen.poll()
        if returncode is not None:
            self.finish()
            return
        # Another thread is inside Popen.wait() and holds its lock: look again shortly.
        if self._pidfd is not None:
            self._reactor.remove_reader(self._pidfd)
        self._timer = self._reactor.call_later(_STEP_ASIDE, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.popen.poll() is not None:
            self.finish()
        elif self._pidfd is not None:
            self._reactor.add_reader(self._pidfd, self._on_exit)
        else:
            self._timer = self._reactor.call_later(POLL_INTERVAL, self._on_timer)

    def finish(self) -> None:
        """Stop watching and, once QEMU is reaped, complete :attr:`exited`.

        Call it after reaping QEMU elsewhere (``Popen.wait()``), or to stop watching
        a process that still runs (the reactor is going away). Also valid once the
        reactor is closed.
        """
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            if not self._reactor.closed:
                self._reactor.remove_reader(pidfd)
            os.close(pidfd)
        returncode = self.popen.poll()
        if returncode is not None:
            self.exited.set_result(returncode)

    def forget(self) -> None:
        """Drop the record the :mod:`atexit` hook keeps (its files are cleaned up)."""
        if self.popen.returncode is not None:
            _LIVE.pop(self.pid, None)
