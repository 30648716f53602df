"""Connections against a real QEMU 7.2 (TCG, paused, no guest): a previous client's
replies handed to the next client, and the reconnect policy across a QEMU restart.

What was chosen, and why:

- QEMU hands the reply of the command it is executing when its client goes away to
  the next client of that monitor. Measured here: with hot-plug commands pipelined and
  the next client connecting at once, that happens only in a few percent of the runs
  (the window is one command's execution; QEMU drops the requests it had queued but
  not started). ``test_a_previous_clients_reply_reaches_the_next_client`` makes it
  certain: the command being executed is a ``blockdev-add`` of a file on a FIFO,
  which blocks QEMU's main loop in ``open()`` until the test opens the FIFO's other
  end; the test sees QEMU blocked (``wait_for_partner`` in ``/proc``), closes the
  first client, lets the second connect, then unblocks QEMU. The natural race is run
  too, a bounded number of rounds, checking only that nothing is ever misattributed.
- QEMU cannot drop its QMP client, and ``QemuProcess`` runs once. The reconnect policy
  is tested by killing QEMU and starting a new one on the same fixed monitor path (a
  second ``-qmp``), frozen first so that which commands were in flight is known. The
  policy's detailed behaviour (delays, give-up, close during backoff) is tested on the
  fake server and a fake clock in ``tests/test_reconnect.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectError,
    ConnectionLost,
    Event,
    Future,
    GreetingError,
    ProtocolError,
    Reactor,
    ReconnectPolicy,
    gather,
)
from qmplex.connection import Command
from qmplex.qemu import QemuProcess, qemu_or_skip

pytestmark = pytest.mark.qemu

SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r
        assert r.watched_fds() == 0, "a socket is still registered"


@pytest.fixture
def private_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="qmplex-rq-")  # 0700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def drive(reactor: Reactor, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        reactor.run_once(0.01)


def wchans(pid: int) -> set[str]:
    """Where the threads of ``pid`` wait in the kernel ("0" for a running thread, or
    for every thread where the kernel hides it)."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                found.add(f.read().strip())
        except OSError:
            continue
    return found


def wait_until_blocked_on_a_fifo(reactor: Reactor, pid: int, timeout: float = 10.0
                                 ) -> None:
    """Drive ``reactor`` until a thread of ``pid`` waits in ``open()`` for a FIFO's
    other end; skip the test if the kernel never says where threads wait."""
    deadline = time.monotonic() + timeout
    named = False
    while True:
        seen = wchans(pid)
        if "wait_for_partner" in seen:
            return
        named = named or bool(seen - {"", "0"})
        if time.monotonic() > deadline:
            if not named:
                pytest.skip("/proc/<pid>/task/*/wchan does not say where QEMU waits")
            raise AssertionError("QEMU never blocked on the FIFO")
        reactor.run_once(0.005)


def cid_of(future: Future[Any]) -> int:
    """The id a command was sent with (``Client.execute`` returns the command)."""
    assert isinstance(future, Command)
    return future.cid


