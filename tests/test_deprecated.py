"""The deprecated names of qmplex 0.1: ``client.stop()`` ... and ``qmplex.operations``.

Each flat ``Client`` method must warn, naming its replacement, and forward its
arguments unchanged to ``client.<namespace>.<name>``; the table of aliases must cover
every operation of every namespace. Runs with no server: the namespace an alias
forwards to is replaced by a recorder.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

import pytest

import qmplex
from qmplex import Client, Future, Reactor, StatusInfo
from qmplex.ops import DeprecatedAlias, DeprecatedOperations, LazyNamespace, Namespace

from .recorder import Recorder


def _aliases() -> dict[str, DeprecatedAlias[Any, Any]]:
    return {name: value for name, value in vars(DeprecatedOperations).items()
            if isinstance(value, DeprecatedAlias)}


def _namespaces() -> dict[str, LazyNamespace[Any]]:
    return {name: value for name, value in vars(Client).items()
            if isinstance(value, LazyNamespace)}


ALIASES = sorted(_aliases())


class Forwarded:
    """Stands in for a namespace: records the call and returns a marker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def _record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return f"result of {name}"

        return _record


@pytest.fixture
def idle_client() -> Any:
    client = Client(Reactor())
    yield client
    client.close()
    client.reactor.close()


@pytest.mark.parametrize("name", ALIASES)
def test_alias_warns_and_forwards(idle_client: Client, name: str) -> None:
    alias = _aliases()[name]
    namespace = alias.namespace
    stand_in = Forwarded()
    vars(idle_client)[namespace] = stand_in  # where client.<namespace> is cached
    marker = object()
    message = f"Client.{name}() is deprecated; use client.{namespace}.{name}()"
    legacy = alias.legacy
    args = (1, "two", marker)[:3 if legacy is None else len(legacy.positional)]
    with pytest.warns(DeprecationWarning, match=re.escape(message)) as caught:
        result = getattr(idle_client, name)(*args, timeout=3.0, extra=marker)
    assert result == f"result of {name}"
    if legacy is None:  # the same arguments
        assert stand_in.calls == [(name, args, {"timeout": 3.0, "extra": marker})]
    else:  # 0.1's positional arguments, by name
        named = dict(zip(legacy.positional, args, strict=False))
        assert stand_in.calls == [(name, (), {**named, "timeout": 3.0, "extra": marker})]
    # The warning points at the caller, not at qmplex.
    assert [w.filename for w in caught] == [__file__]


def test_legacy_alias_refuses_too_many_or_repeated_arguments(idle_client: Client) -> None:
    vars(idle_client)["vm"] = Forwarded()
    powerdown: Any = idle_client.system_powerdown  # 0.1's form: not the current signature
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="at most 1"):
        powerdown("POWERDOWN", "SHUTDOWN")
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="multiple values"):
        powerdown("POWERDOWN", until="SHUTDOWN")


def test_aliases_cover_every_operation_once() -> None:
    namespaces = _namespaces()
    assert set(namespaces) == {"vm", "monitor", "block", "devices", "vfio", "cpu", "memory",
                               "net", "chardev", "fds", "migration", "qom"}
    operations: dict[str, str] = {}
    for attr, lazy in namespaces.items():
        assert issubclass(lazy.cls, Namespace)
        for name, member in vars(lazy.cls).items():
            if not name.startswith("_") and inspect.isfunction(member):
                assert name not in operations, f"{name} is in two namespaces"
                operations[name] = attr
    # Operations added after 0.1 have no flat name to keep.
    new = {"add": "block", "ccw_vfio_device_add": "vfio"}
    assert len(operations) == 56
    assert {name: alias.namespace for name, alias in _aliases().items()} == {
        name: attr for name, attr in operations.items() if name not in new}
    assert {name: operations[name] for name in new} == new


