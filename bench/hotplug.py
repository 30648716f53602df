"""Bulk plug and unplug of SCSI disks on a real QEMU (``qemu-system-x86_64``).

Plug: ``blockdev-add`` (null-co node) + ``device_add`` (scsi-hd) per disk. Unplug:
``device_del`` per disk, which completes when QEMU emits ``DEVICE_DELETED`` for it
(about 60 ms later on QEMU 7.2), then ``blockdev-del`` of its node.

Implementations: qmplex pipelined through the plain API, qmplex forced to the serial
seed behaviour (each command waits for its reply, and each ``device_del`` for its
event, before the next is sent), the raw pipelined floor, and qemu.qmp (asyncio, with a
hand-written listener for the events).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

import qmplex
from qmplex import EventFilter, Future, gather

from . import qemuqmp_impl
from .common import peer_preexec
from .floor import RawQMP
from .workload import Skip, Workload

_dumps = orjson.dumps
_loads = orjson.loads
_NL = orjson.OPT_APPEND_NEWLINE
_TIMEOUT = 120.0


def qemu_binary() -> str | None:
    return shutil.which(os.environ.get("QMPLEX_QEMU", "qemu-system-x86_64"))


class QemuVM:
    """A paused QEMU with a virtio-scsi bus, QMP on a Unix socket; killed by pid."""

    def __init__(self) -> None:
        binary = qemu_binary()
        if binary is None:
            raise Skip("qemu-system-x86_64 is not installed "
                       "(apt-get install qemu-system-x86)")
        self._dir = tempfile.mkdtemp(prefix="qmplex-bench-vm-")
        self.path = os.path.join(self._dir, "qmp.sock")
        self._proc = subprocess.Popen(
            [binary, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
             "-S", "-m", "64", "-device", "virtio-scsi-pci,id=scsi0",
             "-qmp", f"unix:{self.path},server=on,wait=off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=peer_preexec)
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") \
                    if self._proc.stderr else ""
                self.stop()
                raise RuntimeError(f"QEMU exited at start: {err.strip()}")
            try:  # the socket file can exist before QEMU listens: retry
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("QEMU's QMP socket never accepted") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _node(i: int) -> str:
    return f"bn{i}"


def _dev(i: int) -> str:
    return f"bd{i}"


def _blockdev_add(i: int) -> dict[str, Any]:
    return {"driver": "null-co", "node-name": _node(i)}


def _device_add(i: int) -> dict[str, Any]:
    return {"driver": "scsi-hd", "id": _dev(i), "drive": _node(i), "bus": "scsi0.0",
            "scsi-id": i % 256, "lun": i // 256}


# ------------------------------------------------------------------- implementations
class QmplexDisks:
    """qmplex: ``serial=False`` pipelines through the plain API (default window)."""

    def __init__(self, path: str, serial: bool) -> None:
        self.client = qmplex.connect(path, timeout=30)
        self.serial = serial

    def plug(self, n: int, serial: bool | None = None) -> None:
        c = self.client
        if self.serial if serial is None else serial:
            for i in range(n):
                c.execute("blockdev-add", _blockdev_add(i)).result(_TIMEOUT)
                c.execute("device_add", _device_add(i)).result(_TIMEOUT)
            return
        futures = []
        for i in range(n):
            futures.append(c.execute("blockdev-add", _blockdev_add(i)))
            futures.append(c.execute("device_add", _device_add(i)))
        gather(futures).result(_TIMEOUT)

    def unplug(self, n: int, serial: bool | None = None) -> None:
        c = self.client
        if self.serial if serial is None else serial:
            for i in range(n):
                d = _dev(i)
                c.execute("device_del", {"id": d},
                          until=EventFilter("DEVICE_DELETED", {"device": d})).result(_TIMEOUT)
                c.execute("blockdev-del", {"node-name": _node(i)}).result(_TIMEOUT)
            return
        def blockdev_del(node: str) -> Callable[[Any], Future[Any]]:
            return lambda _event: c.execute("blockdev-del", {"node-name": node})

        futures = []
        for i in range(n):
            d = _dev(i)
            futures.append(
                c.execute("device_del", {"id": d},
                          until=EventFilter("DEVICE_DELETED", {"device": d}))
                .chain(blockdev_del(_node(i))))
        gather(futures).result(_TIMEOUT)

    def close(self) -> None:
        self.client.close()


class RawDisks:
    """The raw pipelined floor: everything written at once, ``blockdev-del`` sent as
    each ``DEVICE_DELETED`` is read."""

    def __init__(self, path: str) -> None:
        self.conn = RawQMP(path, oob=True)

    def _read_replies(self, want: set[str], on_event: Any = None) -> None:
        conn = self.conn
        while want:
            msg = conn.read_line()
            if "event" in msg:
                if on_event is not None:
                    on_event(msg)
                continue
            cid = msg.get("id")
            if "error" in msg:
                raise RuntimeError(f"{cid}: {msg['error']}")
            want.discard(cid)

    def plug(self, n: int) -> None:
        out = []
        for i in range(n):
            out.append(_dumps({"execute": "blockdev-add", "arguments": _blockdev_add(i),
                               "id": f"a{i}"}, option=_NL))
            out.append(_dumps({"execute": "device_add", "arguments": _device_add(i),
                               "id": f"d{i}"}, option=_NL))
        self.conn.sock.sendall(b"".join(out))
        self._read_replies({f"a{i}" for i in range(n)} | {f"d{i}" for i in range(n)})

    def unplug(self, n: int) -> None:
        sock = self.conn.sock
        sock.sendall(b"".join(
            _dumps({"execute": "device_del", "arguments": {"id": _dev(i)}, "id": f"x{i}"},
                   option=_NL) for i in range(n)))
        index = {_dev(i): i for i in range(n)}
        want = {f"x{i}" for i in range(n)} | {f"b{i}" for i in range(n)}

        def on_event(msg: dict[str, Any]) -> None:
            if msg["event"] != "DEVICE_DELETED":
                return
            i = index.pop(msg.get("data", {}).get("device"), None)
            if i is not None:
                sock.sendall(_dumps({"execute": "blockdev-del",
                                     "arguments": {"node-name": _node(i)}, "id": f"b{i}"},
                                    option=_NL))

        self._read_replies(want, on_event)

    def close(self) -> None:
        self.conn.close()


class QemuQmpDisks:
    """qemu.qmp: concurrent ``execute`` calls; unplug with a hand-written listener."""

    def __init__(self, path: str) -> None:
        if not qemuqmp_impl.available():
            raise Skip("qemu.qmp is not installed")
        self.loop = asyncio.new_event_loop()
        self.qmp = qemuqmp_impl.QMPClient("bench")
        self.loop.run_until_complete(self.qmp.connect(path))

    def plug(self, n: int) -> None:
        async def go() -> None:
            ex = self.qmp.execute
            calls = []
            for i in range(n):
                calls.append(ex("blockdev-add", _blockdev_add(i)))
                calls.append(ex("device_add", _device_add(i)))
            await asyncio.gather(*calls)

        self.loop.run_until_complete(go())

    def unplug(self, n: int) -> None:
        async def go() -> None:
            ex = self.qmp.execute
            listener = qemuqmp_impl.EventListener("DEVICE_DELETED")
            with self.qmp.listen(listener):
                index = {_dev(i): i for i in range(n)}
                dels = [asyncio.ensure_future(ex("device_del", {"id": _dev(i)}))
                        for i in range(n)]
                bdels = []
                while index:
                    event: Any = await listener.get()
                    i = index.pop(event.get("data", {}).get("device"), None)
                    if i is not None:
                        bdels.append(asyncio.ensure_future(
                            ex("blockdev-del", {"node-name": _node(i)})))
                await asyncio.gather(*dels, *bdels)

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.qmp.disconnect())
        self.loop.close()


# ------------------------------------------------------------------------- workloads
class _Disks(Workload):
    def __init__(self, vm: QemuVM | None, impl: str, n: int) -> None:
        self.vm, self.impl, self.count = vm, impl, n

    def open(self) -> None:
        if self.vm is None:
            raise Skip("qemu-system-x86_64 is not installed")
        path = self.vm.path
        if self.impl == "qmplex":
            self.disks: Any = QmplexDisks(path, serial=False)
        elif self.impl == "qmplex serial":
            self.disks = QmplexDisks(path, serial=True)
        elif self.impl == "floor":
            self.disks = RawDisks(path)
        else:
            self.disks = QemuQmpDisks(path)

    def _untimed(self, op: str) -> None:
        # Set-up and clean-up go pipelined, also for the serial implementation.
        method = getattr(self.disks, op)
        if isinstance(self.disks, QmplexDisks):
            method(self.count, serial=False)
        else:
            method(self.count)

    def close(self) -> None:
        if hasattr(self, "disks"):
            self.disks.close()


class Plug(_Disks):
    """Seconds to plug ``n`` disks (then unplugged, untimed)."""

    def run(self) -> float:
        t0 = time.perf_counter()
        self.disks.plug(self.count)
        return time.perf_counter() - t0

    def after(self) -> None:
        self._untimed("unplug")


class Unplug(_Disks):
    """Seconds to unplug ``n`` disks plugged (untimed) just before."""

    def before(self) -> None:
        self._untimed("plug")

    def run(self) -> float:
        t0 = time.perf_counter()
        self.disks.unplug(self.count)
        return time.perf_counter() - t0
