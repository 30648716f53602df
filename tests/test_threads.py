"""Clients used from many threads (ARCHITECTURE.md "Threads", issue 11 §1 and §3).

Worker threads submit thousands of commands and typed operations to clients whose
reactor is run by another thread (``reactor.run()``), against the threaded fake server
(a third thread): nothing is lost, nothing is sent twice, each thread's commands reach
the server in that thread's order, every future completes, and done-callbacks added
from workers run on the reactor thread. ``Reactor.submit`` from other threads, the
blocking style with several waiting threads and no reactor thread, and a command made
while ``run()`` sleeps (written within one pass, never left for unrelated I/O).

The tests at the end pin down thread races found in the core (now fixed); each forces
its interleaving with a tracer (no sleeps) and says what went wrong.
"""

from __future__ import annotations

import collections
import operator
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qmplex import (
    Client,
    ConnectionLost,
    Event,
    Future,
    Reactor,
    StateError,
    StatusInfo,
    WaitTimeout,
)
from qmplex.connection import Connection
from qmplex.testing import FakeQMPServer, fake_server

from .threads_support import (
    BOUND,
    ErrorRecords,
    PauseAt,
    ReactorThread,
    Returned,
    SleepSpy,
    Workers,
    open_fds,
    qmplex_errors,
)

WORKERS = 4
ROUNDS = 250  # per worker: 250 x 15 = 3,750 commands
ECHOES = 10  # x-echo commands pipelined per round


class Provoked(Exception):
    """Raised on purpose by a test's callback (expected in the log, nothing else is)."""


