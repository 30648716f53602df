"""qmplex under asyncio: awaiting futures, the bridge (``aio.attach``), ``aio.connect``.

Every test runs twice, under asyncio's default loop and under uvloop (the ``run``
fixture; the uvloop variant is skipped only when uvloop cannot be imported). Most of
them also run in both ways a reactor is driven while coroutines await its futures:
attached to the running loop (``aio.attach``, no second thread), and run by another
thread (``threading.Thread(target=reactor.run)``).

Rules kept here: nothing sleeps to synchronise, and nothing measures the wall clock.

- Timeouts run on an injected :class:`FakeClock` (``Reactor(clock=...)``); the test
  moves it and then hands the reactor a no-op (:meth:`Harness.poke`) so that it looks
  at the clock again.
- "Sent on the next loop iteration" is checked by letting exactly the callbacks the
  loop had already scheduled run (:func:`next_iteration`) and then *blocking the loop*
  while the fake server's own thread looks for the command
  (:func:`received_while_loop_blocked`): with the loop blocked nothing in this process
  can write any more, so the command was written during that iteration.
- Work that completes later is awaited with a bound (``BOUND`` seconds, a safety net
  against hangs, never a measurement).
- A reactor driven by another thread completes a cancellation within one of its passes;
  :meth:`Harness.barrier` waits for that pass through ``reactor.submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import qmplex
from qmplex import (
    Cancelled,
    Client,
    CommandError,
    ConnectError,
    Event,
    EventFilter,
    Future,
    OperationTimeout,
    Reactor,
    StateError,
    StatusInfo,
    aio,
)
from qmplex.connection import Command, Stage
from qmplex.testing import FakeQMPServer

try:
    import uvloop
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_UVLOOP = False
else:
    HAVE_UVLOOP = True

T = TypeVar("T")

#: Seconds any single wait may take before the test fails: a guard, not a measurement.
BOUND = 30.0

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Run = Callable[[Callable[[], Coroutine[Any, Any, T]]], T]


# ----------------------------------------------------------------- the two loops
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
    """Makes a new event loop: asyncio's default one, or uvloop's."""
    factory: LoopFactory = request.param
    return factory


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel what is left, shut down the
    async generators and the default executor, close the loop."""
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
def fd_baseline(loop_factory: LoopFactory) -> Iterator[None]:
    """The test leaves no file descriptor open (loops, reactors, sockets, servers)."""
    _finish(loop_factory())  # a loop implementation may open process-wide fds once
    before = _open_fds()
    yield
    assert _open_fds() == before, "file descriptors leaked"


@pytest.fixture
def run(loop_factory: LoopFactory, fd_baseline: None) -> Run[Any]:
    """``run(main)``: run the coroutine function ``main`` in a new loop of the
    parametrized kind, bounded by ``BOUND`` seconds, and close the loop."""

    def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = loop_factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(main(), BOUND))
        finally:
            _finish(loop)

    return _run


@pytest.fixture(autouse=True)
def no_kick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here, nor in qmplex, may need the deprecated manual nudge."""

    def _kick(self: aio.AsyncioReactorBridge) -> None:
        raise AssertionError("bridge.kick() was called")

    monkeypatch.setattr(aio.AsyncioReactorBridge, "kick", _kick)


@pytest.fixture
def server(fd_baseline: None) -> Iterator[FakeQMPServer]:
    """A fake QEMU 7.2 on its own thread and reactor (real clock)."""
    with FakeQMPServer() as srv:
        yield srv
        assert srv.handler_errors == []


# ------------------------------------------------------------------------ helpers
class FakeClock:
    """A reactor clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _noop() -> None:
    pass


async def next_iteration() -> None:
    """Return once every callback the loop had scheduled (``call_soon``) before this
    call has run: the bridge's pass for work queued so far included."""
    loop = asyncio.get_running_loop()
    marker: asyncio.Future[None] = loop.create_future()
    loop.call_soon(marker.set_result, None)
    await marker


