"""The embedding contract of issue 11 (§3 and §5), tested as a user of qmplex would check
it: the one callback rule, callbacks that close or reshape things mid-batch, ``close()``
completing every future, ``on_disconnect``, command ids and stale replies, connection
names in errors and logs, the two kinds of timeout, ``gather(return_exceptions=True)``
and debug logging that changes nothing.

The reconnect policy has its own file (``test_reconnect.py``); QEMU's habit of handing
a previous client's replies to the next one is reproduced against a real QEMU in
``integration/test_reconnect_qemu.py``.

Most tests drive a hand-written peer on a socketpair (``FastPeer``): everything the
peer writes in one ``sendall`` reaches the client in one receive, so "one batch" is
exact. Timeouts run on a fake clock. Nothing sleeps to synchronise.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import qmplex
from qmplex import (
    Cancelled,
    Client,
    ClientState,
    CommandError,
    ConnectError,
    ConnectionLost,
    Event,
    EventFilter,
    Future,
    OperationTimeout,
    ProtocolError,
    Reactor,
    ReconnectPolicy,
    StateError,
    Timeout,
    WaitTimeout,
    gather,
)
from qmplex.testing import FakeQMPServer, fake_server

from .peer import GREETING
from .reliability.helpers import FakeClock, FastPeer, open_fds

NAME = "vm7"

# ------------------------------------------------------------------ helpers


def _line(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\r\n"


def ret(cmd: dict[str, Any], value: Any = None) -> bytes:
    """The reply line of ``cmd`` (a message the peer read)."""
    return _line({"return": {} if value is None else value, "id": cmd["id"]})


def err(cmd: dict[str, Any], cls: str = "GenericError", desc: str = "no") -> bytes:
    return _line({"error": {"class": cls, "desc": desc}, "id": cmd["id"]})


def ev(name: str, **data: Any) -> bytes:
    return _line({"event": name, "data": data,
                  "timestamp": {"seconds": 1, "microseconds": 2}})


def batch(peer: FastPeer, *lines: bytes) -> None:
    """Write ``lines`` in one ``sendall`` and let the client read them: one receive."""
    peer.sock.sendall(b"".join(lines))
    peer.pump()


class Boom(Exception):
    """What the user callbacks of these tests raise."""


def boom(*args: Any) -> None:
    raise Boom(f"user callback bug {args!r}"[:80])


def boom_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The log records of callbacks that raised Boom."""
    return [r for r in caplog.records
            if r.exc_info is not None and isinstance(r.exc_info[1], Boom)]


def drive(reactor: Reactor, cond: Callable[[], bool], passes: int = 2000,
          wait: float = 0.005) -> None:
    """Run reactor passes until ``cond()`` (bounded)."""
    for _ in range(passes):
        if cond():
            return
        reactor.run_once(wait)
    raise AssertionError("condition not reached")


def watch_parsing(client: Client) -> list[bool]:
    """Flag, in the returned one-item list, while the client's protocol parses a
    receive: a callback that sees it True ran inside the parsing loop."""
    proto = client._conn.proto
    assert proto is not None
    flag = [False]
    parse = proto.receive_data

    def receive_data(data: bytes) -> list[Any]:
        flag[0] = True
        try:
            return parse(data)
        finally:
            flag[0] = False

    proto.receive_data = receive_data  # type: ignore[method-assign]
    return flag


def state_of(client: Client) -> ClientState:
    """``client.state``, read afresh (for asserts on a state that changed meanwhile)."""
    return client.state


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_reactor(clock: FakeClock) -> Iterator[Reactor]:
    with Reactor(clock=clock) as r:
        yield r
        assert r.watched_fds() == 0, "a socket is still registered"


@pytest.fixture
def vm7(reactor: Reactor) -> Iterator[FastPeer]:
    """A client named "vm7", connected to a hand-driven peer; no fd may leak."""
    before = len(open_fds())
    p = FastPeer(reactor, Client(reactor, name=NAME))
    p.handshake()
    yield p
    p.client.close()
    p.close()
    assert len(open_fds()) <= before, "file descriptors leaked"


@pytest.fixture
def vm7_clocked(fake_reactor: Reactor) -> Iterator[FastPeer]:
    """As ``vm7``, on a reactor with a fake clock."""
    before = len(open_fds())
    p = FastPeer(fake_reactor, Client(fake_reactor, name=NAME))
    p.handshake()
    yield p
    p.client.close()
    p.close()
    assert len(open_fds()) <= before, "file descriptors leaked"


# =================================================== 1. the one callback rule


def test_callbacks_of_a_batch_run_after_it_was_parsed_in_stream_order(vm7: FastPeer) -> None:
    """One receive carries events and replies interleaved. Every callback (done-callback,
    ``then``, subscription) runs after the whole receive was parsed and handed out, in
    stream order, and sees a consistent state: not inside the parser, both replies'
    futures already done, only the unanswered command left in flight."""
    c = vm7.client
    parsing = watch_parsing(c)
    a, b, later = c.execute("a"), c.execute("b"), c.execute("later")
    ma, mb, _ = vm7.read()
    seen: list[str] = []
    me = threading.get_ident()

    def note(label: str) -> None:
        proto = c._conn.proto
        assert proto is not None
        assert not parsing[0], f"{label} ran inside the parser"
        assert threading.get_ident() == me and c.reactor.in_reactor_thread()
        assert a.done() and b.done() and not later.done()
        assert proto.in_flight == 1  # only "later"
        seen.append(label)

    a.add_done_callback(lambda f: note("a.done"))
    a.then(lambda v: note("a.then"))

    def step(_: Any) -> Future[list[Any]]:
        note("a.chain")
        return gather([])

    a.chain(step)
    b.add_done_callback(lambda f: note("b.done"))
    c.on_event(lambda e: note(f"TICK{e.data['n']}"), "TICK")
    batch(vm7, ev("TICK", n=1), ret(ma), ev("TICK", n=2), ev("TICK", n=3), ret(mb),
          ev("TICK", n=4))
    assert seen == ["TICK1", "a.done", "a.then", "a.chain", "TICK2", "TICK3", "b.done",
                    "TICK4"]
    later.cancel()


