"""Reactor tests: scheduling, timers with a fake clock, I/O dispatch, threads."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from qmplex import Reactor, StateError


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


def test_reader_and_writer_dispatch() -> None:
    a, b = socket.socketpair()
    with Reactor() as r, a, b:
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
