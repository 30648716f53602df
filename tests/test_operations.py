"""The typed operations (qmplex.ops: client.vm, client.block ...) against the fake QMP server.

Each test drives a :class:`~qmplex.Client` and a :class:`~qmplex.testing.FakeQMPServer`
on one reactor and one thread (``connect_pair``), and asserts the exact commands the
server received: their names and their arguments. Old-QEMU forms are checked with a
fake that greets as an older version. Invalid input must raise ValidationError with
nothing sent.
"""

from __future__ import annotations

import gc
import os
import stat
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import qmplex.names
from qmplex import (
    AddFdInfo,
    Client,
    CPUInfo,
    CPUProperties,
    HotpluggableCPU,
    MemoryDevice,
    MigrationInfo,
    ObjectProperty,
    Reactor,
    StatusInfo,
)
from qmplex.errors import (
    Cancelled,
    CommandError,
    ProtocolError,
    Timeout,
    ValidationError,
)
from qmplex.events import Event
from qmplex.futures import Future
from qmplex.ops import BlockDevice, BlockOps, Executor, MigrationOps, wire_name
from qmplex.testing import FakeQMPServer, captured_release

from .recorder import Recorder

WAIT = 5.0

Call = tuple[str, Any]
Make = Callable[..., tuple[FakeQMPServer, Client]]


@pytest.fixture
def make(reactor: Reactor) -> Iterator[Make]:
    """Return a factory of (fake server, connected client) pairs on the test's reactor."""
    made: list[tuple[FakeQMPServer, Client]] = []

    def _make(version: tuple[int, int, int] | None = None, **kwargs: Any) -> tuple[
            FakeQMPServer, Client]:
        server = FakeQMPServer(reactor=reactor, version=version, **kwargs)
        client = Client(reactor)
        made.append((server, client))
        client.connect_socket(server.connect_pair()).result(timeout=WAIT)
        return server, client

    yield _make
    for server, client in made:
        client.close()
        server.close()


@pytest.fixture
def pair(make: Make) -> tuple[FakeQMPServer, Client]:
    return make()


@pytest.fixture
def server(pair: tuple[FakeQMPServer, Client]) -> FakeQMPServer:
    return pair[0]


@pytest.fixture
def client(pair: tuple[FakeQMPServer, Client]) -> Client:
    return pair[1]


def calls(server: FakeQMPServer) -> list[Call]:
    """The commands received after negotiation: (name, arguments or None)."""
    out: list[Call] = []
    for msg in server.received[1:]:
        name = msg.get("execute", msg.get("exec-oob"))
        out.append((str(name), msg.get("arguments")))
    return out


def run(fut: Future[Any]) -> Any:
    return fut.result(timeout=WAIT)


def pump(reactor: Reactor, turns: int = 20) -> None:
    for _ in range(turns):
        reactor.run_once(0.002)


def pipe_fds() -> tuple[int, int]:
    r, w = os.pipe()
    return r, w


# --------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("op, wire", [("stop", "stop"), ("cont", "cont"),
                                      ("system_reset", "system_reset")])
def test_simple_lifecycle_commands(server: FakeQMPServer, client: Client, op: str,
                                   wire: str) -> None:
    assert run(getattr(client.vm, op)()) is None
    assert calls(server) == [(wire, None)]


def test_quit_completes_and_qemu_hangs_up(server: FakeQMPServer, client: Client) -> None:
    assert run(client.vm.quit()) is None
    assert calls(server) == [("quit", None)]
    server.wait_for_clients(0)