@pytest.mark.parametrize("first", ["reply", "event"])
def test_reply_and_event_in_one_receive_keep_their_order(vm7: FastPeer, first: str) -> None:
    c = vm7.client
    f = c.execute("stop")
    (m,) = vm7.read()
    seen: list[str] = []
    f.add_done_callback(lambda _: seen.append("reply"))
    c.on_event(lambda _: seen.append("event"), "STOP")
    lines = [ret(m), ev("STOP")]
    batch(vm7, *(lines if first == "reply" else lines[::-1]))
    assert seen == ([first, "event" if first == "reply" else "reply"])


def test_reply_and_error_callbacks_keep_stream_order_among_themselves(vm7: FastPeer) -> None:
    c = vm7.client
    f = c.execute("a")
    (m,) = vm7.read()
    seen: list[str] = []
    f.add_done_callback(lambda _: seen.append("reply"))
    c.on_error(lambda e: seen.append("error"))
    batch(vm7, ret(m), b"garbage\r\n")
    assert seen == ["reply", "error"]


def test_on_error_keeps_stream_order_with_events(vm7: FastPeer) -> None:
    c = vm7.client
    f, g = c.execute("a"), c.execute("b")
    ma, _ = vm7.read()
    seen: list[str] = []
    c.on_event(lambda e: seen.append(f"TICK{e.data['n']}"), "TICK")
    c.on_error(lambda e: seen.append("error"))
    c.on_disconnect(lambda r: seen.append("disconnect"))
    f.add_done_callback(lambda _: seen.append("a"))
    g.add_done_callback(lambda _: seen.append("b"))
    batch(vm7, ev("TICK", n=1), b"garbage\r\n", ev("TICK", n=2), ret(ma),
          b"garbage\r\n", ev("TICK", n=3), b'{"return": nope}\r\n')  # fatal
    assert seen == ["TICK1", "error", "TICK2", "a", "error", "TICK3", "error", "b",
                    "disconnect"]


def test_every_kind_of_callback_runs_on_the_thread_running_the_reactor() -> None:
    """The reactor runs on a service thread; the test thread submits work. Done-
    callbacks, ``then``/``chain`` functions, gather's callbacks, subscriptions,
    ``on_error``, ``on_disconnect`` and ``on_reconnect`` all run on the service thread."""
    labels = {"done", "then", "chain", "gather", "event", "error", "disconnect",
              "reconnect", "wait_event"}
    seen: dict[str, int] = {}
    all_seen = threading.Event()
    lock = threading.Lock()

    def note(label: str) -> Callable[..., None]:
        def cb(*_: Any) -> None:
            with lock:
                seen.setdefault(label, threading.get_ident())
                if set(seen) == labels:
                    all_seen.set()
        return cb

    with fake_server() as server:
        reactor = Reactor()
        service = threading.Thread(target=reactor.run, name="reactor")
        service.start()
        client = Client(reactor, name=NAME,
                        reconnect=ReconnectPolicy(initial=0.001, jitter=0))
        try:
            client.connect(server.path, timeout=5).result(5)
            client.on_event(note("event"), "TICK")
            client.on_error(note("error"))
            client.on_disconnect(note("disconnect"))
            client.on_reconnect(note("reconnect"))
            f = client.execute("query-status")
            f.add_done_callback(note("done"))
            f.then(note("then"))

            def step(_: Any) -> Future[Any]:
                note("chain")()
                return client.execute("query-name")

            f.chain(step)
            gather([f]).add_done_callback(note("gather"))
            client.wait_event("TICK").add_done_callback(note("wait_event"))
            f.result(5)
            server.emit("TICK")
            server.send_raw(b"this is not JSON\r\n")
            # Everything so far must be in before the drop.
            assert client.execute("query-status").result(5)["status"] == "prelaunch"
            server.drop_clients()
            assert all_seen.wait(5), f"missing: {labels - set(seen)}"
        finally:
            client.close()
            reactor.stop()
            service.join(1)
            if service.is_alive():  # see test_stop_from_another_thread_is_never_lost
                reactor.close()
                service.join(5)
            reactor.close()
    assert not service.is_alive()
    assert set(seen.values()) == {service.ident}


def test_stop_from_another_thread_is_never_lost() -> None:
    """(Found by the test above: its service thread sometimes outlived ``stop()``.)
    A hand-over is running on the reactor thread when another thread calls
    ``stop()``: ``run()`` must still return."""
    reactor = Reactor()
    service = threading.Thread(target=reactor.run, name="reactor")
    service.start()
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        release.wait(5)

    try:
        reactor.call_soon_threadsafe(hold)
        assert inside.wait(5)
        reactor.stop()  # the wake-up byte written for hold() is not drained yet
        release.set()
        service.join(1)
        assert not service.is_alive(), "run() did not return after stop()"
    finally:
        release.set()
        if service.is_alive():
            reactor.close()  # handed over: wakes the reactor, run() returns
            service.join(5)
        reactor.close()


