"""Tests for qmplex.framing: the line splitter, over both the C and the Python splitter."""

from __future__ import annotations

import os
import warnings

import pytest

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

IMPLS = [
    pytest.param(
        "c",
        marks=pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built"),
    ),
    "python",
]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def decode(buf: bytes | bytearray, spans: list[int]) -> list[Line]:
    """Turn a span list into (kind, line, name) tuples."""
    assert len(spans) % SPAN_FIELDS == 0
    out = []
    for i in range(0, len(spans), SPAN_FIELDS):
        kind, start, end, ns, ne = spans[i : i + SPAN_FIELDS]
        if kind != KIND_EVENT:
            assert (ns, ne) == (0, 0)
        out.append((kind, bytes(buf[start:end]), bytes(buf[ns:ne])))
    return out


def feed_all(splitter: Splitter, chunks: list[bytes]) -> tuple[list[Line], LineTooLong | None]:
    """Feed chunks until the end or the first error; return the lines and the error."""
    lines: list[Line] = []
    for chunk in chunks:
        buf, spans, error = splitter.feed(chunk)
        lines += decode(buf, spans)
        if error is not None:
            return lines, error
    return lines, None


GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""}, '
    b'"capabilities": ["oob"]}}'
)
RETURN = b'{"return": {}, "id": 1}'
ERROR = b'{"error": {"class": "GenericError", "desc": "nope"}, "id": 2}'
EVENT = (
    b'{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP", "data": {}}'
)
SESSION = [(KIND_GREETING, GREETING, b""), (KIND_RETURN, RETURN, b""), (KIND_ERROR, ERROR, b"")]
SESSION += [(KIND_EVENT, EVENT, b"STOP")]
SESSION_BYTES = b"".join(line + b"\r\n" for _, line, _ in SESSION)


# --- Line endings and blank lines --------------------------------------------------------


def test_lf_and_crlf(impl: str) -> None:
    s = Splitter(impl=impl)
    buf, spans, error = s.feed(RETURN + b"\n" + ERROR + b"\r\n")
    assert error is None
    assert decode(buf, spans) == [(KIND_RETURN, RETURN, b""), (KIND_ERROR, ERROR, b"")]
    assert s.pending() == 0


def test_only_one_cr_is_stripped(impl: str) -> None:
    buf, spans, _ = Splitter(impl=impl).feed(b"abc\r\r\n\r\rx\n")
    assert decode(buf, spans) == [(KIND_OTHER, b"abc\r", b""), (KIND_OTHER, b"\r\rx", b"")]


def test_blank_lines_are_skipped(impl: str) -> None:
    s = Splitter(impl=impl)
    buf, spans, error = s.feed(b"\n \t\r\n\r\n\r\r\n" + GREETING + b"\n\n   \n")
    assert error is None
    assert decode(buf, spans) == [(KIND_GREETING, GREETING, b"")]
    assert s.pending() == 0


def test_leading_whitespace_is_part_of_the_line(impl: str) -> None:
    buf, spans, _ = Splitter(impl=impl).feed(b' \t{"return": 1}\n')
    assert decode(buf, spans) == [(KIND_RETURN, b' \t{"return": 1}', b"")]


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
        buf, spans, error = Splitter(impl=impl).feed(line + terminator)
        assert error is None
        assert decode(buf, spans) == [(kind, line, name)]


def test_event_name_span_indexes_the_buffer(impl: str) -> None:
    data = b"\n" + RETURN + b"\n" + EVENT + b"\r\n"
    buf, spans, _ = Splitter(impl=impl).feed(data)
    assert buf is data  # bytes without a pending tail: no copy
    kind, start, end, ns, ne = spans[SPAN_FIELDS:]
    assert kind == KIND_EVENT
    assert (start, end) == (len(RETURN) + 2, len(data) - 2)
    assert data[ns:ne] == b"STOP"


# --- Partial lines -------------------------------------------------------------------------


