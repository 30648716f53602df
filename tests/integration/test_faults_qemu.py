"""Faults on a real QEMU (TCG, paused, no guest): killed with SIGKILL under load, frozen
with SIGSTOP while another QEMU is served on the same reactor, and restarted on the
same socket path under a client that reconnects with its subscriptions intact."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectError,
    ConnectionLost,
    Event,
    Future,
    Reactor,
    Timeout,
)
from qmplex.qemu import QemuProcess, qemu_or_skip

pytestmark = pytest.mark.qemu

#: Every future must fail within this many seconds of QEMU's death.
PROMPT_S = 1.0
#: A timeout may fire this much later than its deadline on a busy 2-core machine.
TIMER_SLACK_S = 0.25


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r
        assert r.watched_fds() == 0, "a socket is still registered"


def _drive(reactor: Reactor, cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        reactor.run_once(0.01)


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of ``pid`` is in the stopped state (SIGSTOP took effect)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(s in ("T", "t") for s in states):
            return
        time.sleep(0.001)  # polling the kernel's view; no ordering depends on it
    raise AssertionError(f"QEMU {pid} did not stop")


def test_sigkill_with_1000_commands_and_100_waits_pending(
    binary: str, reactor: Reactor
) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with QemuProcess(binary, connect=False) as vm:
        client = Client(reactor)
        client.connect(vm.qmp_path, timeout=10).result(10)
        futs: list[Future[Any]] = [client.execute("query-status") for _ in range(1000)]
        waits: list[Future[Any]] = [client.wait_event("SHUTDOWN") for _ in range(100)]
        everything = futs + waits
        finished: list[float] = []
        for f in everything:
            f.add_done_callback(lambda _f: finished.append(time.monotonic()))
        # Let part of the load through, so commands are truly in flight at the kill.
        _drive(reactor, lambda: sum(f.done() for f in futs) >= 50)
        answered = sum(f.done() for f in futs)
        assert answered < 1000
        vm.kill()
        killed_at = time.monotonic()
        _drive(reactor, lambda: all(f.done() for f in everything), timeout=PROMPT_S * 5)
        _drive(reactor, lambda: len(finished) == len(everything), timeout=5)
        lost = [f for f in everything if isinstance(f.exception(0), ConnectionLost)]
        ok = [f for f in futs if f.exception(0) is None]
        assert len(ok) + len(lost) == len(everything)  # nothing else, nothing twice
        assert len(lost) >= 100 + (1000 - answered) - client.window
        assert all(isinstance(w.exception(0), ConnectionLost) for w in waits)
        slowest = max(finished) - killed_at
        assert slowest < PROMPT_S, f"last future failed {slowest:.3f} s after the kill"
        print(f"answered before kill: {answered}; all {len(everything)} done "
              f"{slowest * 1000:.1f} ms after SIGKILL")
        assert client.state is ClientState.DISCONNECTED and client.pending == 0
        client.close()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_sigstop_timeouts_fire_on_schedule_and_other_qemu_is_served(
    binary: str, reactor: Reactor
) -> None:
    with QemuProcess(binary, connect=False) as frozen, \
            QemuProcess(binary, connect=False) as healthy:
        a = Client(reactor)
        b = Client(reactor)
        a.connect(frozen.qmp_path, timeout=10).result(10)
        b.connect(healthy.qmp_path, timeout=10).result(10)
        frozen.freeze()
        _wait_stopped(frozen.pid)
        start = reactor.time()
        timeouts = [0.2 + 0.05 * i for i in range(12)]  # 7 get sent, 5 stay queued
        futs = [a.execute("query-status", timeout=t) for t in timeouts]
        fired: dict[int, float] = {}
        def on_done(i: int) -> Any:
            return lambda _f: fired.__setitem__(i, reactor.time())

        for i, f in enumerate(futs):
            f.add_done_callback(on_done(i))
        served = 0
        while len(fired) < len(futs):  # the reactor keeps serving the other QEMU
            assert b.execute("query-status").result(5)["status"] == "prelaunch"
            served += 1
            assert reactor.time() - start < 10
        assert served > 10
        for i, f in enumerate(futs):
            exc = f.exception(0)
            assert isinstance(exc, Timeout), exc
            late = fired[i] - (start + timeouts[i])
            assert -0.01 <= late < TIMER_SLACK_S, (i, late)
        worst = max(fired[i] - (start + t) for i, t in enumerate(timeouts))
        print(f"{len(futs)} timeouts fired at most {worst * 1000:.1f} ms late; "
              f"{served} round trips to the other QEMU meanwhile")
        assert "sent, no reply" in str(futs[0].exception(0))
        assert "queued" in str(futs[-1].exception(0))
        # Thawed, QEMU answers the 7 it had: the late replies are discarded, the
        # window comes back and the connection works again.
        frozen.thaw()
        assert a.execute("query-status", timeout=10).result(10)["status"] == "prelaunch"
        assert a.pending == 0 and a.state is ClientState.READY
        a.close()
        b.close()


def test_restart_on_same_socket_reconnect_keeps_subscriptions(
    binary: str, reactor: Reactor
) -> None:
    private = tempfile.mkdtemp(prefix="qmplex-restart-")  # 0700
    path = os.path.join(private, "qmp.sock")
    extra = ["-qmp", f"unix:{path},server=on,wait=off"]  # a second, fixed monitor
    client = Client(reactor)
    resumed: list[Event] = []
    stopped: list[Event] = []
    client.on_event(resumed.append, "RESUME")
    sub = client.on_event(stopped.append, "STOP", queue=10)
    lost: list[BaseException | None] = []
    client.on_disconnect(lost.append)
    try:
        vm1 = QemuProcess(binary, connect=False, extra_args=extra).start()
        try:
            v1 = client.connect(path, timeout=10).result(10)
            client.execute("cont").result(10)
            _drive(reactor, lambda: len(resumed) == 1)
            pending = [client.execute("query-status") for _ in range(50)]
            before_wait = client.wait_event("SHUTDOWN")
            vm1.kill()
            _drive(reactor, lambda: client.state is ClientState.DISCONNECTED)
            assert all(f.done() for f in pending)
            assert isinstance(before_wait.exception(0), ConnectionLost)
            assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
        finally:
            vm1.stop()
        # Nobody listens on the path now: reconnect fails cleanly and may be retried.
        failed = client.reconnect(timeout=5)
        assert isinstance(failed.exception(5), ConnectError)
        assert client.state is ClientState.DISCONNECTED
        with QemuProcess(binary, connect=False, extra_args=extra) as vm2:
            v2 = client.reconnect(timeout=10).result(10)
            assert v2 == v1
            assert client.execute("query-status").result(10)["status"] == "prelaunch"
            client.execute("cont").result(10)
            client.execute("stop").result(10)
            _drive(reactor, lambda: len(resumed) == 2 and len(stopped) == 1)
            assert sub.dropped == 0
            client.close()
            assert vm2.alive()
    finally:
        client.close()
        shutil.rmtree(private, ignore_errors=True)