def test_alias_on_the_class_is_the_old_method() -> None:
    from qmplex.ops import DeviceOps

    old = Client.scsi_device_add
    assert inspect.signature(old) == inspect.signature(DeviceOps.scsi_device_add)
    assert old.__doc__ is not None
    assert old.__doc__.startswith("Deprecated: use ``client.devices.scsi_device_add()``.")
    assert "scsi-id" in old.__doc__  # followed by the namespace method's own docstring


def test_alias_through_the_class_warns_and_forwards(idle_client: Client) -> None:
    stand_in = Forwarded()
    vars(idle_client)["vm"] = stand_in
    with pytest.warns(DeprecationWarning, match=re.escape("use client.vm.stop()")):
        Client.stop(idle_client, timeout=1.0)
    assert stand_in.calls == [("stop", (), {"timeout": 1.0})]


def test_alias_name_must_match_its_method() -> None:
    from qmplex.ops import VMOps

    # Python 3.11 wraps an error of __set_name__ in a RuntimeError; 3.12 does not.
    with pytest.raises((RuntimeError, TypeError)) as info:
        type("Bad", (), {"halt": DeprecatedAlias("vm", VMOps.stop)})
    assert "keeps its method's name" in str(info.value.__cause__ or info.value)


def test_flat_names_still_reach_the_peer(idle_client: Client) -> None:
    """Without a stand-in, an alias runs the real operation (here: refused, not
    connected, which shows it reached Client.execute)."""
    with pytest.warns(DeprecationWarning), pytest.raises(qmplex.StateError):
        idle_client.query_status()


def _typing_of_aliases(client: Client) -> None:
    """Never run: mypy --strict checks the aliases against the real signatures (each
    ignore below must be needed, or mypy reports it as unused)."""
    fut: Future[StatusInfo] = client.query_status(timeout=1.0)
    bad: int = client.query_status()  # type: ignore[assignment]
    client.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0", scsi_id="1")  # type: ignore[arg-type]
    client.blockdev_del("b0", node="b0")  # type: ignore[call-arg]
    client.netdev_add("user", "n0", ipv6_prefix="fd00::")  # **extra is kept
    del fut, bad


# ------------------------------------------------------------- qmplex.operations
@pytest.mark.parametrize("name, new", [
    ("wire_name", qmplex.ops.wire_name),
    ("SCSI_DRIVERS", qmplex.ops.SCSI_DRIVERS),
    ("MIGRATION_FINAL_STATES", qmplex.ops.MIGRATION_FINAL_STATES),
    ("StatusInfo", qmplex.StatusInfo),
    ("AddFdInfo", qmplex.AddFdInfo),
    ("CPUInfo", qmplex.CPUInfo),
    ("CPUProperties", qmplex.CPUProperties),
    ("HotpluggableCPU", qmplex.HotpluggableCPU),
    ("MemoryDevice", qmplex.MemoryDevice),
    ("MigrationInfo", qmplex.MigrationInfo),
    ("ObjectProperty", qmplex.ObjectProperty),
])
def test_old_module_names_warn(name: str, new: object) -> None:
    import qmplex.operations as old

    with pytest.warns(DeprecationWarning, match=f"qmplex.operations.{name} is deprecated"):
        assert getattr(old, name) is new
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def _old_operations() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from qmplex.operations import Operations
    return Operations


def test_operations_needs_execute() -> None:
    operations = _old_operations()
    with pytest.warns(DeprecationWarning), \
            pytest.raises(NotImplementedError, match="execute"):
        operations().stop()
    with pytest.warns(DeprecationWarning), \
            pytest.raises(NotImplementedError, match="wait_event"):
        operations().wait_migration()


def test_operations_over_a_custom_execute() -> None:
    """The old Operations is usable over any execute(): here one that records and
    answers {}."""

    class OldRecorder(Recorder, _old_operations()):  # type: ignore[misc]
        """Recorder's execute under the old base's flat methods."""

    rec = OldRecorder()
    assert rec.version is None
    with pytest.warns(DeprecationWarning, match=re.escape("use client.block.blockdev_del()")):
        assert rec.blockdev_del("b0", timeout=2.0).result() is None
    assert rec.sent == [("blockdev-del", {"node-name": "b0"}, {"timeout": 2.0})]
    assert rec.block is rec.block  # the namespaces are there too