def test_partial_tail_over_many_feeds(impl: str) -> None:
    s = Splitter(impl=impl)
    _, spans, error = s.feed(b'{"ret')
    assert (spans, error) == ([], None)
    assert s.pending() == 5
    buf, spans, error = s.feed(b'urn": ')
    assert (spans, error) == ([], None)
    assert s.pending() == 11
    buf, spans, error = s.feed(b"{}}")
    assert spans == []
    buf, spans, error = s.feed(b'\r\n{"event": "A"}\n{"ev')
    assert error is None
    assert decode(buf, spans) == [
        (KIND_RETURN, b'{"return": {}}', b""),
        (KIND_EVENT, b'{"event": "A"}', b"A"),
    ]
    assert s.pending() == 4
    buf, spans, error = s.feed(b'ent": "B"}\n')
    assert decode(buf, spans) == [(KIND_EVENT, b'{"event": "B"}', b"B")]
    assert s.pending() == 0


def test_partial_line_is_not_reported_until_terminated(impl: str) -> None:
    s = Splitter(impl=impl)
    buf, spans, error = s.feed(RETURN + b"\n" + ERROR)
    assert decode(buf, spans) == [(KIND_RETURN, RETURN, b"")]
    assert s.pending() == len(ERROR)
    buf, spans, error = s.feed(b"\r")
    assert spans == [] and s.pending() == len(ERROR) + 1
    buf, spans, error = s.feed(b"\n")
    assert decode(buf, spans) == [(KIND_ERROR, ERROR, b"")]
    assert s.pending() == 0


def test_byte_by_byte_equals_whole(impl: str) -> None:
    data = SESSION_BYTES + b"\n  \n" + SESSION_BYTES + b'{"ret'
    whole = Splitter(impl=impl)
    lines_whole, err = feed_all(whole, [data])
    assert err is None
    assert lines_whole == SESSION + SESSION
    single = Splitter(impl=impl)
    lines_single, err = feed_all(single, [data[i : i + 1] for i in range(len(data))])
    assert err is None
    assert lines_single == lines_whole
    assert single.pending() == whole.pending() == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_input_types(impl: str, kind: type) -> None:
    s = Splitter(impl=impl)
    lines, err = feed_all(s, [kind(SESSION_BYTES[:10]), kind(SESSION_BYTES[10:])])
    assert (lines, err) == (SESSION, None)


def test_bytearray_without_tail_is_scanned_in_place(impl: str) -> None:
    data = bytearray(SESSION_BYTES)
    buf, spans, _ = Splitter(impl=impl).feed(data)
    assert buf is data
    data += b"more"  # the splitter holds no export of the caller's buffer
    assert decode(buf, spans) == SESSION


# --- Line length limit ---------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_exactly_at_limit(impl: str, terminator: bytes) -> None:
    s = Splitter(10, impl=impl)
    lines, err = feed_all(s, [b"0123456789" + terminator])
    assert err is None
    assert lines == [(KIND_OTHER, b"0123456789", b"")]


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_one_byte_over_limit(impl: str, terminator: bytes) -> None:
    s = Splitter(10, impl=impl)
    lines, err = feed_all(s, [b"0123456789A" + terminator])
    assert lines == []
    assert isinstance(err, LineTooLong)
    assert err.limit == 10
    assert err.received >= 11
    assert err.excerpt == b"0123456789A" + terminator[:-1]


def test_partial_line_at_limit_waits(impl: str) -> None:
    s = Splitter(10, impl=impl)
    assert feed_all(s, [b"0123456789"]) == ([], None)
    assert s.pending() == 10
    # A trailing CR may be the terminator's: still within the limit.
    assert feed_all(s, [b"\r"]) == ([], None)
    assert s.pending() == 11
    assert feed_all(s, [b"\n"]) == ([(KIND_OTHER, b"0123456789", b"")], None)


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
    lines, err = feed_all(s, chunks)
    assert lines == []
    assert isinstance(err, LineTooLong)
    assert err.limit == 10
    assert err.received == 11 or err.received == 12
    assert s.pending() == 0  # reset itself


def test_lines_before_a_too_long_line_are_returned(impl: str) -> None:
    s = Splitter(20, impl=impl)
    data = RETURN[:15] + b"\n\n" + b'{"event": "X"}\r\n' + b"y" * 30 + b"\n" + b'{"return": 1}\n'
    buf, spans, err = s.feed(data)
    assert decode(buf, spans) == [
        (KIND_RETURN, RETURN[:15], b""),
        (KIND_EVENT, b'{"event": "X"}', b"X"),
    ]
    assert isinstance(err, LineTooLong)
    assert (err.limit, err.received) == (20, 30)
    assert err.excerpt == b"y" * 30
    assert s.pending() == 0
    # The splitter starts afresh (the caller would have closed the connection).
    assert feed_all(s, [b'{"return": 2}\n']) == ([(KIND_RETURN, b'{"return": 2}', b"")], None)


