"""QEMU releases 5.0 to 11.1: the captured data, the fake server as one of them.

The typed operations' matrix over every captured release is in
``tests/test_version_matrix.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from qmplex import Client, Reactor
from qmplex.errors import CommandError
from qmplex.testing import (
    CAPTURED_QEMU_VERSIONS,
    FakeQMPServer,
    captured_release,
    fake_server,
)

WAIT = 5.0


@pytest.fixture
def make(reactor: Reactor) -> Iterator[Any]:
    made: list[tuple[FakeQMPServer, Client]] = []

    def _make(**kwargs: Any) -> tuple[FakeQMPServer, Client]:
        server = FakeQMPServer(reactor=reactor, **kwargs)
        client = Client(reactor)
        made.append((server, client))
        client.connect_socket(server.connect_pair()).result(timeout=WAIT)
        return server, client

    yield _make
    for server, client in made:
        client.close()
        server.close()


# ------------------------------------------------------------------ the data
def test_every_captured_release_loads() -> None:
    assert CAPTURED_QEMU_VERSIONS[0] == "5.0.0" and CAPTURED_QEMU_VERSIONS[-1] == "11.1.3"
    assert len(CAPTURED_QEMU_VERSIONS) == 17
    for name in CAPTURED_QEMU_VERSIONS:
        release = captured_release(name)
        assert release.name == name
        assert ".".join(map(str, release.version)) == name
        assert release.query_version["qemu"]["major"] == release.version[0]
        assert release.schema.has_command("device_add")
        assert release.schema.version is not None and str(release.schema.version) == name
        assert {"virtio-blk-pci", "scsi-hd", "vfio-pci", "virtio-net-pci"} <= set(
            release.devices)
        assert captured_release(release.version) is release  # read once
    assert captured_release("11.1").name == "11.1.3"
    assert repr(captured_release("9.2")) == "<CapturedRelease QEMU 9.2.0>"


@pytest.mark.parametrize("bad", ["4.2.0", "9.3", "11", "", "9.2.0.0"])
def test_unknown_release_names_the_captured_ones(bad: str) -> None:
    with pytest.raises(ValueError, match="5.0.0, 5.1.0"):
        captured_release(bad)


def test_device_property_lists_mix_spellings() -> None:
    # Why client.call passes device property names through: QEMU spells them both ways.
    release = captured_release("9.2.0")
    assert release.device_accepts("virtio-net-pci", "host_mtu")
    assert not release.device_accepts("virtio-net-pci", "host-mtu")
    assert release.device_accepts("scsi-hd", "scsi-id")
    assert release.device_accepts("scsi-hd", "logical_block_size")
    assert not release.device_accepts("scsi-hd", "romfile")
    assert release.device_accepts("scsi-hd", "bus")  # device_add's own
    assert release.device_accepts("vhost-vsock-pci", "guest-cid") is None  # not captured
    # libvirt's placeholder for virtio-iommu-pci (5.0 to 6.2) is not QEMU's answer
    assert captured_release("6.2.0").device_accepts("virtio-iommu-pci", "addr") is None
    assert captured_release("7.0.0").device_accepts("virtio-iommu-pci", "addr") is True


# ------------------------------------------------------ the fake as a release
def test_fake_server_greets_and_serves_the_release(make: Any) -> None:
    server, client = make(qemu_version="9.2.0")
    assert server.release is captured_release("9.2.0")
    assert str(client.version) == "9.2.0" and client.version.package == "v9.2.0"
    assert client.execute("query-version").result(WAIT) == {
        "qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "v9.2.0"}
    info = client.execute("query-qmp-schema").result(WAIT)
    assert info == list(captured_release("9.2.0").schema_info)
    schema = client.load_schema(cache=False).result(WAIT)
    assert schema.command_names == captured_release("9.2.0").schema.command_names
    assert client.execute("query-target").result(WAIT) == {"arch": "x86_64"}


def test_fake_server_version_and_package_defaults(make: Any) -> None:
    server, client = make()
    assert str(client.version) == "7.2.0" and client.version.package == "qmplex-fake"
    assert server.release is None
    with pytest.raises(CommandError, match="CommandNotFound"):
        client.execute("query-qmp-schema").result(WAIT)
    _, client = make(qemu_version="5.2", package="Debian 1:5.2+dfsg-11")
    assert str(client.version) == "5.2.0" and client.version.package == "Debian 1:5.2+dfsg-11"
    with pytest.raises(ValueError, match="contradicts"):
        FakeQMPServer(version=(7, 2, 0), qemu_version="9.2.0")
    FakeQMPServer(version=(9, 2, 0), qemu_version="9.2.0").close()


def test_fake_server_lacks_what_the_release_lacks(make: Any) -> None:
    server, client = make(qemu_version="6.0.0")
    with pytest.raises(CommandError) as info:
        client.execute("query-cpus").result(WAIT)  # removed in 6.0
    assert info.value.error_class == "CommandNotFound"
    server5, client5 = make(qemu_version="5.2.0")
    with pytest.raises(CommandError) as info:
        client5.execute("yank", {"instances": []}).result(WAIT)  # emulated, but new in 6.0
    assert info.value.error_class == "CommandNotFound"
    with pytest.raises(CommandError) as info:
        client5.execute("query-cpus").result(WAIT)  # in 5.2, but not emulated: script it
    assert info.value.error_class == "CommandNotFound"
    server5.on("query-cpus", returns=[])
    assert client5.execute("query-cpus").result(WAIT) == []


def test_fake_server_refuses_what_the_release_refuses(make: Any) -> None:
    server, client = make(qemu_version="11.1.3")
    chardev = {"id": "c0", "backend": {"type": "socket", "data": {
        "server": False, "reconnect": 1,
        "addr": {"type": "unix", "data": {"path": "/tmp/x.sock"}}}}}
    with pytest.raises(CommandError) as info:
        client.execute("chardev-add", chardev).result(WAIT)
    assert info.value.error_class == "GenericError"
    assert "reconnect" in info.value.desc
    assert server.chardevs == {}
    with pytest.raises(CommandError, match="Property 'scsi-hd.romfile' not found"):
        client.execute("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0",
                                      "romfile": ""}).result(WAIT)
    # Validation comes before a script, as QEMU checks before the handler runs.
    server.on("migrate", returns={}, events=[("MIGRATION", {"status": "setup"})])
    with pytest.raises(CommandError, match="blk"):
        client.execute("migrate", {"uri": "exec:cat", "blk": True}).result(WAIT)
    assert client.execute("migrate", {"uri": "exec:cat"}).result(WAIT) == {}
    # A device type that was not captured is not checked.
    server.on("device_add", returns={})
    client.execute("device_add", {"driver": "vhost-vsock-pci", "guest-cid": 3}).result(WAIT)


def test_fake_server_oob_commands_follow_the_release(make: Any) -> None:
    server, _ = make(qemu_version="5.0.0")
    assert server.oob_commands == {"migrate-recover", "migrate-pause"}
    server, _ = make(qemu_version="9.2.0", oob_commands=["yank"])
    assert server.oob_commands == {"yank"}


def test_client_call_against_a_release(make: Any) -> None:
    # The example: a free-form property name reaches QEMU as written.
    server, client = make(qemu_version="9.2.0")
    client.load_schema(cache=False).result(WAIT)
    server.on("device_add", returns={})
    client.call.device_add(driver="virtio-net-pci", id="n0", netdev="nd0",
                           host_mtu=9000).result(WAIT)
    assert server.received[-1]["arguments"]["host_mtu"] == 9000


def test_threaded_fake_server_as_a_release() -> None:
    import qmplex

    with fake_server(qemu_version="7.0") as server:
        with qmplex.connect(server.path, timeout=WAIT) as client:
            assert str(client.version) == "7.0.0"
            assert client.load_schema().result(WAIT).has_command("blockdev-reopen")


# ------------------------------------------------------- before the greeting
def test_events_before_the_greeting_are_skipped(make: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # QEMU 4.0-rc2 could send an event before its greeting; govmm skips such lines.
    greeting = (b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\r\n'
                b'{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "STOP"}\r\n'
                b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 5}, '
                b'"package": ""}, "capabilities": ["oob"]}}\r\n')
    with caplog.at_level(logging.INFO, logger="qmplex"):
        server, client = make(greeting=greeting)
    assert str(client.version) == "5.0.0"
    assert client.execute("query-status").result(WAIT)["status"] == "prelaunch"
    assert "skipped 2 event(s) sent before the greeting" in caplog.text


# ------------------------------------- what the operations know of device models
def test_device_model_knowledge_agrees_with_every_release() -> None:
    """The typed operations decide from a model's name whether it has a property
    (qmplex.ops.device_table); every captured property list must agree."""
    from qmplex.ops import device_table as table

    knowledge = [(table.pci, ("addr", "romfile")), (table.virtio_pci, ("disable-modern",)),
                 (table.ccw, ("devno",)), (table.virtio_blk, ("iothread", "discard")),
                 (table.block_sizes, ("logical_block_size", "physical_block_size"))]
    # A DIMM's "addr" is its guest-physical address (a number), not a PCI slot: the
    # rows that send a slot as "addr" never plug DIMMs.
    memory_devices = {"nvdimm", "pc-dimm"}
    checked = 0
    for name in CAPTURED_QEMU_VERSIONS:
        release = captured_release(name)
        for driver, props in release.devices.items():
            for says, wires in knowledge:
                verdict = says(driver)
                if verdict is None:
                    continue
                for wire in wires:
                    if wire == "addr" and driver in memory_devices:
                        assert wire in props  # the address, not a slot
                        continue
                    assert (wire in props) == verdict, (name, driver, wire, verdict)
                    checked += 1
    assert checked > 1000


# ----------------------------------------- what qmplex knows of QEMU's history
def _first(predicate: Any) -> str | None:
    """The first captured release for which ``predicate(schema)`` holds (and holds from
    then on), or None."""
    holds = [predicate(captured_release(v).schema) for v in CAPTURED_QEMU_VERSIONS]
    if True not in holds:
        return None
    start = holds.index(True)
    assert all(holds[start:]), "not monotonic"
    return CAPTURED_QEMU_VERSIONS[start]


@pytest.mark.parametrize("what, predicate, since", [
    ("netdev_add a union", lambda s: not s.is_free_form("netdev_add"), "5.0.0"),
    ("object-add a union", lambda s: not s.is_free_form("object-add"), "6.0.0"),
    ("query-cpus removed", lambda s: not s.has_command("query-cpus"), "6.0.0"),
    ("blockdev-reopen", lambda s: s.has_command("blockdev-reopen"), "6.1.0"),
    ("x-blockdev-reopen removed", lambda s: not s.has_command("x-blockdev-reopen"), "6.1.0"),
    ("set_password's protocol an enum",
     lambda s: s.has_enum_value(("set_password", "protocol"), "vnc"), "7.0.0"),
    ("migrate's channels", lambda s: s.has_argument("migrate", "channels"), "8.2.0"),
    ("iommufd", lambda s: s.has_enum_value(("object-add", "qom-type"), "iommufd"), "9.0.0"),
    ("migrate's blk and inc removed",
     lambda s: not s.has_argument("migrate", "blk") and not s.has_argument("migrate", "inc"),
     "9.1.0"),
    ("reconnect-ms", lambda s: s.has_argument("chardev-add", "backend.data.reconnect-ms"),
     "9.2.0"),
    ("reconnect removed", lambda s: not s.has_argument("chardev-add", "backend.data.reconnect"),
     "11.1.3"),
    ("migrate's detach removed", lambda s: not s.has_argument("migrate", "detach"), "11.1.3"),
    ("query-cpus-fast", lambda s: s.has_command("query-cpus-fast"), "5.0.0"),
    ("aio io_uring", lambda s: s.has_enum_value(("blockdev-add", "file.aio"), "io_uring"),
     "5.0.0"),
])
def test_the_version_history_qmplex_relies_on(what: str, predicate: Any, since: str) -> None:
    assert _first(predicate) == since, what


def test_feature_table_matches_the_schemas() -> None:
    from qmplex.ops import versions

    for feature in (versions.RECONNECT_MS, versions.IOMMUFD, versions.AIO_IO_URING):
        assert feature.probe is not None
        first = _first(feature.probe)
        assert first is not None
        assert captured_release(first).version[:2] == feature.since or (
            feature.since < (5, 0) and first == "5.0.0"), feature


def test_wire_command_history_matches_the_schemas() -> None:
    from qmplex.core.messages import QMPVersion
    from qmplex.schema import wire_command

    for name in CAPTURED_QEMU_VERSIONS:
        release = captured_release(name)
        version = QMPVersion(*release.version)
        for candidates in (("blockdev-reopen", "x-blockdev-reopen"),
                           ("query-cpus-fast", "query-cpus"),
                           ("blockdev-del", "x-blockdev-del")):
            assert wire_command(None, version, candidates) == wire_command(
                release.schema, None, candidates), (name, candidates)
