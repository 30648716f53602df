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
    SPAN_FIELDS,
    Splitter,
    split_python,
)

Line = tuple[int, bytes, bytes]

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
