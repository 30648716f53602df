"""Tests for qmplex.core.framing: the line splitter (C and Python), its routing table,
and the C library's two entry points called directly, against the reference in
``tests/splitter_reference.py``."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable

import pytest

from qmplex.core import framing
from qmplex.core.framing import (
    DEFAULT_MAX_LINE_BYTES,
    KIND_ERROR,
    KIND_EVENT,
    KIND_GREETING,
    KIND_OTHER,
    KIND_RETURN,
    ROUTE_BASE,
    ROUTED_FIELDS,
    RouteTable,
    Splitter,
)
from qmplex.errors import LineTooLong

from . import splitter_reference as ref

Routed = tuple[int, bytes]

needs_c = pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")

IMPLS = [pytest.param("c", marks=needs_c), "python"]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


# The plain split (kind, line, event name): the reference, and the C library's
# qmplex_split called directly.
PlainSplit = Callable[[bytes, int, int], tuple[list[int], int, bool]]
PLAIN_SPLITS = [
    pytest.param(ref.c_split, id="c", marks=needs_c),
    pytest.param(ref.split, id="reference"),
]
RoutedSplit = Callable[[bytes, int, RouteTable, int], tuple[list[int], int, bool, int]]
ROUTED_SPLITS = [
    pytest.param(ref.c_split_routed, id="c", marks=needs_c),
    pytest.param(ref.split_routed, id="reference"),
]

#: Reports every line; event lines keep the tag KIND_EVENT.
ALL = RouteTable(catch_all=True)


def plain_lines(buf: bytes | bytearray, spans: list[int]) -> list[ref.Line]:
    """A plain span list as (kind, line, name) tuples; non-events have no name span."""
    for i in range(0, len(spans), ref.SPAN_FIELDS):
        if spans[i] != KIND_EVENT:
            assert spans[i + 3 : i + 5] == [0, 0]
    return ref.lines_of(buf, spans)


def lines_of(buf: bytes | bytearray, spans: list[int]) -> list[Routed]:
    """A routed span list as (tag, line) tuples."""
    assert len(spans) % ROUTED_FIELDS == 0
    out: list[Routed] = []
    for i in range(0, len(spans), ROUTED_FIELDS):
        tag, start, end = spans[i : i + ROUTED_FIELDS]
        assert 0 <= start <= end < len(buf)  # a terminator follows every line
        out.append((tag, bytes(buf[start:end])))
    return out


def feed_all(
    splitter: Splitter, chunks: list[bytes], routes: RouteTable = ALL
) -> tuple[list[Routed], LineTooLong | None, int]:
    """Feed chunks until the end or the first error: (lines, error, total dropped)."""
    lines: list[Routed] = []
    dropped = 0
    for chunk in chunks:
        buf, spans, error, n = splitter.feed(chunk, routes)
        lines += lines_of(buf, spans)
        dropped += n
        if error is not None:
            return lines, error, dropped
    return lines, None, dropped


def route(impl: str, routes: RouteTable, data: bytes) -> tuple[list[Routed], int]:
    """Feed data in one piece to a new splitter (no error expected): (lines, dropped)."""
    lines, error, dropped = feed_all(Splitter(impl=impl), [data], routes)
    assert error is None
    return lines, dropped


def ev(name: bytes) -> bytes:
    """A QEMU-shaped event line (no terminator)."""
    return b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "%s", "data": {}}' % name


GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""}, '
    b'"capabilities": ["oob"]}}'
)
RETURN = b'{"return": {}, "id": 1}'
ERROR = b'{"error": {"class": "GenericError", "desc": "nope"}, "id": 2}'
EVENT = (
    b'{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP", "data": {}}'
)
# The plain split's view (kind, line, name), and the splitter's with ALL (kind, line).
SESSION: list[ref.Line] = [
    (KIND_GREETING, GREETING, b""),
    (KIND_RETURN, RETURN, b""),
    (KIND_ERROR, ERROR, b""),
    (KIND_EVENT, EVENT, b"STOP"),
]
SESSION_LINES: list[Routed] = [(kind, line) for kind, line, _ in SESSION]
SESSION_BYTES = b"".join(line + b"\r\n" for _, line, _ in SESSION)


# --- Line endings and blank lines --------------------------------------------------------


def test_lf_and_crlf(impl: str) -> None:
    s = Splitter(impl=impl)
    buf, spans, error, dropped = s.feed(RETURN + b"\n" + ERROR + b"\r\n", ALL)
    assert (error, dropped) == (None, 0)
    assert lines_of(buf, spans) == [(KIND_RETURN, RETURN), (KIND_ERROR, ERROR)]
    assert s.pending() == 0


def test_only_one_cr_is_stripped(impl: str) -> None:
    lines, _ = route(impl, ALL, b"abc\r\r\n\r\rx\n")
    assert lines == [(KIND_OTHER, b"abc\r"), (KIND_OTHER, b"\r\rx")]


def test_blank_lines_are_skipped(impl: str) -> None:
    s = Splitter(impl=impl)
    lines, error, _ = feed_all(s, [b"\n \t\r\n\r\n\r\r\n" + GREETING + b"\n\n   \n"])
    assert error is None
    assert lines == [(KIND_GREETING, GREETING)]
    assert s.pending() == 0


def test_leading_whitespace_is_part_of_the_line(impl: str) -> None:
    lines, _ = route(impl, ALL, b' \t{"return": 1}\n')
    assert lines == [(KIND_RETURN, b' \t{"return": 1}')]


# --- Classification ------------------------------------------------------------------------

CLASSIFY_TABLE: list[tuple[bytes, int, bytes]] = [
    (GREETING, KIND_GREETING, b""),
    (RETURN, KIND_RETURN, b""),
    (ERROR, KIND_ERROR, b""),
    (EVENT, KIND_EVENT, b"STOP"),
    (b'{"event": "SHUTDOWN", "data": {"guest": false}}', KIND_EVENT, b"SHUTDOWN"),
    (b'{"event":"X"}', KIND_EVENT, b"X"),
    (b'{ "return" : {} }', KIND_RETURN, b""),
    (b'\t{\t"error"\t:1}', KIND_ERROR, b""),
    (b'\r{\r"event"\r:\r"BLOCK_JOB_COMPLETED"}', KIND_EVENT, b"BLOCK_JOB_COMPLETED"),
    (b'{"timestamp":{"seconds":1,"microseconds":2},"event":"RESUME"}', KIND_EVENT, b"RESUME"),
    (
        b'{ "timestamp" : { "seconds" : 1 } , "event" : "DEVICE_DELETED" , "data": {}}',
        KIND_EVENT,
        b"DEVICE_DELETED",
    ),
    (b'{"timestamp": {}, "event": "E"}', KIND_EVENT, b"E"),
    ('{"event": "ÉVÉNEMENT"}'.encode(), KIND_EVENT, "ÉVÉNEMENT".encode()),
    (b'{"event": "A\x7f"}', KIND_EVENT, b"A\x7f"),
    # Only the start is looked at: a hint, the decoder has the last word.
    (b'{"event": "X"', KIND_EVENT, b"X"),
    (b'{"return"', KIND_RETURN, b""),
    # "id" (or anything else) first: the decoder must classify.
    (b'{"id": 1, "return": {}}', KIND_OTHER, b""),
    (b'{"id": 1, "error": {}}', KIND_OTHER, b""),
    (b'{"data": {}, "event": "STOP"}', KIND_OTHER, b""),
    # Escapes and control bytes in names or keys.
    (b'{"event": "ST\\u004fP"}', KIND_OTHER, b""),
    (b'{"event": "A\\"B"}', KIND_OTHER, b""),
    (b'{"event": "A\tB"}', KIND_OTHER, b""),
    (b'{"event": "A\x00B"}', KIND_OTHER, b""),
    (b'{"event": "A\x1fB"}', KIND_OTHER, b""),
    (b'{"event": "A B"}', KIND_EVENT, b"A B"),
    (b'{"retur\\u006e": {}}', KIND_OTHER, b""),
    (b'{"even\\u0074": "X"}', KIND_OTHER, b""),
    # Malformed event values.
    (b'{"event": ""}', KIND_OTHER, b""),
    (b'{"event": 1}', KIND_OTHER, b""),
    (b'{"event" "X"}', KIND_OTHER, b""),
    (b'{"event": "X', KIND_OTHER, b""),
    (b'{"event": ', KIND_OTHER, b""),
    # Timestamp variants that are not the usual layout.
    (b'{"timestamp": {"a": {"b": 1}}, "event": "X"}', KIND_OTHER, b""),
    (b'{"timestamp": {"a": {}, "event": "X"}', KIND_OTHER, b""),
    (b'{"timestamp": 1, "event": "X"}', KIND_OTHER, b""),
    (b'{"timestamp": {"seconds": 1}, "id": 1}', KIND_OTHER, b""),
    (b'{"timestamp": {"seconds": 1} "event": "X"}', KIND_OTHER, b""),
    (b'{"timestamp": {"seconds": 1}, "event" "X"}', KIND_OTHER, b""),
    (b'{"timestamp": {"seconds": 1}, "event": ""}', KIND_OTHER, b""),
    (b'{"timestamp": {"seconds": 1', KIND_OTHER, b""),
    # Near misses and garbage.
    (b'{"returns": 1}', KIND_OTHER, b""),
    (b'{"Return": 1}', KIND_OTHER, b""),
    (b'{"qmp": 1}', KIND_OTHER, b""),
    (b'{"QMP', KIND_OTHER, b""),
    (b"{'return': 1}", KIND_OTHER, b""),
    (b'["return"]', KIND_OTHER, b""),
    (b'"return"', KIND_OTHER, b""),
    (b"{", KIND_OTHER, b""),
    (b"{ ", KIND_OTHER, b""),
    (b"x", KIND_OTHER, b""),
    (b"\x00\xff\x80", KIND_OTHER, b""),
]


@pytest.mark.parametrize(("line", "kind", "name"), CLASSIFY_TABLE)
def test_classification(impl: str, line: bytes, kind: int, name: bytes) -> None:
    for terminator in (b"\n", b"\r\n"):
        data = line + terminator
        assert route(impl, ALL, data) == ([(kind, line)], 0)
        if kind == KIND_EVENT:
            # The name the line is routed by is exactly the expected one.
            assert route(impl, RouteTable(["Z", name.decode()]), data) == (
                [(ROUTE_BASE + 1, line)],
                0,
            )
            assert route(impl, RouteTable(["Z"]), data) == ([], 1)


@pytest.mark.parametrize("split", PLAIN_SPLITS)
@pytest.mark.parametrize(("line", "kind", "name"), CLASSIFY_TABLE)
def test_plain_split_classification(split: PlainSplit, line: bytes, kind: int, name: bytes) -> None:
    """The C library's qmplex_split and the test oracle both follow the table."""
    for terminator in (b"\n", b"\r\n"):
        data = line + terminator
        spans, consumed, too_long = split(data, 1000, 0)
        assert plain_lines(data, spans) == [(kind, line, name)]
        assert (consumed, too_long) == (len(data), False)


