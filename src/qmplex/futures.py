"""Futures: the result of an operation that completes later, on a reactor.

A :class:`Future` is completed exactly once (result, exception or cancellation), on its
reactor's thread. This module knows the reactor only through the small :class:`Loop`
interface below (scheduling a callback, running code on the reactor thread, blocking
until done), so it imports nothing of the reactor.

Callback rule: a done-callback (``add_done_callback``, and the functions given to
``then``, ``chain``, ``recover`` and ``gather``) never runs inside the code that
completed the future. It is scheduled on the reactor's ready queue when the future
completes (or when it is added to a future that is already done) and runs on the
reactor thread in that order, guarded: an exception it raises is logged through the
``qmplex.futures`` logger and affects nothing else. Once the reactor is closed there is
no queue left: callbacks then run at once on the completing thread, still guarded.

Threads: ``result()``, ``exception()``, ``add_done_callback()``, ``cancel()`` and the
combinators may be called from any thread; work that must happen on the reactor thread
is handed to it (:meth:`Loop.run_in_reactor`). ``result()`` drives an idle reactor
itself, waits while another thread drives it, and refuses (``StateError``) inside a
reactor callback, where waiting would stop the loop that must complete the future.

asyncio: a future is awaitable (``await client.execute(...)``) from a coroutine whose
loop drives the reactor (``qmplex.aio.attach``) or while another thread runs it;
cancelling the awaiting task cancels the future.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .errors import Cancelled, StateError, WaitTimeout

if TYPE_CHECKING:
    import asyncio

__all__ = ["Future", "Loop", "gather"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

# Taken only to make a future's first callback list (see Future._callback_list).
_NEW_LIST = threading.Lock()

_PENDING = 0
_DONE = 1  # _value is the result
_FAILED = 2  # _value is the exception
_CANCELLED = 3  # _value is a Cancelled


class Loop(Protocol):
    """What a :class:`Future` needs from the reactor that completes it
    (:class:`qmplex.Reactor` is one)."""

    @property
    def closed(self) -> bool:
        """True once the loop is closed (callbacks then run at once)."""

    def call_soon(self, callback: Callable[..., object], *args: Any) -> object:
        """Schedule ``callback(*args)`` on the loop's ready queue (loop thread only)."""

    def run_in_reactor(self, callback: Callable[..., object], *args: Any) -> bool:
        """Run ``callback(*args)`` as loop-thread code, now or handed over (any thread)."""

    def wait_until_done(self, waitable: Any, timeout: float | None = None) -> None:
        """Block until ``waitable.done()``, driving the loop or waiting for its driver."""

    def in_reactor_thread(self) -> bool:
        """True on the thread that drives the loop."""

    def has_driver(self) -> bool:
        """True while something will run the loop without being asked (a thread in
        ``run()``, or an outer event loop it is attached to)."""

    def watch_driver(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` (from any thread) when nothing drives the loop any more."""

    def unwatch_driver(self, fn: Callable[[], object]) -> None:
        """Forget a function given to :meth:`watch_driver`."""


class _Wakeup:
    """A thread wake-up registered on a future: called at once when it completes
    (from the completing thread), never scheduled; internal to waiting."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn


def _run_callback(fn: Callable[[Any], object], future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:
        # The future's repr names what it is (a command's names its client).
        logger.exception("done-callback %r of %r raised", fn, future)


class Future(Generic[T]):
    """The eventual result of an operation.

    Args:
        reactor: the reactor whose thread completes this future and runs its callbacks.
            ``None`` makes a detached future, completed by whoever calls
            :meth:`set_result`, whose callbacks run on the completing thread.
        on_cancel: called (on the reactor thread) when the future is cancelled while
            pending: what undoes the operation behind it.
    """

    __slots__ = ("_loop", "_state", "_value", "_callbacks", "_on_cancel", "__weakref__")

    def __init__(self, reactor: Loop | None = None, *,
                 on_cancel: Callable[[], object] | None = None) -> None:
        self._loop = reactor
        self._state = _PENDING
        self._value: Any = None
        # Done-callbacks and _Wakeup entries, in the order added; None when empty.
        self._callbacks: list[Any] | None = None
        self._on_cancel = on_cancel

    def __repr__(self) -> str:
        """Show the state, and the result or exception (for logs; not a stable format)."""
        state = self._state
        if state == _PENDING:
            text = "pending"
        elif state == _CANCELLED:
            text = "cancelled"
        elif state == _FAILED:
            text = f"exception={self._value!r}"
        else:
            text = f"result={self._value!r}"
        return f"<{type(self).__name__} {text}>"

    @property
    def reactor(self) -> Loop | None:
        """The reactor this future completes on (None for a detached future)."""
        return self._loop

    # ------------------------------------------------------------ inspection
    def done(self) -> bool:
        """Return True once the future has a result, an exception or was cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        return self._state == _CANCELLED

    # ------------------------------------------------------------ completion
    def set_result(self, result: T) -> None:
        """Complete the future with ``result`` (no effect if it is already done).

        Called by the code that owns the operation. Safe from any thread: off the
        reactor thread while another thread drives it, the completion is handed to it.
        """
        loop = self._loop
        if loop is None or loop.closed or loop.in_reactor_thread():
            self._complete(_DONE, result)
        else:
            loop.run_in_reactor(self._complete, _DONE, result)

    def set_exception(self, exception: BaseException) -> None:
        """Fail the future with ``exception`` (no effect if it is already done).

        Same thread rules as :meth:`set_result`.
        """
        loop = self._loop
        if loop is None or loop.closed or loop.in_reactor_thread():
            self._complete(_FAILED, exception)
        else:
            loop.run_in_reactor(self._complete, _FAILED, exception)

    def _complete(self, state: int, value: Any) -> None:
        """Complete on the reactor thread (callers own the future)."""
        if self._state != _PENDING:
            return
        self._value = value
        self._state = state
        if self._callbacks:
            self._finish()

    def cancel(self) -> bool:
        """Cancel the future.

        The operation behind it is told (a queued command is removed from the queue; a
        command already sent has its reply discarded; a wait for an event is dropped).
        Safe from any thread.

        Returns:
            True if it was pending and is now cancelled (or, called from another thread
            while the reactor is driven elsewhere, if it was pending when asked: the
            cancellation then happens on the reactor thread within one pass, unless the
            future completes first); False if it was already done.
        """
        if self._state != _PENDING:
            return False
        loop = self._loop
        if loop is None or loop.closed or loop.in_reactor_thread():
            return self._cancel_now()
        outcome: list[bool] = []
        if loop.run_in_reactor(lambda: outcome.append(self._cancel_now())):
            return outcome[0]
        return True

    def _cancel_now(self) -> bool:
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._value = Cancelled("the operation was cancelled")
        try:
            self._cancelling()
        finally:
            if self._callbacks:
                self._finish()
        return True

    def _cancelling(self) -> None:
        """Undo the operation behind a future being cancelled (subclasses override)."""
        hook = self._on_cancel
        if hook is not None:
            self._on_cancel = None
            hook()

    def _finish(self) -> None:
        callbacks = self._callbacks
        self._callbacks = None
        self._on_cancel = None
        if not callbacks:
            return
        loop = self._loop
        inline = loop is None or loop.closed
        for cb in callbacks:
            if type(cb) is _Wakeup:
                cb.fn()
            elif inline:
                _run_callback(cb, self)
            else:
                loop.call_soon(_run_callback, cb, self)  # type: ignore[union-attr]

    # ------------------------------------------------------------- callbacks
    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """Call ``fn(future)`` on the reactor thread once the future is done.

        If it is already done, ``fn`` is scheduled at once. Safe from any thread; ``fn``
        always runs on the reactor thread (see the module docstring for when). An
        exception raised by ``fn`` is logged and does not affect other callbacks.
        """
        loop = self._loop
        if loop is None or loop.closed or loop.in_reactor_thread():
            self._add_callback(fn)
        else:
            loop.run_in_reactor(self._add_callback, fn)

    def _add_callback(self, fn: Callable[[Future[T]], object]) -> None:
        if self._state != _PENDING:
            loop = self._loop
            if loop is None or loop.closed:
                _run_callback(fn, self)
            else:
                loop.call_soon(_run_callback, fn, self)
        else:
            self._callback_list().append(fn)

    def _callback_list(self) -> list[Any]:
        """The list of callbacks, made if there is none. A waiting thread registers its
        wake-up while the reactor thread may add a callback: the list is made under a
        lock so that neither replaces the other's (appending to it is atomic)."""
        callbacks = self._callbacks
        if callbacks is None:
            with _NEW_LIST:
                if self._callbacks is None:
                    self._callbacks = []
                callbacks = self._callbacks
        return callbacks

    def remove_done_callback(self, fn: Callable[[Future[T]], object]) -> int:
        """Remove every registration of ``fn`` not yet run; return how many.

        Call it on the reactor thread (or while nobody drives the reactor).
        """
        callbacks = self._callbacks
        if not callbacks:
            return 0
        kept = [cb for cb in callbacks if cb != fn]
        self._callbacks = kept or None
        return len(callbacks) - len(kept)

    def _add_wakeup(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` at once, from the completing thread, when the future completes.

        Safe from any thread. The caller must check :meth:`done` after registering:
        a completion that raced with the registration may have missed it.
        """
        self._callback_list().append(_Wakeup(fn))

    def _remove_wakeup(self, fn: Callable[[], object]) -> None:
        callbacks = self._callbacks
        if callbacks:
            for entry in callbacks:
                if type(entry) is _Wakeup and entry.fn is fn:
                    try:
                        callbacks.remove(entry)
                    except ValueError:  # taken by a concurrent completion
                        pass
                    return

    # -------------------------------------------------------------- blocking
    def result(self, timeout: float | None = None) -> T:
        """Return the result, waiting at most ``timeout`` seconds for it.

        On a reactor nobody drives, the calling thread drives it while it waits; while
        another thread drives it, the caller sleeps until the future is done.

        Raises:
            WaitTimeout: the future is not done after ``timeout`` seconds; it stays
                pending (wait again, or cancel it).
            Cancelled: the future was cancelled.
            StateError: called inside a reactor callback (waiting would deadlock).
            Exception: whatever the operation failed with (``CommandError``,
                ``OperationTimeout``, ``ConnectionLost`` ...).
        """
        if self._state == _PENDING:
            self._wait(timeout)
        if self._state == _DONE:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception the future failed with, or None if it succeeded.

        Waits like :meth:`result`; a cancelled future returns a :class:`Cancelled`.

        Raises:
            WaitTimeout: the future is not done after ``timeout`` seconds.
            StateError: as :meth:`result`.
        """
        if self._state == _PENDING:
            self._wait(timeout)
        return None if self._state == _DONE else self._value

    def _wait(self, timeout: float | None) -> None:
        loop = self._loop
        if loop is not None:
            loop.wait_until_done(self, timeout)
            return
        # Detached: whoever completes it may be any thread.
        gate = threading.Lock()
        gate.acquire()
        self._add_wakeup(gate.release)
        try:
            if self._state == _PENDING and not gate.acquire(
                    True, -1 if timeout is None else max(timeout, 0)):
                raise WaitTimeout(f"still pending after {timeout} s (the future was "
                                  "not cancelled)")
        finally:
            self._remove_wakeup(gate.release)

    # --------------------------------------------------------------- asyncio
    def __await__(self) -> Generator[Any, None, T]:
        """``await future`` in a coroutine: see :func:`_await_done`."""
        if self._state == _PENDING:
            yield from _await_done(self).__await__()
        return self.result()

    # ------------------------------------------------------------ combinators
    def then(self, fn: Callable[[T], U]) -> Future[U]:
        """Return a future for ``fn(result)``; failures and cancellation propagate.

        ``fn`` runs on the reactor thread (a done-callback); what it raises fails the
        returned future. Cancelling the returned future cancels this one.
        """
        out: Future[U] = Future(self._loop, on_cancel=self.cancel)

        def _done(f: Future[T]) -> None:
            if out._state != _PENDING:
                return
            if f._state == _DONE:
                try:
                    value = fn(f._value)
                except Exception as exc:
                    out._complete(_FAILED, exc)
                else:
                    out._complete(_DONE, value)
            else:
                f._copy_to(out)

        self.add_done_callback(_done)
        return out

    def chain(self, fn: Callable[[T], Future[U]]) -> Future[U]:
        """Return a future for the future returned by ``fn(result)`` (a flat-map).

        Cancelling the returned future cancels whichever step is running.
        """
        return self._continue(_DONE, fn)

    def recover(self, handler: Callable[[BaseException], Future[T]]) -> Future[T]:
        """The failure-path twin of :meth:`chain`.

        Returns a future for this future's result; if this one fails (not when it is
        cancelled), for the future returned by ``handler(exception)`` instead.
        Cancelling the returned future cancels whichever of the two is running.
        """
        return self._continue(_FAILED, handler)

    def _continue(self, when: int, fn: Callable[[Any], Future[Any]]) -> Future[Any]:
        """A future for the future ``fn(value)`` returns once this one ends in state
        ``when`` (its result, or its exception); for this one's outcome otherwise."""
        out: Future[Any] = Future(self._loop, on_cancel=self.cancel)

        def _first(f: Future[Any]) -> None:
            if out._state != _PENDING:
                return
            if f._state != when:
                f._copy_to(out)
                return
            try:
                nxt = fn(f._value)
            except Exception as exc:
                out._complete(_FAILED, exc)
                return
            out._on_cancel = nxt.cancel
            nxt.add_done_callback(out._take_outcome)

        self.add_done_callback(_first)
        return out

    def _take_outcome(self, src: Future[T]) -> None:
        src._copy_to(self)

    def _copy_to(self, dst: Future[Any]) -> None:
        """Give ``dst`` this (done) future's outcome (a failure or cancellation when types
        differ), unless ``dst`` is already done."""
        if dst._state != _PENDING:
            return
        if self._state == _CANCELLED:
            dst._cancel_now()
        else:
            dst._complete(self._state, self._value)


def gather(futures: Iterable[Future[Any]], reactor: Loop | None = None, *,
           return_exceptions: bool = False) -> Future[list[Any]]:
    """Return a future for the list of outcomes of ``futures``, in their order.

    Args:
        futures: the futures to wait for (their reactor is used when ``reactor`` is
            omitted).
        reactor: the reactor of the returned future.
        return_exceptions: False (default): the returned future fails with the first
            exception among them (the others keep running), and a cancelled one fails
            it with :class:`Cancelled`. True: it waits for all of them and its result
            holds each one's result or exception (a :class:`Cancelled` for a cancelled
            one): per-item outcomes for bulk work.

    Cancelling the returned future cancels every one still pending. An empty input
    gives an already-done future.
    """
    items = list(futures)
    if reactor is None and items:
        reactor = items[0]._loop
    out: Future[list[Any]] = Future(reactor)
    if not items:
        out._complete(_DONE, [])
        return out
    remaining = [len(items)]

    def _one(f: Future[Any]) -> None:
        if out._state != _PENDING:
            return
        if f._state != _DONE and not return_exceptions:
            out._complete(_FAILED, f._value)
            return
        remaining[0] -= 1
        if remaining[0] == 0:
            out._complete(_DONE, [g._value for g in items])

    def _cancel_all() -> None:
        for f in items:
            f.cancel()

    out._on_cancel = _cancel_all
    for f in items:
        f.add_done_callback(_one)
    return out


async def _await_done(future: Future[Any]) -> None:
    """Wait in a coroutine until ``future`` is done.

    The future's reactor must be driven meanwhile: by the running loop
    (``qmplex.aio.attach``) or by another thread (``reactor.run()``); nothing else
    would ever complete it, so that case raises ``StateError`` instead of hanging, also
    when the driver goes away while the coroutine waits. The completing thread wakes the
    coroutine directly (same thread) or through ``loop.call_soon_threadsafe``.
    Cancelling the awaiting task cancels ``future``.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    reactor = future._loop
    waiter: asyncio.Future[None] = loop.create_future()
    loop_thread = threading.get_ident()

    def _wake() -> None:
        if threading.get_ident() == loop_thread:
            _set_pending(waiter)
        else:
            try:
                loop.call_soon_threadsafe(_set_pending, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    future._add_wakeup(_wake)
    if reactor is not None:
        reactor.watch_driver(_wake)
    try:
        while future._state == _PENDING:
            if reactor is not None and not reactor.has_driver():
                raise StateError(
                    "awaiting a future whose reactor nobody drives: attach the reactor to "
                    "this asyncio loop (qmplex.aio.attach(reactor)) or run it in a thread "
                    "(reactor.run())")
            await waiter
            waiter = loop.create_future()  # woken by the driver leaving: look again
            future._remove_wakeup(_wake)
            future._add_wakeup(_wake)
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        future._remove_wakeup(_wake)
        if reactor is not None:
            reactor.unwatch_driver(_wake)


def _set_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
