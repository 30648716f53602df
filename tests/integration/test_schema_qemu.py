"""The schema layer against a real QEMU (TCG, paused, no guest): the live schema, calls
through the ``call`` namespace, validation that agrees with QEMU, the schema cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qmplex
from qmplex import Client, CommandError, ConnectError, Event, EventFilter, ValidationError
from qmplex.schema import CallNamespace, Schema, clear_schema_cache, load_schema

pytestmark = pytest.mark.qemu

DATA = Path(__file__).parent.parent / "data" / "qmp-schema-7.2.json"


def _binary() -> str:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        if os.environ.get("QMPLEX_REQUIRE_QEMU") == "1":
            pytest.fail("qemu-system-x86_64 is required (QMPLEX_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
    return binary


@pytest.fixture
def qmp_path() -> Iterator[str]:
    """Start a paused QEMU with a virtio-scsi bus; yield its QMP socket path."""
    binary = _binary()
    tmp = tempfile.mkdtemp(prefix="qmplex-schema-")  # short: sun_path is 108 bytes
    path = os.path.join(tmp, "qmp.sock")
    proc = subprocess.Popen(
        [binary, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
         "-S", "-m", "64", "-device", "virtio-scsi-pci,id=scsi0",
         "-qmp", f"unix:{path},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield path
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _connect(path: str) -> Client:
    # The socket file can exist before QEMU listens (QMP-NOTES): retry until it answers.
    deadline = time.monotonic() + 20
    while True:
        try:
            return qmplex.connect(path, timeout=10)
        except ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # waiting for another process to listen


@pytest.fixture
def client(qmp_path: str) -> Iterator[Client]:
    clear_schema_cache()
    c = _connect(qmp_path)
    yield c
    c.close()
    clear_schema_cache()


def _captured() -> Schema:
    return Schema.from_introspection(json.loads(DATA.read_text()))


def test_live_schema_matches_the_captured_one(client: Client) -> None:
    schema = load_schema(client).result(timeout=10)
    assert schema.version == client.version
    captured = _captured()
    assert client.version is not None
    if (client.version.major, client.version.minor) == (7, 2):
        assert schema.command_names == captured.command_names
        assert schema.event_names == captured.event_names
        for command in ("blockdev-add", "device_add", "migrate-set-capabilities", "qom-list"):
            assert schema.arguments(command) == captured.arguments(command)
    else:  # another QEMU: the basics are still there
        assert {"blockdev-add", "device_add", "device_del", "query-status",
                "qom-list"} <= schema.command_names


def test_calls_through_the_namespace(client: Client) -> None:
    schema = load_schema(client).result(timeout=10)
    call = CallNamespace(client, schema)
    status = call.query_status().result(timeout=10)
    assert status["status"] == "prelaunch" and status["running"] is False
    assert call.blockdev_add(driver="null-co", node_name="b0").result(timeout=10) == {}
    nodes = call.query_named_block_nodes().result(timeout=10)
    assert "b0" in {n["node-name"] for n in nodes}
    # device_add's extra properties pass validation and reach QEMU under the names
    # given: QEMU spells device properties both ways (scsi-id, logical_block_size).
    call.device_add({"scsi-id": 3}, driver="scsi-hd", id="d0", drive="b0", bus="scsi0.0",
                    lun=0, logical_block_size=4096, physical_block_size=4096).result(timeout=10)
    children = call.qom_list(path="/machine/peripheral").result(timeout=10)
    assert {"scsi0", "d0"} <= {p["name"] for p in children}
    assert call.qom_get(path="/machine/peripheral/d0",
                        property="logical_block_size").result(timeout=10) == 4096
    with pytest.raises(CommandError, match="Property 'scsi-hd.scsi_id' not found"):
        call.device_add(driver="scsi-hd", id="d9", drive="b0", scsi_id=3).result(timeout=10)
    ev = call.device_del(id="d0", _until=EventFilter("DEVICE_DELETED", {"device": "d0"}),
                         _timeout=10).result(timeout=10)
    assert isinstance(ev, Event) and ev.data["device"] == "d0"
    assert call["blockdev-del"](node_name="b0").result(timeout=10) == {}
    hmp = call.human_monitor_command(command_line="info status").result(timeout=10)
    assert "paused" in hmp or "prelaunch" in hmp


def test_validation_rejects_before_sending(client: Client) -> None:
    schema = load_schema(client).result(timeout=10)
    call = CallNamespace(client, schema)
    sent = client.commands_sent
    with pytest.raises(ValidationError, match="blockdev-add: bogus: unknown argument"):
        call.blockdev_add(driver="null-co", node_name="b1", bogus=1)  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="blockdev-add: size: expected int"):
        call.blockdev_add(driver="null-co", node_name="b1", size="1G")  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="unknown command"):
        call.blockdev_ad(driver="null-co")  # type: ignore[attr-defined]
    assert client.commands_sent == sent  # nothing went out
    # the connection is still fine
    assert call.query_status().result(timeout=10)["status"] == "prelaunch"
    assert call.blockdev_add(driver="null-co", node_name="b1").result(timeout=10) == {}


@pytest.mark.parametrize(("command", "arguments"), [
    ("blockdev-add", {"driver": "null-co", "node-name": "x0", "bogus": 1}),
    ("blockdev-add", {"driver": "null-co", "node-name": "x0", "size": "1G"}),
    ("blockdev-add", {"driver": "null-co", "node-name": "x0", "size": 1.5}),
    ("blockdev-add", {"driver": "nul-co", "node-name": "x0"}),
    ("blockdev-add", {"node-name": "x0"}),
    ("blockdev-add", {"driver": "raw", "node-name": "x0",
                      "file": {"driver": "file", "filenam": "/nonexistent"}}),
    ("blockdev-add", {"driver": "raw", "node-name": "x0", "file": 5}),
    ("device_del", {}),
    ("device_del", {"id": 5}),
    ("query-status", {"verbose": True}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "event", "state": True}]}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": 1}]}),
])
def test_rejected_arguments_are_rejected_by_qemu_too(client: Client, command: str,
                                                     arguments: dict[str, Any]) -> None:
    schema = load_schema(client).result(timeout=10)
    with pytest.raises(ValidationError):
        schema.validate(command, arguments)
    with pytest.raises(CommandError) as exc_info:
        client.execute(command, arguments).result(timeout=10)
    assert exc_info.value.error_class == "GenericError"


@pytest.mark.parametrize(("command", "arguments"), [
    ("blockdev-add", {"driver": "null-co", "node-name": "y0", "size": 1 << 20,
                      "read-zeroes": True, "cache": {"direct": False}}),
    ("blockdev-add", {"driver": "raw", "node-name": "y1", "file": "y0"}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
    ("qom-set", {"path": "/machine", "property": "graphics", "value": False}),
    ("query-status", None),
])
def test_accepted_arguments_are_accepted_by_qemu(client: Client, command: str,
                                                 arguments: dict[str, Any] | None) -> None:
    schema = load_schema(client).result(timeout=10)
    if command == "blockdev-add" and arguments is not None and arguments["driver"] == "raw":
        client.execute("blockdev-add", {"driver": "null-co", "node-name": "y0"}).result(10)
    schema.validate(command, arguments)
    client.execute(command, arguments).result(timeout=10)


def test_schema_cache_across_connections(qmp_path: str) -> None:
    clear_schema_cache()
    try:
        first = _connect(qmp_path)
        try:
            schema = first.load_schema().result(timeout=10)
            assert first.load_schema().result(timeout=10) is schema  # once per connection
            assert first.schema is schema
        finally:
            first.close()
        second = _connect(qmp_path)  # QMP serves one client at a time: after the first
        try:
            sent = second.commands_sent
            assert second.schema is None  # the memo belongs to the connection
            assert second.load_schema().result(timeout=10) is schema
            assert second.commands_sent == sent + 1  # query-target only
        finally:
            second.close()
    finally:
        clear_schema_cache()
