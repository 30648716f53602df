"""Client behaviour against a hand-driven peer: order, window, cancellation, timeouts,
events, connection loss and bad input."""

from __future__ import annotations

import array
import logging
import os
import socket
from pathlib import Path

import orjson
import pytest

from qmplex import (
    Cancelled,
    Client,
    ClientState,
    CommandError,
    ConnectError,
    ConnectionLost,
    DecodeError,
    Event,
    EventFilter,
    LineTooLong,
    ProtocolError,
    Reactor,
    StateError,
    Timeout,
    ValidationError,
)

from .peer import GREETING, ScriptedPeer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_commands_keep_submission_order_within_the_window(peer: ScriptedPeer) -> None:
    c = peer.client
    futs = [c.execute("query-status", {"n": i}) for i in range(20)]
    first = peer.read()
    assert [m["arguments"]["n"] for m in first] == list(range(7))  # default window 7
    assert [m["id"] for m in first] == sorted(m["id"] for m in first)
    peer.reply(first[0], "r0")
    more = peer.read()
    assert [m["arguments"]["n"] for m in more] == [7]  # one reply frees one slot
    for m in first[1:] + more:
        peer.reply(m, m["arguments"]["n"])
    rest = peer.read()
    assert [m["arguments"]["n"] for m in rest] == list(range(8, 15))
    for m in rest:
        peer.reply(m, m["arguments"]["n"])
    tail = peer.read()
    for m in tail:
        peer.reply(m, m["arguments"]["n"])
    peer.until(lambda: all(f.done() for f in futs))
    assert [f.result() for f in futs] == ["r0"] + list(range(1, 20))
    assert [m["arguments"]["n"] for m in peer.received if m.get("execute") == "query-status"] \
        == list(range(20))


def test_window_is_configurable(reactor: Reactor) -> None:
    client = Client(reactor, window=64)
    p = ScriptedPeer(reactor, client)
    p.handshake()
    for i in range(100):
        client.execute("x", {"i": i})
    assert len(p.read()) == 64
    client.close()
    p.close()


def test_commands_before_negotiation_are_held(reactor: Reactor) -> None:
    client = Client(reactor)
    p = ScriptedPeer(reactor, client)
    fut = client.execute("query-status")
    p.send({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}})
    msgs = p.read()
    assert [m["execute"] for m in msgs] == ["qmp_capabilities"]
    assert "arguments" not in msgs[0]  # no OOB offered, none asked for
    p.reply(msgs[0], {})
    (cmd,) = p.read()
    assert cmd["execute"] == "query-status"
    p.reply(cmd, {"status": "running"})
    p.until(fut.done)
    assert fut.result() == {"status": "running"}
    assert client.version is not None and client.version.minor == 2
    client.close()
    p.close()


def test_command_error_carries_class_and_desc(peer: ScriptedPeer) -> None:
    fut = peer.client.execute("device_del", {"id": "nope"})
    (cmd,) = peer.read()
    peer.reply(cmd, error=("DeviceNotFound", "Device 'nope' not found"))
    peer.until(fut.done)
    with pytest.raises(CommandError) as info:
        fut.result()
    assert info.value.error_class == "DeviceNotFound"
    assert info.value.desc == "Device 'nope' not found"
    assert info.value.command == "device_del"
    assert info.value.arguments == {"id": "nope"}


def test_cancel_queued_command_is_never_sent(peer: ScriptedPeer) -> None:
    c = peer.client
    futs = [c.execute("x", {"i": i}) for i in range(9)]
    sent = peer.read()
    assert len(sent) == 7
    assert futs[7].cancel()
    for m in sent:
        peer.reply(m)
    (last,) = peer.read()
    assert last["arguments"] == {"i": 8}
    peer.reply(last)
    peer.until(lambda: futs[8].done())
    assert futs[7].cancelled()
    with pytest.raises(Cancelled):
        futs[7].result()


def test_cancel_sent_command_discards_its_reply_and_frees_the_window(
    peer: ScriptedPeer,
) -> None:
    c = peer.client
    a = c.execute("a")
    b = c.execute("b")
    ma, mb = peer.read()
    a.cancel()
    peer.reply(ma, "late")  # discarded
    peer.reply(mb, "b")
    peer.until(b.done)
    assert a.cancelled() and b.result() == "b"
    assert c.pending == 0
    # The window is whole again: 7 new commands all go out.
    for i in range(7):
        c.execute("y", {"i": i})
    assert len(peer.read()) == 7
    for m in peer.received[-7:]:
        peer.reply(m)
    peer.until(lambda: c.pending == 0)


