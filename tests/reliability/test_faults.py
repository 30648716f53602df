"""Peer faults driven through a hand-driven peer and an automatic one: a peer that
stops mid-line, mid-greeting or before it, one that accepts but never reads, one that
shuts a direction of the socket, one that resets; a slow subscriber behind a bounded
queue. Timeouts run on a fake clock: no test sleeps."""

from __future__ import annotations

import logging
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectError,
    ConnectionLost,
    Event,
    Future,
    ProtocolError,
    QMPVersion,
    Reactor,
    StateError,
    Subscription,
    Timeout,
)
from qmplex.testing import FakeQMPServer

from .helpers import GREETING_LINE, AutoPeer, FakeClock, FastPeer, auto_pair, fd_count


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_reactor(clock: FakeClock) -> Iterator[Reactor]:
    with Reactor(clock=clock) as r:
        yield r
        assert r.watched_fds() == 0, "a socket is still registered"


@pytest.fixture
def fpeer(fake_reactor: Reactor) -> Iterator[FastPeer]:
    before = fd_count()
    client = Client(fake_reactor)
    p = FastPeer(fake_reactor, client)
    p.handshake()
    yield p
    client.close()
    p.close()
    assert fd_count() <= before, "file descriptors leaked"


def _ready(reactor: Reactor, client: Client) -> None:
    for _ in range(100):
        if client.state is ClientState.READY:
            return
        reactor.run_once(0)
    raise AssertionError(f"client not ready: {client.state}")


# ------------------------------------------------------------------- stops and stalls
def test_peer_stops_mid_line_command_times_out_and_late_rest_is_discarded(
    fpeer: FastPeer, clock: FakeClock
) -> None:
    c = fpeer.client
    fut = c.execute("query-status", timeout=5)
    nxt = c.execute("query-name", timeout=50)
    m1, m2 = fpeer.read()
    line = b'{"return": {"status": "running"}, "id": %d}\r\n' % m1["id"]
    fpeer.send(line[:17])  # ... and the peer stalls mid-line
    fpeer.pump()
    assert not fut.done()
    clock.advance(5.001)
    fpeer.pump()
    exc = fut.exception(0)
    assert isinstance(exc, Timeout) and "sent, no reply" in str(exc)
    assert c.state is ClientState.READY
    # The peer wakes up: the rest of the line completes a reply nobody wants any more.
    fpeer.send(line[17:])
    fpeer.reply(m2, {"name": "vm"})
    fpeer.pump()
    assert nxt.result(0) == {"name": "vm"}
    assert c.pending == 0
    # The window slot of the timed-out command was given back by its late reply.
    for i in range(7):
        c.execute("x", {"i": i})
    assert len(fpeer.read()) == 7


def test_peer_closes_mid_line_fails_everything(fpeer: FastPeer) -> None:
    c = fpeer.client
    futs = [c.execute("x", {"i": i}) for i in range(20)]
    waits = [c.wait_event("RESET") for _ in range(3)]
    fpeer.read()
    fpeer.send(b'{"return": {}, "i')
    fpeer.sock.close()
    fpeer.pump()
    assert c.state is ClientState.DISCONNECTED
    for f in futs + waits:
        assert isinstance(f.exception(0), ConnectionLost)


def test_peer_stalls_mid_greeting_connect_times_out(
    fake_reactor: Reactor, clock: FakeClock
) -> None:
    client = Client(fake_reactor)
    ours, theirs = socket.socketpair()
    fut = client.connect_socket(theirs, timeout=3)
    queued = client.execute("query-status")  # accepted while connecting
    ours.sendall(GREETING_LINE[:30])
    fake_reactor.run_once(0)
    clock.advance(3.001)
    fake_reactor.run_once(0)
    exc = fut.exception(0)
    assert isinstance(exc, Timeout) and "greeting" in str(exc)
    lost = queued.exception(0)
    assert isinstance(lost, ConnectionLost) and isinstance(lost.__cause__, Timeout)
    assert client.state is ClientState.DISCONNECTED
    client.close()
    ours.close()


