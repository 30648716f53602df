"""Client metrics: the counters and latency summaries of ``Client.metrics()`` and the
per-command hook ``Client.on_command``, against a hand-driven peer (exact control of
what QEMU answers and when) on a reactor with a fake clock (exact latencies)."""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Iterator

import pytest

from qmplex import (
    Cancelled,
    Client,
    ClientMetrics,
    ClientState,
    CommandError,
    CommandSummary,
    ConnectionLost,
    EventFilter,
    OperationTimeout,
    Reactor,
)
from qmplex.metrics import RECENT, LatencyBook, Outcome

from .peer import ScriptedPeer
from .reliability.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rig(clock: FakeClock) -> Iterator[ScriptedPeer]:
    """A client on a fake-clock reactor, connected to a hand-driven peer."""
    reactor = Reactor(clock=clock)
    client = Client(reactor, name="vm1")
    peer = ScriptedPeer(reactor, client)
    peer.handshake()
    yield peer
    client.close()
    peer.close()
    for _ in range(10):
        reactor.run_once(0)
    assert reactor.watched_fds() == 0 and reactor.pending_timers() == 0
    reactor.close()


def done_calls(peer: ScriptedPeer) -> list[tuple[str, float, str]]:
    calls: list[tuple[str, float, str]] = []
    peer.client.on_command(lambda *call: calls.append(call))
    peer.pump(1)
    return calls


# ================================================================== counters


def test_a_new_client_has_counted_nothing() -> None:
    with Reactor() as reactor:
        m = Client(reactor).metrics()
    assert m == ClientMetrics(0, 0, 0, 0, 0, 0, 0, 0, 0, {})


def test_every_outcome_is_counted_once(rig: ScriptedPeer, clock: FakeClock) -> None:
    """Each way a command can end lands in exactly one counter: ok in completed; an
    error reply, a timeout and a cancellation in failed; and a command's latency runs
    from execute() to that outcome."""
    client = rig.client
    calls = done_calls(rig)
    ok = client.execute("query-status")
    err = client.execute("device_del", {"id": "nope"})
    slow = client.execute("query-block", timeout=2.0)
    gone = client.execute("query-cpus-fast")
    sent = rig.read()
    assert [m["execute"] for m in sent] == ["query-status", "device_del", "query-block",
                                            "query-cpus-fast"]
    m = client.metrics()
    assert (m.commands_sent, m.in_flight, m.queued) == (4, 4, 0)  # not qmp_capabilities
    clock.advance(0.25)
    rig.reply(sent[0], {"status": "running", "running": True})
    rig.reply(sent[1], error=("DeviceNotFound", "Device 'nope' not found"))
    rig.until(lambda: ok.done() and err.done())
    assert gone.cancel()
    clock.advance(2.0)
    rig.until(slow.done)
    assert isinstance(err.exception(0), CommandError)
    assert isinstance(slow.exception(0), OperationTimeout)
    rig.pump()
    m = client.metrics()
    assert (m.commands_sent, m.commands_completed, m.commands_failed) == (4, 1, 3)
    assert (m.in_flight, m.queued) == (0, 0)
    assert m.commands["query-status"] == CommandSummary("query-status", 1, 0, 0.25, 0.25,
                                                        0.25, 0.25)
    assert (m.commands["device_del"].count, m.commands["device_del"].failed) == (1, 1)
    assert m.commands["query-block"].max == pytest.approx(2.25)
    assert m.commands["query-cpus-fast"].mean == pytest.approx(0.25)
    assert sorted(calls) == sorted([
        ("query-status", 0.25, Outcome.OK),
        ("device_del", 0.25, Outcome.ERROR),
        ("query-cpus-fast", 0.25, Outcome.CANCELLED),
        ("query-block", 2.25, Outcome.TIMEOUT),
    ])


def test_commands_lost_with_the_connection_are_failed(rig: ScriptedPeer) -> None:
    client = rig.client
    calls = done_calls(rig)
    futures = [client.execute("query-status") for _ in range(3)]
    rig.read()
    rig.sock.shutdown(socket.SHUT_RDWR)
    rig.until(lambda: all(f.done() for f in futures))
    assert all(isinstance(f.exception(0), ConnectionLost) for f in futures)
    rig.pump()
    m = client.metrics()
    assert (m.commands_completed, m.commands_failed, m.in_flight) == (0, 3, 0)
    assert [c[2] for c in calls] == [Outcome.LOST] * 3