def test_a_raising_callback_of_each_kind_is_logged_and_changes_nothing_else(
        reactor: Reactor, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each kind of user callback raises; the one registered after it on the same
    source still runs, the reactor keeps running, every future completes, each failure
    is one ERROR record of a ``qmplex`` logger, nothing leaks. A ``then``/``chain``
    function that raises fails its own future instead (not logged: it is the outcome)."""
    before = len(open_fds())
    server = FakeQMPServer(str(tmp_path / "qmp.sock"), reactor=reactor).start()
    client = Client(reactor, name=NAME, reconnect=ReconnectPolicy(initial=0, jitter=0))
    after: list[str] = []
    try:
        client.connect(server.path, timeout=5).result(5)
        client.on_event(boom, "TICK")
        client.on_event(lambda e: after.append("event"), "TICK")
        client.on_error(boom)
        client.on_error(lambda e: after.append("error"))
        client.on_disconnect(boom)
        client.on_disconnect(lambda e: after.append("disconnect"))
        client.on_reconnect(boom)
        client.on_reconnect(lambda n, e: after.append("reconnect"))
        with caplog.at_level(logging.ERROR, logger="qmplex"):
            f = client.execute("query-status")
            f.add_done_callback(boom)
            f.add_done_callback(lambda _: after.append("done"))
            then = f.then(boom)
            chained: Future[Any] = f.chain(boom)  # type: ignore[arg-type]
            other = client.execute("query-name")
            assert f.result(5)["status"] == "prelaunch"
            assert other.result(5) == {}
            assert isinstance(then.exception(5), Boom)
            assert isinstance(chained.exception(5), Boom)
            server.emit("TICK")
            server.send_raw(b"garbage\r\n")
            drive(reactor, lambda: {"event", "error"} <= set(after))
            server.drop_clients()
            drive(reactor, lambda: {"disconnect", "reconnect"} <= set(after))
            assert client.execute("query-status").result(5)["status"] == "prelaunch"
        assert sorted(after) == ["disconnect", "done", "error", "event", "reconnect"]
        records = boom_records(caplog)
        assert len(records) == 5, [r.getMessage() for r in records]
        assert all(r.name.startswith("qmplex") and r.levelno == logging.ERROR
                   for r in records)
    finally:
        client.close()
        server.close()
    assert len(open_fds()) <= before


def test_raising_callbacks_after_the_reactor_closed_strand_nothing_and_leak_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """The old ``Future._finish`` bug: once the reactor was closed, a done-callback ran
    inline and unguarded, so ``client.close()`` aborted half-way through
    ``Client._lost``: the second pending future was never completed and the socket
    stayed open while the state said CLOSED. Now: every future fails with
    ConnectionLost, every callback runs (guarded, logged), the socket is closed."""
    before = open_fds()
    reactor = Reactor()
    client = Client(reactor, name=NAME)
    peer = FastPeer(reactor, client)
    peer.handshake()
    first, second = client.execute("a"), client.execute("b")
    wait = client.wait_event("SHUTDOWN")
    chained = first.then(lambda v: v)
    assert len(peer.read()) == 2  # both written: in flight
    first.add_done_callback(boom)
    second.add_done_callback(boom)
    wait.add_done_callback(boom)
    ran: list[str] = []
    second.add_done_callback(lambda _: ran.append("second"))
    client.on_disconnect(boom)
    client.on_disconnect(lambda reason: ran.append(f"disconnect:{reason}"))
    fd = client.fileno()
    reactor.close()
    with caplog.at_level(logging.ERROR, logger="qmplex"):
        client.close()
        # A callback added to a done future once the reactor is closed: inline, guarded.
        second.add_done_callback(boom)
    for f in (first, second, wait, chained):
        assert isinstance(f.exception(0), ConnectionLost), f
    assert client.state is ClientState.CLOSED
    assert client.fileno() == -1 and not is_open(fd)
    assert peer.sock.recv(100) == b""  # the peer sees the close
    assert ran == ["second", "disconnect:None"]
    assert len(boom_records(caplog)) == 5  # 3 done-callbacks, on_disconnect, the late one
    peer.close()
    assert open_fds() <= before


def test_a_raising_callback_on_an_owned_reactor_closed_by_close() -> None:
    """``Client()`` owns its reactor: ``close()`` fails the futures, runs their
    callbacks (one raises) while closing the reactor, and still completes the rest."""
    before = open_fds()
    with fake_server() as server:
        client = qmplex.connect(server.path, timeout=5, name=NAME)
        server.on("slow", never=True)
        f, g = client.execute("slow"), client.execute("slow")
        f.add_done_callback(boom)
        h = g.then(lambda v: v)
        client.close()
        assert client.reactor.closed
        for x in (f, g, h):
            assert isinstance(x.exception(1), ConnectionLost)
    assert open_fds() <= before


# ============================================ 2. callbacks that change things


def test_a_done_callback_that_closes_its_client_mid_batch(vm7: FastPeer) -> None:
    """Observed: the replies that came in the same receive still complete their
    commands (they were matched before any callback ran), the events of that receive
    are not delivered once the client is closed (a closed client delivers no events,
    also those queued before the close), commands without a reply fail with
    ConnectionLost, ``on_disconnect`` fires once with None, and the callbacks already
    scheduled for the other replies still run."""
    c = vm7.client
    a, b, unanswered = c.execute("a"), c.execute("b"), c.execute("c")
    ma, mb, _ = vm7.read()
    events: list[int] = []
    c.on_event(lambda e: events.append(e.data["n"]), "TICK")
    lost: list[BaseException | None] = []
    c.on_disconnect(lost.append)
    ran: list[str] = []

    def close_it(_: Future[Any]) -> None:
        ran.append("a")
        c.close()

    a.add_done_callback(close_it)
    b.add_done_callback(lambda _: ran.append("b"))
    unanswered.add_done_callback(lambda _: ran.append("c"))
    batch(vm7, ret(ma, 1), ev("TICK", n=1), ret(mb, 2), ev("TICK", n=2))
    assert (a.result(0), b.result(0)) == (1, 2)
    assert isinstance(unanswered.exception(0), ConnectionLost)
    assert events == []
    assert lost == [None]
    assert ran == ["a", "b", "c"]
    assert c.state is ClientState.CLOSED and c.fileno() == -1


def test_an_event_callback_that_closes_its_client_stops_later_events(vm7: FastPeer) -> None:
    """Observed: events before the closing one were delivered; the event being
    dispatched when its callback closes the client still reaches its other
    subscribers; later events of the batch are not delivered; a reply after them
    (matched while parsing, before any callback ran) still completes its command."""
    c = vm7.client
    f = c.execute("a")
    (m,) = vm7.read()
    got: list[tuple[str, int]] = []

    def first(e: Event) -> None:
        got.append(("first", e.data["n"]))
        if e.data["n"] == 2:
            c.close()

    c.on_event(first, "TICK")
    c.on_event(lambda e: got.append(("second", e.data["n"])), "TICK")
    batch(vm7, ev("TICK", n=1), ev("TICK", n=2), ev("TICK", n=3), ret(m, "late"),
          ev("TICK", n=4))
    assert got == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]
    assert f.result(0) == "late"


def test_a_subscriber_cancelling_subscriptions_mid_batch(vm7: FastPeer) -> None:
    """Observed: a subscription cancelled by a callback gets no later event of the same
    run, including the rest of the event being dispatched; one that cancels itself gets
    nothing more; the others go on."""
    c = vm7.client
    got: list[tuple[str, int]] = []
    subs: dict[str, qmplex.Subscription] = {}

    def canceller(e: Event) -> None:
        got.append(("canceller", e.data["n"]))
        if e.data["n"] == 2:
            subs["victim"].cancel()
            subs["canceller"].cancel()

    subs["canceller"] = c.on_event(canceller, "TICK")
    subs["victim"] = c.on_event(lambda e: got.append(("victim", e.data["n"])), "TICK")
    subs["other"] = c.on_event(lambda e: got.append(("other", e.data["n"])))
    batch(vm7, ev("TICK", n=1), ev("TICK", n=2), ev("TICK", n=3))
    assert got == [("canceller", 1), ("victim", 1), ("other", 1),
                   ("canceller", 2), ("other", 2), ("other", 3)]
    assert not subs["victim"].active and not subs["canceller"].active


def test_a_callback_submitting_and_cancelling_commands_mid_batch(vm7: FastPeer) -> None:
    """A done-callback submits two commands and cancels a third, in flight; another
    reply and an event of the same receive are handled as if nothing happened. The new
    commands are written after the batch, in order, with fresh ids, and complete with
    their own replies; the cancelled one's late reply is discarded (not stale, not an
    error)."""
    c = vm7.client
    errors: list[ProtocolError] = []
    c.on_error(errors.append)
    a, b, victim = c.execute("a"), c.execute("b"), c.execute("victim")
    ma, mb, mv = vm7.read()
    new: list[Future[Any]] = []

    def react(_: Future[Any]) -> None:
        new.append(c.execute("x"))
        new.append(c.execute("y"))
        assert victim.cancel()

    a.add_done_callback(react)
    events: list[str] = []
    c.on_event(lambda e: events.append(e.name), "TICK")
    batch(vm7, ret(ma), ev("TICK"), ret(mb, "b"))
    assert b.result(0) == "b" and events == ["TICK"]
    assert victim.cancelled()
    mx, my = vm7.read()
    assert (mx["execute"], my["execute"]) == ("x", "y")
    ids = {ma["id"], mb["id"], mv["id"], mx["id"], my["id"]}
    assert len(ids) == 5
    batch(vm7, ret(mv, "too late"), ret(my, "y"), ret(mx, "x"))
    assert [f.result(0) for f in new] == ["x", "y"]
    assert c.stale_replies == 0 and errors == [] and c.pending == 0


def test_a_callback_that_closes_the_shared_reactor_mid_batch() -> None:
    """Observed: ``reactor.close()`` inside a callback closes the reactor at the end of
    the pass, after the callbacks already due (the rest of the batch: other replies'
    callbacks, events) have run. The client is still READY on a closed reactor; its
    ``close()`` then fails what is left with ConnectionLost and releases the socket."""
    before = open_fds()
    reactor = Reactor()
    c = Client(reactor, name=NAME)
    peer = FastPeer(reactor, c)
    peer.handshake()
    a, b, pending = c.execute("a"), c.execute("b"), c.execute("c")
    ma, mb, _ = peer.read()
    seen: list[str] = []

    def close_reactor(_: Future[Any]) -> None:
        seen.append("a")
        reactor.close()

    a.add_done_callback(close_reactor)
    b.add_done_callback(lambda _: seen.append("b"))
    c.on_event(lambda e: seen.append("event"), "TICK")
    peer.sock.sendall(ret(ma) + ev("TICK") + ret(mb))
    drive(reactor, lambda: reactor.closed or bool(seen), wait=0.01)
    assert reactor.closed
    assert seen == ["a", "event", "b"]
    assert state_of(c) is ClientState.READY and not pending.done()
    c.close()
    assert isinstance(pending.exception(0), ConnectionLost)
    assert state_of(c) is ClientState.CLOSED and c.fileno() == -1
    peer.close()
    assert open_fds() <= before


def test_cancelling_a_future_whose_reply_is_in_the_same_batch_is_too_late(
        vm7: FastPeer) -> None:
    c = vm7.client
    a, b = c.execute("a"), c.execute("b")
    ma, mb = vm7.read()
    outcome: list[bool] = []
    a.add_done_callback(lambda _: outcome.append(b.cancel()))
    batch(vm7, ret(ma), ret(mb, "kept"))
    assert outcome == [False] and b.result(0) == "kept"


# ========================================== 3. close() completes every future


def test_close_on_an_owned_reactor_fails_typed_and_chained_futures_with_connection_lost(
) -> None:
    """``qmplex.connect(path)`` owns its reactor; after ``close()`` every future it
    handed out is done and raises ConnectionLost: plain, typed (``vm.query_status``,
    ``devices.device_del``), ``then`` and ``chain`` ones, event waits."""
    with fake_server(unplug_delay=None) as server:
        c = qmplex.connect(server.path, timeout=5, name=NAME)
        futures: list[Future[Any]] = [
            c.vm.query_status(),
            c.execute("query-status"),
            c.devices.device_del("d0"),
            c.execute("query-status").then(lambda v: v["status"]),
            c.execute("query-status").chain(lambda _: c.execute("query-name")),
            c.wait_event("SHUTDOWN"),
        ]
        c.close()
        assert c.reactor.closed
        for f in futures:
            with pytest.raises(ConnectionLost, match=NAME):
                f.result(1)


def test_close_fails_the_later_step_of_a_chain_in_flight() -> None:
    """``execute(a).chain(lambda _: execute(b))``: ``a`` answered, ``b`` sent and
    never answered; ``close()`` fails the chain's future with ConnectionLost."""
    with fake_server() as server:
        server.on("slow", never=True)
        c = qmplex.connect(server.path, timeout=5, name=NAME)
        first = c.execute("query-status")
        second: list[Future[Any]] = []

        def then_slow(_: Any) -> Future[Any]:
            second.append(c.execute("slow"))
            return second[0]

        out = first.chain(then_slow)
        first.result(5)
        # Submitted after "slow": its reply proves "slow" was written.
        c.execute("query-name").result(5)
        assert server.commands()[-2:] == ["slow", "query-name"]
        assert not out.done()
        c.close()
        with pytest.raises(ConnectionLost, match=NAME):
            out.result(1)
        assert isinstance(second[0].exception(0), ConnectionLost)


