"""Line framing: cut the QMP byte stream into lines and tag each with a routing kind.

QMP sends one JSON object per line. This layer finds the complete lines in whatever a
``recv()`` returned, keeps a partial last line for the next call, enforces the line
length limit and tags each line (return, error, event with its name, greeting, other)
by peeking at its first key, so that unwanted events can be dropped before any JSON
decoder sees them. It never decodes JSON, never touches a socket and never logs.

The work is done by the C module ``qmplex._lines`` (built from ``csrc/lines.c``; this is
the only module that imports it), called once per receive buffer. ``split_python`` is
the pure-Python reference with exactly the same output: the test oracle, and a fallback
that warns when it is taken because the C module failed to import.

Theory of operation:

* Spans, not copies: ``Splitter.feed`` returns the buffer it scanned and a flat list of
  ints, five per line: ``kind, start, end, name_start, name_end``. ``buf[start:end]`` is
  the line without its ``"\\n"`` and one ``"\\r"`` before it; ``buf[name_start:name_end]``
  is the event name for ``KIND_EVENT`` (``0, 0`` otherwise). Blank lines (only spaces,
  tabs and CRs) are skipped.
* No rescanning: the partial last line is kept in a ``bytearray`` that never holds a
  ``"\\n"``. While new data has no ``"\\n"`` it is appended (amortised O(1)); when a
  ``"\\n"`` arrives, tail and data are joined once and scanned. A long line arriving in
  small chunks costs O(total bytes).
* The kind is a routing hint only: ``KIND_EVENT`` means the line starts like an event
  with that name (the name has no escapes), so it may be dropped undecoded; every other
  line must be decoded to be validated. Lines of ``KIND_OTHER`` need classifying after
  decoding (e.g. a reply whose ``"id"`` comes before ``"return"``).
* A line whose content is longer than ``max_line_bytes`` is a protocol error: lines
  before it are still returned, with a ``LineTooLong`` that the caller turns into
  closing the connection.
"""

from __future__ import annotations

import re
import sys
import threading
import warnings
from typing import Any, Final

from qmplex.errors import LineTooLong

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "KIND_OTHER",
    "KIND_RETURN",
    "KIND_ERROR",
    "KIND_EVENT",
    "KIND_GREETING",
    "SPAN_FIELDS",
    "C_AVAILABLE",
    "C_IMPORT_ERROR",
    "Splitter",
    "split_python",
    "split_c",
]

#: Default limit on a line's length in bytes (terminator excluded).
DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024 * 1024

#: Line kinds, as tagged by the splitter (same values as ``QMPLEX_KIND_*`` in lines.h).
KIND_OTHER: Final = 0
KIND_RETURN: Final = 1
KIND_ERROR: Final = 2
KIND_EVENT: Final = 3
KIND_GREETING: Final = 4

#: Ints per line in a span list: kind, start, end, name_start, name_end.
SPAN_FIELDS: Final = 5

# Lines the C splitter reports per call; more lines in one buffer mean more calls.
_OUT_LINES: Final = 4096
# The C output arrays (160 KiB) are shared by every Splitter of a thread, not owned by
# each: a connection's idle memory stays small (the spans are copied out before
# feed() returns, and one thread runs one feed at a time).
_c_thread = threading.local()


def _c_buffers() -> tuple[Any, Any, Any]:
    try:
        buffers: tuple[Any, Any, Any] = _c_thread.buffers
    except AttributeError:
        buffers = _c_thread.buffers = (
            _c_ffi.new("size_t[]", SPAN_FIELDS * _OUT_LINES),
            _c_ffi.new("size_t *"),
            _c_ffi.new("int *"),
        )
    return buffers
# Bytes of the offending line kept in a LineTooLong.
_EXCERPT_BYTES: Final = 200


def _load_c() -> tuple[Any, Any, str | None]:
    try:
        from qmplex._lines import ffi, lib
    except ImportError as exc:  # the extension was not built (or not for this Python)
        return None, None, f"{type(exc).__name__}: {exc}"
    return ffi, lib, None


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
        "qmplex: the C line splitter (qmplex._lines) could not be imported "
        f"({C_IMPORT_ERROR}); using the much slower pure-Python splitter. "
        "Reinstall qmplex with a C compiler available.",
        RuntimeWarning,
        stacklevel=3,
    )


# --- Pure-Python reference -------------------------------------------------------------
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


def split_python(
    buf: bytes | bytearray, max_line: int, start: int = 0
) -> tuple[list[int], int, bool]:
    """Split ``buf[start:]`` into lines: the pure-Python reference for the C splitter.

    Args:
        buf: the received bytes.
        max_line: the longest allowed line content in bytes (terminator excluded).
        start: where to begin; must be the start of a line.

    Returns:
        ``(spans, consumed, too_long)``: ``spans`` holds ``SPAN_FIELDS`` ints per
        complete non-blank line (``kind, start, end, name_start, name_end``, indexing
        ``buf``); ``consumed`` is the offset just after the last ``"\\n"`` handled, so
        ``buf[consumed:]`` is a partial line; ``too_long`` is true when the line at
        ``consumed`` is longer than ``max_line`` (a partial one as soon as its known
        content is: its length, less one for a trailing ``"\\r"``). Nothing after that
        line is examined.
    """
    spans: list[int] = []
    find = buf.find
    match = _CLASSIFY.match
    size = len(buf)
    pos = start
    while pos < size:
        lf = find(b"\n", pos)
        if lf < 0:
            known = size - pos
            if buf[size - 1] == 0x0D:
                known -= 1
            return spans, pos, known > max_line
        end = lf - 1 if lf > pos and buf[lf - 1] == 0x0D else lf
        if end - pos > max_line:
            return spans, pos, True
        m = match(buf, pos, end)
        if m is not None:
            group = m.lastindex or 0
            kind = _GROUP_KIND[group]
            if kind == KIND_EVENT:
                spans += (KIND_EVENT, pos, end, m.start(group), m.end(group))
            else:
                spans += (kind, pos, end, 0, 0)
        elif _NON_BLANK.search(buf, pos, end) is not None:
            spans += (KIND_OTHER, pos, end, 0, 0)
        pos = lf + 1
    return spans, pos, False


