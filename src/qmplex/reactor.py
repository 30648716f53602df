"""The reactor: one selector, a ready queue, a timer heap, and a thread-safe entry.

This layer knows nothing of QMP. It owns:

- the selector: an ``epoll`` object polled directly where the OS has one (no key
  objects built per event), else a ``selectors`` selector; a map from each file
  descriptor to its ``[reader, writer]`` callbacks dispatches an I/O event in one lookup;
- a deque of ready callbacks; each pass runs only the callbacks that were ready when it
  began, so a callback that schedules another cannot starve I/O;
- a heap of timers with lazy cancellation (a cancelled timer stays in the heap until it
  reaches the top, and the heap is compacted once more than half of it is cancelled);
- the only entry from other threads, :meth:`Reactor.call_soon_threadsafe`: a deque plus
  a wake-up socket pair; :meth:`Reactor.run_in_reactor` and :meth:`Reactor.submit` are
  built on it;
- a wake-up hook (:meth:`Reactor.set_wakeup_hook`) through which an outer event loop
  that drives the reactor (``qmplex.aio``) learns that work was queued.

Theory of operation
-------------------
A thread *drives* the reactor while it holds the reactor's drive lock: inside
:meth:`Reactor.run` or :meth:`Reactor.run_once`, while ``Future.result()`` runs passes
for the future it waits on, or for the length of one :meth:`Reactor.run_in_reactor`
call on an idle reactor. Taking the drive never waits (a non-blocking acquire): a thread
that finds it taken either hands its work over (:meth:`run_in_reactor`), waits for
what it needs (``Future.result()``), or is refused (:meth:`run` raises ``StateError``).
Everything that touches reactor-owned state (clients, their queues, subscriptions,
futures) runs on the driving thread, one callback at a time: there are no other locks.

"The reactor thread" below means the thread that drives it at that moment. Callbacks
run on it; an exception escaping a callback is logged through the ``qmplex.reactor``
logger and never stops the reactor.
"""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import logging
import select
import selectors
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .errors import StateError, WaitTimeout

