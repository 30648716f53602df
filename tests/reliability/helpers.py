"""Test doubles for the reliability suites: a fake clock, a faster hand-driven peer,
and an automatic QMP responder that lives on the client's own reactor.

The responder (``AutoPeer`` / ``AutoServer``) answers without the test's help, so
suites that run thousands of round trips (leak cycles, threads blocked in
``Future.result()``) need no hand-driving and no second thread.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import orjson

from qmplex import Client, Reactor

from ..peer import GREETING, ScriptedPeer

GREETING_LINE = orjson.dumps(GREETING) + b"\r\n"


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FastPeer(ScriptedPeer):
    """``ScriptedPeer`` whose ``pump`` never waits: a socketpair delivers at once, so
    a few non-blocking passes move every byte (keeps property tests fast)."""

    def pump(self, turns: int = 4) -> None:
        for _ in range(turns):
            self.reactor.run_once(0)


def open_fds() -> set[int]:
    """The descriptors open in this process now."""
    return {int(x) for x in os.listdir("/proc/self/fd")}


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


Responder = Callable[[dict[str, Any]], Any]


class AutoPeer:
    """The server side of one QMP connection, driven by the reactor it shares with the
    client: greets, accepts ``qmp_capabilities`` and answers each command with
    ``respond(msg)`` (default ``{}``; ``None`` means no answer)."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        respond: Responder | None = None,
        *,
        on_close: Callable[[AutoPeer], object] | None = None,
    ) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.respond = respond
        self.on_close = on_close
        self.commands = 0
        self._in = b""
        self._out = bytearray()
        self._writing = False
        sock.setblocking(False)
        reactor.add_reader(self.fd, self._on_readable)
        self.write(GREETING_LINE)

    def write(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        try:
            while self._out:
                n = self.sock.send(self._out)
                del self._out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            return
        if self._out and not self._writing:
            self._writing = True
            self.reactor.add_writer(self.fd, self._flush)
        elif not self._out and self._writing:
            self._writing = False
            self.reactor.remove_writer(self.fd)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        *lines, self._in = (self._in + data).split(b"\n")
        out = bytearray()
        for line in lines:
            if not line.strip():
                continue
            msg = orjson.loads(line)
            name = msg.get("execute") or msg.get("exec-oob")
            if name == "qmp_capabilities":
                value: Any = {}
            else:
                self.commands += 1
                value = {} if self.respond is None else self.respond(msg)
                if value is None:
                    continue
            out += orjson.dumps({"return": value, "id": msg.get("id")}) + b"\r\n"
        if out:
            self.write(bytes(out))

    def close(self) -> None:
        if self.fd < 0:
            return
        if not self.reactor.closed:
            self.reactor.remove_reader(self.fd)
            self.reactor.remove_writer(self.fd)
        self.fd = -1
        self.sock.close()
        if self.on_close is not None:
            self.on_close(self)


def auto_pair(
    reactor: Reactor, client: Client, respond: Responder | None = None
) -> AutoPeer:
    """Connect ``client`` to an ``AutoPeer`` over a socketpair (handshake not awaited)."""
    ours, theirs = socket.socketpair()
    peer = AutoPeer(reactor, ours, respond)
    client.connect_socket(theirs)
    return peer


class AutoServer:
    """A Unix-socket QMP server on the reactor, in a private (0700) directory that
    :meth:`close` removes. Each accepted connection gets an :class:`AutoPeer`."""

    def __init__(self, reactor: Reactor, respond: Responder | None = None) -> None:
        self.reactor = reactor
        self.respond = respond
        self.dir = tempfile.mkdtemp(prefix="qmplex-rel-")  # mkdtemp makes it 0700
        self.path = os.path.join(self.dir, "qmp.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.peers: set[AutoPeer] = set()
        self.accepted = 0
        reactor.add_reader(self.listener.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        self.peers.add(AutoPeer(self.reactor, sock, self.respond, on_close=self.peers.discard))

    def close(self) -> None:
        for p in list(self.peers):
            p.close()
        if not self.reactor.closed:
            self.reactor.remove_reader(self.listener.fileno())
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)