def test_cancel_while_waiting_for_event_ignores_late_event(peer: ScriptedPeer) -> None:
    c = peer.client
    got: list[Event] = []
    c.on_event(got.append, "DEVICE_DELETED")
    fut = c.execute("device_del", {"id": "d1"},
                    until=EventFilter("DEVICE_DELETED", {"device": "d1"}))
    (cmd,) = peer.read()
    peer.reply(cmd)
    peer.pump()
    assert not fut.done()
    fut.cancel()
    peer.event("DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"})
    peer.until(lambda: len(got) == 1)
    assert fut.cancelled()
    assert c.pending == 0


def test_until_event_after_the_return(peer: ScriptedPeer) -> None:
    c = peer.client
    fut = c.execute("device_del", {"id": "d1"},
                    until=EventFilter("DEVICE_DELETED", {"device": "d1"}))
    nxt = c.execute("query-status")
    m1, m2 = peer.read()
    peer.reply(m1)
    peer.reply(m2, {"status": "paused"})
    peer.until(nxt.done)  # the reply freed the queue; the next command completed
    assert not fut.done()
    peer.event("DEVICE_DELETED", {"path": "/machine/peripheral/d1/virtio-backend"})  # child
    peer.event("DEVICE_DELETED", {"device": "d2", "path": "/machine/peripheral/d2"})
    peer.pump()
    assert not fut.done()
    peer.event("DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"})
    peer.until(fut.done)
    ev = fut.result()
    assert isinstance(ev, Event) and ev.data["device"] == "d1"


def test_until_event_before_the_return_still_counts(peer: ScriptedPeer) -> None:
    c = peer.client
    fut = c.execute("stop", until=EventFilter("STOP"))
    (cmd,) = peer.read()
    peer.event("STOP")  # QEMU sends STOP before the return
    peer.pump()
    assert not fut.done()  # not before its reply
    peer.reply(cmd)
    peer.until(fut.done)
    assert fut.result().name == "STOP"


def test_until_with_error_reply_fails_and_unsubscribes(peer: ScriptedPeer) -> None:
    c = peer.client
    fut = c.execute("device_del", {"id": "x"},
                    until=EventFilter("DEVICE_DELETED", {"device": "x"}))
    (cmd,) = peer.read()
    peer.reply(cmd, error=("DeviceNotFound", "Device 'x' not found"))
    peer.until(fut.done)
    assert isinstance(fut.exception(), CommandError)
    assert not c._table.routes().wants("DEVICE_DELETED")


def test_timeouts_in_all_three_stages() -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as reactor:
        client = Client(reactor, window=1)
        p = ScriptedPeer(reactor, client)
        p.handshake()
        sent = client.execute("a", timeout=5)
        queued = client.execute("b", timeout=5)
        waiting_ok = client.execute("c")
        (ma,) = p.read()
        clock.now += 6
        p.pump()
        assert isinstance(sent.exception(), Timeout)
        assert isinstance(queued.exception(), Timeout)
        assert "queued" in str(queued.exception())
        p.reply(ma, "late")  # discarded; frees the window slot
        (mc,) = p.read()
        assert mc["execute"] == "c"  # b was dropped from the queue, never sent
        waiting = client.execute("device_del", {"id": "d"}, timeout=5,
                                 until=EventFilter("DEVICE_DELETED", {"device": "d"}))
        p.reply(mc)
        (md,) = p.read()
        p.reply(md)
        p.pump()
        assert waiting_ok.result() == {}
        assert not waiting.done()
        clock.now += 6
        p.pump()
        assert "waiting for its event" in str(waiting.exception())
        assert client.pending == 0
        assert reactor.pending_timers() == 0
        client.close()
        p.close()


def test_connection_lost_fails_everything_at_once(peer: ScriptedPeer) -> None:
    c = peer.client
    sent = [c.execute("x", {"i": i}) for i in range(7)]
    queued = [c.execute("y", {"i": i}) for i in range(50)]
    waiting = c.wait_event("SHUTDOWN")
    answered = c.execute("device_del", {"id": "d"},
                         until=EventFilter("DEVICE_DELETED", {"device": "d"}))
    msgs = peer.read()
    peer.reply(msgs[0])
    peer.sock.shutdown(socket.SHUT_RDWR)
    lost: list[BaseException | None] = []
    c.on_disconnect(lost.append)
    peer.until(lambda: c.state is ClientState.DISCONNECTED and bool(lost))
    assert sent[0].result() == {}
    for f in sent[1:] + queued + [waiting, answered]:
        assert f.done()
        assert isinstance(f.exception(), ConnectionLost)
    assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
    with pytest.raises(StateError, match="not connected"):
        c.execute("z")


def test_close_fails_pending_and_refuses_new_work(peer: ScriptedPeer) -> None:
    c = peer.client
    futs = [c.execute("x") for _ in range(10)]
    c.close()
    assert all(isinstance(f.exception(), ConnectionLost) for f in futs)
    with pytest.raises(StateError, match="closed"):
        c.execute("x")
    c.close()  # idempotent


