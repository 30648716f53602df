r"""Line framing: cut the QMP byte stream into lines and tag each with a routing kind.

QMP sends one JSON object per line. This layer finds the complete lines in whatever a
``recv()`` returned, keeps a partial last line for the next call, enforces the line
length limit and tags each line (return, error, event with its name, greeting, other)
by peeking at its first key, so that unwanted events can be dropped before any JSON
decoder sees them. With a ``RouteTable`` it also routes event lines by name: each
wanted event line is tagged with the index of its name, and the others are dropped
(only counted) before Python sees them. It never decodes JSON, never touches a socket
and never logs.

The work is done by the C module ``qmplex._lines`` (built from ``csrc/lines.c``; this is
the only module that imports it), called once per receive buffer. Without it (a build
without a C compiler) the same rules run in Python, slower, with a warning (once per
process) that names why the C module is missing.

Theory of operation:

* Spans, not copies: :meth:`Splitter.feed` returns the buffer it scanned and a flat
  list of ints, three per line: ``tag, start, end``. ``buf[start:end]`` is the line
  without its ``"\n"`` and one ``"\r"`` before it. Blank lines (only spaces, tabs and
  CRs) are skipped.
* No rescanning: the partial last line is kept in a ``bytearray`` that never holds a
  ``"\n"``. While new data has no ``"\n"`` it is appended (amortised O(1)); when a
  ``"\n"`` arrives, tail and data are joined once and scanned. A long line arriving in
  small chunks costs O(total bytes).
* Tags: a line's kind (return, error, event, greeting, other) is read from its first
  key, a routing hint only: ``KIND_EVENT`` means the line starts like an event whose
  name has no escapes; every line must still be decoded to be validated, and
  ``KIND_OTHER`` lines classified after decoding (e.g. a reply whose ``"id"`` comes
  first).
* Routing: an event line whose name (the exact bytes between the quotes) is
  ``routes.names[i]`` is tagged ``ROUTE_BASE + i``; an event line of another name is
  tagged ``KIND_EVENT`` if the table reports unrouted lines, and otherwise dropped: not
  reported, only counted. The lookup happens in C, so an event flood nobody wants
  costs no Python object per line, and a wanted one costs three small ints and no name
  slice.
* A line whose content is longer than ``max_line_bytes`` is a protocol error: lines
  before it are still returned, with a ``LineTooLong`` that the caller turns into
  closing the connection.
"""

from __future__ import annotations

import re
import sys
import threading
import warnings
from collections.abc import Iterable
from typing import Any, Final, NoReturn

from qmplex.errors import LineTooLong

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "KIND_OTHER",
    "KIND_RETURN",
    "KIND_ERROR",
    "KIND_EVENT",
    "KIND_GREETING",
    "ROUTE_BASE",
    "ROUTED_FIELDS",
    "C_AVAILABLE",
    "C_IMPORT_ERROR",
    "RouteTable",
    "Splitter",
]

#: Default limit on a line's length in bytes (terminator excluded).
DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024 * 1024

# Line kinds, as tagged by the splitter (same values as ``QMPLEX_KIND_*`` in lines.h).
#: Line kind: not known from the first key (a reply whose ``"id"`` comes first ...);
#: the caller classifies it after decoding.
KIND_OTHER: Final = 0
#: Line kind: a success reply (first key ``"return"``).
KIND_RETURN: Final = 1
#: Line kind: an error reply (first key ``"error"``).
KIND_ERROR: Final = 2
#: Line kind: an event (``"event"`` first, or after ``"timestamp"``) whose name has no
#: escapes, not routed by a :class:`RouteTable`.
KIND_EVENT: Final = 3
#: Line kind: the greeting (first key ``"QMP"``).
KIND_GREETING: Final = 4

#: Tag of a routed event line: ``ROUTE_BASE + i`` for ``RouteTable.names[i]`` (above
#: every kind; same value as ``QMPLEX_ROUTE_BASE`` in lines.h).
ROUTE_BASE: Final = 8

#: Ints per line in a span list: tag, start, end.
ROUTED_FIELDS: Final = 3

# Lines the C splitter reports per call: more than 64 KiB of QMP messages make (the
# shortest reply or event takes 14 bytes with its "\n"); a bigger buffer takes more calls.
_OUT_LINES: Final = 6826
# The C output arrays (160 KiB) are shared by every Splitter of a thread, not owned by
# each: a connection's idle memory stays small (the spans are copied out before
# feed() returns, and one thread runs one feed at a time).
_c_thread = threading.local()