# ------------------------------------------------------- calls in 0.1's form
# (a 0.1 call through its flat name, what 0.1 sent for it)
OLD_FORMS: list[tuple[str, tuple[Any, ...], dict[str, Any], str, dict[str, Any] | None]] = [
    ("device_add", ("b0", "d0", "virtio-blk-pci", ""), {}, "device_add",
     {"driver": "virtio-blk-pci", "id": "d0", "drive": "b0"}),
    ("device_add", ("b1", "d1", "virtio-blk-pci", "pci.0"),
     {"romfile": "", "shared": True, "disable_modern": True}, "device_add",
     {"driver": "virtio-blk-pci", "id": "d1", "drive": "b1", "bus": "pci.0", "share-rw": True,
      "romfile": "", "disable-modern": True}),
    ("scsi_device_add", ("b0", "d0", "scsi-hd", "scsi0.0", -1, -1),
     {"romfile": None, "disable_modern": False}, "device_add",
     {"driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0"}),
    ("scsi_device_add", ("b1", "d1", "scsi-cd", "scsi0.0", 3, 0), {"shared": True}, "device_add",
     {"driver": "scsi-cd", "id": "d1", "drive": "b1", "bus": "scsi0.0", "scsi-id": 3, "lun": 0,
      "share-rw": True}),
    ("pci_device_add", ("b1", "d1", "virtio-blk-pci", "02.0", ""), {"queues": 0}, "device_add",
     {"driver": "virtio-blk-pci", "id": "d1", "drive": "b1", "addr": "02.0"}),
    ("pci_vhost_user_device_add", ("char0", "fs0", "vhost-user-fs-pci", "0x6", "bridge0"), {},
     "device_add", {"driver": "vhost-user-fs-pci", "id": "fs0", "chardev": "char0",
                    "addr": "0x6", "bus": "bridge0"}),
    ("net_pci_device_add", ("n1", "nic1", "", "", "bridge0", "", 4, True), {}, "device_add",
     {"driver": "virtio-net-pci", "id": "nic1", "netdev": "n1", "bus": "bridge0",
      "romfile": "", "disable-modern": True, "mq": True, "vectors": 10}),
    ("net_ccw_device_add", ("n2", "nic2", "", "fe.0.0002", 0), {}, "device_add",
     {"driver": "virtio-net-ccw", "id": "nic2", "netdev": "n2", "devno": "fe.0.0002"}),
    ("pci_vsock_add", ("vsock1", 4, "myfd", "0x9", "", True), {}, "device_add",
     {"driver": "vhost-vsock-pci", "id": "vsock1", "guest-cid": 4, "vhostfd": "myfd",
      "addr": "0x9", "disable-modern": True}),
    ("virt_serial_port_add", ("port1", "char1", "com.example.1", ""), {}, "device_add",
     {"driver": "virtserialport", "id": "port1", "chardev": "char1", "name": "com.example.1"}),
    ("vfio_device_add", ("vfio1", "0000:02:00.0", ""), {}, "device_add",
     {"driver": "vfio-pci", "id": "vfio1", "host": "0000:02:00.0", "romfile": ""}),
    ("pci_vfio_device_add", ("vfio2", "0000:03:00.0", "0x7", ""), {}, "device_add",
     {"driver": "vfio-pci", "id": "vfio2", "host": "0000:03:00.0", "addr": "0x7"}),
    ("pci_vfio_mediated_device_add", ("m1", "/sys/bus/mdev/devices/u2", "", "b1", "rom"), {},
     "device_add", {"driver": "vfio-pci", "id": "m1", "sysfsdev": "/sys/bus/mdev/devices/u2",
                    "bus": "b1", "romfile": "rom"}),
    ("cpu_device_add", ("host-x86_64-cpu", "c2", "1", "", "0"), {"die_id": 0, "node_id": "2"},
     "device_add", {"driver": "host-x86_64-cpu", "id": "c2", "socket-id": 1, "die-id": 0,
                    "thread-id": 0, "node-id": 2}),
    ("memdev_add", ("memory-backend-ram", "mem1", "", 64, False, "virtio-mem-pci", "vmem1",
                    "", ""), {}, "object-add",
     {"qom-type": "memory-backend-ram", "id": "mem1", "size": 64 << 20}),
    ("hotplug_memory", ("memory-backend-file", "m2", "/dev/shm/m", 1, True), {}, "object-add",
     {"qom-type": "memory-backend-file", "id": "m2", "size": 1 << 20, "mem-path": "/dev/shm/m",
      "share": True}),
    ("nvdimm_device_add", ("1", "/var/lib/nv1.img", 1 << 30, True), {}, "object-add",
     {"qom-type": "memory-backend-file", "id": "nvdimmbackmem1", "mem-path": "/var/lib/nv1.img",
      "size": 1 << 30, "share": True, "pmem": True}),
    ("netdev_add", ("tap", "n0", "", "no", "no", 0, False), {}, "netdev_add",
     {"type": "tap", "id": "n0", "downscript": "no", "script": "no"}),
    ("netdev_add", ("user", "n1", "", "no", "no", 1), {"ipv6_prefix": "fd00::"}, "netdev_add",
     {"type": "user", "id": "n1", "ipv6-prefix": "fd00::"}),
    ("netdev_add", ("tap", "n3", "tap3", "/etc/down", "/etc/up", 2, True), {}, "netdev_add",
     {"type": "tap", "id": "n3", "ifname": "tap3", "downscript": "/etc/down",
      "script": "/etc/up", "queues": 2, "vhost": True}),
    ("netdev_chardev_add", ("vhost-user", "n0", "char0", 1), {}, "netdev_add",
     {"type": "vhost-user", "id": "n0", "chardev": "char0"}),
    ("chardev_unix_socket_add", ("char1", "/run/c1.sock", True, True), {"reconnect": 0},
     "chardev-add", {"id": "char1", "backend": {"type": "socket", "data": {
         "server": True, "wait": True,
         "addr": {"type": "unix", "data": {"path": "/run/c1.sock"}}}}}),
    ("system_powerdown", ("POWERDOWN",), {}, "system_powerdown", None),
    ("dump_guest_memory", ("file:/tmp/vm.dump", False, "elf"), {}, "dump-guest-memory",
     {"protocol": "file:/tmp/vm.dump", "paging": False, "format": "elf"}),
    ("human_monitor_command", ("info registers", 0), {}, "human-monitor-command",
     {"command-line": "info registers", "cpu-index": 0}),
    ("remove_fd", (7, 3), {}, "remove-fd", {"fdset-id": 7, "fd": 3}),
]


@pytest.mark.parametrize("name, args, kwargs, command, sent", OLD_FORMS,
                         ids=[f"{o[0]}-{i}" for i, o in enumerate(OLD_FORMS)])
def test_calls_in_the_0_1_form_send_what_0_1_sent(
        reactor: Reactor, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        command: str, sent: dict[str, Any] | None) -> None:
    from qmplex.testing import FakeQMPServer

    server = FakeQMPServer(reactor=reactor)
    for cmd in ("device_add", "dump-guest-memory", "remove-fd"):
        server.on(cmd, returns={})
    client = Client(reactor)
    try:
        client.connect_socket(server.connect_pair()).result(timeout=5)
        with pytest.warns(DeprecationWarning):
            getattr(client, name)(*args, **kwargs).result(timeout=5)
        first = server.received[1]
        assert (first["execute"], first.get("arguments")) == (command, sent)
    finally:
        client.close()
        server.close()
