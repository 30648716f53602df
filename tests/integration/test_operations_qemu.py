"""The typed operations against a real QEMU (TCG, paused with -S, no guest OS).

Covers every operation that completes without a guest (QMP-NOTES.md): lifecycle,
status, block nodes over raw images, SCSI and PCI (q35 root port) hot-plug and unplug,
virtio-serial ports, netdevs, chardevs, fd passing, vCPU and DIMM hot-plug, queries,
QOM, balloon, HMP, guest memory dump and migration to a file. Each test starts its own
QEMU and stops it (or kills it) at the end. Skipped without QEMU, unless
QMPLEX_REQUIRE_QEMU=1 (then failed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qmplex import (
    AddFdInfo,
    Client,
    CommandError,
    CPUInfo,
    Event,
    Future,
    HotpluggableCPU,
    MemoryDevice,
    ObjectProperty,
    StatusInfo,
    ValidationError,
    gather,
)
from qmplex.ops import BlockDevice
from qmplex.qemu import QemuProcess, qemu_or_skip

pytestmark = pytest.mark.qemu

WAIT = 20.0
Start = Callable[..., Client]


@pytest.fixture
def start() -> Iterator[Start]:
    """Return ``start(*extra, machine="pc", memory="64")``: a fresh paused QEMU's client."""
    binary = qemu_or_skip()
    procs: list[QemuProcess] = []

    def _start(*extra: str, machine: str = "pc", memory: str = "64") -> Client:
        args = ["-machine", machine, "-accel", "tcg", "-nodefaults", "-display", "none",
                "-S", "-m", memory, *extra]
        proc = QemuProcess(binary, args=args)
        procs.append(proc)
        proc.start()
        assert proc.client is not None
        return proc.client

    yield _start
    for proc in procs:
        if proc.alive():
            proc.kill()
        proc.stop()


def run(fut: Future[Any]) -> Any:
    return fut.result(timeout=WAIT)