def test_peer_never_greets_connect_times_out(fake_reactor: Reactor, clock: FakeClock) -> None:
    client = Client(fake_reactor)
    ours, theirs = socket.socketpair()
    fut = client.connect_socket(theirs, timeout=1)
    for _ in range(3):
        fake_reactor.run_once(0)
    assert not fut.done()
    clock.advance(1.001)
    fake_reactor.run_once(0)
    assert isinstance(fut.exception(0), Timeout)
    assert fake_reactor.pending_timers() == 0
    client.close()
    ours.close()


def test_peer_never_answers_negotiation(fake_reactor: Reactor, clock: FakeClock) -> None:
    client = Client(fake_reactor)
    p = FastPeer(fake_reactor, client)
    p.send(GREETING_LINE)
    (neg,) = p.read()
    assert neg["execute"] == "qmp_capabilities"
    clock.advance(10)
    p.pump()
    assert not p.connect_future.done()  # no timeout was asked for: still waiting
    client.close()
    assert isinstance(p.connect_future.exception(0), ConnectionLost)
    p.close()
    c2 = Client(fake_reactor)
    p2 = FastPeer(fake_reactor, c2)
    p2.connect_future.cancel()  # replace its future by one with a deadline
    assert c2.state is ClientState.DISCONNECTED
    p2.close()
    ours, theirs = socket.socketpair()
    fut = c2.connect_socket(theirs, timeout=2)
    ours.sendall(GREETING_LINE)
    for _ in range(3):
        fake_reactor.run_once(0)
    clock.advance(2.001)
    fake_reactor.run_once(0)
    exc = fut.exception(0)
    assert isinstance(exc, Timeout) and "negotiation" in str(exc)
    c2.close()
    ours.close()


def test_listener_that_never_accepts_times_out(reactor: Reactor, tmp_path: object) -> None:
    """A full listen backlog: connect() keeps retrying (EAGAIN) until its deadline."""
    path = f"{tmp_path}/full.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the backlog (its exact size is the kernel's business)
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            if s.connect_ex(path) != 0:
                s.close()
                break
            fillers.append(s)
        client = Client(reactor)
        fut = client.connect(path, timeout=0.3)
        exc = fut.exception(timeout=5)
        assert isinstance(exc, (Timeout, ConnectError)), exc
        client.close()
        for _ in range(20):  # let a pending retry timer run out
            if reactor.pending_timers() == 0:
                break
            reactor.run_once(0.02)
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_peer_that_never_reads_backs_up_bounded_and_others_keep_going(
    fake_reactor: Reactor, clock: FakeClock
) -> None:
    """A peer that accepts and greets but never reads again: our writes back up, the
    send buffer holds at most the window's commands, each command times out, and a
    second client on the same reactor is served all along."""
    stuck = Client(fake_reactor)
    deaf = FastPeer(fake_reactor, stuck)
    deaf.handshake()
    other = Client(fake_reactor)
    auto = auto_pair(fake_reactor, other)
    _ready(fake_reactor, other)
    blob = "x" * (1 << 20)
    n = 40
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        futs = [stuck.execute("big", {"blob": blob, "i": i}, timeout=10) for i in range(n)]
        for i in range(30):  # the reactor never blocks, and serves the other client
            assert other.execute("query-status", {"i": i}).result(1) == {}
        assert stuck._conn._writing  # waiting for the socket to drain
        buffered = sum(len(seg[0]) for seg in stuck._conn._segments)
        assert 0 < buffered <= stuck.window * (len(blob) + 100)
        clock.advance(10.001)
        fake_reactor.run_once(0)
        outcomes = [str(f.exception(0)) for f in futs]
        assert sum("sent, no reply" in o for o in outcomes) == stuck.window
        assert sum("queued" in o for o in outcomes) == n - stuck.window
        # Timed-out queued commands drop their encoded bytes: what stays is the window.
        held = tracemalloc.get_traced_memory()[0] - base
        assert held < (stuck.window + 2) * (len(blob) + 4096), held
    finally:
        tracemalloc.stop()
    assert other.execute("query-status").result(1) == {}
    stuck.close()
    deaf.close()
    other.close()
    auto.close()