# --- C splitter ------------------------------------------------------------------------


def _run_c(
    buf: bytes | bytearray,
    start: int,
    max_line: int,
    out: Any,
    out_lines: int,
    consumed: Any,
    error: Any,
) -> tuple[list[int], int, bool]:
    """Call ``qmplex_split`` until ``buf`` is done; see ``split_python`` for the result."""
    spans: list[int] = []
    pos = start
    size = len(buf)
    split = _c_lib.qmplex_split
    with _c_ffi.from_buffer(buf) as cbuf:
        while True:
            n = split(cbuf, size, pos, max_line, out, out_lines, consumed, error)
            if n < 0:  # only for invalid arguments, which this module never passes
                raise RuntimeError(f"qmplex_split failed with {n}")
            pos = consumed[0]
            if n:
                spans += _c_ffi.unpack(out, SPAN_FIELDS * n)
            if n < out_lines or error[0]:
                break
    return spans, pos, error[0] != 0


def split_c(
    buf: bytes | bytearray, max_line: int, start: int = 0, *, out_lines: int = 256
) -> tuple[list[int], int, bool]:
    """Split ``buf[start:]`` with the C splitter; same result as ``split_python``.

    Allocates its output array on every call: ``Splitter`` keeps one instead.

    Args:
        buf: the received bytes.
        max_line: the longest allowed line content in bytes.
        start: where to begin; must be the start of a line.
        out_lines: lines reported per C call (the loop makes as many calls as needed).

    Raises:
        ImportError: the C module is not available.
    """
    if not C_AVAILABLE:
        raise ImportError(f"qmplex._lines is not available: {C_IMPORT_ERROR}")
    return _run_c(
        buf,
        start,
        min(max_line, sys.maxsize),
        _c_ffi.new("size_t[]", SPAN_FIELDS * out_lines),
        out_lines,
        _c_ffi.new("size_t *"),
        _c_ffi.new("int *"),
    )


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
        self, data: bytes | bytearray | memoryview
    ) -> tuple[bytes | bytearray, list[int], LineTooLong | None]:
        """Add received bytes and return the lines they complete.

        Args:
            data: the bytes just received. Bytes are scanned in place (no copy) when no
                partial line is pending; a memoryview is copied once.

        Returns:
            ``(buf, spans, error)``. ``spans`` holds ``SPAN_FIELDS`` ints per complete
            non-blank line, in stream order, indexing ``buf``: ``kind, start, end,
            name_start, name_end`` (see the module docstring). ``buf`` may be ``data``
            itself or a new object; the caller may keep it, and must not modify ``data``
            while it uses the spans. ``error`` is a ``LineTooLong`` when the line after
            those returned is too long; the splitter has then reset itself and the
            caller must close the connection (what follows cannot be framed).
        """
        if isinstance(data, memoryview):
            data = data.tobytes()
        tail = self._tail
        if tail:
            if data.find(b"\n") < 0:
                # Still the same partial line: append, and check what is known of it.
                tail += data
                known = len(tail) - (1 if tail[-1] == 0x0D else 0)
                if known > self.max_line_bytes:
                    err = self._too_long(tail, 0)
                    self.reset()
                    return b"", [], err
                return b"", [], None
            # One bytes object, not the bytearray: slices of bytes (each line, each
            # event name) are cheaper to make and free, and need no conversion.
            buf: bytes | bytearray = b"".join((tail, data))
            self._tail = bytearray()
        else:
            buf = data
        if self.impl == "c":
            out, consumed_p, error_p = _c_buffers()
            max_line = self.max_line_bytes
            if max_line > sys.maxsize:  # min() costs a builtin call per feed
                max_line = sys.maxsize
            spans, consumed, too_long = _run_c(
                buf,
                0,
                max_line,
                out,
                _OUT_LINES,
                consumed_p,
                error_p,
            )
        else:
            spans, consumed, too_long = split_python(buf, self.max_line_bytes)
        if too_long:
            err = self._too_long(buf, consumed)
            self.reset()
            return buf, spans, err
        if consumed < len(buf):
            with memoryview(buf) as view:
                self._tail = bytearray(view[consumed:])
        return buf, spans, None

    def pending(self) -> int:
        """Return the number of bytes held in the partial last line."""
        return len(self._tail)

    def reset(self) -> None:
        """Drop the partial last line (after an error, or to reuse the splitter)."""
        self._tail = bytearray()

    def _too_long(self, buf: bytes | bytearray, start: int) -> LineTooLong:
        lf = buf.find(b"\n", start)
        stop = len(buf) if lf < 0 else lf
        excerpt = bytes(buf[start : min(stop, start + _EXCERPT_BYTES)])
        return LineTooLong(self.max_line_bytes, stop - start, excerpt)