@pytest.mark.parametrize("split", PLAIN_SPLITS)
def test_event_name_span_indexes_the_buffer(split: PlainSplit) -> None:
    data = b"\n" + RETURN + b"\n" + EVENT + b"\r\n"
    spans, _, _ = split(data, 1000, 0)
    kind, start, end, ns, ne = spans[ref.SPAN_FIELDS :]
    assert kind == KIND_EVENT
    assert (start, end) == (len(RETURN) + 2, len(data) - 2)
    assert data[ns:ne] == b"STOP"


def test_bytes_without_tail_are_scanned_in_place(impl: str) -> None:
    data = b"\n" + RETURN + b"\n" + EVENT + b"\r\n"
    buf, spans, _, _ = Splitter(impl=impl).feed(data, RouteTable(["STOP"]))
    assert buf is data  # bytes without a pending tail: no copy
    assert spans[ROUTED_FIELDS:] == [ROUTE_BASE, len(RETURN) + 2, len(data) - 2]


# --- Partial lines -------------------------------------------------------------------------


def test_partial_tail_over_many_feeds(impl: str) -> None:
    s = Splitter(impl=impl)
    _, spans, error, _ = s.feed(b'{"ret', ALL)
    assert (spans, error) == ([], None)
    assert s.pending() == 5
    _, spans, error, _ = s.feed(b'urn": ', ALL)
    assert (spans, error) == ([], None)
    assert s.pending() == 11
    _, spans, error, _ = s.feed(b"{}}", ALL)
    assert spans == []
    buf, spans, error, _ = s.feed(b'\r\n{"event": "A"}\n{"ev', ALL)
    assert error is None
    assert lines_of(buf, spans) == [
        (KIND_RETURN, b'{"return": {}}'),
        (KIND_EVENT, b'{"event": "A"}'),
    ]
    assert s.pending() == 4
    buf, spans, error, _ = s.feed(b'ent": "B"}\n', ALL)
    assert lines_of(buf, spans) == [(KIND_EVENT, b'{"event": "B"}')]
    assert s.pending() == 0