def test_peer_shuts_its_read_side_send_fails_cleanly(
    fpeer: FastPeer, caplog: pytest.LogCaptureFixture
) -> None:
    c = fpeer.client
    fpeer.sock.shutdown(socket.SHUT_RD)
    with caplog.at_level(logging.ERROR):
        futs = [c.execute("x", {"i": i}) for i in range(10)]
        fpeer.pump(10)
    assert c.state is ClientState.DISCONNECTED
    assert all(isinstance(f.exception(0), ConnectionLost) for f in futs)
    assert "send failed" in str(futs[0].exception(0))
    assert "raised" not in caplog.text  # an expected loss, not a crash


def test_connection_reset_by_peer(reactor: Reactor) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = Client(reactor)
    try:
        fut = client.connect(listener.getsockname(), timeout=5)
        conn, _ = listener.accept()
        conn.sendall(GREETING_LINE)
        buf = b""
        while b"\n" not in buf:
            reactor.run_once(0.01)
            conn.settimeout(0.01)
            try:
                buf += conn.recv(4096)
            except TimeoutError:
                pass
        neg = orjson.loads(buf)
        conn.sendall(orjson.dumps({"return": {}, "id": neg["id"]}) + b"\r\n")
        fut.result(5)
        pending = [client.execute("x") for _ in range(5)]
        reactor.run_once(0)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST
        for f in pending:
            assert isinstance(f.exception(5), ConnectionLost)
        assert client.state is ClientState.DISCONNECTED
    finally:
        client.close()
        listener.close()


def test_byte_by_byte_peer_still_frames_everything(fpeer: FastPeer) -> None:
    c = fpeer.client
    got: list[Event] = []
    c.on_event(got.append, "STOP")
    futs = [c.execute("x", {"i": i}) for i in range(5)]
    msgs = fpeer.read()
    stream = b"".join(
        b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "STOP"}\r\n'
        + b'{"return": %d, "id": %d}\r\n' % (m["arguments"]["i"], m["id"])
        for m in msgs)
    for i in range(len(stream)):
        fpeer.send(stream[i:i + 1])
        fake = fpeer.reactor
        fake.run_once(0)
    fpeer.pump()
    assert [f.result(0) for f in futs] == list(range(5))
    assert len(got) == 5


def test_peer_sends_file_descriptors_we_never_asked_for(fpeer: FastPeer) -> None:
    """SCM_RIGHTS from the peer: we read with recv(), so the kernel never installs
    them in our table (nothing to leak)."""
    import os

    r, w = os.pipe()
    try:
        before = fd_count()
        line = b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "X"}\r\n'
        for _ in range(20):
            fpeer.sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         bytes(memoryview(bytearray(r.to_bytes(4, "little")))))])
        fpeer.pump()
        assert fd_count() == before
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------ slow subscriber, queue
def _ticks(peer: FastPeer, numbers: range) -> None:
    peer.send(b"".join(
        b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "TICK", '
        b'"data": {"n": %d}}\r\n' % n for n in numbers))


def test_bounded_queue_delivers_in_order_through_the_reactor(fpeer: FastPeer) -> None:
    c = fpeer.client
    got: list[int] = []
    inline: list[bool] = []
    sub = c.on_event(lambda e: got.append(e.data["n"]), "TICK", queue=10)
    # An inline subscriber runs while the line is processed; the queued one later.
    c.on_event(lambda e: inline.append(sub.backlog > 0), "TICK")
    _ticks(fpeer, range(25))
    fpeer.reactor.run_once(0)  # reads all 25: only the first 10 fit in the backlog
    assert inline[:10] == [True] * 10  # they were queued, not yet delivered
    assert got == []
    fpeer.reactor.run_once(0)
    assert got == list(range(10))  # delivered on the next reactor pass
    assert sub.backlog == 0 and sub.dropped == 15
    _ticks(fpeer, range(99, 100))  # room again
    fpeer.pump()
    assert got[-1] == 99 and sub.dropped == 15


def test_bounded_queue_drains_in_batches_so_commands_keep_flowing(fpeer: FastPeer) -> None:
    from qmplex.events import DRAIN_BATCH

    c = fpeer.client
    got: list[int] = []
    total = DRAIN_BATCH * 8
    sub = c.on_event(lambda e: got.append(e.data["n"]), "TICK", queue=10_000)
    fut = c.execute("query-status")
    (cmd,) = fpeer.read()
    _ticks(fpeer, range(total))
    fpeer.reply(cmd, "ok")
    fpeer.reactor.run_once(0)  # reads everything: the reply completes at once...
    assert fut.done() and fut.result(0) == "ok"
    assert got == []  # ...while the events wait in the backlog
    for k in range(1, 9):
        fpeer.reactor.run_once(0)
        assert len(got) == DRAIN_BATCH * k  # one batch per pass
    assert got == list(range(total)) and sub.dropped == 0 and sub.backlog == 0