async def loop_polled_io() -> None:
    """Return after the loop has polled for I/O at least once since this call (a byte
    through a socket pair it watches): descriptors registered before are in its
    poller by then (libuv registers them lazily, at its next poll)."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        a.send(b"x")
        assert await bounded(loop.sock_recv(b, 1)) == b"x"


def received_while_loop_blocked(server: FakeQMPServer, n: int) -> list[str]:
    """Block the loop's thread until the server (on its own thread) has received
    ``n`` commands; return them. Only bytes already written can arrive meanwhile."""
    return server.wait_for_commands(n, timeout=BOUND)


async def received_eventually(server: FakeQMPServer, n: int) -> list[str]:
    """Wait, with the loop running, until the server has received ``n`` commands."""
    return await asyncio.to_thread(server.wait_for_commands, n, BOUND)


def set_when_done(future: Future[Any]) -> asyncio.Event:
    """An asyncio event set (by a qmplex done-callback) once ``future`` is done: a way
    to wait for a future without awaiting it."""
    loop = asyncio.get_running_loop()
    flag = asyncio.Event()

    def _done(_: Future[Any]) -> None:
        if not loop.is_closed():  # runs on the reactor thread: the loop's or another
            loop.call_soon_threadsafe(flag.set)

    future.add_done_callback(_done)
    return flag


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, BOUND)


class Harness:
    """A client on a reactor driven in one of the two ways, for one test."""

    def __init__(self, reactor: Reactor, client: Client, driver: str,
                 thread: threading.Thread | None) -> None:
        self.reactor = reactor
        self.client = client
        self.driver = driver
        self.thread = thread

    @property
    def bridge(self) -> aio.AsyncioReactorBridge:
        bridge = aio.bridge_of(self.reactor)
        assert bridge is not None
        return bridge

    def poke(self) -> None:
        """Hand the reactor a no-op (from the loop's thread): it runs a pass, which
        looks at the (fake) clock again."""
        self.reactor.call_soon_threadsafe(_noop)

    async def barrier(self) -> None:
        """Wait until the reactor thread has run everything handed to it so far."""
        await bounded(asyncio.wrap_future(self.reactor.submit(_noop)))

    async def on_reactor(self, fn: Callable[[], T]) -> T:
        """``fn()`` evaluated on the reactor thread."""
        return await bounded(asyncio.wrap_future(self.reactor.submit(fn)))


def start_reactor_thread(reactor: Reactor) -> threading.Thread:
    """Run ``reactor`` on a new thread; return once that thread is inside ``run()``."""
    running = threading.Event()
    reactor.call_soon(running.set)  # nobody drives it yet: the first pass runs this
    thread = threading.Thread(target=reactor.run, name="qmplex-test-reactor", daemon=True)
    thread.start()
    assert running.wait(BOUND)
    assert reactor.has_driver()
    return thread


@contextlib.asynccontextmanager
async def connected(server: FakeQMPServer, driver: str, *, clock: FakeClock | None = None,
                    window: int = 7) -> AsyncIterator[Harness]:
    """A client of ``server`` on a reactor ``"attached"`` to the running loop or run
    by a ``"thread"``; everything is closed (and checked) on the way out."""
    reactor = Reactor(clock=clock) if clock is not None else Reactor()
    thread = start_reactor_thread(reactor) if driver == "thread" else None
    try:
        client = await bounded(aio.connect(server.path, reactor=reactor, timeout=5,
                                           window=window))
        try:
            if driver == "attached":
                bridge = aio.bridge_of(reactor)
                assert bridge is not None and bridge.attached  # attached by aio.connect
            else:
                assert aio.bridge_of(reactor) is None  # a thread drives it: no bridge
            yield Harness(reactor, client, driver, thread)
        finally:
            client.close()
    finally:
        if thread is not None:
            reactor.stop()
            thread.join(BOUND)
            assert not thread.is_alive()
        else:
            bridge = aio.bridge_of(reactor)
            if bridge is not None:
                bridge.detach()
        reactor.close()


DRIVERS = ["attached", "thread"]


# =============================================== 1. awaiting commands and operations
def test_one_thread_runs_asyncio_the_reactor_and_the_fake_server(run: Run[None]) -> None:
    threads_before = threading.active_count()
    log: list[str] = []

    async def ticker() -> None:
        # An ordinary asyncio task keeps running while qmplex does its work.
        for _ in range(5):
            log.append("tick")
            await asyncio.sleep(0.001)

    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor) as bridge:
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            assert client.version is not None and client.version.major == 7
            tick = asyncio.create_task(ticker())
            status = await client.execute("query-status")
            assert status["status"] == "prelaunch"
            # Pipelined: many commands, one await.
            results = await qmplex.gather(client.execute("query-name") for _ in range(500))
            assert results == [{}] * 500
            assert threading.active_count() == threads_before  # no second thread
            await tick
            assert bridge.passes > 0
            client.close()
            server.close()
        reactor.close()

    run(main)
    assert log == ["tick"] * 5


@pytest.mark.parametrize("driver", DRIVERS)
def test_await_execute_typed_operations_and_errors(run: Run[None], server: FakeQMPServer,
                                                   driver: str) -> None:
    async def main() -> None:
        async with connected(server, driver) as h:
            client = h.client
            status = await client.execute("query-status")
            assert status == {"status": "prelaunch", "running": False, "singlestep": False}
            # A typed operation: execute, then a `then` step that builds the result.
            info = await client.vm.query_status()
            assert info == StatusInfo(status="prelaunch", running=False, singlestep=False)
            # A typed hot-plug operation.
            await client.block.blockdev_add("/var/lib/img0.raw", "b0")
            await client.devices.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0",
                                                 scsi_id=0, lun=0)
            assert server.nodes["b0"]["file"] == {"driver": "file",
                                                  "filename": "/var/lib/img0.raw"}
            assert server.devices["d0"] == {"driver": "scsi-hd", "id": "d0", "drive": "b0",
                                            "bus": "scsi0.0", "scsi-id": 0, "lun": 0}
            # Errors come out of the await as the operation's error.
            with pytest.raises(CommandError) as info_err:
                await client.devices.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0")
            assert info_err.value.error_class == "GenericError"
            with pytest.raises(CommandError) as missing:
                await client.execute("device_del", {"id": "nope"})
            assert missing.value.error_class == "DeviceNotFound"
            # Pipelined: many commands, one await; results in order.
            names = await qmplex.gather(client.execute("query-name") for _ in range(300))
            assert names == [{}] * 300
            # wrap() is kept for older code and is a plain await.
            assert (await aio.wrap(client.execute("query-status")))["running"] is False
            # Cancelled by someone else: the awaiting coroutine sees Cancelled.
            server.on("query-status", never=True)
            other = client.execute("query-status")
            assert other.cancel()
            with pytest.raises(Cancelled):
                await other
            assert await client.execute("query-name") == {}

    run(main)


def test_events_and_event_completions_arrive_through_the_bridge(run: Run[None]) -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            seen: list[Event] = []
            client.on_event(seen.append, "RTC_CHANGE")
            server.emit("RTC_CHANGE", {"offset": 7})
            reset = client.wait_event("RESET", timeout=5)
            await client.execute("system_reset")
            event = await reset
            assert event.name == "RESET"
            assert [e.data for e in seen] == [{"offset": 7}]
            # device_del completes on its DEVICE_DELETED, chained blockdev-del after it.
            await client.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
            await client.execute("device_add", {"driver": "scsi-hd", "id": "d0",
                                                "drive": "n0"})
            ev = await client.execute(
                "device_del", {"id": "d0"},
                until=EventFilter("DEVICE_DELETED", {"device": "d0"})).chain(
                    lambda _ev: client.execute("blockdev-del", {"node-name": "n0"}))
            assert ev == {}
            assert server.nodes == {}
            client.close()
            server.close()
        reactor.close()

    run(main)


# ============================= 2. work queued from the loop's thread, never awaited
def test_a_command_with_only_a_done_callback_is_sent_on_the_next_iteration(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            base = len(server.commands())
            outcomes: list[Any] = []
            fut = h.client.execute("query-name")
            fut.add_done_callback(lambda f: outcomes.append(f.result()))
            await next_iteration()
            assert received_while_loop_blocked(server, base + 1)[base:] == ["query-name"]
            await bounded(set_when_done(fut).wait())
            assert outcomes == [{}]

    run(main)


def test_commands_queued_by_several_coroutine_steps_go_out_in_one_iteration(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            base = len(server.commands())
            loop = asyncio.get_running_loop()
            passes = [h.bridge.passes]
            futs = [h.client.execute("query-name"), h.client.vm.query_status(),
                    h.client.execute("query-version")]
            # Runs right after the bridge's pass (before any I/O the loop polls next).
            loop.call_soon(lambda: passes.append(h.bridge.passes))
            await next_iteration()
            assert received_while_loop_blocked(server, base + 3)[base:] == [
                "query-name", "query-status", "query-version"]
            assert passes[1] == passes[0] + 1  # one pass wrote all three
            await bounded(set_when_done(qmplex.gather(futs)).wait())
            assert futs[1].result() == StatusInfo("prelaunch", False, False)

    run(main)


def test_a_chained_typed_operation_writes_its_later_steps_by_itself(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            client = h.client
            base = len(server.commands())
            # blockdev-add, then (in a done-callback, once it is answered) device_add.
            plug = client.block.blockdev_add("/var/lib/img1.raw", "b1").chain(
                lambda _: client.devices.scsi_device_add("b1", "d1", "scsi-hd", "scsi0.0"))
            # A typed operation with an internal chain: object-add, then device_add.
            dimm = client.memory.hotplug_memory("memory-backend-ram", "m0", 128)
            await next_iteration()
            # (Their replies may already have brought the second steps too.)
            assert received_while_loop_blocked(server, base + 2)[base:base + 2] == [
                "blockdev-add", "object-add"]
            # Nothing else happens on the connection: the second steps are written
            # only if queueing them (inside a reactor pass) makes the bridge run again.
            await bounded(set_when_done(qmplex.gather([plug, dimm])).wait())
            assert plug.result() is None and dimm.result() is None
            assert sorted(server.commands()[base:]) == sorted(
                ["blockdev-add", "object-add", "device_add", "device_add"])
            assert set(server.devices) == {"d1", "dimmm0"}
            assert h.reactor.pending_timers() == 0

    run(main)


def test_a_command_submitted_from_a_loop_callback_is_sent_on_the_next_iteration(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            loop = asyncio.get_running_loop()
            base = len(server.commands())
            submitted: asyncio.Future[Future[Any]] = loop.create_future()
            after: asyncio.Future[None] = loop.create_future()

            def submit() -> None:  # a plain loop callback, no coroutine involved
                submitted.set_result(h.client.execute("query-name"))
                loop.call_soon(after.set_result, None)  # runs after the bridge's pass

            loop.call_soon(submit)
            await after
            assert received_while_loop_blocked(server, base + 1)[base:] == ["query-name"]
            fut = submitted.result()
            await bounded(set_when_done(fut).wait())
            assert fut.result() == {}

    run(main)


def test_commands_submitted_from_qmplex_callbacks_are_sent(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            client = h.client
            base = len(server.commands())
            later: list[Future[Any]] = []
            # From a done-callback.
            first = client.execute("query-status")
            first.add_done_callback(lambda _: later.append(client.execute("query-name")))
            await received_eventually(server, base + 2)
            # From an event subscription.
            client.on_event(lambda _: later.append(client.execute("query-version")),
                            "RTC_CHANGE")
            server.emit("RTC_CHANGE", {"offset": 1})
            await received_eventually(server, base + 3)
            # From a plain reactor callback.
            h.reactor.call_soon(lambda: later.append(client.execute("query-commands")))
            await received_eventually(server, base + 4)
            assert server.commands()[base:] == ["query-status", "query-name",
                                                "query-version", "query-commands"]
            assert len(later) == 3
            await bounded(set_when_done(qmplex.gather(later)).wait())
            assert [f.exception() for f in later] == [None] * 3

    run(main)


def test_a_wait_event_registered_from_a_coroutine_sees_the_next_event(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            base = len(server.commands())
            reset = h.client.wait_event("RESET")
            done = set_when_done(reset)
            # Emitted by the server before the reply of system_reset (never awaited).
            h.client.execute("system_reset")
            await next_iteration()
            assert received_while_loop_blocked(server, base + 1)[base:] == ["system_reset"]
            await bounded(done.wait())
            assert reset.result().name == "RESET"
            # And an event the server emits by itself.
            rtc = h.client.wait_event("RTC_CHANGE", {"offset": 3})
            server.emit("RTC_CHANGE", {"offset": 2})
            server.emit("RTC_CHANGE", {"offset": 3})
            await bounded(set_when_done(rtc).wait())
            assert rtc.result().data == {"offset": 3}

    run(main)


# ======================================== 3. cancelling the task cancels the command
HOW = ["wait_for", "task.cancel"]


async def cancel_the_awaiting_task(fut: Future[Any], how: str) -> None:
    """Await ``fut`` in a task and cancel that task: by ``asyncio.wait_for``'s timeout
    or by ``task.cancel()``."""
    if how == "wait_for":
        with pytest.raises(asyncio.TimeoutError) as info:
            await asyncio.wait_for(fut, 0.001)
        assert not isinstance(info.value, qmplex.QMPError)  # asyncio's, not qmplex's
        return
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()

    async def waiter() -> Any:
        started.set_result(None)
        return await fut

    task = asyncio.create_task(waiter())
    await started  # the task is now suspended in `await fut`
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("driver", DRIVERS)
def test_cancel_before_it_is_sent_never_sends_it(run: Run[None], server: FakeQMPServer,
                                                 driver: str, how: str) -> None:
    async def main() -> None:
        async with connected(server, driver, window=1) as h:
            client = h.client
            base = len(server.commands())
            server.stall(reading=False)  # commands are read and recorded, not answered
            blocker = client.execute("query-status")  # takes the only window slot
            await received_eventually(server, base + 1)
            queued = client.execute("query-name")
            await cancel_the_awaiting_task(queued, how)
            await h.barrier()
            assert queued.cancelled()
            after = client.execute("query-version")
            server.resume()
            assert (await bounded(after))["qemu"]["major"] == 7
            assert (await blocker)["status"] == "prelaunch"
            assert server.commands()[base:] == ["query-status", "query-version"]
            assert await h.on_reactor(lambda: client.pending) == 0
            assert await client.execute("query-name") == {}

    run(main)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("driver", DRIVERS)
def test_cancel_after_it_is_sent_discards_the_late_reply(run: Run[None], server: FakeQMPServer,
                                                        driver: str, how: str) -> None:
    async def main() -> None:
        async with connected(server, driver, window=1) as h:
            client = h.client
            base = len(server.commands())
            server.stall(reading=False)
            late = client.execute("query-status")
            await received_eventually(server, base + 1)
            behind = client.execute("query-name")  # waits for the window slot
            await cancel_the_awaiting_task(late, how)
            await h.barrier()
            assert late.cancelled()
            server.resume()  # the reply to `late` comes now, and frees the slot
            assert await bounded(behind) == {}
            assert late.cancelled()
            assert await client.execute("query-version") is not None
            assert server.commands()[base:] == ["query-status", "query-name", "query-version"]
            assert await h.on_reactor(lambda: client.pending) == 0
            assert client.stale_replies == 0  # recognised as the cancelled one's reply

    run(main)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("driver", DRIVERS)
def test_cancel_while_waiting_for_its_event_ignores_the_late_event(
        run: Run[None], server: FakeQMPServer, driver: str, how: str) -> None:
    async def main() -> None:
        server.unplug_delay = None  # the unplug never completes by itself
        async with connected(server, driver) as h:
            client = h.client
            await client.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
            await client.execute("device_add", {"driver": "scsi-hd", "id": "d0",
                                                "drive": "n0"})
            unplug = client.execute("device_del", {"id": "d0"},
                                    until=EventFilter("DEVICE_DELETED", {"device": "d0"}))
            assert isinstance(unplug, Command)
            # Replies come in order: once this one is here, device_del is answered.
            assert await client.execute("query-name") == {}
            assert await h.on_reactor(lambda: unplug.stage) is Stage.ANSWERED
            await cancel_the_awaiting_task(unplug, how)
            await h.barrier()
            assert unplug.cancelled()
            assert await h.on_reactor(lambda: client.pending) == 0
            seen = client.wait_event("DEVICE_DELETED")
            await h.barrier()  # registered on the reactor thread (see the xfail below)
            server.emit("DEVICE_DELETED", {"device": "d0", "path": "/machine/peripheral/d0"})
            assert (await bounded(seen)).data["device"] == "d0"  # it did arrive
            assert unplug.cancelled()
            assert await client.execute("query-name") == {}

    run(main)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("driver", DRIVERS)
def test_cancelling_awaited_typed_operations_before_they_are_sent(
        run: Run[None], server: FakeQMPServer, driver: str, how: str) -> None:
    """A typed operation's future is a `then` (or `chain`) over its command: cancelling
    the task cancels the command under it, and a chain never reaches its next step."""

    async def main() -> None:
        async with connected(server, driver, window=1) as h:
            client = h.client
            base = len(server.commands())
            server.stall(reading=False)
            blocker = client.execute("query-name")
            await received_eventually(server, base + 1)
            status = client.vm.query_status()
            await cancel_the_awaiting_task(status, how)
            plug = client.block.blockdev_add("/var/lib/img2.raw", "b2").chain(
                lambda _: client.devices.scsi_device_add("b2", "d2", "scsi-hd", "scsi0.0"))
            await cancel_the_awaiting_task(plug, how)
            await h.barrier()
            assert status.cancelled() and plug.cancelled()
            server.resume()
            assert await bounded(blocker) == {}
            assert (await client.vm.query_status()).status == "prelaunch"
            assert server.commands()[base:] == ["query-name", "query-status"]
            assert server.nodes == {} and server.devices == {}

    run(main)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("driver", DRIVERS)
def test_cancelling_an_awaited_wait_event_drops_the_wait(
        run: Run[None], server: FakeQMPServer, driver: str, how: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with connected(server, driver, clock=clock) as h:
            waiting = h.client.wait_event("RESET", timeout=60)
            await cancel_the_awaiting_task(waiting, how)
            await h.barrier()
            assert waiting.cancelled()
            assert await h.on_reactor(h.reactor.pending_timers) == 0  # its timer too
            after = h.client.wait_event("RESET")
            await h.client.execute("system_reset")
            assert (await bounded(after)).name == "RESET"
            assert waiting.cancelled()

    run(main)


def test_a_wait_event_made_off_the_reactor_thread_sees_an_event_in_the_same_poll(
        run: Run[None], server: FakeQMPServer) -> None:
    """Deterministic: the reactor thread is held just before its poll (a hook around
    ``Reactor._poll``) while the wait is handed over and the event is written, so both
    are ready in that one poll. A subscription made earlier catches a second event
    that follows; by then, in stream order, the wait must have its event."""

    async def main() -> None:
        async with connected(server, "thread") as h:
            loop = asyncio.get_running_loop()
            reactor = h.reactor
            outcome: list[bool] = []
            sentinel_seen = asyncio.Event()
            waits: list[Future[Event]] = []

            def sentinel(_: Event) -> None:
                outcome.append(waits[0].done())
                loop.call_soon_threadsafe(sentinel_seen.set)

            h.client.on_event(sentinel, "POWERDOWN")
            await h.barrier()
            arm, holding, go = threading.Event(), threading.Event(), threading.Event()
            real_poll = reactor._poll  # the hook point; a rename fails the test loudly

            def held_poll(timeout: float | None, maxevents: int) -> list[tuple[int, int]]:
                if arm.is_set() and not holding.is_set():
                    holding.set()  # past the pass's own look at the hand-over queue
                    go.wait(BOUND)
                return real_poll(timeout, maxevents)

            reactor._poll = held_poll
            try:
                arm.set()
                h.poke()  # one pass; the next one stops in held_poll
                assert await asyncio.to_thread(holding.wait, BOUND)
                waits.append(h.client.wait_event("RTC_CHANGE", {"offset": 1}))
                server.emit("RTC_CHANGE", {"offset": 1})
                server.emit("POWERDOWN")
                go.set()
                await bounded(sentinel_seen.wait())
            finally:
                go.set()
                reactor._poll = real_poll
            await h.barrier()
            waits[0].cancel()
            assert outcome == [True], "the wait missed its event"

    run(main)


# =========================================================== 4. aio.connect
def test_connect_attaches_a_reactor_nobody_drives_and_leaves_it_open(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        reactor = Reactor()
        client = await aio.connect(server.path, reactor=reactor, timeout=5)
        bridge = aio.bridge_of(reactor)
        assert bridge is not None and bridge.attached and bridge.reactor is reactor
        assert bridge.loop is asyncio.get_running_loop()
        assert (await client.vm.query_status()).status == "prelaunch"
        # A second client on the same, now attached, reactor keeps that bridge.
        second = await aio.connect(server.path, reactor=reactor, timeout=5)
        assert aio.bridge_of(reactor) is bridge
        assert await second.execute("query-name") == {}
        second.close()
        client.close()
        assert not reactor.closed  # not the client's to close
        assert reactor.watched_fds() == 0
        bridge.detach()
        reactor.close()

    run(main)


def test_connect_without_a_reactor_uses_a_private_one_closed_with_the_client(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        client = await aio.connect(server.path, timeout=5, name="vm-a")
        reactor = client.reactor
        bridge = aio.bridge_of(reactor)
        assert bridge is not None and bridge.attached
        assert client.name == "vm-a"
        assert (await client.execute("query-status"))["status"] == "prelaunch"
        client.close()
        assert reactor.closed
        with pytest.raises(StateError):
            client.execute("query-name")

    run(main)


def test_closing_the_private_reactor_detaches_its_bridge(run: Run[None],
                                                         server: FakeQMPServer) -> None:
    async def main() -> None:
        client = await aio.connect(server.path, timeout=5)
        bridge = aio.bridge_of(client.reactor)
        assert bridge is not None
        client.close()
        await next_iteration()
        try:
            assert not bridge.attached
            assert aio.bridge_of(client.reactor) is None
        finally:
            bridge.detach()

    run(main)


def test_a_second_private_client_connects_after_the_first_is_closed(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        first = await aio.connect(server.path, timeout=5)
        stale = aio.bridge_of(first.reactor)
        first.close()
        try:
            # (It used to hang until the connect timeout: the loop still watched the
            # first reactor's descriptor number, which the second reused.)
            second = await bounded(aio.connect(server.path, timeout=5))
            assert await bounded(second.execute("query-name")) == {}
            second.close()
        finally:
            if stale is not None:
                stale.detach()

    run(main)


def test_connect_failure_closes_the_client_and_leaves_no_fd(run: Run[None]) -> None:
    async def main() -> None:
        fds = _open_fds()
        reactor = Reactor()
        with pytest.raises(ConnectError):
            await aio.connect("/nonexistent/qmp.sock", reactor=reactor, timeout=1)
        assert reactor.watched_fds() == 0
        bridge = aio.bridge_of(reactor)
        assert bridge is not None and bridge.attached  # attached by aio.connect
        bridge.detach()
        reactor.close()
        assert _open_fds() == fds

    run(main)


# Run in a child process: under uvloop this scenario aborts the interpreter.
_FAILED_PRIVATE_CONNECT = """
import asyncio, os, socket, sys
import qmplex
from qmplex import aio

def fds():
    return len(os.listdir("/proc/self/fd"))

async def main():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()  # made first, so it cannot reuse a number closed below
    a.setblocking(False)
    b.setblocking(False)
    before = fds()
    try:
        await aio.connect("/nonexistent/qmp.sock", timeout=1)
    except qmplex.ConnectError:
        pass
    else:
        raise AssertionError("connected to nothing")
    assert fds() == before, "the private reactor or the socket was left open"
    # The loop goes on: it polls for I/O again.
    with a, b:
        await loop.sock_sendall(a, b"x")
        assert await asyncio.wait_for(loop.sock_recv(b, 1), 10) == b"x"

if sys.argv[1] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(main())
finally:
    loop.close()
print("ok")
"""


@pytest.mark.parametrize("loop_kind", [
    "asyncio",
    pytest.param("uvloop", marks=[
        pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not importable")]),
])
def test_a_failed_connect_without_a_reactor_closes_it_and_the_loop_goes_on(
        loop_kind: str) -> None:
    done = subprocess.run([sys.executable, "-c", _FAILED_PRIVATE_CONNECT, loop_kind],
                          capture_output=True, text=True, timeout=BOUND, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_connect_timeout_on_the_fake_clock_closes_the_client(run: Run[None]) -> None:
    async def main() -> None:
        fds = _open_fds()
        clock = FakeClock()
        reactor = Reactor(clock=clock)
        with FakeQMPServer(no_greeting=True) as silent:
            task = asyncio.create_task(aio.connect(silent.path, reactor=reactor, timeout=5))
            await asyncio.to_thread(silent.wait_for_clients, 1, BOUND)
            assert reactor.next_deadline() == clock.now + 5
            clock.advance(4.999)
            reactor.call_soon_threadsafe(_noop)
            await next_iteration()
            await next_iteration()
            assert not task.done()
            clock.advance(0.001)
            reactor.call_soon_threadsafe(_noop)
            with pytest.raises(OperationTimeout):
                await bounded(task)
            assert reactor.watched_fds() == 0
            assert reactor.pending_timers() == 0
        bridge = aio.bridge_of(reactor)
        assert bridge is not None
        bridge.detach()
        reactor.close()
        assert _open_fds() == fds

    run(main)


GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": []}}\r\n')


def test_connect_does_not_block_the_loop(run: Run[None]) -> None:
    """The handshake needs the test's own peer coroutine, on the same loop, to answer:
    it completes only if the loop keeps running while ``aio.connect`` waits."""

    async def read_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = await loop.sock_recv(sock, 4096)
            assert chunk, "the client closed the connection"
            data += chunk
        return data

    async def main() -> None:
        loop = asyncio.get_running_loop()
        directory = tempfile.mkdtemp(prefix="qmplex-aio-")
        path = os.path.join(directory, "qmp.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.setblocking(False)
            connecting = asyncio.create_task(aio.connect(path, timeout=5))
            peer, _ = await bounded(loop.sock_accept(listener))
            with peer:
                peer.setblocking(False)
                assert not connecting.done()  # waiting for the greeting
                await loop.sock_sendall(peer, GREETING)
                negotiation = json.loads(await bounded(read_line(loop, peer)))
                assert negotiation["execute"] == "qmp_capabilities"
                assert not connecting.done()  # waiting for its reply
                await loop.sock_sendall(peer, json.dumps(
                    {"return": {}, "id": negotiation["id"]}).encode() + b"\r\n")
                client = await bounded(connecting)
                assert client.version is not None and client.version.minor == 2
                # A command through the same loop-driven peer.
                status = client.execute("query-status")
                command = json.loads(await bounded(read_line(loop, peer)))
                assert command["execute"] == "query-status"
                await loop.sock_sendall(peer, json.dumps(
                    {"return": {"status": "running", "running": True,
                                "singlestep": False}, "id": command["id"]}).encode() + b"\r\n")
                assert (await bounded(status))["running"] is True
                client.close()
        finally:
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)

    run(main)


# ============================================ 5. drivers, the bridge and timeouts
def test_awaiting_a_future_whose_reactor_nobody_drives_raises(run: Run[None],
                                                              server: FakeQMPServer) -> None:
    reactor = Reactor()
    client = qmplex.connect(server.path, reactor=reactor, timeout=5)  # blocking style
    pending: list[Future[Any]] = []

    async def main() -> None:
        assert not reactor.has_driver()
        with pytest.raises(StateError, match="nobody drives"):
            await Future(reactor)
        fut = client.execute("query-status")
        pending.append(fut)
        with pytest.raises(StateError, match="nobody drives"):
            await fut
        assert not fut.done()  # untouched: not cancelled, still to be answered
        with pytest.raises(StateError, match="nobody drives"):
            await aio.wrap(client.vm.query_status())

    try:
        run(main)
        # The blocking style still completes it afterwards.
        assert pending[0].result(timeout=BOUND)["status"] == "prelaunch"
    finally:
        client.close()
        reactor.close()


def test_await_done_and_detached_futures(run: Run[None]) -> None:
    async def main() -> None:
        done: Future[int] = Future()
        done.set_result(5)
        assert await done == 5
        assert await aio.wrap(done) == 5
        failed: Future[int] = Future()
        failed.set_exception(ValueError("no"))
        with pytest.raises(ValueError, match="no"):
            await failed
        # A detached future (no reactor) completed by a loop callback.
        detached: Future[str] = Future()
        asyncio.get_running_loop().call_soon(detached.set_result, "late")
        assert await aio.wrap(detached) == "late"
        # ... and by another thread.
        from_thread: Future[str] = Future()
        threading.Thread(target=from_thread.set_result, args=("threaded",)).start()
        assert await bounded(from_thread) == "threaded"

    run(main)


def test_attach_rules_and_detach(run: Run[None]) -> None:
    async def main() -> None:
        reactor = Reactor()
        bridge = aio.attach(reactor)
        assert reactor.has_driver()
        with pytest.raises(StateError):
            aio.attach(reactor)
        assert aio.bridge_of(reactor) is bridge
        bridge.detach()
        bridge.detach()  # idempotent
        assert not bridge.attached and aio.bridge_of(reactor) is None
        assert not reactor.has_driver()
        # Detached, the reactor works as before (driven by run_once).
        ran: list[int] = []
        reactor.call_soon(ran.append, 1)
        reactor.run_once(0)
        assert ran == [1]
        # A reactor nobody drives is attached to the running loop by aio.connect.
        with pytest.raises(ConnectError):
            await aio.connect("/nonexistent", reactor=reactor)
        auto = aio.bridge_of(reactor)
        assert auto is not None and auto.attached
        auto.detach()
        with aio.attach(reactor) as again:
            assert again.attached
        assert not again.attached
        async with aio.attach(reactor) as again:
            assert again.attached
        assert not again.attached
        # A reactor run by a thread is not attached by aio.connect.
        thread = start_reactor_thread(reactor)
        with pytest.raises(ConnectError):
            await aio.connect("/nonexistent", reactor=reactor)
        assert aio.bridge_of(reactor) is None
        reactor.stop()
        thread.join(BOUND)
        reactor.close()
        with pytest.raises(StateError):
            aio.attach(reactor)

    run(main)
    orphan = Reactor()
    try:
        with pytest.raises(RuntimeError):
            aio.attach(orphan)  # no running loop
    finally:
        orphan.close()


def test_attach_to_a_loop_that_is_not_running_yet(loop_factory: LoopFactory,
                                                  fd_baseline: None) -> None:
    loop = loop_factory()
    reactor = Reactor()
    try:
        bridge = aio.attach(reactor, loop)
        assert bridge.loop is loop
        fired: list[str] = []
        reactor.call_soon(fired.append, "soon")

        async def main() -> None:
            await bounded(set_when_done(_completed_by(reactor, "x")).wait())

        loop.run_until_complete(main())
        assert fired == ["soon"]
        bridge.detach()
    finally:
        reactor.close()
        _finish(loop)


def _completed_by(reactor: Reactor, value: str) -> Future[str]:
    fut: Future[str] = Future(reactor)
    reactor.call_soon(fut.set_result, value)
    return fut


def test_closing_the_reactor_in_a_callback_detaches_the_bridge(run: Run[None]) -> None:
    async def main() -> None:
        reactor = Reactor()
        bridge = aio.attach(reactor)
        closed: Future[None] = Future(reactor)
        reactor.call_soon(reactor.close)
        reactor.call_soon(closed.set_result, None)
        await closed
        await next_iteration()
        assert reactor.closed
        assert not bridge.attached and aio.bridge_of(reactor) is None

    run(main)


def test_closing_the_reactor_between_passes_detaches_the_bridge(run: Run[None]) -> None:
    async def main() -> None:
        reactor = Reactor()
        bridge = aio.attach(reactor)
        await next_iteration()  # the bridge's first pass has run; nothing is pending
        await loop_polled_io()  # (and the loop polls the reactor's descriptor)
        assert bridge.passes >= 1
        reactor.close()
        await next_iteration()
        try:
            assert not bridge.attached
        finally:
            bridge.detach()

    run(main)


def test_awaiting_when_the_bridge_is_detached_meanwhile_raises(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            server.on("query-status", never=True)
            fut = h.client.execute("query-status")
            task = asyncio.ensure_future(fut)
            await next_iteration()  # the task now awaits fut
            h.bridge.detach()
            await next_iteration()
            await next_iteration()
            try:
                assert task.done()
                with pytest.raises(StateError):
                    task.result()
            finally:
                task.cancel()

    run(main)


def test_awaiting_when_the_reactor_thread_stops_meanwhile_raises(
        run: Run[None], server: FakeQMPServer) -> None:
    async def main() -> None:
        reactor = Reactor()
        thread = start_reactor_thread(reactor)
        client = await aio.connect(server.path, reactor=reactor, timeout=5)
        server.on("query-status", never=True)
        fut = client.execute("query-status")
        task = asyncio.ensure_future(fut)
        await next_iteration()  # the task now awaits fut
        reactor.stop()
        thread.join(BOUND)
        assert not thread.is_alive() and not reactor.has_driver()
        await next_iteration()
        await next_iteration()
        try:
            assert task.done()
            with pytest.raises(StateError):
                task.result()
        finally:
            task.cancel()
            client.close()
            reactor.close()

    run(main)


def test_a_thread_waiting_with_result_leaves_an_attached_reactor_to_the_loop(
        run: Run[None], server: FakeQMPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with connected(server, "attached") as h:
            reactor = h.reactor
            refusals = [0]
            real_run_once = reactor.run_once

            def counting_run_once(timeout: float | None = None) -> None:
                try:
                    real_run_once(timeout)
                except StateError:
                    refusals[0] += 1
                    raise

            monkeypatch.setattr(reactor, "run_once", counting_run_once)
            base = len(server.commands())
            server.stall(reading=False)
            fut = h.client.execute("query-status")
            await received_eventually(server, base + 1)
            ran_on: list[str] = []
            started = threading.Event()

            def mark() -> None:
                ran_on.append(threading.current_thread().name)
                started.set()

            fut.add_done_callback(lambda _: ran_on.append(threading.current_thread().name))
            # Queued while the loop cannot run (this coroutine does not yield until the
            # worker waits): a pass is now scheduled on the loop, and pending here.
            reactor.call_soon_threadsafe(mark)
            worker = threading.Thread(target=fut.result, args=(BOUND,), name="worker")
            worker.start()
            started.wait(2)  # set by the worker's own pass (the bug), else not yet
            for _ in range(50):
                await next_iteration()
            server.resume()
            await bounded(set_when_done(fut).wait())
            worker.join(BOUND)
            loop_thread = threading.current_thread().name
            problems = []
            if ran_on != [loop_thread, loop_thread]:
                problems.append(f"callbacks ran on {ran_on}, not on {loop_thread!r}")
            if refusals[0] > 1:
                problems.append(f"the bridge's pass was refused {refusals[0]} times "
                                "(it retried on every loop iteration)")
            assert not problems, "; ".join(problems)

    run(main)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_operation_timeout_fires_on_the_fake_clock(run: Run[None], server: FakeQMPServer,
                                                      driver: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with connected(server, driver, clock=clock) as h:
            client = h.client
            base = len(server.commands())
            server.on("query-status", never=True)
            start = clock.now
            fut = client.execute("query-status", timeout=5)
            await received_eventually(server, base + 1)
            assert await h.on_reactor(h.reactor.next_deadline) == start + 5
            clock.advance(4.999)
            h.poke()
            await h.barrier()
            assert not fut.done()
            clock.advance(0.001)
            h.poke()
            with pytest.raises(OperationTimeout) as info:
                await bounded(fut)
            assert info.value.command == "query-status"
            assert "5 s" in str(info.value)
            # A typed operation's timeout, through its `then` step.
            typed = client.vm.query_status(timeout=2)
            clock.advance(2)
            h.poke()
            with pytest.raises(OperationTimeout):
                await bounded(typed)
            # The connection survived; nothing is left scheduled.
            server.off("query-status")
            assert (await client.execute("query-status"))["status"] == "prelaunch"
            assert await h.on_reactor(h.reactor.pending_timers) == 0

    run(main)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_wait_event_timeout_fires_on_the_fake_clock(run: Run[None], server: FakeQMPServer,
                                                      driver: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with connected(server, driver, clock=clock) as h:
            waiting = h.client.wait_event("SHUTDOWN", timeout=10)
            await h.barrier()
            clock.advance(9.5)
            h.poke()
            await h.barrier()
            assert not waiting.done()
            clock.advance(0.5)
            h.poke()
            with pytest.raises(OperationTimeout):
                await bounded(waiting)
            assert await h.on_reactor(h.reactor.pending_timers) == 0

    run(main)


def test_the_bridge_arms_a_loop_timer_for_the_reactor_deadline(run: Run[None],
                                                               server: FakeQMPServer) -> None:
    """No poke here: after the bridge's pass, only its own loop timer (armed for the
    reactor's next deadline, a few real milliseconds away) can run the reactor again."""

    async def main() -> None:
        clock = FakeClock()
        async with connected(server, "attached", clock=clock) as h:
            server.on("query-status", never=True)
            fut = h.client.execute("query-status", timeout=0.005)
            fired: list[float] = []
            h.reactor.call_later(0.002, lambda: fired.append(clock.now))
            await next_iteration()  # the pass that wrote the command and armed the timer
            assert not fut.done() and fired == []
            clock.advance(0.005)
            with pytest.raises(OperationTimeout):
                await bounded(fut)
            assert fired == [clock.now]
            server.off("query-status")
            assert (await client_status(h.client))["status"] == "prelaunch"

    run(main)


async def client_status(client: Client) -> Any:
    return await bounded(client.execute("query-status"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_commands_from_other_threads_complete_awaited_futures(
        run: Run[None], server: FakeQMPServer, driver: str) -> None:
    """Coroutines and plain threads share one client: a worker thread's commands are
    handed to whoever drives the reactor (the loop's bridge, or the reactor thread)."""

    async def main() -> None:
        async with connected(server, driver) as h:
            def worker() -> list[Any]:
                futs = [h.client.execute("query-name") for _ in range(50)]
                return qmplex.gather(futs).result(timeout=BOUND)

            from_thread = asyncio.to_thread(worker)
            awaited = qmplex.gather(h.client.execute("query-name") for _ in range(50))
            results = await bounded(asyncio.gather(from_thread, awaited))
            assert list(results) == [[{}] * 50, [{}] * 50]

    run(main)
