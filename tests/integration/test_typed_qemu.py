"""Typed views over what a real QEMU 7.2 sends (TCG, paused, no guest): every ``query-*``
command's return value and the events of a hot-unplug, a block job and a migration,
every attribute read, nested views and arrays included. The views are generated from
QEMU 11.1.3's schema, so the members 11.1 requires that 7.2 does not send are listed
here: reading one raises AttributeError, and nothing else fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from qmplex import Client, CommandError, Event, typed
from qmplex.qemu import QemuProcess, qemu_or_skip
from qmplex.typed import ListView, View

pytestmark = pytest.mark.qemu

#: Members QEMU 11.1.3's schema requires that QEMU 7.2 leaves out (class.attribute).
NEW_SINCE_7_2 = {
    "QueryCpusFastItem.qom_type",
    "QueryDirtyRateResult.calc_time_unit",
    "QueryMachinesItem.acpi",
    "QueryNamedBlockNodesItem.active",
    "QueryNamedBlockNodesItem.children",
    "QuerySevResult.sev_type",  # the union's tag: SEV-SNP came after 7.2
}


def walk(value: Any, missing: set[str]) -> int:
    """Read every attribute of a view (recursively); note the required members the object
    lacks in ``missing``; return how many attributes were read."""
    count = 0
    if isinstance(value, ListView):
        for item in value:
            count += walk(item, missing)
    elif isinstance(value, View):
        for cls in type(value).__mro__:
            for name, attr in vars(cls).items():
                if not isinstance(attr, property) or name == "raw":
                    continue
                try:
                    count += 1 + walk(getattr(value, name), missing)
                except AttributeError as exc:
                    assert "QEMU sent no" in str(exc), exc
                    missing.add(f"{type(value).__name__}.{name}")
    return count


@pytest.fixture
def vm() -> Iterator[QemuProcess]:
    binary = qemu_or_skip()
    args = ["-device", "virtio-scsi-pci,id=scsi0"]
    with QemuProcess(binary, extra_args=args) as proc:
        yield proc


def _client(vm: QemuProcess) -> Client:
    client = vm.client
    assert client is not None
    return client


def test_every_query_command_reads_as_views(vm: QemuProcess) -> None:
    client = _client(vm)
    client.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"}).result(10)
    names = sorted(c["name"] for c in client.execute("query-commands").result(10))
    missing: set[str] = set()
    read: dict[str, int] = {}
    for name in names:
        if not name.startswith(("query-", "x-query-")):
            continue
        try:
            value = client.execute(name).result(10)
        except CommandError:
            continue  # needs arguments, or a device/accelerator this VM lacks
        read[name] = walk(typed.result(name, value), missing)
    # The big ones were read through: the schema itself (a union on meta-type), machines.
    assert read["query-qmp-schema"] > 5000
    assert read["query-status"] == 2 and read["query-machines"] > 100
    assert read["query-named-block-nodes"] > 10  # nested image info, cache, limits ...
    assert missing <= NEW_SINCE_7_2, missing - NEW_SINCE_7_2
    schema = typed.result("query-qmp-schema", client.execute("query-qmp-schema").result(10))
    kinds = {type(item).__name__ for item in schema}
    assert {"QueryQmpSchemaItemCommand", "QueryQmpSchemaItemObject",
            "QueryQmpSchemaItemEnum", "QueryQmpSchemaItemBuiltin"} <= kinds


def test_events_read_as_views(vm: QemuProcess, tmp_path: os.PathLike[str]) -> None:
    client = _client(vm)
    seen: list[Event] = []
    client.on_event(seen.append)
    missing: set[str] = set()
    # DEVICE_DELETED: a SCSI disk unplugs without a guest.
    client.execute("blockdev-add", {"driver": "null-co", "node-name": "d0n"}).result(10)
    client.execute("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "d0n",
                                  "bus": "scsi0.0"}).result(10)
    deleted = client.wait_event("DEVICE_DELETED", {"device": "d0"}, timeout=10)
    client.execute("device_del", {"id": "d0"}).result(10)
    data = deleted.result(10).typed()
    assert isinstance(data, typed.DeviceDeletedData)
    assert data.device == "d0" and data.path == "/machine/peripheral/d0"
    # JOB_STATUS_CHANGE: a backup between two null-co nodes.
    client.execute("blockdev-add", {"driver": "null-co", "node-name": "t0"}).result(10)
    done = client.wait_event("JOB_STATUS_CHANGE", {"id": "job0", "status": "null"},
                             timeout=20)
    client.execute("blockdev-backup", {"job-id": "job0", "device": "d0n", "target": "t0",
                                       "sync": "full"}).result(10)
    done.result(20)
    statuses = [e.typed() for e in seen if e.name == "JOB_STATUS_CHANGE"]
    assert all(isinstance(s, typed.JobStatusChangeData) for s in statuses)
    assert [s.status for s in statuses if isinstance(s, typed.JobStatusChangeData)][-1] == "null"
    # MIGRATION: to a file, with the events capability on.
    client.execute("migrate-set-capabilities",
                   {"capabilities": [{"capability": "events", "state": True}]}).result(10)
    completed = client.wait_event("MIGRATION", {"status": "completed"}, timeout=30)
    target = os.path.join(os.fspath(tmp_path), "state")
    client.execute("migrate", {"uri": f"exec:cat > {target}"}).result(10)
    completed.result(30)
    migration = [e.typed() for e in seen if e.name == "MIGRATION"]
    assert [m.status for m in migration if isinstance(m, typed.MigrationData)][-1] \
        == "completed"
    for event in seen:
        view = event.typed()
        assert type(view) is typed.EVENTS[event.name] and view.raw is event.data
        walk(view, missing)
    assert not missing, missing
    info = typed.result("query-migrate", client.execute("query-migrate").result(10))
    assert isinstance(info, typed.QueryMigrateResult) and info.status == "completed"
    assert info.ram is not None and info.ram.total > 0
