"""Memory and start-up probes, each run in a fresh interpreter so nothing else skews them.

    python -m bench.memprobe idle IMPL SOCKET N     memory per idle connection
    python -m bench.memprobe flood IMPL SOCKET N    peak RSS over idle during an N-event flood
    python -m bench.memprobe import IMPL            seconds to import the implementation

IMPL is ``qmplex``, ``floor`` or ``qemu.qmp``. Prints one JSON object.
"""

from __future__ import annotations

import sys
import time

if sys.argv[1:2] == ["import"]:
    # Nothing may be imported before the measured import.
    _impl = sys.argv[2]
    _t0 = time.perf_counter()
    if _impl == "qmplex":
        import qmplex  # noqa: F401
    elif _impl == "floor":
        import socket  # noqa: F401

        import orjson  # noqa: F401
    else:
        import qemu.qmp  # noqa: F401
    print('{"seconds": %r}' % (time.perf_counter() - _t0))
    raise SystemExit(0)

import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

from .common import ensure_qmplex, peak_rss_bytes, raise_fd_limit, reset_peak_rss, rss_bytes  # noqa: E402


def _settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def idle(impl: str, path: str, n: int) -> dict[str, Any]:
    """RSS growth per connected, negotiated, idle connection (one warm-up first)."""
    raise_fd_limit(n + 256)
    if impl == "qmplex":
        from qmplex import Reactor

        from .qmplex_impl import connect_many

        reactor = Reactor()
        warm = connect_many(path, 1, reactor)
        base = _settled_rss()
        clients = connect_many(path, n, reactor)
        after = _settled_rss()
        assert len(clients) + len(warm) == n + 1
    elif impl == "floor":
        from .floor import RawQMP

        warm_raw = [RawQMP(path)]
        base = _settled_rss()
        conns = [RawQMP(path) for _ in range(n)]
        after = _settled_rss()
        assert len(conns) + len(warm_raw) == n + 1
    else:
        from qemu.qmp import QMPClient

        loop = asyncio.new_event_loop()

        async def many(k: int) -> list[Any]:
            out = []
            for _ in range(k):
                q = QMPClient("bench")
                await q.connect(path)
                out.append(q)
            return out

        warm_q = loop.run_until_complete(many(1))
        base = _settled_rss()
        qs = loop.run_until_complete(many(n))
        after = _settled_rss()
        assert len(qs) + len(warm_q) == n + 1
    return {"base": base, "after": after, "per_connection": (after - base) / n}


def flood(impl: str, path: str, n: int) -> dict[str, Any]:
    """Peak RSS above the idle, connected process while ``n`` events are delivered to
    a callback that counts them."""
    count = [0]
    if impl == "qmplex":
        import qmplex

        client = qmplex.connect(path, timeout=10)

        def on_event(event: object) -> None:
            count[0] += 1

        client.on_event(on_event, "BENCH_EVENT")
        idle_rss = _settled_rss()
        reset_peak_rss()
        client.execute("x-flood", {"count": n}).result()
    elif impl == "floor":
        from .floor import RawQMP
        from .floor import flood as raw_flood

        conn = RawQMP(path)
        idle_rss = _settled_rss()
        reset_peak_rss()
        raw_flood(conn, n, lambda msg: count.__setitem__(0, count[0] + 1))
    else:
        from qemu.qmp import EventListener, QMPClient

        loop = asyncio.new_event_loop()
        qmp = QMPClient("bench")
        loop.run_until_complete(qmp.connect(path))
        listener = EventListener("BENCH_EVENT")

        async def go() -> None:
            async def consume() -> None:
                while count[0] < n:
                    await listener.get()
                    count[0] += 1

            with qmp.listen(listener):
                task = asyncio.create_task(consume())
                await qmp.execute("x-flood", {"count": n})
                await task

        idle_rss = _settled_rss()
        reset_peak_rss()
        loop.run_until_complete(go())
    peak = peak_rss_bytes()
    if count[0] != n:
        raise AssertionError(f"{count[0]} events of {n}")
    return {"idle": idle_rss, "peak": peak, "over_idle": peak - idle_rss}


def main() -> None:
    what, impl = sys.argv[1], sys.argv[2]
    ensure_qmplex()
    if what == "idle":
        out = idle(impl, sys.argv[3], int(sys.argv[4]))
    elif what == "flood":
        out = flood(impl, sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown probe {what!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
