"""``qmplex.qemu`` against a real QEMU, the way a VM manager uses it: fixed socket paths,
extra monitors, restarts that reconnecting clients survive, launches that share one
reactor, and exits reported with their status.

Each test starts its own paused QEMU (``-S``, TCG) and leaves nothing behind: no
process, no descriptor, no socket file, no private directory. Waits are bounded loops
on conditions or futures; nothing sleeps and nothing measures time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qmplex
from qmplex import (
    Cancelled,
    Client,
    ClientState,
    ConnectionLost,
    Future,
    Reactor,
    ReconnectPolicy,
    StateError,
    gather,
)
from qmplex.qemu import QemuError, QemuProcess, SocketPathError, qemu_or_skip

pytestmark = pytest.mark.qemu

SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]
#: Seconds any single wait may take before the test fails: a guard, not a measurement.
BOUND = 30.0


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """The test must close every descriptor it opened (sockets, pidfds, reactors)."""
    before = _open_fds()
    yield
    assert _open_fds() == before, "file descriptors leaked"


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory of the caller's, with a path short enough for AF_UNIX."""
    path = tempfile.mkdtemp(prefix="qx-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def drive(reactor: Reactor, cond: Callable[[], object]) -> None:
    """Run ``reactor`` until ``cond()`` is true (bounded)."""
    for _ in range(int(BOUND / 0.01)):
        if cond():
            return
        reactor.run_once(0.01)
    raise AssertionError("condition not reached in time")


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


# ------------------------------------------------------------ fixed socket paths

def test_a_fixed_qmp_path_is_used_and_only_its_socket_removed(
        binary: str, short_dir: str, no_leaks: None) -> None:
    path = os.path.join(short_dir, "vm1.sock")
    notes = os.path.join(short_dir, "notes.txt")
    Path(notes).write_text("the caller's")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # left behind by an earlier QEMU that was killed: removed
    with QemuProcess(binary, qmp_path=path, connect=False) as vm:
        assert vm.qmp_path == path and stat.S_ISSOCK(os.lstat(path).st_mode)
        with qmplex.connect(path, timeout=BOUND) as client:
            assert client.execute("query-status").result(BOUND)["status"] == "prelaunch"
        # A second QEMU on the same path would silently take the monitor: refused.
        other = QemuProcess(binary, qmp_path=path, connect=False)
        with pytest.raises(SocketPathError, match="already listening") as info:
            other.start()
        assert info.value.path == path
        with pytest.raises(StateError):
            _ = other.pid  # nothing was spawned
        with qmplex.connect(path, timeout=BOUND) as client:  # the first one still serves
            assert client.execute("query-status").result(BOUND)["status"] == "prelaunch"
    assert sorted(os.listdir(short_dir)) == ["notes.txt"]


def test_a_missing_directory_is_refused_before_qemu_starts(binary: str, short_dir: str,
                                                           no_leaks: None) -> None:
    vm = QemuProcess(binary, qmp_path=os.path.join(short_dir, "gone", "vm.sock"))
    with pytest.raises(SocketPathError, match="directory .*gone' does not exist"):
        vm.start()
    with pytest.raises(StateError):
        _ = vm.pid


def test_kill_removes_the_socket_qemu_left_behind(binary: str, short_dir: str,
                                                  no_leaks: None) -> None:
    path = os.path.join(short_dir, "vm1.sock")
    vm = QemuProcess(binary, qmp_path=path, extra_monitors=["ops"], connect=False).start()
    assert sorted(os.listdir(short_dir)) == ["vm1-ops.sock", "vm1.sock"]
    pid = vm.pid
    vm.kill()  # SIGKILL: QEMU cannot remove its sockets itself
    assert os.listdir(short_dir) == [] and os.path.isdir(short_dir)
    assert_reaped(pid)
    assert vm.stop() == -9


# --------------------------------------------------------------------- restart

def test_restart_keeps_the_path_and_a_reconnecting_client_comes_back(
        binary: str, short_dir: str, no_leaks: None) -> None:
    path = os.path.join(short_dir, "vm1.sock")
    with Reactor() as users_reactor, QemuProcess(binary, qmp_path=path, extra_args=SCSI,
                                                 name="vm1") as vm:
        own = vm.client
        assert own is not None and vm.reactor is not None
        resumed: list[str] = []
        own.on_event(lambda event: resumed.append(event.name), "RESUME")
        user = Client(users_reactor, name="manager",
                      reconnect=ReconnectPolicy(initial=0.01, jitter=0))
        user.connect(path, timeout=BOUND).result(BOUND)
        user.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"}).result(BOUND)
        lost: list[BaseException | None] = []
        back: list[tuple[int, BaseException | None]] = []
        user.on_disconnect(lost.append)
        user.on_reconnect(lambda attempt, error: back.append((attempt, error)))
        old_pid = vm.pid

        # Nobody drives the manager's reactor meanwhile: when it runs again, its client
        # sees the old connection end and the new QEMU ready at once.
        assert vm.restart() is vm
        assert vm.pid != old_pid and vm.alive() and vm.qmp_path == path
        assert_reaped(old_pid)
        drive(users_reactor, lambda: back)
        assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
        assert back == [(1, None)]
        # Its next command works, on the new QEMU (which never saw node n0).
        assert user.execute("query-named-block-nodes").result(BOUND) == []

        # The launcher's client was reconnected, not replaced; its subscription carried over.
        assert vm.client is own and own.state is ClientState.READY
        own.execute("cont").result(BOUND)
        drive(vm.reactor, lambda: resumed)
        assert resumed == ["RESUME"]
        user.close()
    assert os.listdir(short_dir) == []


def test_restart_after_kill_after_a_crash_and_after_stop(binary: str, no_leaks: None) -> None:
    vm = QemuProcess(binary)  # sockets in the private directory
    vm.start()
    path, own = vm.qmp_path, vm.client
    assert own is not None
    vm.kill()
    assert not os.path.exists(os.path.dirname(path))
    vm.restart()  # the private directory is made again at the same path
    assert vm.qmp_path == path and stat.S_ISSOCK(os.lstat(path).st_mode)
    assert vm.client is own
    assert own.execute("query-status").result(BOUND)["status"] == "prelaunch"

    os.kill(vm.pid, signal.SIGKILL)  # a crash, from outside
    assert vm.wait_exit().result(BOUND) == -9
    vm.restart()
    assert vm.client is own
    assert own.execute("query-status").result(BOUND)["status"] == "prelaunch"

    assert vm.stop() == 0
    assert vm.client is None and own.state is ClientState.CLOSED
    with pytest.raises(StateError, match="restart"):
        vm.start()  # start() runs once; restart() runs it again
    vm.restart()  # after stop(): a new client
    assert vm.client is not None and vm.client is not own
    assert vm.client.execute("query-status").result(BOUND)["status"] == "prelaunch"
    assert vm.stop() == 0
    assert not os.path.exists(os.path.dirname(path))


# -------------------------------------------------------------- extra monitors

def test_two_clients_on_two_monitors_see_the_same_events(binary: str, no_leaks: None) -> None:
    with QemuProcess(binary, extra_monitors=["ops"]) as vm:
        assert vm.monitor_path("ops") == os.path.join(os.path.dirname(vm.qmp_path),
                                                      "qmp-ops.sock")
        with qmplex.connect(vm.qmp_path, timeout=BOUND) as first, \
                qmplex.connect(vm.monitor_path("ops"), timeout=BOUND) as second:
            assert vm.client is not None
            clients = [first, second, vm.client]  # all three connected at once
            resumed = [c.wait_event("RESUME", timeout=BOUND) for c in clients]
            second.execute("cont").result(BOUND)
            assert [f.result(BOUND).name for f in resumed] == ["RESUME"] * 3
            stopped = [c.wait_event("STOP", timeout=BOUND) for c in clients]
            first.execute("stop").result(BOUND)
            assert [f.result(BOUND).name for f in stopped] == ["STOP"] * 3
            assert [c.execute("query-status").result(BOUND)["status"] for c in clients] \
                == ["paused"] * 3


# ------------------------------------------------------- launching on a reactor

def test_four_launches_share_one_reactor_which_stays_responsive(
        binary: str, reactor: Reactor) -> None:
    vms = [QemuProcess(binary, reactor=reactor, extra_args=SCSI, name=f"vm{i}")
           for i in range(4)]
    launches = [vm.launch() for vm in vms]  # each returns at once, QEMU spawned
    assert len({vm.pid for vm in vms}) == 4 and all(vm.alive() for vm in vms)
    pending_at_tick: list[int] = []

    def tick() -> None:  # a timer of the manager's, scheduled during the launches
        pending = sum(not launched.done() for launched in launches)
        pending_at_tick.append(pending)
        if pending:
            reactor.call_later(0.001, tick)

    reactor.call_later(0, tick)
    try:
        assert gather(launches).result(BOUND) == vms
        drive(reactor, lambda: pending_at_tick[-1] == 0)
        # The reactor ran the timer while all four QEMUs were starting, and kept
        # running it until they were all ready.
        assert pending_at_tick[0] == 4
        assert pending_at_tick == sorted(pending_at_tick, reverse=True)
        statuses = gather([vm.client.execute("query-status") for vm in vms if vm.client])
        assert [s["status"] for s in statuses.result(BOUND)] == ["prelaunch"] * 4
    finally:
        assert gather([vm.shutdown() for vm in vms]).result(BOUND) == [0] * 4
    for vm in vms:
        assert_reaped(vm.pid)


def test_launch_inside_a_reactor_callback(binary: str, reactor: Reactor) -> None:
    vm = QemuProcess(binary, reactor=reactor)
    done: list[Future[QemuProcess]] = []
    refused: list[Exception] = []

    def callback() -> None:
        try:
            vm.start()
        except StateError as exc:  # a blocking start would stop the reactor
            refused.append(exc)
        vm.launch().add_done_callback(done.append)

    reactor.call_soon(callback)
    drive(reactor, lambda: done)
    assert "launch" in str(refused[0])
    assert done[0].result() is vm and vm.client is not None
    assert vm.client.execute("query-status").result(BOUND)["status"] == "prelaunch"
    assert vm.stop() == 0


def test_cancelling_a_launch_kills_qemu(binary: str, reactor: Reactor) -> None:
    vm = QemuProcess(binary, reactor=reactor)
    launched = vm.launch()
    pid = vm.pid
    exited = vm.wait_exit()
    assert launched.cancel()
    assert exited.result(BOUND) == -9
    drive(reactor, lambda: not os.path.exists(os.path.dirname(vm.qmp_path)))
    with pytest.raises(Cancelled):
        launched.result()
    assert_reaped(pid)
    assert vm.stop() == -9


# ------------------------------------------------------------ exits and errors

def test_a_qemu_killed_after_start_is_reported_with_its_signal(binary: str,
                                                               no_leaks: None) -> None:
    with QemuProcess(binary, name="vm9") as vm:
        client, reactor = vm.client, vm.reactor
        assert client is not None and reactor is not None
        lost: list[BaseException | None] = []
        client.on_disconnect(lost.append)
        exited = vm.wait_exit()
        os.kill(vm.pid, signal.SIGKILL)  # from outside, as the OOM killer would
        assert exited.result(BOUND) == -9
        drive(reactor, lambda: lost)
        assert isinstance(lost[0], ConnectionLost)
        # Why the connection was lost:
        error = vm.exit_error()
        assert isinstance(error, QemuError) and error.returncode == -9
        assert str(error).startswith("QEMU 'vm9' was killed by SIGKILL (signal 9)")
        assert not vm.alive()
    assert vm.returncode == -9


def test_exits_are_noticed_without_pidfd(binary: str, monkeypatch: pytest.MonkeyPatch,
                                         no_leaks: None) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    vm = QemuProcess(binary, extra_args=["-device", "no-such-model"])
    with pytest.raises(QemuError, match="exited with status 1 during start-up") as info:
        vm.start()
    assert info.value.returncode == 1
    with QemuProcess(binary) as vm:
        exited = vm.wait_exit()
        os.kill(vm.pid, signal.SIGKILL)
        assert exited.result(BOUND) == -9  # seen by polling on a reactor timer
