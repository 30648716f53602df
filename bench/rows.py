"""The benchmark rows: what each measures, with which counts, against which targets.

Each row lists its implementations in display order. qmplex is always first and the raw
floor second; qemu.qmp follows where it is installed; variants (qmplex forced to the
serial behaviour, the split-only floor) come last.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import floor, hotplug, qemuqmp_impl, qmplex_impl
from .common import BUILD_DIR, REPO_DIR, FakePeer
from .workload import Skip, Workload


@dataclass
class Counts:
    """Sizes of every row; ``quick`` ones finish the whole suite in well under a minute."""

    serial: int = 20_000
    serial_qemuqmp: int = 5_000
    threads: int = 40_000
    awaited: int = 20_000
    pipelined: int = 200_000
    pipelined_qemuqmp: int = 20_000
    events: int = 500_000
    events_qemuqmp: int = 50_000
    disks: int = 300
    vms: int = 1_000
    per_vm: int = 200
    per_vm_qemuqmp: int = 20
    idle_conns: int = 1_000
    flood: int = 1_000_000
    flood_qemuqmp: int = 200_000
    import_runs: int = 7
    callgrind: int = 20_000
    rounds: int = 5

    @classmethod
    def quick(cls) -> Counts:
        return cls(serial=2_000, serial_qemuqmp=500, threads=4_000, awaited=2_000,
                   pipelined=20_000, pipelined_qemuqmp=2_000,
                   events=20_000, events_qemuqmp=2_000, disks=10, vms=100, per_vm=20,
                   per_vm_qemuqmp=5, idle_conns=100, flood=50_000, flood_qemuqmp=5_000,
                   import_runs=3, callgrind=1_000, rounds=1)


@dataclass
class Context:
    counts: Counts
    peer: FakePeer
    vm: hotplug.QemuVM | None
    vm_error: str = ""


@dataclass
class Result:
    impl: str
    count: int = 0
    runs: list[float] = field(default_factory=list)
    skipped: str = ""

    @property
    def value(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None


@dataclass
class Row:
    key: str
    title: str
    unit: str
    #: True when more is better (rates); False for seconds, bytes, instructions.
    higher_better: bool
    make: Callable[[Context], list[Workload]]
    #: Run the implementations round by round (A B C A B C ...) rather than one after
    #: the other, so that a noisy neighbour hits them alike. "reopen": the same, each
    #: opened and closed around its round (QEMU serves one QMP client at a time).
    interleave: bool | str = False
    #: Rounds for some implementations, overriding ``Counts.rounds``.
    rounds: dict[str, int] = field(default_factory=dict)
    needs: str = ""  # "qemu", "valgrind": skipped with a reason when absent
    #: Size shown after the title, from the counts.
    describe: Callable[[Counts], str] | None = None
    detail: str = ""
    results: list[Result] = field(default_factory=list)

    def result(self, impl: str) -> Result | None:
        for r in self.results:
            if r.impl == impl:
                return r
        return None

    def value(self, impl: str) -> float | None:
        r = self.result(impl)
        return None if r is None else r.value


# ----------------------------------------------------------------- subprocess probes
def _probe(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.memprobe", *args], cwd=REPO_DIR,
                         check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class _ProbeWorkload(Workload):
    def __init__(self, impl: str, count: int) -> None:
        self.impl, self.count = impl, count

    def open(self) -> None:
        if self.impl == "qemu.qmp" and not qemuqmp_impl.available():
            raise Skip("qemu.qmp is not installed")


class IdleMemory(_ProbeWorkload):
    """Bytes of RSS per idle connection (``count`` connections, fresh process)."""

    def __init__(self, impl: str, path: str, count: int) -> None:
        super().__init__(impl, count)
        self.path = path

    def run(self) -> float:
        return float(_probe(["idle", self.impl, self.path, str(self.count)])["per_connection"])


class FloodPeak(_ProbeWorkload):
    """Peak RSS above the idle process during a ``count``-event flood (fresh process)."""

    def __init__(self, impl: str, path: str, count: int) -> None:
        super().__init__(impl, count)
        self.path = path

    def run(self) -> float:
        return float(_probe(["flood", self.impl, self.path, str(self.count)])["over_idle"])


class ImportTime(_ProbeWorkload):
    """Seconds for the implementation's top-level import in a fresh interpreter, with
    its bytecode cached, as after an install (pip compiles it then).

    The probes write and read their bytecode under ``bench/build/pycache``: where
    ``PYTHONDONTWRITEBYTECODE`` is set (or a checkout is read-only) an import from
    source would otherwise measure compiling it, every time. A first import, not
    measured, fills the cache.
    """

    def open(self) -> None:
        super().open()
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BUILD_DIR / "pycache")
        self.env = env
        _probe(["import", self.impl], env)

    def run(self) -> float:
        return float(_probe(["import", self.impl], self.env)["seconds"])


class Instructions(Workload):
    """Instructions per pipelined command, counted by callgrind."""

    def __init__(self, impl: str, path: str, count: int) -> None:
        self.impl, self.path, self.count = impl, path, count

    def open(self) -> None:
        from . import callgrind

        if not callgrind.available():
            raise Skip("valgrind is not installed")

    def run(self) -> float:
        from . import callgrind

        return callgrind.per_command(self.impl, self.path, self.count)


# ---------------------------------------------------------------------------- rows
def _qemu(ctx: Context, impl: str, kind: str) -> Workload:
    cls = hotplug.Plug if kind == "plug" else hotplug.Unplug
    return cls(ctx.vm, impl, ctx.counts.disks)


def make_rows() -> list[Row]:
    """Every row of the table, in order."""
    return [
        Row("serial", "serial round trips", "cmd/s", True, lambda c: [
            qmplex_impl.Serial(c.peer.path, c.counts.serial),
            floor.Serial(c.peer.path, c.counts.serial),
            qemuqmp_impl.Serial(c.peer.path, c.counts.serial_qemuqmp),
        ], interleave=True, describe=lambda n: f"{n.serial:,} commands"),
        Row("serial_cpu", "CPU per serial round trip", "s", False, lambda c: [
            qmplex_impl.Serial(c.peer.path, c.counts.serial, cpu=True),
            floor.Serial(c.peer.path, c.counts.serial, cpu=True),
        ], interleave=True, describe=lambda n: f"{n.serial:,} commands, this process"),
        Row("threads", "4 threads, serial round trips, one client", "cmd/s", True, lambda c: [
            qmplex_impl.Threads(c.peer.path, c.counts.threads),
            floor.Threads(c.peer.path, c.counts.threads),
        ], interleave=True, describe=lambda n: f"{n.threads:,} commands"),
        Row("threads_cpu", "CPU per command, 4 threads", "s", False, lambda c: [
            qmplex_impl.Threads(c.peer.path, c.counts.threads, cpu=True),
            floor.Threads(c.peer.path, c.counts.threads, cpu=True),
        ], interleave=True, describe=lambda n: f"{n.threads:,} commands, this process"),
        Row("awaited", "awaited round trips, asyncio", "cmd/s", True, lambda c: [
            qmplex_impl.Awaited(c.peer.path, c.counts.awaited),
            floor.AsyncioSerial(c.peer.path, c.counts.awaited),
            qemuqmp_impl.Serial(c.peer.path, c.counts.serial_qemuqmp),
            qmplex_impl.Awaited(c.peer.path, c.counts.awaited, loop="uvloop"),
        ], interleave=True, describe=lambda n: f"{n.awaited:,} commands"),
        Row("pipelined", "pipelined, window 64", "cmd/s", True, lambda c: [
            qmplex_impl.Pipelined(c.peer.path, c.counts.pipelined),
            floor.Pipelined(c.peer.path, c.counts.pipelined),
            qemuqmp_impl.Pipelined(c.peer.path, c.counts.pipelined_qemuqmp),
        ], interleave=True, describe=lambda n: f"{n.pipelined:,} commands"),
        Row("events", "event flood to a callback", "ev/s", True, lambda c: [
            qmplex_impl.Events(c.peer.path, c.counts.events, "deliver"),
            floor.Events(c.peer.path, c.counts.events, "deliver"),
            qemuqmp_impl.Events(c.peer.path, c.counts.events_qemuqmp, "deliver"),
        ], interleave=True, describe=lambda n: f"{n.events:,} events"),
        Row("events_unwanted", "event flood, no subscriber", "ev/s", True, lambda c: [
            qmplex_impl.Events(c.peer.path, c.counts.events, "drop"),
            floor.Events(c.peer.path, c.counts.events, "drop"),
            qemuqmp_impl.Events(c.peer.path, c.counts.events_qemuqmp, "drop"),
            floor.Events(c.peer.path, c.counts.events, "split"),
        ], interleave=True, describe=lambda n: f"{n.events:,} events"),
        Row("plug", "plug SCSI disks, real QEMU", "s", False, lambda c: [
            _qemu(c, "qmplex", "plug"), _qemu(c, "floor", "plug"),
            _qemu(c, "qemu.qmp", "plug"), _qemu(c, "qmplex serial", "plug"),
        ], needs="qemu", interleave="reopen", describe=lambda n: f"{n.disks} disks"),
        Row("unplug", "unplug SCSI disks, real QEMU", "s", False, lambda c: [
            _qemu(c, "qmplex", "unplug"), _qemu(c, "floor", "unplug"),
            _qemu(c, "qemu.qmp", "unplug"), _qemu(c, "qmplex serial", "unplug"),
        ], needs="qemu", interleave="reopen", rounds={"qmplex serial": 1},
            describe=lambda n: f"{n.disks} disks"),
        Row("many_vms", "fake VMs on one loop, aggregate", "cmd/s", True, lambda c: [
            qmplex_impl.ManyVMs(c.peer.path, c.counts.vms, c.counts.per_vm),
            floor.ManyVMs(c.peer.path, c.counts.vms, c.counts.per_vm),
            qemuqmp_impl.ManyVMs(c.peer.path, c.counts.vms, c.counts.per_vm_qemuqmp),
        ], describe=lambda n: f"{n.vms:,} VMs x {n.per_vm} commands"),
        Row("idle_memory", "memory per idle connection", "bytes", False, lambda c: [
            IdleMemory("qmplex", c.peer.path, c.counts.idle_conns),
            IdleMemory("floor", c.peer.path, c.counts.idle_conns),
            IdleMemory("qemu.qmp", c.peer.path, c.counts.idle_conns),
        ], rounds={"qmplex": 3, "floor": 3, "qemu.qmp": 1},
            describe=lambda n: f"{n.idle_conns:,} connections"),
        Row("flood_rss", "peak RSS over idle, event flood", "bytes", False, lambda c: [
            FloodPeak("qmplex", c.peer.path, c.counts.flood),
            FloodPeak("floor", c.peer.path, c.counts.flood),
            FloodPeak("qemu.qmp", c.peer.path, c.counts.flood_qemuqmp),
        ], rounds={"qmplex": 1, "floor": 1, "qemu.qmp": 1},
            describe=lambda n: f"{n.flood:,} events"),
        Row("import", "import time", "s", False, lambda c: [
            ImportTime("qmplex", 1), ImportTime("floor", 1), ImportTime("qemu.qmp", 1),
        ], interleave=True),
        Row("instructions", "instructions per pipelined command", "instr", False, lambda c: [
            Instructions("qmplex", c.peer.path, c.counts.callgrind),
            Instructions("floor", c.peer.path, c.counts.callgrind),
        ], rounds={"qmplex": 1, "floor": 1}, needs="valgrind",
            describe=lambda n: f"callgrind, {n.callgrind:,} commands"),
    ]


# ------------------------------------------------------------------------- running
def _rounds(row: Row, w: Workload, counts: Counts) -> int:
    if row.key == "import":
        return counts.import_runs
    return row.rounds.get(w.impl, counts.rounds)


def run_row(row: Row, ctx: Context, log: Callable[[str], None]) -> None:
    """Measure every implementation of ``row``; results go to ``row.results``."""
    if row.describe is not None:
        row.detail = row.describe(ctx.counts)
    if row.needs == "qemu" and ctx.vm is None:
        row.results = [Result("qmplex", skipped=ctx.vm_error)]
        return
    workloads = row.make(ctx)
    results = {id(w): Result(w.impl, w.count) for w in workloads}
    row.results = [results[id(w)] for w in workloads]
    opened: list[Workload] = []

    def open_(w: Workload) -> bool:
        try:
            w.open()
        except Skip as exc:
            results[id(w)].skipped = str(exc)
            return False
        opened.append(w)
        return True

    def one_round(w: Workload) -> None:
        w.before()
        value = w.run()
        w.after()
        results[id(w)].runs.append(value)

    try:
        if row.interleave == "reopen":
            skipped: set[int] = set()
            for i in range(max(_rounds(row, w, ctx.counts) for w in workloads)):
                for w in workloads:
                    if id(w) in skipped or i >= _rounds(row, w, ctx.counts):
                        continue
                    if not open_(w):
                        skipped.add(id(w))
                        continue
                    try:
                        one_round(w)
                    finally:
                        opened.remove(w)
                        w.close()
        elif row.interleave:
            live = [w for w in workloads if open_(w)]
            for i in range(max((_rounds(row, w, ctx.counts) for w in live), default=0)):
                for w in live:
                    if i < _rounds(row, w, ctx.counts):
                        one_round(w)
        else:
            for w in workloads:
                if not open_(w):
                    continue
                t0 = time.perf_counter()
                for _ in range(_rounds(row, w, ctx.counts)):
                    one_round(w)
                log(f"  {row.key}/{w.impl}: {time.perf_counter() - t0:.1f} s")
                opened.remove(w)
                w.close()
    finally:
        for w in opened:
            w.close()

