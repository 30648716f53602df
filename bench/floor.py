"""The raw floor: the most direct blocking-socket + orjson code doing each row's work.

No library, no reactor, no futures: ``sendall``, ``recv``, ``bytes.split`` and
``orjson``. These are what a hand-written client for one job would do, and the ratio of
qmplex to them is what the targets are about.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from .workload import Workload

_dumps = orjson.dumps
_loads = orjson.loads
_NL = orjson.OPT_APPEND_NEWLINE
_RECV = 256 * 1024


class RawQMP:
    """A negotiated blocking QMP connection."""

    def __init__(self, path: str, *, oob: bool = False) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(2000):
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError, BlockingIOError):
                time.sleep(0.005)
        else:
            sock.connect(path)
        self.sock = sock
        self.tail = b""
        greeting = self.read_line()
        caps = greeting["QMP"].get("capabilities", [])
        args = {"enable": ["oob"]} if oob and "oob" in caps else {}
        sock.sendall(_dumps({"execute": "qmp_capabilities", "arguments": args, "id": "neg"},
                            option=_NL))
        while True:
            msg = self.read_line()
            if msg.get("id") == "neg":
                if "return" not in msg:
                    raise RuntimeError(f"negotiation failed: {msg}")
                break

    def read_line(self) -> dict[str, Any]:
        while b"\n" not in self.tail:
            data = self.sock.recv(_RECV)
            if not data:
                raise ConnectionError("peer closed")
            self.tail += data
        line, _, self.tail = self.tail.partition(b"\n")
        msg: dict[str, Any] = _loads(line)
        return msg

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------- fake-peer rows
class Serial(Workload):
    """One command, wait for its reply, next command.

    ``poll``: first try a non-blocking ``recv`` for up to that many seconds before the
    blocking one (the busy-polling qmplex's reactor does, done by hand: a variant, not
    the floor); ``cpu``: return the CPU seconds this process spent per command instead
    of the rate.
    """

    impl = "floor"

    def __init__(self, path: str, n: int, *, poll: float = 0.0, cpu: bool = False) -> None:
        self.path, self.count, self.poll, self.cpu = path, n, poll, cpu
        if poll:
            self.impl = "floor, busy-poll"

    def open(self) -> None:
        self.conn = RawQMP(self.path)

    def run(self) -> float:
        n, poll = self.count, self.poll
        sock = self.conn.sock
        send, recv = sock.sendall, sock.recv
        c0, t0 = time.process_time(), time.perf_counter()
        if not poll:
            for i in range(n):
                send(_dumps({"execute": "query-status", "id": i}, option=_NL))
                data = recv(_RECV)
                while not data.endswith(b"\n"):
                    data += recv(_RECV)
                if _loads(data)["id"] != i:
                    raise AssertionError("reply out of order")
        else:
            clock, dontwait = time.perf_counter, socket.MSG_DONTWAIT
            for i in range(n):
                send(_dumps({"execute": "query-status", "id": i}, option=_NL))
                data = b""
                end = clock() + poll
                while True:
                    try:
                        data = recv(_RECV, dontwait)
                        break
                    except BlockingIOError:
                        if clock() >= end:
                            data = recv(_RECV)
                            break
                while not data.endswith(b"\n"):
                    data += recv(_RECV)
                if _loads(data)["id"] != i:
                    raise AssertionError("reply out of order")
        t1, c1 = time.perf_counter(), time.process_time()
        return (c1 - c0) / n if self.cpu else n / (t1 - t0)

    def close(self) -> None:
        self.conn.close()


class Pipelined(Workload):
    """A window of ``window`` commands in flight; each recv refills it in one sendall."""

    impl = "floor"

    def __init__(self, path: str, n: int, window: int = 64) -> None:
        self.path, self.count, self.window = path, n, window

    def open(self) -> None:
        self.conn = RawQMP(self.path)

    def run(self) -> float:
        n, window = self.count, self.window
        sock = self.conn.sock
        send, recv = sock.sendall, sock.recv
        t0 = time.perf_counter()
        sent = min(window, n)
        send(b"".join([_dumps({"execute": "query-status", "id": i}, option=_NL)
                       for i in range(sent)]))
        got = 0
        tail = b""
        while got < n:
            lines = (tail + recv(_RECV)).split(b"\n")
            tail = lines.pop()
            k = 0
            for line in lines:
                if "return" not in _loads(line):
                    raise AssertionError("not a return")
                k += 1
            got += k
            more = min(k, n - sent)
            if more:
                send(b"".join([_dumps({"execute": "query-status", "id": i}, option=_NL)
                               for i in range(sent, sent + more)]))
                sent += more
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self.conn.close()


def flood(conn: RawQMP, n: int, on_event: Callable[[dict[str, Any]], object] | None,
          decode: bool = True) -> int:
    """Ask the peer for ``n`` events and read until the marker; return events seen."""
    sock = conn.sock
    recv = sock.recv
    sock.sendall(_dumps({"execute": "x-flood", "arguments": {"count": n}, "id": "flood"},
                        option=_NL))
    seen = 0
    tail = conn.tail
    conn.tail = b""
    while True:
        lines = (tail + recv(_RECV)).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if decode:
                msg = _loads(line)
                if "event" in msg:
                    seen += 1
                    if on_event is not None:
                        on_event(msg)
                    continue
                if msg.get("id") == "flood":
                    conn.tail = tail
                    return seen
            else:
                if line.startswith(b'{"timestamp"'):
                    seen += 1
                    continue
                if line.startswith(b'{"return"'):
                    conn.tail = tail
                    return seen


class Events(Workload):
    """An event flood; ``mode``: "deliver" (decode, call back), "drop" (decode, drop),
    "split" (find line ends only: no decoding at all, informational)."""

    impl = "floor"

    def __init__(self, path: str, n: int, mode: str) -> None:
        self.path, self.count, self.mode = path, n, mode
        if mode == "split":
            self.impl = "floor, split only"

    def open(self) -> None:
        self.conn = RawQMP(self.path)

    def run(self) -> float:
        delivered = [0]

        def on_event(msg: dict[str, Any]) -> None:
            delivered[0] += 1

        cb = on_event if self.mode == "deliver" else None
        t0 = time.perf_counter()
        seen = flood(self.conn, self.count, cb, decode=self.mode != "split")
        dt = time.perf_counter() - t0
        if seen != self.count or (cb is not None and delivered[0] != self.count):
            raise AssertionError(f"saw {seen} events of {self.count}")
        return self.count / dt

    def close(self) -> None:
        self.conn.close()


class ManyVMs(Workload):
    """``vms`` blocking connections, served round-robin, ``window`` commands at a time."""

    impl = "floor"

    def __init__(self, path: str, vms: int, per_vm: int, window: int = 7) -> None:
        self.path, self.vms, self.per_vm, self.window = path, vms, per_vm, window
        self.count = vms * per_vm

    def open(self) -> None:
        self.conns = [RawQMP(self.path) for _ in range(self.vms)]

    def run(self) -> float:
        window, per_vm = self.window, self.per_vm
        socks = [c.sock for c in self.conns]
        t0 = time.perf_counter()
        done = 0
        while done < per_vm:
            k = min(window, per_vm - done)
            batch = b"".join([_dumps({"execute": "query-status", "id": done + i}, option=_NL)
                              for i in range(k)])
            for s in socks:
                s.sendall(batch)
            for s in socks:
                got = 0
                tail = b""
                while got < k:
                    lines = (tail + s.recv(_RECV)).split(b"\n")
                    tail = lines.pop()
                    for line in lines:
                        _loads(line)
                        got += 1
            done += k
        return self.count / (time.perf_counter() - t0)

    def close(self) -> None:
        for c in self.conns:
            c.close()


class Threads(Workload):
    """``threads`` threads, each with a blocking connection of its own, doing serial
    round trips (what threads without a shared client do; the sockets release the GIL
    while they wait)."""

    impl = "floor"

    def __init__(self, path: str, n: int, threads: int = 4, *, cpu: bool = False) -> None:
        self.path, self.count, self.threads, self.cpu = path, n, threads, cpu

    def open(self) -> None:
        self.conns = [RawQMP(self.path) for _ in range(self.threads)]

    def run(self) -> float:
        per = self.count // self.threads
        start = threading.Barrier(self.threads + 1)

        def worker(conn: RawQMP) -> None:
            send, recv = conn.sock.sendall, conn.sock.recv
            start.wait()
            for i in range(per):
                send(_dumps({"execute": "query-status", "id": i}, option=_NL))
                data = recv(_RECV)
                while not data.endswith(b"\n"):
                    data += recv(_RECV)
                if _loads(data)["id"] != i:
                    raise AssertionError("reply out of order")

        workers = [threading.Thread(target=worker, args=(c,)) for c in self.conns]
        for w in workers:
            w.start()
        start.wait()
        c0, t0 = time.process_time(), time.perf_counter()
        for w in workers:
            w.join()
        t1, c1 = time.perf_counter(), time.process_time()
        done = per * self.threads
        return (c1 - c0) / done if self.cpu else done / (t1 - t0)

    def close(self) -> None:
        for c in self.conns:
            c.close()


class AsyncioSerial(Workload):
    """Serial round trips in a coroutine over asyncio streams: ``writer.write`` of the
    command, ``await reader.readline()``, ``orjson.loads`` (the asyncio floor)."""

    impl = "floor"

    def __init__(self, path: str, n: int) -> None:
        self.path, self.count = path, n

    def run(self) -> float:
        import asyncio

        async def main() -> float:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
            await reader.readline()  # the greeting
            writer.write(_dumps({"execute": "qmp_capabilities", "id": "neg"}, option=_NL))
            await reader.readline()
            try:
                t0 = time.perf_counter()
                for i in range(self.count):
                    writer.write(_dumps({"execute": "query-status", "id": i}, option=_NL))
                    if _loads(await reader.readline())["id"] != i:
                        raise AssertionError("reply out of order")
                return self.count / (time.perf_counter() - t0)
            finally:
                writer.close()

        return asyncio.run(main())
