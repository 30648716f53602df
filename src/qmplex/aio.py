"""asyncio bridge: ``await`` qmplex futures, and run a Reactor inside an asyncio loop.

This module belongs to the tools layer. It never changes how the reactor or a client
works; it only decides *who drives* the reactor:

- :func:`attach` hands the reactor to a running asyncio loop, with no second thread.
  The reactor's selector descriptor (epoll) is registered with ``loop.add_reader``: it
  becomes readable whenever one of the reactor's sockets is ready, and the bridge then
  runs one non-blocking reactor pass (``reactor.run_once(0)``). After every pass the
  bridge arms one asyncio timer for the reactor's next deadline
  (``reactor.next_deadline()``), so command timeouts and other reactor timers fire on
  time, and callbacks the pass left ready run on the loop's next iteration.
- :func:`wrap` turns a qmplex :class:`~qmplex.futures.Future` into something a
  coroutine can ``await``. It works with a bridged reactor and with a reactor driven by
  another thread (``threading.Thread(target=reactor.run)``): the result crosses into
  the loop with ``loop.call_soon_threadsafe`` only when it is completed on another
  thread.

Example::

    import asyncio
    import qmplex
    from qmplex import aio

    async def main() -> None:
        reactor = qmplex.Reactor()
        with aio.attach(reactor):
            client = await aio.connect("/run/vm1/qmp.sock", reactor=reactor, timeout=5)
            print(await aio.wrap(client.execute("query-status")))
            client.close()
        reactor.close()

    asyncio.run(main())

Theory of operation: a bridged reactor is driven only by the loop's thread, inside the
loop's callbacks, one pass at a time, so every qmplex callback runs on the loop's
thread and may call both qmplex and asyncio APIs directly. Work queued on the reactor
from a coroutine (``client.execute(...)`` schedules the write with ``call_soon``) does
not make the epoll descriptor readable; :func:`wrap` therefore nudges the bridge of the
future's reactor (:meth:`AsyncioReactorBridge.kick`), and code that submits commands
without awaiting them calls ``kick()`` itself. Never call a blocking
``Future.result()`` in a coroutine: it would stop the asyncio loop while it waits.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from .client import DEFAULT_WINDOW, Address, Client
from .errors import StateError
from .framing import DEFAULT_MAX_LINE_BYTES
from .futures import Future

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = ["AsyncioReactorBridge", "attach", "bridge_of", "connect", "wrap"]

T = TypeVar("T")

# Reactor -> its bridge, so wrap() can kick the bridge of any future's reactor.
_bridges: weakref.WeakKeyDictionary[Reactor, AsyncioReactorBridge] = weakref.WeakKeyDictionary()


class AsyncioReactorBridge:
    """Drives a qmplex :class:`~qmplex.reactor.Reactor` from an asyncio event loop.

    Made by :func:`attach`; see the module docstring for how it works. While attached,
    no other thread may drive the reactor (``reactor.run()`` elsewhere raises
    :class:`~qmplex.errors.StateError` whenever a bridge pass is under way, and would
    race with it otherwise).

    Usable as a context manager (``with attach(reactor): ...``, also ``async with``),
    which detaches on exit.

    Args:
        reactor: the reactor to drive. It must have a selector with a file descriptor
            (the default epoll selector does).
        loop: the asyncio loop to drive it from (it need not be running yet).

    Raises:
        StateError: the reactor is closed, already bridged, or its selector has no
            file descriptor.
    """

    def __init__(self, reactor: Reactor, loop: asyncio.AbstractEventLoop) -> None:
        if reactor.closed:
            raise StateError("cannot bridge a closed reactor")
        if reactor in _bridges:
            raise StateError("this reactor is already attached to an asyncio loop")
        self._reactor = reactor
        self._loop = loop
        self._fd = reactor.fileno()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._soon: asyncio.Handle | None = None
        self._attached = True
        self.passes = 0
        """Reactor passes run by this bridge so far (for tests and statistics)."""
        loop.add_reader(self._fd, self._on_readable)
        _bridges[reactor] = self
        self._rearm()

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
        """Make the loop run a reactor pass soon (on its next iteration).

        Call it after queueing work on the reactor from a coroutine without awaiting it
        through :func:`wrap` (which kicks by itself), e.g. after ``client.execute(...)``
        whose future is only given callbacks. Cheap and idempotent; must be called on
        the loop's thread. No effect once detached.
        """
        if self._attached and self._soon is None:
            self._soon = self._loop.call_soon(self._run)

    def _on_readable(self) -> None:
        self._run()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self._run()

    def _run(self) -> None:
        self._soon = None
        if not self._attached:
            return
        reactor = self._reactor
        if reactor.closed:
            self.detach()
            return
        try:
            reactor.run_once(0)
        except StateError:
            # A blocking Future.result() somewhere is driving it right now (only
            # possible from another thread): its pass does the work; check again later.
            if reactor.closed:
                self.detach()
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
            self.kick()
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
        """Stop driving the reactor: unregister its descriptor and cancel the timers.

        The reactor keeps its state (clients, timers) and may be driven again, by
        ``run()`` or by a new :func:`attach`. Idempotent; call it on the loop's thread
        (before closing the loop, and before closing the reactor if you can).
        """
        if not self._attached:
            return
        self._attached = False
        self._cancel_timer()
        soon = self._soon
        self._soon = None
        if soon is not None:
            soon.cancel()
        if _bridges.get(self._reactor) is self:
            del _bridges[self._reactor]
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)

    close = detach

    def __enter__(self) -> AsyncioReactorBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    async def __aenter__(self) -> AsyncioReactorBridge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return f"<AsyncioReactorBridge fd={self._fd} {state} passes={self.passes}>"


def attach(reactor: Reactor, loop: asyncio.AbstractEventLoop | None = None) -> AsyncioReactorBridge:
    """Drive ``reactor`` from an asyncio loop, in the loop's thread (no second thread).

    Args:
        reactor: the reactor to drive; no other thread may drive it while attached.
        loop: the loop (default: the running loop).

    Returns:
        The bridge; call :meth:`AsyncioReactorBridge.detach` (or leave its ``with``
        block) before closing the reactor or the loop.

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
    """Wait for a qmplex future from a coroutine and return its result.

    The future's reactor must be driven meanwhile: by a bridge (:func:`attach`), or by
    another thread running ``reactor.run()``. The result is handed to the waiting
    coroutine directly when the future completes on the loop's thread, and through
    ``loop.call_soon_threadsafe`` when it completes on another thread.

    Cancelling the awaiting task cancels the qmplex future (on its reactor's thread:
    directly when that is this thread or the reactor is idle, else through
    ``reactor.call_soon_threadsafe``).

    Args:
        future: any qmplex future (a command, an event wait, a ``gather``...).

    Returns:
        The future's result.

    Raises:
        Exception: whatever the future fails with (``CommandError``, ``Timeout``,
            ``ConnectionLost``...); :class:`~qmplex.errors.Cancelled` if it was
            cancelled by someone else.
        asyncio.CancelledError: the awaiting task was cancelled.
    """
    loop = asyncio.get_running_loop()
    if future.done():
        return future.result()
    waiter: asyncio.Future[None] = loop.create_future()
    loop_thread = threading.get_ident()

    def _wake(_: Future[T]) -> None:
        # Runs on the reactor's driving thread (the loop's, when bridged).
        if threading.get_ident() == loop_thread:
            if not waiter.done():
                waiter.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_set_if_pending, waiter)

    future.add_done_callback(_wake)
    reactor = future.reactor
    if reactor is not None:
        bridge = _bridges.get(reactor)
        if bridge is not None and bridge.loop is loop:
            bridge.kick()  # flush whatever the caller just queued on the reactor
    try:
        await waiter
    except asyncio.CancelledError:
        future.remove_done_callback(_wake)
        _cancel_on_reactor(future)
        raise
    return future.result()


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _cancel_on_reactor(future: Future[Any]) -> None:
    reactor = future.reactor
    if reactor is None or reactor.closed:
        future.cancel()
    elif reactor.in_reactor_thread() or not reactor.is_running():
        future.cancel()
        bridge = _bridges.get(reactor)
        if bridge is not None:
            bridge.kick()
    else:
        reactor.call_soon_threadsafe(future.cancel)


