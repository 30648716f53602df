"""Malformed peer input: each kind yields a typed ``ProtocolError`` carrying a bounded
excerpt of the offending bytes, and the connection either continues or closes cleanly
as the table in ``qmplex.core.protocol``'s docstring says:

=====================================================  =========  =====================
input (connection READY)                               rule       error
=====================================================  =========  =====================
invalid JSON / invalid UTF-8 / NUL / too deep, in a    close      DecodeError
line that starts like a reply (``{"return"``...)
the same in a wanted event line or an unclassified     continue   DecodeError
line
JSON that is not an object                             continue   DecodeError
event without a name (missing, empty, not a string)    continue   ProtocolError
reply whose id matches nothing, duplicate reply,       dropped    none: counted in
reply without id while nothing is in flight                       stale_replies
a second greeting, an object of unknown kind           continue   ProtocolError
line longer than ``max_line_bytes``                    close      LineTooLong
first line not a greeting, or not JSON                 close      Greeting/DecodeError
=====================================================  =========  =====================

An event line nobody subscribed to is dropped before it is decoded, so garbage in it
costs nothing and reports nothing (counted in ``Client.dropped_events``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qmplex
from qmplex import (
    Client,
    ClientState,
    ConnectionLost,
    DecodeError,
    GreetingError,
    LineTooLong,
    NegotiationError,
    ProtocolError,
    Reactor,
)
from qmplex.core.messages import Event, Greeting, Reply, StaleReply
from qmplex.core.protocol import Protocol, State
from qmplex.errors import EXCERPT_BYTES

from .helpers import GREETING_LINE, FastPeer

DEEP = 1500  # orjson refuses nesting deeper than 1024; fits the 4096-byte limit


@pytest.fixture
def fpeer() -> Iterator[FastPeer]:
    with Reactor() as r:
        client = Client(r, max_line_bytes=4096)
        p = FastPeer(r, client)
        p.handshake()
        yield p
        client.close()
        p.close()
        assert r.watched_fds() == 0


Bad = Callable[[int], bytes]  # id of a command in flight -> the bad line

CONTINUE: list[tuple[str, Bad, type[ProtocolError], bool]] = [
    # name, bad line, error type, needs a catch-all subscriber to be decoded
    ("event invalid JSON", lambda i: b'{"event": "X", "data": {bro ken}', DecodeError, True),
    ("event invalid UTF-8", lambda i: b'{"event": "X", "data": {"s": "\xff\xfe"}}',
     DecodeError, True),
    ("event NUL bytes", lambda i: b'{"event": "X", "data": {"s": "a\x00b"}}', DecodeError, True),
    ("event too deep", lambda i: b'{"event": "X", "data": ' + b"[" * DEEP + b"]" * DEEP + b"}",
     DecodeError, True),
    ("bare NULs", lambda i: b"\x00\x00\x00\x00", DecodeError, False),
    ("unclassified invalid JSON", lambda i: b'{"id": 999, "return": {bro', DecodeError, False),
    ("array", lambda i: b"[1, 2, 3]", DecodeError, False),
    ("string", lambda i: b'"hello"', DecodeError, False),
    ("number", lambda i: b"42", DecodeError, False),
    ("null", lambda i: b"null", DecodeError, False),
    ("deep array", lambda i: b"[" * DEEP + b"]" * DEEP, DecodeError, False),
    ("event without name", lambda i: b'{"timestamp": {"seconds": 1}, "data": {}}',
     ProtocolError, False),
    ("event empty name", lambda i: b'{"event": "", "data": {}}', ProtocolError, False),
    ("event null name", lambda i: b'{"event": null}', ProtocolError, False),
    ("event numeric name", lambda i: b'{"event": 7, "data": {}}', ProtocolError, False),
    ("second greeting", lambda i: GREETING_LINE.strip(), ProtocolError, False),
    ("unknown kind", lambda i: b'{"hello": "world"}', ProtocolError, False),
]

CLOSE: list[tuple[str, Bad, type[ProtocolError]]] = [
    ("reply invalid JSON", lambda i: b'{"return": {bro ken', DecodeError),
    ("reply invalid UTF-8", lambda i: b'{"return": "\xc3\x28", "id": %d}' % i, DecodeError),
    ("reply NUL bytes", lambda i: b'{"return": "a\x00b", "id": %d}' % i, DecodeError),
    ("reply too deep", lambda i: b'{"return": ' + b"[" * DEEP + b"]" * DEEP + b', "id": %d}' % i,
     DecodeError),
    ("error invalid JSON", lambda i: b'{"error": nope}', DecodeError),
    ("line too long", lambda i: b'{"return": "' + b"a" * 5000 + b'"}', LineTooLong),
]


def _errors(p: FastPeer) -> list[ProtocolError]:
    errors: list[ProtocolError] = []
    p.client.on_error(errors.append)
    return errors


def _check_excerpt(err: ProtocolError, line: bytes) -> None:
    assert err.excerpt, "no excerpt"
    assert len(err.excerpt) <= EXCERPT_BYTES + 3
    body = err.excerpt.removesuffix(b"...")
    assert line.startswith(body), (err.excerpt, line[:50])
    assert repr(err.excerpt)[:20] in str(err) or str(err)


@pytest.mark.parametrize(("case", "bad", "kind", "subscribe"), CONTINUE,
                         ids=[c[0] for c in CONTINUE])
def test_bad_input_is_reported_and_connection_continues(
    fpeer: FastPeer, case: str, bad: Bad, kind: type[ProtocolError], subscribe: bool
) -> None:
    c = fpeer.client
    errors = _errors(fpeer)
    seen: list[Event] = []
    if subscribe:
        c.on_event(seen.append)
    fut = c.execute("query-status")
    (cmd,) = fpeer.read()
    line = bad(cmd["id"])
    fpeer.send(line + b"\r\n")
    fpeer.reply(cmd, {"status": "ok"})
    fpeer.event("AFTER")
    fpeer.pump()
    assert fut.result(0) == {"status": "ok"}, case  # the stream stayed in sync
    assert c.state is ClientState.READY
    assert len(errors) == 1, errors
    assert type(errors[0]) is kind, errors
    _check_excerpt(errors[0], line)
    if subscribe:
        assert [e.name for e in seen] == ["AFTER"]


STALE: list[tuple[str, Bad]] = [
    ("reply unknown id", lambda i: b'{"return": {}, "id": 4242}'),
    ("reply unhashable id", lambda i: b'{"return": {}, "id": [1]}'),
    ("error reply unknown id", lambda i: b'{"error": {"class": "X", "desc": "y"}, "id": "zz"}'),
    ("reply without id, nothing in flight", lambda i: b'{"return": {}}'),
]


@pytest.mark.parametrize(("case", "bad"), STALE, ids=[c[0] for c in STALE])
def test_stale_replies_are_dropped_and_counted_not_reported(
    fpeer: FastPeer, case: str, bad: Bad
) -> None:
    """A reply to no command in flight is what QEMU hands a new client when the one
    before it left commands running: not the peer's fault, so never an error."""
    c = fpeer.client
    errors = _errors(fpeer)
    before = c.stale_replies
    fpeer.send(bad(0) + b"\r\n")
    fpeer.pump()
    fut = c.execute("query-status")
    (cmd,) = fpeer.read()
    fpeer.reply(cmd, {"status": "ok"})
    fpeer.pump()
    assert fut.result(0) == {"status": "ok"}, case
    assert errors == [] and c.state is ClientState.READY
    assert c.stale_replies == before + 1