def test_too_long_blank_line_is_too_long(impl: str) -> None:
    lines, err = feed_all(Splitter(4, impl=impl), [b"ok\n" + b" " * 5 + b"\n"])
    assert lines == [(KIND_OTHER, b"ok", b"")]
    assert isinstance(err, LineTooLong)


def test_excerpt_is_bounded(impl: str) -> None:
    _, _, err = Splitter(1000, impl=impl).feed(b"z" * 5000)
    assert isinstance(err, LineTooLong)
    assert err.received == 5000
    assert len(err.excerpt) <= 200


# --- Volume --------------------------------------------------------------------------------


def test_more_lines_than_output_capacity(impl: str) -> None:
    count = 10_000  # > the C splitter's 4096 lines per call
    data = b"".join(b'{"event": "E%d"}\n\n{"return": %d}\r\n' % (i, i) for i in range(count))
    s = Splitter(impl=impl)
    buf, spans, err = s.feed(data + b'{"ret')
    assert err is None
    lines = decode(buf, spans)
    assert len(lines) == 2 * count
    for i in (0, 1, 4095, 4096, 4097, count - 1):
        assert lines[2 * i] == (KIND_EVENT, b'{"event": "E%d"}' % i, b"E%d" % i)
        assert lines[2 * i + 1] == (KIND_RETURN, b'{"return": %d}' % i, b"")
    assert s.pending() == 5


def test_five_mib_line_in_64k_chunks(impl: str) -> None:
    head = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BIG", "data": {"x": "'
    line = head + b"a" * (5 * 1024 * 1024) + b'"}}'
    data = RETURN + b"\n" + line + b"\r\n" + RETURN + b"\n"
    chunk = 64 * 1024
    s = Splitter(impl=impl)
    got: list[Line] = []
    for i in range(0, len(data), chunk):
        buf, spans, err = s.feed(data[i : i + chunk])
        assert err is None
        got += decode(buf, spans)
        assert s.pending() < len(line) + 2
    assert got == [
        (KIND_RETURN, RETURN, b""),
        (KIND_EVENT, line, b"BIG"),
        (KIND_RETURN, RETURN, b""),
    ]
    assert s.pending() == 0


# --- Module-level functions ----------------------------------------------------------------


def test_split_python_resumes_at_start() -> None:
    data = RETURN + b"\n" + ERROR + b"\n" + b"partial"
    spans, consumed, too_long = split_python(data, 1000, len(RETURN) + 1)
    assert decode(data, spans) == [(KIND_ERROR, ERROR, b"")]
    assert consumed == len(data) - len(b"partial")
    assert not too_long


@pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")
@pytest.mark.parametrize("out_lines", [1, 2, 3, 256])
def test_split_c_equals_split_python(out_lines: int) -> None:
    data = SESSION_BYTES * 3 + b"\n\n" + b"x" * 50 + b"\n" + SESSION_BYTES
    for max_line in (10, 49, 50, 200):
        for start in (0, len(SESSION_BYTES)):
            expected = split_python(data, max_line, start)
            assert framing.split_c(data, max_line, start, out_lines=out_lines) == expected


# --- Implementation selection --------------------------------------------------------------


def test_c_module_is_in_use() -> None:
    """CI must never pass on a silent fallback to the Python splitter."""
    if os.environ.get("QMPLEX_ALLOW_PURE_PYTHON") == "1":
        pytest.skip("QMPLEX_ALLOW_PURE_PYTHON=1")
    assert framing.C_AVAILABLE, framing.C_IMPORT_ERROR
    assert Splitter().impl == "c"


@pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")
def test_c_constants_match() -> None:
    lib = framing._c_lib
    assert (
        lib.QMPLEX_KIND_OTHER,
        lib.QMPLEX_KIND_RETURN,
        lib.QMPLEX_KIND_ERROR,
        lib.QMPLEX_KIND_EVENT,
        lib.QMPLEX_KIND_GREETING,
    ) == (KIND_OTHER, KIND_RETURN, KIND_ERROR, KIND_EVENT, KIND_GREETING)
    assert lib.QMPLEX_SPAN_FIELDS == SPAN_FIELDS


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
    lines, err = feed_all(s, [SESSION_BYTES])
    assert (lines, err) == (SESSION, None)


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