def test_a_chain_step_that_starts_after_close_fails_with_state_error(vm7: FastPeer) -> None:
    """Observed (documented here, not a ConnectionLost): ``a`` is answered in the same
    receive as ``x``, whose callback closes the client. ``a``'s chain step runs after
    the close; its ``execute`` raises StateError ("the client is closed"), which fails
    the chain's future. It is done, and names the client."""
    c = vm7.client
    x, a = c.execute("x"), c.execute("a")
    mx, ma = vm7.read()
    x.add_done_callback(lambda _: c.close())
    out = a.chain(lambda _: c.execute("b"))
    typed = a.then(lambda _: c.vm.query_status())
    batch(vm7, ret(mx), ret(ma))
    with pytest.raises(StateError, match=f"{NAME}: b: the client is closed"):
        out.result(0)
    with pytest.raises(StateError, match=f"{NAME}: query-status: the client is closed"):
        typed.result(0)


def test_close_from_a_callback_on_an_owned_reactor_completes_everything() -> None:
    """A done-callback closes a client that owns its reactor: the typed and plain
    futures still unanswered fail with ConnectionLost, the reactor closes at the end
    of the pass, and the ``result()`` that was driving it returns."""
    with fake_server() as server:
        server.on("slow", never=True)
        server.on("query-status", never=True)
        c = qmplex.connect(server.path, timeout=5, name=NAME)
        slow = [c.vm.query_status() for _ in range(3)] + [c.execute("slow")]
        trigger = c.execute("query-name")
        trigger.add_done_callback(lambda _: c.close())
        trigger.result(5)
        for f in slow:
            with pytest.raises(ConnectionLost):
                f.result(1)
        assert c.reactor.closed