def test_non_serialisable_arguments_fail_before_sending(peer: ScriptedPeer) -> None:
    c = peer.client
    with pytest.raises(ValidationError):
        c.execute("x", {"bad": object()})
    with pytest.raises(ValidationError):
        c.execute("x", [1, 2])  # type: ignore[arg-type]
    fut = c.execute("ok")
    (cmd,) = peer.read()
    assert cmd["execute"] == "ok"
    peer.reply(cmd, 1)
    peer.until(fut.done)
    assert fut.result() == 1


def test_garbage_event_is_reported_and_connection_continues(peer: ScriptedPeer) -> None:
    c = peer.client
    errors: list[ProtocolError] = []
    c.on_error(errors.append)
    c.on_event(lambda e: None)  # want every event: lines get decoded
    fut = c.execute("x")
    (cmd,) = peer.read()
    peer.send(b'{"event": "BAD", "data": \x00\x01 garbage\r\n')
    peer.send(b"[1, 2, 3]\r\n")
    peer.reply(cmd, "fine")
    peer.until(fut.done)
    assert fut.result() == "fine"
    assert [type(e) for e in errors] == [DecodeError, DecodeError]
    assert c.state is ClientState.READY


def test_invalid_reply_closes_connection_with_cause(peer: ScriptedPeer) -> None:
    c = peer.client
    fut = c.execute("x")
    peer.read()
    peer.send(b'{"return": {broken\r\n')
    peer.until(fut.done)
    exc = fut.exception()
    assert isinstance(exc, ConnectionLost)
    assert isinstance(exc.__cause__, ConnectionLost)
    assert isinstance(exc.__cause__.__cause__, DecodeError)
    assert c.state is ClientState.DISCONNECTED


def test_line_too_long_closes_only_that_connection(reactor: Reactor) -> None:
    small = Client(reactor, max_line_bytes=1024)
    other = Client(reactor)
    p1, p2 = ScriptedPeer(reactor, small), ScriptedPeer(reactor, other)
    p1.handshake()
    p2.handshake()
    f1 = small.execute("x")
    f2 = other.execute("y")
    p1.read()
    (m2,) = p2.read()
    p1.send(b'{"return": "' + b"a" * 5000)
    p1.until(f1.done)
    assert isinstance(f1.exception().__cause__.__cause__, LineTooLong)  # type: ignore[union-attr]
    p2.reply(m2, "still here")
    p2.until(f2.done)
    assert f2.result() == "still here"
    small.close()
    other.close()
    p1.close()
    p2.close()


