"""Property tests: the C and Python splitters agree with the reference in
``tests/splitter_reference.py`` for any stream, any chunking and any routing table, and
report nothing but LineTooLong (returned, never raised); the C library's two entry
points, called directly, agree with the reference exactly (offsets, ``consumed``, the
error flag, the dropped count) and with each other."""

from __future__ import annotations

import re
import sys
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmplex.core import framing
from qmplex.core.framing import (
    KIND_EVENT,
    KIND_GREETING,
    ROUTE_BASE,
    ROUTED_FIELDS,
    RouteTable,
    Splitter,
)
from qmplex.errors import LineTooLong

from .. import splitter_reference as ref

Routed = tuple[int, bytes]

IMPLS = ["c", "python"] if framing.C_AVAILABLE else ["python"]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
needs_c = pytest.mark.skipif(not ref.C_AVAILABLE, reason="qmplex._lines not built")

#: Reports every line; event lines keep the tag KIND_EVENT.
ALL = RouteTable(catch_all=True)


def run(
    impl: str, max_line: int, chunks: list[bytes], routes: RouteTable | list[RouteTable] = ALL
) -> tuple[list[Routed], bool, int, int]:
    """Feed chunks to a new splitter (``routes``: one table, or one per chunk):
    ``(lines, too_long, pending, dropped)``, checking each result's shape."""
    splitter = Splitter(max_line, impl=impl)
    tables = routes if isinstance(routes, list) else [routes] * len(chunks)
    lines: list[Routed] = []
    dropped = 0
    for chunk, table in zip(chunks, tables, strict=True):
        buf, spans, error, n = splitter.feed(chunk, table)
        assert len(spans) % ROUTED_FIELDS == 0
        assert n >= 0
        dropped += n
        for i in range(0, len(spans), ROUTED_FIELDS):
            tag, start, end = spans[i : i + ROUTED_FIELDS]
            assert 0 <= start <= end < len(buf)
            assert tag >= ROUTE_BASE or 0 <= tag <= KIND_GREETING
            lines.append((tag, bytes(buf[start:end])))
        if error is not None:
            assert type(error) is LineTooLong
            assert error.limit == max_line
            assert error.received > max_line
            assert len(error.excerpt) <= 203
            assert splitter.pending() == 0
            return lines, True, 0, dropped
    return lines, False, splitter.pending(), dropped


def expected_catch_all(stream: bytes, max_line: int) -> tuple[list[Routed], bool, int, int]:
    """What :func:`run` returns with ALL, by the reference."""
    lines, too_long, pending = ref.split_stream(stream, max_line)
    return [(kind, content) for kind, content, _ in lines], too_long, pending, 0


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


def _starts(stream: bytes) -> list[int]:
    """Every line start of a stream: where a split may resume."""
    return [0] + [i + 1 for i, c in enumerate(stream) if c == 0x0A]


# --- The plain split -------------------------------------------------------------------------


@SETTINGS
@given(stream=streams(), data=st.data())
def test_any_chunking_matches_reference(stream: bytes, data: st.DataObject) -> None:
    max_line = data.draw(limits(stream))
    chunks = data.draw(chunkings(stream))
    expected = expected_catch_all(stream, max_line)
    for impl in IMPLS:
        assert run(impl, max_line, chunks) == expected, impl