# ================================================== 4. on_disconnect


def test_on_disconnect_fires_once_with_the_reason_when_the_peer_goes(vm7: FastPeer) -> None:
    c = vm7.client
    lost: list[BaseException | None] = []
    c.on_disconnect(lost.append)
    vm7.sock.close()
    drive(c.reactor, lambda: c.state is ClientState.DISCONNECTED)
    vm7.pump()
    assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
    assert NAME in str(lost[0])
    c.close()
    vm7.pump()
    assert len(lost) == 1


def test_on_disconnect_fires_once_with_none_on_close(vm7: FastPeer) -> None:
    c = vm7.client
    lost: list[BaseException | None] = []
    c.on_disconnect(lost.append)
    c.close()
    c.close()
    vm7.pump()
    assert lost == [None]


def test_on_disconnect_after_a_fatal_protocol_error_names_the_cause(vm7: FastPeer) -> None:
    c = vm7.client
    f = c.execute("a")
    vm7.read()
    lost: list[BaseException | None] = []
    c.on_disconnect(lost.append)
    batch(vm7, b'{"return": nope}\r\n')  # a reply that is not JSON: fatal
    assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
    assert isinstance(lost[0].__cause__, ProtocolError)
    assert isinstance(f.exception(0), ConnectionLost)


def _failed_connect(kind: str, reactor: Reactor, clock: FakeClock, tmp_path: Path
                    ) -> tuple[Client, Future[Any], list[Any]]:
    """Start a connect that fails in the way ``kind`` says; return the client, its
    connect future and a list the client's callbacks append to."""
    client = Client(reactor, name=NAME)
    fired: list[Any] = []
    client.on_disconnect(lambda r: fired.append(("disconnect", r)))
    client.on_error(lambda e: fired.append(("error", e)))
    path = str(tmp_path / "qmp.sock")
    if kind == "no such socket":
        return client, client.connect(path, timeout=5), fired
    if kind == "refused":
        unlistened = socket.socket(socket.AF_UNIX)
        unlistened.bind(path)  # bound, not listening: ECONNREFUSED
        fut = client.connect(path, timeout=5)
        drive(reactor, fut.done, wait=0)
        unlistened.close()
        return client, fut, fired
    ours, theirs = socket.socketpair()
    fut = client.connect_socket(theirs, timeout=3)
    if kind == "greeting timeout":
        clock.advance(3.001)
    elif kind == "bad greeting":
        ours.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    elif kind == "EOF before greeting":
        ours.close()
    elif kind == "negotiation refused":
        ours.sendall(_line(GREETING))
        ours.setblocking(False)
        got: list[bytes] = []

        def read() -> bool:
            try:
                got.append(ours.recv(4096))
            except BlockingIOError:
                return False
            return True

        drive(reactor, read, wait=0)
        neg = orjson.loads(got[0])
        ours.sendall(_line({"error": {"class": "GenericError", "desc": "no"},
                            "id": neg["id"]}))
    drive(reactor, fut.done, wait=0)
    ours.close()
    return client, fut, fired


FAILED_CONNECTS = {
    "no such socket": ConnectError,
    "refused": ConnectError,
    "greeting timeout": OperationTimeout,
    "EOF before greeting": ConnectionLost,
}


@pytest.mark.parametrize("kind", list(FAILED_CONNECTS))
def test_a_failed_connect_fails_only_its_future(kind: str, fake_reactor: Reactor,
                                                clock: FakeClock, tmp_path: Path) -> None:
    before = open_fds()
    client, fut, fired = _failed_connect(kind, fake_reactor, clock, tmp_path)
    fake_reactor.run_once(0)
    exc = fut.exception(0)
    assert isinstance(exc, FAILED_CONNECTS[kind]), repr(exc)
    assert NAME in str(exc)
    assert fired == []
    assert client.state is ClientState.DISCONNECTED and client.fileno() == -1
    client.close()
    fake_reactor.run_once(0)
    assert fired == []  # close() after a failed connect: nothing was established
    assert open_fds() <= before


@pytest.mark.parametrize("kind", ["bad greeting", "negotiation refused"])
def test_a_connect_failing_on_bad_input_fails_only_its_future(
        kind: str, fake_reactor: Reactor, clock: FakeClock, tmp_path: Path) -> None:
    client, fut, fired = _failed_connect(kind, fake_reactor, clock, tmp_path)
    fake_reactor.run_once(0)
    try:
        exc = fut.exception(0)
        assert isinstance(exc, ProtocolError), repr(exc)  # DecodeError, NegotiationError
        assert client.state is ClientState.DISCONNECTED and client.fileno() == -1
        assert fired == []
    finally:
        client.close()