def test_partial_line_is_not_reported_until_terminated(impl: str) -> None:
    s = Splitter(impl=impl)
    buf, spans, _, _ = s.feed(RETURN + b"\n" + ERROR, ALL)
    assert lines_of(buf, spans) == [(KIND_RETURN, RETURN)]
    assert s.pending() == len(ERROR)
    buf, spans, _, _ = s.feed(b"\r", ALL)
    assert spans == [] and s.pending() == len(ERROR) + 1
    buf, spans, _, _ = s.feed(b"\n", ALL)
    assert lines_of(buf, spans) == [(KIND_ERROR, ERROR)]
    assert s.pending() == 0


def test_byte_by_byte_equals_whole(impl: str) -> None:
    data = SESSION_BYTES + b"\n  \n" + SESSION_BYTES + b'{"ret'
    whole = Splitter(impl=impl)
    lines_whole = feed_all(whole, [data])
    assert lines_whole == (SESSION_LINES + SESSION_LINES, None, 0)
    single = Splitter(impl=impl)
    assert feed_all(single, [data[i : i + 1] for i in range(len(data))]) == lines_whole
    assert single.pending() == whole.pending() == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_input_types(impl: str, kind: type) -> None:
    s = Splitter(impl=impl)
    lines = feed_all(s, [kind(SESSION_BYTES[:10]), kind(SESSION_BYTES[10:])])
    assert lines == (SESSION_LINES, None, 0)


def test_bytearray_without_tail_is_scanned_in_place(impl: str) -> None:
    data = bytearray(SESSION_BYTES)
    buf, spans, _, _ = Splitter(impl=impl).feed(data, ALL)
    assert buf is data
    data += b"more"  # the splitter holds no export of the caller's buffer
    assert lines_of(buf, spans) == SESSION_LINES


def test_reset_drops_the_partial_line(impl: str) -> None:
    s = Splitter(impl=impl)
    s.feed(b'{"return": 1', ALL)
    assert s.pending() == 12
    s.reset()
    assert s.pending() == 0
    assert feed_all(s, [b'{"return": 2}\n']) == ([(KIND_RETURN, b'{"return": 2}')], None, 0)


# --- Line length limit ---------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_exactly_at_limit(impl: str, terminator: bytes) -> None:
    s = Splitter(10, impl=impl)
    assert feed_all(s, [b"0123456789" + terminator]) == ([(KIND_OTHER, b"0123456789")], None, 0)


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_one_byte_over_limit(impl: str, terminator: bytes) -> None:
    s = Splitter(10, impl=impl)
    lines, err, _ = feed_all(s, [b"0123456789A" + terminator])
    assert lines == []
    assert isinstance(err, LineTooLong)
    assert err.limit == 10
    assert err.received >= 11
    assert err.excerpt == b"0123456789A" + terminator[:-1]


def test_partial_line_at_limit_waits(impl: str) -> None:
    s = Splitter(10, impl=impl)
    assert feed_all(s, [b"0123456789"]) == ([], None, 0)
    assert s.pending() == 10
    # A trailing CR may be the terminator's: still within the limit.
    assert feed_all(s, [b"\r"]) == ([], None, 0)
    assert s.pending() == 11
    assert feed_all(s, [b"\n"]) == ([(KIND_OTHER, b"0123456789")], None, 0)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"0123456789A"],  # one feed, no pending tail
        [b"01234", b"56789A"],  # completed in the tail
        [b"0123456789", b"A"],
        [b"0123456789\r", b"A"],  # the CR was content after all
        [b"0123456789\r\r"],
        [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", b"\r", b"\r"],
    ],
)
def test_partial_line_over_limit_fails_at_once(impl: str, chunks: list[bytes]) -> None:
    s = Splitter(10, impl=impl)
    lines, err, _ = feed_all(s, chunks)
    assert lines == []
    assert isinstance(err, LineTooLong)
    assert err.limit == 10
    assert err.received == 11 or err.received == 12
    assert s.pending() == 0  # reset itself


