"""A hand-driven QMP peer on a socketpair, for client tests that need exact control.

The test reads what the client sent and writes replies itself; the client and the
peer share the test's thread, and ``pump`` turns the reactor a bounded number of times.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson

from qmplex import Client, Reactor

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "peer"},
        "capabilities": ["oob"],
    }
}


class ScriptedPeer:
    """The far end of a client's socketpair."""

    def __init__(self, reactor: Reactor, client: Client) -> None:
        self.reactor = reactor
        self.client = client
        self.sock, theirs = socket.socketpair()
        self.sock.setblocking(False)
        self._buf = b""
        self.received: list[dict[str, Any]] = []
        self.connect_future = client.connect_socket(theirs)

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: dict[str, Any] | bytes) -> None:
        data = msg if isinstance(msg, bytes) else orjson.dumps(msg) + b"\r\n"
        self.sock.sendall(data)

    def pump(self, turns: int = 5) -> None:
        for _ in range(turns):
            self.reactor.run_once(0.001)

    def read(self) -> list[dict[str, Any]]:
        """Turn the reactor and return the messages the client sent meanwhile."""
        self.pump()
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        msgs = [orjson.loads(line) for line in lines if line.strip()]
        self.received.extend(msgs)
        return msgs

    def until(self, cond: Callable[[], bool], turns: int = 2000) -> None:
        for _ in range(turns):
            if cond():
                return
            self.reactor.run_once(0.005)
        raise AssertionError("condition not reached")

    def handshake(self, caps: tuple[str, ...] = ("oob",)) -> None:
        greeting = {"QMP": dict(GREETING["QMP"], capabilities=list(caps))}
        self.send(greeting)
        (neg,) = self.read()
        assert neg["execute"] == "qmp_capabilities"
        self.reply(neg, {})
        self.until(self.connect_future.done)
        self.connect_future.result()

    def reply(
        self, cmd: dict[str, Any], value: Any = None, *, error: tuple[str, str] | None = None
    ) -> None:
        if error is not None:
            self.send({"error": {"class": error[0], "desc": error[1]}, "id": cmd["id"]})
        else:
            self.send({"return": {} if value is None else value, "id": cmd["id"]})

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"timestamp": {"seconds": 1, "microseconds": 2}, "event": name}
        if data is not None:
            msg["data"] = data
        self.send(msg)