def test_a_failed_connect_then_a_good_one_fires_on_disconnect_once(
        reactor: Reactor, tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    client = Client(reactor, name=NAME)
    lost: list[BaseException | None] = []
    client.on_disconnect(lost.append)
    assert isinstance(client.connect(path, timeout=5).exception(5), ConnectError)
    server = FakeQMPServer(path, reactor=reactor).start()
    try:
        client.reconnect(timeout=5).result(5)
        server.drop_clients()
        drive(reactor, lambda: bool(lost))
        reactor.run_once(0)
        assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
    finally:
        client.close()
        server.close()
    assert len(lost) == 1


def test_the_obvious_reconnect_loop_in_on_disconnect_does_not_multiply(
        reactor: Reactor, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's manager: ``on_disconnect`` calls ``reconnect()``. Each loss makes
    one reconnect; a reconnect that fails fires no ``on_disconnect``, so the loop
    stops there instead of doubling; nothing logs "already connecting"."""
    server = FakeQMPServer(str(tmp_path / "qmp.sock"), reactor=reactor).start()
    client = Client(reactor, name=NAME)
    tries: list[Future[Any]] = []

    def on_lost(reason: BaseException | None) -> None:
        if reason is not None:
            tries.append(client.reconnect(timeout=5))

    client.on_disconnect(on_lost)
    try:
        with caplog.at_level(logging.WARNING, logger="qmplex"):
            client.connect(server.path, timeout=5).result(5)
            for round_ in range(1, 4):
                server.drop_clients()

                def reconnected(n: int = round_) -> bool:
                    return len(tries) == n and tries[-1].done()

                drive(reactor, reconnected)
                assert tries[-1].exception(0) is None
            server.close()  # connections closed, socket removed
            drive(reactor, lambda: len(tries) == 4 and tries[-1].done())
            assert isinstance(tries[-1].exception(0), ConnectError)
            for _ in range(10):
                reactor.run_once(0)
            assert len(tries) == 4
        assert not [r for r in caplog.records if "already" in r.getMessage()]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        client.close()
        server.close()


# ================================================ 5. ids and stale replies


def test_ids_are_unique_across_connections_and_clients(reactor: Reactor,
                                                       tmp_path: Path) -> None:
    """Two clients, three connections each (two reconnects): every id on the wire,
    ``qmp_capabilities`` included, is used once."""
    server = FakeQMPServer(str(tmp_path / "qmp.sock"), reactor=reactor).start()
    clients = [Client(reactor, name="a"), Client(reactor, name="b")]
    try:
        for round_ in range(3):
            for c in clients:
                (c.connect(server.path, timeout=5) if round_ == 0
                 else c.reconnect(timeout=5)).result(5)
            gather([c.execute("query-status") for c in clients for _ in range(5)]).result(5)
            server.drop_clients()
            drive(reactor, lambda: all(c.state is ClientState.DISCONNECTED
                                       for c in clients))
        ids = [m["id"] for m in server.received]
        assert len(ids) == 3 * 2 * 6
    finally:
        for c in clients:
            c.close()
        server.close()
    assert len(ids) == len(set(ids)), "an id was used twice"


@pytest.mark.parametrize("stale_id", [7, "old", [1, 2], None])
def test_a_reply_to_no_command_in_flight_is_dropped_counted_and_logged(
        reactor: Reactor, caplog: pytest.LogCaptureFixture, stale_id: Any) -> None:
    """Replies whose id is not in flight (a previous client's, an unhashable id, no id
    while nothing is in flight): dropped, counted in ``stale_replies``, logged at DEBUG
    naming the connection, never reported to ``on_error``; the connection goes on."""
    stale: dict[str, Any] = {"return": {"status": "completed"}}
    if stale_id is not None:
        stale["id"] = stale_id
    errors: list[ProtocolError] = []
    with caplog.at_level(logging.DEBUG, logger="qmplex"):
        # (The debug switch is read when the connection is made.)
        client = Client(reactor, name=NAME)
        client.on_error(errors.append)
        peer = FastPeer(reactor, client)
        peer.handshake()
        try:
            batch(peer, _line(stale))
            f = client.execute("query-status")
            (m,) = peer.read()
            later = [] if stale_id is None else [_line(stale)]  # no id: matched to f
            batch(peer, *later, ret(m, "mine"))
            assert f.result(0) == "mine"
            assert client.stale_replies == 1 + len(later)
            assert client.state is ClientState.READY
        finally:
            client.close()
            peer.close()
    assert errors == []
    dropped = [r for r in caplog.records if "dropped a reply" in r.getMessage()]
    assert len(dropped) == 1 + len(later)
    assert all(r.levelno == logging.DEBUG and r.name.startswith("qmplex")
               and NAME in r.getMessage() for r in dropped)


@pytest.mark.parametrize("leftover", [
    {"return": {}, "id": 1373820876317},
    {"error": {"class": "GenericError", "desc": "Duplicate ID 'd3'"}, "id": 9},
])
def test_a_previous_clients_reply_before_the_greeting_is_dropped(
        reactor: Reactor, leftover: dict[str, Any]) -> None:
    client = Client(reactor, name=NAME)
    errors: list[ProtocolError] = []
    client.on_error(errors.append)
    peer = FastPeer(reactor, client)
    try:
        peer.send(leftover)
        peer.send(GREETING)
        msgs = peer.read()
        fut = peer.connect_future
        assert not fut.done(), repr(fut.exception(0))  # today: GreetingError
        (neg,) = msgs
        assert neg["execute"] == "qmp_capabilities"
        peer.reply(neg, {})
        peer.until(fut.done)
        assert fut.exception(0) is None
        assert client.stale_replies == 1 and errors == []
    finally:
        client.close()
        peer.close()


def test_the_late_reply_of_a_cancelled_command_is_discarded_silently(vm7: FastPeer) -> None:
    c = vm7.client
    errors: list[ProtocolError] = []
    c.on_error(errors.append)
    f = c.execute("slow")
    (m,) = vm7.read()
    assert f.cancel()
    batch(vm7, ret(m, "late"))
    assert f.cancelled() and c.stale_replies == 0 and errors == []
    assert c.execute("next") is not None and len(vm7.read()) == 1


# ============================================= 7. every error names its connection


def test_errors_name_the_connection(vm7_clocked: FastPeer, clock: FakeClock) -> None:
    c = vm7_clocked.client
    refused = c.execute("device_add", {"id": "d3"})
    slow = c.execute("device_del", {"id": "d3"}, timeout=2)
    typed = c.devices.device_del("d4", timeout=2)
    waited = c.wait_event("SHUTDOWN", timeout=2)
    m_refused, *_ = vm7_clocked.read()
    batch(vm7_clocked, err(m_refused, "DeviceNotFound", "Device 'd3' not found"))
    exc = refused.exception(0)
    assert isinstance(exc, CommandError) and exc.connection == NAME
    assert str(exc).startswith(f"{NAME}: device_add: DeviceNotFound")
    clock.advance(2.001)
    vm7_clocked.pump()
    for fut, what in ((slow, "device_del d3"), (typed, "device_del d4")):
        t = fut.exception(0)
        assert isinstance(t, OperationTimeout)
        assert t.connection == NAME and t.command == "device_del"
        assert str(t).startswith(f"{NAME}: {what}: timed out after 2 s")
    w = waited.exception(0)
    assert isinstance(w, OperationTimeout) and w.connection == NAME
    assert str(w).startswith(f"{NAME}: no SHUTDOWN event within 2 s")
    pending = c.execute("query-status")
    vm7_clocked.read()
    vm7_clocked.sock.close()
    vm7_clocked.pump()
    lost = pending.exception(0)
    assert isinstance(lost, ConnectionLost) and NAME in str(lost)


def test_connection_lost_of_each_future_has_the_connection_attribute(
        vm7: FastPeer) -> None:
    c = vm7.client
    sent = c.execute("a")
    waited = c.wait_event("SHUTDOWN")
    vm7.read()
    vm7.sock.close()
    vm7.pump()
    for f in (sent, waited):
        exc = f.exception(0)
        assert isinstance(exc, ConnectionLost) and exc.connection == NAME


def test_connect_errors_name_the_connection(fake_reactor: Reactor, clock: FakeClock,
                                            tmp_path: Path) -> None:
    for kind in ("no such socket", "greeting timeout"):
        client, fut, _ = _failed_connect(kind, fake_reactor, clock, tmp_path)
        exc = fut.exception(0)
        assert str(exc).startswith(f"{NAME}: "), str(exc)
        if isinstance(exc, Timeout):
            assert exc.connection == NAME
            assert "waiting for the greeting" in str(exc)
        client.close()


def test_the_default_name_is_the_socket_path(caplog: pytest.LogCaptureFixture) -> None:
    with fake_server() as server:
        with caplog.at_level(logging.DEBUG, logger="qmplex.connection"):
            c = qmplex.connect(server.path, timeout=5)
            assert c.name == server.path
            server.on("slow", never=True)
            f = c.execute("slow")
            c.execute("query-status").result(5)
            server.drop_clients()
            with pytest.raises(ConnectionLost, match=server.path):
                f.result(5)
            c.close()
    assert caplog.records
    assert all(server.path in r.getMessage() for r in caplog.records
               if r.name == "qmplex.connection")
    tcp = Client()
    refused = tcp.connect(("127.0.0.1", 1), timeout=5)
    assert tcp.name == "127.0.0.1:1"
    with pytest.raises(ConnectError, match="^127.0.0.1:1: "):
        refused.result(5)
    tcp.close()


def test_log_records_of_a_client_name_it(reactor: Reactor, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The client's own records (queueing, greeting, protocol errors, stale replies,
    loss, reconnect attempts) name it."""
    with caplog.at_level(logging.DEBUG, logger="qmplex"):
        server = FakeQMPServer(str(tmp_path / "qmp.sock"), reactor=reactor).start()
        client = Client(reactor, name=NAME, reconnect=ReconnectPolicy(initial=0, jitter=0))
        try:
            client.connect(server.path, timeout=5).result(5)
            client.execute("device_add", {"id": "d1", "driver": "nope"}).exception(5)
            server.send_raw(b"garbage\r\n" + _line({"return": {}, "id": "old"}))
            server.drop_clients()
            reconnected: list[int] = []
            client.on_reconnect(lambda n, e: reconnected.append(n))
            drive(reactor, lambda: bool(reconnected))
        finally:
            client.close()
            server.close()
    mine = [r for r in caplog.records if r.name.startswith("qmplex")
            and not r.name.startswith("qmplex.testing")]
    messages = "\n".join(r.getMessage() for r in mine)
    for needle in ("queue device_add", "greeting", "protocol error", "dropped a reply",
                   "reconnecting", "reconnected", "connection ended"):
        assert needle in messages, needle
    assert all(NAME in r.getMessage() for r in mine), messages


def test_records_of_a_clients_raising_callbacks_name_it(
        vm7: FastPeer, caplog: pytest.LogCaptureFixture) -> None:
    c = vm7.client
    f = c.execute("a")
    (m,) = vm7.read()
    f.add_done_callback(boom)
    c.on_event(boom, "TICK")
    c.on_error(boom)
    with caplog.at_level(logging.ERROR, logger="qmplex"):
        batch(vm7, ret(m), ev("TICK"), b"garbage\r\n")
    records = boom_records(caplog)
    assert len(records) == 3
    assert all(NAME in r.getMessage() for r in records), [r.getMessage() for r in records]


# ============================================== 8. the two kinds of timeout


def test_operation_timeout_fails_the_future(vm7_clocked: FastPeer, clock: FakeClock) -> None:
    c = vm7_clocked.client
    cmd = c.execute("slow", timeout=1)
    wait = c.wait_event("SHUTDOWN", timeout=1)
    (m,) = vm7_clocked.read()
    clock.advance(1.001)
    vm7_clocked.pump()
    for f in (cmd, wait):
        assert f.done()
        exc = f.exception(0)
        assert isinstance(exc, OperationTimeout)
        assert isinstance(exc, Timeout) and isinstance(exc, TimeoutError)
        assert not isinstance(exc, WaitTimeout)
        with pytest.raises(OperationTimeout):
            f.result(0)
    batch(vm7_clocked, ret(m, "late"), ev("SHUTDOWN"))  # discarded, nothing breaks
    assert c.stale_replies == 0 and c.pending == 0


def test_connect_timeout_is_an_operation_timeout(fake_reactor: Reactor, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    client, fut, _ = _failed_connect("greeting timeout", fake_reactor, clock, tmp_path)
    exc = fut.exception(0)
    assert isinstance(exc, OperationTimeout) and isinstance(exc, TimeoutError)
    client.close()


def test_wait_timeout_leaves_the_future_pending(vm7: FastPeer) -> None:
    """``result(timeout)`` gives up waiting: WaitTimeout, and the future is still
    pending: it can be waited for again, or cancelled."""
    c = vm7.client
    f, g = c.execute("a"), c.execute("b")
    ma, mb = vm7.read()
    for wait in (lambda: f.result(0.02), lambda: f.exception(0.02), lambda: f.result(0)):
        with pytest.raises(WaitTimeout) as info:
            wait()
        assert isinstance(info.value, Timeout) and isinstance(info.value, TimeoutError)
        assert not isinstance(info.value, OperationTimeout)
        assert not f.done()
    vm7.sock.sendall(ret(ma, "later"))
    assert f.result(5) == "later"
    with pytest.raises(WaitTimeout):
        g.result(0)
    assert g.cancel() and g.cancelled()
    with pytest.raises(Cancelled):
        g.result(0)
    vm7.sock.sendall(ret(mb))
    vm7.pump()
    assert c.pending == 0 and c.stale_replies == 0


# ==================================================== 9. gather


def test_gather_return_exceptions_gives_per_item_outcomes_in_order(vm7: FastPeer) -> None:
    c = vm7.client
    ok, bad, cancelled, late = (c.execute(n) for n in ("ok", "bad", "cancelled", "late"))
    all_of = gather([ok, bad, cancelled, late], return_exceptions=True)
    m_ok, m_bad, _, m_late = vm7.read()
    cancelled.cancel()
    batch(vm7, err(m_bad, "DeviceNotFound", "gone"), ret(m_ok, 1))
    assert not all_of.done()  # it waits for all of them, even after a failure
    batch(vm7, ret(m_late, 4))
    outcome = all_of.result(0)
    assert outcome[0] == 1 and outcome[3] == 4
    assert isinstance(outcome[1], CommandError) and outcome[1].error_class == "DeviceNotFound"
    assert isinstance(outcome[2], Cancelled)
    assert gather([], return_exceptions=True).result(0) == []


def test_gather_return_exceptions_never_fails_even_on_connection_loss(vm7: FastPeer) -> None:
    c = vm7.client
    futs = [c.execute("x") for _ in range(10)]
    all_of = gather(futs, return_exceptions=True)
    first, *_ = vm7.read()
    batch(vm7, ret(first, "one"))
    vm7.sock.close()
    vm7.pump()
    outcome = all_of.result(0)
    assert outcome[0] == "one"
    assert all(isinstance(o, ConnectionLost) for o in outcome[1:])


def test_cancelling_gather_cancels_the_pending_ones(vm7: FastPeer) -> None:
    c = vm7.client
    done, pending = c.execute("done"), [c.execute("p") for _ in range(3)]
    m_done, *_ = vm7.read()
    batch(vm7, ret(m_done, "d"))
    all_of = gather([done, *pending], return_exceptions=True)
    assert all_of.cancel()
    vm7.pump()
    assert done.result(0) == "d"
    assert all(p.cancelled() for p in pending)
    assert all_of.cancelled()


def test_gather_without_the_flag_fails_fast(vm7: FastPeer) -> None:
    c = vm7.client
    a, b, cc = c.execute("a"), c.execute("b"), c.execute("c")
    first = gather([a, b, cc])
    ma, mb, mc = vm7.read()
    batch(vm7, err(mb))
    assert isinstance(first.exception(0), CommandError)
    assert not a.done() and not cc.done()  # the others keep running
    cancelled = gather([a, cc])
    cc.cancel()
    vm7.pump()
    assert isinstance(cancelled.exception(0), Cancelled)
    batch(vm7, ret(ma, "a"))
    assert gather([a]).result(1) == ["a"]


# ============================================ 10. debug logging changes nothing


def _scripted_run(chunk: int) -> tuple[Any, ...]:
    """One fixed stream against a fresh client: the futures' outcomes, the events
    delivered, the errors reported and the counters."""
    reactor = Reactor()
    client = Client(reactor, name=NAME)
    peer = FastPeer(reactor, client)
    peer.handshake()
    events: list[tuple[str, Any]] = []
    errors: list[str] = []
    client.on_event(lambda e: events.append((e.name, e.data)), "WANTED")
    client.on_event(lambda e: events.append((e.name, e.data)), "DEVICE_DELETED")
    client.on_error(lambda e: errors.append(type(e).__name__))
    futs = [client.execute("q", {"n": i}) for i in range(5)]
    unplug = client.execute("device_del", {"id": "d1"},
                            until=EventFilter("DEVICE_DELETED", {"device": "d1"}))
    msgs = peer.read()
    stream = b"".join([
        ev("UNWANTED", n=0),
        ret(msgs[0], {"a": [1, 2]}),
        ev("WANTED", n=1),
        b'{"event": "WAN\\u0054ED", "data": {"n": 2}, '
        b'"timestamp": {"seconds": 1, "microseconds": 0}}\r\n',  # escaped name
        err(msgs[1], "GenericError", "bad"),
        _line({"return": {}, "id": "not ours"}),
        b"garbage\r\n",
        ret(msgs[5]),
        ev("DEVICE_DELETED", device="d1", path="/machine/peripheral/d1"),
        ret(msgs[2], "two"),
        ev("UNWANTED", n=3),
        b'{"event": "WANTED", "data": {"n": 4}, "timestamp": {"seconds": 1, '
        b'"microseconds": 0}}\n',  # LF only
        ret(msgs[3]),
    ])
    for i in range(0, len(stream), chunk):
        peer.sock.sendall(stream[i:i + chunk])
        peer.pump(2)
    peer.pump()
    outcomes = [repr(f.result(0)) if f.exception(0) is None else repr(f.exception(0))
                for f in (*futs[:4], unplug)]
    outcomes.append(str(futs[4].done()))
    result = (outcomes, events, errors, client.dropped_events, client.stale_replies,
              client.pending)
    client.close()
    peer.close()
    reactor.close()
    return result


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_debug_logging_does_not_change_what_a_stream_does(
        chunk: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qmplex"):
        quiet = _scripted_run(chunk)
        assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="qmplex"):
        loud = _scripted_run(chunk)
        assert [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert loud == quiet
    outcomes, events, errors, dropped, stale, pending = quiet
    assert events == [("WANTED", {"n": 1}), ("WANTED", {"n": 2}),
                      ("DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"}),
                      ("WANTED", {"n": 4})]
    assert errors == ["DecodeError"]
    assert (dropped, stale, pending) == (2, 1, 1)
