"""Property tests for the sans-I/O protocol: for any session and any chunking (whole,
cut anywhere, byte by byte) and either splitter, ``receive_data`` returns what a model
of the session says, in stream order: every command's reply exactly once, the events
somebody wants (the others dropped and counted), stale replies noted, events before the
greeting skipped and counted. And for any bytes at all it raises nothing: a fatal
error is the last value it returns, and then nothing more comes out."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmplex.core.framing import C_AVAILABLE, RouteTable
from qmplex.core.messages import Event, Greeting, QMPVersion, Reply, StaleReply
from qmplex.core.protocol import Protocol, State
from qmplex.errors import ProtocolError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMPLS = ["c", "python"] if C_AVAILABLE else ["python"]

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": []}}\n')
VERSION = QMPVersion(7, 2, 0, "", ())
NEG_ID = 0
NAMES = ["STOP", "RESUME", "DEVICE_DELETED", "BLOCK_JOB_COMPLETED"]


def state(proto: Protocol) -> State:
    """The protocol's state (a call: mypy does not narrow it across receive_data)."""
    return proto.state


def summary(values: list[Any]) -> list[Any]:
    """Values with errors made comparable: (class name, excerpt)."""
    return [(type(v).__name__, v.excerpt) if isinstance(v, ProtocolError) else v
            for v in values]


def event_line(name: str, n: int, order: int) -> tuple[bytes, Event]:
    """An event line in one of three key orders, and the Event it means."""
    ts = {"seconds": 1700000000 + n, "microseconds": n % 1000000}
    data = {"device": f"d{n}", "n": n}
    if order == 0:  # QEMU's own order: the splitter routes it
        msg: dict[str, Any] = {"timestamp": ts, "event": name, "data": data}
    elif order == 1:  # name first: routed too
        msg = {"event": name, "data": data, "timestamp": ts}
    else:  # data first: the splitter cannot tell, the protocol decodes and filters
        msg = {"data": data, "event": name, "timestamp": ts}
    line = orjson.dumps(msg) + (b"\r\n" if n % 3 == 0 else b"\n")
    return line, Event(name, data, ts["seconds"] + ts["microseconds"] / 1e6)


Session = tuple[Any, int, list[bytes], bytes, bytes, list[Any], int, int]


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """``(routes, commands, early events, phase 1, phase 2, expected values of phase 2,
    expected dropped events, expected stale replies)``.

    Phase 1 is what comes before the greeting, and the greeting; phase 2 starts with
    the reply to qmp_capabilities, then replies to the commands (in any order), events,
    stale replies and harmless garbage.
    """
    subscribed = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
    routes = draw(st.sampled_from([None, RouteTable(subscribed),
                                   RouteTable(subscribed, catch_all=True)]))
    early = [event_line(name, i, order)[0] for i, (name, order) in enumerate(draw(
        st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 2)), max_size=3)))]
    phase1 = b"".join(early) + draw(st.sampled_from([b"", b"\n", b" \r\n"])) + GREETING

    commands = draw(st.integers(0, 12))
    order = draw(st.permutations(range(commands)))
    extras = draw(st.lists(st.one_of(
        st.tuples(st.just("event"), st.sampled_from(NAMES), st.integers(0, 2)),
        st.tuples(st.just("stale"), st.sampled_from([7, "old", 1000]), st.just(0)),
        st.tuples(st.just("garbage"), st.sampled_from(["not json", '{"x": 1}']), st.just(0)),
    ), max_size=30))
    # Interleave the replies (in their order) with the other lines.
    slots = draw(st.lists(st.integers(0, len(extras)), min_size=commands,
                          max_size=commands))
    items: list[tuple[Any, ...]] = list(extras)
    for index, slot in sorted(zip(order, slots, strict=True), key=lambda x: x[1],
                              reverse=True):
        items.insert(slot, ("reply", index, draw(st.booleans())))

    lines = [b'{"return": {}, "id": %d}\n' % NEG_ID]
    expected: list[Any] = []
    dropped = stale = 0
    for n, (kind, arg, extra) in enumerate(items):
        if kind == "event":
            line, event = event_line(arg, n, extra)
            lines.append(line)
            if routes is None or routes.catch_all or arg in routes.names:
                expected.append(event)
            else:
                dropped += 1
        elif kind == "reply":
            body: dict[str, Any] = (
                {"return": {"n": n}} if extra
                else {"error": {"class": "GenericError", "desc": f"no {n}"}}
            )
            lines.append(orjson.dumps({**body, "id": 100 + arg}) + b"\n")
            expected.append(Reply(f"cmd{arg}", extra, body["return" if extra else "error"]))
        elif kind == "stale":
            line = orjson.dumps({"return": {}, "id": arg})
            lines.append(line + b"\n")
            expected.append(StaleReply(arg, line))
            stale += 1
        else:
            lines.append(arg.encode() + b"\n")
            expected.append(("DecodeError" if arg == "not json" else "ProtocolError",
                             arg.encode()))
    return (routes, commands, early, phase1, b"".join(lines), expected, dropped, stale)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Whole, byte by byte, or cut anywhere."""
    return st.one_of(
        st.just([data]),
        st.just([data[i : i + 1] for i in range(len(data))]),
        st.lists(st.integers(0, len(data)), max_size=10).map(lambda cuts: chunks(data, cuts)),
    )


@SETTINGS
@given(stream=sessions(), data=st.data())
def test_any_chunking_and_either_splitter_give_what_the_session_means(
        stream: Session, data: st.DataObject) -> None:
    routes, commands, early, phase1, phase2, expected, dropped, stale = stream
    chunks1 = data.draw(chunkings(phase1))
    chunks2 = data.draw(chunkings(phase2))
    for impl in IMPLS:
        proto = Protocol(routes=routes, splitter_impl=impl)
        got: list[Any] = []
        for chunk in chunks1:
            got += proto.receive_data(chunk)
        assert got == [Greeting(VERSION)]
        assert proto.events_before_greeting == len(early)
        assert proto.state is State.NEGOTIATING
        proto.negotiate(NEG_ID)
        # Recorded before the negotiation reply is read, so that their replies may
        # come in the batch that ends negotiation.
        for i in range(commands):
            proto.sent(100 + i, f"cmd{i}")
        got = []
        for chunk in chunks2:
            got += proto.receive_data(chunk)
        assert summary(got) == expected, impl
        assert state(proto) is State.READY and proto.error is None
        assert (proto.dropped_events, proto.stale_replies) == (dropped, stale)
        assert proto.in_flight == 0
        # Every command got its reply exactly once.
        tokens = sorted(v.token for v in got if type(v) is Reply)
        assert tokens == sorted(f"cmd{i}" for i in range(commands))
        assert proto.close() == []


# --- Nothing raised, whatever the bytes ------------------------------------------------------

QMP_LINES = [
    GREETING.rstrip(b"\n"),
    b'{"return": {}, "id": 0}',
    b'{"return": {}, "id": 1}',
    b'{"return": {}, "id": 2}',
    b'{"error": {"class": "GenericError", "desc": "x"}, "id": 0}',
    b'{"error": "flat"}',
    b'{"return": {}}',
    b'{"return": 1, "id": [1]}',
    b'{"return": 1, "id": {"a": 1}}',
    b'{"id": 1, "return": 3}',
    b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP", "data": {"a": 1}}',
    b'{"event": "RESUME", "data": [1], "timestamp": "x"}',
    b'{"data": {}, "event": "STOP"}',
    b'{"event": "ST\\u004fP"}',
    b'{"event": 1}',
    b'{"event": "STOP", BROKEN',
    b'{"QMP": {"version": {"qemu": {"major": "x"}}}}',
    b'{"QMP": 1}',
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 1}, "package": 5}}}',
    b"[1]",
    b"null",
    b'"str"',
    b"{}",
    b"",
    b"   ",
]
PIECES = [b"{", b"}", b"[", b"]", b'"', b":", b",", b" ", b"\r", b"\\", b"\xff", b"1",
          b'"event"', b'"return"', b'"error"', b'"QMP"', b'"id"', b'"STOP"', b'"data"']
fuzz_line = st.one_of(
    st.sampled_from(QMP_LINES),
    st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join),
    st.binary(max_size=30),
    st.just(b'{"return": "' + b"x" * 120 + b'"}'),  # over the lower limit
)


@st.composite
def fuzz_streams(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.tuples(fuzz_line, st.sampled_from([b"\n", b"\r\n"])),
                          max_size=20))
    return b"".join(a + b for a, b in parts) + draw(fuzz_line)


ALLOWED = (Greeting, Reply, Event, StaleReply)


@SETTINGS
@given(
    start=st.sampled_from(["greeting", "negotiating", "ready"]),
    stream=fuzz_streams(),
    routes=st.sampled_from([None, RouteTable(["STOP"]), RouteTable(["RESUME"], catch_all=True)]),
    max_line=st.sampled_from([len(GREETING), 2**20]),  # the greeting fits
    data=st.data(),
)
def test_receive_data_raises_nothing(start: str, stream: bytes, routes: RouteTable | None,
                                     max_line: int, data: st.DataObject) -> None:
    """h11's invariant, for the protocol: bytes are either understood, or reported as
    ProtocolError values; nothing is ever raised."""
    pieces = data.draw(chunkings(stream))
    for impl in IMPLS:
        proto = Protocol(max_line, routes=routes, splitter_impl=impl)
        tokens: set[str] = set()

        def after_greeting(proto: Protocol = proto, tokens: set[str] = tokens) -> None:
            if proto.state is not State.NEGOTIATING:
                return  # a fatal error came in the same batch: the caller closes
            proto.negotiate(NEG_ID)
            for cid in (1, 2):
                proto.sent(cid, f"cmd{cid}")
                tokens.add(f"cmd{cid}")

        if start != "greeting":
            assert proto.receive_data(GREETING) == [Greeting(VERSION)]
            after_greeting()
            if start == "ready":
                assert proto.receive_data(b'{"return": {}, "id": 0}\n') == []
                assert proto.state is State.READY
        errors: list[ProtocolError] = []
        replied: list[Any] = []
        for piece in pieces:
            was_closed = proto.state is State.CLOSED
            values = proto.receive_data(piece)
            if was_closed:
                assert values == []
            for v in values:
                assert isinstance(v, ALLOWED) or isinstance(v, ProtocolError), v
                if type(v) is Greeting:
                    after_greeting()
                elif type(v) is Reply:
                    replied.append(v.token)
                elif isinstance(v, ProtocolError):
                    errors.append(v)
            if proto.state is State.CLOSED and not was_closed:
                assert values and values[-1] is proto.error
        assert len(replied) == len(set(replied)) and set(replied) <= tokens
        if proto.error is None:
            assert proto.state is not State.CLOSED
        else:
            assert proto.state is State.CLOSED and errors[-1] is proto.error
        assert min(proto.dropped_events, proto.stale_replies,
                   proto.events_before_greeting) >= 0
        left = proto.close()
        assert sorted(left + replied) == sorted(tokens)