def test_lines_before_a_too_long_line_are_returned(impl: str) -> None:
    s = Splitter(20, impl=impl)
    data = RETURN[:15] + b"\n\n" + b'{"event": "X"}\r\n' + b"y" * 30 + b"\n" + b'{"return": 1}\n'
    buf, spans, err, _ = s.feed(data, ALL)
    assert lines_of(buf, spans) == [(KIND_RETURN, RETURN[:15]), (KIND_EVENT, b'{"event": "X"}')]
    assert isinstance(err, LineTooLong)
    assert (err.limit, err.received) == (20, 30)
    assert err.excerpt == b"y" * 30
    assert s.pending() == 0
    # The splitter starts afresh (the caller would have closed the connection).
    assert feed_all(s, [b'{"return": 2}\n']) == ([(KIND_RETURN, b'{"return": 2}')], None, 0)


def test_too_long_blank_line_is_too_long(impl: str) -> None:
    lines, err, _ = feed_all(Splitter(4, impl=impl), [b"ok\n" + b" " * 5 + b"\n"])
    assert lines == [(KIND_OTHER, b"ok")]
    assert isinstance(err, LineTooLong)


def test_excerpt_is_bounded(impl: str) -> None:
    _, _, err, _ = Splitter(1000, impl=impl).feed(b"z" * 5000, ALL)
    assert isinstance(err, LineTooLong)
    assert err.received == 5000
    assert len(err.excerpt) <= 200


# --- Volume --------------------------------------------------------------------------------


def test_more_lines_than_output_capacity(impl: str) -> None:
    count = 10_000  # 20,000 lines: several times the C output array's 6826
    data = b"".join(b'{"event": "E%d"}\n\n{"return": %d}\r\n' % (i, i) for i in range(count))
    s = Splitter(impl=impl)
    buf, spans, err, dropped = s.feed(data + b'{"ret', ALL)
    assert (err, dropped) == (None, 0)
    lines = lines_of(buf, spans)
    assert len(lines) == 2 * count
    for i in (0, 1, 3412, 3413, 4095, 4096, 4097, count - 1):
        assert lines[2 * i] == (KIND_EVENT, b'{"event": "E%d"}' % i)
        assert lines[2 * i + 1] == (KIND_RETURN, b'{"return": %d}' % i)
    assert s.pending() == 5


def test_five_mib_line_in_64k_chunks(impl: str) -> None:
    head = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BIG", "data": {"x": "'
    line = head + b"a" * (5 * 1024 * 1024) + b'"}}'
    data = RETURN + b"\n" + line + b"\r\n" + RETURN + b"\n"
    chunk = 64 * 1024
    for routes, tag in ((ALL, KIND_EVENT), (RouteTable(["BIG"]), ROUTE_BASE)):
        s = Splitter(impl=impl)
        got: list[Routed] = []
        for i in range(0, len(data), chunk):
            buf, spans, err, _ = s.feed(data[i : i + chunk], routes)
            assert err is None
            got += lines_of(buf, spans)
            assert s.pending() < len(line) + 2
        assert got == [(KIND_RETURN, RETURN), (tag, line), (KIND_RETURN, RETURN)]
        assert s.pending() == 0


# --- The plain split: qmplex_split called directly, and the reference ----------------------


@pytest.mark.parametrize("split", PLAIN_SPLITS)
def test_plain_split_resumes_at_start(split: PlainSplit) -> None:
    data = RETURN + b"\n" + ERROR + b"\n" + b"partial"
    spans, consumed, too_long = split(data, 1000, len(RETURN) + 1)
    assert plain_lines(data, spans) == [(KIND_ERROR, ERROR, b"")]
    assert consumed == len(data) - len(b"partial")
    assert not too_long


@pytest.mark.parametrize("split", PLAIN_SPLITS)
def test_plain_split_stops_at_a_too_long_line(split: PlainSplit) -> None:
    data = RETURN + b"\n" + b"x" * 50 + b"\n" + EVENT + b"\n"
    spans, consumed, too_long = split(data, 49, 0)
    assert plain_lines(data, spans) == [(KIND_RETURN, RETURN, b"")]
    assert (consumed, too_long) == (len(RETURN) + 1, True)


@needs_c
@pytest.mark.parametrize("out_lines", [1, 2, 3, 256])
def test_c_split_equals_reference(out_lines: int) -> None:
    data = SESSION_BYTES * 3 + b"\n\n" + b"x" * 50 + b"\n" + SESSION_BYTES
    for buf in (data, bytearray(data)):
        for max_line in (10, 49, 50, 200):
            for start in (0, len(SESSION_BYTES)):
                expected = ref.split(buf, max_line, start)
                assert ref.c_split(buf, max_line, start, out_lines=out_lines) == expected


# --- Implementation selection --------------------------------------------------------------


def test_c_module_is_in_use() -> None:
    """CI must never pass on a silent fallback to the Python splitter."""
    if os.environ.get("QMPLEX_ALLOW_PURE_PYTHON") == "1":
        pytest.skip("QMPLEX_ALLOW_PURE_PYTHON=1")
    assert framing.C_AVAILABLE, framing.C_IMPORT_ERROR
    assert framing.C_IMPORT_ERROR is None
    assert ref.C_AVAILABLE
    assert Splitter().impl == "c"
    assert Splitter(impl="c").impl == "c"


