"""The reactor: one selector, a ready queue, a timer heap, and a thread-safe entry.

This layer knows nothing of QMP. It owns:

- the selector: an ``epoll`` object polled directly where the OS has one (no key
  objects built per event), else a ``selectors`` selector; a map from each file
  descriptor to its ``[reader, writer]`` callbacks dispatches an I/O event in one lookup;
- a deque of ready callbacks; each pass runs only the callbacks that were ready when it
  began, so a callback that schedules another cannot starve I/O;
- a heap of timers with lazy cancellation (a cancelled timer stays in the heap until it
  reaches the top, and the heap is compacted once more than half of it is cancelled);
- ``call_soon_threadsafe``: the only entry from other threads, a deque plus a wake-up
  socket pair;
- adaptive busy-polling: while ``Future.result()`` drives the reactor, a pass may poll
  without sleeping for a few tens of microseconds before it sleeps in the selector
  (see :class:`Reactor`'s ``busy_poll``).

Theory of operation: a thread "drives" the reactor while it is inside :meth:`Reactor.run`
or :meth:`Reactor.run_once`. Only one thread drives a reactor at a time (taking the drive
is an atomic test-and-set, never a wait: a thread that finds it taken is refused); any
thread may drive an idle reactor (``Future.result()`` does so, entering once for all the
passes it needs). Callbacks run on the driving thread, one at a time; an exception
escaping a callback is logged through the ``qmplex.reactor`` logger and never stops the
reactor.
"""

from __future__ import annotations

import collections
import heapq
import logging
import math
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StateError
from .futures import _PENDING

if TYPE_CHECKING:
    from .futures import Future

__all__ = ["Reactor", "Handle", "TimerHandle", "DEFAULT_BUSY_POLL"]

logger = logging.getLogger(__name__)

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
_active_threads = threading.active_count
if _HAS_EPOLL:
    assert select.EPOLLIN == _IN and select.EPOLLOUT == _OUT

#: The default longest busy-poll before a pass sleeps, in seconds (see :class:`Reactor`).
DEFAULT_BUSY_POLL = 100e-6
# After the window closes for the k-th time in a row (polling found nothing), the next
# 2**k quick waits leave it shut, up to this many.
_BUSY_BACKOFF_MAX = 1024


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
        return self.when < other.when


