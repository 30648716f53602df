"""Every typed operation against every captured QEMU release, 5.0.0 to 11.1.3.

Each case runs one typed operation on a client connected to
``FakeQMPServer(qemu_version=RELEASE)``, which refuses what that release's schema
does not accept, and ``device_add`` properties its captured device property lists
lack (``qmplex.testing.captured``). A case ends one of two ways:

- ``ok``: every command was accepted (checked again here against the release's
  schema and device property lists, independently of the server);
- ``refused``: the operation raised ValidationError before sending anything, with a
  message naming the release (``QEMU 8.2.0``), because that QEMU cannot express the
  request.

Which of the two each case must end with, per release, is written down in
:data:`CASES`; the table of outcomes is what docs/guide.md's "QEMU versions"
section summarises (``python -m tests.test_version_matrix`` prints it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from qmplex import Client, Reactor
from qmplex.errors import CommandError, ValidationError
from qmplex.futures import Future
from qmplex.ops import BlockDevice, LazyNamespace, Namespace
from qmplex.testing import CAPTURED_QEMU_VERSIONS, FakeQMPServer, captured_release

WAIT = 5.0

# Commands the fake server does not emulate, and their answers (given after the
# release's checks). device_add is answered without the emulated QEMU 7.2's checks of
# the nodes, netdevs and chardevs it names.
_SCRIPTED: dict[str, Any] = {
    "device_add": {}, "dump-guest-memory": {}, "balloon": {}, "migrate-incoming": {},
    "query-memory-devices": [], "object-del": {},
}


@dataclass
class Ctx:
    client: Client
    server: FakeQMPServer
    fd: int  # an open descriptor (a pipe's write end)


Op = Callable[[Ctx], "Future[Any]"]


def _since(major: int, minor: int) -> Callable[[tuple[int, int, int]], str]:
    def expect(version: tuple[int, int, int]) -> str:
        return "ok" if version[:2] >= (major, minor) else "refused"

    return expect


def _always(version: tuple[int, int, int]) -> str:
    return "ok"


def _chain(first: Future[Any], then: Callable[[], Future[Any]]) -> Future[Any]:
    return first.chain(lambda _: then())


def _device_del(c: Ctx) -> Future[Any]:
    c.server.on("device_del", returns={}, events=[
        ("DEVICE_DELETED", {"device": "d0", "path": "/machine/peripheral/d0"})])
    return c.client.devices.device_del("d0")


def _migrate_and_wait(c: Ctx) -> Future[Any]:
    c.server.on("migrate", returns={}, events=[("MIGRATION", {"status": "completed"})])
    return c.client.migration.migrate_and_wait("exec:cat > /dev/null")


def _wait_migration(c: Ctx) -> Future[Any]:
    c.server.on("query-migrate", returns={"status": "completed"})
    return c.client.migration.wait_migration(timeout=WAIT)


_BLK: dict[str, Any] = {"discard": True, "iothread": "io0", "logical_block_size": 4096,
                        "physical_block_size": 4096}

#: (case, the operation it runs, what the operation is, expected outcome by release)
CASES: list[tuple[str, str, Op, Callable[[tuple[int, int, int]], str]]] = [
    # client.vm
    ("vm.stop", "vm.stop", lambda c: c.client.vm.stop(), _always),
    ("vm.cont", "vm.cont", lambda c: c.client.vm.cont(), _always),
    ("vm.system_reset", "vm.system_reset", lambda c: c.client.vm.system_reset(), _always),
    ("vm.system_powerdown", "vm.system_powerdown",
     lambda c: c.client.vm.system_powerdown(), _always),
    ("vm.query_status", "vm.query_status", lambda c: c.client.vm.query_status(), _always),
    ("vm.balloon", "vm.balloon", lambda c: c.client.vm.balloon(1 << 30), _always),
    ("vm.dump_guest_memory", "vm.dump_guest_memory",
     lambda c: c.client.vm.dump_guest_memory("file:/tmp/vm.dump", False, format="elf"), _always),
    ("vm.quit", "vm.quit", lambda c: c.client.vm.quit(), _always),
    # client.monitor
    ("monitor.query_qmp_schema", "monitor.query_qmp_schema",
     lambda c: c.client.monitor.query_qmp_schema(), _always),
    ("monitor.human_monitor_command", "monitor.human_monitor_command",
     lambda c: c.client.monitor.human_monitor_command("info version", cpu_index=0), _always),
    # client.block
    ("block.add", "block.add",
     lambda c: c.client.block.add(BlockDevice(node_name="b0", path="/nonexistent/b0.img")),
     _always),
    ("block.add(aio native, discard, cache)", "block.add",
     lambda c: c.client.block.add(BlockDevice(
         node_name="b0", path="/nonexistent/b0.img", read_only=True, aio="native",
         discard=True, direct=True, no_flush=False)), _always),
    ("block.add(aio io_uring, host_device)", "block.add",
     lambda c: c.client.block.add(BlockDevice(
         node_name="b0", path="/dev/qmplex-none", protocol="host_device", aio="io_uring")),
     _always),
    ("block.blockdev_add", "block.blockdev_add",
     lambda c: c.client.block.blockdev_add("/nonexistent/b0.img", "b0", read_only=True),
     _always),
    ("block.blockdev_add_with_cache", "block.blockdev_add_with_cache",
     lambda c: c.client.block.blockdev_add_with_cache("/nonexistent/b0.img", "b0", True, False),
     _always),
    ("block.blockdev_add_with_driver_cache", "block.blockdev_add_with_driver_cache",
     lambda c: c.client.block.blockdev_add_with_driver_cache(
         "host_cdrom", "/dev/sr0", "b0", False, True, read_only=True), _always),
    ("block.blockdev_del", "block.blockdev_del", lambda c: _chain(
        c.client.block.add(BlockDevice(node_name="b0", path="/nonexistent/b0.img")),
        lambda: c.client.block.blockdev_del("b0")), _always),
    # client.devices
    ("devices.device_add(virtio-blk-pci)", "devices.device_add",
     lambda c: c.client.devices.device_add("b0", "d0", "virtio-blk-pci", bus="pci.0",
                                           romfile="", shared=True, disable_modern=True,
                                           **_BLK), _always),
    ("devices.device_add(scsi-hd)", "devices.device_add",
     lambda c: c.client.devices.device_add("b0", "d0", "scsi-hd", bus="scsi0.0", shared=True,
                                           logical_block_size=512, physical_block_size=4096),
     _always),
    ("devices.device_add(virtio-blk-ccw)", "devices.device_add",
     lambda c: c.client.devices.device_add("b0", "d0", "virtio-blk-ccw", devno="fe.0.0001"),
     _always),
    ("devices.scsi_device_add", "devices.scsi_device_add",
     lambda c: c.client.devices.scsi_device_add(
         "b0", "d0", "scsi-hd", "scsi0.0", scsi_id=1, lun=2, shared=True,
         logical_block_size=4096, physical_block_size=4096), _always),
    ("devices.pci_device_add", "devices.pci_device_add",
     lambda c: c.client.devices.pci_device_add(
         "b0", "d0", "virtio-blk-pci", addr="0x5", bus="rp0", queues=4, shared=True,
         romfile="", disable_modern=True, **_BLK), _always),
    ("devices.pci_vhost_user_device_add", "devices.pci_vhost_user_device_add",
     lambda c: c.client.devices.pci_vhost_user_device_add(
         "fs0", driver="vhost-user-fs-pci", chardev_id="char0", addr="0x6", bus="rp0"),
     _always),
    ("devices.net_pci_device_add", "devices.net_pci_device_add",
     lambda c: c.client.devices.net_pci_device_add(
         "n0", "nic0", mac="52:54:00:12:34:56", addr="0x3", bus="rp0", romfile="", queues=4,
         disable_modern=True), _always),
    ("devices.net_ccw_device_add", "devices.net_ccw_device_add",
     lambda c: c.client.devices.net_ccw_device_add("n0", "nic0", devno="fe.0.0002",
                                                   mac="52:54:00:12:34:56", queues=2), _always),
    ("devices.pci_vsock_add", "devices.pci_vsock_add",
     lambda c: c.client.devices.pci_vsock_add("vsock0", 3, vhostfd=c.fd, addr="0x9", bus="rp0",
                                              romfile="", disable_modern=True), _always),
    ("devices.virt_serial_port_add", "devices.virt_serial_port_add",
     lambda c: c.client.devices.virt_serial_port_add("port0", chardev_id="char0",
                                                     name="org.qemu.guest_agent.0",
                                                     bus="vser0.0"), _always),
    ("devices.device_del", "devices.device_del", _device_del, _always),
    # client.vfio
    ("vfio.vfio_device_add", "vfio.vfio_device_add",
     lambda c: c.client.vfio.vfio_device_add("v0", "0000:01:00.0", bus="rp0", romfile=""),
     _always),
    ("vfio.vfio_device_add(iommufd)", "vfio.vfio_device_add",
     lambda c: c.client.vfio.vfio_device_add("v0", "0000:01:00.0", iommufd="iommufd0"),
     _since(9, 0)),
    ("vfio.pci_vfio_device_add", "vfio.pci_vfio_device_add",
     lambda c: c.client.vfio.pci_vfio_device_add("v0", "0000:01:00.0", addr="0x7", bus="rp0",
                                                 romfile=""), _always),
    ("vfio.pci_vfio_mediated_device_add", "vfio.pci_vfio_mediated_device_add",
     lambda c: c.client.vfio.pci_vfio_mediated_device_add(
         "m0", "/sys/bus/mdev/devices/u0", addr="0x8", bus="rp0", romfile=""), _always),
    ("vfio.ccw_vfio_device_add", "vfio.ccw_vfio_device_add",
     lambda c: c.client.vfio.ccw_vfio_device_add("c0", "/sys/bus/mdev/devices/u1",
                                                 devno="fe.0.1234"), _always),
    ("vfio.ap_vfio_mediated_device_add(iommufd)", "vfio.ap_vfio_mediated_device_add",
     lambda c: c.client.vfio.ap_vfio_mediated_device_add(
         "/sys/devices/vfio_ap/matrix/u2", dev_id="ap0", iommufd="iommufd1"), _since(9, 0)),
    ("vfio.ap_vfio_mediated_device_add", "vfio.ap_vfio_mediated_device_add",
     lambda c: c.client.vfio.ap_vfio_mediated_device_add("/sys/devices/vfio_ap/matrix/u2"),
     _always),
    # client.cpu
    ("cpu.cpu_device_add", "cpu.cpu_device_add",
     lambda c: c.client.cpu.cpu_device_add("qemu64-x86_64-cpu", "cpu1", socket_id=1, die_id=0,
                                           core_id=0, thread_id=0), _always),
    ("cpu.query_hotpluggable_cpus", "cpu.query_hotpluggable_cpus",
     lambda c: c.client.cpu.query_hotpluggable_cpus(), _always),
    ("cpu.query_cpus", "cpu.query_cpus", lambda c: c.client.cpu.query_cpus(), _always),
    # client.memory
    ("memory.memdev_add", "memory.memdev_add",
     lambda c: c.client.memory.memdev_add("memory-backend-file", "mem0", 128,
                                          mem_path="/dev/hugepages", share=True,
                                          driver="virtio-mem-pci", driver_id="vmem0",
                                          addr="0x4", bus="rp0"), _always),
    ("memory.hotplug_memory", "memory.hotplug_memory",
     lambda c: c.client.memory.hotplug_memory("memory-backend-ram", "mem0", 128), _always),
    ("memory.nvdimm_device_add", "memory.nvdimm_device_add",
     lambda c: c.client.memory.nvdimm_device_add("0", "/var/lib/nv.img", 1 << 30), _always),
    ("memory.nvdimm_device_add(pmem)", "memory.nvdimm_device_add",
     lambda c: c.client.memory.nvdimm_device_add("0", "/var/lib/nv.img", 1 << 30, pmem=True),
     _always),
    ("memory.query_memory_devices", "memory.query_memory_devices",
     lambda c: c.client.memory.query_memory_devices(), _always),
    # client.net
    ("net.netdev_add(tap)", "net.netdev_add",
     lambda c: c.client.net.netdev_add("tap", "n0", ifname="tap0", queues=4, vhost=True,
                                       vnet_hdr=True), _always),
    ("net.netdev_add(user)", "net.netdev_add",
     lambda c: c.client.net.netdev_add("user", "n0", ipv6_prefix="fd00::",
                                       hostfwd=[{"str": "tcp::2222-:22"}]), _always),
    ("net.netdev_chardev_add", "net.netdev_chardev_add",
     lambda c: c.client.net.netdev_chardev_add("vhost-user", "n0", "char0", queues=2), _always),
    ("net.netdev_add_by_fds", "net.netdev_add_by_fds",
     lambda c: c.client.net.netdev_add_by_fds("tap", "n0", [c.fd, c.fd], vhost_fds=[c.fd]),
     _always),
    ("net.netdev_add_by_fds(names)", "net.netdev_add_by_fds",
     lambda c: c.client.net.netdev_add_by_fds("tap", "n0", ["tap0", "tap1"],
                                              vhost_fds=["vhost0", "vhost1"]), _always),
    ("net.netdev_del", "net.netdev_del", lambda c: _chain(
        c.client.net.netdev_add("user", "n0"), lambda: c.client.net.netdev_del("n0")), _always),
    # client.chardev
    ("chardev.chardev_unix_socket_add", "chardev.chardev_unix_socket_add",
     lambda c: c.client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", wait=False),
     _always),
    ("chardev.chardev_unix_socket_add(reconnect=2)", "chardev.chardev_unix_socket_add",
     lambda c: c.client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False,
                                                        reconnect=2), _always),
    ("chardev.chardev_unix_socket_add(reconnect_ms=1500)", "chardev.chardev_unix_socket_add",
     lambda c: c.client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock", server=False,
                                                        reconnect_ms=1500), _since(9, 2)),
    ("chardev.chardev_del", "chardev.chardev_del", lambda c: _chain(
        c.client.chardev.chardev_unix_socket_add("c0", "/run/c0.sock"),
        lambda: c.client.chardev.chardev_del("c0")), _always),
    # client.fds
    ("fds.getfd", "fds.getfd", lambda c: c.client.fds.getfd("fd0", c.fd), _always),
    ("fds.closefd", "fds.closefd", lambda c: _chain(
        c.client.fds.getfd("fd0", c.fd), lambda: c.client.fds.closefd("fd0")), _always),
    ("fds.add_fd", "fds.add_fd",
     lambda c: c.client.fds.add_fd(c.fd, fdset_id=1, opaque="rw"), _always),
    ("fds.remove_fd", "fds.remove_fd", lambda c: _chain(
        c.client.fds.add_fd(c.fd, fdset_id=1), lambda: c.client.fds.remove_fd(1)), _always),
    # client.migration
    ("migration.migrate_set_capabilities", "migration.migrate_set_capabilities",
     lambda c: c.client.migration.migrate_set_capabilities({"events": True}), _always),
    ("migration.migrate", "migration.migrate",
     lambda c: c.client.migration.migrate("exec:cat > /dev/null"), _always),
    ("migration.migrate_incoming", "migration.migrate_incoming",
     lambda c: c.client.migration.migrate_incoming("tcp:0:4444"), _always),
    ("migration.migrate_and_wait", "migration.migrate_and_wait", _migrate_and_wait, _always),
    ("migration.wait_migration", "migration.wait_migration", _wait_migration, _always),
    ("migration.query_migrate", "migration.query_migrate",
     lambda c: c.client.migration.query_migrate(), _always),
    # client.qom
    ("qom.qom_set", "qom.qom_set", lambda c: c.client.qom.qom_set("/machine", "x", 1), _always),
    ("qom.qom_get", "qom.qom_get", lambda c: c.client.qom.qom_get("/machine", "type"), _always),
    ("qom.qom_list", "qom.qom_list", lambda c: c.client.qom.qom_list("/machine"), _always),
]

#: Operations with no case of their own, and why.
NOT_IN_MATRIX = {
    # On a negotiated connection QEMU always refuses it (CommandNotFound): nothing to vary.
    "monitor.qmp_capabilities",
}


@dataclass
class Outcome:
    result: str  # "ok" or "refused"
    detail: str  # the refusal's message, or ""
    sent: list[tuple[str, dict[str, Any]]]  # the commands received after negotiation


@pytest.fixture
def pipe() -> Iterator[int]:
    r, w = os.pipe()
    yield w
    os.close(r)
    os.close(w)


def run_case(reactor: Reactor, version: str, op: Op, fd: int) -> Outcome:
    """Run one operation against the fake server as ``version``; return its outcome.

    Raises:
        AssertionError: the operation failed in any other way than a refusal before
            sending (e.g. the server, as that release, refused a command).
    """
    server = FakeQMPServer(reactor=reactor, qemu_version=version)
    for command, answer in _SCRIPTED.items():
        server.on(command, returns=answer)
    client = Client(reactor)
    try:
        client.connect_socket(server.connect_pair()).result(timeout=WAIT)
        try:
            fut = op(Ctx(client, server, fd))
        except ValidationError as exc:
            sent = _sent(server)
            assert sent == [], f"refused after sending {sent}"
            return Outcome("refused", str(exc), sent)
        try:
            value = fut.result(timeout=WAIT)
        except CommandError as exc:
            raise AssertionError(f"QEMU {version} refused {exc.command}: {exc.desc}") from exc
        assert not isinstance(value, BaseException)
        return Outcome("ok", "", _sent(server))
    finally:
        client.close()
        server.close()


def _sent(server: FakeQMPServer) -> list[tuple[str, dict[str, Any]]]:
    return [(str(m.get("execute")), dict(m.get("arguments") or {}))
            for m in server.received[1:]]


def _check_against_the_release(version: str, sent: list[tuple[str, dict[str, Any]]]) -> None:
    """Independently of the server: each command is in the release's schema and
    validates against it; a device_add of a captured type sends only its properties."""
    release = captured_release(version)
    for name, args in sent:
        assert release.schema.has_command(name), f"{name} is not in QEMU {version}"
        release.schema.validate(name, args)
        if name == "device_add":
            driver = args["driver"]
            for prop in args:
                assert release.device_accepts(driver, prop) is not False, (
                    f"QEMU {version}: {driver} has no property {prop!r}")


@pytest.mark.parametrize("version", CAPTURED_QEMU_VERSIONS)
@pytest.mark.parametrize("case, operation, op, expect", CASES, ids=[c[0] for c in CASES])
def test_operation_on_release(reactor: Reactor, pipe: int, version: str, case: str,
                              operation: str, op: Op,
                              expect: Callable[[tuple[int, int, int]], str]) -> None:
    outcome = run_case(reactor, version, op, pipe)
    assert outcome.result == expect(captured_release(version).version), outcome.detail
    if outcome.result == "refused":
        assert f"QEMU {version}" in outcome.detail  # the refusal names the version
    else:
        assert outcome.sent, "the operation sent nothing"
        _check_against_the_release(version, outcome.sent)


def _operations() -> set[str]:
    """Every public method of every namespace of Client (``vm.stop`` ...)."""
    found: set[str] = set()
    for attr, lazy in vars(Client).items():
        if isinstance(lazy, LazyNamespace):
            assert issubclass(lazy.cls, Namespace)
            found.update(f"{attr}.{name}" for name, member in vars(lazy.cls).items()
                         if not name.startswith("_") and callable(member))
    return found


def test_the_matrix_covers_every_operation() -> None:
    covered = {operation for _, operation, _, _ in CASES}
    assert covered | NOT_IN_MATRIX == _operations()
    assert not covered & NOT_IN_MATRIX


def test_cases_name_their_operation() -> None:
    for case, operation, _, _ in CASES:
        assert case == operation or case.startswith(f"{operation}("), case


def test_qmp_capabilities_on_every_release(reactor: Reactor, pipe: int) -> None:
    for version in CAPTURED_QEMU_VERSIONS:
        with pytest.raises(AssertionError, match="CommandNotFound|refused qmp_capabilities"):
            run_case(reactor, version, lambda c: c.client.monitor.qmp_capabilities(), pipe)


def test_version_dependent_forms(reactor: Reactor, pipe: int) -> None:
    """The forms chosen by version, as they reach each release."""
    for version in CAPTURED_QEMU_VERSIONS:
        v = captured_release(version).version
        out = run_case(reactor, version, lambda c: c.client.chardev.chardev_unix_socket_add(
            "c0", "/run/c0.sock", server=False, reconnect=2), pipe)
        data = out.sent[0][1]["backend"]["data"]
        if v >= (9, 2, 0):  # reconnect-ms from 9.2 (reconnect deprecated, gone in 11.x)
            assert data["reconnect-ms"] == 2000 and "reconnect" not in data
        else:
            assert data["reconnect"] == 2 and "reconnect-ms" not in data
        out = run_case(reactor, version, lambda c: c.client.cpu.query_cpus(), pipe)
        assert out.sent == [("query-cpus-fast", {})]  # also where query-cpus exists (< 6.0)
        out = run_case(reactor, version, lambda c: c.client.memory.hotplug_memory(
            "memory-backend-ram", "m0", 1), pipe)
        assert out.sent[0] == ("object-add", {"qom-type": "memory-backend-ram", "id": "m0",
                                              "size": 1 << 20})  # flat from 5.0 on


# ---------------------------------------------------------------- the table
def matrix() -> dict[str, dict[str, str]]:
    """case -> release -> "ok" / "refused" (runs every case; for the report)."""
    reactor = Reactor()
    r, w = os.pipe()
    try:
        table: dict[str, dict[str, str]] = {}
        for case, _, op, _ in CASES:
            table[case] = {v: run_case(reactor, v, op, w).result
                           for v in CAPTURED_QEMU_VERSIONS}
        return table
    finally:
        os.close(r)
        os.close(w)
        reactor.close()


def _print_matrix() -> None:
    table = matrix()
    short = [v.rsplit(".0", 1)[0] if v.endswith(".0") else v for v in CAPTURED_QEMU_VERSIONS]
    width = max(len(c) for c in table)
    print(f"{'operation':<{width}} | " + " | ".join(short))
    for case, row in table.items():
        cells = ["ok" if row[v] == "ok" else "--" for v in CAPTURED_QEMU_VERSIONS]
        print(f"{case:<{width}} | " + " | ".join(f"{c:<{len(s)}}" for c, s in zip(
            cells, short, strict=True)))


if __name__ == "__main__":  # python -m tests.test_version_matrix
    _print_matrix()
    sys.exit(0)
