"""Caller misuse and concurrency: a closed client, close() with work in every stage,
bad arguments (refused before a byte is sent, the stream stays in sync), callbacks that
raise or block, and eight threads entering the reactor at once."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qmplex import (
    Cancelled,
    Client,
    ClientState,
    ConnectionLost,
    Event,
    EventFilter,
    Future,
    ProtocolError,
    Reactor,
    StateError,
    ValidationError,
)

from .helpers import FastPeer, auto_pair, fd_count

N_THREADS = 8


@pytest.fixture
def fpeer() -> Iterator[FastPeer]:
    with Reactor() as r:
        before = fd_count()
        client = Client(r)
        p = FastPeer(r, client)
        p.handshake()
        yield p
        client.close()
        p.close()
        assert r.watched_fds() == 0
        assert fd_count() <= before


def _completions(futs: list[Future[Any]]) -> list[int]:
    counts = [0] * len(futs)

    def one_more(i: int) -> Callable[[Future[Any]], None]:
        return lambda _f: counts.__setitem__(i, counts[i] + 1)

    for i, f in enumerate(futs):
        f.add_done_callback(one_more(i))
    return counts


# ------------------------------------------------------------------ closed clients
def test_execute_and_wait_on_a_never_connected_or_closed_client() -> None:
    with Reactor() as r:
        c = Client(r)
        with pytest.raises(StateError, match="not connected"):
            c.execute("query-status")
        c.close()
        with pytest.raises(StateError, match="closed"):
            c.execute("query-status")
        with pytest.raises(StateError, match="closed"):
            c.wait_event("STOP")
        with pytest.raises(StateError, match="closed"):
            c.connect("/nonexistent")
        c.close()  # idempotent


def test_close_with_work_in_every_stage_completes_each_future_once(fpeer: FastPeer) -> None:
    c = fpeer.client
    sent = [c.execute("s", {"i": i}) for i in range(7)]
    queued = [c.execute("q", {"i": i}) for i in range(30)]
    answered = c.execute("device_del", {"id": "d"},
                         until=EventFilter("DEVICE_DELETED", {"device": "d"}))
    waits = [c.wait_event("RESET") for _ in range(5)]
    msgs = fpeer.read()
    fpeer.reply(msgs[0])  # frees one slot: device_del... still queued behind 'q'
    fpeer.pump()
    everything = sent + queued + [answered] + waits
    counts = _completions(everything)
    c.close()
    fpeer.pump()
    assert sent[0].result(0) == {}
    for f in everything[1:]:
        assert isinstance(f.exception(0), ConnectionLost), f
    assert counts == [1] * len(everything)
    assert c.state is ClientState.CLOSED
    # Late bytes from the peer (if it can still write) change nothing.
    with contextlib.suppress(OSError):
        fpeer.reply(msgs[1])
    fpeer.pump()
    assert counts == [1] * len(everything)


def test_wait_made_while_disconnected_fails_on_close(fpeer: FastPeer) -> None:
    c = fpeer.client
    fpeer.sock.close()
    fpeer.pump()
    assert c.state is ClientState.DISCONNECTED
    w = c.wait_event("RESUME")  # allowed: it may be meant for after a reconnect
    c.close()
    assert isinstance(w.exception(0), ConnectionLost)


def test_close_from_an_event_callback_mid_batch(fpeer: FastPeer) -> None:
    """A callback that closes the client while the same read still holds replies and
    events: the replies that had arrived complete their commands (a batch is parsed
    before any callback runs), the events after the callback are not delivered (a
    closed client delivers nothing more), and the window accounting stays sane."""
    c = fpeer.client
    futs = [c.execute("x", {"i": i}) for i in range(3)]
    msgs = fpeer.read()
    after: list[Event] = []
    c.on_event(lambda e: c.close(), "SHUTDOWN")
    c.on_event(after.append, "LATER")
    fpeer.send(b"".join([
        b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "SHUTDOWN"}\r\n',
        b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "LATER"}\r\n',
        *(b'{"return": {}, "id": %d}\r\n' % m["id"] for m in msgs)]))
    fpeer.pump()
    assert c.state is ClientState.CLOSED
    assert after == []
    assert [f.result(0) for f in futs] == [{}, {}, {}]
    assert c._conn.outstanding == 0 and c.pending == 0


def test_reconnect_from_a_disconnect_callback_is_not_torn_down(fpeer: FastPeer) -> None:
    c = fpeer.client
    r = fpeer.reactor
    peers: list[FastPeer] = []

    def again(reason: BaseException | None) -> None:
        if reason is not None and not peers:
            peers.append(FastPeer(r, c))  # connect_socket from inside the callback

    c.on_disconnect(again)
    fpeer.send(b'{"return": {bro\r\n')  # a fatal line: the connection ends
    fut = c.execute("x")
    fpeer.pump()
    assert isinstance(fut.exception(0), ConnectionLost)
    (p2,) = peers
    p2.handshake()
    nxt = c.execute("y")
    (m,) = p2.read()
    p2.reply(m, "second life")
    p2.pump()
    assert nxt.result(0) == "second life"
    c.close()
    p2.close()


# ---------------------------------------------------------------- bad arguments
class Weird:
    pass


def _deep(n: int) -> Any:
    v: Any = []
    for _ in range(n):
        v = [v]
    return v


_cycle: dict[str, Any] = {}
_cycle["self"] = _cycle

BAD_ARGS: list[tuple[str, Any]] = [
    ("object", {"x": Weird()}),
    ("set", {"x": {1, 2}}),
    ("bytes", {"x": b"raw"}),
    ("int key", {1: "x"}),
    ("tuple key", {("a",): 1}),
    ("huge int", {"x": 2**70}),
    ("lone surrogate", {"x": "\ud800"}),
    ("too deep", {"x": _deep(5000)}),
    ("cycle", _cycle),
    ("not a mapping", [1, 2]),
    ("a string", "query"),
]


@pytest.mark.parametrize(("case", "args"), BAD_ARGS, ids=[b[0] for b in BAD_ARGS])
def test_non_json_arguments_fail_before_anything_is_sent(
    fpeer: FastPeer, case: str, args: Any
) -> None:
    c = fpeer.client
    first = c.execute("before")
    with pytest.raises(ValidationError):
        c.execute("bad", args)
    after = c.execute("after")
    msgs = fpeer.read()
    assert [m["execute"] for m in msgs] == ["before", "after"]
    assert msgs[1]["id"] > msgs[0]["id"]  # ids grow in one thread's submission order
    for m in msgs:
        fpeer.reply(m, m["execute"])
    fpeer.pump()
    assert (first.result(0), after.result(0)) == ("before", "after")
    assert c.pending == 0


def test_unknown_keyword_arguments_are_refused_before_anything(fpeer: FastPeer) -> None:
    c = fpeer.client
    call: Callable[..., Any] = c.execute
    with pytest.raises(TypeError):
        call("query-status", timout=5)
    with pytest.raises(TypeError):
        call("query-status", {}, 5)  # timeout is keyword-only
    with pytest.raises(TypeError):
        c.on_event(lambda e: None, "STOP", None, None)  # type: ignore[call-arg]
    fut = c.execute("ok")
    (m,) = fpeer.read()
    assert m["execute"] == "ok" and len(fpeer.read()) == 0  # nothing else was sent
    fpeer.reply(m, 1)
    fpeer.pump()
    assert fut.result(0) == 1


def test_bad_file_descriptors_are_refused_and_no_duplicate_leaks(fpeer: FastPeer) -> None:
    c = fpeer.client
    r, w = os.pipe()
    try:
        before = fd_count()
        bads: list[list[Any]] = [[r, 99999], [r, -1], [r, "3"]]
        for bad in bads:
            with pytest.raises(ValidationError, match="duplicate"):
                c.execute("getfd", {"fdname": "x"}, fds=bad)
            assert fd_count() == before, bad
        fut = c.execute("ok")
        (m,) = fpeer.read()
        assert m["execute"] == "ok"
        fpeer.reply(m)
        fpeer.pump()
        assert fut.result(0) == {}
    finally:
        os.close(r)
        os.close(w)


def test_oob_without_negotiation_is_refused(reactor: Reactor) -> None:
    c = Client(reactor)
    p = FastPeer(reactor, c)
    p.handshake(caps=())
    with pytest.raises(StateError, match="out-of-band"):
        c.execute("yank", {"instances": []}, oob=True)
    c.close()
    p.close()


# ------------------------------------------------------------ raising callbacks
def test_every_kind_of_raising_callback_is_logged_and_harmless(
    fpeer: FastPeer, caplog: pytest.LogCaptureFixture
) -> None:
    c = fpeer.client
    r = fpeer.reactor
    ran: list[str] = []

    def boom(tag: str) -> Callable[..., None]:
        def cb(*_: Any) -> None:
            ran.append(tag)
            raise RuntimeError(f"user bug in {tag}")
        return cb

    c.on_event(boom("event"), "STOP")
    c.on_event(lambda e: ran.append("event2"), "STOP")
    c.on_event(boom("queued-event"), "STOP", queue=4)
    c.on_event(lambda e: ran.append("unreached"), "STOP",
               predicate=boom("predicate"))  # type: ignore[arg-type]
    c.on_error(boom("error"))
    c.on_error(lambda e: ran.append("error2"))
    fut = c.execute("x")
    fut.add_done_callback(boom("done"))
    fut.add_done_callback(lambda f: ran.append("done2"))
    r.call_soon(boom("call_soon"))
    with caplog.at_level(logging.ERROR):
        (m,) = fpeer.read()
        fpeer.event("STOP")
        fpeer.send(b"[1]\r\n")  # a reported protocol error
        fpeer.reply(m, "fine")
        fpeer.pump()
    assert fut.result(0) == "fine"
    for tag in ("event", "event2", "queued-event", "predicate", "error", "error2", "done",
                "done2", "call_soon"):
        assert tag in ran, tag
    assert "unreached" not in ran
    for tag in ("event", "queued-event", "predicate", "error", "done", "call_soon"):
        assert f"user bug in {tag}" in caplog.text, tag
    assert all(rec.exc_info for rec in caplog.records if "user bug" in rec.getMessage()
               or rec.exc_info)  # logged with the traceback
    # The disconnect callback, too.
    c.on_disconnect(boom("disconnect"))
    c.on_disconnect(lambda reason: ran.append("disconnect2"))
    with caplog.at_level(logging.ERROR):
        fpeer.sock.close()
        fpeer.pump()
    assert "disconnect" in ran and "disconnect2" in ran
    assert "user bug in disconnect" in caplog.text


def test_blocking_calls_inside_callbacks_are_refused(fpeer: FastPeer) -> None:
    c = fpeer.client
    r = fpeer.reactor
    errors: list[tuple[str, BaseException]] = []

    def try_block(where: str) -> None:
        fut = c.execute("inner", {"where": where})
        for attempt in (lambda: fut.result(timeout=1), lambda: fut.exception(1),
                        lambda: r.run_once(0), r.run):
            try:
                attempt()
            except StateError as exc:
                errors.append((where, exc))

    first = c.execute("outer")
    first.add_done_callback(lambda f: try_block("done"))
    c.on_event(lambda e: try_block("event"), "STOP")
    c.on_event(lambda e: try_block("queued"), "STOP", queue=1)
    r.call_soon(try_block, "call_soon")
    (m,) = [x for x in fpeer.read() if x["execute"] == "outer"]
    fpeer.event("STOP")
    fpeer.reply(m)
    fpeer.pump()
    wheres = sorted({w for w, _ in errors})
    assert wheres == ["call_soon", "done", "event", "queued"]
    assert len(errors) == 16
    assert any("deadlock" in str(e) for _, e in errors)
    # Every inner command still goes out and completes: the stream stayed in sync.
    fpeer.read()
    inner = [x for x in fpeer.received if x["execute"] == "inner"]
    assert len(inner) == 4
    for x in inner:
        fpeer.reply(x, x["arguments"]["where"])
    fpeer.pump()
    assert c.pending == 0


def test_cancel_after_done_and_twice(fpeer: FastPeer) -> None:
    c = fpeer.client
    fut = c.execute("x")
    (m,) = fpeer.read()
    fpeer.reply(m, 1)
    fpeer.pump()
    assert not fut.cancel() and fut.result(0) == 1
    g = c.execute("y")
    assert g.cancel() and not g.cancel()
    with pytest.raises(Cancelled):
        g.result(0)
    fpeer.read()


# --------------------------------------------------------------------- threads
def test_call_soon_threadsafe_from_eight_threads_keeps_each_threads_order() -> None:
    per_thread = 5_000
    with Reactor() as r:
        seen: dict[int, list[int]] = {t: [] for t in range(N_THREADS)}
        total = [0]
        start = threading.Barrier(N_THREADS)

        def record(t: int, i: int) -> None:
            seen[t].append(i)
            total[0] += 1
            if total[0] == N_THREADS * per_thread:
                r.stop()

        def worker(t: int) -> None:
            start.wait(10)
            for i in range(per_thread):
                r.call_soon_threadsafe(record, t, i)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
        for th in threads:
            th.start()
        guard = threading.Timer(30, r.stop)
        guard.start()
        try:
            r.run()
        finally:
            guard.cancel()
            for th in threads:
                th.join(10)
        for t in range(N_THREADS):
            assert seen[t] == list(range(per_thread)), t  # exactly once, in order


def test_no_wake_up_is_lost_when_threads_race_the_reactor() -> None:
    """Rounds of eight threads each scheduling one callback at the same instant while
    the reactor sleeps in select(): each round must complete without any timer or
    other I/O to rescue it. (The reactor used to clear its "wake-up pending" flag
    before draining the wake-up socket, so a racing thread's byte could be eaten and
    the flag stay set: every later call_soon_threadsafe was then silently stuck.)"""
    with Reactor() as r:
        for rnd in range(1000):
            got: list[int] = []
            barrier = threading.Barrier(N_THREADS)

            def worker(t: int, got: list[int] = got, barrier: threading.Barrier = barrier
                       ) -> None:
                barrier.wait(10)
                r.call_soon_threadsafe(got.append, t)

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
            for th in threads:
                th.start()
            for _ in range(20):  # at most ~10 s in all if something is lost
                if len(got) == N_THREADS:
                    break
                r.run_once(0.5)
            for th in threads:
                th.join(10)
            assert sorted(got) == list(range(N_THREADS)), f"round {rnd}: {got}"


def test_eight_threads_submit_through_the_entry_and_block_on_results() -> None:
    """The supported threading model: one thread runs the reactor; eight others hand
    commands to it with call_soon_threadsafe and block in Future.result()."""
    per_thread = 200
    with Reactor() as r:
        client = Client(r)
        peer = auto_pair(r, client, respond=lambda m: m["arguments"])
        results: dict[int, list[Any]] = {}
        errors: list[BaseException] = []
        ready = threading.Event()

        def worker(t: int) -> None:
            ready.wait(10)
            box: list[Future[Any]] = []
            got = threading.Event()

            def submit() -> None:
                box.extend(client.execute("echo", {"t": t, "i": i}, timeout=30)
                           for i in range(per_thread))
                got.set()

            try:
                r.call_soon_threadsafe(submit)
                assert got.wait(10)
                results[t] = [f.result(timeout=30) for f in box]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
        for th in threads:
            th.start()

        def stop_when_done() -> None:
            if all(not th.is_alive() for th in threads):
                r.stop()
            else:
                r.call_later(0.01, stop_when_done)

        r.call_soon(ready.set)
        r.call_soon(stop_when_done)
        guard = threading.Timer(60, r.stop)
        guard.start()
        try:
            r.run()
        finally:
            guard.cancel()
            for th in threads:
                th.join(10)
        assert errors == []
        for t in range(N_THREADS):
            assert results[t] == [{"t": t, "i": i} for i in range(per_thread)]
        client.close()
        peer.close()


def test_eight_threads_blocking_on_an_idle_reactor_all_finish() -> None:
    """Nobody runs the reactor: the threads in result() take turns driving it. A
    thread whose future is done stops driving; the others must notice and take over
    (they used to wait out their whole timeout)."""
    per_thread = 100
    for _round in range(3):
        with Reactor() as r:
            client = Client(r)
            peer = auto_pair(r, client)
            while client.state is not ClientState.READY:
                r.run_once(0.01)
            futs = [[client.execute("x", {"t": t, "i": i}) for i in range(per_thread)]
                    for t in range(N_THREADS)]
            errors: list[BaseException] = []
            barrier = threading.Barrier(N_THREADS)

            def worker(fs: list[Future[Any]], errors: list[BaseException] = errors,
                       barrier: threading.Barrier = barrier) -> None:
                barrier.wait(10)
                try:
                    for f in fs:
                        f.result(timeout=20)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(fs,)) for fs in futs]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            assert errors == []
            assert all(f.done() for fs in futs for f in fs)
            client.close()
            peer.close()


def test_protocol_errors_reach_on_error_with_their_type(fpeer: FastPeer) -> None:
    got: list[ProtocolError] = []
    sub = fpeer.client.on_error(got.append)
    fpeer.send(b"42\r\n")
    fpeer.pump()
    sub.cancel()
    fpeer.send(b"43\r\n")
    fpeer.pump()
    assert len(got) == 1 and got[0].excerpt == b"42"
