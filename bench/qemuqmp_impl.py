"""qemu.qmp (QEMU's own Python QMP package, asyncio API) doing each row's work.

Optional: installed by the ``bench`` extra. Every workload raises :class:`Skip` from
``open`` when the package is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .workload import Skip, Workload

QMPClient: Any = None
EventListener: Any = None
try:
    import qemu.qmp as _qmp
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    QMPClient = _qmp.QMPClient
    EventListener = _qmp.EventListener

# qemu.qmp logs every connection at INFO/WARNING; keep the table readable.
logging.getLogger("qemu.qmp").setLevel(logging.ERROR)


def available() -> bool:
    return QMPClient is not None


class _Async(Workload):
    impl = "qemu.qmp"

    def open(self) -> None:
        if QMPClient is None:
            raise Skip("qemu.qmp is not installed (pip install qemu.qmp, or the bench extra)")
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.aopen())

    async def aopen(self) -> None:
        self.qmp = QMPClient("bench")
        await self.qmp.connect(self.path)  # type: ignore[attr-defined]

    def run(self) -> float:
        return float(self.loop.run_until_complete(self.arun()))

    async def arun(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        if hasattr(self, "loop"):
            self.loop.run_until_complete(self.aclose())
            self.loop.close()

    async def aclose(self) -> None:
        await self.qmp.disconnect()


class Serial(_Async):
    def __init__(self, path: str, n: int) -> None:
        self.path, self.count = path, n

    async def arun(self) -> float:
        execute = self.qmp.execute
        n = self.count
        t0 = time.perf_counter()
        for _ in range(n):
            await execute("query-status")
        return n / (time.perf_counter() - t0)


class Pipelined(_Async):
    """``window`` concurrent ``execute`` calls at a time (qemu.qmp has no window of its
    own: this gives it the same depth as the others)."""

    def __init__(self, path: str, n: int, window: int = 64) -> None:
        self.path, self.count, self.window = path, n, window

    async def arun(self) -> float:
        execute = self.qmp.execute
        n, window = self.count, self.window
        sem = asyncio.Semaphore(window)

        async def one() -> None:
            async with sem:
                await execute("query-status")

        t0 = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(n)])
        return n / (time.perf_counter() - t0)


class Events(_Async):
    """A flood delivered through an ``EventListener`` (``deliver``) or with none."""

    def __init__(self, path: str, n: int, mode: str) -> None:
        self.path, self.count, self.mode = path, n, mode

    async def arun(self) -> float:
        n = self.count
        if self.mode != "deliver":
            t0 = time.perf_counter()
            await self.qmp.execute("x-flood", {"count": n})
            return n / (time.perf_counter() - t0)
        listener = EventListener("BENCH_EVENT")
        got = 0

        async def consume() -> None:
            nonlocal got
            while got < n:
                await listener.get()
                got += 1

        with self.qmp.listen(listener):
            t0 = time.perf_counter()
            task = asyncio.create_task(consume())
            await self.qmp.execute("x-flood", {"count": n})
            await task
            dt = time.perf_counter() - t0
        if got != n:
            raise AssertionError(f"{got} events of {n}")
        return n / dt


class ManyVMs(_Async):
    """``vms`` clients on one event loop, each running ``per_vm`` commands 7 at a time."""

    def __init__(self, path: str, vms: int, per_vm: int, window: int = 7) -> None:
        self.path, self.vms, self.per_vm, self.window = path, vms, per_vm, window
        self.count = vms * per_vm

    async def aopen(self) -> None:
        self.clients: list[Any] = []
        for _ in range(self.vms):
            qmp = QMPClient("bench")
            await qmp.connect(self.path)
            self.clients.append(qmp)

    async def arun(self) -> float:
        async def vm(qmp: Any) -> None:
            done = 0
            while done < self.per_vm:
                k = min(self.window, self.per_vm - done)
                await asyncio.gather(*[qmp.execute("query-status") for _ in range(k)])
                done += k

        t0 = time.perf_counter()
        await asyncio.gather(*[vm(q) for q in self.clients])
        return self.count / (time.perf_counter() - t0)

    async def aclose(self) -> None:
        for qmp in self.clients:
            await qmp.disconnect()