@pytest.mark.parametrize(("case", "bad", "kind"), CLOSE, ids=[c[0] for c in CLOSE])
def test_bad_input_closes_the_connection_cleanly(
    case: str, bad: Bad, kind: type[ProtocolError]
) -> None:
    with Reactor() as r:
        victim = Client(r, max_line_bytes=4096)
        bystander = Client(r)
        p, q = FastPeer(r, victim), FastPeer(r, bystander)
        p.handshake()
        q.handshake()
        errors = _errors(p)
        futs = [victim.execute("x", {"i": i}) for i in range(10)]
        wait = victim.wait_event("SHUTDOWN")
        other = bystander.execute("y")
        sent = p.read()
        (oc,) = q.read()
        line = bad(sent[0]["id"])
        p.send(line + b"\r\n")
        p.pump()
        assert victim.state is ClientState.DISCONNECTED, case
        for f in futs + [wait]:
            exc = f.exception(0)
            assert isinstance(exc, ConnectionLost)
            root = exc.__cause__.__cause__ if exc.__cause__ is not None else None
            assert type(root) is kind, (exc, root)
        assert len(errors) == 1 and type(errors[0]) is kind
        _check_excerpt(errors[0], line)
        if kind is LineTooLong:
            assert isinstance(errors[0], LineTooLong)
            assert errors[0].limit == 4096 and errors[0].received > 4096
        assert r.watched_fds() == 1  # the victim is unregistered, the bystander stays
        q.reply(oc, "fine")
        q.pump()
        assert other.result(0) == "fine"
        victim.close()
        bystander.close()
        p.close()
        q.close()