# --- Routing -------------------------------------------------------------------------------

needs_c = pytest.mark.skipif(not framing.C_AVAILABLE, reason="qmplex._lines not built")


def decode_routed(buf: bytes | bytearray, spans: list[int]) -> list[Routed]:
    """Turn a routed span list into (tag, line) tuples."""
    assert len(spans) % ROUTED_FIELDS == 0
    return [
        (spans[i], bytes(buf[spans[i + 1] : spans[i + 2]]))
        for i in range(0, len(spans), ROUTED_FIELDS)
    ]


def feed_all_routed(
    splitter: Splitter, routes: RouteTable, chunks: list[bytes]
) -> tuple[list[Routed], LineTooLong | None, int]:
    """Feed chunks until the end or the first error: (lines, error, total dropped)."""
    lines: list[Routed] = []
    dropped = 0
    for chunk in chunks:
        buf, spans, error, n = splitter.feed_routed(chunk, routes)
        lines += decode_routed(buf, spans)
        dropped += n
        if error is not None:
            return lines, error, dropped
    return lines, None, dropped


def ev(name: bytes) -> bytes:
    """A QEMU-shaped event line (no terminator)."""
    return b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "%s", "data": {}}' % name


def route(impl: str, routes: RouteTable, data: bytes) -> tuple[list[Routed], int]:
    """Feed data in one piece (no error expected): (lines, dropped)."""
    lines, error, dropped = feed_all_routed(Splitter(impl=impl), routes, [data])
    assert error is None
    return lines, dropped


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
    kinds = [(kind, line) for kind, line, _ in SESSION]
    if catch_all:
        assert (lines, dropped) == ([*kinds, (KIND_EVENT, ev(b"X"))], 0)
    else:
        assert (lines, dropped) == ([k for k in kinds if k[0] != KIND_EVENT], 2)


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


def test_routed_equals_feed(impl: str) -> None:
    """feed_routed reports the lines feed does, the event names turned into tags."""
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\n") * 3 + b'{"ret'
    routes = RouteTable(["B", "STOP"])
    plain = Splitter(impl=impl)
    buf, spans, error = plain.feed(data)
    assert error is None
    expected = []
    for kind, line, name in decode(buf, spans):
        if kind == KIND_EVENT:
            if name == b"A":
                continue
            kind = ROUTE_BASE + routes.names.index(name.decode())
        expected.append((kind, line))
    s = Splitter(impl=impl)
    assert route(impl, routes, data) == (expected, 3)
    buf, spans, error, dropped = s.feed_routed(data, routes)
    assert buf is data  # bytes without a pending tail: no copy
    assert (error, dropped) == (None, 3)
    assert decode_routed(buf, spans) == expected
    assert s.pending() == plain.pending() == 5


def test_routed_partial_tail_over_many_feeds(impl: str) -> None:
    routes = RouteTable(["STOP"])
    s = Splitter(impl=impl)
    assert s.feed_routed(b'{"event": "ST', routes)[1:] == ([], None, 0)
    assert s.feed_routed(b'OP"}\r', routes) == (b"", [], None, 0)
    assert s.pending() == 18
    buf, spans, error, dropped = s.feed_routed(b'\n{"event": "NO"}\n{"ev', routes)
    assert decode_routed(buf, spans) == [(ROUTE_BASE, b'{"event": "STOP"}')]
    assert (error, dropped, s.pending()) == (None, 1, 4)
    buf, spans, error, dropped = s.feed_routed(b'ent": "NO"}\n{"event', routes)
    assert (spans, error, dropped, s.pending()) == ([], None, 1, 7)
    buf, spans, error, dropped = s.feed_routed(b'": "STOP"}\n', routes)
    assert decode_routed(buf, spans) == [(ROUTE_BASE, b'{"event": "STOP"}')]
    assert (error, dropped, s.pending()) == (None, 0, 0)


