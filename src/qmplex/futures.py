"""Futures: the result of an operation that completes later, on the reactor.

A :class:`Future` is completed exactly once (result, exception or cancellation), by code
running on its reactor. Done callbacks are scheduled on the reactor with ``call_soon``,
never run inline, so completing a future never re-enters the code that completed it.

:meth:`Future.result` blocks:

- on the thread that owns an idle reactor, it drives the reactor (``run_once``) until the
  future is done or the timeout passes;
- on another thread while the reactor runs elsewhere, it waits for the completion, or
  until that thread stops driving, and then drives the reactor itself (so several
  threads may block on futures of one idle reactor: one drives, the others wait, and
  none is stranded when the driver's own future is done);
- inside a reactor callback it raises :class:`~qmplex.errors.StateError`, because
  waiting there would stop the very loop that must complete the future.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import Cancelled, StateError, Timeout

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = ["Future", "gather"]

T = TypeVar("T")
U = TypeVar("U")

_PENDING = 0
_DONE = 1
_CANCELLED = 2
# Guards the lazy creation of a future's waiter (see Future._condition).
_WAITER_LOCK = threading.Lock()


class Future(Generic[T]):
    """The eventual result of an operation.

    Args:
        reactor: the reactor whose thread completes this future and runs its callbacks.
            ``None`` makes a detached future whose callbacks run inline.
    """

    __slots__ = (
        "_reactor",
        "_state",
        "_result",
        "_exception",
        "_callbacks",
        "_waiter",
        "_cancel_hook",
        "__weakref__",
    )

    def __init__(self, reactor: Reactor | None = None) -> None:
        self._reactor = reactor
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], object]] | None = None
        # Created by the first thread that blocks in result() without driving.
        self._waiter: threading.Condition | None = None
        self._cancel_hook: Callable[[], object] | None = None

    def __repr__(self) -> str:
        if self._state == _PENDING:
            state = "pending"
        elif self._state == _CANCELLED:
            state = "cancelled"
        elif self._exception is not None:
            state = f"exception={self._exception!r}"
        else:
            state = f"result={self._result!r}"
        return f"<Future {state}>"

    @property
    def reactor(self) -> Reactor | None:
        """The reactor this future completes on."""
        return self._reactor

    # ------------------------------------------------------------ inspection
    def done(self) -> bool:
        """Return True once the future has a result, an exception or was cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        return self._state == _CANCELLED

    # ------------------------------------------------------------ completion
    def set_result(self, result: T) -> None:
        """Complete the future with ``result`` (no effect if already done).

        Called by the code that owns the operation, on the reactor's thread.
        """
        if self._state != _PENDING:
            return
        self._result = result
        self._state = _DONE
        if self._waiter is None and not self._callbacks:
            self._cancel_hook = None  # all that _finish() would do: skip its call
            return
        self._finish()

    def set_exception(self, exception: BaseException) -> None:
        """Complete the future with ``exception`` (no effect if already done)."""
        if self._state != _PENDING:
            return
        self._exception = exception
        self._state = _DONE
        self._finish()

    def cancel(self) -> bool:
        """Cancel the future.

        Returns:
            True if it was pending and is now cancelled; False if it was already done.

        The operation behind it is told (a queued command is removed from the queue; a
        command already sent has its reply discarded). Call on the reactor's thread, or
        from another thread through ``reactor.call_soon_threadsafe(fut.cancel)``.
        """
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._exception = Cancelled("the operation was cancelled")
        hook = self._cancel_hook
        self._cancel_hook = None
        if hook is not None:
            hook()
        self._finish()
        return True

    def _set_cancel_hook(self, hook: Callable[[], object] | None) -> None:
        self._cancel_hook = hook

    def _finish(self) -> None:
        self._cancel_hook = None
        waiter = self._waiter
        if waiter is not None:
            with waiter:
                waiter.notify_all()
        callbacks = self._callbacks
        if callbacks:
            self._callbacks = None
            reactor = self._reactor
            for cb in callbacks:
                if reactor is None or reactor.closed:
                    cb(self)
                else:
                    reactor.call_soon(cb, self)

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """Call ``fn(future)`` on the reactor's thread once the future is done.

        If it is already done, ``fn`` is scheduled at once. Exceptions raised by ``fn``
        are logged and do not affect other callbacks.
        """
        if self._state != _PENDING:
            reactor = self._reactor
            if reactor is None or reactor.closed:
                fn(self)
            else:
                reactor.call_soon(fn, self)
            return
        if self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[Future[T]], object]) -> int:
        """Remove every registration of ``fn``; return how many were removed."""
        if not self._callbacks:
            return 0
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return before - len(self._callbacks)

    # -------------------------------------------------------------- blocking
    def result(self, timeout: float | None = None) -> T:
        """Return the result, waiting at most ``timeout`` seconds for it.

        Raises:
            Timeout: the future is not done after ``timeout`` seconds (it stays pending).
            Cancelled: the future was cancelled.
            StateError: called inside a reactor callback (waiting would deadlock).
            Exception: whatever the operation failed with (e.g. ``CommandError``).
        """
        if self._state == _PENDING:
            reactor = self._reactor
            # The common case (no timeout, an idle reactor) drives it straight away.
            if timeout is not None or reactor is None or not reactor._drive_until(self, None):
                self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception the future failed with, or None if it succeeded.

        Waits like :meth:`result`; a cancelled future returns a :class:`Cancelled`.
        """
        if self._state == _PENDING:
            self._wait(timeout)
        return self._exception

    def _wait(self, timeout: float | None) -> None:
        reactor = self._reactor
        if reactor is None:
            self._wait_event(timeout)
            return
        if reactor._driver == threading.get_ident():  # reactor.in_reactor_thread()
            raise StateError(
                "Future.result() called inside a reactor callback: blocking here would "
                "stop the reactor that must complete this future (deadlock); use "
                "add_done_callback() instead"
            )
        # Drive the reactor while no thread does; while another thread drives it, wait
        # until this future is done or that thread stops driving (then drive in turn),
        # so any number of threads may block here on the same idle reactor.
        deadline = None if timeout is None else reactor.time() + timeout
        while self._state == _PENDING:
            if reactor._drive_until(self, deadline):
                if self._state == _PENDING:  # only when the deadline passed
                    raise Timeout(f"future not done after {timeout} s")
                return
            remaining = None
            if deadline is not None:
                remaining = deadline - reactor.time()
                if remaining <= 0:
                    raise Timeout(f"future not done after {timeout} s")
            if not self._wait_driven(reactor, remaining):
                raise Timeout(f"future not done after {timeout} s")

    def _condition(self) -> threading.Condition:
        waiter = self._waiter
        if waiter is None:
            with _WAITER_LOCK:  # two threads must not each install their own
                waiter = self._waiter
                if waiter is None:
                    waiter = self._waiter = threading.Condition()
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            with waiter:
                waiter.notify_all()

    def _wait_driven(self, reactor: Reactor, timeout: float | None) -> bool:
        """Wait while another thread drives ``reactor`` and this future is pending.

        Returns False if ``timeout`` passed first.
        """
        cond = self._condition()
        end = None if timeout is None else time.monotonic() + timeout
        with cond:
            while self._state == _PENDING:
                # Registered anew after each wake-up (a leave consumes the registration),
                # under this condition: no driver can leave unnoticed.
                if not reactor._notify_when_idle(self._wake):
                    return True  # nobody drives: drive it ourselves
                try:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    cond.wait(left)
                finally:
                    reactor._cancel_idle_notify(self._wake)
        return True

    def _wait_event(self, timeout: float | None) -> None:
        cond = self._condition()
        with cond:
            if not cond.wait_for(lambda: self._state != _PENDING, timeout):
                raise Timeout(f"future not done after {timeout} s")

    # ------------------------------------------------------------ combinators
    def then(self, fn: Callable[[T], U]) -> Future[U]:
        """Return a future for ``fn(result)``; failures and cancellation propagate.

        Cancelling the returned future cancels this one.
        """
        out: Future[U] = Future(self._reactor)

        def _done(f: Future[T]) -> None:
            if out.done():
                return
            if f._state == _CANCELLED:
                out.cancel()
            elif f._exception is not None:
                out.set_exception(f._exception)
            else:
                try:
                    out.set_result(fn(f._result))
                except Exception as exc:
                    out.set_exception(exc)

        out._set_cancel_hook(self.cancel)
        self._add_internal_callback(_done)
        return out

    def chain(self, fn: Callable[[T], Future[U]]) -> Future[U]:
        """Return a future for the future returned by ``fn(result)`` (a flat-map).

        Cancelling the returned future cancels whichever step is running.
        """
        out: Future[U] = Future(self._reactor)

        def _second(g: Future[U]) -> None:
            g._copy_to(out)

        def _first(f: Future[T]) -> None:
            if out.done():
                return
            if f._state == _CANCELLED:
                out.cancel()
                return
            if f._exception is not None:
                out.set_exception(f._exception)
                return
            try:
                nxt = fn(f._result)
            except Exception as exc:
                out.set_exception(exc)
                return
            out._set_cancel_hook(nxt.cancel)
            nxt._add_internal_callback(_second)

        out._set_cancel_hook(self.cancel)
        self._add_internal_callback(_first)
        return out

    def recover(self, handler: Callable[[BaseException], Future[T]]) -> Future[T]:
        """The failure-path twin of :meth:`chain`.

        Returns a future for this future's result; if this one fails (not when it is
        cancelled), for the future returned by ``handler(exception)`` instead. Cancelling
        the returned future cancels whichever of the two is running.
        """
        out: Future[T] = Future(self._reactor)

        def _second(nxt: Future[T]) -> None:
            nxt._copy_to(out)

        def _first(f: Future[T]) -> None:
            if out.done():
                return
            if f._state == _CANCELLED or f._exception is None:
                f._copy_to(out)
                return
            try:
                nxt = handler(f._exception)
            except Exception as err:
                out.set_exception(err)
                return
            out._set_cancel_hook(nxt.cancel)
            nxt.add_done_callback(_second)

        out._set_cancel_hook(self.cancel)
        self.add_done_callback(_first)
        return out

    def _copy_to(self, dst: Future[T]) -> None:
        # Give ``dst`` this (done) future's outcome, unless ``dst`` is already done.
        if dst._state != _PENDING:
            return
        if self._state == _CANCELLED:
            dst.cancel()
        elif self._exception is not None:
            dst.set_exception(self._exception)
        else:
            dst.set_result(self._result)

    def _add_internal_callback(self, fn: Callable[[Future[T]], object]) -> None:
        # Like add_done_callback, but run inline when already done: combinators must
        # see the state without waiting a reactor pass.
        if self._state != _PENDING:
            fn(self)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)


def gather(futures: Iterable[Future[Any]], reactor: Reactor | None = None) -> Future[list[Any]]:
    """Return a future for the list of results of ``futures``, in their order.

    It fails with the first exception among them (the others keep running); cancelling
    it cancels every one still pending. An empty input gives an already-done future.
    """
    items = list(futures)
    if reactor is None and items:
        reactor = items[0]._reactor
    out: Future[list[Any]] = Future(reactor)
    if not items:
        out.set_result([])
        return out
    remaining = [len(items)]

    def _one(f: Future[Any]) -> None:
        if out.done():
            return
        if f._state == _CANCELLED:
            out.set_exception(f._exception or Cancelled("cancelled"))
            return
        if f._exception is not None:
            out.set_exception(f._exception)
            return
        remaining[0] -= 1
        if remaining[0] == 0:
            out.set_result([g._result for g in items])

    def _cancel_all() -> None:
        for f in items:
            f.cancel()

    out._set_cancel_hook(_cancel_all)
    for f in items:
        f._add_internal_callback(_one)
    return out
