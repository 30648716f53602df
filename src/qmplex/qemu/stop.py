"""Stopping QEMU: ``quit``, then SIGTERM, then SIGKILL, each given its time.

Theory of operation: the clean way out is ``quit`` on a connected client (QEMU exits
with status 0 and removes its socket files); without one, SIGTERM, on which a QEMU
whose main loop runs exits cleanly too (status 0, "terminating on signal 15"); SIGKILL
is the last resort. A frozen QEMU (SIGSTOP) is thawed first, or it could obey none of
them. The exit, not a reply, is what counts: QEMU may close the socket before it
replies to ``quit``.

:class:`Stop` does this on the reactor (timers and the exit watch, nothing blocks);
:func:`stop_blocking` is the fallback for where no reactor can help (inside one of its
callbacks, or once it is closed): signals only, waiting in the calling thread.
"""

from __future__ import annotations

import signal
import subprocess
from typing import TYPE_CHECKING

from ..errors import QMPError
from ..futures import Future
from .child import Child

if TYPE_CHECKING:
    from ..client import Client
    from ..reactor import Reactor, TimerHandle

__all__ = ["Stop", "stop_blocking"]


class Stop:
    """Stop one QEMU on its reactor; :attr:`future` completes with the exit status.

    Reactor-thread code: make it and call :meth:`start` on the reactor thread.

    Args:
        reactor: the reactor the child is watched on.
        child: the process.
        client: a client connected to one of its monitors, to send ``quit`` (None: go
            to SIGTERM at once).
        timeout: seconds each clean step (``quit``, SIGTERM) is given.
        frozen: QEMU was stopped with SIGSTOP: send SIGCONT first.
    """

    def __init__(self, reactor: Reactor, child: Child, client: Client | None,
                 timeout: float, frozen: bool) -> None:
        self._reactor = reactor
        self._child = child
        self._client = client
        self._timeout = timeout
        self._frozen = frozen
        self._timer: TimerHandle | None = None
        self.future: Future[int] = Future(reactor)

    def start(self) -> None:
        """Begin: thaw, then ``quit`` or SIGTERM."""
        child = self._child
        child.exited.add_done_callback(self._on_exit)
        if child.exited.done():
            return
        if self._frozen:
            child.signal(signal.SIGCONT)
        if self._send_quit():
            self._timer = self._reactor.call_later(self._timeout, self._term)
        else:
            self._term()

    def _send_quit(self) -> bool:
        client = self._client
        if client is None:
            return False
        from ..client import ClientState  # the launcher imports the client only if used

        if client.state is not ClientState.READY:
            return False
        try:
            client.execute("quit")  # its reply may never come: the exit counts
        except QMPError:
            return False
        return True

    def _term(self) -> None:
        self._timer = None
        self._child.signal(signal.SIGTERM)
        self._timer = self._reactor.call_later(self._timeout, self._kill)

    def _kill(self) -> None:
        self._timer = None
        self._child.signal(signal.SIGKILL)

    def _on_exit(self, exited: Future[int]) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.future.set_result(exited.result())


def stop_blocking(child: Child, timeout: float, frozen: bool) -> int:
    """Stop QEMU with signals, waiting in the calling thread; return the exit status.

    SIGCONT (if ``frozen``), SIGTERM and up to ``timeout`` seconds, then SIGKILL. The
    caller finishes the child's exit watch afterwards.
    """
    popen = child.popen
    if popen.poll() is None:
        if frozen:
            child.signal(signal.SIGCONT)
        child.signal(signal.SIGTERM)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.signal(signal.SIGKILL)
            popen.wait()
    assert popen.returncode is not None
    return popen.returncode