@needs_c
def test_c_constants_match() -> None:
    lib = ref.lib
    assert (
        lib.QMPLEX_KIND_OTHER,
        lib.QMPLEX_KIND_RETURN,
        lib.QMPLEX_KIND_ERROR,
        lib.QMPLEX_KIND_EVENT,
        lib.QMPLEX_KIND_GREETING,
    ) == (KIND_OTHER, KIND_RETURN, KIND_ERROR, KIND_EVENT, KIND_GREETING)
    assert lib.QMPLEX_SPAN_FIELDS == ref.SPAN_FIELDS
    assert (lib.QMPLEX_ROUTE_BASE, lib.QMPLEX_ROUTED_FIELDS) == (ROUTE_BASE, ROUTED_FIELDS)
    assert ROUTE_BASE > max(KIND_OTHER, KIND_RETURN, KIND_ERROR, KIND_EVENT, KIND_GREETING)


def test_fallback_warns_once_when_c_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "C_AVAILABLE", False)
    monkeypatch.setattr(framing, "C_IMPORT_ERROR", "ImportError: simulated failure")
    monkeypatch.setattr(framing, "_fallback_warned", False)
    with pytest.warns(RuntimeWarning, match="simulated failure"):
        s = Splitter()
    assert s.impl == "python"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Splitter().impl == "python"  # once per process
        assert Splitter(impl="python").impl == "python"
    with pytest.raises(ImportError, match="simulated failure"):
        Splitter(impl="c")
    assert feed_all(s, [SESSION_BYTES]) == (SESSION_LINES, None, 0)


def test_explicit_python_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Splitter(impl="python").impl == "python"


@pytest.mark.parametrize("max_line", [0, -5])
def test_bad_max_line(max_line: int) -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        Splitter(max_line)


def test_bad_impl() -> None:
    with pytest.raises(ValueError, match="impl"):
        Splitter(impl="rust")


def test_deprecated_alias_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "qmplex.framing", raising=False)
    with pytest.warns(DeprecationWarning, match="qmplex.core.framing"):
        alias = importlib.import_module("qmplex.framing")
    assert alias.Splitter is Splitter and alias.RouteTable is RouteTable
    assert set(alias.__all__) == set(framing.__all__)


# --- Routing -------------------------------------------------------------------------------


def test_routed_tags_and_dropping(impl: str) -> None:
    data = SESSION_BYTES + b"".join(
        ev(n) + b"\n" for n in (b"RESUME", b"SHUTDOWN", b"STOP", b"SHUTDOWN", b"RESUME")
    )
    routes = RouteTable(["STOP", "RESUME"])
    assert routes.names == ("STOP", "RESUME")
    assert not routes.catch_all and not routes.reports_unrouted
    lines, dropped = route(impl, routes, data)
    assert lines == [
        (KIND_GREETING, GREETING),
        (KIND_RETURN, RETURN),
        (KIND_ERROR, ERROR),
        (ROUTE_BASE, EVENT),
        (ROUTE_BASE + 1, ev(b"RESUME")),
        (ROUTE_BASE, ev(b"STOP")),
        (ROUTE_BASE + 1, ev(b"RESUME")),
    ]
    assert dropped == 2


def test_routed_catch_all(impl: str) -> None:
    data = b"".join(ev(n) + b"\r\n" for n in (b"SHUTDOWN", b"STOP", b"X"))
    routes = RouteTable(["STOP"], catch_all=True)
    assert routes.catch_all and routes.reports_unrouted
    lines, dropped = route(impl, routes, data)
    assert lines == [
        (KIND_EVENT, ev(b"SHUTDOWN")),
        (ROUTE_BASE, ev(b"STOP")),
        (KIND_EVENT, ev(b"X")),
    ]
    assert dropped == 0


def test_routed_lines_of_other_kinds_are_never_dropped(impl: str) -> None:
    """Only lines tagged KIND_EVENT are looked up: the rest keep their kind."""
    other = [
        b'{"event": "ST\\u004fP"}',  # escaped name: the decoder must look
        b'{"data": {}, "event": "STOP"}',  # event key not first
        b'{"event": ""}',
        b'{"id": 1, "return": {}}',
        b"garbage",
    ]
    data = b"\n".join(other) + b"\n \r\n" + ev(b"NOPE") + b"\n"
    for routes in (RouteTable(), RouteTable(["STOP", ""])):
        lines, dropped = route(impl, routes, data)
        assert lines == [(KIND_OTHER, line) for line in other]
        assert dropped == 1


def test_routed_event_without_timestamp_and_odd_spacing(impl: str) -> None:
    data = b'{"event":"STOP"}\n\t{ "event" : "STOP" , "data": {}}\r\n{"event": "ST"}\n'
    lines, dropped = route(impl, RouteTable(["STOP"]), data)
    assert [tag for tag, _ in lines] == [ROUTE_BASE, ROUTE_BASE]
    assert dropped == 1


@pytest.mark.parametrize(
    "names", [["ST", "STOP", "STOPPED"], ["STOPPED", "STOP", "ST"], ["STOP", "STOPPED", "ST"]]
)
def test_routed_names_that_are_prefixes_of_others(impl: str, names: list[str]) -> None:
    sent = [b"STOP", b"ST", b"STOPPED", b"STO", b"STOPX", b"S", b"STOP", b"STOPPED"]
    lines, dropped = route(impl, RouteTable(names), b"".join(ev(n) + b"\n" for n in sent))
    expected = [(ROUTE_BASE + names.index(n.decode()), ev(n)) for n in sent if n.decode() in names]
    assert lines == expected
    assert dropped == 3


