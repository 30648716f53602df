"""A randomized stress test of clients used from many threads (issue 11 §1, §3, §5).

Worker threads pick operations at random (a seeded ``random.Random`` per thread) on a
pool of clients that live on one reactor run by its own thread, against the threaded
fake server: commands (answered, slow, never answered, with a timeout, with a file
descriptor), typed operations, cancellations, ``wait_event``, subscriptions made and
cancelled, done-callbacks added (some raise on purpose), events emitted, ``close()``
with a new client put in its place, ``reconnect()``, and the server dropping every
client, while some clients carry a ``ReconnectPolicy``.

Afterwards: every future handed out is done with a result, a typed error or a
cancellation (never pending, never an unexpected exception type); each answered
command got its own reply and none reached the server twice; every done-callback ran,
on the reactor thread; no descriptor, selector registration or timer is left; the only
ERROR records are those of the callbacks that raised on purpose.

The seed is printed (and named in every assertion). Thread scheduling is not seeded,
so a seed replays the same choices, not the same interleaving. Set
``QMPLEX_STRESS_SEEDS=1,2,3`` to run given seeds and ``QMPLEX_STRESS_OPS`` for the
operations per thread.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from qmplex import (
    Cancelled,
    Client,
    ClientState,
    CommandError,
    ConnectError,
    ConnectionLost,
    Event,
    Future,
    OperationTimeout,
    Reactor,
    ReconnectPolicy,
    StateError,
    Subscription,
    WaitTimeout,
)
from qmplex.testing import FakeQMPServer, fake_server

from ..threads_support import BOUND, ReactorThread, Workers, open_fds, qmplex_errors

THREADS = 4
OPS = int(os.environ.get("QMPLEX_STRESS_OPS", "2500"))
SLOTS = 4  # clients in the pool at any time; the odd slots have a reconnect policy
POLICY = ReconnectPolicy(initial=0.002, multiplier=2.0, maximum=0.05, jitter=0.2,
                         connect_timeout=5.0)


def _seeds() -> list[int]:
    given = os.environ.get("QMPLEX_STRESS_SEEDS")
    if given:
        return [int(s) for s in given.split(",") if s.strip()]
    return [20261205, 11, int(time.time() * 1000) % 1_000_000_007]  # the last: new each run


class Provoked(Exception):
    """Raised on purpose by a callback of the test."""


# What each kind of future may end with, besides a result (None: any result).
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "command": (CommandError, ConnectionLost, OperationTimeout, Cancelled),
    "wait_event": (ConnectionLost, OperationTimeout, Cancelled),
    "connect": (ConnectError, ConnectionLost, OperationTimeout, Cancelled, StateError),
}


@dataclass
class Figures:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: int = 0  # StateError raised by a call (closed or disconnected client)
    waits_cut: int = 0  # result(timeout) that stopped waiting (the future stays pending)
    policy_reconnects: int = 0
    disconnects: int = 0


class Stress:
    """The shared state of one run (the test's own bookkeeping is under ``lock``)."""

    def __init__(self, seed: int, server: FakeQMPServer, reactor: Reactor,
                 thread: ReactorThread) -> None:
        self.seed = seed
        self.server = server
        self.reactor = reactor
        self.thread = thread
        self.lock = threading.Lock()
        self.slots: list[Client] = []
        self.clients: list[Client] = []  # every client ever made
        self.futures: list[tuple[str, Future[Any]]] = []
        self.echoes: dict[str, tuple[Future[Any], dict[str, Any]]] = {}
        self.subs: list[Subscription] = []
        self.figures = Figures()
        self.problems: list[str] = []
        self.provoked = 0
        self.callbacks_added = 0
        self.callbacks_ran: collections.Counter[int] = collections.Counter()
        self.cond = threading.Condition(self.lock)
        self.pipe_r, self.pipe_w = os.pipe()
        for slot in range(SLOTS):
            self.slots.append(self.new_client(slot))

    # ------------------------------------------------------------ bookkeeping
    def new_client(self, slot: int) -> Client:
        client = Client(self.reactor, name=f"slot{slot}",
                        reconnect=POLICY if slot % 2 else None)
        client.on_disconnect(self._on_disconnect)
        client.on_reconnect(self._on_reconnect)
        with self.lock:
            self.clients.append(client)
        self.keep("connect", client.connect(self.server.path, timeout=BOUND))
        return client

    def keep(self, kind: str, fut: Future[Any]) -> Future[Any]:
        with self.lock:
            self.futures.append((kind, fut))
        return fut

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def provoke(self) -> None:
        with self.lock:
            self.provoked += 1
        raise Provoked("raised on purpose")

    def _on_disconnect(self, reason: BaseException | None) -> None:
        with self.lock:
            self.figures.disconnects += 1
        self._check_thread("on_disconnect")

    def _on_reconnect(self, attempt: int, error: BaseException | None) -> None:
        if error is None:
            with self.lock:
                self.figures.policy_reconnects += 1
        self._check_thread("on_reconnect")

    def _check_thread(self, what: str) -> None:
        if threading.get_ident() != self.thread.ident:
            self.problem(f"{what} ran on thread {threading.get_ident()}, not the reactor's")

    def done_callback(self, raises: bool) -> Callable[[Future[Any]], None]:
        def callback(fut: Future[Any]) -> None:
            with self.cond:
                self.callbacks_ran[threading.get_ident()] += 1
                self.cond.notify_all()
            if not fut.done():
                self.problem("a done-callback ran before its future was done")
            if raises:
                self.provoke()

        return callback

    def event_callback(self, raises: bool) -> Callable[[Event], None]:
        def callback(event: Event) -> None:
            self._check_thread("an event callback")
            if raises:
                self.provoke()

        return callback

    # ---------------------------------------------------------------- workers
    def worker(self, k: int) -> None:
        rng = random.Random(f"{self.seed}-{k}")
        mine: list[Future[Any]] = []
        names = [name for name, _ in OPERATIONS]
        weights = [weight for _, weight in OPERATIONS]
        for i in range(OPS):
            op = rng.choices(names, weights)[0]
            with self.lock:
                slot = rng.randrange(SLOTS)
                client = self.slots[slot]
                self.figures.ops[op] += 1
            tag = f"{k}:{i}"
            try:
                fut = getattr(self, f"op_{op}")(rng, client, slot, tag, mine)
            except StateError:
                with self.lock:
                    self.figures.refused += 1
                continue
            except Exception as exc:
                self.problem(f"{op} on {client!r} raised {exc!r}")
                continue
            if fut is not None:
                mine.append(fut)

    def op_echo(self, rng: random.Random, c: Client, slot: int, tag: str,
                mine: list[Future[Any]]) -> Future[Any]:
        args = {"s": tag}
        fut = self.keep("command", c.execute(rng.choice(["x-echo", "x-slow"]), args))
        with self.lock:
            self.echoes[tag] = (fut, args)
        return fut

    def op_never(self, rng: random.Random, c: Client, slot: int, tag: str,
                 mine: list[Future[Any]]) -> Future[Any]:
        timeout = rng.choice([None, 0.001, 0.02])
        return self.keep("command", c.execute("x-never", {"s": tag}, timeout=timeout))

    def op_fd(self, rng: random.Random, c: Client, slot: int, tag: str,
              mine: list[Future[Any]]) -> Future[Any]:
        return self.keep("command", c.execute("getfd", {"fdname": f"fd{tag}"},
                                              fds=[self.pipe_w]))

    def op_typed(self, rng: random.Random, c: Client, slot: int, tag: str,
                 mine: list[Future[Any]]) -> Future[Any]:
        which = rng.randrange(4)
        node = f"n{tag.replace(':', '-')}"
        if which == 0:
            return self.keep("command", c.vm.query_status())
        if which == 1:
            self.keep("command", c.block.blockdev_add(f"/nonexistent/{node}", node))
            return self.keep("command", c.block.blockdev_del(node))
        if which == 2:  # no such device: a CommandError
            return self.keep("command", c.devices.device_del(f"gone{node}", timeout=1.0))
        return self.keep("command", c.vm.stop())

    def op_cancel(self, rng: random.Random, c: Client, slot: int, tag: str,
                  mine: list[Future[Any]]) -> None:
        if mine:
            rng.choice(mine).cancel()

    def op_wait(self, rng: random.Random, c: Client, slot: int, tag: str,
                mine: list[Future[Any]]) -> None:
        if not mine:
            return
        fut = rng.choice(mine[-20:])
        try:
            fut.exception(timeout=rng.choice([0.0, 0.01, 0.5]))
        except WaitTimeout:
            with self.lock:
                self.figures.waits_cut += 1

    def op_wait_event(self, rng: random.Random, c: Client, slot: int, tag: str,
                      mine: list[Future[Any]]) -> Future[Any]:
        timeout = rng.choice([None, 0.005, 0.5])
        return self.keep("wait_event", c.wait_event("X-TICK", timeout=timeout))

    def op_emit(self, rng: random.Random, c: Client, slot: int, tag: str,
                mine: list[Future[Any]]) -> None:
        self.server.emit("X-TICK", {"s": tag})

    def op_subscribe(self, rng: random.Random, c: Client, slot: int, tag: str,
                     mine: list[Future[Any]]) -> None:
        sub = c.on_event(self.event_callback(rng.random() < 0.2), "X-TICK")
        with self.lock:
            self.subs.append(sub)

    def op_unsubscribe(self, rng: random.Random, c: Client, slot: int, tag: str,
                       mine: list[Future[Any]]) -> None:
        with self.lock:
            sub = self.subs.pop(rng.randrange(len(self.subs))) if self.subs else None
        if sub is not None:
            sub.cancel()

    def op_callback(self, rng: random.Random, c: Client, slot: int, tag: str,
                    mine: list[Future[Any]]) -> None:
        if not mine:
            return
        with self.lock:
            self.callbacks_added += 1
        rng.choice(mine).add_done_callback(self.done_callback(rng.random() < 0.2))

    def op_close(self, rng: random.Random, c: Client, slot: int, tag: str,
                 mine: list[Future[Any]]) -> None:
        c.close()
        replacement = self.new_client(slot)
        with self.lock:
            if self.slots[slot] is c:
                self.slots[slot] = replacement
                return
        replacement.close()  # another thread replaced it first

    def op_reconnect(self, rng: random.Random, c: Client, slot: int, tag: str,
                     mine: list[Future[Any]]) -> Future[Any] | None:
        if c.state is not ClientState.DISCONNECTED and rng.random() < 0.8:
            return None  # mostly when it is needed; sometimes to be refused
        return self.keep("connect", c.reconnect(timeout=BOUND))

    def op_drop(self, rng: random.Random, c: Client, slot: int, tag: str,
                mine: list[Future[Any]]) -> None:
        self.server.drop_clients()

    # ----------------------------------------------------------------- checks
    def settle_and_check(self) -> None:
        for client in list(self.clients):
            client.close()
        pending = []
        for kind, fut in self.futures:
            try:
                exc = fut.exception(timeout=BOUND)
            except WaitTimeout:
                pending.append(f"{kind} {fut!r}")
                continue
            if exc is None:
                self.figures.outcomes["result"] += 1
            elif isinstance(exc, ALLOWED[kind]):
                self.figures.outcomes[type(exc).__name__] += 1
            else:
                self.problem(f"a {kind} future failed with {exc!r}")
        assert not pending, f"futures still pending after close(): {pending[:10]}"

        # Each answered command got its own reply; none reached the server twice.
        sent = collections.Counter((m.get("arguments") or {}).get("s")
                                   for m in list(self.server.received))
        for tag, (fut, args) in self.echoes.items():
            if sent[tag] > 1:
                self.problem(f"command {tag} reached the server {sent[tag]} times")
            if fut.exception() is None:
                if fut.result() != args:
                    self.problem(f"command {tag} got {fut.result()!r}, not its own reply")
                if sent[tag] != 1:
                    self.problem(f"command {tag} succeeded but reached the server "
                                 f"{sent[tag]} times")
        ids = [m["id"] for m in list(self.server.received) if "id" in m]
        dup = [i for i, n in collections.Counter(ids).items() if n > 1]
        assert not dup, f"command ids used twice: {dup[:10]}"

        with self.cond:
            self.cond.wait_for(
                lambda: sum(self.callbacks_ran.values()) >= self.callbacks_added, BOUND)
            ran = dict(self.callbacks_ran)
        assert sum(ran.values()) == self.callbacks_added, \
            f"{self.callbacks_added - sum(ran.values())} done-callbacks never ran"
        assert set(ran) <= {self.thread.ident}, "a done-callback ran off the reactor thread"
        assert all(c.state is ClientState.CLOSED for c in self.clients)


OPERATIONS: list[tuple[str, float]] = [
    ("echo", 40), ("never", 3), ("fd", 2), ("typed", 12), ("cancel", 6), ("wait", 8),
    ("wait_event", 5), ("emit", 3), ("subscribe", 3), ("unsubscribe", 2), ("callback", 7),
    ("close", 0.6), ("reconnect", 2), ("drop", 0.4),
]


@pytest.mark.parametrize("seed", _seeds())
def test_random_operations_from_many_threads(seed: int) -> None:
    print(f"thread stress seed={seed} (replay: QMPLEX_STRESS_SEEDS={seed})")
    before = open_fds()
    started = time.monotonic()
    with qmplex_errors() as errors:
        with fake_server() as server:
            server.on("x-echo", handler=lambda args: args)
            server.on("x-slow", handler=lambda args: args, delay=0.005)
            server.on("x-never", never=True)
            reactor = Reactor()
            thread = ReactorThread(reactor).start()
            stress = Stress(seed, server, reactor, thread)
            try:
                Workers(THREADS, stress.worker).start().join(120)
                assert thread.alive(), f"seed {seed}: reactor.run() ended"
                stress.settle_and_check()
                server.wait_for_clients(0, BOUND)
                assert reactor.watched_fds() == 0, f"seed {seed}: sockets still registered"
                assert reactor.pending_timers() == 0, f"seed {seed}: timers still scheduled"
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}: {exc}") from exc
            finally:
                for client in stress.clients:
                    client.close()
                thread.stop()
                reactor.close()
                os.close(stress.pipe_r)
                os.close(stress.pipe_w)
            assert not server.handler_errors, f"seed {seed}: {server.handler_errors}"
    assert not stress.problems, f"seed {seed}: {stress.problems[:10]}"
    leaked = open_fds() - before
    assert not leaked, f"seed {seed}: descriptors leaked: {sorted(leaked)}"
    unexpected = errors.unexpected(Provoked)
    assert not unexpected, f"seed {seed}: unexpected ERROR records: {unexpected[:10]}"
    assert len(errors.records) == stress.provoked, \
        f"seed {seed}: {stress.provoked} callbacks raised, {len(errors.records)} logged"
    f = stress.figures
    print(f"seed={seed}: {THREADS} threads x {OPS} ops in {time.monotonic() - started:.1f} s; "
          f"ops {dict(f.ops)}; futures {dict(f.outcomes)}; refused {f.refused}; "
          f"waits cut {f.waits_cut}; disconnects {f.disconnects}; "
          f"policy reconnects {f.policy_reconnects}; clients {len(stress.clients)}; "
          f"callbacks {stress.callbacks_added} ({stress.provoked} raised on purpose)")