def test_queued_and_in_flight_follow_the_window(clock: FakeClock) -> None:
    reactor = Reactor(clock=clock)
    client = Client(reactor, window=2)
    peer = ScriptedPeer(reactor, client)
    try:
        peer.handshake()
        futures = [client.execute("query-status") for _ in range(5)]
        sent = peer.read()
        m = client.metrics()
        assert (len(sent), m.in_flight, m.queued) == (2, 2, 3)
        peer.reply(sent[0])
        peer.until(futures[0].done)
        sent += peer.read()
        m = client.metrics()
        assert (len(sent), m.in_flight, m.queued, m.commands_completed) == (3, 2, 2, 1)
    finally:
        client.close()
        peer.close()
        reactor.run_once(0)
        reactor.close()


def test_a_command_with_an_event_finishes_when_the_event_comes(
        rig: ScriptedPeer, clock: FakeClock) -> None:
    """``until=``: in flight after its reply, finished (and timed) at its event."""
    client = rig.client
    calls = done_calls(rig)
    fut = client.execute("device_del", {"id": "d1"},
                         until=EventFilter("DEVICE_DELETED", {"device": "d1"}))
    (cmd,) = rig.read()
    clock.advance(0.1)
    rig.reply(cmd)
    rig.pump()
    assert not fut.done() and client.metrics().in_flight == 1
    clock.advance(0.4)
    rig.event("DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"})
    rig.until(fut.done)
    rig.pump()
    m = client.metrics()
    assert (m.in_flight, m.commands_completed) == (0, 1)
    assert m.commands["device_del"].max == pytest.approx(0.5)
    ((name, latency, outcome),) = calls
    assert (name, outcome) == ("device_del", Outcome.OK) and latency == pytest.approx(0.5)


def test_events_received_and_dropped(rig: ScriptedPeer) -> None:
    client = rig.client
    seen: list[str] = []
    client.on_event(lambda e: seen.append(e.name), "STOP")
    rig.pump()
    for name in ("STOP", "RESUME", "STOP", "POWERDOWN"):
        rig.event(name)
    rig.until(lambda: len(seen) == 2)
    m = client.metrics()
    assert (m.events_received, m.events_dropped) == (2, 2)


def test_stale_replies_and_dropped_events_add_up_across_connections(
        clock: FakeClock) -> None:
    """The client's figures outlive its connections (the per-connection properties
    ``stale_replies`` and ``dropped_events`` start again at zero)."""
    reactor = Reactor(clock=clock)
    client = Client(reactor)
    for _ in range(2):
        peer = ScriptedPeer(reactor, client)
        peer.handshake()
        peer.send({"return": {}, "id": 987654})  # nobody asked
        peer.event("RESUME")  # nobody wants it
        peer.until(lambda: client.stale_replies == 1 and client.dropped_events == 1)
        peer.close()  # QEMU went away
        peer.until(lambda: client.state is ClientState.DISCONNECTED)
    m = client.metrics()
    assert (m.stale_replies, m.events_dropped) == (2, 2)
    client.close()
    reactor.close()


def test_as_dict_is_plain_data(rig: ScriptedPeer) -> None:
    fut = rig.client.execute("query-name")
    (cmd,) = rig.read()
    rig.reply(cmd, {"name": "vm1"})
    rig.until(fut.done)
    data = rig.client.metrics().as_dict()
    assert data["commands_sent"] == data["commands_completed"] == 1
    assert set(data["commands"]) == {"query-name"}
    assert set(data["commands"]["query-name"]) == {"count", "failed", "mean", "max",
                                                   "p50", "p99"}


def test_metrics_can_be_read_from_another_thread_while_the_reactor_runs() -> None:
    """A manager's exporter thread reads the figures while the reactor thread works:
    every read is a consistent-enough snapshot (no exception), and at the end the
    counters add up."""
    reactor = Reactor()
    client = Client(reactor)
    peer = ScriptedPeer(reactor, client)
    peer.handshake()
    stop = threading.Event()
    reads: list[ClientMetrics] = []
    errors: list[BaseException] = []

    def exporter() -> None:
        try:
            while not stop.wait(0.0005):  # an exporter's scrape, much more often
                reads.append(client.metrics())
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    thread = threading.Thread(target=exporter)
    thread.start()
    try:
        names = [f"cmd-{i % 50}" for i in range(1000)]
        futures = [client.execute(name) for name in names]
        answered = 0
        while answered < len(futures):
            for msg in peer.read():
                peer.reply(msg)
                answered += 1
        peer.until(lambda: all(f.done() for f in futures))
    finally:
        stop.set()
        thread.join()
    assert not errors and reads
    m = client.metrics()
    assert m.commands_completed == m.commands_sent == 1000
    assert sum(s.count for s in m.commands.values()) == 1000
    completed = [r.commands_completed for r in reads]
    assert completed == sorted(completed)  # counters only grow
    client.close()
    peer.close()
    reactor.run_once(0)
    reactor.close()


