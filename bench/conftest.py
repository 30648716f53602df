"""pytest-benchmark entry: ``pytest bench/ --benchmark-only`` (``CI=quick`` for small counts).

The fixtures here hold the C fake peer (built on first use) and the QEMU launcher; the
workloads, counts and rounds come from :mod:`bench.rows`, so this entry and
``python -m bench`` measure the same things. Each suite runs qmplex, the raw floor and
qemu.qmp in the same session; the ratios are printed at the end of the run. No test
asserts on timing: the targets are checked by ``python -m bench --strict``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from .common import FakePeer, build_peer, ensure_qmplex, pin_self, raise_fd_limit

ensure_qmplex()

from . import hotplug, rows  # noqa: E402
from .workload import Skip  # noqa: E402

_RESULTS: dict[tuple[str, str], float] = {}
_ROWS = {row.key: row for row in rows.make_rows()}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-quick", action="store_true",
                     help="small counts, one round (also chosen by CI=quick)")


@pytest.fixture(scope="session")
def bench_ctx(request: pytest.FixtureRequest) -> Iterator[rows.Context]:
    quick = request.config.getoption("--bench-quick") or os.environ.get("CI") == "quick"
    counts = rows.Counts.quick() if quick else rows.Counts()
    raise_fd_limit(4 * counts.vms + 512)
    build_peer()
    pin_self()
    with FakePeer() as peer:
        yield rows.Context(counts, peer, None)


@pytest.fixture(scope="session")
def qemu_vm() -> Iterator[hotplug.QemuVM]:
    try:
        vm = hotplug.QemuVM()
    except Skip as exc:
        pytest.skip(str(exc))
    yield vm
    vm.stop()


Measure = Callable[..., float]


@pytest.fixture
def measure(benchmark: Any, bench_ctx: rows.Context) -> Measure:
    """``measure(row_key, impl, vm=None)``: benchmark one implementation of one row."""

    def run(row_key: str, impl: str, vm: hotplug.QemuVM | None = None) -> float:
        row = _ROWS[row_key]
        ctx = replace(bench_ctx, vm=vm)
        if row.describe is not None:
            row.detail = row.describe(ctx.counts)
        workload = next(w for w in row.make(ctx) if w.impl == impl)
        try:
            workload.open()
        except Skip as exc:
            pytest.skip(str(exc))
        values: list[float] = []
        try:
            benchmark.group = f"{row.title} ({row.unit})"
            benchmark.pedantic(lambda: values.append(workload.run()),
                               setup=workload.before, teardown=workload.after,
                               rounds=rows._rounds(row, workload, ctx.counts), iterations=1)
        finally:
            workload.close()
        if not values:  # --benchmark-disable ran nothing through pedantic
            return float("nan")
        value = statistics.median(values)
        benchmark.extra_info[row.unit] = value
        benchmark.extra_info["count"] = workload.count
        _RESULTS[(row_key, impl)] = value
        return value

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS:
        return
    from .run import fmt_ratio, fmt_value

    tr = terminalreporter
    tr.section("qmplex vs the raw floor (medians, same session)")
    for key, row in _ROWS.items():
        got = {impl: v for (k, impl), v in _RESULTS.items() if k == key}
        if "qmplex" not in got:
            continue
        cells = ", ".join(f"{impl} {fmt_value(v, row.unit)}" for impl, v in got.items())
        row.results = [rows.Result(impl, runs=[v]) for impl, v in got.items()]
        from .run import speed_ratio

        tr.write_line(f"{row.title}: {cells}; qmplex/floor "
                      f"{fmt_ratio(speed_ratio(row, 'qmplex', 'floor'))}")
