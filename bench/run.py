"""The one benchmark command: build the C peer, run every row, print the table.

    python -m bench [--quick] [--rows serial,pipelined,...] [--strict]

Writes ``bench/results.json`` and, when matplotlib is installed (the ``bench`` extra),
``bench/results.png``. ``--quick`` (also chosen by ``CI=quick``) uses small counts so the
whole suite runs in well under a minute: it proves the suite works, its numbers are
indicative only. ``--strict`` exits 1 when a target does not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    BENCH_DIR,
    FakePeer,
    build_peer,
    ensure_qmplex,
    pin_self,
    pinning,
    raise_fd_limit,
)

IMPL_ORDER = ("qmplex", "floor", "qemu.qmp")


# --------------------------------------------------------------------------- format
def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("cmd/s", "ev/s"):
        return f"{value / 1000:,.1f}k"
    if unit == "s":
        if value < 0.001:
            return f"{value * 1e6:,.1f} us"
        return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    if unit == "bytes":
        if value >= 1 << 20:
            return f"{value / (1 << 20):,.1f} MiB"
        return f"{value / 1024:,.1f} KiB"
    if unit == "instr":
        return f"{value:,.0f}"
    return f"{value:,.3g}"


# Memory rows: RSS moves in 4 KiB pages, so a per-connection figure under 1 KiB (the
# floor's bare socket) is nothing measurable, and a ratio to it means nothing.
_BYTES_RESOLUTION = 1024


def speed_ratio(row: Any, a: str, b: str) -> float | None:
    """How many times better ``a`` does than ``b`` (>1: ``a`` is faster / smaller).

    For interleaved rows this is the median of the per-round ratios (round i of ``a``
    ran right next to round i of ``b``, so a change of regime on the machine hits
    both); otherwise the ratio of the medians.
    """
    ra, rb = row.result(a), row.result(b)
    if ra is None or rb is None or not ra.value or not rb.value:
        return None
    if row.unit == "bytes" and min(ra.value, rb.value) < _BYTES_RESOLUTION:
        return None  # below what RSS (counted in pages) can tell apart from nothing
    if row.interleave and len(ra.runs) == len(rb.runs) and all(ra.runs + rb.runs):
        pairs = [x / y if row.higher_better else y / x
                 for x, y in zip(ra.runs, rb.runs, strict=True)]
        return float(statistics.median(pairs))
    va, vb = ra.value, rb.value
    return float(va / vb if row.higher_better else vb / va)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


# -------------------------------------------------------------------------- targets
@dataclass
class Target:
    text: str
    measure: Callable[[dict[str, Any]], float | None]
    ok: Callable[[float], bool]
    shown: Callable[[float], str]


def _targets() -> list[Target]:
    def ratio(key: str, a: str, b: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda rows: speed_ratio(rows[key], a, b) if key in rows else None

    def value(key: str, impl: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda rows: rows[key].value(impl) if key in rows else None

    def per_floor(key: str) -> Callable[[dict[str, Any]], float | None]:
        """qmplex's value over the floor's (times, CPU: lower is better)."""
        def compute(rows: dict[str, Any]) -> float | None:
            if key not in rows:
                return None
            mine, floor = rows[key].value("qmplex"), rows[key].value("floor")
            return mine / floor if mine and floor else None
        return compute

    x = fmt_ratio
    return [
        Target("CPU per serial round trip within 1.6x the blocking floor's",
               per_floor("serial_cpu"), lambda r: r <= 1.6,
               lambda r: f"{r:.2f}x the floor's CPU"),
        Target("instructions per pipelined command <= 12,000",
               value("instructions", "qmplex"), lambda v: v <= 12_000,
               lambda v: f"{v:,.0f}"),
        Target("pipelined >= 10x qemu.qmp",
               ratio("pipelined", "qmplex", "qemu.qmp"), lambda r: r >= 10, x),
        Target("events to a callback >= 0.8x the raw floor",
               ratio("events", "qmplex", "floor"), lambda r: r >= 0.8, x),
        Target("events nobody wants >= 2x the raw floor",
               ratio("events_unwanted", "qmplex", "floor"), lambda r: r >= 2.0, x),
        Target("plug on QEMU within 1.1x the raw pipelined floor's time",
               per_floor("plug"), lambda r: r <= 1.1,
               lambda r: f"{r:.2f}x the floor's time"),
        Target("unplug on QEMU within 1.1x the raw pipelined floor's time",
               per_floor("unplug"), lambda r: r <= 1.1,
               lambda r: f"{r:.2f}x the floor's time"),
        Target("unplug on QEMU >= 50x faster than the serial behaviour",
               ratio("unplug", "qmplex", "qmplex serial"), lambda r: r >= 50, x),
        Target("1,000 connections on one reactor >= 200k cmd/s",
               value("many_vms", "qmplex"), lambda v: v >= 200_000,
               lambda v: fmt_value(v, "cmd/s") + " cmd/s"),
        Target("<= 16 KiB per idle connection",
               value("idle_memory", "qmplex"), lambda v: v <= 16 * 1024,
               lambda v: fmt_value(v, "bytes")),
        Target("peak RSS of a 1M-event flood within 20 MiB of idle",
               value("flood_rss", "qmplex"), lambda v: v <= 20 * (1 << 20),
               lambda v: fmt_value(v, "bytes")),
    ]


# -------------------------------------------------------------------------- report
def table(rows: list[Any]) -> str:
    head = ("| row | unit | qmplex | raw floor | qemu.qmp | other | qmplex / floor "
            "| qmplex / qemu.qmp |")
    lines = [head, "|" + "---|" * 8]
    for row in rows:
        first = row.result("qmplex")
        if first is not None and first.skipped and not first.runs:
            lines.append(f"| {row.title} | {row.unit} | skipped: {first.skipped} "
                         "| | | | | |")
            continue
        cells = []
        for impl in IMPL_ORDER:
            r = row.result(impl)
            if r is None:
                cells.append("-")
            elif r.skipped:
                cells.append("n/a")
            else:
                n = f" ({r.count:,})" if impl == "qemu.qmp" and r.count and \
                    row.result("qmplex") and r.count != row.result("qmplex").count else ""
                cells.append(fmt_value(r.value, row.unit) + n)
        others = [f"{r.impl}: {fmt_value(r.value, row.unit)}" for r in row.results
                  if r.impl not in IMPL_ORDER and r.runs]
        unit = row.unit + (" (lower is better)" if not row.higher_better else "")
        title = row.title + (f" ({row.detail})" if row.detail else "")
        lines.append(
            f"| {title} | {unit} | " + " | ".join(cells) + f" | {'; '.join(others) or '-'} | "
            f"{fmt_ratio(speed_ratio(row, 'qmplex', 'floor'))} | "
            f"{fmt_ratio(speed_ratio(row, 'qmplex', 'qemu.qmp'))} |")
    return "\n".join(lines)


def check_targets(rows: list[Any]) -> list[dict[str, Any]]:
    by_key = {row.key: row for row in rows}
    out = []
    for t in _targets():
        try:
            v = t.measure(by_key)
        except (KeyError, TypeError, ZeroDivisionError):
            v = None
        out.append({"target": t.text, "value": v,
                    "shown": "not measured" if v is None else t.shown(v),
                    "holds": None if v is None else bool(t.ok(v))})
    return out


def targets_table(results: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | holds |", "|---|---|---|"]
    for r in results:
        holds = "-" if r["holds"] is None else ("yes" if r["holds"] else "NO")
        lines.append(f"| {r['target']} | {r['shown']} | {holds} |")
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _qemu_version() -> str | None:
    import subprocess

    from .hotplug import qemu_binary

    binary = qemu_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else None


def write_json(path: Path, rows: list[Any], targets: list[dict[str, Any]], quick: bool,
               elapsed: float) -> None:
    data = {
        "quick": quick,
        "elapsed_s": round(elapsed, 1),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "pinned": pinning(),
                    "orjson": _version("orjson"), "qemu.qmp": _version("qemu.qmp"),
                    "qemu": _qemu_version()},
        "rows": [{
            "key": row.key, "title": row.title, "unit": row.unit,
            "higher_is_better": row.higher_better,
            "qmplex_over_floor": speed_ratio(row, "qmplex", "floor"),
            "qmplex_over_qemu_qmp": speed_ratio(row, "qmplex", "qemu.qmp"),
            "results": [{"impl": r.impl, "count": r.count, "median": r.value, "runs": r.runs,
                         "skipped": r.skipped or None} for r in row.results],
        } for row in rows],
        "targets": targets,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_png(path: Path, rows: list[Any]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'qmplex[bench]'): no PNG written"
    shown = [row for row in rows if row.value("floor")]
    if not shown:
        return "nothing to plot"
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.3 * len(shown) + 1), squeeze=False)
    for ax, row in zip(axes[:, 0], shown, strict=True):
        impls = [r.impl for r in row.results if r.value]
        colors = ["tab:blue" if i == "qmplex" else "tab:gray" if i == "floor" else "tab:orange"
                  for i in impls]
        ax.tick_params(labelsize=8)
        if any(speed_ratio(row, impl, "floor") is None for impl in impls if impl != "floor"):
            # No meaningful ratio (a floor too small to measure, e.g. a bare socket's
            # memory): the values themselves, on their own scale.
            values = [row.value(impl) or 0.0 for impl in impls]
            ax.barh(impls, values, color=colors)
            ax.set_xscale("log")
            ax.set_title(f"{row.title} ({row.unit}, absolute values: no ratio to the "
                         "floor)", fontsize=9, loc="left")
            for y, (v, impl) in enumerate(zip(values, impls, strict=True)):
                ax.text(v, y, f" {fmt_value(row.value(impl), row.unit)}", va="center",
                        fontsize=7)
            continue
        ratios = [speed_ratio(row, impl, "floor") or 0 for impl in impls]
        ax.barh(impls, ratios, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{row.title} ({row.unit})", fontsize=9, loc="left")
        for y, (r, impl) in enumerate(zip(ratios, impls, strict=True)):
            ax.text(r, y, f" {r:.2f}x  {fmt_value(row.value(impl), row.unit)}",
                    va="center", fontsize=7)
    axes[-1, 0].set_xlabel("relative to the raw floor (higher is better), log scale, "
                           "unless the row says otherwise")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("CI", "") == "quick",
                   help="small counts, one round (default when CI=quick)")
    p.add_argument("--rows", help="comma-separated row keys (default: all)")
    p.add_argument("--rounds", type=int, help="rounds per implementation (default 5)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    p.add_argument("--pin", action="store_true",
                   help="pin this process to one CPU and the peers to another "
                        "(steadier; also QMPLEX_BENCH_PIN=1)")
    p.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.* go")
    ns = p.parse_args(argv)

    if ns.pin:
        os.environ["QMPLEX_BENCH_PIN"] = "1"
    ensure_qmplex()
    from . import hotplug
    from . import rows as rows_mod
    from .rows import Context, Counts
    from .workload import Skip

    counts = Counts.quick() if ns.quick else Counts()
    if ns.rounds:
        counts.rounds = ns.rounds
    all_rows = rows_mod.make_rows()
    if ns.rows:
        wanted = ns.rows.split(",")
        unknown = set(wanted) - {r.key for r in all_rows}
        if unknown:
            p.error(f"unknown rows {sorted(unknown)}; known: {[r.key for r in all_rows]}")
        all_rows = [r for r in all_rows if r.key in wanted]
    raise_fd_limit(4 * counts.vms + 512)
    build_peer()
    pin_self()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    vm = None
    vm_error = ""
    if any(r.needs == "qemu" for r in all_rows):
        try:
            vm = hotplug.QemuVM()
        except (Skip, RuntimeError) as exc:
            vm_error = str(exc)
            log(f"bench: QEMU rows skipped: {vm_error}")
    try:
        with FakePeer() as peer:
            ctx = Context(counts, peer, vm, vm_error)
            for row in all_rows:
                t0 = time.perf_counter()
                log(f"bench: {row.key} ...")
                rows_mod.run_row(row, ctx, log)
                log(f"bench: {row.key} done in {time.perf_counter() - t0:.1f} s")
    finally:
        if vm is not None:
            vm.stop()
    elapsed = time.perf_counter() - t_start

    targets = check_targets(all_rows)
    mode = "quick (small counts, 1 round: indicative only)" if ns.quick else \
        f"full (median of {counts.rounds} rounds unless noted)"
    mode += ", pinned" if pinning() else ", not pinned"
    print(f"\nqmplex benchmarks, {mode}, {elapsed:.0f} s\n")
    print(table(all_rows))
    print()
    print(targets_table(targets))
    ns.out.mkdir(parents=True, exist_ok=True)
    write_json(ns.out / "results.json", all_rows, targets, ns.quick, elapsed)
    print(f"\nwrote {ns.out / 'results.json'}")
    print(write_png(ns.out / "results.png", all_rows))
    if ns.strict and any(t["holds"] is False for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