@dataclass
class Rig:
    """A threaded fake server, a reactor run by its own thread, and the clients made."""

    server: FakeQMPServer
    reactor: Reactor
    thread: ReactorThread
    errors: ErrorRecords
    clients: list[Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> Client:
        c = Client(self.reactor, **kwargs)
        self.clients.append(c)
        c.connect(self.server.path, timeout=BOUND).result(BOUND)
        return c


@pytest.fixture
def rig() -> Iterator[Rig]:
    """The rig; afterwards: every client closed, no registration, timer, descriptor or
    unexpected ERROR record left behind, and the reactor thread still alive."""
    before = open_fds()
    with qmplex_errors() as errors, fake_server() as server:
        server.on("x-echo", handler=lambda args: args)
        reactor = Reactor()
        thread = ReactorThread(reactor).start()
        r = Rig(server, reactor, thread, errors)
        try:
            yield r
            assert thread.alive(), "reactor.run() ended during the test"
        finally:
            for c in r.clients:
                c.close()
            server.wait_for_clients(0, BOUND)
            thread.stop()
            assert reactor.watched_fds() == 0, "a socket is still registered"
            assert reactor.pending_timers() == 0, "a timer is still scheduled"
            reactor.close()
        assert not server.handler_errors
    assert open_fds() == before, "file descriptors leaked"
    assert not errors.unexpected(Provoked), errors.unexpected(Provoked)


class CallbackLog:
    """Counts done-callbacks and records the threads they ran on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.added = 0
        self.threads: collections.Counter[int] = collections.Counter()

    def add(self, fut: Future[Any]) -> None:
        with self.cond:
            self.added += 1
        fut.add_done_callback(self._ran)

    def _ran(self, fut: Future[Any]) -> None:
        assert fut.done()
        with self.cond:
            self.threads[threading.get_ident()] += 1
            self.cond.notify_all()

    def wait_all(self) -> collections.Counter[int]:
        with self.cond:
            assert self.cond.wait_for(lambda: sum(self.threads.values()) == self.added,
                                      BOUND), \
                f"{self.added - sum(self.threads.values())} of {self.added} done-callbacks " \
                "never ran"
            return self.threads


def _executed(server: FakeQMPServer, client_tag: int | None = None) -> list[dict[str, Any]]:
    """The commands the server received (not the negotiation)."""
    return [m for m in list(server.received)
            if m.get("execute") not in (None, "qmp_capabilities")
            and (client_tag is None or (m.get("arguments") or {}).get("c") == client_tag)]


def _tag(msg: dict[str, Any]) -> tuple[int, tuple[str, Any]] | None:
    """(thread, (command, what)) for a command of test_workers_share_one_client."""
    name = msg["execute"]
    args = msg.get("arguments") or {}
    if name == "x-echo" and "t" in args:
        return args["t"], (name, args["n"])
    key = args.get("node-name") or args.get("id")
    if isinstance(key, str) and key.startswith("t"):
        return int(key[1:].split("-")[0]), (name, key)
    return None


# ------------------------------------------------------------------- §1: workers
def test_workers_share_one_client_run_by_a_reactor_thread(rig: Rig) -> None:
    client = rig.client()
    bystander = rig.client(name="bystander")
    callbacks = CallbackLog()
    expected: dict[int, list[tuple[str, Any]]] = {}
    stop_bystander = threading.Event()
    bystander_done: list[int] = []

    def worker(k: int) -> None:
        order = expected[k] = []
        for r in range(ROUNDS):
            echoes = []
            for j in range(ECHOES):
                args = {"t": k, "n": r * ECHOES + j}
                echoes.append((client.execute("x-echo", args), args))
                order.append(("x-echo", args["n"]))
            node, dev = f"t{k}-b{r}", f"t{k}-d{r}"
            status = client.vm.query_status()
            added = client.block.blockdev_add(f"/nonexistent/{node}.img", node)
            order.append(("blockdev-add", node))
            plugged = client.devices.scsi_device_add(node, dev, "scsi-hd", "scsi0.0",
                                                     scsi_id=r % 256, lun=k)
            order.append(("device_add", dev))
            for f in (echoes[0][0], echoes[-1][0], status, added, plugged):
                callbacks.add(f)
            for f, args in echoes:
                assert f.result(BOUND) == args  # its own reply, not another thread's
            info = status.result(BOUND)
            assert isinstance(info, StatusInfo) and info.status == "prelaunch"
            assert added.result(BOUND) is None
            assert plugged.result(BOUND) is None
            unplug = client.devices.device_del(dev)
            order.append(("device_del", dev))
            callbacks.add(unplug)
            event = unplug.result(BOUND)
            assert isinstance(event, Event) and event.data["device"] == dev
            client.block.blockdev_del(node).result(BOUND)
            order.append(("blockdev-del", node))

    def bystanding() -> None:  # another client of the same reactor keeps working
        i = 0
        while not stop_bystander.is_set() and i < 100_000:
            assert bystander.execute("x-echo", {"b": i}).result(BOUND) == {"b": i}
            i += 1
        bystander_done.append(i)

    other = threading.Thread(target=bystanding, daemon=True)
    other.start()
    workers = Workers(WORKERS, worker).start()
    try:
        workers.join()
    finally:
        stop_bystander.set()
        other.join(BOUND)
    assert bystander_done and bystander_done[0] > 0

    # Every done-callback ran, each on the reactor thread, none on a worker.
    threads = callbacks.wait_all()
    assert set(threads) == {rig.thread.ident}
    assert callbacks.added == WORKERS * ROUNDS * 6

    # Nothing lost, nothing sent twice, each thread's commands in its own order.
    received = [m for m in _executed(rig.server) if (m.get("arguments") or {}).get("b") is None]
    per_thread: dict[int, list[tuple[str, Any]]] = {k: [] for k in range(WORKERS)}
    untagged: collections.Counter[str] = collections.Counter()
    for msg in received:
        tag = _tag(msg)
        if tag is None:
            untagged[msg["execute"]] += 1
        else:
            per_thread[tag[0]].append(tag[1])
    for k in range(WORKERS):
        assert per_thread[k] == expected[k], f"worker {k}'s commands differ from its order"
    assert untagged == {"query-status": WORKERS * ROUNDS}
    ids = [m["id"] for m in rig.server.received if "id" in m]
    assert len(ids) == len(set(ids)), "a command id was used twice"
    assert len(received) == WORKERS * ROUNDS * (ECHOES + 5)
    assert client.pending == 0 and not rig.server.nodes and not rig.server.devices

    # The reactor and both clients still work.
    assert rig.thread.alive()
    assert client.execute("x-echo", {"last": 1}).result(BOUND) == {"last": 1}
    assert bystander.execute("x-echo", {"last": 2}).result(BOUND) == {"last": 2}


def test_workers_spread_over_several_clients_on_one_reactor(rig: Rig) -> None:
    n_clients, n_workers, rounds, batch = 3, 6, 60, 8
    clients = [rig.client(name=f"vm{c}") for c in range(n_clients)]
    callbacks = CallbackLog()
    sent: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    lock = threading.Lock()

    def worker(k: int) -> None:
        for r in range(rounds):
            c = (k + r) % n_clients
            futs = []
            for j in range(batch):
                args = {"c": c, "t": k, "n": r * batch + j}
                futs.append((clients[c].execute("x-echo", args), args))
            with lock:
                sent[c, k].extend(a["n"] for _, a in futs)
            # A step chained on the reactor thread submits to the next client.
            nxt = (c + 1) % n_clients
            then_args = {"c": nxt, "t": k, "chained": r}

            def then_send(_: Any, a: dict[str, int] = then_args, n: int = nxt) -> Future[Any]:
                return clients[n].execute("x-echo", a)

            chained = futs[-1][0].chain(then_send)
            status = clients[c].vm.query_status()
            callbacks.add(chained)
            callbacks.add(status)
            for f, args in futs:
                assert f.result(BOUND) == args
            assert chained.result(BOUND) == then_args
            assert status.result(BOUND).status == "prelaunch"

    Workers(n_workers, worker).start().join()
    assert set(callbacks.wait_all()) == {rig.thread.ident}
    for c in range(n_clients):
        got: dict[int, list[int]] = collections.defaultdict(list)
        chained_seen: collections.Counter[tuple[int, int]] = collections.Counter()
        for msg in _executed(rig.server, c):
            args = msg["arguments"]
            if "n" in args:
                got[args["t"]].append(args["n"])
            else:
                chained_seen[args["t"], args["chained"]] += 1
        for k in range(n_workers):
            assert got[k] == sent.get((c, k), []), f"client {c}, worker {k}: order or count"
        assert all(v == 1 for v in chained_seen.values())
    total_chained = sum(1 for m in _executed(rig.server) if "chained" in m.get("arguments", {}))
    assert total_chained == n_workers * rounds
    ids = [m["id"] for m in rig.server.received if "id" in m]
    assert len(ids) == len(set(ids))
    assert all(c.pending == 0 for c in clients)


def test_close_and_reconnect_from_a_worker_while_others_submit(rig: Rig) -> None:
    client = rig.client()
    stop = threading.Event()
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    cycles = 15

    connected = threading.Event()  # cleared while the closer has it down
    connected.set()

    def submitter(k: int) -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                fut = client.execute("x-echo", {"t": k, "n": i})
            except StateError:
                kind = "refused"  # disconnected at the time of the call
                assert connected.wait(BOUND)  # no spinning while it is down
            else:
                try:
                    assert fut.result(BOUND) == {"t": k, "n": i}
                    kind = "ok"
                except ConnectionLost:
                    kind = "lost"
            with lock:
                outcomes[kind] += 1

    lost = threading.Event()
    reasons: list[BaseException | None] = []

    def disconnected(reason: BaseException | None) -> None:
        reasons.append(reason)  # reactor thread
        lost.set()

    client.on_disconnect(disconnected)

    def progress(want: int) -> Callable[[], bool]:
        return lambda: len(rig.server.received) > want

    def closer() -> None:
        for _ in range(cycles):
            rig.server.wait_until(progress(len(rig.server.received) + 20), BOUND)
            lost.clear()
            connected.clear()
            rig.server.drop_clients()  # the connection ends under the submitters' feet
            assert lost.wait(BOUND), "on_disconnect never ran"
            client.reconnect(timeout=BOUND).result(BOUND)
            connected.set()
        stop.set()

    workers = Workers(3, submitter).start()
    closing = Workers(1, lambda _: closer(), name="closer").start()
    try:
        closing.join(60)
    finally:
        stop.set()
        connected.set()
        workers.join()
    assert outcomes["ok"] > 0
    assert client.execute("x-echo", {"end": 1}).result(BOUND) == {"end": 1}
    # Once per established connection: each drop, then the final close (reason None).
    assert len(reasons) == cycles
    assert all(isinstance(r, ConnectionLost) for r in reasons)
    lost.clear()
    client.close()
    assert lost.wait(BOUND)
    assert reasons[cycles:] == [None]


# --------------------------------------------------------------- §1: submit
def test_submit_returns_results_and_exceptions_from_the_reactor_thread() -> None:
    with Reactor() as reactor, qmplex_errors() as errors, ReactorThread(reactor) as rt:
        assert reactor.submit(operator.add, 2, 3).result(BOUND) == 5
        assert reactor.submit(threading.get_ident).result(BOUND) == rt.ident
        assert reactor.submit(reactor.in_reactor_thread).result(BOUND) is True

        def fail(message: str) -> None:
            raise Provoked(message)

        failed = reactor.submit(fail, "boom")
        exc = failed.exception(BOUND)
        assert isinstance(exc, Provoked) and str(exc) == "boom"
        with pytest.raises(Provoked, match="boom"):
            failed.result(BOUND)
        # An exception that reaches its future is the caller's, not a reactor error.
        assert errors.records == []
    assert reactor.closed


def test_submit_from_many_threads_keeps_each_threads_order() -> None:
    n_threads, per_thread = 6, 1500
    seen: list[tuple[int, int]] = []
    on_thread: collections.Counter[int] = collections.Counter()

    def record(k: int, i: int) -> int:
        seen.append((k, i))  # reactor thread only: no lock needed
        on_thread[threading.get_ident()] += 1
        return i * 2

    with Reactor() as reactor, ReactorThread(reactor) as rt:

        def worker(k: int) -> None:
            futs = [reactor.submit(record, k, i) for i in range(per_thread)]
            assert [f.result(BOUND) for f in futs] == [2 * i for i in range(per_thread)]

        Workers(n_threads, worker).start().join()
        assert on_thread == {rt.ident: n_threads * per_thread}
    for k in range(n_threads):
        assert [i for t, i in seen if t == k] == list(range(per_thread))


def test_submit_without_a_driver_runs_at_once() -> None:
    reactor = Reactor()
    here = threading.get_ident()
    assert reactor.submit(threading.get_ident).result(0) == here  # took the idle drive

    def inside() -> bool:
        # Called on the reactor thread: runs at once, its future is done on return.
        nested = reactor.submit(operator.mul, 6, 7)
        return nested.done() and nested.result() == 42

    assert reactor.submit(inside).result(0) is True
    reactor.close()


# ----------------------------------------------------- §1: the blocking style
def test_blocking_style_threads_drive_in_turn_without_a_reactor_thread() -> None:
    n_threads, serial, pipelined = 6, 250, 60
    with fake_server() as server:
        server.on("x-echo", handler=lambda args: args)
        reactor = Reactor()
        client = Client(reactor)
        try:
            client.connect(server.path, timeout=BOUND).result(BOUND)
            assert not reactor.is_running()

            def worker(k: int) -> None:
                for i in range(serial):  # whoever waits drives; the others wait
                    assert client.execute("x-echo", {"t": k, "n": i}).result(BOUND) == \
                        {"t": k, "n": i}
                futs = [client.execute("x-echo", {"t": k, "n": serial + i})
                        for i in range(pipelined)]
                status = client.vm.query_status()
                assert [f.result(BOUND)["n"] for f in futs] == \
                    list(range(serial, serial + pipelined))
                assert status.result(BOUND).status == "prelaunch"

            Workers(n_threads, worker).start().join()
            assert not reactor.is_running()
            got: dict[int, list[int]] = collections.defaultdict(list)
            for msg in _executed(server):
                if msg["execute"] == "x-echo":
                    got[msg["arguments"]["t"]].append(msg["arguments"]["n"])
            for k in range(n_threads):
                assert got[k] == list(range(serial + pipelined))
        finally:
            client.close()
            reactor.close()


def test_waiting_threads_take_over_when_the_reactor_thread_stops() -> None:
    n_threads = 4
    with fake_server() as server:
        server.on("x-echo", handler=lambda args: args)
        reactor = Reactor()
        client = Client(reactor)
        rt = ReactorThread(reactor).start()
        try:
            client.connect(server.path, timeout=BOUND).result(BOUND)
            server.stall(reading=False)  # replies are held: the workers must wait
            submitted = threading.Barrier(n_threads + 1)

            def worker(k: int) -> None:
                futs = [client.execute("x-echo", {"t": k, "n": i}) for i in range(50)]
                submitted.wait(BOUND)
                assert [f.result(BOUND)["n"] for f in futs] == list(range(50))

            workers = Workers(n_threads, worker).start()
            submitted.wait(BOUND)
            server.wait_for_commands(1 + 7, BOUND)  # the window is on the wire
            rt.stop()  # run() returns while they wait: one of them must drive now
            server.resume()
            workers.join()
            assert not reactor.is_running()
        finally:
            rt.stop()
            client.close()
            reactor.close()


def test_close_from_another_thread_completes_a_blocking_waiters_futures() -> None:
    # The client owns its reactor and nobody runs it: a thread waits in result()
    # (driving), another closes the client. Every future ends with ConnectionLost,
    # the typed operation's too (issue 11 §3).
    with fake_server() as server:
        server.on("x-never", never=True)
        server.on("query-status", never=True)
        client = Client()
        client.connect(server.path, timeout=BOUND).result(BOUND)
        futs = [client.execute("x-never"), client.vm.query_status(),
                client.execute("x-never").then(lambda v: v)]
        waiting = threading.Barrier(2)
        outcomes: list[BaseException | None] = []

        def wait(_: int) -> None:
            waiting.wait(BOUND)
            outcomes.extend(f.exception(BOUND) for f in futs)

        workers = Workers(1, wait).start()
        waiting.wait(BOUND)
        client.close()
        workers.join()
        assert [type(e) for e in outcomes] == [ConnectionLost] * 3
        assert client.reactor.closed


# ------------------------------------------ §1: written within one reactor pass
@pytest.fixture(params=["epoll", "spy"])
def idle_rig(request: pytest.FixtureRequest) -> Iterator[tuple[Rig, SleepSpy | None]]:
    """A rig whose reactor sleeps in ``run()``; with ``spy``, the test knows when."""
    spy = SleepSpy() if request.param == "spy" else None
    with qmplex_errors() as errors, fake_server() as server:
        server.on("x-echo", handler=lambda args: args)
        reactor = Reactor(selector=spy)
        thread = ReactorThread(reactor).start()
        rig = Rig(server, reactor, thread, errors)
        try:
            yield rig, spy
        finally:
            for c in rig.clients:
                c.close()
            thread.stop()
            assert reactor.watched_fds() == 0
            reactor.close()
    assert not errors.unexpected(Provoked), errors.unexpected(Provoked)


PROMPT = 5.0  # generous: the old bug left such a command waiting for unrelated I/O


def test_calls_from_a_worker_while_run_sleeps_are_written_at_once(
        idle_rig: tuple[Rig, SleepSpy | None]) -> None:
    rig, spy = idle_rig
    client = rig.client()
    results: dict[str, Any] = {}

    def asleep() -> None:
        if spy is not None:
            spy.wait_asleep()

    def worker(_: int) -> None:
        asleep()
        results["execute"] = client.execute("x-echo", {"w": 1}).result(PROMPT)
        asleep()
        results["typed"] = client.vm.query_status().result(PROMPT).status
        asleep()
        fut = client.execute("x-echo", {"w": 2})
        rig.server.wait_until(lambda: any(
            (m.get("arguments") or {}).get("w") == 2 for m in rig.server.received), PROMPT)
        results["reached"] = fut.result(PROMPT)
        asleep()
        ran = threading.Event()
        done: Future[int] = Future(rig.reactor)
        done.set_result(1)  # handed to the reactor thread
        asleep()
        done.add_done_callback(lambda f: ran.set())
        results["callback"] = ran.wait(PROMPT)
        asleep()
        sub_seen = threading.Event()
        sub = client.on_event(lambda e: sub_seen.set(), "X-PING")
        waiting = client.wait_event("X-PING", timeout=PROMPT)
        client.execute("x-echo", {"w": 3}).result(PROMPT)  # both are registered by now
        rig.server.emit("X-PING")
        results["event"] = waiting.result(PROMPT).name
        results["subscription"] = sub_seen.wait(PROMPT)
        sub.cancel()
        asleep()
        pending = client.execute("x-never")
        rig.server.wait_until(lambda: rig.server.commands()[-1:] == ["x-never"], PROMPT)
        asleep()
        client.close()  # returns once the connection is closed
        results["close"] = type(pending.exception(PROMPT)).__name__

    rig.server.on("x-never", never=True)
    Workers(1, worker).start().join(30)
    assert results == {"execute": {"w": 1}, "typed": "prelaunch", "reached": {"w": 2},
                       "callback": True, "event": "X-PING", "subscription": True,
                       "close": "ConnectionLost"}
    if spy is not None:
        assert spy.sleeps >= 6


def test_a_worker_command_is_not_held_by_a_busy_other_client(rig: Rig) -> None:
    # Another client of the reactor has commands that never complete: the worker's
    # command must still be written at once and answered.
    rig.server.on("x-never", never=True)
    busy = rig.client(name="busy")
    stuck = [busy.execute("x-never") for _ in range(20)]
    client = rig.client()

    def worker(k: int) -> None:
        for i in range(200):
            assert client.execute("x-echo", {"t": k, "n": i}).result(PROMPT)["n"] == i

    Workers(3, worker).start().join()
    assert not any(f.done() for f in stuck)
    busy.close()
    assert all(isinstance(f.exception(BOUND), ConnectionLost) for f in stuck)


# ------------------------------------- races found while writing these (regressions)
class LostWakeup(AssertionError):
    """What the races below lead to: something that must happen never does."""


def test_two_threads_submitting_at_once_to_an_idle_client(rig: Rig) -> None:
    """Two threads append to an empty intake at once: at least one must ask for a drain
    (it used to be decided by the intake's length after the append, which both saw as 2)."""
    client = rig.client()
    pause = PauseAt(Connection.take, "if not self._drain_asked")
    first: list[Future[Any]] = []
    t = threading.Thread(target=lambda: first.append(
        pause.run(lambda: client.execute("x-echo", {"n": 1}))), daemon=True)
    t.start()
    pause.wait_paused()  # thread A appended its command, not yet checked the length
    second = client.execute("x-echo", {"n": 2})  # thread B: appends, sees 2
    pause.resume()  # thread A sees 2 too
    t.join(BOUND)
    later = client.execute("x-echo", {"n": 3})
    try:
        results = [f.result(2) for f in (first[0], second, later)]
    except WaitTimeout as exc:
        raise LostWakeup(f"commands never sent: server got {rig.server.commands()}") from exc
    assert results == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_done_callback_added_by_a_worker_that_then_waits(rig: Rig) -> None:
    """A worker's result() registers its wake-up while the reactor thread adds the
    worker's done-callback: neither may replace the other's list of callbacks."""
    reactor = rig.reactor
    fut: Future[int] = Future(reactor)
    entered, hold = threading.Event(), threading.Event()

    def busy() -> None:  # the reactor thread is inside a pass
        entered.set()
        hold.wait(BOUND)

    reactor.call_soon_threadsafe(busy)
    assert entered.wait(BOUND)
    called = threading.Event()
    pause = PauseAt(Future._callback_list, "if callbacks is None")
    got: list[int] = []

    def worker() -> None:
        fut.add_done_callback(lambda f: called.set())  # handed to the reactor thread
        got.append(pause.run(lambda: fut.result(BOUND)))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    pause.wait_paused()  # the worker read _callbacks (None), about to store its wake-up
    hold.set()
    reactor.submit(lambda: None).result(BOUND)  # the handed-over callback was added
    pause.resume()
    pause.wait_returned()  # the worker stored its wake-up, and sleeps
    reactor.submit(fut.set_result, 7).result(BOUND)
    t.join(BOUND)
    assert got == [7]
    reactor.submit(lambda: None).result(BOUND)  # a pass after the completion's pass
    if not called.is_set():
        raise LostWakeup("the done-callback added from the worker thread never ran")


def test_two_threads_waiting_on_one_future(rig: Rig) -> None:
    """Two threads start waiting on one future at once: both must be woken."""
    fut: Future[str] = Future(rig.reactor)
    pause = PauseAt(Future._callback_list, "if callbacks is None")
    outcomes: dict[str, Any] = {}
    registered = Returned(Future._add_wakeup)

    def wait(name: str, tracer: PauseAt | Returned) -> None:
        try:
            outcomes[name] = tracer.run(lambda: fut.result(2))
        except WaitTimeout as exc:
            outcomes[name] = exc

    first = threading.Thread(target=wait, args=("first", pause), daemon=True)
    first.start()
    pause.wait_paused()  # the first waiter read _callbacks (None)
    second = threading.Thread(target=wait, args=("second", registered), daemon=True)
    second.start()
    registered.wait()  # the second waiter stored its wake-up, and sleeps
    pause.resume()
    pause.wait_returned()  # the first stored its own: both wait now
    rig.reactor.submit(fut.set_result, "done").result(BOUND)
    first.join(BOUND)
    second.join(BOUND)
    if outcomes != {"first": "done", "second": "done"}:
        raise LostWakeup(f"a waiter missed the completion: {outcomes}")


def test_subscription_made_by_a_worker_gets_an_event_sent_after_it(rig: Rig) -> None:
    """on_event() from a worker returns before the event is sent: the event is delivered
    (hand-overs run right after the poll, before the I/O that came with them)."""
    client = rig.client()
    reactor = rig.reactor
    entered, hold = threading.Event(), threading.Event()

    def busy() -> None:  # runs in the hand-over phase at the start of a pass
        entered.set()
        hold.wait(BOUND)

    # From a ready callback, busy() goes to the next pass's hand-over phase.
    reactor.submit(reactor.call_soon, reactor.call_soon_threadsafe, busy).result(BOUND)
    assert entered.wait(BOUND)
    seen: list[Event] = []
    cond = threading.Condition()

    def on_ping(event: Event) -> None:
        with cond:
            seen.append(event)
            cond.notify_all()

    client.on_event(on_ping, "X-PING")  # returned: events sent from now on are ours
    rig.server.emit("X-PING", {"n": 1})  # in the client's socket before the next poll
    hold.set()
    reactor.submit(lambda: None).result(BOUND)  # that pass is over: the subscription exists
    rig.server.emit("X-PING", {"n": 2})
    with cond:
        cond.wait_for(lambda: any(e.data["n"] == 2 for e in seen), BOUND)
    if [e.data["n"] for e in seen] != [1, 2]:
        raise LostWakeup(f"events delivered: {[e.data['n'] for e in seen]}, wanted [1, 2]")



def test_submit_after_close_raises() -> None:
    """submit() (any hand-over) on a closed reactor raises StateError, running nothing."""
    reactor = Reactor()
    reactor.close()
    ran: list[int] = []
    with pytest.raises(StateError, match="closed"):
        reactor.submit(ran.append, 1)
    assert ran == []


def test_command_from_a_callback_queued_while_nobody_drove() -> None:
    """A callback handed over while nobody drove submits a command in the next driver's
    first pass: that pass must not sleep before writing it."""
    with fake_server() as server:
        reactor = Reactor()
        client = Client(reactor)
        client.connect(server.path, timeout=BOUND).result(BOUND)
        made: list[Future[Any]] = []
        queued = threading.Event()

        def submit() -> None:  # reactor-thread code
            made.append(client.execute("query-status"))
            queued.set()

        reactor.call_soon_threadsafe(submit)  # nobody drives yet
        thread = threading.Thread(target=reactor.run, daemon=True)
        thread.start()  # nothing else will happen on this reactor
        try:
            assert queued.wait(BOUND)
            try:
                made[0].result(2)
            except WaitTimeout as exc:
                raise LostWakeup(f"not written: the server got {server.commands()}") from exc
        finally:
            reactor.stop()
            thread.join(BOUND)
            client.close()
            reactor.close()
