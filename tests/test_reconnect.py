"""The reconnect policy: ``ReconnectPolicy`` delays and validation, and a client that
follows it against the fake QMP server, on a fake clock.

The server and the client share one reactor with a fake clock, driven by the test:
backoff delays are read off the reactor's timers and passed by advancing the clock,
so nothing waits for real time.

What a client with a policy does (ReconnectPolicy's docstring, checked here): after an
established connection is lost it waits ``delay(1)``, ``delay(2)``, ... between attempts;
commands that were in flight fail with ConnectionLost and are never sent again;
commands still queued and those submitted while disconnected are kept and written on
the next connection, each subject to its own timeout; event subscriptions carry over;
every attempt is reported to ``on_reconnect`` and logged; ``on_disconnect`` fires only
for established connections; after ``max_attempts`` failures the kept commands fail
with ConnectionLost; ``close()`` stops it all.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectError,
    ConnectionLost,
    Event,
    Future,
    OperationTimeout,
    Reactor,
    ReconnectPolicy,
    StateError,
    gather,
)
from qmplex.testing import FakeQMPServer

from .reliability.helpers import FakeClock, open_fds

NAME = "vm7"


def state_of(client: Client) -> ClientState:
    """``client.state``, read afresh (for asserts on a state that changed meanwhile)."""
    return client.state

# ================================================================ the policy


def test_delay_without_jitter_grows_exponentially_up_to_the_cap() -> None:
    policy = ReconnectPolicy(initial=0.1, multiplier=2.0, maximum=2.0, jitter=0)
    assert [policy.delay(n) for n in range(1, 8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert policy.delay(0) == pytest.approx(0.1)  # before the first: the first
    assert policy.delay(-5) == pytest.approx(0.1)


@pytest.mark.parametrize("attempt", [64, 1024, 10**6, 10**18])
def test_delay_of_a_huge_attempt_number_is_the_cap(attempt: int) -> None:
    policy = ReconnectPolicy(initial=0.5, multiplier=3.0, maximum=30.0, jitter=0)
    assert policy.delay(attempt) == 30.0
    jittered = ReconnectPolicy(initial=0.5, multiplier=3.0, maximum=30.0, jitter=0.25)
    d = jittered.delay(attempt, random.Random(attempt))
    assert math.isfinite(d) and 22.5 <= d <= 37.5


@pytest.mark.parametrize(("multiplier", "attempt"), [(3.0, 700), (3.0, 1023), (10.0, 310)])
def test_delay_with_a_steep_multiplier_never_overflows(multiplier: float, attempt: int
                                                       ) -> None:
    policy = ReconnectPolicy(initial=0.1, multiplier=multiplier, maximum=30.0, jitter=0)
    assert policy.delay(attempt) == 30.0


@pytest.mark.parametrize("jitter", [0.01, 0.2, 0.5, 0.99])
def test_delay_with_jitter_stays_within_its_spread(jitter: float) -> None:
    policy = ReconnectPolicy(initial=0.1, multiplier=2.0, maximum=5.0, jitter=jitter)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        base = min(0.1 * 2 ** (attempt - 1), 5.0)
        samples = [policy.delay(attempt, rng) for _ in range(300)]
        assert all(base * (1 - jitter) - 1e-12 <= d <= base * (1 + jitter) + 1e-12
                   for d in samples)
        assert min(samples) < base < max(samples)  # spread both ways, not lockstep
        assert len(set(samples)) > 250
    # Without an rng the module's generator is used; the bounds are the same.
    assert all(0.05 * (1 - jitter) <= ReconnectPolicy(
        initial=0.05, jitter=jitter).delay(1) <= 0.05 * (1 + jitter) for _ in range(50))


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    policy = ReconnectPolicy()
    a = [policy.delay(n, random.Random(7)) for n in range(1, 10)]
    b = [policy.delay(n, random.Random(7)) for n in range(1, 10)]
    assert a == b


def test_defaults() -> None:
    policy = ReconnectPolicy()
    assert (policy.initial, policy.multiplier, policy.maximum, policy.jitter,
            policy.connect_timeout, policy.max_attempts) == (0.1, 2.0, 30.0, 0.2, 10.0, None)
    assert not policy.gives_up_after(10**9)
    assert ReconnectPolicy(max_attempts=3).gives_up_after(3)
    assert not ReconnectPolicy(max_attempts=3).gives_up_after(2)
    assert ReconnectPolicy(initial=0, jitter=0).delay(5) == 0.0


@pytest.mark.parametrize("kwargs", [
    {"initial": -0.1}, {"initial": math.nan}, {"initial": math.inf},
    {"multiplier": 0.5}, {"multiplier": math.nan}, {"multiplier": math.inf},
    {"maximum": 0.05}, {"maximum": math.inf}, {"maximum": math.nan},
    {"jitter": -0.1}, {"jitter": 1.0}, {"jitter": math.nan},
    {"connect_timeout": 0}, {"connect_timeout": -1}, {"connect_timeout": math.nan},
    {"max_attempts": 0}, {"max_attempts": -1},
])
def test_invalid_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ReconnectPolicy(**kwargs)


def test_a_policy_is_a_frozen_value() -> None:
    policy = ReconnectPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.initial = 5  # type: ignore[misc]
    assert policy == ReconnectPolicy() and hash(policy) == hash(ReconnectPolicy())


def test_client_accepts_only_a_policy() -> None:
    with Reactor() as r:
        with pytest.raises(TypeError):
            Client(r, reconnect=3)  # type: ignore[arg-type]
        policy = ReconnectPolicy()
        assert Client(r, reconnect=policy).reconnect_policy is policy
        assert Client(r).reconnect_policy is None


# ==================================================== a client with a policy


class Rig:
    """A fake-clock reactor, a fake QMP server on a Unix socket and a client with a
    policy, all on the test's thread; records what the client's callbacks report."""

    def __init__(self, tmp_path: Path, policy: ReconnectPolicy | None, **client: Any
                 ) -> None:
        self.clock = FakeClock()
        self.reactor = Reactor(clock=self.clock)
        self.path = str(tmp_path / "qmp.sock")
        self.server: FakeQMPServer | None = None
        self.start_server()
        self.client = Client(self.reactor, name=NAME, reconnect=policy, **client)
        self.disconnects: list[BaseException | None] = []
        self.attempts: list[tuple[int, BaseException | None]] = []
        self.events: list[Any] = []
        self.client.on_disconnect(self.disconnects.append)
        self.client.on_reconnect(lambda n, e: self.attempts.append((n, e)))
        self.client.on_event(lambda e: self.events.append(e.data.get("n")), "TICK")

    def start_server(self) -> FakeQMPServer:
        self.server = FakeQMPServer(self.path, reactor=self.reactor).start()
        return self.server

    @property
    def srv(self) -> FakeQMPServer:
        assert self.server is not None
        return self.server

    def stop_server(self) -> None:
        """Close the server (its connections and its socket file)."""
        self.srv.close()
        self.server = None

    def pump(self, passes: int = 8) -> None:
        for _ in range(passes):
            self.reactor.run_once(0)

    def until(self, cond: Any, passes: int = 500) -> None:
        for _ in range(passes):
            if cond():
                return
            self.reactor.run_once(0)
        raise AssertionError("condition not reached")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.pump()

    def next_delay(self) -> float | None:
        """Seconds until the reactor's next timer (the reconnect backoff here), once
        the callbacks that are ready have run."""
        self.until(lambda: self.reactor.pending_callbacks() == 0)
        when = self.reactor.next_deadline()
        return None if when is None else when - self.clock()

    def connect(self) -> None:
        fut = self.client.connect(self.path, timeout=5)
        self.until(fut.done)
        fut.result(0)

    def negotiations(self) -> int:
        return self.srv.commands().count("qmp_capabilities") if self.server else 0

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.close()
        assert self.reactor.watched_fds() == 0, "a socket is still registered"
        self.reactor.close()


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[RigFactory]:
    rigs: list[Rig] = []
    before = open_fds()

    def make(policy: ReconnectPolicy | None, **client: Any) -> Rig:
        rig = Rig(tmp_path, policy, **client)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    assert open_fds() <= before, "file descriptors leaked"


POLICY = ReconnectPolicy(initial=1.0, multiplier=2.0, maximum=8.0, jitter=0.0,
                         connect_timeout=5.0)


def test_reconnects_after_the_server_drops_it(rig_factory: RigFactory,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """In-flight commands fail with ConnectionLost and are never sent again; commands
    still queued behind the window, and those submitted while disconnected, go out on
    the new connection; subscriptions carry over; one on_disconnect, one on_reconnect."""
    rig = rig_factory(POLICY, window=2)
    rig.connect()
    server = rig.srv
    server.on("slow", never=True)
    server.emit("TICK", {"n": 1})
    in_flight = [rig.client.execute("slow", {"i": i}) for i in range(2)]
    queued = [rig.client.execute("query-name", {"i": i}) for i in range(3)]  # behind
    waiting = rig.client.wait_event("SHUTDOWN")
    rig.until(lambda: server.commands().count("slow") == 2)
    assert rig.events == [1]
    with caplog.at_level(logging.INFO, logger="qmplex"):
        server.drop_clients()
        rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
        for f in (*in_flight, waiting):
            assert isinstance(f.exception(0), ConnectionLost)
        assert not any(f.done() for f in queued)
        assert len(rig.disconnects) == 1 and isinstance(rig.disconnects[0], ConnectionLost)
        # Disconnected: new commands are accepted and wait (no StateError).
        later = [rig.client.execute("query-version") for _ in range(2)]
        wait_after = rig.client.wait_event("TICK")
        assert rig.next_delay() == pytest.approx(1.0)
        rig.advance(0.999)
        assert rig.negotiations() == 1 and state_of(rig.client) is ClientState.DISCONNECTED
        rig.advance(0.002)
        rig.until(lambda: rig.client.state is ClientState.READY)
        rig.until(lambda: all(f.done() for f in queued + later))
    assert rig.attempts == [(1, None)]
    assert len(rig.disconnects) == 1
    assert [f.result(0) for f in queued] == [{}, {}, {}]
    assert all("qemu" in f.result(0) for f in later)
    server.emit("TICK", {"n": 2})
    rig.pump()
    assert rig.events == [1, 2] and wait_after.result(0).data == {"n": 2}
    # Never re-sent: each command reached the server exactly once.
    commands = server.commands()
    assert commands.count("slow") == 2 and commands.count("query-name") == 3
    assert commands.count("query-version") == 2
    ids = [m["id"] for m in server.received]
    assert len(ids) == len(set(ids))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("qmplex.client")]
    assert any(m.startswith(f"{NAME}: connection lost") and "reconnecting" in m
               for m in messages)
    assert f"{NAME}: reconnected (attempt 1)" in messages


def test_backoff_grows_is_capped_and_each_failure_is_reported(
        rig_factory: RigFactory, caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    with caplog.at_level(logging.WARNING, logger="qmplex"):
        rig.stop_server()  # connections closed, the socket file removed
        rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
        pending = rig.client.execute("query-status")  # kept while disconnected
        delays = []
        for attempt in range(1, 6):
            delay = rig.next_delay()
            assert delay is not None
            delays.append(delay)
            rig.advance(delay)
            rig.until(lambda n=attempt: len(rig.attempts) == n)
        assert delays == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0])
    assert [n for n, _ in rig.attempts] == [1, 2, 3, 4, 5]
    assert all(isinstance(e, ConnectError) and NAME in str(e) for _, e in rig.attempts)
    assert len(rig.disconnects) == 1  # failed attempts fire no on_disconnect
    failures = [r for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in failures] == [NAME] * 5
    assert all(r.levelno == logging.WARNING for r in failures)
    assert not pending.done()
    # The server comes back: the next attempt succeeds, the kept command is sent.
    rig.start_server()
    rig.advance(rig.next_delay() or 0)
    rig.until(pending.done)
    assert pending.result(0)["status"] == "prelaunch"
    assert rig.attempts[-1] == (6, None)
    # A success resets the backoff: the next loss starts again at delay(1).
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    assert rig.next_delay() == pytest.approx(1.0)
    assert len(rig.disconnects) == 2


def test_gives_up_after_max_attempts(rig_factory: RigFactory,
                                     caplog: pytest.LogCaptureFixture) -> None:
    policy = dataclasses.replace(POLICY, max_attempts=3)
    rig = rig_factory(policy)
    rig.connect()
    rig.stop_server()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    kept = [rig.client.execute("query-status", timeout=3600) for _ in range(3)]
    with caplog.at_level(logging.ERROR, logger="qmplex"):
        for _ in range(3):
            rig.advance(rig.next_delay() or 0)
    assert [n for n, _ in rig.attempts] == [1, 2, 3]
    for f in kept:
        exc = f.exception(0)
        assert isinstance(exc, ConnectionLost)
        assert "gave up reconnecting after 3 attempts" in str(exc) and NAME in str(exc)
    assert any(r.levelno == logging.ERROR and NAME in r.getMessage()
               and "gave up" in r.getMessage() for r in caplog.records)
    assert rig.reactor.pending_timers() == 0  # nothing scheduled any more
    rig.advance(3600)
    assert len(rig.attempts) == 3 and len(rig.disconnects) == 1
    assert state_of(rig.client) is ClientState.DISCONNECTED
    with pytest.raises(StateError, match="not connected"):
        rig.client.execute("query-status")
    # Reconnecting by hand is still possible; the policy applies to the next loss.
    rig.start_server()
    fut = rig.client.reconnect(timeout=5)
    rig.until(fut.done)
    assert rig.client.execute("query-status") is not None
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    assert rig.next_delay() == pytest.approx(1.0)


def test_close_during_the_backoff_stops_it(rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    kept = rig.client.execute("query-status")
    wait = rig.client.wait_event("TICK")
    assert rig.next_delay() == pytest.approx(1.0)
    rig.client.close()
    assert rig.reactor.pending_timers() == 0
    for f in (kept, wait):
        assert isinstance(f.exception(0), ConnectionLost)
    rig.advance(100)
    assert rig.negotiations() == 1 and rig.attempts == []
    assert rig.disconnects == [rig.disconnects[0]] and rig.disconnects[0] is not None
    assert state_of(rig.client) is ClientState.CLOSED


def test_close_during_an_attempt_stops_it(rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    rig.srv.no_greeting = True
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    rig.advance(1.0)
    rig.until(lambda: rig.srv.clients == 1)
    assert state_of(rig.client) is ClientState.CONNECTING
    rig.client.close()
    rig.pump()
    assert state_of(rig.client) is ClientState.CLOSED and rig.reactor.pending_timers() == 0
    assert len(rig.disconnects) == 1 and rig.attempts == []
    rig.until(lambda: rig.srv.clients == 0)


def test_closing_from_on_disconnect_stops_the_policy(rig_factory: RigFactory) -> None:
    """A manager that decides, in ``on_disconnect``, not to go on: its ``close()``
    cancels the attempt the policy had scheduled."""
    rig = rig_factory(POLICY)
    rig.client.on_disconnect(lambda reason: rig.client.close())
    rig.connect()
    rig.srv.drop_clients()
    rig.until(lambda: state_of(rig.client) is ClientState.CLOSED)
    rig.advance(100)
    assert rig.negotiations() == 1 and rig.attempts == []
    assert rig.reactor.pending_timers() == 0 and len(rig.disconnects) == 1


def test_an_attempt_that_hangs_is_cut_by_the_connect_timeout(rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    rig.srv.no_greeting = True  # read when a connection starts
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    rig.advance(1.0)
    assert state_of(rig.client) is ClientState.CONNECTING and rig.attempts == []
    rig.advance(5.0)  # POLICY.connect_timeout
    assert len(rig.attempts) == 1
    n, exc = rig.attempts[0]
    assert n == 1 and isinstance(exc, OperationTimeout) and exc.connection == NAME
    rig.srv.no_greeting = False
    assert rig.next_delay() == pytest.approx(2.0)
    rig.advance(2.0)
    rig.until(lambda: rig.client.state is ClientState.READY)
    assert rig.attempts[-1] == (2, None) and len(rig.disconnects) == 1


def test_commands_kept_while_disconnected_obey_their_own_timeouts(rig_factory: RigFactory) -> None:
    policy = dataclasses.replace(POLICY, initial=10.0, maximum=10.0)
    rig = rig_factory(policy)
    rig.connect()
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    short = rig.client.execute("query-name", timeout=3)
    patient = rig.client.execute("query-status", timeout=60)
    rig.advance(3.001)
    exc = short.exception(0)
    assert isinstance(exc, OperationTimeout) and "query-name" in str(exc)
    assert not patient.done()
    rig.advance(7.0)
    rig.until(patient.done)
    assert patient.result(0)["status"] == "prelaunch"
    assert "query-name" not in rig.srv.commands()  # timed out while queued: never sent


def test_a_failed_first_connect_is_not_the_policys_business(rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.stop_server()
    fut = rig.client.connect(rig.path, timeout=5)
    rig.until(fut.done)
    assert isinstance(fut.exception(0), ConnectError)
    assert rig.reactor.pending_timers() == 0 and rig.attempts == [] and rig.disconnects == []
    with pytest.raises(StateError, match="not connected"):
        rig.client.execute("query-status")


def test_a_client_on_a_given_socket_is_not_reconnected(rig_factory: RigFactory) -> None:
    """``connect_socket`` has no address to go back to: the policy cannot apply."""
    rig = rig_factory(POLICY)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(rig.path)
    fut = rig.client.connect_socket(sock, timeout=5)
    rig.until(fut.done)
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    assert len(rig.disconnects) == 1
    assert rig.reactor.pending_timers() == 0 and rig.attempts == []


def test_without_a_policy_nothing_reconnects(rig_factory: RigFactory) -> None:
    rig = rig_factory(None)
    rig.connect()
    queued = [rig.client.execute("query-status") for _ in range(3)]
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    assert all(isinstance(f.exception(0), ConnectionLost) for f in queued)
    assert rig.reactor.pending_timers() == 0
    with pytest.raises(StateError, match="not connected"):
        rig.client.execute("query-status")
    rig.advance(100)
    assert rig.negotiations() == 1 and rig.attempts == []


def test_repeated_losses_each_fire_one_disconnect_and_one_reconnect(
        rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    results: list[Future[Any]] = []
    for round_ in range(5):
        rig.srv.drop_clients()
        rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
        results.append(rig.client.execute("query-status"))
        rig.advance(1.0)
        rig.until(lambda: rig.client.state is ClientState.READY)
        rig.srv.emit("TICK", {"n": round_})
        rig.pump()
    assert len(rig.disconnects) == 5 and rig.attempts == [(1, None)] * 5
    assert rig.client.metrics().reconnects == 5
    assert rig.events == [0, 1, 2, 3, 4]
    all_of = gather(results)
    rig.until(all_of.done)
    assert [r["status"] for r in all_of.result(0)] == ["prelaunch"] * 5
    ids = [m["id"] for m in rig.srv.received]
    assert len(ids) == len(set(ids)) == 5 + 6  # six negotiations, five commands


def test_a_policy_that_never_gives_up_keeps_trying(rig_factory: RigFactory) -> None:
    """QEMU is down for long (here 400 attempts at most one second apart): a policy
    without ``max_attempts`` keeps scheduling attempts at the capped delay."""
    policy = ReconnectPolicy(initial=0.001, multiplier=10.0, maximum=1.0, jitter=0)
    rig = rig_factory(policy)
    rig.connect()
    rig.stop_server()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    kept = rig.client.execute("query-status")
    for attempt in range(1, 401):
        delay = rig.next_delay()
        assert delay is not None, f"no attempt scheduled after attempt {attempt - 1}"
        assert delay <= 1.0
        rig.advance(delay)
        rig.until(lambda n=attempt: len(rig.attempts) == n)
    assert not kept.done()


def test_event_callbacks_registered_while_disconnected_get_events_after(
        rig_factory: RigFactory) -> None:
    rig = rig_factory(POLICY)
    rig.connect()
    rig.srv.drop_clients()
    rig.until(lambda: rig.client.state is ClientState.DISCONNECTED)
    got: list[Event] = []
    rig.client.on_event(got.append, "RESUME")
    rig.advance(1.0)
    rig.until(lambda: rig.client.state is ClientState.READY)
    cont = rig.client.execute("cont")
    rig.until(cont.done)
    rig.pump()
    assert [e.name for e in got] == ["RESUME"]