def test_qmp_capabilities_on_negotiated_connection_is_refused(
        server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(CommandError) as info:
        run(client.monitor.qmp_capabilities())
    assert info.value.error_class == "CommandNotFound"
    assert calls(server) == [("qmp_capabilities", None)]


def test_system_powerdown_waits_for_powerdown(server: FakeQMPServer, client: Client) -> None:
    event = run(client.vm.system_powerdown())
    assert isinstance(event, Event) and event.name == "POWERDOWN"
    assert calls(server) == [("system_powerdown", None)]


def test_system_powerdown_until_shutdown(server: FakeQMPServer, client: Client,
                                         reactor: Reactor) -> None:
    server.on("system_powerdown", returns={}, events=[("POWERDOWN", None)])
    fut = client.vm.system_powerdown(until="SHUTDOWN")
    server.wait_for_commands(2)
    pump(reactor)
    assert not fut.done()  # POWERDOWN came and went
    server.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
    assert run(fut).data["reason"] == "guest-shutdown"


def test_system_powerdown_rejects_other_events(server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(ValidationError):
        client.vm.system_powerdown(until="RESET")
    assert calls(server) == []


def test_query_status_is_typed(server: FakeQMPServer, client: Client) -> None:
    assert run(client.vm.query_status()) == StatusInfo("prelaunch", False, False)
    run(client.vm.cont())
    info = run(client.vm.query_status())
    assert info.running is True and info.status == "running"
    assert calls(server)[0] == ("query-status", None)


def test_reply_of_the_wrong_shape_is_a_protocol_error(server: FakeQMPServer,
                                                      client: Client) -> None:
    server.on("query-status", returns=[])
    with pytest.raises(ProtocolError, match="query-status"):
        run(client.vm.query_status())
    server.on("query-hotpluggable-cpus", returns=[{"type": "x"}])
    with pytest.raises(ProtocolError, match="vcpus-count"):
        run(client.cpu.query_hotpluggable_cpus())


def test_timeout_reaches_the_command(server: FakeQMPServer, client: Client) -> None:
    server.on("stop", never=True)
    with pytest.raises(Timeout):
        client.vm.stop(timeout=0.05).result(timeout=WAIT)


# ------------------------------------------------------------------------- block
def _block_device() -> str | None:
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return path
        except OSError:
            continue
    return None


def test_blockdev_add_regular_file(server: FakeQMPServer, client: Client,
                                   tmp_path: Any) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    run(client.block.blockdev_add(str(image), "b0"))
    run(client.block.blockdev_add(str(image), "b1", read_only=True))
    assert calls(server) == [
        ("blockdev-add", {"driver": "raw", "node-name": "b0", "read-only": False,
                          "file": {"driver": "file", "filename": str(image)}}),
        ("blockdev-add", {"driver": "raw", "node-name": "b1", "read-only": True,
                          "file": {"driver": "file", "filename": str(image)}}),
    ]
    assert set(server.nodes) == {"b0", "b1"}


def test_blockdev_add_missing_path_uses_file(server: FakeQMPServer, client: Client) -> None:
    run(client.block.blockdev_add("/nonexistent/qmplex/disk.img", "b0"))
    assert calls(server)[0][1]["file"] == {"driver": "file",
                                           "filename": "/nonexistent/qmplex/disk.img"}


def test_blockdev_add_block_device_uses_host_device(
        server: FakeQMPServer, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    device = _block_device()
    if device is None:  # no block device here: make one up
        device = "/dev/qmplex-fake-block"
        real_stat = os.stat

        def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if path == device:
                return os.stat_result((stat.S_IFBLK | 0o660,) + (0,) * 9)
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", fake_stat)
    run(client.block.blockdev_add(device, "b0"))
    assert calls(server)[0][1]["file"] == {"driver": "host_device", "filename": device}


def test_blockdev_add_with_cache(server: FakeQMPServer, client: Client, tmp_path: Any) -> None:
    image = tmp_path / "disk.img"
    image.touch()
    run(client.block.blockdev_add_with_cache(str(image), "b0", True, False))
    run(client.block.blockdev_add_with_driver_cache("host_cdrom", "/dev/sr0", "b1", False, True,
                                                    read_only=True))
    assert calls(server) == [
        ("blockdev-add", {"driver": "raw", "node-name": "b0", "read-only": False,
                          "file": {"driver": "file", "filename": str(image)},
                          "cache": {"direct": True, "no-flush": False}}),
        ("blockdev-add", {"driver": "raw", "node-name": "b1", "read-only": True,
                          "file": {"driver": "host_cdrom", "filename": "/dev/sr0"},
                          "cache": {"direct": False, "no-flush": True}}),
    ]


def test_blockdev_del(server: FakeQMPServer, client: Client) -> None:
    run(client.execute("blockdev-add", {"driver": "null-co", "node-name": "b0"}))
    run(client.block.blockdev_del("b0"))
    assert calls(server)[-1] == ("blockdev-del", {"node-name": "b0"})
    assert server.nodes == {}


def test_block_forms_before_qemu_2_9(make: Make) -> None:
    server, client = make(version=(2, 8, 0))
    server.on("blockdev-add", returns={})
    server.on("x-blockdev-del", returns={})
    run(client.block.blockdev_add("/nonexistent/a.img", "b0", read_only=True))
    run(client.block.blockdev_add_with_cache("/nonexistent/b.img", "b1", True, True))
    run(client.block.blockdev_del("b0"))
    assert calls(server) == [
        ("blockdev-add", {"options": {"driver": "raw", "id": "b0", "read-only": True,
                                      "file": {"driver": "file",
                                               "filename": "/nonexistent/a.img"}}}),
        ("blockdev-add", {"options": {"driver": "raw", "id": "b1", "read-only": False,
                                      "file": {"driver": "file",
                                               "filename": "/nonexistent/b.img"},
                                      "cache": {"direct": True, "no-flush": True}}}),
        ("x-blockdev-del", {"id": "b0"}),
    ]


def test_version_2_9_uses_the_new_forms(make: Make) -> None:
    server, client = make(version=(2, 9, 0))
    run(client.block.blockdev_add("/nonexistent/a.img", "b0"))
    run(client.block.blockdev_del("b0"))
    assert [c[0] for c in calls(server)] == ["blockdev-add", "blockdev-del"]
    assert calls(server)[0][1]["node-name"] == "b0"


@pytest.mark.parametrize("call", [
    lambda c: c.block.blockdev_add("", "b0"),
    lambda c: c.block.blockdev_add("/x", ""),
    lambda c: c.block.blockdev_add("/x", "b0", read_only="yes"),
    lambda c: c.block.blockdev_add_with_cache("/x", "b0", 1, False),
    lambda c: c.block.blockdev_add_with_driver_cache("", "/x", "b0", True, True),
    lambda c: c.block.blockdev_del(None),
])
def test_block_validation(server: FakeQMPServer, client: Client,
                          call: Callable[[Client], object]) -> None:
    with pytest.raises(ValidationError):
        call(client)
    assert calls(server) == []


# ----------------------------------------------------------------------- devices
def test_device_add_forms(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.device_add("b0", "d0", "virtio-blk-pci"))
    run(client.devices.device_add("b1", "d1", "virtio-blk-pci", bus="pci.0", romfile="",
                                  shared=True, disable_modern=True))
    run(client.devices.device_add("b2", "d2", "virtio-blk-ccw", devno="fe.0.0001"))
    assert calls(server) == [
        ("device_add", {"driver": "virtio-blk-pci", "id": "d0", "drive": "b0"}),
        ("device_add", {"driver": "virtio-blk-pci", "id": "d1", "drive": "b1",
                        "bus": "pci.0", "share-rw": True, "romfile": "",
                        "disable-modern": True}),
        ("device_add", {"driver": "virtio-blk-ccw", "id": "d2", "drive": "b2",
                        "devno": "fe.0.0001"}),
    ]


def test_share_rw_needs_qemu_2_10(make: Make) -> None:
    # A request the peer cannot express is refused, naming its version (not dropped).
    server, client = make(version=(2, 9, 0))
    with pytest.raises(ValidationError, match=r"shared=True needs share-rw \(QEMU 2.10 or "
                                              r"newer\); the peer is QEMU 2.9.0"):
        client.devices.device_add("b0", "d0", "scsi-hd", bus="scsi0.0", shared=True)
    assert calls(server) == []


def test_device_add_validation(server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(ValidationError, match="bus or devno"):
        client.devices.device_add("b0", "d0", "virtio-blk-ccw", bus="bus0", devno="fe.0.1")
    with pytest.raises(ValidationError):
        client.devices.device_add("b0", "", "virtio-blk-pci")
    with pytest.raises(ValidationError):
        client.devices.device_add("b0", "d0", "virtio-blk-pci", shared=1)  # type: ignore[arg-type]
    assert calls(server) == []


def test_scsi_device_add(server: FakeQMPServer, client: Client) -> None:
    run(client.execute("blockdev-add", {"driver": "null-co", "node-name": "b0"}))
    run(client.execute("blockdev-add", {"driver": "null-co", "node-name": "b1"}))
    run(client.devices.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0"))
    run(client.devices.scsi_device_add("b1", "d1", "scsi-cd", "scsi0.0", scsi_id=3, lun=0,
                                       shared=True))
    assert calls(server)[2:] == [
        ("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0"}),
        ("device_add", {"driver": "scsi-cd", "id": "d1", "drive": "b1", "bus": "scsi0.0",
                        "scsi-id": 3, "lun": 0, "share-rw": True}),
    ]
    assert set(server.devices) == {"d0", "d1"}


@pytest.mark.parametrize("driver", ["virtio-blk-pci", "scsi-generic", "scsi-block", ""])
def test_scsi_device_add_refuses_other_drivers(server: FakeQMPServer, client: Client,
                                               driver: str) -> None:
    with pytest.raises(ValidationError, match="driver"):
        client.devices.scsi_device_add("b0", "d0", driver, "scsi0.0")
    assert calls(server) == []


def test_pci_devices(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.pci_device_add("b0", "d0", "virtio-blk-pci", addr="0x5", bus="bridge0",
                                      queues=4, shared=True, romfile="/rom.bin",
                                      disable_modern=True))
    run(client.devices.pci_device_add("b1", "d1", "virtio-blk-pci", addr="02.0"))
    run(client.devices.pci_vhost_user_device_add("fs0", driver="vhost-user-fs-pci",
                                                 chardev_id="char0", addr="0x6", bus="bridge0"))
    run(client.vfio.vfio_device_add("vfio0", "0000:01:00.0"))
    run(client.vfio.vfio_device_add("vfio1", "0000:02:00.0", romfile=""))
    run(client.vfio.pci_vfio_device_add("vfio2", "0000:03:00.0", addr="0x7", bus="bridge1"))
    run(client.vfio.pci_vfio_mediated_device_add("mdev0", "/sys/bus/mdev/devices/u1"))
    run(client.vfio.pci_vfio_mediated_device_add("mdev1", "/sys/bus/mdev/devices/u2",
                                                 addr="0x8", bus="bridge1", romfile="rom"))
    run(client.vfio.ap_vfio_mediated_device_add("/sys/devices/vfio_ap/matrix/u3"))
    run(client.vfio.ap_vfio_mediated_device_add("/sys/devices/vfio_ap/matrix/u4", dev_id="ap1"))
    assert [args for _, args in calls(server)] == [
        {"driver": "virtio-blk-pci", "id": "d0", "drive": "b0", "addr": "0x5",
         "bus": "bridge0", "num-queues": 4, "share-rw": True, "romfile": "/rom.bin",
         "disable-modern": True},
        {"driver": "virtio-blk-pci", "id": "d1", "drive": "b1", "addr": "02.0"},
        {"driver": "vhost-user-fs-pci", "id": "fs0", "chardev": "char0", "addr": "0x6",
         "bus": "bridge0"},
        {"driver": "vfio-pci", "id": "vfio0", "host": "0000:01:00.0"},
        {"driver": "vfio-pci", "id": "vfio1", "host": "0000:02:00.0", "romfile": ""},
        {"driver": "vfio-pci", "id": "vfio2", "host": "0000:03:00.0", "addr": "0x7",
         "bus": "bridge1"},
        {"driver": "vfio-pci", "id": "mdev0", "sysfsdev": "/sys/bus/mdev/devices/u1"},
        {"driver": "vfio-pci", "id": "mdev1", "sysfsdev": "/sys/bus/mdev/devices/u2",
         "addr": "0x8", "bus": "bridge1", "romfile": "rom"},
        {"driver": "vfio-ap", "sysfsdev": "/sys/devices/vfio_ap/matrix/u3"},
        {"driver": "vfio-ap", "sysfsdev": "/sys/devices/vfio_ap/matrix/u4", "id": "ap1"},
    ]
    assert {name for name, _ in calls(server)} == {"device_add"}


def test_net_devices(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.net_pci_device_add("n0", "nic0", mac="52:54:00:12:34:56", addr="0x3"))
    run(client.devices.net_pci_device_add("n1", "nic1", bus="bridge0", romfile="", queues=4,
                                          disable_modern=True))
    run(client.devices.net_ccw_device_add("n2", "nic2", mac="52:54:00:00:00:02",
                                          devno="fe.0.0002"))
    run(client.devices.net_ccw_device_add("n3", "nic3", mac="52:54:00:00:00:03",
                                          devno="fe.0.0003", queues=2))
    assert [args for _, args in calls(server)] == [
        {"driver": "virtio-net-pci", "id": "nic0", "netdev": "n0",
         "mac": "52:54:00:12:34:56", "addr": "0x3"},
        {"driver": "virtio-net-pci", "id": "nic1", "netdev": "n1", "bus": "bridge0",
         "romfile": "", "disable-modern": True, "mq": True, "vectors": 10},
        {"driver": "virtio-net-ccw", "id": "nic2", "netdev": "n2", "devno": "fe.0.0002",
         "mac": "52:54:00:00:00:02"},
        {"driver": "virtio-net-ccw", "id": "nic3", "netdev": "n3", "devno": "fe.0.0003",
         "mac": "52:54:00:00:00:03", "mq": True},
    ]


def test_cpu_device_add(server: FakeQMPServer, client: Client) -> None:
    slots = run(client.cpu.query_hotpluggable_cpus())
    free = next(s for s in slots if s.qom_path is None)
    props = free.properties
    run(client.cpu.cpu_device_add(free.type, "cpu1", socket_id=props.socket,
                                  core_id=props.core, thread_id=props.thread,
                                  die_id=props.die, node_id=props.node))
    assert calls(server)[-1] == ("device_add", {"driver": free.type, "id": "cpu1",
                                                "socket-id": 1, "core-id": 0,
                                                "thread-id": 0})
    slots = run(client.cpu.query_hotpluggable_cpus())
    assert all(s.qom_path is not None for s in slots)


def test_cpu_device_add_id_forms(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.cpu.cpu_device_add("host-x86_64-cpu", "c2", socket_id=1, thread_id=0, die_id=0,
                                  node_id=2))
    run(client.cpu.cpu_device_add("host-arm-cpu", "c3", core_id=5))
    assert [args for _, args in calls(server)] == [
        {"driver": "host-x86_64-cpu", "id": "c2", "socket-id": 1, "die-id": 0,
         "thread-id": 0, "node-id": 2},
        {"driver": "host-arm-cpu", "id": "c3", "core-id": 5},
    ]
    bad_ids: list[Any] = ["1", "", "one", -1, 1.5, True]  # ints only: None is "not given"
    for bad in bad_ids:
        with pytest.raises(ValidationError):
            client.cpu.cpu_device_add("host-x86_64-cpu", "c4", socket_id=bad, core_id=0)
    assert len(calls(server)) == 2


@pytest.mark.parametrize("driver, sent", [
    # govmm's rule: s390x and ppc64 take core-id alone (ppc64 also node-id), die-id is x86's
    ("host-s390x-cpu", {"core-id": 2}),
    ("host-powerpc64-cpu", {"core-id": 2, "node-id": 0}),
    ("power9_v2.0-spapr-cpu-core", {"core-id": 2, "node-id": 0}),
    ("host-x86_64-cpu", {"socket-id": 1, "die-id": 0, "core-id": 2, "thread-id": 3,
                         "node-id": 0}),
    ("Skylake-Server-x86_64-cpu", {"socket-id": 1, "die-id": 0, "core-id": 2,
                                   "thread-id": 3, "node-id": 0}),
    ("host-arm-cpu", {"socket-id": 1, "core-id": 2, "thread-id": 3, "node-id": 0}),
])
def test_cpu_device_add_sends_the_ids_the_model_takes(server: FakeQMPServer, client: Client,
                                                      driver: str, sent: dict[str, int]) -> None:
    server.on("device_add", returns={})
    run(client.cpu.cpu_device_add(driver, "c9", socket_id=1, die_id=0, core_id=2, thread_id=3,
                                  node_id=0))
    assert calls(server) == [("device_add", {"driver": driver, "id": "c9", **sent})]


def test_pci_vsock_add_forms(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.pci_vsock_add("vsock0", 3))
    run(client.devices.pci_vsock_add("vsock1", 4, vhostfd="myfd", addr="0x9", bus="bridge0",
                                     disable_modern=True))
    assert [args for _, args in calls(server)] == [
        {"driver": "vhost-vsock-pci", "id": "vsock0", "guest-cid": 3},
        {"driver": "vhost-vsock-pci", "id": "vsock1", "guest-cid": 4, "vhostfd": "myfd",
         "addr": "0x9", "bus": "bridge0", "disable-modern": True},
    ]
    with pytest.raises(ValidationError, match="guest_cid"):
        client.devices.pci_vsock_add("vsock2", 2)
    assert len(calls(server)) == 2


def test_pci_vsock_add_passes_the_vhost_fd(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    r, w = pipe_fds()
    try:
        run(client.devices.pci_vsock_add("vsock0", 5, vhostfd=w, addr="0x4"))
        assert calls(server) == [
            ("getfd", {"fdname": "vhostfd-vsock0"}),
            ("device_add", {"driver": "vhost-vsock-pci", "id": "vsock0", "guest-cid": 5,
                            "vhostfd": "vhostfd-vsock0", "addr": "0x4"}),
        ]
        (received,) = server.received_fds
        os.write(received, b"v")
        assert os.read(r, 1) == b"v"
    finally:
        os.close(r)
        os.close(w)


def test_pci_vsock_add_releases_the_fd_name_when_device_add_fails(
        server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", error=("GenericError", "vhost-vsock: no such device"))
    r, w = pipe_fds()
    try:
        with pytest.raises(CommandError) as info:
            run(client.devices.pci_vsock_add("vsock0", 5, vhostfd=w))
    finally:
        os.close(r)
        os.close(w)
    assert info.value.command == "device_add"
    assert [c[0] for c in calls(server)] == ["getfd", "device_add", "closefd"]
    assert calls(server)[-1] == ("closefd", {"fdname": "vhostfd-vsock0"})


def test_virt_serial_port_add(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.virt_serial_port_add("port0", chardev_id="char0",
                                            name="org.qemu.guest_agent.0"))
    run(client.devices.virt_serial_port_add("port1", chardev_id="char1", name="com.example.1",
                                            bus="vser0.0"))
    assert [args for _, args in calls(server)] == [
        {"driver": "virtserialport", "id": "port0", "chardev": "char0",
         "name": "org.qemu.guest_agent.0"},
        {"driver": "virtserialport", "id": "port1", "chardev": "char1",
         "name": "com.example.1", "bus": "vser0.0"},
    ]


def test_device_del_resolves_to_its_event(server: FakeQMPServer, client: Client) -> None:
    run(client.execute("blockdev-add", {"driver": "null-co", "node-name": "b0"}))
    run(client.devices.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0", scsi_id=0, lun=0))
    event = run(client.devices.device_del("d0"))
    assert isinstance(event, Event)
    assert event.name == "DEVICE_DELETED" and event.data["device"] == "d0"
    assert calls(server)[-1] == ("device_del", {"id": "d0"})
    run(client.block.blockdev_del("b0"))  # the node is free once the event came
    assert server.nodes == {}


def test_device_del_waits_for_its_own_event_only(server: FakeQMPServer, client: Client,
                                                 reactor: Reactor) -> None:
    server.on("device_del", returns={})  # scripted: no built-in unplug, no event
    fut = client.devices.device_del("d0")
    server.wait_for_commands(2)
    pump(reactor)
    assert not fut.done()
    server.emit("DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"})
    server.emit("DEVICE_DELETED", {"path": "/machine/peripheral/d0/virtio-backend"})
    server.emit("DEVICE_DELETED", {"device": "d00", "path": "/machine/peripheral/d00"})
    pump(reactor)
    assert not fut.done()
    server.emit("DEVICE_DELETED", {"device": "d0", "path": "/machine/peripheral/d0"})
    assert run(fut).data == {"device": "d0", "path": "/machine/peripheral/d0"}


def test_device_del_event_before_the_reply_counts(server: FakeQMPServer,
                                                  client: Client) -> None:
    server.on("device_del", returns={}, events=[
        ("DEVICE_DELETED", {"path": "/machine/peripheral/d0/virtio-backend"}),
        ("DEVICE_DELETED", {"device": "d0", "path": "/machine/peripheral/d0"}),
    ])
    assert run(client.devices.device_del("d0")).data["device"] == "d0"


def test_device_del_error(server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(CommandError) as info:
        run(client.devices.device_del("nope"))
    assert info.value.error_class == "DeviceNotFound"


def test_device_del_many_pipelined(server: FakeQMPServer, client: Client) -> None:
    futs: list[Future[Any]] = []
    for i in range(50):
        futs.append(client.execute("blockdev-add", {"driver": "null-co", "node-name": f"b{i}"}))
        futs.append(client.devices.scsi_device_add(f"b{i}", f"d{i}", "scsi-hd", "scsi0.0",
                                                   scsi_id=i, lun=0))
    for f in futs:
        run(f)
    def unplug(i: int) -> Future[None]:
        def free_node(_: Event) -> Future[None]:
            return client.block.blockdev_del(f"b{i}")

        return client.devices.device_del(f"d{i}").chain(free_node)

    dels = [unplug(i) for i in range(50)]
    for f in dels:
        run(f)
    assert server.nodes == {} and server.devices == {}


# ------------------------------------------------------------------------ memory
def test_memdev_add(server: FakeQMPServer, client: Client) -> None:
    run(client.memory.memdev_add("memory-backend-file", "mem0", 128, mem_path="/dev/hugepages",
                                 share=True, driver="pc-dimm", driver_id="dimm0"))
    run(client.memory.memdev_add("memory-backend-ram", "mem1", 64, driver="virtio-mem-pci",
                                 driver_id="vmem1", addr="0x7", bus="pcie.1"))
    run(client.memory.memdev_add("memory-backend-ram", "mem2", 64, driver="virtio-mem-ccw",
                                 driver_id="vmem2", devno="fe.0.0009"))
    assert calls(server) == [
        ("object-add", {"qom-type": "memory-backend-file", "id": "mem0",
                        "size": 128 << 20, "mem-path": "/dev/hugepages", "share": True}),
        ("device_add", {"driver": "pc-dimm", "id": "dimm0", "memdev": "mem0"}),
        ("object-add", {"qom-type": "memory-backend-ram", "id": "mem1", "size": 64 << 20}),
        ("device_add", {"driver": "virtio-mem-pci", "id": "vmem1", "memdev": "mem1",
                        "bus": "pcie.1", "addr": "0x7"}),
        ("object-add", {"qom-type": "memory-backend-ram", "id": "mem2", "size": 64 << 20}),
        ("device_add", {"driver": "virtio-mem-ccw", "id": "vmem2", "memdev": "mem2",
                        "devno": "fe.0.0009"}),
    ]
    with pytest.raises(ValidationError, match="not both"):
        client.memory.memdev_add("memory-backend-ram", "mem3", 64, driver="virtio-mem-ccw",
                                 driver_id="vmem3", devno="fe.0.0009", addr="0x7")
    with pytest.raises(ValidationError, match="devno"):
        client.memory.memdev_add("memory-backend-ram", "mem3", 64, driver="virtio-mem-pci",
                                 driver_id="vmem3", devno="fe.0.0009")
    assert len(calls(server)) == 6


def test_hotplug_memory(server: FakeQMPServer, client: Client) -> None:
    run(client.memory.hotplug_memory("memory-backend-ram", "mem0", 256))
    assert calls(server) == [
        ("object-add", {"qom-type": "memory-backend-ram", "id": "mem0", "size": 256 << 20}),
        ("device_add", {"driver": "pc-dimm", "id": "dimmmem0", "memdev": "mem0"}),
    ]
    assert "mem0" in server.objects and "dimmmem0" in server.devices


def test_memdev_rollback_reports_the_device_add_error(server: FakeQMPServer,
                                                      client: Client) -> None:
    server.on("device_add", error=("GenericError", "No free slots"))
    with pytest.raises(CommandError) as info:
        run(client.memory.memdev_add("memory-backend-ram", "mem0", 64, driver="pc-dimm",
                                     driver_id="dimm0"))
    assert info.value.command == "device_add" and info.value.desc == "No free slots"
    assert [c[0] for c in calls(server)] == ["object-add", "device_add", "object-del"]
    assert calls(server)[-1] == ("object-del", {"id": "mem0"})
    assert server.objects == {}


def test_memdev_failed_rollback_does_not_hide_the_error(
        server: FakeQMPServer, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    server.on("device_add", error=("GenericError", "No free slots"))
    server.on("object-del", error=("GenericError", "object 'mem0' is in use"))
    with pytest.raises(CommandError) as info:
        run(client.memory.hotplug_memory("memory-backend-ram", "mem0", 64))
    assert info.value.command == "device_add"
    assert "object-del" in caplog.text


def test_memdev_object_add_failure_sends_nothing_more(server: FakeQMPServer,
                                                      client: Client) -> None:
    server.on("object-add", error=("GenericError", "Cannot allocate memory"))
    with pytest.raises(CommandError) as info:
        run(client.memory.hotplug_memory("memory-backend-ram", "mem0", 64))
    assert info.value.command == "object-add"
    assert [c[0] for c in calls(server)] == ["object-add"]


def test_memdev_rollback_after_timeout(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", delay=1.0)
    with pytest.raises(Timeout):
        run(client.memory.hotplug_memory("memory-backend-ram", "mem0", 64, timeout=0.1))
    server.wait_for_commands(4)
    assert [c[0] for c in calls(server)] == ["object-add", "device_add", "object-del"]


def test_memdev_cancel_stops_the_next_step(server: FakeQMPServer, client: Client,
                                           reactor: Reactor) -> None:
    server.on("object-add", delay=0.05)
    fut = client.memory.hotplug_memory("memory-backend-ram", "mem0", 64)
    reactor.run_once(0)  # object-add is written (cancelled before that, nothing would be)
    assert fut.cancel()
    with pytest.raises(Cancelled):
        run(fut)
    pump(reactor, 60)
    assert [c[0] for c in calls(server)] == ["object-add"]


def test_memdev_props_form_before_qemu_5(make: Make) -> None:
    server, client = make(version=(4, 2, 0))
    server.on("object-add", returns={})
    server.on("device_add", returns={})
    run(client.memory.memdev_add("memory-backend-file", "mem0", 1, mem_path="/dev/shm/m",
                                 share=True, driver="pc-dimm", driver_id="dimm0"))
    assert calls(server)[0] == ("object-add", {
        "qom-type": "memory-backend-file", "id": "mem0",
        "props": {"size": 1 << 20, "mem-path": "/dev/shm/m", "share": True}})


@pytest.mark.parametrize("call", [
    lambda c: c.memory.memdev_add("iothread", "m0", 1, driver="pc-dimm", driver_id="d0"),
    lambda c: c.memory.memdev_add("memory-backend-file", "m0", 1, driver="pc-dimm",
                                  driver_id="d0"),
    lambda c: c.memory.memdev_add("memory-backend-ram", "m0", 0, driver="pc-dimm",
                                  driver_id="d0"),
    lambda c: c.memory.memdev_add("memory-backend-ram", "m0", 1, driver="pc-dimm",
                                  driver_id=""),
    lambda c: c.memory.memdev_add("memory-backend-file", "m0", 1, mem_path="", driver="pc-dimm",
                                  driver_id="d0"),
    lambda c: c.memory.hotplug_memory("memory-backend-ram", "", 1),
    lambda c: c.memory.hotplug_memory("memory-backend-ram", "m0", ""),  # 0.1's mem_path
    lambda c: c.memory.nvdimm_device_add("nv0", "", 1 << 20),
    lambda c: c.memory.nvdimm_device_add("nv0", "/x", 1 << 20, pmem="on"),
])
def test_memory_validation(server: FakeQMPServer, client: Client,
                           call: Callable[[Client], object]) -> None:
    with pytest.raises(ValidationError):
        call(client)
    assert calls(server) == []


def test_nvdimm_device_add(server: FakeQMPServer, client: Client) -> None:
    run(client.memory.nvdimm_device_add("0", "/var/lib/nv.img", 1 << 30))
    run(client.memory.nvdimm_device_add("1", "/var/lib/nv1.img", 1 << 30, pmem=True))
    assert calls(server) == [
        ("object-add", {"qom-type": "memory-backend-file", "id": "nvdimmbackmem0",
                        "mem-path": "/var/lib/nv.img", "size": 1 << 30, "share": True}),
        ("device_add", {"driver": "nvdimm", "id": "nvdimm0", "memdev": "nvdimmbackmem0"}),
        ("object-add", {"qom-type": "memory-backend-file", "id": "nvdimmbackmem1",
                        "mem-path": "/var/lib/nv1.img", "size": 1 << 30, "share": True,
                        "pmem": True}),
        ("device_add", {"driver": "nvdimm", "id": "nvdimm1", "memdev": "nvdimmbackmem1"}),
    ]


def test_nvdimm_rollback(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", error=("GenericError", "nvdimm is not enabled"))
    with pytest.raises(CommandError, match="nvdimm is not enabled"):
        run(client.memory.nvdimm_device_add("0", "/var/lib/nv.img", 1 << 30))
    assert calls(server)[-1] == ("object-del", {"id": "nvdimmbackmem0"})
    assert server.objects == {}


# ---------------------------------------------------------------------- net, char
def test_netdev_add_forms(server: FakeQMPServer, client: Client) -> None:
    run(client.net.netdev_add("tap", "n0", ifname="tap0"))
    run(client.net.netdev_add("tap", "n1", queues=4, vhost=True, vnet_hdr=True))
    run(client.net.netdev_add("user", "n2", ipv6_prefix="fd00::",
                              hostfwd=[{"str": "tcp::2222-:22"}]))
    run(client.net.netdev_add("tap", "n3", downscript="/etc/down", script="/etc/up", queues=1))
    assert calls(server) == [
        ("netdev_add", {"type": "tap", "id": "n0", "ifname": "tap0", "downscript": "no",
                        "script": "no"}),
        ("netdev_add", {"type": "tap", "id": "n1", "downscript": "no",
                        "script": "no", "queues": 4, "vhost": True, "vnet_hdr": True}),
        ("netdev_add", {"type": "user", "id": "n2", "ipv6-prefix": "fd00::",
                        "hostfwd": [{"str": "tcp::2222-:22"}]}),
        ("netdev_add", {"type": "tap", "id": "n3", "downscript": "/etc/down",
                        "script": "/etc/up", "queues": 1}),
    ]
    assert set(server.netdevs) == {"n0", "n1", "n2", "n3"}


def test_netdev_add_validation(server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(ValidationError):
        client.net.netdev_add("user", "n0", type="tap")
    with pytest.raises(ValidationError):
        client.net.netdev_add("tap", "n0", queues=0)
    with pytest.raises(ValidationError):
        client.net.netdev_add("", "n0")
    assert calls(server) == []


def test_wire_name() -> None:
    assert wire_name("ipv6_prefix") == "ipv6-prefix"
    assert wire_name("vnet_hdr") == "vnet_hdr"
    assert wire_name("poll_us") == "poll-us"
    # one mapping for the whole library: the operations use the schema's rules
    assert wire_name is qmplex.names.wire_name
    assert wire_name("vnet_hdr_support") == "vnet_hdr_support"
    assert wire_name("if_") == "if"


def test_netdev_chardev_add_and_del(server: FakeQMPServer, client: Client) -> None:
    run(client.net.netdev_chardev_add("vhost-user", "n0", "char0", queues=2))
    run(client.net.netdev_chardev_add("vhost-user", "n1", "char1"))
    run(client.net.netdev_del("n0"))
    assert calls(server) == [
        ("netdev_add", {"type": "vhost-user", "id": "n0", "chardev": "char0", "queues": 2}),
        ("netdev_add", {"type": "vhost-user", "id": "n1", "chardev": "char1"}),
        ("netdev_del", {"id": "n0"}),
    ]
    assert set(server.netdevs) == {"n1"}


def test_netdev_add_by_fds_sends_the_fds(server: FakeQMPServer, client: Client) -> None:
    pipes = [pipe_fds() for _ in range(3)]
    try:
        run(client.net.netdev_add_by_fds("tap", "n0", [pipes[0][1], pipes[1][1]],
                                         vhost_fds=[pipes[2][1]]))
        assert calls(server) == [
            ("getfd", {"fdname": "fd0"}),
            ("getfd", {"fdname": "fd1"}),
            ("getfd", {"fdname": "vhostfd0"}),
            ("netdev_add", {"type": "tap", "id": "n0", "fds": "fd0:fd1", "vhost": True,
                            "vhostfds": "vhostfd0"}),
        ]
        # Each descriptor arrived (SCM_RIGHTS), in order: writing to the server's copy
        # comes out of our pipe.
        assert len(server.received_fds) == 3
        for (r, _), theirs in zip(pipes, server.received_fds, strict=True):
            os.write(theirs, b"q")
            assert os.read(r, 1) == b"q"
        assert "n0" in server.netdevs
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_netdev_add_by_fds_without_vhost(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        run(client.net.netdev_add_by_fds("tap", "n0", [w]))
    finally:
        os.close(r)
        os.close(w)
    assert calls(server)[-1] == ("netdev_add", {"type": "tap", "id": "n0", "fds": "fd0"})


def test_netdev_add_by_fds_rolls_back_on_netdev_add_error(server: FakeQMPServer,
                                                          client: Client) -> None:
    server.on("netdev_add", error=("GenericError", "could not configure tap"))
    r, w = pipe_fds()
    try:
        with pytest.raises(CommandError) as info:
            run(client.net.netdev_add_by_fds("tap", "n0", [w, w], vhost_fds=[w]))
    finally:
        os.close(r)
        os.close(w)
    assert info.value.command == "netdev_add"
    assert calls(server)[4:] == [("closefd", {"fdname": "fd0"}),
                                 ("closefd", {"fdname": "fd1"}),
                                 ("closefd", {"fdname": "vhostfd0"})]


def test_netdev_add_by_fds_reports_the_getfd_error(server: FakeQMPServer,
                                                   client: Client) -> None:
    server.on("getfd", error=("GenericError", "no fd"), times=1)
    r, w = pipe_fds()
    try:
        with pytest.raises(CommandError) as info:
            run(client.net.netdev_add_by_fds("tap", "n0", [w, w]))
    finally:
        os.close(r)
        os.close(w)
    assert info.value.command == "getfd" and info.value.desc == "no fd"
    names = [c[0] for c in calls(server)]
    assert names[:3] == ["getfd", "getfd", "netdev_add"]
    assert calls(server)[3:] == [("closefd", {"fdname": "fd1"})]  # only fd1 registered


def test_two_netdev_add_by_fds_do_not_interleave(server: FakeQMPServer,
                                                 client: Client) -> None:
    r, w = pipe_fds()
    try:
        a = client.net.netdev_add_by_fds("tap", "n0", [w])
        b = client.net.netdev_add_by_fds("tap", "n1", [w])
        run(a)
        run(b)
    finally:
        os.close(r)
        os.close(w)
    assert [c[0] for c in calls(server)] == ["getfd", "netdev_add", "getfd", "netdev_add"]


def test_netdev_add_by_fds_validation(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    os.close(r)
    os.close(w)
    with pytest.raises(ValidationError, match="not an open file descriptor"):
        client.net.netdev_add_by_fds("tap", "n0", [0, w])
    with pytest.raises(ValidationError):
        client.net.netdev_add_by_fds("tap", "n0", [])
    with pytest.raises(ValidationError):
        client.net.netdev_add_by_fds("tap", "n0", [-1])
    assert calls(server) == []
    assert server.received_fds == []


def test_chardev_unix_socket(server: FakeQMPServer, client: Client) -> None:
    run(client.chardev.chardev_unix_socket_add("char0", "/run/vm/c0.sock"))
    run(client.chardev.chardev_unix_socket_add("char1", "/run/vm/c1.sock", wait=True))
    run(client.chardev.chardev_unix_socket_add("char2", "/run/vm/c2.sock", server=False,
                                               reconnect=2))
    run(client.chardev.chardev_unix_socket_add("char3", "/run/vm/c3.sock", server=False,
                                               reconnect_ms=3000))
    run(client.chardev.chardev_del("char0"))

    def backend(path: str, **data: Any) -> dict[str, Any]:
        return {"type": "socket",
                "data": {**data, "addr": {"type": "unix", "data": {"path": path}}}}

    assert calls(server) == [
        ("chardev-add", {"id": "char0",
                         "backend": backend("/run/vm/c0.sock", server=True, wait=False)}),
        ("chardev-add", {"id": "char1",
                         "backend": backend("/run/vm/c1.sock", server=True, wait=True)}),
        ("chardev-add", {"id": "char2",
                         "backend": backend("/run/vm/c2.sock", server=False, reconnect=2)}),
        ("chardev-add", {"id": "char3",
                         "backend": backend("/run/vm/c3.sock", server=False, reconnect=3)}),
        ("chardev-remove", {"id": "char0"}),
    ]
    assert set(server.chardevs) == {"char1", "char2", "char3"}


def test_chardev_reconnect_ms_from_qemu_9_2(make: Make) -> None:
    server, client = make(qemu_version="9.2.0")
    run(client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False, reconnect=2))
    run(client.chardev.chardev_unix_socket_add("c1", "/run/c1.sock", server=False,
                                               reconnect_ms=1500))
    assert [args["backend"]["data"].get("reconnect-ms") for _, args in calls(server)] == [
        2000, 1500]
    assert all("reconnect" not in args["backend"]["data"] for _, args in calls(server))


def test_chardev_reconnect_refusals(make: Make) -> None:
    server, client = make(qemu_version="9.1.0")
    with pytest.raises(ValidationError, match=r"reconnect_ms=1500 is not whole seconds, and "
                                              r"QEMU 9.1.0 has reconnect in seconds only"):
        client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False,
                                               reconnect_ms=1500)
    with pytest.raises(ValidationError, match="only a client"):
        client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", reconnect=1)
    with pytest.raises(ValidationError, match="not both"):
        client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False,
                                               reconnect=1, reconnect_ms=1000)
    assert calls(server) == []


def test_chardev_reconnect_follows_a_loaded_schema(make: Make) -> None:
    # A build that reports 9.1 but has reconnect-ms (a backport) is asked by its schema.
    release = captured_release("10.0.0")
    server, client = make(version=(9, 1, 0), package="backport")
    server.on("query-qmp-schema", returns=list(release.schema_info))
    client.load_schema(cache=False).result(timeout=WAIT)
    run(client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False,
                                               reconnect_ms=1500))
    assert calls(server)[-1][1]["backend"]["data"]["reconnect-ms"] == 1500


# -------------------------------------------------------------------- fd passing
def test_getfd_and_closefd(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        run(client.fds.getfd("mine", w))
        (theirs,) = server.received_fds
        os.write(theirs, b"g")
        assert os.read(r, 1) == b"g"
        run(client.fds.closefd("mine"))
    finally:
        os.close(r)
        os.close(w)
    assert calls(server) == [("getfd", {"fdname": "mine"}), ("closefd", {"fdname": "mine"})]
    with pytest.raises(CommandError):
        run(client.fds.closefd("mine"))


def test_getfd_validation(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        with pytest.raises(ValidationError, match="digit"):
            client.fds.getfd("0fd", w)
        with pytest.raises(ValidationError):
            client.fds.getfd("", w)
        with pytest.raises(ValidationError):
            client.fds.getfd("x", "3")  # type: ignore[arg-type]
    finally:
        os.close(r)
        os.close(w)
    assert calls(server) == []


def test_add_fd_and_remove_fd(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        info = run(client.fds.add_fd(w))
        info2 = run(client.fds.add_fd(w, fdset_id=7, opaque="rw"))
    finally:
        os.close(r)
        os.close(w)
    assert isinstance(info, AddFdInfo) and info.fdset_id == 0
    assert info2.fdset_id == 7
    run(client.fds.remove_fd(info.fdset_id, fd=info.fd))
    run(client.fds.remove_fd(7))
    assert calls(server) == [
        ("add-fd", None),
        ("add-fd", {"fdset-id": 7, "opaque": "rw"}),
        ("remove-fd", {"fdset-id": 0, "fd": info.fd}),
        ("remove-fd", {"fdset-id": 7}),
    ]
    assert run(client.execute("query-fdsets")) == []


# ----------------------------------------------------------------------- queries
def test_query_hotpluggable_cpus(server: FakeQMPServer, client: Client) -> None:
    slots = run(client.cpu.query_hotpluggable_cpus())
    assert slots == [
        HotpluggableCPU("qemu64-x86_64-cpu", 1, CPUProperties(socket=1, core=0, thread=0)),
        HotpluggableCPU("qemu64-x86_64-cpu", 1, CPUProperties(socket=0, core=0, thread=0),
                        "/machine/unattached/device[0]"),
    ]


def test_query_memory_devices(server: FakeQMPServer, client: Client) -> None:
    dimm = {"id": "dimm0", "addr": 4294967296, "size": 134217728, "slot": 0, "node": 0,
            "memdev": "/objects/mem0", "hotplugged": True, "hotpluggable": True}
    server.on("query-memory-devices", returns=[{"type": "dimm", "data": dimm}])
    assert run(client.memory.query_memory_devices()) == [MemoryDevice("dimm", dimm)]


def test_query_cpus_uses_fast_on_new_qemu(server: FakeQMPServer, client: Client) -> None:
    (cpu,) = run(client.cpu.query_cpus())
    assert isinstance(cpu, CPUInfo)
    assert cpu.cpu_index == 0 and cpu.qom_path == "/machine/unattached/device[0]"
    assert cpu.props == CPUProperties(socket=0, core=0, thread=0)
    assert cpu.target == "x86_64" and isinstance(cpu.thread_id, int)
    assert calls(server) == [("query-cpus-fast", None)]


def test_query_cpus_fast_from_2_12(make: Make) -> None:
    server, client = make(version=(2, 12, 0))
    run(client.cpu.query_cpus())
    assert calls(server) == [("query-cpus-fast", None)]


def test_query_cpus_legacy_shape(make: Make) -> None:
    server, client = make(version=(2, 11, 0))
    server.on("query-cpus", returns=[{
        "CPU": 0, "current": True, "halted": False, "qom_path": "/machine/unattached/device[0]",
        "arch": "x86", "pc": 1048560, "thread_id": 4242,
        "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}}])
    assert run(client.cpu.query_cpus()) == [
        CPUInfo(0, "/machine/unattached/device[0]", 4242,
                CPUProperties(socket=0, core=0, thread=0), None)]
    assert calls(server) == [("query-cpus", None)]


def test_query_cpus_falls_back_when_query_cpus_is_missing(make: Make) -> None:
    server, client = make(version=(2, 11, 0))  # the fake has no query-cpus
    (cpu,) = run(client.cpu.query_cpus())
    assert cpu.target == "x86_64"
    assert calls(server) == [("query-cpus", None), ("query-cpus-fast", None)]


def test_query_cpus_other_errors_are_not_retried(make: Make) -> None:
    server, client = make(version=(2, 11, 0))
    server.on("query-cpus", error=("GenericError", "busy"))
    with pytest.raises(CommandError, match="busy"):
        run(client.cpu.query_cpus())
    assert calls(server) == [("query-cpus", None)]


def test_query_migrate_and_schema(server: FakeQMPServer, client: Client) -> None:
    assert run(client.migration.query_migrate()) == MigrationInfo(None, {})
    server.on("query-qmp-schema", returns=[{"name": "query-status", "meta-type": "command",
                                            "arg-type": "0", "ret-type": "1"}])
    schema = run(client.monitor.query_qmp_schema())
    assert schema[0]["name"] == "query-status"
    assert calls(server) == [("query-migrate", None), ("query-qmp-schema", None)]


# --------------------------------------------------------------------- migration
def test_migration_commands(server: FakeQMPServer, client: Client) -> None:
    server.on("migrate-incoming", returns={})
    run(client.migration.migrate_set_capabilities({"events": True, "xbzrle": False}))
    run(client.migration.migrate_incoming("tcp:0:4444"))
    assert calls(server) == [
        ("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True},
            {"capability": "xbzrle", "state": False}]}),
        ("migrate-incoming", {"uri": "tcp:0:4444"}),
    ]
    with pytest.raises(ValidationError):
        client.migration.migrate_set_capabilities({})
    with pytest.raises(ValidationError):
        client.migration.migrate_set_capabilities({"events": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        client.migration.migrate("")
    assert len(calls(server)) == 2


def test_migrate_and_wait(server: FakeQMPServer, client: Client) -> None:
    run(client.migration.migrate_set_capabilities({"events": True}))
    assert run(client.migration.migrate_and_wait("exec:cat > /dev/null")) == "completed"
    assert calls(server)[-1] == ("migrate", {"uri": "exec:cat > /dev/null"})
    info = run(client.migration.query_migrate())
    assert info.status == "completed" and info.raw["status"] == "completed"


def test_migrate_and_wait_reports_failure(server: FakeQMPServer, client: Client) -> None:
    server.on("migrate", returns={}, events=[("MIGRATION", {"status": "setup"})],
              events_after=[("MIGRATION", {"status": "failed"}, 0.01)])
    assert run(client.migration.migrate_and_wait("tcp:nowhere:1")) == "failed"


def test_wait_migration_after_migrate(server: FakeQMPServer, client: Client) -> None:
    server.migrate_delay = 0.02
    run(client.migration.migrate_set_capabilities({"events": True}))
    run(client.migration.migrate("exec:cat > /dev/null"))
    assert run(client.migration.wait_migration(timeout=WAIT)) == "completed"


def test_wait_migration_when_it_is_already_over(server: FakeQMPServer, client: Client,
                                                reactor: Reactor) -> None:
    run(client.migration.migrate_set_capabilities({"events": True}))
    run(client.migration.migrate_and_wait("exec:cat > /dev/null"))
    # No event will come again: query-migrate tells it is over.
    assert run(client.migration.wait_migration(timeout=WAIT)) == "completed"
    pump(reactor)
    assert client._waits == set()  # the event wait was released


def test_wait_migration_times_out(server: FakeQMPServer, client: Client) -> None:
    with pytest.raises(Timeout):
        run(client.migration.wait_migration(timeout=0.05))
    assert client._waits == set()


# ------------------------------------------------------------------------- other
def test_balloon(server: FakeQMPServer, client: Client) -> None:
    server.on("balloon", returns={})
    run(client.vm.balloon(1 << 30))
    assert calls(server) == [("balloon", {"value": 1 << 30})]
    with pytest.raises(ValidationError):
        client.vm.balloon(0)


def test_qom(server: FakeQMPServer, client: Client) -> None:
    props = run(client.qom.qom_list("/machine"))
    assert ObjectProperty("type", "string") in props
    assert all(isinstance(p, ObjectProperty) for p in props)
    assert run(client.qom.qom_get("/machine", "type")) == "pc-i440fx-7.2-machine"
    run(client.qom.qom_set("/machine", "x-note", 42))
    assert run(client.qom.qom_get("/machine", "x-note")) == 42
    assert calls(server) == [
        ("qom-list", {"path": "/machine"}),
        ("qom-get", {"path": "/machine", "property": "type"}),
        ("qom-set", {"path": "/machine", "property": "x-note", "value": 42}),
        ("qom-get", {"path": "/machine", "property": "x-note"}),
    ]


def test_qom_list_with_descriptions(server: FakeQMPServer, client: Client) -> None:
    server.on("qom-list", returns=[{"name": "size", "type": "int",
                                    "description": "Size of the memory region"}])
    assert run(client.qom.qom_list("/objects/mem0")) == [
        ObjectProperty("size", "int", "Size of the memory region")]


def test_dump_guest_memory(server: FakeQMPServer, client: Client) -> None:
    server.on("dump-guest-memory", returns={})
    run(client.vm.dump_guest_memory("file:/tmp/vm.dump", False, format="elf"))
    run(client.vm.dump_guest_memory("fd:dumpfd", True))
    assert calls(server) == [
        ("dump-guest-memory", {"protocol": "file:/tmp/vm.dump", "paging": False,
                               "format": "elf"}),
        ("dump-guest-memory", {"protocol": "fd:dumpfd", "paging": True}),
    ]


def test_human_monitor_command(server: FakeQMPServer, client: Client) -> None:
    out = run(client.monitor.human_monitor_command("info version"))
    assert isinstance(out, str) and out.startswith("7.2.0")
    run(client.monitor.human_monitor_command("info registers", cpu_index=0))
    assert calls(server) == [
        ("human-monitor-command", {"command-line": "info version"}),
        ("human-monitor-command", {"command-line": "info registers", "cpu-index": 0}),
    ]
    with pytest.raises(ValidationError):
        client.monitor.human_monitor_command("")


# ------------------------------------------------------------------- the base
def test_namespaces_over_a_custom_executor() -> None:
    """A namespace is usable over any Executor: here one that records and answers {}."""
    rec = Recorder()
    executor: Executor = rec  # the protocol is all a namespace needs
    assert executor.version is None
    assert BlockOps(executor).blockdev_del("b0", timeout=2.0).result() is None
    assert rec.sent == [("blockdev-del", {"node-name": "b0"}, {"timeout": 2.0})]


def test_namespace_needs_wait_event_only_where_it_waits() -> None:
    with pytest.raises(NotImplementedError, match="wait"):
        MigrationOps(Recorder()).wait_migration()


def test_a_dropped_client_that_used_a_namespace_is_collected(reactor: Reactor) -> None:
    server = FakeQMPServer(reactor=reactor)
    client = Client(reactor)
    client.connect_socket(server.connect_pair()).result(timeout=WAIT)
    run(client.vm.query_status())
    client.close()
    server.close()
    pump(reactor)
    gone = weakref.ref(client)
    del client
    gc.collect()  # client.__dict__["vm"] refers back to the client: a cycle
    assert gone() is None


def test_namespaces_are_made_on_first_use_and_kept(client: Client) -> None:
    fresh = Client(client.reactor)
    assert not {"vm", "block", "devices"} & set(vars(fresh))
    fresh.close()
    vm = client.vm
    assert client.vm is vm and vars(client)["vm"] is vm
    assert repr(vm).startswith("<VMOps of ")


# ------------------------------------------------- block devices (BlockDevice)
def test_block_add_a_block_device(server: FakeQMPServer, client: Client, tmp_path: Any) -> None:
    image = tmp_path / "disk.img"
    image.touch()
    run(client.block.add(BlockDevice(node_name="b0", path=str(image))))
    run(client.block.add(BlockDevice(node_name="b1", path=str(image), read_only=True,
                                     aio="native", direct=True, no_flush=False, discard=True)))
    run(client.block.add(BlockDevice(node_name="b2", path="/dev/sr0", protocol="host_cdrom",
                                     aio="io_uring", no_flush=True)))
    assert calls(server) == [
        ("blockdev-add", {"driver": "raw", "node-name": "b0", "read-only": False,
                          "file": {"driver": "file", "filename": str(image)}}),
        ("blockdev-add", {"driver": "raw", "node-name": "b1", "read-only": True,
                          "discard": "unmap", "cache": {"direct": True, "no-flush": False},
                          "file": {"driver": "file", "filename": str(image), "aio": "native",
                                   "discard": "unmap"}}),
        ("blockdev-add", {"driver": "raw", "node-name": "b2", "read-only": False,
                          "cache": {"no-flush": True},
                          "file": {"driver": "host_cdrom", "filename": "/dev/sr0",
                                   "aio": "io_uring"}}),
    ]
    assert set(server.nodes) == {"b0", "b1", "b2"}


def test_block_device_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        BlockDevice("b0", "/x")  # type: ignore[call-arg]
    dev = BlockDevice(node_name="b0", path="/x")
    with pytest.raises(AttributeError):
        dev.path = "/y"  # type: ignore[misc]
    assert dev == BlockDevice(node_name="b0", path="/x")


@pytest.mark.parametrize("device, match", [
    (BlockDevice(node_name="b0", path="/x", aio="posix"), "aio must be one of"),
    (BlockDevice(node_name="b0", path="/x", aio="native"), "needs direct=True"),
    (BlockDevice(node_name="b0", path="/x", aio="native", direct=False), "needs direct=True"),
    (BlockDevice(node_name="", path="/x"), "node_name"),
    (BlockDevice(node_name="b0", path=""), "path"),
    (BlockDevice(node_name="b0", path="/x", discard=1), "discard"),  # type: ignore[arg-type]
    (BlockDevice(node_name="b0", path="/x", direct="on"), "direct"),  # type: ignore[arg-type]
    (BlockDevice(node_name="b0", path="/x", protocol=""), "protocol"),
    ("/x", "expected a BlockDevice"),
])
def test_block_add_validation(server: FakeQMPServer, client: Client, device: Any,
                              match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        client.block.add(device)
    assert calls(server) == []


def test_block_add_io_uring_follows_the_schema(make: Make) -> None:
    # A QEMU built without liburing has no io_uring in its schema: refused up front.
    release = captured_release("7.2.0")
    info = [dict(e) for e in release.schema_info]
    for entry in info:
        if entry.get("meta-type") == "enum" and "io_uring" in [
                m["name"] if isinstance(m, dict) else m
                for m in entry.get("members", entry.get("values", []))]:
            entry["members"] = [m for m in entry["members"] if m["name"] != "io_uring"]
            entry.pop("values", None)
    server, client = make(version=(7, 2, 0), package="no-liburing")
    server.on("query-qmp-schema", returns=info)
    client.load_schema(cache=False).result(timeout=WAIT)
    with pytest.raises(ValidationError, match=r"aio='io_uring' needs aio io_uring \(QEMU 5.0 "
                                              r"or newer\); the peer is QEMU 7.2.0"):
        client.block.add(BlockDevice(node_name="b0", path="/x", aio="io_uring"))
    run(client.block.add(BlockDevice(node_name="b0", path="/x", aio="threads")))


def test_device_add_block_properties(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.devices.device_add("b0", "d0", "virtio-blk-pci", discard=True, iothread="io0",
                                  logical_block_size=4096, physical_block_size=4096))
    run(client.devices.pci_device_add("b1", "d1", "virtio-blk-pci", addr="0x4", iothread="io1",
                                      logical_block_size=512))
    run(client.devices.scsi_device_add("b2", "d2", "scsi-hd", "scsi0.0",
                                       logical_block_size=4096, physical_block_size=4096))
    assert [args for _, args in calls(server)] == [
        {"driver": "virtio-blk-pci", "id": "d0", "drive": "b0", "discard": True,
         "iothread": "io0", "logical_block_size": 4096, "physical_block_size": 4096},
        {"driver": "virtio-blk-pci", "id": "d1", "drive": "b1", "addr": "0x4",
         "iothread": "io1", "logical_block_size": 512},
        {"driver": "scsi-hd", "id": "d2", "drive": "b2", "bus": "scsi0.0",
         "logical_block_size": 4096, "physical_block_size": 4096},
    ]


@pytest.mark.parametrize("call, match", [
    # Properties a device model does not have are refused before QEMU sees them.
    (lambda c: c.devices.device_add("b0", "d0", "scsi-hd", romfile=""), "no 'romfile'"),
    (lambda c: c.devices.device_add("b0", "d0", "scsi-hd", disable_modern=True),
     "no 'disable-modern'"),
    (lambda c: c.devices.device_add("b0", "d0", "scsi-hd", discard=True), "no 'discard'"),
    (lambda c: c.devices.device_add("b0", "d0", "scsi-hd", iothread="io0"), "no 'iothread'"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-ccw", romfile="x"), "no 'romfile'"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-pci", devno="fe.0.1"), "no 'devno'"),
    (lambda c: c.devices.device_add("b0", "d0", "vfio-pci", disable_modern=True),
     "no 'disable-modern'"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-pci", bus=""), "non-empty"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-pci", logical_block_size=1000),
     "power of two"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-pci", logical_block_size=256),
     "at least 512"),
    (lambda c: c.devices.device_add("b0", "d0", "virtio-blk-pci", logical_block_size=4096,
                                    physical_block_size=512), "larger than"),
    (lambda c: c.devices.pci_device_add("b0", "d0", "virtio-blk-pci", queues=0), "at least 1"),
    (lambda c: c.devices.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0", scsi_id=-1),
     "at least 0"),
    (lambda c: c.devices.net_pci_device_add("n0", "nic0", mac=""), "non-empty"),
])
def test_device_properties_refused(server: FakeQMPServer, client: Client,
                                   call: Callable[[Client], object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        call(client)
    assert calls(server) == []


def test_device_add_passes_unknown_models_through(server: FakeQMPServer,
                                                  client: Client) -> None:
    # A model whose name does not tell (an alias, a new device): QEMU judges.
    server.on("device_add", returns={})
    run(client.devices.device_add("b0", "d0", "virtio-blk", romfile="", discard=True))
    assert calls(server)[-1][1] == {"driver": "virtio-blk", "id": "d0", "drive": "b0",
                                    "romfile": "", "discard": True}


# ------------------------------------------------------------------- VFIO
def test_vfio_bus_ccw_and_ap(server: FakeQMPServer, client: Client) -> None:
    server.on("device_add", returns={})
    run(client.vfio.vfio_device_add("v0", "0000:01:00.0", bus="rp0", romfile=""))
    run(client.vfio.ccw_vfio_device_add("v1", "/sys/bus/mdev/devices/u1", devno="fe.0.1234"))
    run(client.vfio.ccw_vfio_device_add("v2", "/sys/bus/mdev/devices/u2"))
    assert [args for _, args in calls(server)] == [
        {"driver": "vfio-pci", "id": "v0", "host": "0000:01:00.0", "bus": "rp0", "romfile": ""},
        {"driver": "vfio-ccw", "id": "v1", "sysfsdev": "/sys/bus/mdev/devices/u1",
         "devno": "fe.0.1234"},
        {"driver": "vfio-ccw", "id": "v2", "sysfsdev": "/sys/bus/mdev/devices/u2"},
    ]


def test_vfio_iommufd_object_first(make: Make) -> None:
    server, client = make(qemu_version="9.2.0")
    server.on("device_add", returns={})
    run(client.vfio.vfio_device_add("v0", "0000:01:00.0", bus="rp0", iommufd="iommufd0"))
    run(client.vfio.pci_vfio_device_add("v1", "0000:02:00.0", addr="0x3", iommufd="iommufd0",
                                        create_iommufd=False))
    run(client.vfio.ap_vfio_mediated_device_add("/sys/devices/vfio_ap/matrix/u", dev_id="ap0",
                                                iommufd="iommufd1"))
    assert calls(server) == [
        ("object-add", {"qom-type": "iommufd", "id": "iommufd0"}),
        ("device_add", {"driver": "vfio-pci", "id": "v0", "host": "0000:01:00.0",
                        "bus": "rp0", "iommufd": "iommufd0"}),
        ("device_add", {"driver": "vfio-pci", "id": "v1", "host": "0000:02:00.0",
                        "addr": "0x3", "iommufd": "iommufd0"}),
        ("object-add", {"qom-type": "iommufd", "id": "iommufd1"}),
        ("device_add", {"driver": "vfio-ap", "sysfsdev": "/sys/devices/vfio_ap/matrix/u",
                        "id": "ap0", "iommufd": "iommufd1"}),
    ]
    assert set(server.objects) == {"iommufd0", "iommufd1"}


def test_vfio_iommufd_removed_when_device_add_fails(make: Make) -> None:
    server, client = make(qemu_version="9.2.0")
    server.on("device_add", error=("GenericError", "vfio 0000:01:00.0: no such host device"))
    with pytest.raises(CommandError, match="no such host device"):
        run(client.vfio.vfio_device_add("v0", "0000:01:00.0", iommufd="iommufd0"))
    assert [c[0] for c in calls(server)] == ["object-add", "device_add", "object-del"]
    assert server.objects == {}


def test_vfio_iommufd_needs_qemu_9(make: Make) -> None:
    server, client = make(qemu_version="8.2.0")
    with pytest.raises(ValidationError, match=r"iommufd='iommufd0' needs the iommufd backend "
                                              r"\(QEMU 9.0 or newer\); the peer is QEMU 8.2.0"):
        client.vfio.vfio_device_add("v0", "0000:01:00.0", iommufd="iommufd0")
    with pytest.raises(ValidationError, match="create_iommufd"):
        client.vfio.vfio_device_add("v0", "0000:01:00.0", create_iommufd=1)  # type: ignore[arg-type]
    assert calls(server) == []


# ------------------------------------------------------ netdevs by fd names
def test_netdev_add_by_fd_names(server: FakeQMPServer, client: Client) -> None:
    # govmm's ExecuteNetdevAddByFds: names given to getfd earlier; nothing else is sent.
    run(client.net.netdev_add_by_fds("tap", "n0", ["tapfd0", "tapfd1"],
                                     vhost_fds=["vhost0", "vhost1"]))
    assert calls(server) == [("netdev_add", {"type": "tap", "id": "n0",
                                             "fds": "tapfd0:tapfd1", "vhost": True,
                                             "vhostfds": "vhost0:vhost1"})]


def test_netdev_add_by_fds_mixed(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        run(client.net.netdev_add_by_fds("tap", "n0", ["mine", w]))
    finally:
        os.close(r)
        os.close(w)
    assert calls(server) == [("getfd", {"fdname": "fd1"}),
                             ("netdev_add", {"type": "tap", "id": "n0", "fds": "mine:fd1"})]


def test_netdev_add_by_fd_names_validation(server: FakeQMPServer, client: Client) -> None:
    r, w = pipe_fds()
    try:
        with pytest.raises(ValidationError, match="'fd0' is also the name"):
            client.net.netdev_add_by_fds("tap", "n0", [w, "fd0"])
        with pytest.raises(ValidationError, match="digit"):
            client.net.netdev_add_by_fds("tap", "n0", ["0fd"])
        with pytest.raises(ValidationError):
            client.net.netdev_add_by_fds("tap", "n0", [""])
        with pytest.raises(ValidationError):
            client.net.netdev_add_by_fds("tap", "n0", "fd0")
    finally:
        os.close(r)
        os.close(w)
    assert calls(server) == []