def _c_buffers() -> tuple[Any, Any, Any, Any, memoryview]:
    """This thread's ``(out, consumed, error, dropped, out_view)`` for the C splitter.

    ``out_view`` is ``out`` as a memoryview of ``size_t`` (format ``"N"``): its
    ``tolist()`` makes the span list faster than ``ffi.unpack`` does.
    """
    try:
        buffers: tuple[Any, Any, Any, Any, memoryview] = _c_thread.buffers
    except AttributeError:
        out = _c_ffi.new("size_t[]", ROUTED_FIELDS * _OUT_LINES)
        buffers = _c_thread.buffers = (
            out,
            _c_ffi.new("size_t *"),
            _c_ffi.new("int *"),
            _c_ffi.new("size_t *"),
            # "N" is size_t (typeshed omits it from cast()'s formats).
            memoryview(_c_ffi.buffer(out)).cast("N"),  # type: ignore[call-overload]
        )
    return buffers


_MAX_SIZE: Final = sys.maxsize
# Bytes of the offending line kept in a LineTooLong.
_EXCERPT_BYTES: Final = 200


def _load_c() -> tuple[Any, Any, str | None]:
    try:
        from qmplex._lines import ffi, lib
    except ImportError as exc:  # the extension was not built (or not for this Python)
        return None, None, f"{type(exc).__name__}: {exc}"
    return ffi, lib, None


#: Why the C splitter could not be imported (``"ImportError: ..."``), or None.
_c_ffi, _c_lib, C_IMPORT_ERROR = _load_c()
#: Whether the C splitter could be imported (if not, ``C_IMPORT_ERROR`` says why).
C_AVAILABLE: bool = _c_lib is not None

_fallback_warned = False


def _warn_fallback() -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        "qmplex is running without its C speed-ups: the C line splitter (qmplex._lines) "
        f"could not be imported ({C_IMPORT_ERROR}); using the slower pure-Python splitter. "
        "Reinstall qmplex where a C compiler and Python's headers are available "
        "(pip install --force-reinstall --no-cache-dir qmplex).",
        RuntimeWarning,
        stacklevel=3,
    )


# --- The Python splitter (without the C module) -------------------------------------
#
# The same rules as csrc/lines.c, written as one regular expression over a line's content:
# whitespace is ' ', '\t', '\r'; the first key decides; an event name is non-empty with no
# '"', '\\' or control byte; after "timestamp" comes an object with no '{' before its
# first '}', then "event".
_CLASSIFY: Final = re.compile(
    rb"""
    [ \t\r]* \{ [ \t\r]* "
    (?:
        (return")
      | (error")
      | (QMP")
      | event" [ \t\r]* : [ \t\r]* "([^"\\\x00-\x1f]+)"
      | timestamp" [ \t\r]* : [ \t\r]* \{ [^{}]* \} [ \t\r]* , [ \t\r]*
        "event" [ \t\r]* : [ \t\r]* "([^"\\\x00-\x1f]+)"
    )
    """,
    re.VERBOSE,
)
# Group number of the match above -> kind.
_GROUP_KIND: Final = (KIND_OTHER, KIND_RETURN, KIND_ERROR, KIND_GREETING, KIND_EVENT, KIND_EVENT)
_NON_BLANK: Final = re.compile(rb"[^ \t\r]")


# --- Routing ---------------------------------------------------------------------------

# The longest name a record of the C table can hold (its length is one byte).
_MAX_NAME_BYTES: Final = 255
# The record given to a name that cannot be routed, to keep the indexes of the others:
# the name '"', which no event line's name span can be (the splitter stops at a quote).
_NEVER_MATCHES: Final = b'\x01"'