__all__ = ["Reactor", "Handle", "TimerHandle", "Waitable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# I/O events as the dispatch sees them, whatever the backend: epoll's own bits (the
# same on every Linux architecture); the selectors fallback translates to them. An
# error or hang-up (any other bit) wakes the reader and the writer, as selectors does.
_IN = 0x001
_OUT = 0x004
_NOT_IN = ~_IN
_NOT_OUT = ~_OUT
_HAS_EPOLL = hasattr(select, "epoll")
_get_ident = threading.get_ident
if _HAS_EPOLL:
    assert select.EPOLLIN == _IN and select.EPOLLOUT == _OUT

# Rounds of ready callbacks that close() runs before it releases the reactor (a
# callback may schedule another; the bound keeps a callback that always reschedules
# itself from holding close() forever).
_CLOSE_ROUNDS = 100


def _selector_events(events: int) -> int:
    return (_READ if events & _IN else 0) | (_WRITE if events & _OUT else 0)


def _fd_of(fileobj: Any) -> int:
    """The descriptor number of ``fileobj`` (an int, or an object with ``fileno()``)."""
    if isinstance(fileobj, int):
        fd = int(fileobj)
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class Waitable(Protocol):
    """What :meth:`Reactor.wait_until_done` waits on (a ``qmplex.Future`` is one)."""

    def done(self) -> bool:
        """True once there is nothing left to wait for."""

    def _add_wakeup(self, wakeup: Callable[[], object]) -> None:
        """Call ``wakeup()`` (from any thread) as soon as :meth:`done` is True."""

    def _remove_wakeup(self, wakeup: Callable[[], object]) -> None:
        """Forget a ``wakeup`` registered before."""


class Handle:
    """A scheduled callback; :meth:`cancel` prevents it from running."""

    __slots__ = ("_callback", "_args", "_cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        """Prevent the callback from running (no effect once it has run)."""
        self._cancelled = True

    def cancelled(self) -> bool:
        """Return True if :meth:`cancel` was called."""
        return self._cancelled

    def _run(self) -> None:
        try:
            self._callback(*self._args)
        except Exception:
            logger.exception("callback %r raised", self._callback)

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        state = " cancelled" if self._cancelled else ""
        return f"<{type(self).__name__} {self._callback!r}{state}>"


class TimerHandle(Handle):
    """A callback scheduled for a point in time (``reactor.time()`` seconds)."""

    __slots__ = ("when", "_reactor")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        reactor: Reactor,
    ) -> None:
        super().__init__(callback, args)
        self.when = when
        self._reactor: Reactor | None = reactor

    def cancel(self) -> None:
        """Prevent the timer from firing; it is dropped from the heap lazily."""
        if not self._cancelled:
            self._cancelled = True
            reactor = self._reactor
            if reactor is not None:
                self._reactor = None
                reactor._timer_cancelled()

    def __lt__(self, other: TimerHandle) -> bool:
        """Order timers by :attr:`when` (the reactor's timer heap)."""
        return self.when < other.when


class Reactor:
    """A single-threaded event loop for any number of QMP clients.

    Args:
        clock: a monotonic clock returning seconds; tests inject a fake one.
        selector: a ``selectors`` selector to use. By default the reactor polls an
            ``epoll`` object directly where the OS has one (Linux), else it uses
            ``selectors.DefaultSelector()``.
        busy_poll: deprecated and ignored (the reactor no longer busy-polls).

    The reactor can be driven in three ways, and every client method works in each:
    by a thread inside :meth:`run` (callbacks, or a service thread serving API
    threads), by an asyncio loop (``qmplex.aio.attach``), or by ``Future.result()``
    on whichever thread waits (the blocking style of scripts and tests).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        selector: selectors.BaseSelector | None = None,
        busy_poll: float | None = None,
    ) -> None:
        if busy_poll is not None:
            warnings.warn("Reactor(busy_poll=...) is deprecated and ignored: the reactor "
                          "no longer busy-polls", DeprecationWarning, stacklevel=2)
        self._clock = clock
        # fd -> [reader, writer, registration number], whatever the backend.
        self._fds: dict[int, list[Any]] = {}
        self._registrations = 0
        self._maxevents = 1  # len(self._fds), at least 1: what one poll may return
        self._epoll: select.epoll | None = None
        self._selector: selectors.BaseSelector | None = None
        self._poll: Callable[[float | None, int], list[tuple[int, int]]]
        if selector is None and _HAS_EPOLL:
            self._epoll = select.epoll()
            self._poll = self._epoll.poll
        else:
            self._selector = selector if selector is not None else selectors.DefaultSelector()
            self._poll = self._select
        self._ready: collections.deque[Handle] = collections.deque()
        self._timers: list[TimerHandle] = []
        self._cancelled_timers = 0
        self._threadsafe: collections.deque[Handle] = collections.deque()
        self._stopping = False
        self._closed = False
        self._close_requested = False  # close() called inside a pass: done at its end
        self._in_pass = False
        self._in_run = False  # a thread is inside run()
        # The drive: held by the thread running passes (see the module docstring).
        self._drive = threading.Lock()
        self._driver: int | None = None  # its thread id while held
        # Called when the driving thread lets go: threads waiting in wait_until_done
        # while another thread drove, so that one of them can drive next. A deque that
        # is never replaced, so an append racing with a release is never lost.
        self._idle_waiters: collections.deque[Callable[[], object]] = collections.deque()
        self._wakeup_hook: Callable[[], object] | None = None
        self._hook_owner: int | None = None  # the outer loop's thread, when known
        # Called when nothing drives the reactor any more (run() returned, the outer
        # loop detached, the reactor closed): coroutines awaiting its futures.
        self._driver_watchers: set[Callable[[], object]] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._set(self._wake_r.fileno(), 0, self._on_wakeup)

    # ------------------------------------------------------------------ time
    def time(self) -> float:
        """Return the reactor's clock (monotonic seconds); deadlines are based on it."""
        return self._clock()

    @property
    def clock(self) -> Callable[[], float]:
        """The clock itself (what :meth:`time` calls), for code that reads it often."""
        return self._clock

    # ------------------------------------------------------------- scheduling
    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Run ``callback(*args)`` on the reactor's next pass (in the order scheduled).

        Must be called on the reactor thread; other threads use
        :meth:`call_soon_threadsafe` (or :meth:`run_in_reactor`).
        """
        handle = Handle(callback, args)
        self._ready.append(handle)
        if not self._in_pass and self._wakeup_hook is not None:
            self._wakeup_hook()
        return handle

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle."""
        return self.call_at(self._clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` at ``when`` (a ``reactor.time()`` value)."""
        timer = TimerHandle(when, callback, args, self)
        heapq.heappush(self._timers, timer)
        if not self._in_pass and self._wakeup_hook is not None:
            self._wakeup_hook()
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Schedule ``callback(*args)`` from any thread and wake the reactor up.

        The callback runs on the reactor thread, in the order of the calls made by
        each thread. This is the only way in from another thread; everything else
        that is safe from any thread is built on it.

        Raises:
            StateError: the reactor is closed.
        """
        if self._closed:
            raise StateError("reactor is closed")
        handle = Handle(callback, args)
        self._threadsafe.append(handle)  # deque.append is atomic
        # Appended first, checked second; a driver sets _driver before its pass takes
        # the handles: so either that pass sees this one, or we see the driver and wake
        # it. Nobody driving: the next driver takes it at the start of its first pass.
        driver = self._driver
        if driver is not None:
            if driver != _get_ident():
                self._wake()
        elif self._wakeup_hook is not None:
            self._wakeup_hook()  # an outer loop drives between its passes
        return handle

    def run_in_reactor(self, callback: Callable[..., object], *args: Any) -> bool:
        """Run ``callback(*args)`` as reactor-thread code, from any thread.

        On the thread that drives the reactor, or on any thread while nobody drives it
        (this call then takes the drive for its own length), the callback runs at once
        and its exceptions propagate; otherwise it is handed to the driving thread
        (:meth:`call_soon_threadsafe`), which runs it within one pass.

        Returns:
            True if the callback ran now, False if it was handed over.

        Raises:
            StateError: the reactor is closed.
        """
        if self._closed:
            raise StateError("reactor is closed")
        me = _get_ident()
        if self._driver == me:
            callback(*args)
            return True
        if self._drive.acquire(False):
            self._driver = me
            try:
                callback(*args)
            finally:
                self._release()
            return True
        self.call_soon_threadsafe(callback, *args)
        return False

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on the reactor thread and return its outcome.

        Safe from any thread (see :meth:`run_in_reactor` for where it runs). The
        returned ``concurrent.futures.Future`` gets ``fn``'s return value or exception;
        wait on it with ``result(timeout)`` from any thread but the reactor thread.

        Raises:
            StateError: the reactor is closed.
        """
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

        def _call() -> None:
            if not outcome.set_running_or_notify_cancel():
                return
            try:
                outcome.set_result(fn(*args))
            except BaseException as exc:
                outcome.set_exception(exc)

        self.run_in_reactor(_call)
        return outcome

    def set_wakeup_hook(self, hook: Callable[[], object] | None,
                        owner: int | None = None) -> None:
        """Install ``hook()`` (or remove it with None): called whenever work is queued
        on the reactor outside a pass, so that an outer loop driving the reactor
        (``qmplex.aio``) runs a pass soon; also called once when the reactor closes.

        "Work" is a ready callback, a timer, or a :meth:`call_soon_threadsafe` made while
        no pass runs (a client's command is one). The hook runs on the thread that queued
        the work, which may be any thread: it must be cheap and thread-safe. I/O
        readiness needs no hook: it makes the selector's descriptor (:meth:`fileno`)
        readable, which the outer loop watches.

        Args:
            hook: the function, or None to remove it.
            owner: the thread id of the outer loop, when known. While a hook is
                installed, ``Future.result()`` on any other thread waits for the outer
                loop to complete the future instead of driving the reactor itself.
        """
        had = self._wakeup_hook is not None
        self._wakeup_hook = hook
        self._hook_owner = owner if hook is not None else None
        if had and hook is None and not self._in_run:
            self._driver_gone()

    def watch_driver(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` (from any thread) when nothing drives the reactor any more:
        :meth:`run` returned, the outer loop's hook was removed, or the reactor closed.
        Awaiting coroutines use it, so that they fail instead of waiting forever."""
        self._driver_watchers.add(fn)

    def unwatch_driver(self, fn: Callable[[], object]) -> None:
        """Forget a function given to :meth:`watch_driver`."""
        self._driver_watchers.discard(fn)

    def _driver_gone(self) -> None:
        for fn in list(self._driver_watchers):
            try:
                fn()
            except Exception:
                logger.exception("driver watcher %r raised", fn)

    def call_when_idle(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once no thread holds the reactor: at once if none does, else
        from the thread that lets go of it (so it must be cheap and thread-safe)."""
        self._idle_waiters.append(fn)
        # Registered first, checked second; a release lets go first and calls the
        # waiters second: either that release calls fn, or this check sees it idle.
        if self._driver is None:
            try:
                self._idle_waiters.remove(fn)
            except ValueError:
                return  # a release took it: it calls (or called) fn
            fn()

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the reactor will wake up anyway
        except OSError:
            if not self._closed:
                raise

    def _on_wakeup(self) -> None:
        # Drain first, then clear the flag, then take the callbacks. Clearing before
        # draining loses wake-ups: a thread could set the flag and write its byte, the
        # drain eat that byte, and every later caller see the flag set and write
        # nothing, leaving its callback in the deque with the reactor asleep.
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False

    def _run_threadsafe(self) -> None:
        threadsafe = self._threadsafe
        for _ in range(len(threadsafe)):
            handle = threadsafe.popleft()
            if not handle._cancelled:
                handle._run()

    def _take_threadsafe(self) -> None:
        threadsafe = self._threadsafe
        ready = self._ready
        while threadsafe:
            ready.append(threadsafe.popleft())

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        timers = self._timers
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(timers):
            self._timers = [t for t in timers if not t._cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    # -------------------------------------------------------------------- I/O
    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (replaces an earlier reader)."""
        self._set(fd, 0, callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for reading (no error if it was not watched)."""
        self._set(fd, 0, None)

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fd`` is writable (replaces an earlier writer)."""
        self._set(fd, 1, callback)

    def remove_writer(self, fd: int) -> None:
        """Stop watching ``fd`` for writing (no error if it was not watched)."""
        self._set(fd, 1, None)

    def _set(self, fd: int, slot: int, callback: Callable[[], object] | None) -> None:
        if self._closed:
            raise StateError("reactor is closed")
        fd = _fd_of(fd)
        fds = self._fds
        entry = fds.get(fd)
        if entry is None:
            if callback is None:
                return
            # Numbered: a pass does not dispatch the events it polled to an entry made
            # after the poll (a callback closed a descriptor and registered a new one
            # that got the same number).
            self._registrations += 1
            entry = [None, None, self._registrations]
            entry[slot] = callback
            self._os_register(fd, _IN if slot == 0 else _OUT)
            fds[fd] = entry
            self._maxevents = len(fds)
            return
        before = (_IN if entry[0] is not None else 0) | (_OUT if entry[1] is not None else 0)
        # Changed in place: an event already polled for this descriptor in the current
        # pass sees the change (a removed callback is not called).
        entry[slot] = callback
        events = (_IN if entry[0] is not None else 0) | (_OUT if entry[1] is not None else 0)
        if events == 0:
            self._forget(fd)
        elif events != before:
            try:
                self._os_modify(fd, events)
            except BaseException:
                self._forget(fd)  # the OS no longer watches it (as selectors does)
                raise

    def _forget(self, fd: int) -> None:
        fds = self._fds
        del fds[fd]
        self._maxevents = len(fds) or 1
        self._os_unregister(fd)

    def _os_register(self, fd: int, events: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, events)
        else:
            assert self._selector is not None
            self._selector.register(fd, _selector_events(events))

    def _os_modify(self, fd: int, events: int) -> None:
        if self._epoll is not None:
            self._epoll.modify(fd, events)
        else:
            assert self._selector is not None
            self._selector.modify(fd, _selector_events(events))

    def _os_unregister(self, fd: int) -> None:
        try:
            if self._epoll is not None:
                self._epoll.unregister(fd)
            else:
                assert self._selector is not None
                self._selector.unregister(fd)
        except (OSError, KeyError):
            pass  # closed already (the OS dropped it) or dropped by a failed modify

    def _select(self, timeout: float | None, maxevents: int = -1) -> list[tuple[int, int]]:
        """The ``selectors`` backend's poll, in the epoll backend's terms."""
        assert self._selector is not None
        return [
            (key.fd, (_IN if mask & _READ else 0) | (_OUT if mask & _WRITE else 0))
            for key, mask in self._selector.select(timeout)
        ]

    def fileno(self) -> int:
        """The selector's own descriptor (epoll/kqueue), readable when any watched
        descriptor is ready: lets another event loop drive this reactor (``qmplex.aio``).

        Raises:
            StateError: the selector has no descriptor (e.g. ``select``-based).
        """
        if self._epoll is not None:
            return self._epoll.fileno()
        fileno = getattr(self._selector, "fileno", None)
        if fileno is None:
            raise StateError("this reactor's selector has no file descriptor")
        return int(fileno())

    def next_deadline(self) -> float | None:
        """When the reactor next needs to run without I/O: ``reactor.time()`` of the
        earliest timer, ``0.0`` if callbacks are ready now, None if nothing is due."""
        if self._ready or self._threadsafe:
            return 0.0
        timers = self._timers
        while timers and timers[0]._cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        return timers[0].when if timers else None

    def watched_fds(self) -> int:
        """Return how many file descriptors are registered (the wake-up pipe excluded)."""
        return max(len(self._fds) - 1, 0)  # 0 once closed

    def pending_timers(self) -> int:
        """Return how many timers are scheduled and not cancelled."""
        return len(self._timers) - self._cancelled_timers

    def pending_callbacks(self) -> int:
        """Return how many callbacks wait to run (ready, before-wait and from threads)."""
        return len(self._ready) + len(self._threadsafe)

    # ---------------------------------------------------------------- running
    def is_running(self) -> bool:
        """Return True while some thread is driving the reactor."""
        return self._driver is not None

    def has_driver(self) -> bool:
        """Return True while something runs the reactor without being asked: a thread
        inside :meth:`run`, or an outer event loop it is attached to (a wake-up hook
        is installed). Awaiting a future needs one."""
        return self._in_run or self._wakeup_hook is not None

    def in_reactor_thread(self) -> bool:
        """Return True if the calling thread is driving the reactor (inside a callback)."""
        return self._driver == _get_ident()

    def run(self) -> None:
        """Run until :meth:`stop` is called.

        A :meth:`stop` requested before this call (or while the reactor was driven by
        :meth:`run_once`, e.g. inside ``Future.result()``) is kept: this call then runs
        one pass and returns, as asyncio's ``run_forever`` does.

        Raises:
            StateError: another thread is driving the reactor, or it is closed.
        """
        self._enter()
        self._in_run = True
        try:
            while True:
                self._run_once(0 if self._stopping else None)
                if self._stopping or self._close_requested:
                    break
        finally:
            self._in_run = False
            self._stopping = False
            self._release()
            if self._wakeup_hook is None:
                self._driver_gone()

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for I/O at most ``timeout`` seconds (None: until something happens),
        then run the callbacks that are due.

        A pending :meth:`stop` makes this call return without waiting; the stop stays
        pending for the next :meth:`run`.

        Raises:
            StateError: another thread is driving the reactor, or it is closed.
        """
        self._enter()
        try:
            if self._stopping or (timeout is not None and timeout < 0):
                timeout = 0
            self._run_once(timeout)
        finally:
            self._release()

    def stop(self) -> None:
        """Make :meth:`run` return after the current pass. Safe from any thread."""
        if _get_ident() == self._driver:
            self._stopping = True
        else:
            try:
                self.call_soon_threadsafe(self._set_stopping)
            except StateError:
                pass

    def _set_stopping(self) -> None:
        self._stopping = True

    def _enter(self) -> None:
        if self._closed:
            raise StateError("reactor is closed")
        me = _get_ident()
        if not self._drive.acquire(False):
            if self._driver == me:
                raise StateError(
                    "the reactor is already running on this thread: a callback cannot "
                    "run it again (it would re-enter the loop)"
                )
            raise StateError("another thread is driving this reactor")
        self._driver = me

    def _release(self) -> None:
        self._driver = None
        self._drive.release()
        if self._close_requested or self._idle_waiters or self._threadsafe:
            self._after_release()

    def _after_release(self) -> None:
        if self._close_requested:
            self._close_now()
        # Work handed over while this thread drove, which its last pass did not take:
        # with no thread in run() and no outer loop to pick it up, run it now rather
        # than leave it until someone drives again.
        while (self._threadsafe and self._wakeup_hook is None and not self._closed
               and self._drive.acquire(False)):
            self._driver = _get_ident()
            try:
                self._run_threadsafe()
            finally:
                self._driver = None
                self._drive.release()
        # After the release: a thread that registers from now on sees the reactor
        # idle, one that registered before is called here.
        waiters = self._idle_waiters
        while waiters:
            try:
                fn = waiters.popleft()
            except IndexError:  # taken by a concurrent release
                break
            fn()

    # ------------------------------------------------------ waiting for futures
    def wait_until_done(self, waitable: Waitable, timeout: float | None = None) -> None:
        """Block the calling thread until ``waitable.done()`` (``Future.result()``).

        While no thread drives the reactor, the caller drives it (runs passes) until
        then; while another thread drives it, the caller sleeps until ``waitable`` is
        done or that thread lets go (and then drives in turn), so any number of threads
        may wait on futures of one reactor. While an outer loop drives the reactor
        (a wake-up hook is installed), a thread other than the loop's sleeps until the
        loop completes ``waitable`` (or lets go of the reactor).

        Raises:
            WaitTimeout: ``timeout`` seconds passed first (``waitable`` is untouched).
            StateError: called on the reactor thread inside a callback (waiting there
                would stop the loop that must finish ``waitable``), or the reactor is
                closed while ``waitable`` is not done.
        """
        deadline = None if timeout is None else self._clock() + timeout
        me = _get_ident()
        while not waitable.done():
            if self._driver == me:
                raise StateError(
                    "Future.result() called inside a reactor callback: blocking here would "
                    "stop the reactor that must complete this future (deadlock); use "
                    "add_done_callback() or await instead")
            if self._closed:
                raise StateError("reactor is closed")
            owner = self._hook_owner
            outer = self._wakeup_hook is not None and owner is not None and owner != me
            if not outer and self._drive.acquire(False):
                self._driver = me
                try:
                    self._drive_until(waitable, deadline)
                finally:
                    self._release()
                if waitable.done():
                    return
                if self._closed or self._close_requested:
                    raise StateError("reactor is closed")
                raise WaitTimeout(f"still pending after {timeout} s (the future was "
                                  "not cancelled)")
            if not self._sleep_while_driven(waitable, deadline, outer):
                raise WaitTimeout(f"still pending after {timeout} s (the future was "
                                  "not cancelled)")

    def _drive_until(self, waitable: Waitable, deadline: float | None) -> None:
        run_once = self._run_once
        done = waitable.done
        if deadline is None:
            while not done():
                if self._close_requested:
                    return
                run_once(None, done)
        else:
            clock = self._clock
            while not done():
                if self._close_requested:
                    return
                timeout = deadline - clock()
                if timeout <= 0:
                    return
                run_once(timeout, done)

    def _sleep_while_driven(self, waitable: Waitable, deadline: float | None,
                            outer: bool) -> bool:
        """Sleep while someone else drives and ``waitable`` is pending; False if the
        deadline passed. Woken by the completion, by the driving thread letting go
        (unless ``outer``: an outer loop drives, and passes come and go), or by the
        outer loop letting go of the reactor."""
        gate = threading.Lock()
        gate.acquire()
        release = _releaser(gate)
        waitable._add_wakeup(release)
        if outer:
            self._driver_watchers.add(release)
        else:
            self._idle_waiters.append(release)
        try:
            # Registered first, checked second; completion and release set their state
            # first and call the waiters second: a change after this check wakes us.
            if waitable.done():
                return True
            if outer:
                if self._wakeup_hook is None:
                    return True
            elif self._driver is None:
                return True
            if deadline is None:
                gate.acquire()
                return True
            left = deadline - self._clock()
            return left > 0 and gate.acquire(True, left)
        finally:
            waitable._remove_wakeup(release)
            if outer:
                self._driver_watchers.discard(release)
            else:
                try:
                    self._idle_waiters.remove(release)
                except ValueError:
                    pass

    def _run_once(self, timeout: float | None,
                  done: Callable[[], bool] | None = None) -> None:
        """One pass (the caller holds the drive): the hand-overs from other threads,
        then (unless ``done()`` became true meanwhile) a wait for I/O of at most
        ``timeout`` (None: until I/O), the I/O callbacks, the due timers, and the ready
        callbacks that were queued when the ready phase began."""
        self._in_pass = True
        try:
            if self._threadsafe:
                # Hand-overs from other threads (and commands' intakes) run first:
                # also when the wake-up byte is not read yet, or was never written
                # (nobody drove when they were queued).
                self._run_threadsafe()
                if done is not None and done():
                    return  # e.g. a command's send found the peer gone: don't sleep
            ready = self._ready
            timers = self._timers
            if ready or self._threadsafe or self._stopping or self._close_requested:
                timeout = 0  # e.g. a hand-over just run submitted a command, or stop()
            elif timers:
                while timers and timers[0]._cancelled:  # drop cancelled timers at the head
                    heapq.heappop(timers)
                    self._cancelled_timers -= 1
                if timers:
                    delay = timers[0].when - self._clock()
                    if delay < 0:
                        delay = 0
                    if timeout is None or delay < timeout:
                        timeout = delay
            events = self._poll(timeout, self._maxevents)
            if self._threadsafe:
                # Handed over while we slept (what woke us): before the I/O that came
                # with it, so that, e.g., a wait_event registered from another thread
                # sees the events read in this pass.
                self._run_threadsafe()
            if events:
                fds = self._fds
                registrations = self._registrations
                for fd, mask in events:
                    entry = fds.get(fd)
                    # Gone, or registered after the poll (by a callback of this batch).
                    if entry is None or entry[2] > registrations:
                        continue
                    if mask & _NOT_OUT and entry[0] is not None:
                        try:
                            entry[0]()
                        except Exception:
                            logger.exception("reader callback for fd %d raised", fd)
                    if mask & _NOT_IN and entry[1] is not None:
                        try:
                            entry[1]()
                        except Exception:
                            logger.exception("writer callback for fd %d raised", fd)
            # An I/O callback that cancels many timers may have compacted the heap into
            # a new list: pop due timers from the live one, or they would run twice.
            timers = self._timers
            if timers:
                now = self._clock()
                while timers and timers[0].when <= now:
                    timer = heapq.heappop(timers)
                    if timer._cancelled:
                        self._cancelled_timers -= 1
                        continue
                    timer._reactor = None
                    ready.append(timer)
            if ready:
                for _ in range(len(ready)):
                    handle = ready.popleft()
                    if not handle._cancelled:
                        handle._run()
        finally:
            self._in_pass = False

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the reactor: run the callbacks that are due, then release the selector
        and the wake-up pipe.

        Callbacks already scheduled still run (so the futures a client's ``close()``
        just failed reach their callbacks and their ``then``/``chain`` steps); timers
        are dropped. After this, a future completed on this reactor runs its callbacks
        at once on the completing thread. Called inside a callback, the reactor closes
        at the end of the current pass (and ``run()`` returns); called from another
        thread while one drives it, the close is handed to that thread and happens at
        the end of its current pass. Safe to call more than once.
        """
        if self._closed or self._close_requested:
            return
        if self._driver == _get_ident():
            self._close_requested = True
            return
        if not self._drive.acquire(False):
            try:
                self.call_soon_threadsafe(self.close)
            except StateError:
                pass  # closed meanwhile
            return
        self._driver = _get_ident()
        self._close_requested = True
        self._release()

    def _close_now(self) -> None:
        """Finish closing, on release of the drive once close() was asked: run what is
        due (a bounded number of rounds) as reactor-thread code, then release."""
        if self._closed or not self._drive.acquire(False):
            return  # another thread drives now: it closes when it lets go
        self._driver = _get_ident()
        hook: Callable[[], object] | None = None
        try:
            self._timers.clear()
            for _ in range(_CLOSE_ROUNDS):
                self._take_threadsafe()
                ready = self._ready
                if not ready:
                    break
                for _ in range(len(ready)):
                    handle = ready.popleft()
                    if not handle._cancelled:
                        handle._run()
            self._closed = True
            self._ready.clear()
            self._threadsafe.clear()
            self._timers.clear()
            self._fds.clear()
            hook = self._wakeup_hook
            self._wakeup_hook = None
            if self._epoll is not None:
                self._epoll.close()
            else:
                assert self._selector is not None
                self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
        finally:
            self._driver = None
            self._drive.release()
        if self._closed:
            if hook is not None:
                hook()  # an outer loop notices the close and lets go of the reactor
            self._driver_gone()

    def __enter__(self) -> Reactor:
        """Return the reactor; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Call :meth:`close` (exceptions propagate)."""
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has finished."""
        return self._closed


def _releaser(gate: Any) -> Callable[[], None]:
    """A function that releases ``gate`` once, whoever calls it and however often."""

    def release() -> None:
        try:
            gate.release()
        except RuntimeError:  # released already
            pass

    return release