# ====================================================================== hooks


def test_hooks_run_on_the_reactor_thread_and_stop_when_cancelled(rig: ScriptedPeer) -> None:
    client = rig.client
    threads: list[int] = []
    sub = client.on_command(lambda *_: threads.append(threading.get_ident()))
    rig.pump(1)
    fut = client.execute("query-status")
    rig.reply(rig.read()[0])
    rig.until(lambda: fut.done() and len(threads) == 1)
    assert threads == [threading.get_ident()]  # this test's thread drives the reactor
    sub.cancel()
    rig.pump(1)
    fut = client.execute("query-status")
    rig.reply(rig.read()[0])
    rig.until(fut.done)
    rig.pump()
    assert len(threads) == 1


def test_a_raising_hook_is_logged_and_the_others_still_run(
        rig: ScriptedPeer, caplog: pytest.LogCaptureFixture) -> None:
    client = rig.client

    def broken(name: str, latency: float, outcome: str) -> None:
        raise RuntimeError("exporter down")

    client.on_command(broken)
    calls = done_calls(rig)
    with caplog.at_level(logging.ERROR, logger="qmplex"):
        futures = [client.execute("query-status") for _ in range(3)]
        for msg in rig.read():
            rig.reply(msg)
        rig.until(lambda: all(f.done() for f in futures) and len(calls) == 3)
    assert [r.getMessage() for r in caplog.records].count(
        f"vm1: command hook {broken!r} raised") >= 1
    assert all(f.result(0) == {} for f in futures)


def test_a_cancelled_future_after_its_reply_counts_once(rig: ScriptedPeer) -> None:
    """Cancelling a command that already finished changes nothing."""
    client = rig.client
    calls = done_calls(rig)
    fut = client.execute("query-status")
    rig.reply(rig.read()[0])
    rig.until(fut.done)
    assert not fut.cancel()
    rig.pump()
    assert [c[2] for c in calls] == [Outcome.OK]
    assert client.metrics().commands_failed == 0


def test_cancelling_a_queued_command_counts_it_cancelled(rig: ScriptedPeer) -> None:
    client = rig.client
    fut = client.execute("query-status")
    assert fut.cancel()  # before the reactor wrote it
    assert isinstance(fut.exception(0), Cancelled)
    rig.pump()
    m = client.metrics()
    assert (m.commands_failed, m.queued, m.in_flight) == (1, 0, 0)
    assert rig.read() == []


# ============================================================ the summaries


def summary_of(latencies: list[float], failed: int = 0) -> CommandSummary:
    book = LatencyBook()
    for i, latency in enumerate(latencies):
        book.add("x", latency, i >= failed)
    return book.summaries()["x"]


def test_percentiles_are_exact_nearest_rank() -> None:
    latencies = [0.001] * 98 + [0.5, 2.0]
    s = summary_of(latencies, failed=3)
    assert (s.count, s.failed, s.max) == (100, 3, 2.0)
    assert s.mean == pytest.approx(sum(latencies) / 100)
    assert (s.p50, s.p99) == (0.001, 0.5)


@pytest.mark.parametrize("latency", [0.0, 1e-7, 3600.0, 1e9])
def test_extreme_latencies_are_kept(latency: float) -> None:
    s = summary_of([latency])
    assert s.max == latency and s.p50 == s.p99 == latency


@pytest.mark.parametrize("n", [RECENT - 1, RECENT, 3 * RECENT + 7, 10_000])
def test_counts_and_mean_cover_all_percentiles_the_recent_ones(n: int) -> None:
    """Whether the figures were folded in (every few thousand) or are still pending,
    a read sees them all: count, mean and max since the start; percentiles over the
    most recent RECENT latencies."""
    latencies = [float(i) for i in range(n)]  # rising: the recent ones are the largest
    s = summary_of(latencies)
    recent = latencies[-RECENT:]
    assert (s.count, s.max) == (n, n - 1)
    assert s.mean == pytest.approx(sum(latencies) / n)
    assert s.p50 == recent[math.ceil(0.5 * len(recent)) - 1]
    assert s.p99 == recent[math.ceil(0.99 * len(recent)) - 1]


def test_names_are_summarised_separately() -> None:
    book = LatencyBook()
    for i in range(5000):
        book.add("a" if i % 2 else "b", 0.001 if i % 2 else 0.002, True)
    summaries = book.summaries()
    assert summaries["a"].count == summaries["b"].count == 2500
    assert (summaries["a"].p99, summaries["b"].p50) == (0.001, 0.002)