def test_duplicate_reply_is_dropped_and_counted(fpeer: FastPeer) -> None:
    c = fpeer.client
    errors = _errors(fpeer)
    before = c.stale_replies
    fut = c.execute("x")
    nxt = c.execute("y")
    m1, m2 = fpeer.read()
    fpeer.reply(m1, "first")
    fpeer.reply(m1, "again")
    fpeer.reply(m2, "second")
    fpeer.pump()
    assert fut.result(0) == "first" and nxt.result(0) == "second"
    assert errors == [] and c.stale_replies == before + 1


def test_garbage_in_unwanted_event_is_dropped_undecoded(fpeer: FastPeer) -> None:
    c = fpeer.client
    errors = _errors(fpeer)
    before = c.dropped_events
    fpeer.send(b'{"event": "NOBODY_WANTS", "data": {\xff\x00 garbage\r\n')
    fut = c.execute("x")
    (cmd,) = fpeer.read()
    fpeer.reply(cmd, 1)
    fpeer.pump()
    assert fut.result(0) == 1
    assert errors == [] and c.dropped_events == before + 1


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (b"SSH-2.0-OpenSSH_9.2", DecodeError),
        (b"[1, 2]", GreetingError),
        (b'{"QMP": {"version": {"qemu": {"major": "x"}}}}', GreetingError),
        (b'{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, '
         b'"capabilities": "oob"}}', GreetingError),
        (b"\xff\xfe\x00", DecodeError),
    ],
    ids=["ssh banner", "array", "bad version", "bad capabilities", "binary"],
)
def test_bad_greeting_fails_connect(first: bytes, kind: type[ProtocolError]) -> None:
    """The connect future fails with the error, and only it: nothing goes to on_error
    (that is for errors of an established connection). A reply before the greeting is
    not one of these: it is a previous client's, dropped (test_connection_contract)."""
    with Reactor() as r:
        client = Client(r)
        p = FastPeer(r, client)
        errors = _errors(p)
        queued = client.execute("query-status")
        p.send(first + b"\r\n")
        p.pump()
        exc = p.connect_future.exception(0)
        assert type(exc) is kind, exc
        assert isinstance(exc, ProtocolError) and exc.excerpt
        assert isinstance(queued.exception(0), ConnectionLost)
        assert errors == []
        assert r.watched_fds() == 0
        client.close()
        p.close()


def test_negotiation_refused() -> None:
    with Reactor() as r:
        client = Client(r)
        p = FastPeer(r, client)
        p.send(GREETING_LINE)
        (neg,) = p.read()
        p.reply(neg, error=("GenericError", "no"))
        p.pump()
        exc = p.connect_future.exception(0)
        assert isinstance(exc, NegotiationError) and "no" in str(exc)
        client.close()
        p.close()


