"""qmplex.aio: real asyncio programs (``asyncio.run``) driving a qmplex reactor with no
second thread, talking to the fake QMP server (and, marked ``qemu``, to a real QEMU)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import qmplex
from qmplex import Cancelled, CommandError, Event, Future, Reactor, StateError, Timeout, aio
from qmplex.testing import FakeQMPServer


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_one_thread_runs_asyncio_the_reactor_and_the_fake_server() -> None:
    threads_before = threading.active_count()
    fds_before = _open_fds()
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
            status = await aio.wrap(client.execute("query-status"))
            assert status["status"] == "prelaunch"
            # Pipelined: many commands, one await.
            results = await aio.wrap(qmplex.gather(
                client.execute("query-name") for _ in range(500)))
            assert results == [{}] * 500
            assert threading.active_count() == threads_before  # no second thread
            await tick
            assert bridge.passes > 0
            client.close()
            server.close()
        reactor.close()

    asyncio.run(main())
    assert log == ["tick"] * 5
    assert _open_fds() == fds_before


def test_events_and_event_completions_arrive_through_the_bridge() -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            seen: list[Event] = []
            client.on_event(seen.append, "RTC_CHANGE")
            server.emit("RTC_CHANGE", {"offset": 7})
            reset = client.wait_event("RESET", timeout=5)
            await aio.wrap(client.execute("system_reset"))
            event = await aio.wrap(reset)
            assert event.name == "RESET"
            assert [e.data for e in seen] == [{"offset": 7}]
            # device_del completes on its DEVICE_DELETED, chained blockdev-del after it.
            await aio.wrap(client.execute("blockdev-add", {"driver": "null-co",
                                                           "node-name": "n0"}))
            await aio.wrap(client.execute("device_add", {"driver": "scsi-hd", "id": "d0",
                                                         "drive": "n0"}))
            ev = await aio.wrap(client.execute(
                "device_del", {"id": "d0"},
                until=qmplex.EventFilter("DEVICE_DELETED", {"device": "d0"})).chain(
                    lambda _ev: client.execute("blockdev-del", {"node-name": "n0"})))
            assert ev == {}
            assert server.nodes == {}
            client.close()
            server.close()
        reactor.close()

    asyncio.run(main())


def test_reactor_timers_fire_under_asyncio() -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            server.on("query-status", never=True)
            t0 = time.monotonic()
            with pytest.raises(Timeout):
                await aio.wrap(client.execute("query-status", timeout=0.05))
            assert time.monotonic() - t0 < 2
            fired: list[float] = []
            reactor.call_later(0.02, lambda: fired.append(reactor.time()))
            aio.bridge_of(reactor).kick()  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
            assert len(fired) == 1
            # The connection survived the timeout.
            assert await aio.wrap(client.execute("query-name")) == {}
            client.close()
            server.close()
        reactor.close()

    asyncio.run(main())


def test_command_errors_propagate() -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            with pytest.raises(CommandError) as info:
                await aio.wrap(client.execute("device_del", {"id": "nope"}))
            assert info.value.error_class == "DeviceNotFound"
            client.close()
            server.close()
        reactor.close()

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_qmplex_future() -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            server = FakeQMPServer(reactor=reactor).start()
            client = await aio.connect(server.path, reactor=reactor, timeout=5)
            server.on("query-status", never=True)
            fut = client.execute("query-status")
            task = asyncio.create_task(aio.wrap(fut))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert fut.cancelled()
            assert await aio.wrap(client.execute("query-name")) == {}
            # Cancelled by someone else: the awaiting coroutine sees Cancelled.
            other = client.execute("query-status")
            other.cancel()
            with pytest.raises(Cancelled):
                await aio.wrap(other)
            client.close()
            server.close()
        reactor.close()

    asyncio.run(main())


def test_wrap_a_future_of_a_reactor_driven_by_another_thread() -> None:
    with FakeQMPServer() as server:
        reactor = Reactor()
        client = qmplex.connect(server.path, reactor=reactor, timeout=5)
        thread = threading.Thread(target=reactor.run, daemon=True)
        thread.start()

        def on_reactor(name: str) -> Future[Any]:
            # Client methods run on the reactor's thread.
            box: concurrent.futures.Future[Future[Any]] = concurrent.futures.Future()
            reactor.call_soon_threadsafe(lambda: box.set_result(client.execute(name)))
            return box.result(timeout=5)

        async def main() -> None:
            assert aio.bridge_of(reactor) is None
            status = await aio.wrap(on_reactor("query-status"))
            assert status["running"] is False
            server.on("query-name", never=True)
            fut = on_reactor("query-name")
            task = asyncio.create_task(aio.wrap(fut))
            await asyncio.sleep(0.01)
            task.cancel()  # crosses to the reactor thread with call_soon_threadsafe
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):
                if fut.cancelled():
                    break
                await asyncio.sleep(0.01)
            assert fut.cancelled()

        try:
            asyncio.run(main())
        finally:
            reactor.stop()
            thread.join(5)
            client.close()
            reactor.close()


def test_wrap_of_a_done_or_detached_future() -> None:
    async def main() -> None:
        done: Future[int] = Future()
        done.set_result(5)
        assert await aio.wrap(done) == 5
        detached: Future[str] = Future()
        asyncio.get_running_loop().call_later(0.01, detached.set_result, "late")
        assert await aio.wrap(detached) == "late"

    asyncio.run(main())


def test_attach_rules_and_detach() -> None:
    async def main() -> None:
        reactor = Reactor()
        bridge = aio.attach(reactor)
        with pytest.raises(StateError):
            aio.attach(reactor)
        assert aio.bridge_of(reactor) is bridge
        bridge.detach()
        bridge.detach()  # idempotent
        assert not bridge.attached and aio.bridge_of(reactor) is None
        # Detached, the reactor works as before (driven by run_once).
        ran: list[int] = []
        reactor.call_soon(ran.append, 1)
        reactor.run_once(0)
        assert ran == [1]
        # A reactor nobody drives is attached to the running loop by aio.connect.
        with pytest.raises(qmplex.ConnectError):
            await aio.connect("/nonexistent", reactor=reactor)
        auto = aio.bridge_of(reactor)
        assert auto is not None and auto.attached
        auto.detach()
        async with aio.attach(reactor) as again:
            assert again.attached
        assert not again.attached
        reactor.close()
        with pytest.raises(StateError):
            aio.attach(reactor)

    asyncio.run(main())
    with pytest.raises(RuntimeError):
        aio.attach(Reactor())  # no running loop


def test_connect_failure_closes_the_client() -> None:
    async def main() -> None:
        reactor = Reactor()
        with aio.attach(reactor):
            with pytest.raises(qmplex.ConnectError):
                await aio.connect("/nonexistent/qmp.sock", reactor=reactor, timeout=1)
            assert reactor.watched_fds() == 0
        reactor.close()

    asyncio.run(main())


@pytest.mark.qemu
def test_asyncio_program_against_real_qemu() -> None:
    from qmplex.qemu import QemuProcess, qemu_or_skip

    binary = qemu_or_skip()
    with QemuProcess(binary, extra_args=["-device", "virtio-scsi-pci,id=scsi0"],
                     connect=False) as vm:

        async def main() -> None:
            reactor = Reactor()
            with aio.attach(reactor):
                client = await aio.connect(vm.qmp_path, reactor=reactor, timeout=10)
                assert (await aio.wrap(client.execute("query-status")))["status"] == \
                    "prelaunch"
                stop_seen = client.wait_event("RESUME", timeout=10)
                await aio.wrap(client.execute("cont"))
                assert (await aio.wrap(stop_seen)).name == "RESUME"
                futs = []
                for i in range(20):
                    futs.append(client.execute("blockdev-add", {"driver": "null-co",
                                                                "node-name": f"b{i}"}))
                    futs.append(client.execute("device_add", {
                        "driver": "scsi-hd", "id": f"d{i}", "drive": f"b{i}",
                        "bus": "scsi0.0", "scsi-id": i, "lun": 0}))
                await aio.wrap(qmplex.gather(futs))
                def free(node: str) -> Callable[[Any], Future[Any]]:
                    return lambda _event: client.execute("blockdev-del", {"node-name": node})

                unplugs = [client.execute(
                    "device_del", {"id": f"d{i}"},
                    until=qmplex.EventFilter("DEVICE_DELETED", {"device": f"d{i}"})).chain(
                        free(f"b{i}")) for i in range(20)]
                await asyncio.wait_for(aio.wrap(qmplex.gather(unplugs)), 20)
                client.close()
            reactor.close()

        asyncio.run(main())