def test_routed_lookup_cache_sees_every_change(impl: str) -> None:
    """Runs of one name, alternation, and names of one length differing in one byte."""
    sent = [b"AB", b"AB", b"AC", b"AB", b"AC", b"AC", b"XX", b"AB", b"XX", b"XX", b"AD"]
    sent += [b"AC", b"A", b"AB"]
    routes = RouteTable(["AB", "AC", "A"])
    lines, dropped = route(impl, routes, b"".join(ev(n) + b"\n" for n in sent))
    tags = {b"AB": ROUTE_BASE, b"AC": ROUTE_BASE + 1, b"A": ROUTE_BASE + 2}
    assert lines == [(tags[n], ev(n)) for n in sent if n in tags]
    assert dropped == 4


def test_routed_255_byte_names(impl: str) -> None:
    ascii_name = "N" * 255
    utf8_name = "é" * 127 + "x"  # 255 bytes in UTF-8
    routes = RouteTable([ascii_name, utf8_name])
    assert not routes.reports_unrouted
    sent = [ascii_name.encode(), utf8_name.encode(), b"N" * 254, b"N" * 256]
    lines, dropped = route(impl, routes, b"".join(ev(n) + b"\n" for n in sent))
    assert lines == [(ROUTE_BASE, ev(sent[0])), (ROUTE_BASE + 1, ev(sent[1]))]
    assert dropped == 2


@pytest.mark.parametrize("long_name", ["L" * 256, "é" * 128, "L" * 10_000])
def test_routed_overlong_name_reports_unrouted_events(impl: str, long_name: str) -> None:
    """A name too long for the C table keeps its index; unrouted events are reported."""
    routes = RouteTable(["A", long_name, "B"])
    assert routes.names == ("A", long_name, "B")
    assert not routes.catch_all
    assert routes.reports_unrouted
    sent = [b"A", long_name.encode(), b"B", b"OTHER"]
    lines, dropped = route(impl, routes, b"".join(ev(n) + b"\n" for n in sent))
    assert lines == [
        (ROUTE_BASE, ev(b"A")),
        (KIND_EVENT, ev(long_name.encode())),  # for the caller to look at
        (ROUTE_BASE + 2, ev(b"B")),
        (KIND_EVENT, ev(b"OTHER")),
    ]
    assert dropped == 0


def test_routed_names_that_cannot_match(impl: str) -> None:
    """Empty, unencodable and quoted names keep their index, match nothing, drop nothing."""
    routes = RouteTable(["", "\ud800", 'A"B', "A\\B", "A\tB", "X"])
    assert len(routes.names) == 6
    assert not routes.reports_unrouted
    data = b'{"event": ""}\n{"event": "A\\"B"}\n{"event": "A\\\\B"}\n{"event": "A\tB"}\n'
    data += ev(b"A") + b"\n" + ev(b"X") + b"\n"
    lines, dropped = route(impl, routes, data)
    assert lines == [
        (KIND_OTHER, b'{"event": ""}'),
        (KIND_OTHER, b'{"event": "A\\"B"}'),
        (KIND_OTHER, b'{"event": "A\\\\B"}'),
        (KIND_OTHER, b'{"event": "A\tB"}'),
        (ROUTE_BASE + 5, ev(b"X")),
    ]
    assert dropped == 1


def test_routed_non_ascii_name(impl: str) -> None:
    routes = RouteTable(["ÉVÉNEMENT"])
    name = "ÉVÉNEMENT".encode()
    lines, dropped = route(impl, routes, ev(name) + b"\n" + ev(b"EVENEMENT") + b"\n")
    assert lines == [(ROUTE_BASE, ev(name))]
    assert dropped == 1


@pytest.mark.parametrize("catch_all", [False, True])
def test_routed_empty_table(impl: str, catch_all: bool) -> None:
    data = SESSION_BYTES + ev(b"X") + b"\n"
    lines, dropped = route(impl, RouteTable(catch_all=catch_all), data)
    if catch_all:
        assert (lines, dropped) == ([*SESSION_LINES, (KIND_EVENT, ev(b"X"))], 0)
    else:
        assert (lines, dropped) == ([k for k in SESSION_LINES if k[0] != KIND_EVENT], 2)


def test_route_table_duplicates_and_order() -> None:
    routes = RouteTable(iter(["B", "A", "B", "C", "A"]))
    assert routes.names == ("B", "A", "C")
    lines, _ = route("python", routes, ev(b"C") + b"\n" + ev(b"B") + b"\n")
    assert lines == [(ROUTE_BASE + 2, ev(b"C")), (ROUTE_BASE, ev(b"B"))]


def test_route_table_is_immutable_and_checks_types() -> None:
    routes = RouteTable(["A"], catch_all=True)
    with pytest.raises(AttributeError):
        routes.names = ("B",)
    with pytest.raises(AttributeError):
        del routes.catch_all
    assert repr(routes) == "RouteTable(['A'], catch_all=True)"
    with pytest.raises(TypeError, match="single string"):
        RouteTable("STOP")
    with pytest.raises(TypeError, match="bytes"):
        RouteTable([b"STOP"])  # type: ignore[list-item]


def test_route_table_wants() -> None:
    routes = RouteTable(["STOP", "ÉVÉNEMENT", "", "A\\B"])
    assert routes.wants("STOP") and routes.wants("ÉVÉNEMENT")
    assert not routes.wants("STO") and not routes.wants("STOPPED")
    assert not routes.wants("RESUME") and not routes.wants("stop")
    # A name the splitter cannot route (an escape in the line) is still wanted: the
    # protocol decodes such a line and asks; the empty name is never an event's.
    assert routes.wants("A\\B")
    assert not routes.wants("")
    everything = RouteTable(["STOP"], catch_all=True)
    assert everything.wants("STOP") and everything.wants("RESUME") and everything.wants("")
    assert not RouteTable().wants("STOP")


