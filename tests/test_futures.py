"""Future tests: completion, callbacks, cancellation, blocking rules, combinators."""

from __future__ import annotations

import threading
import time

import pytest

from qmplex import Cancelled, Future, Reactor, StateError, Timeout, gather


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_result_and_callbacks_scheduled_not_inline() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        seen: list[int] = []
        f.add_done_callback(lambda fut: seen.append(fut.result()))
        f.set_result(5)
        assert f.done() and not f.cancelled()
        assert seen == []  # scheduled on the reactor, not run inline
        r.run_once(0)
        assert seen == [5]
        f.set_result(6)  # ignored: completes once
        assert f.result() == 5


def test_exception_propagates() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        f.set_exception(KeyError("k"))
        with pytest.raises(KeyError):
            f.result()
        assert isinstance(f.exception(), KeyError)


def test_cancel() -> None:
    with Reactor() as r:
        hooks: list[int] = []
        f: Future[int] = Future(r, on_cancel=lambda: hooks.append(1))
        assert f.cancel()
        assert not f.cancel()
        assert f.cancelled() and hooks == [1]
        with pytest.raises(Cancelled):
            f.result()


def test_result_drives_idle_reactor_until_done() -> None:
    with Reactor() as r:
        f: Future[str] = Future(r)
        r.call_later(0.01, f.set_result, "x")
        assert f.result(timeout=5) == "x"


def test_result_timeout_with_fake_clock_leaves_future_pending() -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        f: Future[str] = Future(r)

        def tick() -> None:
            clock.now += 1.0
            r.call_soon(tick)

        r.call_soon(tick)
        with pytest.raises(Timeout):
            f.result(timeout=3)
        assert not f.done()


def test_result_inside_callback_refuses_with_reason() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        errors: list[BaseException] = []

        def cb() -> None:
            try:
                f.result(timeout=1)
            except StateError as exc:
                errors.append(exc)

        r.call_soon(cb)
        r.run_once(0)
        assert errors and "deadlock" in str(errors[0])


def test_result_from_other_thread_waits_while_reactor_runs() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        got: list[int] = []

        def waiter() -> None:
            got.append(f.result(timeout=10))
            r.stop()

        t = threading.Thread(target=waiter)
        r.call_later(0.05, f.set_result, 7)
        r.call_soon(t.start)
        watchdog = threading.Timer(20, r.stop)
        watchdog.start()
        r.run()
        watchdog.cancel()
        t.join(5)
        assert got == [7]


def test_then_and_chain_and_gather() -> None:
    with Reactor() as r:
        a: Future[int] = Future(r)
        b = a.then(lambda v: v * 2)
        c = a.chain(lambda v: _later(r, v + 1))
        g = gather([a, b, c])
        a.set_result(10)
        assert g.result(timeout=5) == [10, 20, 11]


def _later(r: Reactor, v: int) -> Future[int]:
    f: Future[int] = Future(r)
    r.call_soon(f.set_result, v)
    return f


def test_then_propagates_errors_and_cancellation() -> None:
    with Reactor() as r:
        a: Future[int] = Future(r)
        b = a.then(lambda v: 1 // v)
        a.set_result(0)
        with pytest.raises(ZeroDivisionError):
            b.result(timeout=5)
        x: Future[int] = Future(r)
        y = x.then(lambda v: v)
        y.cancel()
        assert x.cancelled()


def test_gather_fails_fast_and_cancel_cancels_all() -> None:
    with Reactor() as r:
        fs: list[Future[int]] = [Future(r) for _ in range(3)]
        g = gather(fs)
        fs[1].set_exception(ValueError("bad"))
        with pytest.raises(ValueError):
            g.result(timeout=5)
        fs2: list[Future[int]] = [Future(r) for _ in range(3)]
        g2 = gather(fs2)
        g2.cancel()
        assert all(f.cancelled() for f in fs2)
        assert gather([]).result() == []


def test_recover_replaces_a_failure_but_not_a_result_or_cancellation() -> None:
    with Reactor() as r:
        ok: Future[int] = Future(r)
        bad: Future[int] = Future(r)
        gone: Future[int] = Future(r)
        calls: list[BaseException] = []

        def handler(exc: BaseException) -> Future[int]:
            calls.append(exc)
            return _later(r, -1)

        a, b, c = ok.recover(handler), bad.recover(handler), gone.recover(handler)
        ok.set_result(1)
        bad.set_exception(KeyError("k"))
        gone.cancel()
        assert a.result(timeout=5) == 1
        assert b.result(timeout=5) == -1
        with pytest.raises(Cancelled):
            c.result(timeout=5)
        assert [type(e) for e in calls] == [KeyError]


def test_result_returns_after_the_pass_that_completes_it() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        seen: list[str] = []

        def first() -> None:
            seen.append("first")
            r.call_soon(seen.append, "next pass")
            f.set_result(1)

        r.call_soon(first)
        r.call_soon(seen.append, "same pass")  # ready callbacks still run in order
        assert f.result() == 1
        assert seen == ["first", "same pass"]  # no extra pass after the one that did it
        r.run_once(0)
        assert seen == ["first", "same pass", "next pass"]


def test_result_keeps_a_stop_requested_while_it_drives() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        r.call_soon(r.stop)
        r.call_later(0.02, f.set_result, 1)
        assert f.result(timeout=5) == 1  # a stop does not end the wait...
        seen: list[int] = []
        r.call_soon(seen.append, 1)
        r.run()  # ...and is kept: this run makes one pass and returns
        assert seen == [1]


def test_result_timeout_on_an_idle_reactor_leaves_the_future_pending() -> None:
    with Reactor() as r:
        f: Future[int] = Future(r)
        with pytest.raises(Timeout):
            f.result(timeout=0)
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            f.result(timeout=0.05)
        with pytest.raises(Timeout):
            f.exception(timeout=0.01)
        assert time.monotonic() - t0 >= 0.05
        assert not f.done()
        f.set_result(2)
        assert f.result(timeout=0) == 2
        assert f.exception(timeout=0) is None


def test_result_on_a_closed_reactor_raises() -> None:
    r = Reactor()
    f: Future[int] = Future(r)
    r.close()
    with pytest.raises(StateError, match="closed"):
        f.result()
    with pytest.raises(StateError, match="closed"):
        f.result(timeout=1)


def test_driving_for_a_future_done_meanwhile_runs_no_pass() -> None:
    """Another driver may complete the future between the caller's check and its
    entering the reactor: a pass then (with no timeout) could sleep forever."""
    with Reactor() as r:
        f: Future[int] = Future(r)
        f.set_result(1)
        seen: list[int] = []
        r.call_soon(seen.append, 1)
        r.wait_until_done(f)
        assert seen == []
        assert not r.is_running()


def test_waiting_thread_takes_over_when_the_driver_is_done() -> None:
    with Reactor() as r:
        fa: Future[int] = Future(r)
        fb: Future[int] = Future(r)
        drivers: dict[str, int] = {}
        got: list[int] = []

        def complete(f: Future[int], name: str, value: int) -> None:
            drivers[name] = threading.get_ident()
            f.set_result(value)

        t = threading.Thread(target=lambda: got.append(fb.result(timeout=10)))
        r.call_soon(t.start)  # blocks in result() while this thread drives
        r.call_later(0.05, complete, fa, "a", 1)
        r.call_later(0.3, complete, fb, "b", 2)
        assert fa.result(timeout=10) == 1
        t.join(10)
        assert got == [2]
        assert drivers == {"a": threading.get_ident(), "b": t.ident}
