"""Reactor tests: scheduling, timers with a fake clock, I/O dispatch, threads."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from qmplex import Future, Reactor, StateError, WaitTimeout

# The I/O tests run on every backend: epoll polled directly (the default where the OS has
# it), and the selectors fallback (the default elsewhere, e.g. macOS), either with the
# platform's default selector or with poll(2).
BACKENDS: dict[str, Callable[[], Reactor]] = {
    "default": Reactor,
    "selectors": lambda: Reactor(selector=selectors.DefaultSelector()),
}
if hasattr(selectors, "PollSelector"):
    BACKENDS["poll"] = lambda: Reactor(selector=selectors.PollSelector())


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Reactor]:
    with BACKENDS[request.param]() as r:
        yield r


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_call_soon_runs_in_order_and_only_what_was_ready() -> None:
    with Reactor() as r:
        seen: list[str] = []

        def again() -> None:
            seen.append("again")

        def first() -> None:
            seen.append("first")
            r.call_soon(again)  # runs on the next pass, not this one

        r.call_soon(first)
        r.call_soon(seen.append, "second")
        r.run_once(0)
        assert seen == ["first", "second"]
        r.run_once(0)
        assert seen == ["first", "second", "again"]


def test_cancelled_handle_does_not_run() -> None:
    with Reactor() as r:
        seen: list[int] = []
        h = r.call_soon(seen.append, 1)
        h.cancel()
        assert h.cancelled()
        r.run_once(0)
        assert seen == []


def test_timers_fire_in_deadline_order_with_fake_clock() -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        seen: list[str] = []
        r.call_later(2.0, seen.append, "b")
        r.call_later(1.0, seen.append, "a")
        t = r.call_later(1.5, seen.append, "cancelled")
        t.cancel()
        r.run_once(0)
        assert seen == []
        clock.now += 1.0
        r.run_once(0)
        assert seen == ["a"]
        clock.now += 5.0
        r.run_once(0)
        assert seen == ["a", "b"]
        assert r.pending_timers() == 0


def test_mass_timer_cancellation_compacts_heap() -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        timers = [r.call_later(10 + i, lambda: None) for i in range(1000)]
        for t in timers[:900]:
            t.cancel()
        assert r.pending_timers() == 100
        assert len(r._timers) < 1000  # compacted, not kept forever


def test_default_backend_polls_epoll_directly_where_available() -> None:
    with Reactor() as r:
        assert (r._epoll is not None) == hasattr(select, "epoll")
        assert (r._selector is None) == hasattr(select, "epoll")
    with Reactor(selector=selectors.DefaultSelector()) as r:
        assert r._epoll is None and r._selector is not None


def test_reader_and_writer_dispatch(backend: Reactor) -> None:
    a, b = socket.socketpair()
    r = backend
    with a, b:
        got: list[bytes] = []
        r.add_reader(a.fileno(), lambda: got.append(a.recv(100)))
        b.send(b"hello")
        r.run_once(1.0)
        assert got == [b"hello"]
        writable: list[int] = []
        r.add_writer(a.fileno(), lambda: writable.append(1))
        r.run_once(1.0)
        assert writable == [1]
        r.remove_writer(a.fileno())
        r.remove_reader(a.fileno())
        assert r.watched_fds() == 0


def test_callback_exception_is_logged_and_reactor_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Reactor() as r:
        seen: list[int] = []

        def boom() -> None:
            raise RuntimeError("boom")

        r.call_soon(boom)
        r.call_soon(seen.append, 1)
        with caplog.at_level(logging.ERROR, logger="qmplex.reactor"):
            r.run_once(0)
        assert seen == [1]
        assert "boom" in caplog.text


def test_stop_from_callback_and_from_other_thread() -> None:
    with Reactor() as r:
        r.call_soon(r.stop)
        r.run()  # returns
        started = threading.Event()
        r.call_soon(started.set)
        def stopper() -> None:
            started.wait(5)
            r.stop()

        t = threading.Thread(target=stopper)
        t.start()
        r.run()
        t.join(5)
        assert not t.is_alive()


def test_call_soon_threadsafe_from_eight_threads() -> None:
    with Reactor() as r:
        counts: list[int] = []
        n_threads, per_thread = 8, 500
        done = threading.Event()

        def add(i: int) -> None:
            counts.append(i)
            if len(counts) == n_threads * per_thread:
                done.set()
                r.stop()

        def worker() -> None:
            for i in range(per_thread):
                r.call_soon_threadsafe(add, i)

        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for t in threads:
            t.start()
        watchdog = threading.Timer(20, r.stop)
        watchdog.start()
        r.run()
        watchdog.cancel()
        for t in threads:
            t.join(5)
        assert done.is_set()
        assert sorted(counts) == sorted(list(range(per_thread)) * n_threads)


def test_run_inside_callback_is_refused() -> None:
    with Reactor() as r:
        errors: list[BaseException] = []

        def nested() -> None:
            try:
                r.run_once(0)
            except StateError as exc:
                errors.append(exc)

        r.call_soon(nested)
        r.run_once(0)
        assert errors and "already running" in str(errors[0])


def test_closed_reactor_refuses_work() -> None:
    r = Reactor()
    r.close()
    r.close()  # idempotent
    with pytest.raises(StateError):
        r.run_once(0)
    with pytest.raises(StateError):
        r.call_soon_threadsafe(lambda: None)


def test_stop_requested_outside_run_is_kept_for_run() -> None:
    with Reactor() as r:
        seen: list[int] = []
        r.call_soon(r.stop)  # runs inside run_once, not inside run()
        r.run_once(0)
        r.call_soon(seen.append, 1)
        r.run()  # one pass, then returns because of the earlier stop
        assert seen == [1]
        r.call_soon(r.stop)
        r.run()  # the stop was consumed: this run needs its own


def test_reader_and_writer_on_one_fd(backend: Reactor) -> None:
    r = backend
    a, b = socket.socketpair()
    with a, b:
        seen: list[str] = []
        fd = a.fileno()
        r.add_reader(fd, lambda: seen.append("r1"))
        r.add_writer(fd, lambda: seen.append("w"))  # modifies the registration
        assert r.watched_fds() == 1
        b.send(b"x")
        r.run_once(1.0)
        assert seen == ["r1", "w"]  # reader first
        r.add_reader(fd, lambda: seen.append("r2"))  # replaces the reader
        r.remove_writer(fd)
        seen.clear()
        r.run_once(1.0)
        assert seen == ["r2"]
        r.remove_reader(fd)
        r.remove_reader(fd)  # not watched any more: no error
        r.remove_writer(fd)
        assert r.watched_fds() == 0
        seen.clear()
        r.run_once(0)
        assert seen == []
        r.add_writer(fd, lambda: seen.append("w2"))  # a fresh registration, writer only
        r.run_once(1.0)
        assert seen == ["w2"]
        r.remove_writer(fd)
        assert r.watched_fds() == 0


def test_bad_descriptors_are_refused(backend: Reactor) -> None:
    r = backend
    with pytest.raises(ValueError):
        r.add_reader(-1, lambda: None)
    with pytest.raises(ValueError):
        r.add_writer("nope", lambda: None)  # type: ignore[arg-type]
    assert r.watched_fds() == 0
    r.remove_reader(12345)  # never watched: no error
    r.remove_writer(12345)
    with pytest.raises(ValueError):
        r.remove_reader(-1)  # not a descriptor at all


def test_unopened_descriptor_is_refused(backend: Reactor) -> None:
    r = backend
    if isinstance(r._selector, (selectors.SelectSelector, getattr(selectors, "PollSelector", ()))):
        pytest.skip("select() and poll() only report a bad descriptor when polled")
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # a number nothing is open under
    with pytest.raises(OSError):
        r.add_reader(fd, lambda: None)
    assert r.watched_fds() == 0


def test_hang_up_wakes_the_reader(backend: Reactor) -> None:
    r = backend
    a, b = socket.socketpair()
    with a:
        got: list[bytes] = []
        r.add_reader(a.fileno(), lambda: got.append(a.recv(100)))
        b.close()
        r.run_once(1.0)
        assert got == [b""]
        r.remove_reader(a.fileno())


def test_callback_removing_another_descriptor_stops_its_event(backend: Reactor) -> None:
    r = backend
    (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
    with a1, b1, a2, b2:
        seen: list[int] = []

        def reader(mine: socket.socket, other: socket.socket) -> None:
            seen.append(mine.fileno())
            mine.recv(10)
            r.remove_reader(other.fileno())  # whichever runs first silences the other

        r.add_reader(a1.fileno(), lambda: reader(a1, a2))
        r.add_reader(a2.fileno(), lambda: reader(a2, a1))
        b1.send(b"x")
        b2.send(b"x")
        # A socketpair's send delivers at once: both are readable for the same poll.
        assert len(select.select([a1, a2], [], [], 0)[0]) == 2
        r.run_once(1.0)
        assert len(seen) == 1
        r.remove_reader(seen[0])
        assert r.watched_fds() == 0


def test_descriptor_reused_in_one_pass_gets_no_stale_event(backend: Reactor) -> None:
    """A callback closes a descriptor whose event the same pass polled, and registers a
    new socket under the same number: the new reader must not get the old event."""
    r = backend
    (a1, b1), (a2, b2), (c, d) = socket.socketpair(), socket.socketpair(), socket.socketpair()
    with a1, b1, a2, b2, c, d:
        seen: list[str] = []
        socks = {a1.fileno(): a1, a2.fileno(): a2}

        def reader(mine: int, other: int) -> None:
            seen.append(f"old {mine}")
            socks[mine].recv(10)
            if len(seen) > 1:
                return
            r.remove_reader(other)
            os.dup2(c.fileno(), other)  # ``other`` is now a socket with nothing to read
            r.add_reader(other, lambda: seen.append(f"new {other}"))

        f1, f2 = a1.fileno(), a2.fileno()
        r.add_reader(f1, lambda: reader(f1, f2))
        r.add_reader(f2, lambda: reader(f2, f1))
        b1.send(b"x")
        b2.send(b"x")
        assert len(select.select([a1, a2], [], [], 0)[0]) == 2  # both ready for one poll
        r.run_once(1.0)
        assert len(seen) == 1 and seen[0].startswith("old")
        reused = f2 if seen[0] == f"old {f1}" else f1
        d.send(b"y")  # now the new socket is readable: its reader runs
        r.run_once(1.0)
        assert seen[1:] == [f"new {reused}"]
        r.remove_reader(f1)
        r.remove_reader(f2)
        assert r.watched_fds() == 0


def test_fileno_is_readable_when_a_watched_descriptor_is(backend: Reactor) -> None:
    r = backend
    try:
        fd = r.fileno()
    except StateError:  # a selector without a descriptor (select, poll)
        assert r._selector is not None and not hasattr(r._selector, "fileno")
        return
    a, b = socket.socketpair()
    with a, b:
        r.add_reader(a.fileno(), lambda: a.recv(10))
        assert select.select([fd], [], [], 0)[0] == []
        b.send(b"x")
        assert select.select([fd], [], [], 1.0)[0] == [fd]
        r.run_once(0)
        r.remove_reader(a.fileno())


def test_closed_reactor_refuses_io_and_counts_nothing(backend: Reactor) -> None:
    r = backend
    r.close()
    assert r.closed and r.watched_fds() == 0
    with pytest.raises(StateError):
        r.add_reader(0, lambda: None)
    with pytest.raises(StateError):
        r.run()


def _spy_on_poll(r: Reactor) -> list[float | None]:
    """Record the timeout of every poll the reactor makes."""
    timeouts: list[float | None] = []
    poll = r._poll

    def spy(timeout: float | None, maxevents: int) -> list[tuple[int, int]]:
        timeouts.append(timeout)
        return poll(timeout, maxevents)

    r._poll = spy
    return timeouts


def test_run_once_with_negative_timeout_polls(backend: Reactor) -> None:
    r = backend
    timeouts = _spy_on_poll(r)
    r.run_once(-1.0)  # epoll would read a negative timeout as "forever"
    assert timeouts == [0]


def test_timer_shortens_the_poll() -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        timeouts = _spy_on_poll(r)
        seen: list[int] = []
        r.call_later(0.02, seen.append, 1)
        r.run_once(5.0)  # sleeps only until the timer (0.02 s of real time)
        assert timeouts == [pytest.approx(0.02)] and seen == []
        clock.now += 0.02
        r.run_once(5.0)  # due: no sleep at all, and it runs
        assert timeouts[1] == 0 and seen == [1]


@contextlib.contextmanager
def driven_by_another_thread(r: Reactor) -> Iterator[None]:
    """Another thread drives ``r`` (held inside a callback) until the block ends."""
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(10)

    r.call_soon(hold)
    t = threading.Thread(target=r.run_once, args=(0,))
    t.start()
    try:
        assert entered.wait(10)
        yield
    finally:
        release.set()
        t.join(10)


def test_other_threads_are_refused_while_one_drives() -> None:
    with Reactor() as r:
        errors: list[BaseException] = []
        with driven_by_another_thread(r):
            assert r.is_running() and not r.in_reactor_thread()
            attempts: list[Callable[[], None]] = [lambda: r.run_once(0), r.run]
            for attempt in attempts:
                try:
                    attempt()
                except StateError as exc:
                    errors.append(exc)
        assert len(errors) == 2
        assert all("another thread" in str(e) for e in errors)
        assert not r.is_running()
        r.run_once(0)  # idle again: this thread may drive


def test_close_from_another_thread_is_handed_to_the_driver() -> None:
    r = Reactor()
    ran: list[str] = []
    with driven_by_another_thread(r):
        r.call_soon_threadsafe(ran.append, "due")
        r.close()  # handed over: the driving thread closes the reactor
        assert not r.closed
    # That driver left after its one pass: the next one does the hand-over's work.
    r.run_once(0)
    assert r.closed and ran == ["due"]
    with pytest.raises(StateError, match="closed"):
        r.run_once(0)


def test_a_waiting_thread_leaves_nothing_registered() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        waiting = threading.Event()
        outcome: list[BaseException] = []

        def wait() -> None:
            waiting.set()
            try:
                f.result(timeout=0.05)
            except WaitTimeout as exc:
                outcome.append(exc)

        with driven_by_another_thread(r):
            t = threading.Thread(target=wait)
            t.start()
            assert waiting.wait(10)
            t.join(10)
        assert len(outcome) == 1 and not f.done()
        assert not r._idle_waiters and not f._callbacks