def test_route_table_wants_a_name_too_long_for_the_c_table() -> None:
    long_name = "L" * 256
    routes = RouteTable(["A", long_name])
    assert routes.reports_unrouted  # its events come back as KIND_EVENT lines...
    assert routes.wants(long_name)  # ...for the caller, which must then want them


def test_routing_is_the_catch_all_split_with_names_as_tags(impl: str) -> None:
    """What a table reports: the lines of the catch-all split, wanted event names
    turned into tags, unwanted event lines dropped (counted)."""
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\n") * 3 + b'{"ret'
    routes = RouteTable(["B", "STOP"])
    everything, dropped = route(impl, ALL, data)
    assert dropped == 0
    name_of = {ev(b"A"): "A", ev(b"B"): "B", EVENT: "STOP"}
    expected = [
        (ROUTE_BASE + routes.names.index(name_of[line]) if tag == KIND_EVENT else tag, line)
        for tag, line in everything
        if tag != KIND_EVENT or name_of[line] != "A"
    ]
    s = Splitter(impl=impl)
    buf, spans, error, dropped = s.feed(data, routes)
    assert buf is data  # bytes without a pending tail: no copy
    assert (error, dropped) == (None, 3)
    assert lines_of(buf, spans) == expected
    assert s.pending() == 5
    # The reference's routed split says the same, offsets included.
    assert ref.split_routed(data, DEFAULT_MAX_LINE_BYTES, routes) == (
        spans,
        len(data) - 5,
        False,
        3,
    )


def test_routes_may_change_between_feeds(impl: str) -> None:
    """Each line is routed by the table of the feed that completes it."""
    s = Splitter(impl=impl)
    stop, x = RouteTable(["STOP"]), RouteTable(["X"])
    assert s.feed(b'{"event": "ST', x)[1:] == ([], None, 0)
    buf, spans, error, dropped = s.feed(b'OP"}\n{"event": "X"}\n{"event": "STOP', stop)
    assert lines_of(buf, spans) == [(ROUTE_BASE, b'{"event": "STOP"}')]
    assert (error, dropped) == (None, 1)
    buf, spans, error, dropped = s.feed(b'"}\n{"event": "X"}\n', RouteTable(["X", "STOP"]))
    assert lines_of(buf, spans) == [
        (ROUTE_BASE + 1, b'{"event": "STOP"}'),
        (ROUTE_BASE, b'{"event": "X"}'),
    ]
    assert (error, dropped) == (None, 0)


def test_routed_partial_tail_over_many_feeds(impl: str) -> None:
    routes = RouteTable(["STOP"])
    s = Splitter(impl=impl)
    assert s.feed(b'{"event": "ST', routes)[1:] == ([], None, 0)
    assert s.feed(b'OP"}\r', routes) == (b"", [], None, 0)
    assert s.pending() == 18
    buf, spans, error, dropped = s.feed(b'\n{"event": "NO"}\n{"ev', routes)
    assert lines_of(buf, spans) == [(ROUTE_BASE, b'{"event": "STOP"}')]
    assert (error, dropped, s.pending()) == (None, 1, 4)
    buf, spans, error, dropped = s.feed(b'ent": "NO"}\n{"event', routes)
    assert (spans, error, dropped, s.pending()) == ([], None, 1, 7)
    buf, spans, error, dropped = s.feed(b'": "STOP"}\n', routes)
    assert lines_of(buf, spans) == [(ROUTE_BASE, b'{"event": "STOP"}')]
    assert (error, dropped, s.pending()) == (None, 0, 0)


def test_routed_byte_by_byte_equals_whole(impl: str) -> None:
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\r\n") * 2 + b'{"ret'
    routes = RouteTable(["A"])
    whole = feed_all(Splitter(impl=impl), [data], routes)
    single_splitter = Splitter(impl=impl)
    single = feed_all(single_splitter, [data[i : i + 1] for i in range(len(data))], routes)
    assert single == whole
    assert whole[1:] == (None, 4)
    assert single_splitter.pending() == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_routed_input_types(impl: str, kind: type) -> None:
    data = SESSION_BYTES + ev(b"A") + b"\n"
    routes = RouteTable(["STOP"])
    chunks = [kind(data[:10]), kind(data[10:])]
    lines, error, dropped = feed_all(Splitter(impl=impl), chunks, routes)
    assert (error, dropped) == (None, 1)
    assert lines == [(ROUTE_BASE if k == KIND_EVENT else k, line) for k, line in SESSION_LINES]


def test_routed_too_long_line_after_dropped_lines(impl: str) -> None:
    s = Splitter(40, impl=impl)
    routes = RouteTable(["KEEP"])
    data = b'{"event": "NO"}\n{"event": "KEEP"}\n\n{"event": "NO"}\r\n'
    data += b"y" * 41 + b'\n{"event": "NO"}\n{"event": "KEEP"}\n'
    buf, spans, err, dropped = s.feed(data, routes)
    assert lines_of(buf, spans) == [(ROUTE_BASE, b'{"event": "KEEP"}')]
    assert dropped == 2  # the ones before the long line only
    assert isinstance(err, LineTooLong)
    assert (err.limit, err.received, err.excerpt) == (40, 41, b"y" * 41)
    assert s.pending() == 0
    # Only dropped lines before it, then a partial line over the limit.
    buf, spans, err, dropped = s.feed(b'{"event": "NO"}\n' + b"z" * 41, routes)
    assert (spans, dropped, s.pending()) == ([], 1, 0)
    assert isinstance(err, LineTooLong)


