"""The test oracle for the line splitter, and direct calls into the C splitter.

The reference below is written for the tests, step by step from the rules in
``csrc/lines.h`` and in ``qmplex.core.framing``'s docstrings, and shares no code with
either splitter (the package's Python fallback is one regular expression; this is a
hand-written scanner). It has two steps, as the rules do:

1. :func:`split`: the plain split of ``qmplex_split``: every complete non-blank line
   with its kind and, for an event line, the span of its name (``SPAN_FIELDS`` ints
   per line: ``kind, start, end, name_start, name_end``);
2. :func:`route`: the routing of ``qmplex_split_routed`` applied to that list, from
   :class:`~qmplex.core.framing.RouteTable`'s documented rules (its public ``names``
   and ``catch_all`` only), giving ``ROUTED_FIELDS`` ints per reported line
   (``tag, start, end``) and the number of event lines dropped.

:func:`c_split` and :func:`c_split_routed` call ``qmplex._lines`` directly (its
``ffi`` and ``lib``, with a routing table built here from the same rules), looping over
as many calls as a small output array needs, for exact comparisons with the reference:
offsets, ``consumed``, the error flag and the dropped count, from any start.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "C_AVAILABLE",
    "Line",
    "SPAN_FIELDS",
    "c_split",
    "c_split_routed",
    "c_split_routed_once",
    "c_table",
    "classify",
    "expected_tag",
    "ffi",
    "lib",
    "lines_of",
    "reports_unrouted",
    "route",
    "route_lines",
    "split",
    "split_routed",
    "split_stream",
]

from qmplex.core.framing import (
    KIND_ERROR,
    KIND_EVENT,
    KIND_GREETING,
    KIND_OTHER,
    KIND_RETURN,
    ROUTE_BASE,
    ROUTED_FIELDS,
    RouteTable,
)

try:
    from qmplex._lines import ffi, lib
except ImportError:  # not built: the tests that need it are skipped
    ffi = lib = None

#: Whether ``qmplex._lines`` could be imported (for skip marks).
C_AVAILABLE = lib is not None

#: Ints per line of the plain split (``QMPLEX_SPAN_FIELDS``).
SPAN_FIELDS = 5

#: A line as the plain split sees it: kind, content, event name (empty unless an event).
Line = tuple[int, bytes, bytes]

# --- Step 1: the plain split -----------------------------------------------------------

WS = b" \t\r"
_FIXED_KEYS = {b"return": KIND_RETURN, b"error": KIND_ERROR, b"QMP": KIND_GREETING}
# The longest name a routing record holds (its length is one byte).
MAX_NAME_BYTES = 255


def _skip_ws(line: bytes, i: int) -> int:
    while i < len(line) and line[i] in WS:
        i += 1
    return i


def _expect(line: bytes, i: int, char: bytes) -> int | None:
    """Skip whitespace, then expect ``char``: the index after it, or None."""
    i = _skip_ws(line, i)
    return i + 1 if line[i : i + 1] == char else None


def _name(line: bytes, i: int) -> tuple[int, int] | None:
    """``line[i - 1]`` is an opening quote: the span of a valid event name, or None.

    A name runs to the next quote and is not empty, with no backslash (an escape: the
    decoder must read it) and no control byte below 0x20.
    """
    close = line.find(b'"', i)
    if close <= i:
        return None
    if any(c == 0x5C or c < 0x20 for c in line[i:close]):
        return None
    return i, close


def _event_value(line: bytes, i: int) -> tuple[int, int] | None:
    """After the ``"event"`` key: ``: "NAME"``, with whitespace around the colon."""
    j = _expect(line, i, b":")
    j = None if j is None else _expect(line, j, b'"')
    return None if j is None else _name(line, j)


def classify(line: bytes) -> tuple[int, int, int]:
    """Kind of a line's content (no terminator), and its event name's span in it.

    Only the start is read: ``{`` then the first key. ``return``, ``error`` and ``QMP``
    decide alone; ``event`` needs a valid name as its value; ``timestamp`` needs a flat
    object (no ``{`` before its first ``}``), a comma, then ``"event": "NAME"``.
    Anything else is ``KIND_OTHER``. The span is ``(0, 0)`` unless the kind is
    ``KIND_EVENT``.
    """
    i = _expect(line, 0, b"{")
    i = None if i is None else _expect(line, i, b'"')
    if i is None:
        return KIND_OTHER, 0, 0
    close = line.find(b'"', i)
    if close < 0:
        return KIND_OTHER, 0, 0
    key = line[i:close]
    if key in _FIXED_KEYS:
        return _FIXED_KEYS[key], 0, 0
    span = None
    if key == b"event":
        span = _event_value(line, close + 1)
    elif key == b"timestamp":
        j = _expect(line, close + 1, b":")
        j = None if j is None else _expect(line, j, b"{")
        if j is not None:
            brace = line.find(b"}", j)
            if brace >= 0 and b"{" not in line[j:brace]:
                k = _expect(line, brace + 1, b",")
                if k is not None:
                    k = _skip_ws(line, k)
                    if line[k : k + 7] == b'"event"':
                        span = _event_value(line, k + 7)
    if span is None:
        return KIND_OTHER, 0, 0
    return KIND_EVENT, span[0], span[1]


def split(buf: bytes | bytearray, max_line: int, start: int = 0) -> tuple[list[int], int, bool]:
    """The plain split of ``buf[start:]`` (``start`` begins a line).

    Returns:
        ``(spans, consumed, too_long)``: ``SPAN_FIELDS`` ints per complete non-blank
        line, offsets into ``buf`` (``end`` excludes the ``"\\n"`` and one ``"\\r"``
        before it; the name span is ``0, 0`` unless the kind is ``KIND_EVENT``);
        ``consumed`` is just after the last ``"\\n"`` handled, or the start of the
        first line that is too long; ``too_long`` says whether one is: a complete line
        whose content is over ``max_line`` (blank or not), or a partial last line
        whose length, less one for a trailing ``"\\r"``, is.
    """
    data = bytes(buf)
    spans: list[int] = []
    pos = start
    while True:
        lf = data.find(b"\n", pos)
        if lf < 0:
            partial = data[pos:]
            known = len(partial) - (1 if partial.endswith(b"\r") else 0)
            return spans, pos, known > max_line
        content = data[pos:lf]
        if content.endswith(b"\r"):
            content = content[:-1]
        if len(content) > max_line:
            return spans, pos, True
        if content.strip(WS):
            kind, ns, ne = classify(content)
            if kind == KIND_EVENT:
                spans += (kind, pos, pos + len(content), pos + ns, pos + ne)
            else:
                spans += (kind, pos, pos + len(content), 0, 0)
        pos = lf + 1


def lines_of(buf: bytes | bytearray, spans: list[int]) -> list[Line]:
    """A plain span list as ``(kind, content, name)`` tuples."""
    assert len(spans) % SPAN_FIELDS == 0
    out: list[Line] = []
    for i in range(0, len(spans), SPAN_FIELDS):
        kind, start, end, ns, ne = spans[i : i + SPAN_FIELDS]
        out.append((kind, bytes(buf[start:end]), bytes(buf[ns:ne])))
    return out


def split_stream(stream: bytes, max_line: int) -> tuple[list[Line], bool, int]:
    """A whole stream as a splitter fed it in any chunks sees it.

    Returns:
        ``(lines, too_long, pending)``: the lines before the first line that is too
        long, whether there is one, and the bytes of the partial last line (0 when one
        is too long: the splitter resets itself).
    """
    spans, consumed, too_long = split(stream, max_line)
    return lines_of(stream, spans), too_long, 0 if too_long else len(stream) - consumed


# --- Step 2: routing -------------------------------------------------------------------


def _encode(name: str) -> bytes | None:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: never a line's name
        return None


def reports_unrouted(routes: RouteTable) -> bool:
    """``catch_all``, or a name longer than a routing record holds."""
    return routes.catch_all or any(
        len(raw) > MAX_NAME_BYTES for raw in map(_encode, routes.names) if raw is not None
    )


def expected_tag(routes: RouteTable, kind: int, name: bytes) -> int | None:
    """The tag of a line of the plain split once routed, or None when it is dropped.

    Only ``KIND_EVENT`` lines are looked up: ``ROUTE_BASE + i`` for the first
    ``routes.names[i]`` whose UTF-8 encoding is exactly ``name`` (names of more than
    255 bytes never match); otherwise ``KIND_EVENT`` when the table reports unrouted
    lines, else dropped.
    """
    if kind != KIND_EVENT:
        return kind
    for i, candidate in enumerate(routes.names):
        raw = _encode(candidate)
        if raw is not None and 0 < len(raw) <= MAX_NAME_BYTES and raw == name:
            return ROUTE_BASE + i
    return KIND_EVENT if reports_unrouted(routes) else None


def route(buf: bytes | bytearray, spans: list[int], routes: RouteTable) -> tuple[list[int], int]:
    """Route a plain span list: ``(routed spans, dropped)``."""
    out: list[int] = []
    dropped = 0
    for i in range(0, len(spans), SPAN_FIELDS):
        kind, start, end, ns, ne = spans[i : i + SPAN_FIELDS]
        tag = expected_tag(routes, kind, bytes(buf[ns:ne]))
        if tag is None:
            dropped += 1
        else:
            out += (tag, start, end)
    return out, dropped


def split_routed(
    buf: bytes | bytearray, max_line: int, routes: RouteTable, start: int = 0
) -> tuple[list[int], int, bool, int]:
    """The routed split of ``buf[start:]``: ``(spans, consumed, too_long, dropped)``,
    the plain split's lines routed, with its ``consumed`` and ``too_long``."""
    spans, consumed, too_long = split(buf, max_line, start)
    routed, dropped = route(buf, spans, routes)
    return routed, consumed, too_long, dropped


def route_lines(routes: RouteTable, lines: list[Line]) -> tuple[list[tuple[int, bytes]], int]:
    """Route ``(kind, content, name)`` tuples: ``([(tag, content)], dropped)``."""
    routed: list[tuple[int, bytes]] = []
    dropped = 0
    for kind, content, name in lines:
        tag = expected_tag(routes, kind, name)
        if tag is None:
            dropped += 1
        else:
            routed.append((tag, content))
    return routed, dropped


# --- The C splitter, called directly ----------------------------------------------------

# The record of a name that cannot match: '"', which no name span holds.
_NEVER_MATCHES = b'\x01"'


def c_table(routes: RouteTable) -> tuple[bytes, int]:
    """``routes`` as ``qmplex_split_routed`` reads a table: ``(records, catch_all)``.

    One record per name, in order (a name that cannot be routed gets one that matches
    nothing, so that the indexes of the others stay).
    """
    records = bytearray()
    for name in routes.names:
        raw = _encode(name)
        if raw is not None and 0 < len(raw) <= MAX_NAME_BYTES:
            records.append(len(raw))
            records += raw
        else:
            records += _NEVER_MATCHES
    return bytes(records), 1 if reports_unrouted(routes) else 0


def _need_c() -> None:
    if lib is None:
        raise ImportError("qmplex._lines is not built")


def c_split(
    buf: bytes | bytearray, max_line: int, start: int = 0, *, out_lines: int = 256
) -> tuple[list[int], int, bool]:
    """``qmplex_split`` over ``buf[start:]``, called until done; same result as
    :func:`split`."""
    _need_c()
    out = ffi.new("size_t[]", SPAN_FIELDS * out_lines)
    consumed = ffi.new("size_t *")
    error = ffi.new("int *")
    spans: list[int] = []
    pos = start
    with ffi.from_buffer(buf) as cbuf:
        while True:
            n = lib.qmplex_split(cbuf, len(buf), pos, max_line, out, out_lines, consumed, error)
            assert n >= 0, n
            assert consumed[0] >= pos
            pos = consumed[0]
            spans += ffi.unpack(out, SPAN_FIELDS * n)
            if n < out_lines or error[0]:
                break
    return spans, pos, error[0] != lib.QMPLEX_OK


def c_split_routed(
    buf: bytes | bytearray,
    max_line: int,
    routes: RouteTable,
    start: int = 0,
    *,
    out_lines: int = 256,
) -> tuple[list[int], int, bool, int]:
    """``qmplex_split_routed`` over ``buf[start:]`` with :func:`c_table`'s table,
    called until done; same result as :func:`split_routed`."""
    _need_c()
    records, catch_all = c_table(routes)
    names = ffi.new("unsigned char[]", records) if records else ffi.NULL
    out = ffi.new("size_t[]", ROUTED_FIELDS * out_lines)
    consumed = ffi.new("size_t *")
    error = ffi.new("int *")
    dropped = ffi.new("size_t *")
    spans: list[int] = []
    pos = start
    with ffi.from_buffer(buf) as cbuf:
        while True:
            n = lib.qmplex_split_routed(
                cbuf, len(buf), pos, max_line, names, len(records), catch_all,
                out, out_lines, consumed, error, dropped,
            )
            assert n >= 0, n
            assert consumed[0] >= pos
            pos = consumed[0]
            spans += ffi.unpack(out, ROUTED_FIELDS * n)
            if n < out_lines or error[0]:
                break
    return spans, pos, error[0] != lib.QMPLEX_OK, int(dropped[0])


def c_split_routed_once(
    data: bytes,
    names: bytes | None,
    names_len: int,
    *,
    start: int = 0,
    out_cap: int = 8,
    catch_all: int = 0,
    max_line: int = 1000,
) -> tuple[int, list[int], int, int, int]:
    """One raw ``qmplex_split_routed`` call, with a table given as raw bytes (``None``:
    a NULL pointer) and outputs preset to odd values: ``(rc, spans, consumed, error,
    dropped)``. ``dropped`` starts at 100 (the function only adds to it)."""
    _need_c()
    out = ffi.new("size_t[]", ROUTED_FIELDS * max(out_cap, 1))
    consumed = ffi.new("size_t *", 12345)
    error = ffi.new("int *", 77)
    dropped = ffi.new("size_t *", 100)
    table: Any = ffi.NULL if names is None else ffi.new("unsigned char[]", names)
    rc: int = lib.qmplex_split_routed(
        data, len(data), start, max_line, table, names_len, catch_all, out, out_cap,
        consumed, error, dropped,
    )
    spans = ffi.unpack(out, ROUTED_FIELDS * rc) if rc > 0 else []
    return rc, spans, int(consumed[0]), int(error[0]), int(dropped[0])
