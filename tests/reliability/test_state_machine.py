"""Stateful property tests (hypothesis ``RuleBasedStateMachine``).

``ClientMachine`` drives one client against a hand-driven peer on a fake clock with
random submits (some waiting for an event, some with a timeout), replies in any order
(ok or error), events, cancels, clock advances, garbage lines and disconnects followed
by a reconnect. A model predicts, after every step, exactly which commands the peer
has received (so order and the window are checked byte for byte) and how every future
ended. Invariants: commands reach the peer in submission order; every future completes
exactly once (its done callbacks run once) with the predicted outcome; the window never
stalls (while live commands wait in the queue, the peer holds exactly ``window``
unanswered commands); at the end no timer, registration or pending command is left.

``TimerMachine`` does the same for the reactor's timer heap, including timers cancelled
in bulk from I/O callbacks (which compacts the heap mid-pass).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from qmplex import (
    Cancelled,
    Client,
    CommandError,
    ConnectionLost,
    Event,
    EventFilter,
    Future,
    Reactor,
    Timeout,
)

from .helpers import FakeClock, FastPeer

WINDOW = 2


@dataclass
class Cmd:
    seq: int
    future: Future[Any]
    until: bool
    deadline: float | None
    status: str = "queued"  # queued, sent, answered, done
    outcome: str = ""  # ok, error, event, cancelled, timeout, lost
    event_seen: bool = False
    callbacks: int = 0


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.reactor = Reactor(clock=self.clock)
        self.client = Client(self.reactor, window=WINDOW)
        self.peer = FastPeer(self.reactor, self.client)
        self.peer.handshake()
        self.cmds: list[Cmd] = []
        self.queue: list[Cmd] = []  # submitted, not yet sent (model of the client)
        self.unanswered: list[dict[str, Any]] = []  # what the peer holds, unanswered
        self.wire: list[int] = []  # seqs in the order the peer received them
        self.connections = 1

    # ------------------------------------------------------------------ model
    def _model_pump(self) -> list[int]:
        """What the client must send now: skip dead heads, fill the window."""
        sent: list[int] = []
        while self.queue:
            head = self.queue[0]
            if head.status == "done":
                self.queue.pop(0)
                continue
            if len(self.unanswered) + len(sent) >= WINDOW:
                break
            self.queue.pop(0)
            head.status = "sent"
            sent.append(head.seq)
        return sent

    def _done(self, cmd: Cmd, outcome: str) -> None:
        cmd.status = "done"
        cmd.outcome = outcome

    def _sync(self) -> None:
        """Turn the reactor, then compare the bytes the peer got with the model."""
        expected = self._model_pump()
        got = self.peer.read()
        seqs = [m["arguments"]["seq"] for m in got]
        assert seqs == expected, (seqs, expected)
        self.unanswered.extend(got)
        self.wire.extend(seqs)

    def _by_seq(self, seq: int) -> Cmd:
        return self.cmds[seq]

    # ------------------------------------------------------------------ rules
    @rule(until=st.booleans(), timeout=st.none() | st.integers(1, 5))
    def submit(self, until: bool, timeout: int | None) -> None:
        seq = len(self.cmds)
        flt = EventFilter("DEVICE_DELETED", {"device": f"d{seq}"}) if until else None
        fut = self.client.execute("cmd", {"seq": seq}, timeout=timeout, until=flt)
        cmd = Cmd(seq, fut, until, None if timeout is None else self.clock.now + timeout)
        def count(_f: Future[Any]) -> None:
            cmd.callbacks += 1

        fut.add_done_callback(count)
        self.cmds.append(cmd)
        self.queue.append(cmd)
        self._sync()

    @precondition(lambda self: bool(self.unanswered))
    @rule(pick=st.integers(0, 100), ok=st.booleans())
    def reply(self, pick: int, ok: bool) -> None:
        msg = self.unanswered.pop(pick % len(self.unanswered))
        cmd = self._by_seq(msg["arguments"]["seq"])
        if ok:
            self.peer.reply(msg, {"seq": cmd.seq})
        else:
            self.peer.reply(msg, error=("GenericError", f"no {cmd.seq}"))
        if cmd.status == "sent":
            if not ok:
                self._done(cmd, "error")
            elif not cmd.until:
                self._done(cmd, "ok")
            elif cmd.event_seen:
                self._done(cmd, "event")
            else:
                cmd.status = "answered"
        self._sync()

    @precondition(lambda self: any(c.until for c in self.cmds))
    @rule(pick=st.integers(0, 1000))
    def event(self, pick: int) -> None:
        candidates = [c for c in self.cmds if c.until]
        cmd = candidates[pick % len(candidates)]
        self.peer.event("DEVICE_DELETED", {"device": f"d{cmd.seq}", "path": "/x"})
        if cmd.status == "sent":
            cmd.event_seen = True
        elif cmd.status == "answered":
            self._done(cmd, "event")
        # queued: not written yet, so not its event; done: too late
        self._sync()

    @precondition(lambda self: bool(self.cmds))
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        cmd = self.cmds[pick % len(self.cmds)]
        was_pending = cmd.status != "done"
        assert cmd.future.cancel() == was_pending
        if was_pending:
            self._done(cmd, "cancelled")
        self._sync()

    @rule(dt=st.sampled_from([0.5, 1, 2, 3]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)
        for cmd in self.cmds:
            if cmd.status != "done" and cmd.deadline is not None \
                    and cmd.deadline <= self.clock.now:
                self._done(cmd, "timeout")
        self._sync()

    @rule(line=st.sampled_from([b"[1]", b'{"return": {}, "id": 99999}', b"\x00\x00",
                                b'{"event": ""}', b'{"hello": 1}']))
    def garbage(self, line: bytes) -> None:
        self.peer.send(line + b"\r\n")  # reported, the connection continues
        self._sync()

    @rule()
    def disconnect_and_reconnect(self) -> None:
        self.peer.sock.close()
        self.peer.pump()
        for cmd in self.cmds:
            if cmd.status != "done":
                self._done(cmd, "lost")
        self.queue.clear()
        self.unanswered.clear()
        self.peer = FastPeer(self.reactor, self.client)
        self.peer.handshake()
        self.connections += 1
        self._sync()

    # ------------------------------------------------------------- invariants
    @invariant()
    def futures_match_the_model(self) -> None:
        kinds = {"ok": None, "event": None, "error": CommandError, "cancelled": Cancelled,
                 "timeout": Timeout, "lost": ConnectionLost}
        for cmd in self.cmds:
            fut = cmd.future
            assert fut.done() == (cmd.status == "done"), (cmd, fut)
            if cmd.status != "done":
                assert cmd.callbacks == 0
                continue
            assert cmd.callbacks == 1, cmd  # exactly once
            exc = fut.exception(0)
            want = kinds[cmd.outcome]
            if want is None:
                assert exc is None, (cmd, exc)
                value = fut.result(0)
                if cmd.outcome == "ok":
                    assert value == {"seq": cmd.seq}
                else:
                    assert isinstance(value, Event) and value.data["device"] == f"d{cmd.seq}"
            else:
                assert isinstance(exc, want), (cmd, exc)

    @invariant()
    def window_is_full_whenever_live_commands_wait(self) -> None:
        live_queued = [c for c in self.queue if c.status == "queued"]
        if live_queued:
            assert len(self.unanswered) == WINDOW
        assert len(self.unanswered) <= WINDOW
        assert self.client._conn.outstanding == len(self.unanswered)

    @invariant()
    def pending_count_matches(self) -> None:
        assert self.client.pending == sum(c.status != "done" for c in self.cmds)

    @invariant()
    def wire_order_is_submission_order(self) -> None:
        assert self.wire == sorted(self.wire)
        assert len(set(self.wire)) == len(self.wire)  # nothing sent twice

    def teardown(self) -> None:
        self.client.close()
        self.peer.pump()
        for cmd in self.cmds:
            assert cmd.future.done()
            assert cmd.callbacks == 1, cmd
        assert self.reactor.pending_timers() == 0
        assert self.reactor.watched_fds() == 0
        self.peer.close()
        self.reactor.close()


ClientMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestClientMachine = ClientMachine.TestCase


class TimerMachine(RuleBasedStateMachine):
    """Timers fire once, at or after their deadline, unless cancelled first, also when
    an I/O callback cancels enough of them to compact the heap in the same pass."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.reactor = Reactor(clock=self.clock)
        self.fired: dict[int, int] = {}
        self.timers: dict[int, tuple[Any, float]] = {}  # id -> (handle, when)
        self.cancelled: set[int] = set()
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.to_cancel_in_io: list[int] = []
        self.reactor.add_reader(self.a.fileno(), self._on_io)

    def _on_io(self) -> None:
        self.a.recv(4096)
        for tid in self.to_cancel_in_io:
            self.timers[tid][0].cancel()
        self.to_cancel_in_io = []

    def _fire(self, tid: int) -> None:
        self.fired[tid] = self.fired.get(tid, 0) + 1
        assert self.clock.now >= self.timers[tid][1]

    @initialize(n=st.integers(0, 150))
    def many(self, n: int) -> None:
        for i in range(n):  # enough timers that bulk cancels compact the heap
            self.add(i % 50)

    @rule(delay=st.integers(0, 50))
    def add(self, delay: int) -> None:
        tid = len(self.timers)
        handle = self.reactor.call_later(delay, self._fire, tid)
        self.timers[tid] = (handle, self.clock.now + delay)

    @rule(pick=st.integers(0, 10_000))
    def cancel(self, pick: int) -> None:
        if self.timers:
            tid = pick % len(self.timers)
            self.timers[tid][0].cancel()
            if tid not in self.fired:
                self.cancelled.add(tid)

    @rule(count=st.integers(1, 200))
    def cancel_many_from_io(self, count: int) -> None:
        live = [t for t in self.timers if t not in self.fired and t not in self.cancelled]
        chosen = live[:count]
        self.to_cancel_in_io = chosen
        self.cancelled.update(chosen)
        self.b.send(b"x")
        self.reactor.run_once(0)

    @rule(dt=st.integers(0, 30))
    def advance(self, dt: int) -> None:
        self.clock.advance(dt)
        self.reactor.run_once(0)
        due = {t for t, (_, when) in self.timers.items()
               if when <= self.clock.now and t not in self.cancelled}
        assert set(self.fired) == due  # every due timer ran, and no other

    @invariant()
    def each_timer_fired_at_most_once_and_only_if_due(self) -> None:
        for tid, n in self.fired.items():
            assert n == 1, (tid, n)
            assert tid not in self.cancelled
        live = sum(1 for t in self.timers if t not in self.cancelled and t not in self.fired)
        assert self.reactor.pending_timers() == live

    def teardown(self) -> None:
        self.clock.advance(1000)
        self.reactor.run_once(0)
        self.reactor.run_once(0)
        for tid in self.timers:
            assert self.fired.get(tid, 0) == (0 if tid in self.cancelled else 1), tid
        self.reactor.remove_reader(self.a.fileno())
        self.reactor.close()
        self.a.close()
        self.b.close()


TimerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestTimerMachine = TimerMachine.TestCase