def test_routed_partial_line_over_limit_in_the_tail(impl: str) -> None:
    s = Splitter(10, impl=impl)
    routes = RouteTable()
    assert s.feed(b"0123456789", routes)[1:] == ([], None, 0)
    assert s.feed(b"\r", routes) == (b"", [], None, 0)
    buf, spans, err, dropped = s.feed(b"A", routes)
    assert (buf, spans, dropped) == (b"", [], 0)
    assert isinstance(err, LineTooLong)
    assert s.pending() == 0


def test_routed_more_lines_than_output_capacity(impl: str) -> None:
    """Over 6826 reported lines (the shared array's capacity): several C calls."""
    count = 5000
    one = b'{"event": "E"}\n{"event": "D"}\n\n{"return": %d}\r\n'
    data = b"".join(one % i for i in range(count)) + b'{"event": "E"'
    s = Splitter(impl=impl)
    buf, spans, err, dropped = s.feed(data, RouteTable(["E"]))
    assert (err, dropped) == (None, count)
    lines = lines_of(buf, spans)
    assert len(lines) == 2 * count
    for i in (0, 1, 3412, 3413, 3414, count - 1):
        assert lines[2 * i] == (ROUTE_BASE, b'{"event": "E"}')
        assert lines[2 * i + 1] == (KIND_RETURN, b'{"return": %d}' % i)
    assert s.pending() == 13


def test_routed_python_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = RouteTable(["STOP"])
    monkeypatch.setattr(framing, "C_AVAILABLE", False)
    monkeypatch.setattr(framing, "C_IMPORT_ERROR", "ImportError: simulated failure")
    monkeypatch.setattr(framing, "_fallback_warned", True)
    s = Splitter()
    assert s.impl == "python"
    for table in (routes, RouteTable(["STOP"])):
        lines, error, dropped = feed_all(s, [SESSION_BYTES + ev(b"X") + b"\n"], table)
        assert (error, dropped) == (None, 1)
        assert lines[-1] == (ROUTE_BASE, EVENT)


# --- The routed split: qmplex_split_routed called directly, and the reference ---------------


@needs_c
@pytest.mark.parametrize("out_lines", [1, 2, 3, 256])
def test_c_split_routed_equals_reference(out_lines: int) -> None:
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\n") * 3 + b"\n\n" + b"x" * 50
    data += b"\n" + ev(b"B") * 2 + b"\n" + SESSION_BYTES
    tables = [RouteTable(), RouteTable(["B"]), RouteTable(["A", "STOP"], catch_all=True)]
    tables.append(RouteTable(["STOP", "A" * 300]))
    for routes in tables:
        for max_line in (10, 49, 50, 200, 1000):
            for start in (0, len(SESSION_BYTES)):
                expected = ref.split_routed(data, max_line, routes, start)
                got = ref.c_split_routed(data, max_line, routes, start, out_lines=out_lines)
                assert got == expected


@pytest.mark.parametrize("split", ROUTED_SPLITS)
def test_routed_split_resumes_at_start(split: RoutedSplit) -> None:
    data = ev(b"A") + b"\n" + ev(b"B") + b"\n" + ERROR + b"\npartial"
    spans, consumed, too_long, dropped = split(data, 1000, RouteTable(["A"]), len(ev(b"A")) + 1)
    assert lines_of(data, spans) == [(KIND_ERROR, ERROR)]
    assert (consumed, too_long, dropped) == (len(data) - len(b"partial"), False, 1)


@needs_c
@pytest.mark.parametrize(
    ("names", "names_len"),
    [
        (b"\x00", 1),  # empty record
        (b"\x01A\x00", 3),  # empty record after a good one
        (b"\x05ABC", 4),  # runs past the end
        (b"\x01A\x02B", 4),  # the last one runs past the end
        (b"\x04STOP", 4),  # names_len cuts the record
        (None, 3),  # NULL with a size
    ],
)
def test_c_routed_malformed_table_is_einval(names: bytes | None, names_len: int) -> None:
    data = ev(b"A") + b"\n"
    rc, spans, consumed, error, dropped = ref.c_split_routed_once(data, names, names_len)
    assert rc == ref.lib.QMPLEX_EINVAL
    assert (consumed, error, dropped) == (0, ref.lib.QMPLEX_OK, 100)


@needs_c
def test_c_routed_direct_call() -> None:
    data = ev(b"A") + b"\n" + ev(b"B") + b"\n" + ev(b"C") + b"\n" + RETURN + b"\npart"
    end_a = len(ev(b"A"))
    # Record 0 is "B", record 1 "A"; only part of the table's size is used.
    rc, spans, consumed, error, dropped = ref.c_split_routed_once(data, b"\x01B\x01A\x01C", 4)
    assert rc == 3
    assert spans[:3] == [ROUTE_BASE + 1, 0, end_a]
    assert spans[3] == ROUTE_BASE and spans[6] == KIND_RETURN
    assert (consumed, error, dropped) == (len(data) - 4, 0, 101)
    # NULL with size 0 is the empty table; out_cap counts reported lines only.
    rc, spans, consumed, error, dropped = ref.c_split_routed_once(data, None, 0, out_cap=1)
    assert (rc, spans[0], consumed, dropped) == (1, KIND_RETURN, len(data) - 4, 103)
    # catch_all reports the unrouted ones as KIND_EVENT.
    rc, spans, _, _, dropped = ref.c_split_routed_once(data, b"\x01B", 2, catch_all=1)
    assert (rc, spans[::3], dropped) == (4, [KIND_EVENT, ROUTE_BASE, KIND_EVENT, KIND_RETURN], 100)
    # Invalid arguments, as for qmplex_split.
    einval = ref.lib.QMPLEX_EINVAL
    assert ref.c_split_routed_once(data, None, 0, start=len(data) + 1)[0] == einval
    assert ref.c_split_routed_once(data, None, 0, out_cap=0)[0] == einval
