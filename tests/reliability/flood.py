"""An event flood against one client with a slow subscriber, run in its own process
so that its peak RSS (``VmHWM``) belongs to the flood alone.

Usage: ``python flood.py EVENTS MODE [QUEUE]`` where MODE is ``inline`` (the default
subscription: no drops, the socket pushes back) or ``queue`` (``on_event(...,
queue=QUEUE)``: bounded backlog, drops counted). Prints one JSON object: events sent,
delivered, dropped, whether order held, the RSS before the flood and the peak.

The peer is a thread writing events as fast as the socket takes them; a command sent
before the flood is answered after it, so its reply must queue behind every event.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import time

from qmplex import Client, Event, Reactor

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": "flood"}, "capabilities": []}}\r\n')
TEMPLATE = (b'{"timestamp": {"seconds": 1700000000, "microseconds": 1}, '
            b'"event": "FLOOD", "data": {"seq": %d, "pad": "xxxxxxxxxxxxxxxx"}}\r\n')
CHUNK = 2000


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB.

    ``VmHWM`` (peak RSS) belongs to this process image alone: ``ru_maxrss`` would not
    do, as the kernel carries the parent's peak over fork and exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def read_lines(sock: socket.socket, n: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(1)  # byte by byte: never read past the lines wanted
        if not chunk:
            raise ConnectionError("client went away")
        buf += chunk
    return buf.split(b"\n")[:n]


def peer(sock: socket.socket, events: int) -> None:
    sock.sendall(GREETING)
    lines = read_lines(sock, 1)  # qmp_capabilities
    sock.sendall(b'{"return": {}, "id": %d}\r\n' % json.loads(lines[0])["id"])
    cmd = json.loads(read_lines(sock, 1)[0])  # query-status, sent once negotiated
    for start in range(0, events, CHUNK):
        sock.sendall(b"".join(TEMPLATE % i for i in range(start, min(events, start + CHUNK))))
    sock.sendall(b'{"return": {"status": "after-flood"}, "id": %d}\r\n' % cmd["id"])
    sock.recv(1)  # until the client closes
    sock.close()


def main() -> None:
    events = int(sys.argv[1])
    mode = sys.argv[2]
    queue = int(sys.argv[3]) if len(sys.argv) > 3 else None
    reactor = Reactor()
    client = Client(reactor)
    ours, theirs = socket.socketpair()
    connected = client.connect_socket(ours)
    state = {"delivered": 0, "next": 0, "in_order": True}

    def slow(event: Event) -> None:
        # A subscriber that does real work per event (a few microseconds).
        hashlib.sha256(repr(event.data).encode()).digest()
        seq = event.data["seq"]
        if mode == "inline":
            state["in_order"] &= seq == state["next"]  # nothing may be skipped
        else:
            state["in_order"] &= seq >= state["next"]  # drops allowed, never reordering
        state["next"] = seq + 1
        state["delivered"] += 1

    sub = client.on_event(slow, "FLOOD", queue=queue if mode == "queue" else None)
    reply = client.execute("query-status")
    base = status_kib("VmRSS")
    thread = threading.Thread(target=peer, args=(theirs, events), daemon=True)
    t0 = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 300
    while not (reply.done() and sub.backlog == 0) and time.monotonic() < deadline:
        reactor.run_once(1.0)
    elapsed = time.perf_counter() - t0
    ok = connected.done() and reply.done() and reply.result() == {"status": "after-flood"}
    client.close()
    thread.join(10)
    reactor.close()
    print(json.dumps({
        "events": events,
        "mode": mode,
        "queue": queue,
        "delivered": state["delivered"],
        "dropped": sub.dropped,
        "in_order": state["in_order"],
        "reply_ok": ok,
        "base_rss_kib": base,
        "peak_rss_kib": status_kib("VmHWM"),
        "seconds": round(elapsed, 2),
    }))


if __name__ == "__main__":
    main()
