"""Leaks and bounds: thousands of connections come and go without leaving a
descriptor, a registration, a timer or a byte of Python memory behind; an event flood
with a slow subscriber stays in bounded memory and loses nothing (or, with a bounded
queue the caller chose, counts exactly what it dropped).

Figures (2 cores): 3,000 connect/execute/close cycles take about 3 s under
``tracemalloc`` and leave under 1 KiB behind (the bound asserted is 64 KiB: a leak of
22 bytes per cycle would exceed it); a flood of
200,000 events raises peak RSS by about 2 MiB over the level before it, 5,000,000
(``slow`` marker) the same: the bound asserted, ``FLOOD_RSS_BOUND_KIB``, is 32 MiB
whatever the number of events.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qmplex
from qmplex import (
    Cancelled,
    Client,
    ConnectError,
    ConnectionLost,
    Reactor,
    Timeout,
)

from .helpers import AutoServer, FakeClock, auto_pair, open_fds

CYCLES = 3_000
ERROR_CYCLES = 2_000
TRACED_GROWTH_BOUND = 64 * 1024
FLOOD_RSS_BOUND_KIB = 32 * 1024
FLOOD_SCRIPT = Path(__file__).with_name("flood.py")


def _settle(reactor: Reactor, server: AutoServer) -> None:
    """Let the server side see every EOF, so its sockets are closed too."""
    for _ in range(1000):
        if not server.peers:
            return
        reactor.run_once(0.01)
    raise AssertionError("server-side connections did not close")


@pytest.fixture
def server() -> Iterator[tuple[Reactor, AutoServer]]:
    with Reactor() as reactor:
        srv = AutoServer(reactor)
        try:
            yield reactor, srv
        finally:
            srv.close()


def _traced_run(
    reactor: Reactor, srv: AutoServer, cycle: Callable[[int], None], n: int
) -> tuple[int, set[int], set[int]]:
    for i in range(200):  # warm caches (orjson, cffi types, logging) first
        cycle(i)
    _settle(reactor, srv)
    gc.collect()
    fds_before = open_fds()
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            cycle(i)
        _settle(reactor, srv)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return growth, fds_before, open_fds()


def test_connect_execute_close_cycles_return_to_baseline(
    server: tuple[Reactor, AutoServer],
) -> None:
    reactor, srv = server

    def cycle(i: int) -> None:
        client = Client(reactor)
        client.connect(srv.path, timeout=5).result(5)
        assert client.execute("query-status", {"i": i}, timeout=5).result(5) == {}
        client.close()

    growth, before, after = _traced_run(reactor, srv, cycle, CYCLES)
    assert after == before, f"descriptors leaked: {sorted(after - before)}"
    assert growth < TRACED_GROWTH_BOUND, f"{growth} bytes still allocated"
    assert reactor.watched_fds() == 1  # the listener only
    assert reactor.pending_timers() == 0
    assert srv.accepted == CYCLES + 200


def test_error_path_cycles_leak_nothing(server: tuple[Reactor, AutoServer]) -> None:
    """Every way a cycle can fail, over and over: refused connect, connect timeout,
    peer gone with commands (and passed fds) pending, cancel, command timeout."""
    reactor, srv = server
    missing = os.path.join(srv.dir, "missing.sock")
    r_fd, w_fd = os.pipe()
    clock = FakeClock()
    with Reactor(clock=clock) as fake:

        def cycle(i: int) -> None:
            kind = i % 5
            if kind == 0:  # nobody listens
                client = Client(reactor)
                assert isinstance(client.connect(missing).exception(5), ConnectError)
                client.close()
            elif kind == 1:  # a peer that never greets: Timeout on the fake clock
                client = Client(fake)
                a, b = socket.socketpair()
                fut = client.connect_socket(b, timeout=1)
                clock.advance(2)
                fake.run_once(0)
                assert isinstance(fut.exception(0), Timeout)
                client.close()
                a.close()
            elif kind == 2:  # peer dies with commands, waits and passed fds pending
                client = Client(reactor)
                client.connect(srv.path, timeout=5).result(5)
                futs = [client.execute("getfd", {"fdname": f"f{j}"}, fds=[r_fd])
                        for j in range(10)]
                futs.append(client.wait_event("SHUTDOWN"))
                for p in list(srv.peers):
                    p.close()
                assert all(isinstance(f.exception(5), ConnectionLost) for f in futs)
                client.close()
            elif kind == 3:  # cancelled while queued (with fds) and while sent
                client = Client(reactor, window=1)
                client.connect(srv.path, timeout=5).result(5)
                sent = client.execute("a")
                queued = client.execute("getfd", {"fdname": "q"}, fds=[r_fd])
                sent.cancel()
                queued.cancel()
                assert client.execute("b").result(5) == {}
                assert isinstance(queued.exception(), Cancelled)
                client.close()
            else:  # a command that times out (fake clock), then close
                client = Client(fake)
                peer = auto_pair(fake, client, respond=lambda m: None)  # never answers
                while client.state is not qmplex.ClientState.READY:
                    fake.run_once(0)
                fut = client.execute("stuck", timeout=1, fds=[r_fd])
                fake.run_once(0)
                clock.advance(2)
                fake.run_once(0)
                assert isinstance(fut.exception(0), Timeout)
                client.close()
                peer.close()

        try:
            growth, before, after = _traced_run(reactor, srv, cycle, ERROR_CYCLES)
            assert after == before, f"descriptors leaked: {sorted(after - before)}"
            assert growth < TRACED_GROWTH_BOUND, f"{growth} bytes still allocated"
            assert reactor.watched_fds() == 1
            assert fake.watched_fds() == 0 and fake.pending_timers() == 0
        finally:
            os.close(r_fd)
            os.close(w_fd)


def _flood(events: int, mode: str, queue: int | None = None) -> dict[str, object]:
    src = str(Path(qmplex.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=src)
    args = [sys.executable, str(FLOOD_SCRIPT), str(events), mode]
    if queue is not None:
        args.append(str(queue))
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600,
                         check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _check_flood(r: dict[str, object], events: int) -> None:
    assert r["reply_ok"], r  # the command queued behind the flood still completed
    assert r["in_order"], r
    growth = int(r["peak_rss_kib"]) - int(r["base_rss_kib"])  # type: ignore[call-overload]
    assert growth < FLOOD_RSS_BOUND_KIB, f"peak RSS grew by {growth} KiB: {r}"
    if r["mode"] == "inline":
        assert r["delivered"] == events and r["dropped"] == 0, r
    else:
        assert r["delivered"] + r["dropped"] == events, r  # type: ignore[operator]


def test_event_flood_with_slow_subscriber_loses_nothing() -> None:
    _check_flood(_flood(200_000, "inline"), 200_000)


def test_event_flood_with_bounded_queue_counts_every_drop() -> None:
    r = _flood(200_000, "queue", 1000)
    _check_flood(r, 200_000)
    assert int(r["dropped"]) > 0  # type: ignore[call-overload]


@pytest.mark.slow
def test_five_million_event_flood_inline() -> None:
    _check_flood(_flood(5_000_000, "inline"), 5_000_000)


@pytest.mark.slow
def test_five_million_event_flood_bounded_queue() -> None:
    _check_flood(_flood(5_000_000, "queue", 10_000), 5_000_000)