def test_raising_event_callback_is_logged_and_others_run(
    peer: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    c = peer.client
    got: list[str] = []

    def bad(e: Event) -> None:
        raise RuntimeError("user bug")

    c.on_event(bad, "RESET")
    c.on_event(lambda e: got.append(e.name), "RESET")
    with caplog.at_level(logging.ERROR):
        peer.event("RESET", {"guest": False})
        peer.until(lambda: got == ["RESET"])
    assert "user bug" in caplog.text


def test_result_inside_callback_raises_state_error(peer: ScriptedPeer) -> None:
    c = peer.client
    errors: list[BaseException] = []

    def cb(e: Event) -> None:
        try:
            c.execute("query-status").result(timeout=1)
        except StateError as exc:
            errors.append(exc)

    c.on_event(cb, "STOP")
    peer.event("STOP")
    peer.until(lambda: bool(errors))
    assert "deadlock" in str(errors[0])
    (cmd,) = peer.read()
    peer.reply(cmd)
    peer.pump()


def test_wait_event_timeout_and_cancel(reactor: Reactor) -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        client = Client(r)
        p = ScriptedPeer(r, client)
        p.handshake()
        w = client.wait_event("RESUME", timeout=3)
        w2 = client.wait_event("RESUME")
        clock.now += 4
        p.pump()
        assert isinstance(w.exception(), Timeout)
        w2.cancel()
        assert not client._table.routes().wants("RESUME")
        w3 = client.wait_event("BLOCK_JOB_COMPLETED", {"device": "j1"})
        p.event("BLOCK_JOB_COMPLETED", {"device": "j0"})
        p.event("BLOCK_JOB_COMPLETED", {"device": "j1", "len": 3})
        p.until(w3.done)
        assert w3.result().data["len"] == 3
        client.close()
        p.close()


def test_fds_travel_with_exactly_their_command(peer: ScriptedPeer) -> None:
    c = peer.client
    r, w = os.pipe()
    try:
        before = c.execute("a")
        fut = c.execute("getfd", {"fdname": "fd0"}, fds=[r])
        after = c.execute("b")
        peer.pump()
        chunks: list[tuple[bytes, list[int]]] = []
        for _ in range(10):
            try:
                data, anc, _flags, _addr = peer.sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            got = array.array("i")
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            chunks.append((data, list(got)))
        with_fds = [(d, f) for d, f in chunks if f]
        assert len(with_fds) == 1
        data, fds = with_fds[0]
        # The descriptor arrives with the end of getfd's line, before b's bytes.
        assert data.endswith(b"\n")
        assert orjson.loads(data.splitlines()[-1])["execute"] == "getfd"
        assert b'"execute":"b"' not in data
        os.write(w, b"ping")
        assert os.read(fds[0], 4) == b"ping"  # a working duplicate of our pipe
        for fd in fds:
            os.close(fd)
        assert not fut.done() and not before.done() and not after.done()
    finally:
        os.close(r)
        os.close(w)


def test_fds_over_tcp_are_refused(reactor: Reactor) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = Client(reactor)
    try:
        client.connect(listener.getsockname())
        with pytest.raises(ValidationError, match="Unix"):
            client.execute("getfd", {"fdname": "x"}, fds=[0])
    finally:
        client.close()
        listener.close()


def test_slow_peer_never_blocks_the_reactor(peer: ScriptedPeer) -> None:
    c = peer.client
    big = "x" * (1 << 20)
    futs = [c.execute("big", {"blob": big}) for _ in range(7)]  # 7 MiB, peer not reading
    peer.pump(20)  # returns: writes are buffered, not blocking
    assert c._conn._writing  # waiting for the socket to become writable
    got = b""
    for _ in range(2000):
        try:
            got += peer.sock.recv(1 << 20)
        except BlockingIOError:
            peer.reactor.run_once(0.001)
        if got.count(b"\n") == 7:
            break
    assert got.count(b"\n") == 7
    c.close()
    assert all(isinstance(f.exception(), ConnectionLost) for f in futs)


def test_connect_errors(reactor: Reactor, tmp_path: Path) -> None:
    client = Client(reactor)
    fut = client.connect(str(tmp_path / "missing.sock"))
    assert isinstance(fut.exception(timeout=5), ConnectError)
    assert client.state is ClientState.DISCONNECTED
    # A peer that accepts but never greets: connect times out.
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    try:
        fut = client.connect(path, timeout=0.2)
        exc = fut.exception(timeout=5)
        assert isinstance(exc, Timeout) and "greeting" in str(exc)
    finally:
        client.close()
        listener.close()


def test_not_a_qmp_greeting(reactor: Reactor) -> None:
    client = Client(reactor)
    p = ScriptedPeer(reactor, client)
    p.send(b"SSH-2.0-OpenSSH_9.2\r\n")
    p.until(p.connect_future.done)
    assert isinstance(p.connect_future.exception(), ProtocolError)
    client.close()
    p.close()


def test_reconnect_keeps_subscriptions(reactor: Reactor, tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    listener.setblocking(False)
    client = Client(reactor)
    got: list[str] = []
    client.on_event(lambda e: got.append(e.name), "RESUME")

    def serve_once() -> socket.socket:
        for _ in range(2000):
            try:
                conn, _ = listener.accept()
                break
            except BlockingIOError:
                reactor.run_once(0.005)
        else:
            raise AssertionError("no connection")
        conn.sendall(b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
                     b'"package": ""}, "capabilities": []}}\r\n')
        buf = b""
        for _ in range(2000):
            reactor.run_once(0.005)
            try:
                buf += conn.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if b"\n" in buf:
                break
        neg = orjson.loads(buf)
        conn.sendall(orjson.dumps({"return": {}, "id": neg["id"]}) + b"\r\n")
        return conn

    try:
        fut = client.connect(path, timeout=5)
        conn = serve_once()
        fut.result(timeout=5)
        conn.close()  # "QEMU restarted"
        for _ in range(2000):
            if client.state is ClientState.DISCONNECTED:
                break
            reactor.run_once(0.005)
        fut2 = client.reconnect(timeout=5)
        conn2 = serve_once()
        fut2.result(timeout=5)
        conn2.sendall(b'{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}\r\n')
        for _ in range(2000):
            if got:
                break
            reactor.run_once(0.005)
        assert got == ["RESUME"]
        conn2.close()
    finally:
        client.close()
        listener.close()


def test_greeting_and_a_fatal_line_in_one_receive_fail_the_connect(reactor: Reactor) -> None:
    """The greeting is followed, in the same receive, by a line that closes the
    protocol: the client must not negotiate on a closed protocol but fail its connect."""
    client = Client(reactor)
    ours, theirs = socket.socketpair()
    try:
        fut = client.connect_socket(theirs, timeout=5)
        ours.sendall(orjson.dumps(GREETING) + b"\r\n" + b'{"return": \x00\n')
        with pytest.raises(ProtocolError):
            fut.result(5)
        assert client.state is ClientState.DISCONNECTED
        assert reactor.watched_fds() == 0
    finally:
        client.close()
        ours.close()