def test_routed_byte_by_byte_equals_whole(impl: str) -> None:
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\r\n") * 2 + b'{"ret'
    routes = RouteTable(["A"])
    whole = feed_all_routed(Splitter(impl=impl), routes, [data])
    single_splitter = Splitter(impl=impl)
    single = feed_all_routed(single_splitter, routes, [data[i : i + 1] for i in range(len(data))])
    assert single == whole
    assert whole[1:] == (None, 4)
    assert single_splitter.pending() == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_routed_input_types(impl: str, kind: type) -> None:
    data = SESSION_BYTES + ev(b"A") + b"\n"
    routes = RouteTable(["STOP"])
    lines, error, dropped = feed_all_routed(
        Splitter(impl=impl), routes, [kind(data[:10]), kind(data[10:])]
    )
    assert (error, dropped) == (None, 1)
    assert lines == [
        (ROUTE_BASE if kind_ == KIND_EVENT else kind_, line) for kind_, line, _ in SESSION
    ]


def test_routed_bytearray_without_tail_is_scanned_in_place(impl: str) -> None:
    data = bytearray(SESSION_BYTES)
    buf, spans, _, _ = Splitter(impl=impl).feed_routed(data, RouteTable(catch_all=True))
    assert buf is data
    data += b"more"  # the splitter holds no export of the caller's buffer
    assert decode_routed(buf, spans) == [(kind, line) for kind, line, _ in SESSION]


def test_routed_too_long_line_after_dropped_lines(impl: str) -> None:
    s = Splitter(40, impl=impl)
    routes = RouteTable(["KEEP"])
    data = b'{"event": "NO"}\n{"event": "KEEP"}\n\n{"event": "NO"}\r\n'
    data += b"y" * 41 + b'\n{"event": "NO"}\n{"event": "KEEP"}\n'
    buf, spans, err, dropped = s.feed_routed(data, routes)
    assert decode_routed(buf, spans) == [(ROUTE_BASE, b'{"event": "KEEP"}')]
    assert dropped == 2  # the ones before the long line only
    assert isinstance(err, LineTooLong)
    assert (err.limit, err.received, err.excerpt) == (40, 41, b"y" * 41)
    assert s.pending() == 0
    # Only dropped lines before it, then a partial line over the limit.
    buf, spans, err, dropped = s.feed_routed(b'{"event": "NO"}\n' + b"z" * 41, routes)
    assert (spans, dropped, s.pending()) == ([], 1, 0)
    assert isinstance(err, LineTooLong)


def test_routed_partial_line_over_limit_in_the_tail(impl: str) -> None:
    s = Splitter(10, impl=impl)
    routes = RouteTable()
    assert s.feed_routed(b"0123456789", routes)[1:] == ([], None, 0)
    assert s.feed_routed(b"\r", routes) == (b"", [], None, 0)
    buf, spans, err, dropped = s.feed_routed(b"A", routes)
    assert (buf, spans, dropped) == (b"", [], 0)
    assert isinstance(err, LineTooLong)
    assert s.pending() == 0


def test_routed_more_lines_than_output_capacity(impl: str) -> None:
    """Over 6826 reported lines (the shared array's capacity): several C calls."""
    count = 5000
    one = b'{"event": "E"}\n{"event": "D"}\n\n{"return": %d}\r\n'
    data = b"".join(one % i for i in range(count)) + b'{"event": "E"'
    s = Splitter(impl=impl)
    buf, spans, err, dropped = s.feed_routed(data, RouteTable(["E"]))
    assert (err, dropped) == (None, count)
    lines = decode_routed(buf, spans)
    assert len(lines) == 2 * count
    for i in (0, 1, 3412, 3413, 3414, count - 1):
        assert lines[2 * i] == (ROUTE_BASE, b'{"event": "E"}')
        assert lines[2 * i + 1] == (KIND_RETURN, b'{"return": %d}' % i)
    assert s.pending() == 13


@needs_c
@pytest.mark.parametrize("out_lines", [1, 2, 3, 256])
def test_split_c_routed_equals_split_python_routed(out_lines: int) -> None:
    data = (SESSION_BYTES + ev(b"A") + b"\n" + ev(b"B") + b"\n") * 3 + b"\n\n" + b"x" * 50
    data += b"\n" + ev(b"B") * 2 + b"\n" + SESSION_BYTES
    tables = [RouteTable(), RouteTable(["B"]), RouteTable(["A", "STOP"], catch_all=True)]
    tables.append(RouteTable(["STOP", "A" * 300]))
    for routes in tables:
        for max_line in (10, 49, 50, 200, 1000):
            for start in (0, len(SESSION_BYTES)):
                expected = split_python_routed(data, max_line, routes, start)
                got = framing.split_c_routed(data, max_line, routes, start, out_lines=out_lines)
                assert got == expected