class Reactor:
    """A single-threaded event loop for any number of QMP clients.

    Args:
        clock: a monotonic clock returning seconds; tests inject a fake one.
        selector: a ``selectors`` selector to use. By default the reactor polls an
            ``epoll`` object directly where the OS has one (Linux), else it uses
            ``selectors.DefaultSelector()``.
        busy_poll: the longest a thread waiting in ``Future.result()`` polls without
            sleeping before it sleeps in the selector, in seconds (0 turns busy-polling
            off).

    Busy-polling: a thread that sleeps in the selector pays a wake-up when I/O arrives
    (tens of microseconds on a virtual machine, often more than the peer takes to
    answer), so a client doing one command after another would spend most of each
    round trip being woken. So when ``Future.result()`` drives the reactor (the thread
    has nothing else to do but wait for that future), a pass polls the selector
    without sleeping, before it sleeps, for up to a window of time, which adapts to
    what polling finds:

    * shut at first; a wait that ends with I/O within ``busy_poll`` opens it at half
      of ``busy_poll``;
    * I/O caught in the second half of the window doubles it (to ``busy_poll`` at
      most); caught in the first half, it stays;
    * a window that finds nothing is halved, and shut below a quarter of
      ``busy_poll``. Each time it shuts in a row, the quick waits that may open it
      again are skipped for longer (1, 2, 4 ... up to 1024 of them); I/O caught by
      polling resets that.

    So a thread waiting on slow commands or an idle peer never polls, and one doing
    quick round trips spends its waits polling (a CPU busy for at most ``busy_poll``
    per wait) and saves the wake-up. Polling holds the GIL between polls, so it
    happens only while the waiting thread is the process's only Python thread: with
    others (workers driving reactors of their own, a test's fake server, a reactor
    thread serving them) every wait sleeps, as it always did. :meth:`run` and
    :meth:`run_once` never poll either. The window never delays a timer, a
    ``call_soon_threadsafe`` or another connection's I/O: the poll watches all of
    them. :attr:`busy_poll_window` shows the current window.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        selector: selectors.BaseSelector | None = None,
        busy_poll: float = DEFAULT_BUSY_POLL,
    ) -> None:
        if not 0 <= busy_poll < math.inf:
            raise ValueError(f"busy_poll must be a finite number of seconds, 0 or more, "
                             f"not {busy_poll!r}")
        self._clock = clock
        self._busy_max = float(busy_poll)
        self._busy = 0.0  # the current busy-poll window (seconds)
        self._busy_skip = 0  # quick waits left before the window may open again
        self._busy_backoff = 1  # the next _busy_skip, doubled each time the window shuts
        # Busy-poll timing needs real time, whatever clock the timers use.
        self._spin_clock: Callable[[], float] = time.perf_counter
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
        # call_before_wait callbacks: run at the end of the pass that scheduled them,
        # or at the start of the next one when scheduled between passes.
        self._before_wait: list[Callable[[], object]] = []
        self._timers: list[TimerHandle] = []
        self._cancelled_timers = 0
        self._threadsafe: collections.deque[Handle] = collections.deque()
        self._stopping = False
        self._closed = False
        self._driver: int | None = None  # thread id driving the reactor now
        # {0: the driver's thread id} while a thread drives. Taken with setdefault, an
        # atomic test-and-set (no lock: nobody ever waits to drive, a refusal raises).
        self._drive_slot: dict[int, int] = {}
        # Called when the driving thread leaves: threads blocked in Future.result()
        # while another thread drove, so one of them can drive next. A deque that is
        # never replaced, so an append racing with a leave is never lost.
        self._idle_waiters: collections.deque[Callable[[], object]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._set(self._wake_r.fileno(), 0, self._on_wakeup)

    # ------------------------------------------------------------------ time
    def time(self) -> float:
        """Return the reactor's clock (monotonic seconds); deadlines are based on it."""
        return self._clock()

    # ------------------------------------------------------------- scheduling
    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Run ``callback(*args)`` on the reactor's next pass.

        Must be called on the thread driving the reactor (or while no thread drives it);
        other threads use :meth:`call_soon_threadsafe`.
        """
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_before_wait(self, callback: Callable[[], object]) -> None:
        """Run ``callback()`` once, before the reactor next waits for I/O.

        That is at the end of the current pass (after its ready callbacks), or at the
        start of the next one when called between passes: sooner than ``call_soon``,
        and without a wasted poll. Clients flush their send buffers this way, so the
        commands submitted during one pass leave in one ``send`` before the reactor
        sleeps. Same thread rules as :meth:`call_soon`; not cancellable.

        ``callback`` returns True when it may have completed futures (a flush that
        finds the peer gone fails them all): the reactor then polls instead of
        sleeping in that pass, so a ``Future.result()`` waiting on one of them sees
        it at once.
        """
        self._before_wait.append(callback)

    def _run_before_wait(self) -> bool:
        """Run the call_before_wait callbacks; True if one reported (or raised)."""
        callbacks = self._before_wait
        self._before_wait = []
        progress = False
        for callback in callbacks:
            try:
                if callback():
                    progress = True
            except Exception:
                logger.exception("callback %r raised", callback)
                progress = True
        return progress

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle."""
        return self.call_at(self._clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` at ``when`` (a ``reactor.time()`` value)."""
        timer = TimerHandle(when, callback, args, self)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Schedule ``callback(*args)`` from any thread and wake the reactor up.

        This is the only reactor method that may be called from a thread that is not
        driving the reactor.
        """
        if self._closed:
            raise StateError("reactor is closed")
        handle = Handle(callback, args)
        self._threadsafe.append(handle)  # deque.append is atomic
        self._wake()
        return handle

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
        if self._ready or self._threadsafe or self._before_wait:
            return 0.0
        timers = self._timers
        while timers and timers[0]._cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        return timers[0].when if timers else None

    @property
    def busy_poll(self) -> float:
        """The longest busy-poll before a pass sleeps, in seconds (0: never polls)."""
        return self._busy_max

    @property
    def busy_poll_window(self) -> float:
        """The current busy-poll window, in seconds: how long the next pass that would
        sleep polls first (adapted from the waits so far; 0 when polling does not pay)."""
        return self._busy

    def watched_fds(self) -> int:
        """Return how many file descriptors are registered (the wake-up pipe excluded)."""
        return max(len(self._fds) - 1, 0)  # 0 once closed

    def pending_timers(self) -> int:
        """Return how many timers are scheduled and not cancelled."""
        return len(self._timers) - self._cancelled_timers

    # ---------------------------------------------------------------- running
    def is_running(self) -> bool:
        """Return True while some thread is driving the reactor."""
        return bool(self._drive_slot)

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
        try:
            while True:
                self._run_once(None)
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._leave()

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for I/O at most ``timeout`` seconds (None: until something happens),
        then run the callbacks that are due.

        A pending :meth:`stop` makes this call return without waiting; the stop stays
        pending for the next :meth:`run`.
        """
        self._enter()
        try:
            if self._stopping or (timeout is not None and timeout < 0):
                timeout = 0
            self._run_once(timeout)
        finally:
            self._leave()

    def _drive_until(self, future: Future[Any], deadline: float | None) -> bool:
        """Run passes until ``future`` is done, or ``deadline`` (``reactor.time()``) is
        reached: ``Future.result()`` on an idle reactor, entering it only once.

        Each pass is one ``run_once``, so a pending :meth:`stop` makes the passes poll
        without sleeping, and stays pending. Returns False, running nothing, if a
        thread drives the reactor already (another one, or this one: a callback).

        Raises:
            StateError: the reactor is closed.
        """
        if self._closed:
            raise StateError("reactor is closed")
        me = _get_ident()
        if self._drive_slot.setdefault(0, me) is not me or self._driver is not None:
            return False  # see _enter
        try:
            self._driver = me
            run_once = self._run_once
            # future.done(), inlined (a call per check would cost more than a pass's
            # bookkeeping). Checked first once we drive: a thread that drove before may
            # have completed it.
            # busy=True: the passes may busy-poll before they sleep (see Reactor).
            if deadline is None:
                while future._state == _PENDING:
                    run_once(0 if self._stopping else None, True)
            else:
                clock = self._clock
                while future._state == _PENDING:
                    timeout = deadline - clock()
                    if timeout <= 0:
                        break
                    run_once(0 if self._stopping else timeout, True)
        finally:
            # _leave(), inlined.
            self._driver = None
            del self._drive_slot[0]
            if self._idle_waiters:
                self._wake_idle_waiters()
        return True

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
        # setdefault gives back our own int object only if the slot was free: another
        # thread's id is another object, and so is our own id stored by an earlier call
        # (a callback re-entering), unless ids were small cached ints: _driver, set
        # only while a thread drives, settles that case.
        if self._drive_slot.setdefault(0, me) is not me or self._driver is not None:
            if self._driver == me:
                raise StateError(
                    "the reactor is already running on this thread: a callback cannot "
                    "run it again (it would re-enter the loop)"
                )
            raise StateError("another thread is driving this reactor")
        self._driver = me

    def _leave(self) -> None:
        self._driver = None
        del self._drive_slot[0]
        if self._idle_waiters:
            self._wake_idle_waiters()

    def _wake_idle_waiters(self) -> None:
        # After the release: a thread that registers from now on sees the reactor idle
        # (see _notify_when_idle), one that registered before is called here.
        waiters = self._idle_waiters
        while waiters:
            try:
                fn = waiters.popleft()
            except IndexError:  # taken by a concurrent leave
                break
            fn()

    def _notify_when_idle(self, fn: Callable[[], object]) -> bool:
        """Call ``fn()`` (from the driving thread) once it stops driving.

        Returns False, registering nothing, if no thread drives the reactor now. ``fn``
        may also be called spuriously (by a leave that raced with the registration).
        """
        waiters = self._idle_waiters
        waiters.append(fn)
        # Registered first, checked second, and a leave releases first, takes the
        # waiters second: whatever the interleaving, a leave after this check calls
        # ``fn``, or this check sees the reactor idle.
        if self._drive_slot:
            return True
        self._cancel_idle_notify(fn)
        return False

    def _cancel_idle_notify(self, fn: Callable[[], object]) -> None:
        try:
            self._idle_waiters.remove(fn)
        except ValueError:
            pass

    def _run_once(self, timeout: float | None, busy: bool = False) -> None:
        # Scheduled between passes (e.g. a command submitted). One that reports it may
        # have finished what the caller waits for (a flush that finds the peer gone
        # fails every future at once) makes this pass poll, not sleep, or
        # Future.result() would sleep its whole timeout (forever without one). A plain
        # flush does not: a serial round trip then costs one poll, not two.
        before_wait = self._before_wait
        if before_wait:  # _run_before_wait(), inlined: a serial round trip's flush
            self._before_wait = []
            for callback in before_wait:
                try:
                    if callback():
                        timeout = 0
                except Exception:
                    logger.exception("callback %r raised", callback)
                    timeout = 0
        ready = self._ready
        timers = self._timers
        if ready or self._stopping:
            timeout = 0
        elif timers:
            # Drop cancelled timers at the head.
            while timers and timers[0]._cancelled:
                heapq.heappop(timers)
                self._cancelled_timers -= 1
            if timers:
                delay = timers[0].when - self._clock()
                if delay < 0:
                    delay = 0
                if timeout is None or delay < timeout:
                    timeout = delay
        if busy and timeout != 0 and self._busy_max:
            events = self._wait(timeout)
        else:
            events = self._poll(timeout, self._maxevents)
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
        # An I/O callback that cancels many timers may have compacted the heap into a
        # new list: pop due timers from the live one, or they would run twice.
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
        if self._before_wait:
            self._run_before_wait()

    def _wait(self, timeout: float | None) -> list[tuple[int, int]]:
        """Poll the selector for I/O, busy-polling for the current window before it
        sleeps up to ``timeout`` (None: until I/O), and adapt the window (see
        :class:`Reactor`)."""
        poll = self._poll
        maxevents = self._maxevents
        if _active_threads() > 1:
            # Polling holds the GIL: another Python thread (its own reactor, a fake
            # server, a worker) would wait for it. Sleep, and learn nothing.
            return poll(timeout, maxevents)
        spin_clock = self._spin_clock
        busy_max = self._busy_max
        window = self._busy
        start = spin_clock()
        if window:
            limit = window if timeout is None or timeout > window else timeout
            end = start + limit
            while True:
                events = poll(0, maxevents)
                if events:
                    if window < busy_max and spin_clock() - start > window / 2:
                        window *= 2  # caught late: a wider window catches more
                        self._busy = window if window < busy_max else busy_max
                    self._busy_backoff = 1
                    return events
                if spin_clock() >= end:
                    break
            if limit < window:
                return []  # a timer is due within the window: nothing learned
            # The whole window found nothing: narrow it, or shut it for a while.
            window /= 2
            if window < busy_max / 4:
                window = 0.0
                self._busy_skip = self._busy_backoff
                if self._busy_backoff < _BUSY_BACKOFF_MAX:
                    self._busy_backoff *= 2
            self._busy = window
            if timeout is not None:
                timeout -= spin_clock() - start
                if timeout <= 0:
                    return []
            return poll(timeout, maxevents)
        events = poll(timeout, maxevents)
        if events and spin_clock() - start <= busy_max:
            # A quick wait: polling would have caught it.
            if self._busy_skip:
                self._busy_skip -= 1
            else:
                self._busy = busy_max / 2
        return events

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        """Release the selector and the wake-up pipe. The reactor must not be running."""
        if self._closed:
            return
        if self._drive_slot:
            raise StateError("cannot close a running reactor")
        self._closed = True
        self._ready.clear()
        self._before_wait.clear()
        self._timers.clear()
        self._fds.clear()
        if self._epoll is not None:
            self._epoll.close()
        else:
            assert self._selector is not None
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Reactor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed
