"""Property tests: the C and Python splitters agree with a naive reference, for any
stream and any chunking, and report nothing but LineTooLong; the routed splitters
agree with each other and with the plain ones."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmplex import framing
from qmplex.errors import LineTooLong
from qmplex.framing import (
    KIND_ERROR,
    KIND_EVENT,
    KIND_GREETING,
    KIND_OTHER,
    KIND_RETURN,
    ROUTE_BASE,
    ROUTED_FIELDS,
    SPAN_FIELDS,
    RouteTable,
    Splitter,
    split_python,
    split_python_routed,
)

Line = tuple[int, bytes, bytes]
Routed = tuple[int, bytes]

IMPLS = ["c", "python"] if framing.C_AVAILABLE else ["python"]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Naive reference: written step by step, independently of both splitters ---------------

WS = b" \t\r"


def _skip_ws(line: bytes, i: int) -> int:
    while i < len(line) and line[i] in WS:
        i += 1
    return i


def _expect(line: bytes, i: int, char: bytes) -> int | None:
    """Skip whitespace, then expect char; return the index after it."""
    i = _skip_ws(line, i)
    if line[i : i + 1] == char:
        return i + 1
    return None


def _name(line: bytes, i: int) -> bytes | None:
    """line[i-1] is an opening quote: return the event name or None."""
    close = line.find(b'"', i)
    if close < 0:
        return None
    name = line[i:close]
    if not name or b"\\" in name or any(c < 0x20 for c in name):
        return None
    return name


def _event_value(line: bytes, i: int) -> bytes | None:
    j = _expect(line, i, b":")
    if j is None:
        return None
    j = _expect(line, j, b'"')
    return None if j is None else _name(line, j)


def naive_classify(line: bytes) -> tuple[int, bytes]:
    i = _expect(line, 0, b"{")
    if i is None:
        return KIND_OTHER, b""
    i = _expect(line, i, b'"')
    if i is None:
        return KIND_OTHER, b""
    close = line.find(b'"', i)
    if close < 0:
        return KIND_OTHER, b""
    key = line[i:close]
    after = close + 1
    if b"\\" in key:
        return KIND_OTHER, b""
    fixed = {b"return": KIND_RETURN, b"error": KIND_ERROR, b"QMP": KIND_GREETING}
    if key in fixed:
        return fixed[key], b""
    name = None
    if key == b"event":
        name = _event_value(line, after)
    elif key == b"timestamp":
        j = _expect(line, after, b":")
        j = None if j is None else _expect(line, j, b"{")
        if j is not None:
            brace = line.find(b"}", j)
            if brace >= 0 and b"{" not in line[j:brace]:
                k = _expect(line, brace + 1, b",")
                if k is not None:
                    k = _skip_ws(line, k)
                    if line[k : k + 7] == b'"event"':
                        name = _event_value(line, k + 7)
    if name is None:
        return KIND_OTHER, b""
    return KIND_EVENT, name


def reference(stream: bytes, max_line: int) -> tuple[list[Line], bool, int]:
    """Split a whole stream: (lines, too_long, pending bytes when not too long)."""
    *complete, partial = stream.split(b"\n")
    lines: list[Line] = []
    for raw in complete:
        content = raw[:-1] if raw.endswith(b"\r") else raw
        if len(content) > max_line:
            return lines, True, 0
        if content.strip(WS) == b"":
            continue
        kind, name = naive_classify(content)
        lines.append((kind, content, name))
    known = len(partial) - (1 if partial.endswith(b"\r") else 0)
    if known > max_line:
        return lines, True, 0
    return lines, False, len(partial)


def run(impl: str, max_line: int, chunks: list[bytes]) -> tuple[list[Line], bool, int]:
    splitter = Splitter(max_line, impl=impl)
    lines: list[Line] = []
    for chunk in chunks:
        buf, spans, error = splitter.feed(chunk)
        assert len(spans) % SPAN_FIELDS == 0
        for i in range(0, len(spans), SPAN_FIELDS):
            kind, start, end, ns, ne = spans[i : i + SPAN_FIELDS]
            assert 0 <= start <= end < len(buf)
            if kind == KIND_EVENT:
                assert start < ns < ne < end
            else:
                assert (ns, ne) == (0, 0)
            lines.append((kind, bytes(buf[start:end]), bytes(buf[ns:ne])))
        if error is not None:
            assert type(error) is LineTooLong
            assert error.limit == max_line
            assert error.received > max_line
            assert splitter.pending() == 0
            return lines, True, 0
    return lines, False, splitter.pending()


# --- Strategies ----------------------------------------------------------------------------

QMP_LINES = [
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}}, "capabilities": []}}',
    b'{"return": {}}',
    b'{"return": {}, "id": 7}',
    b'{"id": 7, "return": {"status": "running"}}',
    b'{"error": {"class": "GenericError", "desc": "oops"}}',
    b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}',
    b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", '
    b'"data": {"device": "d1", "path": "/machine/peripheral/d1"}}',
    b'{"event": "RESUME", "data": {}}',
    b'{"event": "A\\u0042"}',
    b'{"timestamp": {"a": {}}, "event": "X"}',
    b"   ",
    b"",
]

PIECES = [
    b"{",
    b"}",
    b"{}",
    b'"',
    b":",
    b",",
    b" ",
    b"\t",
    b"\r",
    b"\\",
    b"\n",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xc3\xa9",
    b"\xff",
    b"event",
    b"timestamp",
    b"return",
    b"error",
    b"QMP",
    b"id",
    b"STOP",
    b"data",
    b'"event"',
    b'"X"',
    b'{"seconds": 1, "microseconds": 2}',
    b'{"timestamp": ',
    b'{"event": ',
]

qmp_line = st.sampled_from(QMP_LINES)
jsonish_line = st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join)
any_bytes = st.binary(max_size=40)
ws = st.sampled_from([b"", b" ", b"\t", b"\r", b" \t "])
# Event names near the rules' edges: quotes, escapes, control bytes, DEL, UTF-8, empty.
name = st.lists(
    st.one_of(
        st.sampled_from([b"A", b"_", b"STOP"]),
        st.sampled_from([b" ", b"\x00", b"\x1f", b"\x7f", b"\\", b'"', b"\xc3\xa9"]),
    ),
    max_size=5,
).map(b"".join)
# Timestamp objects: usually flat, sometimes with braces or quotes that break the rule.
ts_body = st.lists(
    st.sampled_from([b'"seconds": 1', b", ", b'"microseconds": 2', b"{", b"}", b'"', b"\\"]),
    max_size=5,
).map(b"".join)
key = st.one_of(
    st.just(b'"event"'),
    st.sampled_from([b'"even"', b'"timestamp"', b'"return"', b'"QMP"', b'"x"']),
)


@st.composite
def event_lines(draw: st.DrawFn) -> bytes:
    value = b":" + draw(ws) + b'"' + draw(name) + b'"'
    event = (
        draw(ws) + draw(key) + draw(ws) + value + draw(st.sampled_from([b"}", b', "data": {}}']))
    )
    if draw(st.booleans()):
        stamp = b'"timestamp"' + draw(ws) + b":" + draw(ws) + b"{" + draw(ts_body) + b"}"
        return b"{" + draw(ws) + stamp + draw(ws) + b"," + event
    return draw(ws) + b"{" + event


line = st.one_of(qmp_line, jsonish_line, any_bytes, event_lines())
terminator = st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b"\n\n", b" \n"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.tuples(line, terminator), max_size=25))
    tail = draw(st.one_of(st.just(b""), line, line.map(lambda x: x + b"\r")))
    return b"".join(a + b for a, b in parts) + tail


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


max_lines = st.one_of(st.integers(1, 80), st.just(framing.DEFAULT_MAX_LINE_BYTES))


def limits(stream: bytes) -> st.SearchStrategy[int]:
    """Limits around the stream's line lengths (with and without a CR), and others."""
    lengths = {len(raw) + d for raw in stream.split(b"\n") for d in (-2, -1, 0, 1)}
    near = sorted(n for n in lengths if n >= 1)
    return st.one_of(max_lines, st.sampled_from(near)) if near else max_lines


# --- Properties ----------------------------------------------------------------------------


@SETTINGS
@given(stream=streams(), data=st.data())
def test_any_chunking_matches_reference(stream: bytes, data: st.DataObject) -> None:
    max_line = data.draw(limits(stream))
    chunks = data.draw(chunkings(stream))
    expected = reference(stream, max_line)
    for impl in IMPLS:
        assert run(impl, max_line, chunks) == expected, impl


@SETTINGS
@given(stream=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_match_reference(stream: bytes, data: st.DataObject) -> None:
    max_line = data.draw(limits(stream))
    chunks = data.draw(chunkings(stream))
    expected = reference(stream, max_line)
    for impl in IMPLS:
        assert run(impl, max_line, chunks) == expected, impl


@pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")
@SETTINGS
@given(
    stream=st.one_of(streams(), st.binary(max_size=200)),
    out_lines=st.integers(1, 6),
    data=st.data(),
)
def test_split_c_equals_split_python_exactly(
    stream: bytes, out_lines: int, data: st.DataObject
) -> None:
    max_line = data.draw(limits(stream))
    # Offsets, consumed and the error flag too, from any line start, for any batch size.
    starts = [0] + [i + 1 for i, c in enumerate(stream) if c == 0x0A]
    start = data.draw(st.sampled_from(starts))
    for buf in (stream, bytearray(stream)):
        expected = split_python(buf, max_line, start)
        assert framing.split_c(buf, max_line, start, out_lines=out_lines) == expected


# --- Routing -------------------------------------------------------------------------------

# Names the streams above produce (and near misses: prefixes, extensions, other bytes),
# plus arbitrary text.
route_name = st.one_of(
    st.sampled_from(
        [
            "STOP",
            "ST",
            "STOPSTOP",
            "A",
            "AA",
            "A_",
            "_",
            "X",
            "A B",
            "é",
            "Aé",
            "A\x7f",
            "RESUME",
            "DEVICE_DELETED",
            "",
            'A"',
            "A\\",
            "\x00",
        ]
    ),
    st.text(max_size=4),
)
# Event floods: mostly well-formed event lines of a few names close to each other (runs
# of one name, prefixes, one byte apart), the rest any line.
flood_name = st.sampled_from([b"STOP", b"ST", b"STOPSTOP", b"STOQ", b"A", b"AA", b"X", b"\xc3\xa9"])


@st.composite
def flood_lines(draw: st.DrawFn) -> bytes:
    name = draw(flood_name)
    if draw(st.booleans()):
        return b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "%s", "data": {}}' % name
    return b'{"event": "%s"}' % name


@st.composite
def floods(draw: st.DrawFn) -> bytes:
    lines = st.one_of(flood_lines(), flood_lines(), line)
    parts = draw(st.lists(st.tuples(lines, terminator), min_size=1, max_size=25))
    tail = draw(st.one_of(st.just(b""), flood_lines(), line))
    return b"".join(a + b for a, b in parts) + tail


routing_streams = st.one_of(floods(), st.one_of(streams(), st.binary(max_size=200)))

# What follows "event": in a stream: the names its event lines may have.
EVENT_NAMES = re.compile(rb'"event"[ \t\r]*:[ \t\r]*"([^"\n]+)"')


@st.composite
def route_tables(draw: st.DrawFn, stream: bytes) -> RouteTable:
    """A table mixing names found in ``stream`` with others; rarely one of 256 bytes
    (which makes the table report unrouted events, as catch_all does)."""
    # surrogateescape: a name that is not UTF-8 becomes one UTF-8 cannot encode.
    found = sorted({m.decode("utf-8", "surrogateescape") for m in EVENT_NAMES.findall(stream)})
    candidates = st.one_of(st.sampled_from(found), route_name) if found else route_name
    names = draw(st.lists(candidates, max_size=6))
    if found and draw(st.integers(0, 3)) != 2:  # mostly
        names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(found)))
    if draw(st.integers(0, 9)) == 5:  # not 0 or 9: Hypothesis favours the bounds
        names.insert(draw(st.integers(0, len(names))), "STOP" * 64)
    return RouteTable(names, catch_all=draw(st.booleans()))


def routed_limits(stream: bytes) -> st.SearchStrategy[int]:
    """Half the time no limit, so that the lines get to be routed."""
    return st.one_of(st.just(framing.DEFAULT_MAX_LINE_BYTES), limits(stream))


def expected_tag(routes: RouteTable, kind: int, name: bytes) -> int | None:
    """The routed tag of a line of the plain split, or None when it is dropped.

    Written from RouteTable's documented rules, independently of both splitters.
    """
    if kind != KIND_EVENT:
        return kind
    for i, candidate in enumerate(routes.names):
        try:
            raw = candidate.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if 0 < len(raw) <= 255 and raw == name:
            return ROUTE_BASE + i
    too_long = any(len(n.encode("utf-8", "replace")) > 255 for n in routes.names)
    if routes.catch_all or too_long:
        return KIND_EVENT
    return None


def route_lines(routes: RouteTable, lines: list[Line]) -> tuple[list[Routed], int]:
    """Apply expected_tag to (kind, line, name) tuples: (routed lines, dropped)."""
    routed: list[Routed] = []
    dropped = 0
    for kind, content, name in lines:
        tag = expected_tag(routes, kind, name)
        if tag is None:
            dropped += 1
        else:
            routed.append((tag, content))
    return routed, dropped


def run_routed(
    impl: str, max_line: int, chunks: list[bytes], routes: RouteTable
) -> tuple[list[Routed], bool, int, int]:
    splitter = Splitter(max_line, impl=impl)
    lines: list[Routed] = []
    dropped = 0
    for chunk in chunks:
        buf, spans, error, n = splitter.feed_routed(chunk, routes)
        assert len(spans) % ROUTED_FIELDS == 0
        assert n >= 0
        dropped += n
        for i in range(0, len(spans), ROUTED_FIELDS):
            tag, start, end = spans[i : i + ROUTED_FIELDS]
            assert 0 <= start <= end < len(buf)
            assert tag >= ROUTE_BASE or tag <= KIND_GREETING
            lines.append((tag, bytes(buf[start:end])))
        if error is not None:
            assert type(error) is LineTooLong
            assert splitter.pending() == 0
            return lines, True, 0, dropped
    return lines, False, splitter.pending(), dropped


@SETTINGS
@given(stream=routing_streams, data=st.data())
def test_routed_any_chunking_matches_reference(stream: bytes, data: st.DataObject) -> None:
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    chunks = data.draw(chunkings(stream))
    lines, too_long, pending = reference(stream, max_line)
    routed, dropped = route_lines(routes, lines)
    for impl in IMPLS:
        assert run_routed(impl, max_line, chunks, routes) == (routed, too_long, pending, dropped)


def _starts(stream: bytes) -> list[int]:
    return [0] + [i + 1 for i, c in enumerate(stream) if c == 0x0A]


@pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")
@SETTINGS
@given(
    stream=routing_streams,
    out_lines=st.integers(1, 6),
    data=st.data(),
)
def test_split_c_routed_equals_split_python_routed_exactly(
    stream: bytes, out_lines: int, data: st.DataObject
) -> None:
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    start = data.draw(st.sampled_from(_starts(stream)))
    for buf in (stream, bytearray(stream)):
        expected = split_python_routed(buf, max_line, routes, start)
        got = framing.split_c_routed(buf, max_line, routes, start, out_lines=out_lines)
        assert got == expected


SPLITTERS = [("python", split_python, split_python_routed)]
if framing.C_AVAILABLE:
    SPLITTERS.append(("c", framing.split_c, framing.split_c_routed))


@SETTINGS
@given(stream=routing_streams, data=st.data())
def test_routed_split_is_the_plain_split_routed(stream: bytes, data: st.DataObject) -> None:
    """Same lines, offsets, consumed and error as the 5-field split; tags from kind+name."""
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    start = data.draw(st.sampled_from(_starts(stream)))
    for impl, plain, routed in SPLITTERS:
        spans5, consumed5, too_long5 = plain(stream, max_line, start)
        expected: list[int] = []
        dropped = 0
        for i in range(0, len(spans5), SPAN_FIELDS):
            kind, start_, end, ns, ne = spans5[i : i + SPAN_FIELDS]
            tag = expected_tag(routes, kind, stream[ns:ne])
            if tag is None:
                dropped += 1
            else:
                expected += (tag, start_, end)
        got = routed(stream, max_line, routes, start)
        assert got == (expected, consumed5, too_long5, dropped), impl
