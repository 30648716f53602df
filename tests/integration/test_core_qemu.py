"""The core against a real QEMU (TCG, paused, no guest): bulk SCSI hot-plug, ordering,
a QEMU killed with commands in flight, several QEMUs on one reactor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import qmplex
from qmplex import Client, ConnectionLost, Event, EventFilter, Reactor, gather
from qmplex.qemu import QemuProcess, qemu_or_skip

pytestmark = pytest.mark.qemu

SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]


@pytest.fixture
def vm() -> Iterator[QemuProcess]:
    binary = qemu_or_skip()
    with QemuProcess(binary, extra_args=SCSI, connect=False) as proc:
        yield proc


def test_connect_reports_version_and_oob(vm: QemuProcess) -> None:
    client = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        assert client.version is not None and client.version.major >= 7
        assert "oob" in client.version.capabilities
        assert client.oob_enabled
        status = client.execute("query-status").result(timeout=10)
        assert status["status"] == "prelaunch" and status["running"] is False
        # OOB works once negotiated (QMP-NOTES: yank with no instances is harmless).
        assert client.execute("yank", {"instances": []}, oob=True).result(timeout=10) == {}
    finally:
        client.close()


def test_bulk_scsi_plug_and_unplug_observes_every_device_deleted(vm: QemuProcess) -> None:
    n = 120
    client = qmplex.connect(vm.qmp_path, timeout=10)
    deleted: list[str] = []
    client.on_event(lambda e: deleted.append(e.data["device"]), "DEVICE_DELETED",
                    predicate=lambda e: "device" in e.data)
    try:
        plugs = []
        for i in range(n):
            node = {"driver": "null-co", "node-name": f"b{i}"}
            plugs.append(client.execute("blockdev-add", node))
            plugs.append(client.devices.scsi_device_add(f"b{i}", f"d{i}", "scsi-hd",
                                                        "scsi0.0", scsi_id=i % 256,
                                                        lun=i // 256))
        gather(plugs).result(timeout=60)
        props = client.execute("qom-list", {"path": "/machine/peripheral"}).result(timeout=10)
        assert {p["name"] for p in props} >= {f"d{i}" for i in range(n)}
        def unplug(i: int) -> qmplex.Future[None]:
            return client.devices.device_del(f"d{i}").chain(
                lambda ev: client.block.blockdev_del(f"b{i}"))

        unplugs = [unplug(i) for i in range(n)]
        gather(unplugs).result(timeout=60)
        assert sorted(deleted) == sorted(f"d{i}" for i in range(n))
        nodes = client.execute("query-named-block-nodes").result(timeout=10)
        assert not [x for x in nodes if x["node-name"].startswith("b")]
    finally:
        client.close()


def test_device_del_future_resolves_to_its_event(vm: QemuProcess) -> None:
    client = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        client.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"}).result(10)
        client.execute("device_add", {"driver": "scsi-cd", "id": "cd0", "drive": "n0",
                                      "bus": "scsi0.0"}).result(10)
        ev = client.execute("device_del", {"id": "cd0"},
                            until=EventFilter("DEVICE_DELETED", {"device": "cd0"})).result(10)
        assert isinstance(ev, Event)
        assert ev.data["path"] == "/machine/peripheral/cd0"
        assert ev.timestamp > 1e9
    finally:
        client.close()


def test_pipelined_commands_keep_order(vm: QemuProcess) -> None:
    client = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        # Alternate adds and queries: each query must see exactly the nodes added before it.
        futs = []
        for i in range(40):
            client.execute("blockdev-add", {"driver": "null-co", "node-name": f"o{i}"})
            futs.append(client.execute("query-named-block-nodes", {"flat": True}))
        counts = [len([n for n in f.result(timeout=30) if n["node-name"].startswith("o")])
                  for f in futs]
        assert counts == list(range(1, 41))
    finally:
        client.close()


def test_errors_from_qemu_are_command_errors(vm: QemuProcess) -> None:
    client = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        with pytest.raises(qmplex.CommandError) as info:
            client.execute("device_del", {"id": "nope"}).result(timeout=10)
        assert info.value.error_class == "DeviceNotFound"
        with pytest.raises(qmplex.CommandError) as info2:
            client.execute("no-such-command").result(timeout=10)
        assert info2.value.error_class == "CommandNotFound"
        assert client.execute("query-status").result(timeout=10)["status"] == "prelaunch"
    finally:
        client.close()


def test_qemu_killed_with_commands_in_flight(vm: QemuProcess) -> None:
    client = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        futs = [client.execute("query-status") for _ in range(1000)]
        waits = [client.wait_event("SHUTDOWN") for _ in range(100)]
        vm.kill()
        gather_all = futs + waits
        for f in gather_all:
            f.exception(timeout=10)  # every one completes, none hangs
        lost = [f for f in gather_all if isinstance(f.exception(), ConnectionLost)]
        ok = [f for f in futs if f.exception() is None]
        assert len(lost) + len(ok) == len(gather_all)
        assert len(lost) >= 100  # at least every event wait
        assert client.state is qmplex.ClientState.DISCONNECTED
    finally:
        client.close()


def test_several_qemus_on_one_reactor() -> None:
    binary = qemu_or_skip()
    reactor = Reactor()
    procs = [QemuProcess(binary, extra_args=SCSI, connect=False).start() for _ in range(4)]
    clients: list[Client] = []
    try:
        for p in procs:
            c = Client(reactor)
            c.connect(p.qmp_path, timeout=10)
            clients.append(c)
        futs = []
        for k, c in enumerate(clients):
            for i in range(10):
                futs.append(c.execute("blockdev-add",
                                      {"driver": "null-co", "node-name": f"vm{k}n{i}"}))
        gather(futs, reactor).result(timeout=60)
        for k, c in enumerate(clients):
            nodes = c.execute("query-named-block-nodes").result(timeout=10)
            assert sorted(n["node-name"] for n in nodes) == sorted(f"vm{k}n{i}" for i in range(10))
        # One QEMU dies: the others keep working on the same reactor.
        waiting = clients[0].wait_event("SHUTDOWN")
        procs[0].kill()
        assert isinstance(waiting.exception(timeout=10), ConnectionLost)
        for c in clients[1:]:
            assert c.execute("query-status").result(timeout=10)["running"] is False
    finally:
        for c in clients:
            c.close()
        for p in procs:
            p.stop()
        reactor.close()
