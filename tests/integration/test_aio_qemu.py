"""qmplex under asyncio against a real QEMU: ``aio.start_qemu`` and ``aio.start(vm)``.

Each test runs under asyncio's default loop and under uvloop, starts its own paused
QEMU (``-S``, TCG) and stops it. The loop must stay free while QEMU starts: a ticker
task counts its turns meanwhile. Waits are bounded (``BOUND``); nothing measures time.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import qmplex
from qmplex import EventFilter, Reactor, StatusInfo, aio
from qmplex.qemu import QemuError, QemuProcess, qemu_or_skip

try:
    import uvloop
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_UVLOOP = False
else:
    HAVE_UVLOOP = True

pytestmark = pytest.mark.qemu

T = TypeVar("T")

SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]
#: Seconds any single wait may take before the test fails: a guard, not a measurement.
BOUND = 60.0

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Run = Callable[[Callable[[], Coroutine[Any, Any, T]]], T]


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@pytest.fixture(params=[
    pytest.param(_asyncio_loop, id="asyncio"),
    pytest.param(_uvloop_loop, id="uvloop", marks=pytest.mark.skipif(
        not HAVE_UVLOOP, reason="uvloop is not importable (it comes with the 'test' extra)")),
])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    factory: LoopFactory = request.param
    return factory


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def run(loop_factory: LoopFactory, binary: str) -> Iterator[Run[Any]]:
    """``run(main)``: run ``main()`` in a new loop of the parametrized kind, bounded;
    the test must leave no file descriptor open."""
    _finish(loop_factory())  # a loop implementation may open process-wide fds once
    before = _open_fds()

    def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = loop_factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(main(), BOUND))
        finally:
            _finish(loop)

    yield _run
    assert _open_fds() == before, "file descriptors leaked"


class Ticker:
    """A task that counts its turns: proof that the loop is not blocked."""

    def __init__(self) -> None:
        self.turns = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while not self._stop.is_set():
            self.turns += 1
            await asyncio.sleep(0.001)  # the workload: a turn per millisecond or so

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def stop(vm: QemuProcess) -> int:
    """``vm.stop()`` blocks while QEMU exits: off the loop's thread."""
    return await asyncio.wait_for(asyncio.to_thread(vm.stop), BOUND)


async def plug_and_unplug(client: qmplex.Client, n: int) -> None:
    plugs = []
    for i in range(n):
        plugs.append(client.execute("blockdev-add", {"driver": "null-co",
                                                     "node-name": f"b{i}"}))
        plugs.append(client.devices.scsi_device_add(f"b{i}", f"d{i}", "scsi-hd", "scsi0.0",
                                                    scsi_id=i, lun=0))
    await qmplex.gather(plugs)
    props = await client.qom.qom_list("/machine/peripheral")
    assert {p.name for p in props} >= {f"d{i}" for i in range(n)}

    def unplug(i: int) -> qmplex.Future[Any]:
        return client.execute(
            "device_del", {"id": f"d{i}"},
            until=EventFilter("DEVICE_DELETED", {"device": f"d{i}"})).chain(
                lambda _event: client.block.blockdev_del(f"b{i}"))

    await qmplex.gather([unplug(i) for i in range(n)])
    nodes = await client.execute("query-named-block-nodes")
    assert not [x for x in nodes if x["node-name"].startswith("b")]


def test_start_qemu_with_a_private_reactor_keeps_the_loop_running(run: Run[None],
                                                                  binary: str) -> None:
    async def main() -> None:
        ticker = Ticker()
        before = ticker.turns
        vm = await aio.start_qemu(binary, extra_args=SCSI, start_timeout=20)
        turns_while_starting = ticker.turns - before
        try:
            assert turns_while_starting > 0, "the loop was blocked while QEMU started"
            client = vm.client
            assert client is not None and vm.alive()
            bridge = aio.bridge_of(client.reactor)
            assert bridge is not None and bridge.attached
            assert client.version is not None and client.version.major >= 7
            assert await client.vm.query_status() == StatusInfo("prelaunch", False, False)
            resumed = client.wait_event("RESUME", timeout=10)
            await client.vm.cont()
            assert (await resumed).name == "RESUME"
            await plug_and_unplug(client, 20)
        finally:
            assert await stop(vm) == 0
            await ticker.stop()
        assert not vm.alive()

    run(main)


