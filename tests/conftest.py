"""Shared fixtures: a reactor with a leak check, a hand-driven peer, the fake server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from qmplex import Client, Reactor

from .peer import ScriptedPeer


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    """A reactor that must end the test with no registrations, no live timers and no
    callbacks waiting to run (a test must finish what it started)."""
    r = Reactor()
    yield r
    # What the test's last steps scheduled (a close's callbacks) may run; then nothing
    # may be left: no callback that keeps scheduling itself, no live timer.
    for _ in range(10):
        if not r.pending_callbacks():
            break
        r.run_once(0)
    assert r.pending_callbacks() == 0, f"{r.pending_callbacks()} callback(s) left to run"
    assert r.watched_fds() == 0, "a socket is still registered with the reactor"
    assert r.pending_timers() == 0, f"{r.pending_timers()} timer(s) left scheduled"
    r.close()


@pytest.fixture
def peer(reactor: Reactor) -> Iterator[ScriptedPeer]:
    """A client (``peer.client``) connected to a hand-driven peer, handshake done."""
    before = _open_fds()
    client = Client(reactor)
    p = ScriptedPeer(reactor, client)
    p.handshake()
    yield p
    client.close()
    p.close()
    assert _open_fds() <= before, "file descriptors leaked"