# ---------------------------------------------------------------- sans-I/O invariant
def _ready_protocol() -> tuple[Protocol, list[int]]:
    proto = Protocol(4096)
    proto.receive_data(GREETING_LINE)
    neg = orjson.loads(proto.negotiate(100))
    proto.receive_data(b'{"return": {}, "id": %d}\r\n' % neg["id"])
    assert proto.state is State.READY
    ids = []
    for i in range(3):
        cid = 101 + i
        proto.sent(cid, i)
        ids.append(cid)
    return proto, ids


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.integers(0, 6)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=10,
)
_lines = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: orjson.dumps(v)),
    st.tuples(st.sampled_from([b'{"return": ', b'{"error": ', b'{"event": "', b'{"QMP": ',
                               b'{"id": ']),
              st.binary(max_size=60)).map(lambda ht: ht[0] + ht[1]),
    st.dictionaries(st.sampled_from(["return", "error", "event", "id", "data", "QMP"]),
                    _json_values, max_size=4).map(lambda d: orjson.dumps(d)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_lines, max_size=8), st.integers(1, 64))
def test_protocol_either_parses_or_raises_protocol_error(lines: list[bytes], chunk: int) -> None:
    """h11's fuzz invariant at the protocol layer: any bytes, any chunking, give only
    known values (a ProtocolError among them); a fatal error closes the protocol and
    nothing is raised."""
    proto, _ = _ready_protocol()
    stream = b"".join(line.replace(b"\n", b" ") + b"\r\n" for line in lines)
    for i in range(0, len(stream), chunk):
        out = proto.receive_data(stream[i:i + chunk])
        for m in out:
            assert isinstance(m, (Reply, Event, ProtocolError, Greeting, StaleReply)), m
            if isinstance(m, ProtocolError):
                assert m.excerpt and len(m.excerpt) <= EXCERPT_BYTES + 3
            if isinstance(m, StaleReply):
                assert len(m.excerpt) <= EXCERPT_BYTES + 3
            if isinstance(m, Reply):
                assert m.token in (0, 1, 2)
        if proto.state is State.CLOSED:
            # A fatal error: the last value, kept in .error; nothing more comes.
            assert out and out[-1] is proto.error
            assert isinstance(proto.error, ProtocolError)
            assert proto.receive_data(b'{"return": {}, "id": 101}\r\n') == []
            return
    assert proto.state is State.READY


def test_a_million_levels_of_nesting_do_not_crash_the_process() -> None:
    """A 2 MB line of brackets (under the default 64 MiB line limit) used to overflow
    the C stack inside orjson < 3.9.15 (CVE-2024-27454): run it in a child process so
    a crash is a failure, not the end of the test run."""
    code = (
        "from qmplex.core.protocol import Protocol, State\n"
        "from qmplex import DecodeError\n"
        "import sys\n"
        "p = Protocol()\n"
        "p.receive_data(sys.argv[1].encode() + b'\\r\\n')\n"
        "p.negotiate(1)\n"
        "p.receive_data(b'{\"return\": {}, \"id\": 1}\\r\\n')\n"
        "assert p.state is State.READY\n"
        "n = 1_000_000\n"
        "out = p.receive_data(b'{\"event\": \"X\", \"data\": ' + b'[' * n + b']' * n"
        " + b'}\\r\\n')\n"
        "assert [type(m) for m in out] == [DecodeError], out\n"
        "out = p.receive_data(b'{\"return\": ' + b'{\"a\":' * n + b'1' + b'}' * n"
        " + b'}\\r\\n')\n"
        "assert p.state is State.CLOSED and out == [p.error], out\n"
        "assert isinstance(p.error, DecodeError)\n"
        "print('fatal', p.error.excerpt[:20])\n"
    )
    src = str(Path(qmplex.__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code, GREETING_LINE.strip().decode()],
                         env=dict(os.environ, PYTHONPATH=src), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("fatal"), out.stdout