def test_bounded_queue_cancel_and_raising_callback(
    fpeer: FastPeer, caplog: pytest.LogCaptureFixture
) -> None:
    c = fpeer.client
    calls: list[int] = []
    subs: list[Subscription] = []

    def bad(e: Event) -> None:
        calls.append(e.data["n"])
        if e.data["n"] == 1:
            raise RuntimeError("subscriber bug")
        if e.data["n"] == 3:
            subs[0].cancel()  # the rest of the backlog is discarded

    subs.append(c.on_event(bad, "TICK", queue=100))
    with caplog.at_level(logging.ERROR):
        _ticks(fpeer, range(6))
        fpeer.pump()
    assert calls == [0, 1, 2, 3] and "subscriber bug" in caplog.text
    assert subs[0].backlog == 0 and subs[0].dropped == 0
    with pytest.raises(ValueError):
        c.on_event(bad, "TICK", queue=0)


def test_bounded_queue_survives_reconnect(fake_reactor: Reactor) -> None:
    client = Client(fake_reactor)
    got: list[int] = []
    sub = client.on_event(lambda e: got.append(e.data["n"]), "TICK", queue=5)
    p1 = FastPeer(fake_reactor, client)
    p1.handshake()
    p1.event("TICK", {"n": 1})
    p1.sock.close()
    p1.pump()
    assert client.state is ClientState.DISCONNECTED and got == [1]
    p2 = FastPeer(fake_reactor, client)
    p2.handshake()
    p2.event("TICK", {"n": 2})
    p2.pump()
    assert got == [1, 2] and sub.dropped == 0
    client.close()
    p2.close()
    with pytest.raises(StateError):
        client.execute("x")


def test_autopeer_helper_closes_cleanly(fake_reactor: Reactor) -> None:
    """The automatic peer used across these suites leaves nothing registered."""
    client = Client(fake_reactor)
    peer: AutoPeer = auto_pair(fake_reactor, client, respond=lambda m: m["arguments"])
    _ready(fake_reactor, client)
    assert client.execute("echo", {"a": 1}).result(1) == {"a": 1}
    client.close()
    fake_reactor.run_once(0)
    assert peer.fd == -1


def test_peer_gone_before_the_flush_fails_result_at_once(reactor: Reactor) -> None:
    """Commands submitted between passes are flushed when the reactor next runs; if the
    peer is gone by then, the flush fails every future, and result() must return at
    once, not sleep its whole timeout (forever without one) first."""
    import time

    client = Client(reactor)
    peer = auto_pair(reactor, client)
    _ready(reactor, client)
    futs = [client.execute("x") for _ in range(10)]
    peer.close()
    start = time.monotonic()
    exc = futs[0].exception(timeout=5)
    assert isinstance(exc, ConnectionLost)
    assert time.monotonic() - start < 1.0
    assert all(f.done() for f in futs)
    client.close()


# ------------------------------------------------ the same faults, FakeQMPServer-driven
def _fake(reactor: Reactor, **switches: Any) -> tuple[FakeQMPServer, Client, Future[QMPVersion]]:
    server = FakeQMPServer(reactor=reactor, **switches)
    client = Client(reactor)
    fut = client.connect_socket(server.connect_pair(), timeout=3)
    return server, client, fut


def test_fake_server_no_greeting_and_slow_greeting(
    fake_reactor: Reactor, clock: FakeClock
) -> None:
    server, client, fut = _fake(fake_reactor, no_greeting=True)
    for _ in range(3):
        fake_reactor.run_once(0)
    clock.advance(3.001)
    fake_reactor.run_once(0)
    assert isinstance(fut.exception(0), Timeout)
    client.close()
    server.close()
    # A greeting slower than the deadline is the same fault.
    server, client, fut = _fake(fake_reactor, greeting_delay=5.0)
    clock.advance(3.001)
    fake_reactor.run_once(0)
    assert isinstance(fut.exception(0), Timeout)
    client.close()
    server.close()
    # One within it is fine.
    server, client, fut = _fake(fake_reactor, greeting_delay=1.0)
    clock.advance(1.001)
    for _ in range(5):
        fake_reactor.run_once(0)
    assert fut.result(0).major == 7
    client.close()
    server.close()