async def connect(
    address: Address,
    *,
    reactor: Reactor,
    timeout: float | None = None,
    window: int = DEFAULT_WINDOW,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Client:
    """Connect a new :class:`~qmplex.client.Client` on ``reactor`` without blocking
    the loop, and return it once capabilities are negotiated.

    Args:
        address: a Unix socket path, or ``(host, port)`` for TCP.
        reactor: the reactor the client lives on; it must be attached to the running
            loop (:func:`attach`), so that the client is made and used on the thread
            that drives it.
        timeout: seconds for the whole handshake.
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.

    Returns:
        A ready client. Call its methods on the thread that drives ``reactor`` (the
        loop's thread when bridged).

    Raises:
        StateError: ``reactor`` is not attached to the running loop.
        ConnectError, Timeout, ProtocolError: as :meth:`Client.connect`'s future.
    """
    bridge = _bridges.get(reactor)
    if bridge is None or bridge.loop is not asyncio.get_running_loop():
        raise StateError("aio.connect() needs a reactor attached to the running loop "
                         "(qmplex.aio.attach(reactor))")
    client = Client(reactor, window=window, max_line_bytes=max_line_bytes)
    try:
        await wrap(client.connect(address, timeout=timeout))
    except BaseException:
        client.close()
        raise
    return client
