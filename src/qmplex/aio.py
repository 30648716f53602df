"""asyncio support: drive a reactor from an asyncio loop, connect without blocking it.

A qmplex :class:`~qmplex.Future` is awaitable by itself (``await client.execute(...)``,
``await client.vm.query_status()``), whoever drives its reactor. This module provides
the driver that lives inside a running asyncio loop (or uvloop), with no second thread:

- :func:`attach` registers the reactor's selector descriptor (epoll) with
  ``loop.add_reader``: it becomes readable whenever one of the reactor's sockets is
  ready (or another thread hands it work), and the bridge then runs one non-blocking
  reactor pass (``reactor.run_once(0)``);
- it installs the reactor's wake-up hook: work queued from the loop's thread (a
  command submitted by a coroutine, a loop callback or a qmplex callback, a typed
  operation whose bytes are written later) makes the bridge run a pass on the loop's
  next iteration: no manual nudge is ever needed;
- after every pass it arms one asyncio timer for the reactor's next deadline, so
  command timeouts and other reactor timers fire on time.

Example::

    import asyncio
    import qmplex
    from qmplex import aio

    async def main() -> None:
        client = await aio.connect("/run/vm1/qmp.sock", timeout=5)
        print(await client.execute("query-status"))
        client.close()

    asyncio.run(main())

A reactor driven by a thread (``threading.Thread(target=reactor.run)``) works from
coroutines too: awaiting its futures needs no bridge. Never call a blocking
``Future.result()`` in a coroutine: it would stop the asyncio loop while it waits.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from .client import DEFAULT_WINDOW, Address, Client
from .core.framing import DEFAULT_MAX_LINE_BYTES
from .errors import StateError
from .futures import Future
from .reactor import Reactor

if TYPE_CHECKING:
    from ssl import SSLContext

    from .qemu import QemuProcess
    from .reconnect import ReconnectPolicy

__all__ = ["AsyncioReactorBridge", "attach", "bridge_of", "connect", "restart", "start",
           "start_qemu", "stop", "wrap"]

T = TypeVar("T")

# Reactor -> its bridge.
_bridges: weakref.WeakKeyDictionary[Reactor, AsyncioReactorBridge] = weakref.WeakKeyDictionary()


class AsyncioReactorBridge:
    """Drives a qmplex :class:`~qmplex.reactor.Reactor` from an asyncio event loop.

    Made by :func:`attach`; see the module docstring for how it works. While attached,
    the loop's thread is the reactor's driver: other threads may still call every
    client method (their work is handed to the loop's thread), but must not run the
    reactor themselves.

    Usable as a context manager (``with attach(reactor): ...``, also ``async with``),
    which detaches on exit.

    Args:
        reactor: the reactor to drive. It must have a selector with a file descriptor
            (the default epoll selector does).
        loop: the asyncio loop to drive it from (it need not be running yet).

    Raises:
        StateError: the reactor is closed, already attached, or its selector has no
            file descriptor.
    """

    def __init__(self, reactor: Reactor, loop: asyncio.AbstractEventLoop) -> None:
        if reactor.closed:
            raise StateError("cannot attach a closed reactor")
        if reactor in _bridges:
            raise StateError("this reactor is already attached to an asyncio loop")
        self._reactor = reactor
        self._loop = loop
        # The loop watches a duplicate of the reactor's selector descriptor: closing the
        # reactor (which may happen on any thread, between two of the loop's passes)
        # then never leaves the loop watching a closed or reused descriptor.
        self._fd = os.dup(reactor.fileno())
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._soon = False  # a pass is scheduled on the loop
        self._attached = True
        # The loop's thread, once known (now, when attached from inside the loop).
        self._thread: int | None = (
            threading.get_ident() if asyncio._get_running_loop() is loop else None)
        self.passes = 0
        """Reactor passes run by this bridge so far (for tests and statistics)."""
        try:
            loop.add_reader(self._fd, self._run)
        except BaseException:
            os.close(self._fd)
            raise
        _bridges[reactor] = self
        reactor.set_wakeup_hook(self._wake, self._thread)
        self._schedule()

    # ------------------------------------------------------------ properties
    @property
    def reactor(self) -> Reactor:
        """The reactor this bridge drives."""
        return self._reactor

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that drives the reactor."""
        return self._loop

    @property
    def attached(self) -> bool:
        """True until :meth:`detach` is called."""
        return self._attached

    # ------------------------------------------------------------ driving
    def kick(self) -> None:
        """Deprecated: work queued on the reactor is noticed by itself now. Runs a pass
        on the loop's next iteration (harmless)."""
        self._wake()

    def _wake(self) -> None:
        """The reactor's wake-up hook: work was queued outside a pass, or the reactor
        closed (any thread)."""
        if not self._attached:
            return
        if threading.get_ident() == self._thread:
            if self._reactor.closed:
                self.detach()  # at once: the loop must not watch it a moment longer
            else:
                self._schedule()
        elif self._soon and not self._reactor.closed:
            return
        else:
            try:
                self._loop.call_soon_threadsafe(self._schedule)
            except RuntimeError:  # the loop is closed
                pass

    def _schedule(self) -> None:
        if not self._soon and self._attached:
            self._soon = True
            self._loop.call_soon(self._run)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self._run()

    def _run(self) -> None:
        self._soon = False
        if not self._attached:
            return
        if self._thread is None:
            self._thread = threading.get_ident()
            self._reactor.set_wakeup_hook(self._wake, self._thread)
        reactor = self._reactor
        if reactor.closed:
            self.detach()
            return
        try:
            reactor.run_once(0)
        except StateError:
            if reactor.closed:
                self.detach()
                return
            # Another thread holds the reactor for one call right now (a call made off
            # the loop's thread while the reactor was idle): run when it lets go.
            reactor.call_when_idle(self._wake)
            return
        self.passes += 1
        self._rearm()

    def _rearm(self) -> None:
        """Arm the asyncio side for the reactor's next need: a pass on the next loop
        iteration if callbacks are ready, else one timer for the earliest reactor timer.
        """
        if not self._attached:
            return
        reactor = self._reactor
        if reactor.closed:
            self.detach()
            return
        deadline = reactor.next_deadline()
        if deadline == 0.0:
            self._cancel_timer()
            self._schedule()
            return
        if deadline is None:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_when == deadline:
            return  # already armed for this deadline
        self._cancel_timer()
        delay = max(0.0, deadline - reactor.time())
        self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)
        self._timer_when = deadline

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            self._timer_when = None
            timer.cancel()

    # ------------------------------------------------------------ detaching
    def detach(self) -> None:
        """Stop driving the reactor: unregister its descriptor, remove the wake-up hook
        and cancel the timer.

        The reactor keeps its state (clients, timers) and may be driven again, by
        ``run()`` or by a new :func:`attach`. Idempotent; call it on the loop's thread
        (before closing the loop, and before closing the reactor if you can).
        """
        if not self._attached:
            return
        self._attached = False
        self._cancel_timer()
        if _bridges.get(self._reactor) is self:
            del _bridges[self._reactor]
        if not self._reactor.closed:
            self._reactor.set_wakeup_hook(None)
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)

    close = detach

    def __enter__(self) -> AsyncioReactorBridge:
        """Return the bridge; leaving the ``with`` block calls :meth:`detach`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Call :meth:`detach` (exceptions propagate)."""
        self.detach()

    async def __aenter__(self) -> AsyncioReactorBridge:
        """Return the bridge; leaving the ``async with`` block calls :meth:`detach`."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Call :meth:`detach` (exceptions propagate)."""
        self.detach()

    def __repr__(self) -> str:
        """Show the descriptor, whether attached, and the passes run (for logs; not a
        stable format)."""
        state = "attached" if self._attached else "detached"
        return f"<AsyncioReactorBridge fd={self._fd} {state} passes={self.passes}>"


