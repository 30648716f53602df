"""The bulk hot-plug demo behind ``qmplex demo``: plug and unplug N SCSI disks.

This module belongs to the tools layer (it was ``qmplex.demo`` before, which remains a
deprecated alias for one release) and shows the library doing what it was made for, on
one thread, with no callbacks written by hand:

1. **start**: a paused, display-less QEMU with a ``virtio-scsi-pci`` controller
   (:class:`~qmplex.qemu.QemuProcess`), or, when QEMU is not installed or ``fake`` is
   asked for, the built-in :class:`~qmplex.testing.FakeQMPServer` on the client's own
   reactor; then connect.
2. **plug**: for each disk ``i``, ``blockdev-add {"driver": "null-co", "node-name":
   ...}`` and ``scsi_device_add`` with ``scsi-id = i % 256`` and ``lun = i // 256``
   (QEMU stops at 256 auto-assigned ids), all submitted at once and pipelined through
   the client's window, then one wait for all of them; a ``qom-list`` checks that every
   disk exists.
3. **unplug**: ``device_del`` for every disk at once, each completing when its own
   ``DEVICE_DELETED`` arrives and then chaining its node's ``blockdev-del`` (the node is
   in use until the event); ``query-named-block-nodes`` checks that nothing is left.

Example::

    from qmplex.cli.demo import run_demo

    result = run_demo(300)
    for phase in result.phases:
        print(phase.name, phase.seconds)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ..client import Client
from ..errors import QMPError
from ..events import Event
from ..futures import Future, gather
from ..reactor import Reactor

__all__ = [
    "DEFAULT_DISKS",
    "DEFAULT_QEMU",
    "DemoError",
    "DemoResult",
    "Phase",
    "ProgressBar",
    "ProgressCallback",
    "run_demo",
]

#: Disks plugged and unplugged by default.
DEFAULT_DISKS = 300
#: The QEMU binary looked up on ``PATH`` by default.
DEFAULT_QEMU = "qemu-system-x86_64"
#: ``progress(phase, done, total)``: called on the reactor's thread as work completes.
ProgressCallback = Callable[[str, int, int], object]

_SCSI_ARGS = ("-device", "virtio-scsi-pci,id=scsi0")
_BUS = "scsi0.0"


class DemoError(QMPError):
    """The demo could not run (QEMU did not start) or a check after a phase failed."""


@dataclass(frozen=True, slots=True)
class Phase:
    """The timing of one phase of the demo.

    Attributes:
        name: ``"start"``, ``"plug"`` or ``"unplug"``.
        seconds: wall-clock duration.
        commands: QMP commands sent in the phase (checks excluded; 0 for start).
    """

    name: str
    seconds: float
    commands: int


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        disks: how many disks were plugged and unplugged.
        backend: ``"qemu"`` or ``"fake"``.
        backend_description: e.g. ``"QEMU 7.2.0 (/usr/bin/qemu-system-x86_64)"``.
        version: the peer's QEMU version, e.g. ``"7.2.0"``.
        phases: the phases in order (start, plug, unplug).
        total_seconds: the sum of the phases (the checks between them excluded).
    """

    disks: int
    backend: str
    backend_description: str
    version: str
    phases: tuple[Phase, ...]
    total_seconds: float

    def phase(self, name: str) -> Phase:
        """Return the phase called ``name``.

        Raises:
            KeyError: there is no such phase.
        """
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data (what ``qmplex demo --json`` prints)."""
        return {
            "disks": self.disks,
            "backend": self.backend,
            "backend_description": self.backend_description,
            "version": self.version,
            "phases": [{"name": p.name, "seconds": p.seconds, "commands": p.commands}
                       for p in self.phases],
            "total_seconds": self.total_seconds,
        }


class ProgressBar:
    """A progress bar for :func:`run_demo`'s ``progress`` callback.

    On a terminal it redraws one line in place (at most every ``interval`` seconds, and
    at the end of each phase); elsewhere it writes one line per finished phase.

    Args:
        stream: where to draw (``sys.stderr`` by default).
        width: characters of the bar itself.
        interval: the least seconds between two redraws on a terminal.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 40,
                 interval: float = 0.05) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._last = 0.0
        self._open = False  # a partial line is on screen

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` items of ``phase`` are finished."""
        finished = done >= total
        if not self.tty:
            if finished:
                self.stream.write(f"{phase:<7} {done}/{total} done\n")
                self.stream.flush()
            return
        now = time.monotonic()
        if not finished and now - self._last < self.interval:
            return
        self._last = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{phase:<7} [{bar}] {done}/{total}")
        if finished:
            self.stream.write("\n")
        self._open = not finished
        self.stream.flush()

    def finish(self) -> None:
        """End a partly drawn line (after an interruption); harmless otherwise."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _counted(futures: list[Future[Any]], phase: str, total: int,
             progress: ProgressCallback | None) -> None:
    if progress is None:
        return
    done = [0]
    progress(phase, 0, total)

    def one(_: Future[Any]) -> None:
        done[0] += 1
        progress(phase, done[0], total)

    for fut in futures:
        fut.add_done_callback(one)


def run_demo(
    disks: int = DEFAULT_DISKS,
    fake: bool = False,
    *,
    qemu_binary: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 120.0,
) -> DemoResult:
    """Plug ``disks`` SCSI disks into a paused QEMU (or the fake server), then unplug them.

    Blocking; runs everything on the calling thread with a private reactor.

    Args:
        disks: how many disks (at least 1; QEMU takes over a thousand on one bus).
        fake: use the built-in fake QMP server even if QEMU is installed.
        qemu_binary: the QEMU to run (default: ``qemu-system-x86_64`` from ``PATH``;
            or the binary named by ``$QMPLEX_QEMU``; without one the fake server is
            used). Naming a binary that does not exist
            is an error rather than a silent fallback.
        progress: called as ``progress(phase, done, total)`` while disks are plugged and
            unplugged (on the calling thread).
        timeout: seconds allowed for each phase.

    Returns:
        The timings of each phase.

    Raises:
        ValueError: ``disks`` is below 1.
        DemoError: QEMU could not be started, or a check after a phase failed.
        CommandError, Timeout, ConnectionLost: a command failed.
    """
    if disks < 1:
        raise ValueError("disks must be at least 1")
    binary: str | None = None
    if not fake:
        from ..qemu import find_qemu

        binary = find_qemu(qemu_binary or DEFAULT_QEMU)
        if binary is None and qemu_binary is not None:
            raise DemoError(f"QEMU binary not found: {qemu_binary}")
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        reactor = Reactor()
        stack.callback(reactor.close)
        if binary is None:
            from ..testing import FakeQMPServer

            server = FakeQMPServer(reactor=reactor)
            server.start()
            stack.callback(server.close)
            client = Client(reactor)
            stack.callback(client.close)
            version = client.connect(server.path, timeout=timeout).result()
            backend, description = "fake", "the fake QMP server (qmplex.testing)"
        else:
            client = stack.enter_context(_start_qemu(binary, reactor, timeout))
            assert client.version is not None
            version = client.version
            backend, description = "qemu", f"QEMU {version} ({binary})"
        t1 = time.perf_counter()
        phases.append(Phase("start", t1 - t0, 0))

        _plug(client, disks, progress, timeout)
        t2 = time.perf_counter()
        phases.append(Phase("plug", t2 - t1, 2 * disks))
        _check_plugged(client, disks, timeout)

        t3 = time.perf_counter()
        _unplug(client, disks, progress, timeout)
        t4 = time.perf_counter()
        phases.append(Phase("unplug", t4 - t3, 2 * disks))
        _check_unplugged(client, disks, timeout)
    total = sum(p.seconds for p in phases)
    return DemoResult(disks, backend, description, str(version), tuple(phases), total)


@contextlib.contextmanager
def _start_qemu(binary: str, reactor: Reactor, timeout: float) -> Iterator[Client]:
    """A paused QEMU with a virtio-scsi-pci controller, and its client on ``reactor``;
    stopped with ``quit`` on exit."""
    from ..qemu import QemuError, QemuProcess

    vm = QemuProcess(binary, extra_args=_SCSI_ARGS, reactor=reactor,
                     start_timeout=min(timeout, 30.0))
    try:
        vm.start()
    except QemuError as exc:
        raise DemoError(f"QEMU did not start: {exc}") from exc
    try:
        assert vm.client is not None
        yield vm.client
    finally:
        vm.stop()


def _node(i: int) -> str:
    return f"demo-b{i}"


def _device(i: int) -> str:
    return f"demo-d{i}"


def _plug(client: Client, disks: int, progress: ProgressCallback | None,
          timeout: float) -> None:
    futures: list[Future[Any]] = []
    devices: list[Future[Any]] = []
    for i in range(disks):
        futures.append(client.execute("blockdev-add",
                                      {"driver": "null-co", "node-name": _node(i)}))
        dev = client.devices.scsi_device_add(_node(i), _device(i), "scsi-hd", _BUS,
                                             scsi_id=i % 256, lun=i // 256)
        futures.append(dev)
        devices.append(dev)
    _counted(devices, "plug", disks, progress)
    gather(futures).result(timeout)


def _unplug(client: Client, disks: int, progress: ProgressCallback | None,
            timeout: float) -> None:
    def free(node: str) -> Callable[[Event], Future[None]]:
        return lambda _event: client.block.blockdev_del(node)

    futures: list[Future[Any]] = [
        client.devices.device_del(_device(i)).chain(free(_node(i))) for i in range(disks)
    ]
    _counted(futures, "unplug", disks, progress)
    gather(futures).result(timeout)


def _check_plugged(client: Client, disks: int, timeout: float) -> None:
    props = client.execute("qom-list", {"path": "/machine/peripheral"}).result(timeout)
    present = {p.get("name") for p in props if isinstance(p, dict)}
    missing = [_device(i) for i in range(disks) if _device(i) not in present]
    if missing:
        raise DemoError(f"{len(missing)} disks missing after plugging, e.g. {missing[0]}")


def _check_unplugged(client: Client, disks: int, timeout: float) -> None:
    nodes = client.execute("query-named-block-nodes").result(timeout)
    ours = {_node(i) for i in range(disks)}
    left = [n.get("node-name") for n in nodes if isinstance(n, dict) and n.get("node-name") in ours]
    if left:
        raise DemoError(f"{len(left)} block nodes left after unplugging, e.g. {left[0]}")
    props = client.execute("qom-list", {"path": "/machine/peripheral"}).result(timeout)
    devices = {_device(i) for i in range(disks)}
    still = [p.get("name") for p in props if isinstance(p, dict) and p.get("name") in devices]
    if still:
        raise DemoError(f"{len(still)} disks still present after unplugging, e.g. {still[0]}")