def raw_image(path: Path, size: int = 1 << 20) -> str:
    """A raw image made by qemu-img when present, else a sparse file (the same bytes)."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is not None:
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(path), str(size)],
                       check=True, timeout=30)
    else:
        with open(path, "wb") as f:
            f.truncate(size)
    return str(path)


def block_nodes(client: Client) -> dict[str, dict[str, Any]]:
    nodes = run(client.execute("query-named-block-nodes"))
    return {n["node-name"]: n for n in nodes}


def peripherals(client: Client) -> set[str]:
    return {p.name for p in run(client.qom.qom_list("/machine/peripheral"))
            if p.type.startswith("child<")}


# --------------------------------------------------------------------- lifecycle
def test_lifecycle(start: Start) -> None:
    client = start()
    assert run(client.vm.query_status()) == StatusInfo("prelaunch", False, False)
    with pytest.raises(CommandError) as info:
        run(client.monitor.qmp_capabilities())
    assert info.value.error_class == "CommandNotFound"
    assert run(client.vm.cont()) is None
    assert run(client.vm.query_status()).status == "running"
    assert run(client.vm.stop()) is None
    status = run(client.vm.query_status())
    assert status.status == "paused" and status.running is False
    assert run(client.vm.system_reset()) is None
    event = run(client.vm.system_powerdown())
    assert isinstance(event, Event) and event.name == "POWERDOWN"
    shutdown = client.wait_event("SHUTDOWN", timeout=WAIT)
    assert run(client.vm.quit()) is None
    assert run(shutdown).data["reason"] == "host-qmp-quit"


# ------------------------------------------------------------------------- block
def test_blockdev_add_and_del_over_raw_images(start: Start, tmp_path: Path) -> None:
    client = start()
    a = raw_image(tmp_path / "a.img")
    b = raw_image(tmp_path / "b.img")
    c = raw_image(tmp_path / "c.img")
    run(client.block.blockdev_add(a, "ba"))
    run(client.block.blockdev_add(b, "bb", read_only=True))
    run(client.block.blockdev_add_with_cache(c, "bc", False, True))
    nodes = block_nodes(client)
    assert nodes["ba"]["drv"] == "raw" and nodes["ba"]["ro"] is False
    assert nodes["ba"]["file"] == a
    assert nodes["bb"]["ro"] is True
    assert nodes["bc"]["cache"]["no-flush"] is True
    assert nodes["bc"]["cache"]["direct"] is False
    with pytest.raises(CommandError):  # node names are unique
        run(client.block.blockdev_add(c, "ba"))
    for node in ("ba", "bb", "bc"):
        run(client.block.blockdev_del(node))
    assert not {"ba", "bb", "bc"} & set(block_nodes(client))
    with pytest.raises(CommandError):
        run(client.block.blockdev_del("ba"))


def test_blockdev_add_with_driver_cache(start: Start, tmp_path: Path) -> None:
    client = start()
    image = raw_image(tmp_path / "d.img")
    run(client.block.blockdev_add_with_driver_cache("file", image, "bd", False, False,
                                                    read_only=True))
    node = block_nodes(client)["bd"]
    assert node["ro"] is True and node["cache"]["no-flush"] is False
    run(client.block.blockdev_del("bd"))


def test_block_device_description(start: Start, tmp_path: Path) -> None:
    # govmm's BlockDevice: aio, discard at both nodes, cache modes, read-only; the device
    # takes iothread, discard and block sizes. A q35 root port lets the disk unplug.
    client = start("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
                   "-device", "pcie-root-port,id=rp0,chassis=1",
                   "-device", "virtio-scsi-pci,id=scsi0",
                   "-object", "iothread,id=io0", machine="q35")
    a = raw_image(tmp_path / "a.img")
    b = raw_image(tmp_path / "b.img")
    run(client.block.add(BlockDevice(node_name="ba", path=a, aio="native", direct=True,
                                     discard=True)))
    run(client.block.add(BlockDevice(node_name="bb", path=b, read_only=True, aio="threads",
                                     no_flush=True)))
    nodes = block_nodes(client)
    assert nodes["ba"]["cache"]["direct"] is True and nodes["ba"]["ro"] is False
    assert nodes["bb"]["ro"] is True and nodes["bb"]["cache"]["no-flush"] is True
    run(client.devices.pci_device_add("ba", "vblk0", "virtio-blk-pci", bus="rp0",
                                      iothread="io0", discard=True, logical_block_size=4096,
                                      physical_block_size=4096))
    vblk = "/machine/peripheral/vblk0"
    assert run(client.qom.qom_get(vblk, "logical_block_size")) == 4096
    assert run(client.qom.qom_get(vblk, "discard")) is True
    assert run(client.qom.qom_get(vblk, "iothread")) == "/objects/io0"
    run(client.devices.scsi_device_add("bb", "sd0", "scsi-hd", "scsi0.0", scsi_id=0, lun=0,
                                       physical_block_size=4096))
    assert run(client.qom.qom_get("/machine/peripheral/sd0", "physical_block_size")) == 4096
    for dev, node in (("vblk0", "ba"), ("sd0", "bb")):
        assert run(client.devices.device_del(dev)).data["device"] == dev
        run(client.block.blockdev_del(node))


def test_chardev_reconnect_as_the_version_spells_it(start: Start, tmp_path: Path) -> None:
    client = start()
    listener_path = str(tmp_path / "r.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(listener_path)
        listener.listen(1)
        run(client.chardev.chardev_unix_socket_add("r0", listener_path, server=False,
                                                   reconnect_ms=2000))
        conn, _ = listener.accept()
        conn.close()
    run(client.chardev.chardev_del("r0"))
    version = client.version
    assert version is not None
    if not version.at_least(9, 2):  # whole seconds only before 9.2: refused, nothing sent
        with pytest.raises(ValidationError, match=f"QEMU {version}"):
            client.chardev.chardev_unix_socket_add("r1", listener_path, server=False,
                                                   reconnect_ms=1500)


def test_100_scsi_disks_plugged_and_unplugged_pipelined(start: Start, tmp_path: Path) -> None:
    n = 100
    client = start("-device", "virtio-scsi-pci,id=scsi0")
    images = []
    for i in range(n):
        path = tmp_path / f"s{i}.img"
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        images.append(str(path))
    deleted: list[str] = []
    client.on_event(lambda e: deleted.append(e.data["device"]), "DEVICE_DELETED",
                    predicate=lambda e: "device" in e.data)
    plugs: list[Future[Any]] = []
    for i in range(n):
        plugs.append(client.block.blockdev_add(images[i], f"b{i}"))
        plugs.append(client.devices.scsi_device_add(f"b{i}", f"d{i}", "scsi-hd", "scsi0.0",
                                                    scsi_id=i % 256, lun=i // 256))
    run(gather(plugs))
    assert peripherals(client) >= {f"d{i}" for i in range(n)}

    def unplug(i: int) -> Future[None]:
        def free_node(event: Event) -> Future[None]:
            assert event.data["device"] == f"d{i}"
            return client.block.blockdev_del(f"b{i}")

        return client.devices.device_del(f"d{i}").chain(free_node)

    run(gather([unplug(i) for i in range(n)]))
    assert sorted(deleted) == sorted(f"d{i}" for i in range(n))
    assert not {f"b{i}" for i in range(n)} & set(block_nodes(client))
    assert not peripherals(client) & {f"d{i}" for i in range(n)}


def test_pci_hotplug_in_q35_root_ports(start: Start) -> None:
    client = start("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
                   "-device", "pcie-root-port,id=rp0,chassis=1",
                   "-device", "pcie-root-port,id=rp1,chassis=2", machine="q35")
    run(client.execute("blockdev-add", {"driver": "null-co", "node-name": "nb0"}))
    run(client.devices.pci_device_add("nb0", "vblk0", "virtio-blk-pci", addr="0x0", bus="rp0",
                                      queues=2))
    assert run(client.qom.qom_get("/machine/peripheral/vblk0", "num-queues")) == 2
    run(client.net.netdev_add("user", "u0"))
    run(client.devices.net_pci_device_add("u0", "nic0", mac="52:54:00:12:34:56", addr="0x0",
                                          bus="rp1", queues=2))
    assert run(client.qom.qom_get("/machine/peripheral/nic0", "mq")) is True
    assert run(client.qom.qom_get("/machine/peripheral/nic0", "vectors")) == 6
    assert run(client.devices.device_del("vblk0")).data["device"] == "vblk0"
    assert run(client.devices.device_del("nic0")).data["device"] == "nic0"
    run(client.block.blockdev_del("nb0"))
    run(client.net.netdev_del("u0"))


def test_virt_serial_port(start: Start) -> None:
    client = start("-device", "virtio-serial-pci,id=vser0")
    run(client.execute("chardev-add", {"id": "cn0", "backend": {"type": "null", "data": {}}}))
    run(client.devices.virt_serial_port_add("port0", chardev_id="cn0", name="org.example.port0",
                                            bus="vser0.0"))
    assert run(client.qom.qom_get("/machine/peripheral/port0", "name")) == "org.example.port0"
    with pytest.raises(CommandError):  # busy while the port uses it
        run(client.chardev.chardev_del("cn0"))
    assert run(client.devices.device_del("port0")).name == "DEVICE_DELETED"
    run(client.chardev.chardev_del("cn0"))


# --------------------------------------------------------------------- net, char
def test_netdev_user_add_and_del(start: Start) -> None:
    client = start()
    run(client.net.netdev_add("user", "n0"))
    assert "n0" in run(client.monitor.human_monitor_command("info network"))
    with pytest.raises(CommandError):  # "ifname" is a tap option
        run(client.net.netdev_add("user", "n1", ifname="tap9"))
    run(client.net.netdev_del("n0"))
    assert "n0" not in run(client.monitor.human_monitor_command("info network"))


def test_netdev_add_by_fds_refused_for_a_pipe(start: Start) -> None:
    # Without CAP_NET_ADMIN there is no tap to pass; a pipe shows the descriptors
    # arrive (QEMU inspects them) and the error of netdev_add comes back.
    client = start()
    r, w = os.pipe()
    try:
        with pytest.raises(CommandError) as info:
            run(client.net.netdev_add_by_fds("tap", "n0", [w]))
    finally:
        os.close(r)
        os.close(w)
    assert info.value.command == "netdev_add"
    assert "TUNGETIFF" in info.value.desc


def test_chardev_unix_socket(start: Start, tmp_path: Path) -> None:
    client = start()
    path = str(tmp_path / "c0.sock")
    run(client.chardev.chardev_unix_socket_add("c0", path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)  # QEMU listens there
    # A client chardev connects to our listener.
    listener_path = str(tmp_path / "l.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(listener_path)
        listener.listen(1)
        run(client.chardev.chardev_unix_socket_add("c1", listener_path, server=False))
        conn, _ = listener.accept()
        conn.close()
    run(client.chardev.chardev_del("c0"))
    run(client.chardev.chardev_del("c1"))
    with pytest.raises(CommandError):
        run(client.chardev.chardev_del("c0"))


# -------------------------------------------------------------------- fd passing
def test_getfd_closefd_add_fd_remove_fd(start: Start) -> None:
    client = start()
    r, w = os.pipe()
    try:
        run(client.fds.getfd("mine", w))
        run(client.fds.closefd("mine"))
        with pytest.raises(CommandError):
            run(client.fds.closefd("mine"))
        info = run(client.fds.add_fd(w, opaque="pipe"))
        assert isinstance(info, AddFdInfo)
        fdsets = run(client.execute("query-fdsets"))
        (entry,) = [s for s in fdsets if s["fdset-id"] == info.fdset_id]
        assert entry["fds"] == [{"fd": info.fd, "opaque": "pipe"}]
        # Accepted; QEMU 7.2 keeps the set listed while the VM is paused (QMP-NOTES.md).
        assert run(client.fds.remove_fd(info.fdset_id, fd=info.fd)) is None
        with pytest.raises(CommandError):  # no such set
            run(client.fds.remove_fd(info.fdset_id + 100))
    finally:
        os.close(r)
        os.close(w)


# -------------------------------------------------------------------- cpu, memory
def test_cpus(start: Start) -> None:
    client = start("-smp", "1,maxcpus=4")
    slots = run(client.cpu.query_hotpluggable_cpus())
    assert len(slots) == 4 and all(isinstance(s, HotpluggableCPU) for s in slots)
    assert sum(s.qom_path is not None for s in slots) == 1
    cpus = run(client.cpu.query_cpus())
    assert len(cpus) == 1 and isinstance(cpus[0], CPUInfo)
    assert cpus[0].target == "x86_64" and cpus[0].thread_id > 0
    free = next(s for s in slots if s.qom_path is None)
    p = free.properties
    run(client.cpu.cpu_device_add(free.type, "cpu1", socket_id=p.socket, core_id=p.core,
                                  thread_id=p.thread, die_id=p.die, node_id=p.node))
    cpus = run(client.cpu.query_cpus())
    assert [c.qom_path for c in cpus][-1] == "/machine/peripheral/cpu1"
    assert cpus[-1].props == p
    assert sum(s.qom_path is not None for s in run(client.cpu.query_hotpluggable_cpus())) == 2


def test_memory_hotplug_and_rollback(start: Start) -> None:
    client = start(memory="64,slots=2,maxmem=1G")
    assert run(client.memory.query_memory_devices()) == []
    run(client.memory.hotplug_memory("memory-backend-ram", "mem0", 128))
    (dimm,) = run(client.memory.query_memory_devices())
    assert isinstance(dimm, MemoryDevice) and dimm.type == "dimm"
    assert dimm.data["id"] == "dimmmem0" and dimm.data["size"] == 128 << 20
    assert dimm.data["memdev"] == "/objects/mem0"
    with pytest.raises(CommandError) as info:
        run(client.memory.memdev_add("memory-backend-ram", "mem1", 64, driver="no-such-dimm",
                                     driver_id="dimm1"))
    assert info.value.command == "device_add"
    objects = {p.name for p in run(client.qom.qom_list("/objects"))}
    assert "mem0" in objects and "mem1" not in objects  # rolled back


# ----------------------------------------------------------------- queries, other
def test_qom(start: Start) -> None:
    client = start()
    props = run(client.qom.qom_list("/machine"))
    assert ObjectProperty("type", "string") in [ObjectProperty(p.name, p.type) for p in props]
    assert run(client.qom.qom_get("/machine", "type")).startswith("pc-i440fx-")
    run(client.qom.qom_set("/machine", "dump-guest-core", False))
    assert run(client.qom.qom_get("/machine", "dump-guest-core")) is False
    with pytest.raises(CommandError):
        run(client.qom.qom_get("/machine", "no-such-property"))


def test_balloon(start: Start) -> None:
    client = start()
    with pytest.raises(CommandError) as info:
        run(client.vm.balloon(32 << 20))
    assert info.value.error_class == "DeviceNotActive"
    client = start("-device", "virtio-balloon-pci,id=balloon0")
    assert run(client.vm.balloon(32 << 20)) is None  # accepted; no guest to act on it


def test_human_monitor_command_and_schema(start: Start) -> None:
    client = start()
    out = run(client.monitor.human_monitor_command("info version"))
    assert client.version is not None
    assert out.startswith(f"{client.version.major}.{client.version.minor}.")
    schema = run(client.monitor.query_qmp_schema())
    names = {e["name"] for e in schema if e.get("meta-type") == "command"}
    assert {"blockdev-add", "device_del", "query-cpus-fast"} <= names
    assert run(client.migration.query_migrate()).status is None


def test_dump_guest_memory(start: Start, tmp_path: Path) -> None:
    client = start(memory="16")
    target = tmp_path / "vm.elf"
    run(client.vm.dump_guest_memory(f"file:{target}", False, format="elf"))
    with open(target, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_migration_to_a_file(start: Start, tmp_path: Path) -> None:
    client = start()
    target = tmp_path / "vm.migration"
    run(client.migration.migrate_set_capabilities({"events": True}))
    assert run(client.migration.migrate_and_wait(f"exec:cat > {target}")) == "completed"
    assert target.stat().st_size > 0
    info = run(client.migration.query_migrate())
    assert info.status == "completed" and "ram" in info.raw
    # Over already: wait_migration learns it from query-migrate.
    assert run(client.migration.wait_migration(timeout=WAIT)) == "completed"
    # QEMU moves through finish-migrate to postmigrate after the MIGRATION event.
    status = run(client.vm.query_status())
    assert status.status in ("finish-migrate", "postmigrate") and not status.running
