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
    """A reactor that must end the test with no registrations and no live timers."""
    r = Reactor()
    yield r
    assert r.watched_fds() == 0, "a socket is still registered with the reactor"
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