def test_fake_server_closes_after_greeting_and_mid_reply(fake_reactor: Reactor) -> None:
    server, client, fut = _fake(fake_reactor, close_after_greeting=True)
    for _ in range(5):
        fake_reactor.run_once(0)
    assert isinstance(fut.exception(0), ConnectionLost)
    client.close()
    server.close()

    server, client, fut = _fake(fake_reactor)
    _ready(fake_reactor, client)
    server.on("query-status", close_mid_line=True)
    first = client.execute("query-name")
    futs = [client.execute("query-status")] + [client.execute("query-name") for _ in range(5)]
    for _ in range(10):
        fake_reactor.run_once(0)
    assert first.done() and first.exception(0) is None  # answered before the cut
    assert all(isinstance(f.exception(0), ConnectionLost) for f in futs)
    client.close()
    server.close()


def test_fake_server_stalled_then_resumed_keeps_order(fake_reactor: Reactor) -> None:
    server, client, fut = _fake(fake_reactor)
    _ready(fake_reactor, client)
    server.stall(reading=True)
    names = [f"n{i}" for i in range(30)]
    futs = [client.execute("blockdev-add", {"driver": "null-co", "node-name": n})
            for n in names]
    for _ in range(10):
        fake_reactor.run_once(0)
    assert not any(f.done() for f in futs)
    server.resume()
    for _ in range(200):
        if all(f.done() for f in futs):
            break
        fake_reactor.run_once(0)
    assert [f.result(0) for f in futs] == [{}] * 30
    added = [m["arguments"]["node-name"] for m in server.received
             if m.get("execute") == "blockdev-add"]
    assert added == names  # reached the peer in submission order
    client.close()
    server.close()


def test_fake_server_garbage_and_reply_without_id(fake_reactor: Reactor) -> None:
    server, client, fut = _fake(fake_reactor)
    _ready(fake_reactor, client)
    errors: list[ProtocolError] = []
    client.on_error(errors.append)
    server.send_raw(b"\x00\xff garbage\r\n[1, 2]\r\n")
    server.on("query-name", returns={"name": "x"}, reply_without_id=True)
    one = client.execute("query-name")  # alone in flight: the id-less reply is its own
    for _ in range(10):
        fake_reactor.run_once(0)
    assert one.result(0) == {"name": "x"}
    assert [type(e).__name__ for e in errors] == ["DecodeError", "DecodeError"]
    assert client.state is ClientState.READY
    client.close()
    server.close()


def test_fake_server_threaded_drop_and_reconnect_keeps_subscriptions() -> None:
    """The threaded server (real sockets, its own thread): every client dropped with
    work pending, then a reconnect on the same path with subscriptions intact."""
    from qmplex.testing import fake_server

    with fake_server() as server, Reactor() as r:
        client = Client(r)
        got: list[str] = []
        client.on_event(lambda e: got.append(e.name), "RESET")
        client.on_event(lambda e: got.append("q:" + e.name), "RESET", queue=4)
        client.connect(server.path, timeout=5).result(5)
        server.on("query-status", delay=10.0)  # hold the queue
        futs = [client.execute("query-status") for _ in range(20)]
        wait = client.wait_event("SHUTDOWN")
        for _ in range(500):  # our reactor writes them; the server's thread reads
            if len(server.commands()) >= 3:
                break
            r.run_once(0.01)
        server.drop_clients()
        for f in futs + [wait]:
            assert isinstance(f.exception(5), ConnectionLost)
        server.off("query-status")
        client.reconnect(timeout=5).result(5)
        server.emit("RESET", {"guest": False})
        for _ in range(500):
            if len(got) == 2:
                break
            r.run_once(0.01)
        assert sorted(got) == ["RESET", "q:RESET"]
        assert client.execute("query-status").result(5)["status"] == "prelaunch"
        client.close()
