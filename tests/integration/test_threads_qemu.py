"""Threads against a real QEMU (TCG, paused, no guest): a reactor run by its own thread
and four worker threads hot-plugging and unplugging SCSI disks on one client at once
(issue 11 §1). Each disk is a ``null-co`` node under a ``scsi-hd`` with its own
``scsi-id``/``lun``; ``device_del`` waits for ``DEVICE_DELETED`` before ``blockdev-del``."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qmplex import Client, Event, Future, Reactor, gather
from qmplex.qemu import QemuProcess, qemu_or_skip

from ..threads_support import BOUND, ReactorThread, Workers, qmplex_errors

pytestmark = pytest.mark.qemu

SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]
WORKERS = 4
DISKS = 25  # per worker and round
ROUNDS = 3


@pytest.fixture
def vm() -> Iterator[QemuProcess]:
    binary = qemu_or_skip()
    with QemuProcess(binary, extra_args=SCSI, connect=False) as proc:
        yield proc


def test_four_threads_plug_and_unplug_scsi_disks_at_once(vm: QemuProcess) -> None:
    reactor = Reactor()
    client = Client(reactor)
    deleted: collections.Counter[str] = collections.Counter()
    callback_threads: set[int] = set()
    with qmplex_errors() as errors, ReactorThread(reactor) as rt:
        try:
            client.connect(vm.qmp_path, timeout=BOUND).result(BOUND)
            client.on_event(lambda e: deleted.update([e.data["device"]]), "DEVICE_DELETED",
                            predicate=lambda e: "device" in e.data)
            succeeded: list[int] = []

            def worker(k: int) -> None:
                done = 0
                for _ in range(ROUNDS):
                    plugs: list[Future[Any]] = []
                    for j in range(DISKS):
                        i = k * DISKS + j  # distinct scsi-id/lun across workers
                        node, dev = f"t{k}n{j}", f"t{k}d{j}"
                        plugs.append(client.execute(
                            "blockdev-add", {"driver": "null-co", "node-name": node}))
                        plugs.append(client.devices.scsi_device_add(
                            node, dev, "scsi-hd", "scsi0.0", scsi_id=i % 256, lun=i // 256))
                    plugs[-1].add_done_callback(
                        lambda f: callback_threads.add(threading.get_ident()))
                    for f in plugs:
                        f.result(BOUND)  # raises if any step failed
                    unplugs = [client.devices.device_del(f"t{k}d{j}", timeout=BOUND)
                               for j in range(DISKS)]
                    events = [f.result(BOUND) for f in unplugs]
                    assert all(isinstance(e, Event) and e.data["device"] == f"t{k}d{j}"
                               for j, e in enumerate(events))
                    dels = [client.block.blockdev_del(f"t{k}n{j}") for j in range(DISKS)]
                    gather(dels).result(BOUND)
                    done += len(plugs) + len(unplugs) + len(dels)
                succeeded.append(done)

            Workers(WORKERS, worker).start().join(120)
            assert sum(succeeded) == WORKERS * ROUNDS * DISKS * 4

            devices = {f"t{k}d{j}" for k in range(WORKERS) for j in range(DISKS)}
            node_names = {f"t{k}n{j}" for k in range(WORKERS) for j in range(DISKS)}
            blocks = client.execute("query-block").result(BOUND)
            assert [b for b in blocks
                    if b.get("qdev", "").rsplit("/", 1)[-1] in devices
                    or b.get("device") in devices
                    or (b.get("inserted") or {}).get("node-name") in node_names] == []
            nodes = client.execute("query-named-block-nodes").result(BOUND)
            assert node_names.isdisjoint(n["node-name"] for n in nodes)
            props = client.execute("qom-list", {"path": "/machine/peripheral"}).result(BOUND)
            assert devices.isdisjoint(p["name"] for p in props)
            assert deleted == dict.fromkeys(devices, ROUNDS)
            assert callback_threads == {rt.ident}
            assert client.pending == 0
        finally:
            client.close()
    reactor.close()
    assert errors.records == []