def attach(reactor: Reactor, loop: asyncio.AbstractEventLoop | None = None) -> AsyncioReactorBridge:
    """Drive ``reactor`` from an asyncio loop, in the loop's thread (no second thread).

    Args:
        reactor: the reactor to drive; no other thread may run it while attached.
        loop: the loop (default: the running loop).

    Returns:
        The bridge; call :meth:`AsyncioReactorBridge.detach` (or leave its ``with``
        block) before closing the loop. Closing the reactor detaches it by itself.

    Raises:
        RuntimeError: ``loop`` is omitted and no loop is running.
        StateError: the reactor is closed or already attached, or its selector has no
            file descriptor.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    return AsyncioReactorBridge(reactor, loop)


def bridge_of(reactor: Reactor) -> AsyncioReactorBridge | None:
    """Return the bridge currently driving ``reactor``, or None."""
    return _bridges.get(reactor)


async def wrap(future: Future[T]) -> T:
    """``await future`` (kept for older code: qmplex futures are awaitable)."""
    return await future


async def connect(
    address: Address,
    *,
    reactor: Reactor | None = None,
    timeout: float | None = None,
    window: int = DEFAULT_WINDOW,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    name: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    ssl: SSLContext | bool | None = None,
    server_hostname: str | None = None,
) -> Client:
    """Connect a new :class:`~qmplex.Client` without blocking the loop, and return it
    once capabilities are negotiated.

    Args:
        address: a Unix socket path, or ``(host, port)`` for TCP.
        reactor: the reactor the client lives on. It must be driven: attached to the
            running loop (it is attached here if nobody drives it yet) or run by
            another thread. None: a private reactor, attached to the running loop and
            closed by the client's ``close()``.
        timeout: seconds for the whole handshake.
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.
        name: how errors and logs name the connection.
        reconnect: the reconnect policy (default: none).
        ssl: TLS settings, as :meth:`Client.connect`'s.
        server_hostname: as :meth:`Client.connect`'s.

    Returns:
        A ready client; its methods may be called from any thread and its futures
        awaited.

    Raises:
        ConnectError, OperationTimeout, ProtocolError: as :meth:`Client.connect`'s
            future.
    """
    loop = asyncio.get_running_loop()
    client = Client(reactor, window=window, max_line_bytes=max_line_bytes, name=name,
                    reconnect=reconnect)
    if not client.reactor.has_driver():
        attach(client.reactor, loop)
    try:
        await client.connect(address, timeout=timeout, ssl=ssl,
                             server_hostname=server_hostname)
    except BaseException:
        client.close()
        raise
    return client


def _driven(reactor: Reactor | None) -> None:
    """Attach ``reactor`` to the running loop unless something drives it already."""
    if reactor is not None and not reactor.closed and not reactor.has_driver():
        attach(reactor, asyncio.get_running_loop())


async def start(vm: QemuProcess) -> QemuProcess:
    """Start ``vm`` (a :class:`~qmplex.qemu.QemuProcess`) without blocking the loop.

    This awaits :meth:`vm.launch() <qmplex.qemu.QemuProcess.launch>`: QEMU is spawned at
    once and its monitor awaited by ``vm``'s reactor (no thread), which must be driven:
    attached to the running loop (which this does if nobody drives it yet) or run by a
    thread. Without a reactor of its own, ``vm`` makes a private one, attached here and
    closed by :func:`stop`. ``vm.client``, if ``vm`` connects, lives on that reactor.
    Any number of these may run at once (``asyncio.gather``).

    Returns:
        ``vm``, started.

    Raises:
        As :meth:`QemuProcess.start`; QEMU is reaped and its files removed first.
        Cancelling the awaiting task kills QEMU.
    """
    launched = vm.launch()
    _driven(vm.reactor)
    return await launched


async def stop(vm: QemuProcess, timeout: float = 5.0) -> int:
    """Stop ``vm`` without blocking the loop (awaits :meth:`~qmplex.qemu.QemuProcess.shutdown`).

    Args:
        vm: a started :class:`~qmplex.qemu.QemuProcess`.
        timeout: seconds each clean step is given (see :meth:`QemuProcess.stop`).

    Returns:
        QEMU's exit status.

    Raises:
        StateError: ``vm`` was never started.
    """
    _driven(vm.reactor)
    return await vm.shutdown(timeout)


async def restart(vm: QemuProcess, timeout: float = 5.0) -> QemuProcess:
    """Restart ``vm`` without blocking the loop (awaits
    :meth:`~qmplex.qemu.QemuProcess.relaunch`): QEMU is stopped, and started again with
    the same command line and socket paths; clients with a reconnect policy come back
    by themselves.

    Returns:
        ``vm``, running again.

    Raises:
        As :meth:`QemuProcess.restart`.
    """
    _driven(vm.reactor)
    return await vm.relaunch(timeout)


async def start_qemu(*args: Any, **kwargs: Any) -> QemuProcess:
    """Make a :class:`~qmplex.qemu.QemuProcess` (with its arguments) and :func:`start` it.

    Returns:
        The started process; ``vm.client`` is ready (unless ``connect=False``). Stop it
        with ``await aio.stop(vm)``.
    """
    from .qemu import QemuProcess

    return await start(QemuProcess(*args, **kwargs))