class RouteTable:
    """Event names the splitter routes, compiled once (immutable).

    ``Splitter.feed_routed`` tags an event line whose name is ``names[i]`` with
    ``ROUTE_BASE + i``. An event line of any other name is tagged ``KIND_EVENT`` when
    ``reports_unrouted`` is true, and is dropped (only counted) otherwise.

    A name that cannot be routed keeps its place in ``names`` (so that the indexes of
    the others do not move) but matches no line:

    * a name whose UTF-8 encoding is longer than 255 bytes does not fit the C table.
      Its event lines would then be dropped, so such a table reports every event line
      it does not route (``reports_unrouted`` is true whatever ``catch_all`` says),
      and the caller must look at the names of ``KIND_EVENT`` lines itself;
    * the empty name, and a name that UTF-8 cannot encode (a lone surrogate), are
      never the name of an event line as the splitter reads one (an escape or an
      empty name makes the line ``KIND_OTHER``, which is always reported): nothing
      else changes. The same holds for a name with ``"``, ``\\`` or a control
      character, which keeps its record but cannot match.

    Attributes:
        names: the names, in the order given, duplicates removed (the first kept).
        catch_all: as given: whether event lines of other names are wanted too.
        reports_unrouted: whether event lines that are not routed are reported
            (``catch_all``, or a name too long for the C table) rather than dropped.
    """

    __slots__ = (
        "names",
        "catch_all",
        "reports_unrouted",
        "_wanted",
        "_tags",
        "_c_names",
        "_c_len",
        "_c_catch_all",
    )

    names: tuple[str, ...]
    catch_all: bool
    reports_unrouted: bool
    _wanted: frozenset[str]
    _tags: dict[bytes, int]
    _c_names: Any
    _c_len: int
    _c_catch_all: int

    def __init__(self, names: Iterable[str] = (), *, catch_all: bool = False) -> None:
        """Compile a table.

        Args:
            names: the event names to route (``str``; matched against the exact bytes
                of the line's name, so as their UTF-8 encoding).
            catch_all: report the event lines of every other name too, tagged
                ``KIND_EVENT``, instead of dropping them.

        Raises:
            TypeError: ``names`` is a string, or holds something other than strings.
        """
        if isinstance(names, (str, bytes, bytearray, memoryview)):
            raise TypeError("names must be an iterable of str, not a single string")
        unique: dict[str, None] = {}
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"an event name must be a str, not {type(name).__name__}")
            unique[name] = None
        ordered = tuple(unique)
        tags: dict[bytes, int] = {}
        records = bytearray()
        too_long = False
        for i, name in enumerate(ordered):
            try:
                raw = name.encode("utf-8")
            except UnicodeEncodeError:
                raw = b""
            if 0 < len(raw) <= _MAX_NAME_BYTES:
                tags[raw] = ROUTE_BASE + i
                records.append(len(raw))
                records += raw
            else:
                too_long = too_long or len(raw) > _MAX_NAME_BYTES
                records += _NEVER_MATCHES
        unrouted = bool(catch_all) or too_long
        setattr_ = object.__setattr__
        setattr_(self, "names", ordered)
        setattr_(self, "catch_all", bool(catch_all))
        setattr_(self, "reports_unrouted", unrouted)
        setattr_(self, "_wanted", frozenset(name for name in ordered if name))
        setattr_(self, "_tags", tags)
        setattr_(self, "_c_catch_all", 1 if unrouted else 0)
        setattr_(self, "_c_len", len(records))
        # A cdata array: passed to C as a pointer with no conversion per call.
        if _c_ffi is None:
            setattr_(self, "_c_names", None)
        elif records:
            setattr_(self, "_c_names", _c_ffi.new("unsigned char[]", bytes(records)))
        else:
            setattr_(self, "_c_names", _c_ffi.NULL)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        """Refuse: a route table is immutable (it may be shared with C).

        Raises:
            AttributeError: always.
        """
        raise AttributeError("RouteTable is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        """Refuse: a route table is immutable.

        Raises:
            AttributeError: always.
        """
        raise AttributeError("RouteTable is immutable")

    def wants(self, name: str) -> bool:
        """Return True if an event called ``name`` is wanted: one of :attr:`names`
        (routed, or reported unrouted when too long for the C table), or any name when
        the table catches all."""
        return self.catch_all or name in self._wanted

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"RouteTable({list(self.names)!r}, catch_all={self.catch_all})"


def _split_python(
    buf: bytes | bytearray, max_line: int, routes: RouteTable, start: int = 0
) -> tuple[list[int], int, bool, int]:
    """Split and route ``buf[start:]`` in Python, by the rules of ``csrc/lines.c``
    (``qmplex_split_routed``): what runs when the C module is missing.

    Args:
        buf: the received bytes.
        max_line: the longest allowed line content in bytes (terminator excluded).
        routes: the event names to route.
        start: where to begin; must be the start of a line.

    Returns:
        ``(spans, consumed, too_long, dropped)``: ``spans`` holds ``ROUTED_FIELDS``
        ints per reported line (``tag, start, end``; see the module docstring);
        ``dropped`` is the number of event lines dropped because ``routes`` does not
        want them; ``consumed`` is the offset just after the last ``"\\n"`` handled
        (``buf[consumed:]`` is a partial line); ``too_long`` is true when the line at
        ``consumed`` is longer than ``max_line`` (a partial one as soon as its known
        content is: its length, less one for a trailing ``"\\r"``).
    """
    spans: list[int] = []
    find = buf.find
    match = _CLASSIFY.match
    route = routes._tags.get
    report = routes.reports_unrouted
    dropped = 0
    size = len(buf)
    pos = start
    while pos < size:
        lf = find(b"\n", pos)
        if lf < 0:
            known = size - pos
            if buf[size - 1] == 0x0D:
                known -= 1
            return spans, pos, known > max_line, dropped
        end = lf - 1 if lf > pos and buf[lf - 1] == 0x0D else lf
        if end - pos > max_line:
            return spans, pos, True, dropped
        m = match(buf, pos, end)
        if m is not None:
            group = m.lastindex or 0
            kind = _GROUP_KIND[group]
            if kind == KIND_EVENT:
                tag = route(bytes(m.group(group)))
                if tag is not None:
                    spans += (tag, pos, end)
                elif report:
                    spans += (KIND_EVENT, pos, end)
                else:
                    dropped += 1
            else:
                spans += (kind, pos, end)
        elif _NON_BLANK.search(buf, pos, end) is not None:
            spans += (KIND_OTHER, pos, end)
        pos = lf + 1
    return spans, pos, False, dropped


# --- C splitter ------------------------------------------------------------------------


def _run_c_routed(
    buf: bytes | bytearray,
    start: int,
    max_line: int,
    routes: RouteTable,
    out: Any,
    out_lines: int,
    consumed: Any,
    error: Any,
    dropped: Any,
) -> tuple[list[int], int, bool, int]:
    """Call ``qmplex_split_routed`` until ``buf`` is done; see ``split_python_routed``."""
    spans: list[int] = []
    pos = start
    size = len(buf)
    split = _c_lib.qmplex_split_routed
    names, names_len, catch_all = routes._c_names, routes._c_len, routes._c_catch_all
    dropped[0] = 0
    with _c_ffi.from_buffer(buf) as cbuf:
        while True:
            n = split(
                cbuf,
                size,
                pos,
                max_line,
                names,
                names_len,
                catch_all,
                out,
                out_lines,
                consumed,
                error,
                dropped,
            )
            if n < 0:  # only for invalid arguments, which this module never passes
                raise RuntimeError(f"qmplex_split_routed failed with {n}")
            pos = consumed[0]
            if n:
                spans += _c_ffi.unpack(out, ROUTED_FIELDS * n)
            if n < out_lines or error[0]:
                break
    return spans, pos, error[0] != 0, dropped[0]


# --- Streaming splitter ----------------------------------------------------------------


class Splitter:
    """Incremental line splitter for one connection's receive stream.

    Not thread-safe: one connection's reader owns it.

    Attributes:
        impl: ``"c"`` or ``"python"``, the splitter in use.
        max_line_bytes: the longest allowed line content in bytes.
    """

    __slots__ = ("impl", "max_line_bytes", "_tail")

    impl: str
    max_line_bytes: int

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, *, impl: str = "auto") -> None:
        """Create a splitter.

        Args:
            max_line_bytes: the longest allowed line content (terminator excluded), >= 1.
            impl: ``"auto"`` uses C when it can be imported, else Python with a
                ``RuntimeWarning`` (once per process) that names the import error;
                ``"c"`` requires C; ``"python"`` forces the reference splitter.

        Raises:
            ValueError: bad ``max_line_bytes`` or ``impl``.
            ImportError: ``impl="c"`` and the C module is not available.
        """
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, not {max_line_bytes}")
        if impl == "auto":
            if C_AVAILABLE:
                impl = "c"
            else:
                _warn_fallback()
                impl = "python"
        elif impl == "c":
            if not C_AVAILABLE:
                raise ImportError(f"qmplex._lines is not available: {C_IMPORT_ERROR}")
        elif impl != "python":
            raise ValueError(f"impl must be 'auto', 'c' or 'python', not {impl!r}")
        self.impl = impl
        self.max_line_bytes = max_line_bytes
        self._tail = bytearray()

    def feed(
        self, data: bytes | bytearray | memoryview, routes: RouteTable
    ) -> tuple[bytes | bytearray, list[int], LineTooLong | None, int]:
        """Add received bytes and return the lines they complete, with events routed.

        Args:
            data: the bytes just received. Bytes are scanned in place (no copy) when no
                partial line is pending; a memoryview is copied once.
            routes: the event names to route; may change from one call to the next.

        Returns:
            ``(buf, spans, error, dropped)``. ``spans`` holds ``ROUTED_FIELDS`` ints per
            reported line, in stream order, indexing ``buf``: ``tag, start, end`` (see
            the module docstring). ``buf`` may be ``data`` itself or a new object; the
            caller may keep it, and must not modify ``data`` while it uses the spans.
            ``error`` is a ``LineTooLong`` when the line after those returned is too
            long; the splitter has then reset itself and the caller must close the
            connection (what follows cannot be framed). ``dropped`` is the number of
            event lines ``routes`` did not want, dropped in this call.
        """
        if type(data) is memoryview:  # not subclassable: no isinstance() needed
            data = data.tobytes()
        if self._tail:
            joined = self._join_tail(data)
            if not isinstance(joined, bytes):  # still a partial line, or too long
                return b"", [], joined, 0
            buf: bytes | bytearray = joined
        else:
            buf = data
        size = len(buf)
        if self.impl == "c":
            try:
                out, consumed_p, error_p, dropped_p, out_view = _c_thread.buffers
            except AttributeError:
                out, consumed_p, error_p, dropped_p, out_view = _c_buffers()
            max_line = self.max_line_bytes
            if max_line > _MAX_SIZE:  # min() costs a builtin call per feed
                max_line = _MAX_SIZE
            dropped_p[0] = 0
            # A bytes object goes to C as it is (cffi passes its buffer): from_buffer
            # and its release would cost more than the scan of a short reply. One C
            # call and one list for a whole recv(): the output array holds 6826 lines,
            # more than 64 KiB of QMP messages make (the shortest reply or event takes
            # 14 bytes with its "\n"); _run_c_routed goes on when it is full.
            cbuf = buf if type(buf) is bytes else _c_ffi.from_buffer(buf)
            n = _c_lib.qmplex_split_routed(
                cbuf, size, 0, max_line, routes._c_names, routes._c_len,
                routes._c_catch_all, out, _OUT_LINES, consumed_p, error_p, dropped_p)
            if cbuf is not buf:
                _c_ffi.release(cbuf)
            spans = out_view[: ROUTED_FIELDS * n].tolist() if n else []
            dropped = dropped_p[0]
            if n == _OUT_LINES and not error_p[0]:  # output full: more to come
                more, consumed, too_long, more_dropped = _run_c_routed(
                    buf, consumed_p[0], max_line, routes, out, _OUT_LINES,
                    consumed_p, error_p, dropped_p)
                spans += more
                dropped += more_dropped
            else:
                consumed = consumed_p[0]
                too_long = error_p[0] != 0
        else:
            spans, consumed, too_long, dropped = _split_python(
                buf, self.max_line_bytes, routes
            )
        if too_long:
            err = self._too_long(buf, consumed)
            self.reset()
            return buf, spans, err, dropped
        if consumed < size:
            with memoryview(buf) as view:
                self._tail = bytearray(view[consumed:])
        return buf, spans, None, dropped

    def pending(self) -> int:
        """Return the number of bytes held in the partial last line."""
        return len(self._tail)

    def reset(self) -> None:
        """Drop the partial last line (after an error, or to reuse the splitter)."""
        self._tail = bytearray()

    def _join_tail(self, data: bytes | bytearray) -> bytes | LineTooLong | None:
        """Add ``data`` to the pending partial line.

        Returns the joined bytes to scan when ``data`` has a ``"\\n"`` (the tail is
        then empty); otherwise ``None``, or a ``LineTooLong`` (after a reset) when the
        partial line is already too long.
        """
        tail = self._tail
        if data.find(b"\n") < 0:
            # Still the same partial line: append, and check what is known of it.
            tail += data
            known = len(tail) - (1 if tail[-1] == 0x0D else 0)
            if known > self.max_line_bytes:
                err = self._too_long(tail, 0)
                self.reset()
                return err
            return None
        # One bytes object, not the bytearray: slices of bytes (each line) are cheaper
        # to make and free, and need no conversion.
        self._tail = bytearray()
        return b"".join((tail, data))

    def _too_long(self, buf: bytes | bytearray, start: int) -> LineTooLong:
        lf = buf.find(b"\n", start)
        stop = len(buf) if lf < 0 else lf
        excerpt = bytes(buf[start : min(stop, start + _EXCERPT_BYTES)])
        return LineTooLong(self.max_line_bytes, stop - start, excerpt)