@SETTINGS
@given(stream=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_match_reference(stream: bytes, data: st.DataObject) -> None:
    max_line = data.draw(limits(stream))
    chunks = data.draw(chunkings(stream))
    expected = expected_catch_all(stream, max_line)
    for impl in IMPLS:
        assert run(impl, max_line, chunks) == expected, impl


@needs_c
@SETTINGS
@given(
    stream=st.one_of(streams(), st.binary(max_size=200)),
    out_lines=st.integers(1, 6),
    data=st.data(),
)
def test_c_split_equals_reference_exactly(
    stream: bytes, out_lines: int, data: st.DataObject
) -> None:
    """qmplex_split: kinds, offsets, name spans, consumed and the error flag, from any
    line start, for any batch size."""
    max_line = data.draw(limits(stream))
    start = data.draw(st.sampled_from(_starts(stream)))
    for buf in (stream, bytearray(stream)):
        expected = ref.split(buf, max_line, start)
        assert ref.c_split(buf, max_line, start, out_lines=out_lines) == expected


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


@SETTINGS
@given(stream=routing_streams, data=st.data())
def test_routed_any_chunking_matches_reference(stream: bytes, data: st.DataObject) -> None:
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    chunks = data.draw(chunkings(stream))
    lines, too_long, pending = ref.split_stream(stream, max_line)
    routed, dropped = ref.route_lines(routes, lines)
    assert routes.reports_unrouted == ref.reports_unrouted(routes)
    for impl in IMPLS:
        assert run(impl, max_line, chunks, routes) == (routed, too_long, pending, dropped), impl


@SETTINGS
@given(stream=routing_streams, data=st.data())
def test_each_line_is_routed_by_the_table_of_the_feed_that_completes_it(
    stream: bytes, data: st.DataObject
) -> None:
    """The table may change from one feed to the next."""
    max_line = data.draw(routed_limits(stream))
    chunks = data.draw(chunkings(stream))
    tables = [data.draw(route_tables(stream)) for _ in chunks]
    # The chunk holding each byte of the stream.
    owner = [i for i, chunk in enumerate(chunks) for _ in chunk]
    spans, consumed, too_long = ref.split(stream, max_line)
    lines: list[Routed] = []
    dropped = 0
    for i in range(0, len(spans), ref.SPAN_FIELDS):
        kind, start, end, ns, ne = spans[i : i + ref.SPAN_FIELDS]
        routes = tables[owner[stream.index(b"\n", end)]]  # the chunk with its "\n"
        tag = ref.expected_tag(routes, kind, stream[ns:ne])
        if tag is None:
            dropped += 1
        else:
            lines.append((tag, stream[start:end]))
    pending = 0 if too_long else len(stream) - consumed
    for impl in IMPLS:
        assert run(impl, max_line, chunks, tables) == (lines, too_long, pending, dropped), impl


@needs_c
@SETTINGS
@given(stream=routing_streams, out_lines=st.integers(1, 6), data=st.data())
def test_c_split_routed_equals_reference_exactly(
    stream: bytes, out_lines: int, data: st.DataObject
) -> None:
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    start = data.draw(st.sampled_from(_starts(stream)))
    for buf in (stream, bytearray(stream)):
        expected = ref.split_routed(buf, max_line, routes, start)
        got = ref.c_split_routed(buf, max_line, routes, start, out_lines=out_lines)
        assert got == expected


@needs_c
@SETTINGS
@given(stream=routing_streams, data=st.data())
def test_c_routed_split_is_the_c_plain_split_routed(stream: bytes, data: st.DataObject) -> None:
    """qmplex_split_routed finds the lines, offsets, consumed and error of qmplex_split,
    with tags from kind and name: the two C entry points agree with each other."""
    routes = data.draw(route_tables(stream))
    max_line = data.draw(routed_limits(stream))
    start = data.draw(st.sampled_from(_starts(stream)))
    spans5, consumed, too_long = ref.c_split(stream, max_line, start)
    routed, dropped = ref.route(stream, spans5, routes)
    assert ref.c_split_routed(stream, max_line, routes, start) == (
        routed,
        consumed,
        too_long,
        dropped,
    )


# --- Nothing but LineTooLong ----------------------------------------------------------------

any_name = st.one_of(
    route_name,
    st.text(st.characters(exclude_categories=()), max_size=6),  # lone surrogates too
    st.text(max_size=300),
)


@SETTINGS
@given(
    chunks=st.lists(st.binary(max_size=120), max_size=8),
    names=st.lists(any_name, max_size=6),
    catch_all=st.booleans(),
    max_line=st.one_of(st.integers(1, 100), st.just(sys.maxsize), st.just(2**70)),
)
def test_feed_raises_nothing_and_returns_only_line_too_long(
    chunks: list[bytes], names: list[str], catch_all: bool, max_line: int
) -> None:
    """h11's fuzz invariant: any bytes, any table, any limit; the only error is a
    returned LineTooLong, after which the splitter goes on from scratch."""
    routes = RouteTable(names, catch_all=catch_all)
    for impl in IMPLS:
        splitter = Splitter(max_line, impl=impl)
        for chunk in chunks:
            buf, spans, error, dropped = splitter.feed(chunk, routes)
            assert error is None or type(error) is LineTooLong
            assert len(spans) % ROUTED_FIELDS == 0 and dropped >= 0
            assert all(0 <= offset <= len(buf) for offset in spans[1::3] + spans[2::3])
            assert all(t >= ROUTE_BASE or 0 <= t <= KIND_GREETING for t in spans[::3])
            if not routes.reports_unrouted:
                assert KIND_EVENT not in spans[::3]
