"""qmplex doing each fake-peer row's work through its plain public API."""

from __future__ import annotations

import threading
import time
from typing import Any

import qmplex
from qmplex import Client, Event, Reactor, gather

from .workload import Skip, Workload


def _connect(path: str, **kw: Any) -> tuple[Client, Reactor | None]:
    """A connected client on a private reactor (None returned: the client closes it)."""
    return qmplex.connect(path, timeout=10, **kw), None


def _close(client: Client, reactor: Reactor | None) -> None:
    client.close()
    if reactor is not None:
        reactor.close()


class Serial(Workload):
    """``client.execute(...).result()`` in a loop.

    ``cpu``: return the CPU seconds this process spent per command instead of the rate.
    """

    impl = "qmplex"

    def __init__(self, path: str, n: int, *, cpu: bool = False) -> None:
        self.path, self.count, self.cpu = path, n, cpu

    def open(self) -> None:
        self.client, self.reactor = _connect(self.path)

    def run(self) -> float:
        execute = self.client.execute
        n = self.count
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            execute("query-status").result()
        t1, c1 = time.perf_counter(), time.process_time()
        return (c1 - c0) / n if self.cpu else n / (t1 - t0)

    def close(self) -> None:
        _close(self.client, self.reactor)


class Pipelined(Workload):
    """Submit ``batch`` commands with ``execute`` (window 64 in the client), wait for
    the last, repeat: what a manager driving one busy VM does."""

    impl = "qmplex"

    def __init__(self, path: str, n: int, window: int = 64, batch: int = 1024) -> None:
        self.path, self.count, self.window, self.batch = path, n, window, batch

    def open(self) -> None:
        self.client, self.reactor = _connect(self.path, window=self.window)

    def run(self) -> float:
        execute = self.client.execute
        n, batch = self.count, self.batch
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(batch, n - done)
            futures = [execute("query-status") for _ in range(k)]
            futures[-1].result()
            done += k
        dt = time.perf_counter() - t0
        if not all(f.done() and f.exception() is None for f in futures):
            raise AssertionError("a command failed")
        return n / dt

    def close(self) -> None:
        _close(self.client, self.reactor)


class Events(Workload):
    """A flood of ``n`` events, delivered to a callback (``deliver``) or with no
    subscriber at all (``drop``: dropped undecoded)."""

    impl = "qmplex"

    def __init__(self, path: str, n: int, mode: str) -> None:
        self.path, self.count, self.mode = path, n, mode

    def open(self) -> None:
        self.client, self.reactor = _connect(self.path)
        # The floor's callback, to the letter: a closure counting in a list.
        delivered = self.delivered = [0]

        def on_event(event: Event) -> None:
            delivered[0] += 1

        if self.mode == "deliver":
            self.client.on_event(on_event, "BENCH_EVENT")

    def run(self) -> float:
        self.delivered[0] = 0
        dropped = self.client.dropped_events
        t0 = time.perf_counter()
        self.client.execute("x-flood", {"count": self.count}).result()
        dt = time.perf_counter() - t0
        seen = self.delivered[0] if self.mode == "deliver" else \
            self.client.dropped_events - dropped
        if seen != self.count:
            raise AssertionError(f"{seen} events of {self.count}")
        return self.count / dt

    def close(self) -> None:
        _close(self.client, self.reactor)


def connect_many(path: str, vms: int, reactor: Reactor, window: int = 7) -> list[Client]:
    """Connect ``vms`` clients on one reactor, all handshakes in parallel."""
    clients = [Client(reactor, window=window) for _ in range(vms)]
    gather([c.connect(path, timeout=60) for c in clients]).result(timeout=120)
    return clients


class ManyVMs(Workload):
    """``vms`` clients on one reactor; in each round every client gets ``window`` (its
    default window, 7) commands and the round ends when all are answered, like the
    floor's rounds. The aggregate command rate."""

    impl = "qmplex"

    def __init__(self, path: str, vms: int, per_vm: int, window: int = 7) -> None:
        self.path, self.vms, self.per_vm, self.window = path, vms, per_vm, window
        self.count = vms * per_vm

    def open(self) -> None:
        self.reactor = Reactor()
        self.clients = connect_many(self.path, self.vms, self.reactor, self.window)

    def run(self) -> float:
        per_vm, window = self.per_vm, self.window
        t0 = time.perf_counter()
        done = 0
        while done < per_vm:
            k = min(window, per_vm - done)
            last: list[Any] = []
            for c in self.clients:
                execute = c.execute
                for _ in range(k - 1):
                    execute("query-status")
                last.append(execute("query-status"))
            gather(last, self.reactor).result(timeout=600)
            done += k
        return self.count / (time.perf_counter() - t0)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.reactor.close()


class Threads(Workload):
    """``threads`` worker threads each doing serial round trips on ONE client whose
    reactor another thread runs (``reactor.run()``): an API server's threads. The
    aggregate rate, or (``cpu``) the process's CPU seconds per command."""

    impl = "qmplex"

    def __init__(self, path: str, n: int, threads: int = 4, *, cpu: bool = False) -> None:
        self.path, self.count, self.threads, self.cpu = path, n, threads, cpu

    def open(self) -> None:
        self.reactor = Reactor()
        self.runner = threading.Thread(target=self.reactor.run, name="bench-reactor")
        self.runner.start()
        self.client = Client(self.reactor)
        self.client.connect(self.path, timeout=10).result(10)

    def run(self) -> float:
        execute = self.client.execute
        per = self.count // self.threads
        start = threading.Barrier(self.threads + 1)

        def worker() -> None:
            start.wait()
            for _ in range(per):
                execute("query-status").result(30)

        workers = [threading.Thread(target=worker) for _ in range(self.threads)]
        for w in workers:
            w.start()
        start.wait()
        c0, t0 = time.process_time(), time.perf_counter()
        for w in workers:
            w.join()
        t1, c1 = time.perf_counter(), time.process_time()
        done = per * self.threads
        return (c1 - c0) / done if self.cpu else done / (t1 - t0)

    def close(self) -> None:
        self.client.close()
        self.reactor.stop()
        self.runner.join(10)
        self.reactor.close()


class Awaited(Workload):
    """``await client.execute(...)`` in a loop, in a coroutine, the client's reactor
    attached to the running loop (``loop``: "asyncio" or "uvloop")."""

    impl = "qmplex"

    def __init__(self, path: str, n: int, loop: str = "asyncio") -> None:
        self.path, self.count, self.loop = path, n, loop
        self.impl = "qmplex" if loop == "asyncio" else f"qmplex, {loop}"

    def open(self) -> None:
        if self.loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                raise Skip("uvloop is not installed") from None

    def run(self) -> float:
        import asyncio

        from qmplex import aio

        async def main() -> float:
            client = await aio.connect(self.path, timeout=10)
            try:
                for _ in range(64):  # warm-up
                    await client.execute("query-status")
                t0 = time.perf_counter()
                for _ in range(self.count):
                    await client.execute("query-status")
                return self.count / (time.perf_counter() - t0)
            finally:
                client.close()

        if self.loop == "uvloop":
            import uvloop

            return uvloop.run(main())
        return asyncio.run(main())