def scsi_hd(i: int, node: str) -> dict[str, Any]:
    return {"driver": "scsi-hd", "id": f"d{i}", "drive": node, "bus": "scsi0.0",
            "scsi-id": i % 256, "lun": i // 256}


def check_own_results(futs: dict[str, Future[Any]]) -> None:
    """Each of the next client's commands got an answer of its own kind (a leftover
    ``{}`` or error of a hot-plug command would not pass)."""
    assert "qemu" in futs["query-version"].result(10)
    assert futs["query-status"].result(10)["status"] == "prelaunch"
    assert isinstance(futs["qom-list"].result(10), list)
    assert isinstance(futs["query-named-block-nodes"].result(10), list)


def submit_checks(client: Client) -> dict[str, Future[Any]]:
    return {
        "query-version": client.execute("query-version"),
        "query-status": client.execute("query-status"),
        "qom-list": client.execute("qom-list", {"path": "/machine/peripheral"}),
        "query-named-block-nodes": client.execute("query-named-block-nodes"),
    }


def test_a_previous_clients_reply_reaches_the_next_client(
        binary: str, reactor: Reactor, private_dir: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Client A leaves QEMU executing a hot-plug (a ``blockdev-add`` blocked on a FIFO)
    with 40 ``device_add``/``device_del`` pipelined behind it; client B connects at
    once. QEMU writes A's reply to B, during B's negotiation. B drops it (its id is
    not one of B's: ids are unique across connections), counts it, logs it at DEBUG
    naming B, reports nothing to ``on_error``, and B's own commands, submitted before
    the connect completed, get their own results.

    Also observed: QEMU discards the requests A had queued behind the blocked one
    (none of A's devices exists afterwards); B's greeting arrives while QEMU's main
    loop is still blocked (the monitor's I/O thread sends it), and B's
    ``qmp_capabilities`` waits behind the blocked command."""
    # Before the clients are made: a connection reads its debug switch when made.
    caplog.set_level(logging.DEBUG, logger="qmplex")
    fifo = os.path.join(private_dir, "fifo")
    os.mkfifo(fifo, 0o600)
    with QemuProcess(binary, extra_args=SCSI, connect=False) as vm:
        a = Client(reactor, name="A", window=100)
        b = Client(reactor, name="B")
        errors: list[ProtocolError] = []
        b.on_error(errors.append)
        unblock = -1
        try:
            a.connect(vm.qmp_path, timeout=10).result(10)
            nodes = [a.execute("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"})
                     for i in range(20)]
            gather(nodes).result(10)
            blocking = a.execute("blockdev-add", {"driver": "file", "node-name": "fifo0",
                                                  "filename": fifo, "read-only": True})
            hotplug = []
            for i in range(20):
                hotplug.append(a.execute("device_add", scsi_hd(i, f"n{i}")))
                hotplug.append(a.execute("device_del", {"id": f"d{i}"}))
            wait_until_blocked_on_a_fifo(reactor, vm.pid)
            connected = b.connect(vm.qmp_path, timeout=10)
            a.close()
            checks = submit_checks(b)  # queued until B is ready
            drive(reactor, lambda: b.version is not None)  # B has its greeting
            unblock = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            connected.result(10)
            check_own_results(checks)
            assert b.stale_replies == 1
            assert errors == []
            for f in (blocking, *hotplug):
                assert isinstance(f.exception(0), ConnectionLost)
            dropped = [r for r in caplog.records if "dropped a reply" in r.getMessage()]
            assert len(dropped) == 1 and dropped[0].levelno == logging.DEBUG
            message = dropped[0].getMessage()
            assert message.startswith("B: ") and f"id {cid_of(blocking)}" in message
            assert not [p for p in checks["qom-list"].result(0) if p["name"].startswith("d")]
            assert cid_of(blocking) not in {cid_of(f) for f in checks.values()}
            assert b.execute("query-status").result(10)["status"] == "prelaunch"
        finally:
            if unblock >= 0:
                os.close(unblock)
            a.close()
            b.close()


def test_pipelined_hotplug_handoff_never_misattributes_a_reply(
        binary: str, reactor: Reactor) -> None:
    """The natural race, a bounded number of rounds: A pipelines 50 ``device_add`` /
    ``device_del`` pairs and closes after the first reply; B is already connecting.
    Whatever QEMU hands over (a leftover reply during B's negotiation in about 8% of
    the rounds here; rarely, before B's greeting), B's commands complete with their
    own results and nothing reaches ``on_error``."""
    rounds, n = 8, 50
    with QemuProcess(binary, extra_args=SCSI, connect=False) as vm:
        for r in range(rounds):
            a = Client(reactor, name=f"A{r}", window=1000)
            b = Client(reactor, name=f"B{r}")
            errors: list[ProtocolError] = []
            b.on_error(errors.append)
            try:
                a.connect(vm.qmp_path, timeout=10).result(10)
                gather([a.execute("blockdev-add", {"driver": "null-co",
                                                   "node-name": f"r{r}n{i}"})
                        for i in range(n)]).result(10)
                futs = []
                for i in range(n):
                    args = scsi_hd(i, f"r{r}n{i}")
                    args.update(id=f"r{r}d{i}", lun=r)
                    futs.append(a.execute("device_add", args))
                    futs.append(a.execute("device_del", {"id": f"r{r}d{i}"}))
                connected = b.connect(vm.qmp_path, timeout=10)
                futs[0].result(10)
                a.close()
                checks = submit_checks(b)
                failed = connected.exception(10)
                if isinstance(failed, GreetingError) and failed.excerpt.startswith(
                        (b'{"return"', b'{"error"')):
                    # Seen about once in 500 rounds: QEMU wrote A's reply before B's
                    # greeting. See test_a_previous_clients_reply_before_the_greeting_
                    # is_dropped (tests/test_connection_contract.py).
                    pytest.xfail(f"known bug: a leftover reply before the greeting "
                                 f"fails the connect ({failed})")
                assert failed is None, repr(failed)
                check_own_results(checks)
                assert errors == []
            finally:
                a.close()
                b.close()


def test_reconnect_policy_across_a_qemu_restart(binary: str, reactor: Reactor,
                                                 private_dir: str) -> None:
    """QEMU is frozen with 20 ``blockdev-add`` submitted (7 written: the window; 13
    queued), then killed. The client's policy retries (ECONNREFUSED: the socket file
    stays) until a new QEMU listens on the same path, then reconnects by itself. The 7
    in flight failed with ConnectionLost and were never sent again; the 13 queued and
    the command submitted while disconnected went to the new QEMU, which has exactly
    those 13 nodes; the ``RESUME`` subscription carried over; ``on_disconnect`` fired
    once; every attempt was reported."""
    path = os.path.join(private_dir, "qmp.sock")
    extra = ["-qmp", f"unix:{path},server=on,wait=off"]  # a second, fixed monitor
    policy = ReconnectPolicy(initial=0.02, multiplier=2.0, maximum=0.2, jitter=0.1,
                             connect_timeout=5.0)
    client = Client(reactor, name="vm7", reconnect=policy)
    lost: list[BaseException | None] = []
    client.on_disconnect(lost.append)
    attempts: list[tuple[int, BaseException | None]] = []
    reconnected: Future[int] = Future(reactor)

    def on_attempt(n: int, error: BaseException | None) -> None:
        attempts.append((n, error))
        if error is None:
            reconnected.set_result(n)

    client.on_reconnect(on_attempt)
    resumed: list[Event] = []
    client.on_event(resumed.append, "RESUME")
    try:
        with QemuProcess(binary, connect=False, extra_args=extra) as vm1:
            client.connect(path, timeout=10).result(10)
            client.execute("cont").result(10)
            drive(reactor, lambda: len(resumed) == 1)
            vm1.freeze()
            adds = [client.execute("blockdev-add", {"driver": "null-co",
                                                    "node-name": f"b{i}"})
                    for i in range(20)]
            # Until the window's worth is written (to a QEMU that reads nothing).
            drive(reactor, lambda: client._conn.outstanding == client.window)
            vm1.kill()
            drive(reactor, lambda: bool(lost))
        assert len(lost) == 1 and isinstance(lost[0], ConnectionLost)
        assert "vm7" in str(lost[0])
        drive(reactor, lambda: len(attempts) >= 2)  # nobody listens: refused
        assert all(isinstance(e, ConnectError) for _, e in attempts)
        assert client.state in (ClientState.DISCONNECTED, ClientState.CONNECTING)
        while_down = client.execute("query-status")
        with QemuProcess(binary, connect=False, extra_args=extra) as vm2:
            n = reconnected.result(20)
            assert attempts[-1] == (n, None) and n == len(attempts)
            outcome = gather(adds, return_exceptions=True).result(20)
            window = client.window
            assert all(isinstance(o, ConnectionLost) for o in outcome[:window])
            assert outcome[window:] == [{}] * (20 - window)
            assert while_down.result(10)["status"] == "prelaunch"  # vm2's answer
            names = {x["node-name"] for x in
                     client.execute("query-named-block-nodes").result(10)}
            assert names == {f"b{i}" for i in range(window, 20)}
            client.execute("cont").result(10)
            drive(reactor, lambda: len(resumed) == 2)
            assert len(lost) == 1
            client.close()
            reactor.run_once(0)
            assert lost[1:] == [None]
            assert vm2.alive()
    finally:
        client.close()