def test_split_python_routed_resumes_at_start() -> None:
    data = ev(b"A") + b"\n" + ev(b"B") + b"\n" + ERROR + b"\npartial"
    spans, consumed, too_long, dropped = split_python_routed(
        data, 1000, RouteTable(["A"]), len(ev(b"A")) + 1
    )
    assert decode_routed(data, spans) == [(KIND_ERROR, ERROR)]
    assert (consumed, too_long, dropped) == (len(data) - len(b"partial"), False, 1)


@needs_c
def test_c_routed_constants_match() -> None:
    lib = framing._c_lib
    assert (lib.QMPLEX_ROUTE_BASE, lib.QMPLEX_ROUTED_FIELDS) == (ROUTE_BASE, ROUTED_FIELDS)
    assert ROUTE_BASE > max(KIND_OTHER, KIND_RETURN, KIND_ERROR, KIND_EVENT, KIND_GREETING)


def _c_split_routed(
    data: bytes, names: bytes | None, names_len: int, *, start: int = 0, out_cap: int = 8
) -> tuple[int, list[int], int, int, int]:
    """Call qmplex_split_routed directly: (rc, spans, consumed, error, dropped)."""
    ffi, lib = framing._c_ffi, framing._c_lib
    out = ffi.new("size_t[]", ROUTED_FIELDS * max(out_cap, 1))
    consumed = ffi.new("size_t *", 12345)
    error = ffi.new("int *", 77)
    dropped = ffi.new("size_t *", 100)  # the function only adds to it
    table = ffi.NULL if names is None else ffi.new("unsigned char[]", names)
    rc = lib.qmplex_split_routed(
        data, len(data), start, 1000, table, names_len, 0, out, out_cap, consumed, error, dropped
    )
    spans = ffi.unpack(out, ROUTED_FIELDS * rc) if rc > 0 else []
    return rc, spans, consumed[0], error[0], dropped[0]


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
    rc, spans, consumed, error, dropped = _c_split_routed(data, names, names_len, start=0)
    assert rc == framing._c_lib.QMPLEX_EINVAL
    assert (consumed, error, dropped) == (0, framing._c_lib.QMPLEX_OK, 100)


@needs_c
def test_c_routed_direct_call() -> None:
    data = ev(b"A") + b"\n" + ev(b"B") + b"\n" + ev(b"C") + b"\n" + RETURN + b"\npart"
    end_a = len(ev(b"A"))
    # Record 0 is "B", record 1 "A"; only part of the table's size is used.
    rc, spans, consumed, error, dropped = _c_split_routed(data, b"\x01B\x01A\x01C", 4)
    assert rc == 3
    assert spans[:3] == [ROUTE_BASE + 1, 0, end_a]
    assert spans[3] == ROUTE_BASE and spans[6] == KIND_RETURN
    assert (consumed, error, dropped) == (len(data) - 4, 0, 101)
    # NULL with size 0 is the empty table; out_cap counts reported lines only.
    rc, spans, consumed, error, dropped = _c_split_routed(data, None, 0, out_cap=1)
    assert (rc, spans[0], consumed, dropped) == (1, KIND_RETURN, len(data) - 4, 103)
    # Invalid arguments, as for qmplex_split.
    assert _c_split_routed(data, None, 0, start=len(data) + 1)[0] == framing._c_lib.QMPLEX_EINVAL
    assert _c_split_routed(data, None, 0, out_cap=0)[0] == framing._c_lib.QMPLEX_EINVAL


def test_routed_python_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = RouteTable(["STOP"])
    monkeypatch.setattr(framing, "C_AVAILABLE", False)
    monkeypatch.setattr(framing, "C_IMPORT_ERROR", "ImportError: simulated failure")
    monkeypatch.setattr(framing, "_fallback_warned", True)
    s = Splitter()
    assert s.impl == "python"
    for table in (routes, RouteTable(["STOP"])):
        lines, error, dropped = feed_all_routed(s, table, [SESSION_BYTES + ev(b"X") + b"\n"])
        assert (error, dropped) == (None, 1)
        assert lines[-1] == (ROUTE_BASE, EVENT)
    with pytest.raises(ImportError, match="simulated failure"):
        framing.split_c_routed(SESSION_BYTES, 100, routes)