def test_start_on_an_attached_reactor(run: Run[None], binary: str) -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor) as bridge:
            ticker = Ticker()
            before = ticker.turns
            vm = QemuProcess(binary, extra_args=SCSI, reactor=reactor, start_timeout=20)
            assert await aio.start(vm) is vm
            turns_while_starting = ticker.turns - before
            try:
                assert turns_while_starting > 0, "the loop was blocked while QEMU started"
                client = vm.client
                assert client is not None and client.reactor is reactor
                assert aio.bridge_of(reactor) is bridge  # the same bridge drives it
                assert (await client.execute("query-status"))["status"] == "prelaunch"
                await plug_and_unplug(client, 20)
            finally:
                assert await stop(vm) == 0
                await ticker.stop()
            assert reactor.watched_fds() == 0
        reactor.close()

    run(main)


def test_start_on_a_reactor_run_by_a_thread(run: Run[None], binary: str) -> None:
    async def main() -> None:
        reactor = Reactor()
        running = threading.Event()
        reactor.call_soon(running.set)
        thread = threading.Thread(target=reactor.run, name="qmplex-test-reactor", daemon=True)
        thread.start()
        assert running.wait(BOUND)
        try:
            ticker = Ticker()
            before = ticker.turns
            vm = QemuProcess(binary, extra_args=SCSI, reactor=reactor, start_timeout=20)
            await aio.start(vm)
            turns_while_starting = ticker.turns - before
            try:
                assert turns_while_starting > 0, "the loop was blocked while QEMU started"
                assert aio.bridge_of(reactor) is None  # the thread drives it
                client = vm.client
                assert client is not None
                assert (await client.vm.query_status()).running is False
                await plug_and_unplug(client, 10)
            finally:
                assert await stop(vm) == 0
                await ticker.stop()
        finally:
            reactor.stop()
            thread.join(BOUND)
            assert not thread.is_alive()
            reactor.close()

    run(main)


def test_start_qemu_failure_raises_and_leaves_nothing(run: Run[None], binary: str) -> None:
    async def main() -> None:
        ticker = Ticker()
        with pytest.raises(QemuError, match="no-such-device"):
            await aio.start_qemu(binary, extra_args=["-device", "no-such-device"],
                                 start_timeout=20)
        await ticker.stop()
        assert ticker.turns > 0

    run(main)


def test_start_several_at_once_restart_and_stop_without_blocking(run: Run[None],
                                                                 binary: str) -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            ticker = Ticker()
            vms = [QemuProcess(binary, reactor=reactor, start_timeout=20, name=f"vm{i}")
                   for i in range(3)]
            assert await asyncio.gather(*(aio.start(vm) for vm in vms)) == vms
            try:
                first = vms[0]
                client, pid = first.client, first.pid
                assert client is not None
                assert await aio.restart(first) is first
                assert first.pid != pid and first.client is client  # reconnected
                assert (await client.vm.query_status()).status == "prelaunch"
            finally:
                codes = await asyncio.gather(*(aio.stop(vm) for vm in vms))
            assert codes == [0, 0, 0]
            await ticker.stop()
            assert ticker.turns > 0
            assert reactor.watched_fds() == 0 and reactor.pending_timers() == 0
        reactor.close()

    run(main)


def test_start_qemu_then_stop_releases_the_private_reactor(run: Run[None],
                                                           binary: str) -> None:
    async def main() -> None:
        vm = await aio.start_qemu(binary, start_timeout=20)
        reactor = vm.reactor
        assert reactor is not None and aio.bridge_of(reactor) is not None
        exited = vm.wait_exit()
        assert await aio.stop(vm) == 0
        assert await exited == 0
        assert reactor.closed and aio.bridge_of(reactor) is None
        assert vm.client is None and not vm.alive()

    run(main)
