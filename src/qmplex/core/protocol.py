"""Sans-I/O QMP: greeting, capability negotiation, command encoding, reply matching.

This module never touches a socket, a clock or a thread, and never calls anyone back:
bytes go in through :meth:`Protocol.receive_data`, and what they meant comes out as its
return value (a list of :mod:`~qmplex.core.messages` values, in stream order); commands
come out as bytes from :func:`encode_command`. It is tested by feeding bytes.

Theory of operation
-------------------
States (:class:`State`) move only forward::

    GREETING --greeting--> NEGOTIATING --qmp_capabilities ok--> READY --close/fatal--> CLOSED

1. ``GREETING``: the first line must be ``{"QMP": {"version": ..., "capabilities": [...]}}``
   (anything else is fatal: :class:`~qmplex.errors.GreetingError`), except events,
   which are skipped and counted (:attr:`Protocol.events_before_greeting`: QEMU
   4.0-rc2 sent one before its greeting), and replies, which are a previous client's
   (QEMU 7.2 can write one before the next client's greeting): noted as
   :class:`StaleReply` values. ``receive_data`` returns a :class:`Greeting`;
   the caller then sends :meth:`Protocol.negotiate`'s bytes.
2. ``NEGOTIATING``: the reply to our ``qmp_capabilities`` moves to ``READY`` (an error
   reply is fatal: :class:`~qmplex.errors.NegotiationError`). The caller may encode
   commands before that; it must hold their bytes until ``READY`` because QEMU refuses
   every other command until negotiation ends.
3. ``READY``: each command carries an ``id`` chosen by the caller, which QMP echoes
   verbatim (QMP spec: "id ... will be included in the response"). The caller calls
   :meth:`Protocol.sent` when it hands a command's bytes to the transport; its reply
   comes back as a :class:`Reply` carrying the caller's token. A reply whose id is not
   in flight is dropped and returned as a :class:`StaleReply` note: QEMU hands the
   reply of a command that a previous client left running to the next client of the
   monitor, so it is not the peer's fault. Ids must therefore be unique across all of
   one monitor's connections (the client counts them per process). A reply without an
   id matches the oldest command in flight (peers that do not echo ids; QEMU's id-less
   replies answer unparsable input, which we never send).

Events are routed before decoding: the framing layer matches each event line's name
against :attr:`Protocol.routes` (a :class:`~qmplex.core.framing.RouteTable`) and drops
the lines nobody wants without decoding them; the others come back as :class:`Event`
values. With ``routes=None`` every event is decoded and returned.

Bad peer input, and what happens to the connection:

======================================  ===============================================
input                                   rule
======================================  ===============================================
line over ``max_line_bytes``            fatal: :class:`LineTooLong`
first line not a QMP greeting           fatal: :class:`GreetingError`
``qmp_capabilities`` refused            fatal: :class:`NegotiationError`
reply line that is not valid JSON       fatal: :class:`DecodeError` (its command unknown)
other invalid JSON, non-object JSON     reported: a :class:`DecodeError` value, line dropped
event without a name, unknown kind      reported: a :class:`ProtocolError` value, line dropped
reply to no command in flight           noted: a :class:`StaleReply`, dropped
======================================  ===============================================

A fatal error is the last value of the list ``receive_data`` returns (after everything
before it), :attr:`Protocol.error` holds it and the state is CLOSED: the caller must
close the connection.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from operator import length_hint
from typing import Any

import orjson

from ..errors import (
    DecodeError,
    GreetingError,
    NegotiationError,
    ProtocolError,
    StateError,
    ValidationError,
    excerpt,
)
from .framing import C_AVAILABLE as _FRAMING_C
from .framing import (
    DEFAULT_MAX_LINE_BYTES,
    KIND_ERROR,
    KIND_RETURN,
    ROUTE_BASE,
    RouteTable,
    Splitter,
)
from .messages import Event, Greeting, QMPVersion, Reply, StaleReply, _tuple_new

__all__ = ["State", "Protocol", "encode_command", "parse_greeting"]

_loads = orjson.loads
_dumps = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_JSONDecodeError = orjson.JSONDecodeError


class State(enum.Enum):
    """Where a QMP connection stands."""

    GREETING = "greeting"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


_READY = State.READY
_CLOSED = State.CLOSED
_NO_ID: Any = object()
_NEGOTIATE = object()  # token of our own qmp_capabilities
# Before READY, and without routes: every event line reported, none routed.
_EVERY_EVENT = RouteTable((), catch_all=True)


def encode_command(name: str, arguments: dict[str, Any] | None, cid: Any,
                   oob: bool = False) -> bytes:
    """Encode one command as a line of JSON: ``{"execute": name, "arguments": ...,
    "id": cid}`` (``"exec-oob"`` when ``oob``).

    Raises:
        ValidationError: the name, the arguments or the id cannot be encoded as JSON.
    """
    try:
        if type(cid) is int and not oob:
            # The usual command: its name as JSON is kept per name, the rest formatted in.
            head = _heads.get(name) or _head(name)
            if arguments is None:
                return b'{"execute":%b,"id":%d}\n' % (head, cid)
            return b'{"execute":%b,"arguments":%b,"id":%d}\n' % (head, _dumps(arguments), cid)
        msg: dict[str, Any] = {"exec-oob" if oob else "execute": name, "id": cid}
        if arguments is not None:
            msg["arguments"] = arguments
        return _dumps(msg, option=_NL)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ValidationError(f"{name}: arguments are not JSON-serialisable: {exc}") from exc


# Command names encoded as JSON strings, by name (bounded: a program uses few names).
_heads: dict[str, bytes] = {}
_MAX_HEADS = 4096


def _head(name: str) -> bytes:
    head = _dumps(name)
    if len(_heads) < _MAX_HEADS:
        _heads[name] = head
    return head


def parse_greeting(msg: Any, line: bytes | bytearray = b"") -> QMPVersion:
    """Turn a decoded greeting into a :class:`QMPVersion`.

    Args:
        msg: the decoded line.
        line: the line as received, for the error's excerpt.

    Raises:
        GreetingError: ``msg`` is not a QMP greeting.
    """
    try:
        qmp = msg["QMP"]
        ver = qmp["version"]
        q = ver["qemu"]
        major, minor, micro = int(q["major"]), int(q["minor"]), int(q["micro"])
        caps = qmp.get("capabilities", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise TypeError("capabilities")
        package = ver.get("package", "")
        if not isinstance(package, str):
            package = str(package)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GreetingError("the peer's greeting is not a QMP greeting",
                            excerpt=excerpt(line)) from exc
    return QMPVersion(major, minor, micro, package, tuple(caps))


class Protocol:
    """One QMP connection's state machine, without I/O.

    Args:
        max_line_bytes: the longest line accepted from the peer.
        routes: the event names anyone wants (event lines of other names are dropped
            undecoded); None: every event is decoded and returned. The caller may
            replace :attr:`routes` between two calls.
        splitter_impl: ``"auto"``, ``"c"`` or ``"python"`` (see
            :class:`~qmplex.core.framing.Splitter`).

    Attributes:
        state: where the connection stands (:class:`State`).
        version: the peer's version, once its greeting was read.
        oob_enabled: True once out-of-band execution was asked for in negotiation.
        error: the fatal :class:`~qmplex.errors.ProtocolError` that closed the
            connection, if one did.
        dropped_events: event lines dropped undecoded because nobody wanted them.
        stale_replies: replies dropped because their id was not in flight.
        events_before_greeting: event lines skipped before the greeting.
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        routes: RouteTable | None = None,
        splitter_impl: str = "auto",
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.routes = routes
        self._splitter = Splitter(max_line_bytes, impl=splitter_impl)
        self.state = State.GREETING
        self.version: QMPVersion | None = None
        self.oob_enabled = False
        self.error: ProtocolError | None = None
        self._in_flight: dict[Any, Any] = {}
        self.dropped_events = 0
        self.stale_replies = 0
        self.events_before_greeting = 0

    # ------------------------------------------------------------- sending
    @property
    def in_flight(self) -> int:
        """How many commands were sent and not yet answered."""
        return len(self._in_flight)

    def negotiate(self, cid: Any, enable_oob: bool = True) -> bytes:
        """Return the ``qmp_capabilities`` command (with id ``cid``) to send after the
        greeting, recorded as sent.

        OOB is asked for when the peer offered it and ``enable_oob`` is True.

        Raises:
            StateError: not in the NEGOTIATING state.
        """
        if self.state is not State.NEGOTIATING or self.version is None:
            raise StateError(f"negotiate() in state {self.state.value}, needs negotiating")
        args: dict[str, Any] | None = None
        if enable_oob and "oob" in self.version.capabilities:
            args = {"enable": ["oob"]}
            self.oob_enabled = True
        data = encode_command("qmp_capabilities", args, cid)
        self._in_flight[cid] = _NEGOTIATE
        return data

    def sent(self, cid: Any, token: Any) -> None:
        """Record that the command with id ``cid`` was handed to the transport: its
        reply will come back from :meth:`receive_data` as a :class:`Reply` carrying
        ``token``.

        Raises:
            StateError: the connection is closed.
        """
        if self.state is _CLOSED:
            raise StateError("the QMP connection is closed")
        self._in_flight[cid] = token

    def close(self) -> list[Any]:
        """End the connection (the peer closed it, or the caller does).

        Returns:
            The tokens of the commands still in flight, oldest first (they will get no
            reply). Afterwards the state is CLOSED and :meth:`receive_data` returns
            nothing.
        """
        self.state = _CLOSED
        tokens = [t for t in self._in_flight.values() if t is not _NEGOTIATE]
        self._in_flight.clear()
        return tokens

    # ----------------------------------------------------------- receiving
    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes received from the peer; return what they completed, in order.

        The list holds :class:`Greeting`, :class:`Reply`, :class:`Event`,
        :class:`StaleReply` and :class:`~qmplex.errors.ProtocolError` values (see the
        module docstring). After a ``Greeting`` the caller must send
        :meth:`negotiate`'s bytes; our own ``qmp_capabilities`` reply is consumed here.
        If the state is CLOSED afterwards, the last value is the fatal error (also in
        :attr:`error`) and the caller must close the connection.
        """
        state = self.state
        if state is _CLOSED:
            return []
        routes = self.routes if state is _READY else None
        buf, spans, error, dropped = self._splitter.feed(
            data, _EVERY_EVENT if routes is None else routes)
        if dropped:
            self.dropped_events += dropped
        out: list[Any] = []
        if spans:
            try:
                self._handle_lines(buf, spans, out)
            except ProtocolError as exc:
                self._fatal(exc, out)
                return out
        if error is not None and self.state is not _CLOSED:
            self._fatal(error, out)
        return out

    def _fatal(self, error: ProtocolError, out: list[Any]) -> None:
        self.state = _CLOSED
        self.error = error
        out.append(error)

    def _handle_lines(self, buf: bytes | bytearray, spans: list[int], out: list[Any]) -> None:
        # The reference for every line. With the C decoder (``_decode``, READY only),
        # each run of routed event lines and in-flight replies goes to one C call that
        # builds exactly what this loop builds for them and hands back the index of the
        # first line of another sort (or that it does not like), which this loop then
        # handles itself.
        in_flight = self._in_flight
        routes = self.routes
        names = routes.names if routes is not None else ()
        ready = self.state is _READY
        decode = _decode
        append = out.append
        loads = _loads
        count = len(spans) // 3
        fields: Any = iter(spans)  # tag, start, end per line
        for tag, start, end in zip(fields, fields, fields):  # noqa: B905
            if decode is not None and ready and (tag >= ROUTE_BASE or tag == KIND_RETURN):
                # This line and the next ones in C, up to the line it leaves to this
                # loop: that one is handled here, and the loop goes on after it. (Where
                # a list iterator stands: its length hint; __setstate__ moves it.)
                index = count - 1 - length_hint(fields) // 3
                index = decode(buf, spans, index, names, in_flight, out)
                if index == count:
                    return
                tag, start, end = spans[3 * index:3 * index + 3]
                fields.__setstate__(3 * index + 3)
            line = buf[start:end]
            try:
                msg = loads(line)
            except _JSONDecodeError as exc:
                err = DecodeError(f"invalid JSON from the peer ({exc})", excerpt=excerpt(line))
                if tag == KIND_RETURN or tag == KIND_ERROR or not ready:
                    raise err from exc
                append(err)
                continue
            if tag >= ROUTE_BASE:
                # A routed event line: the splitter matched its "event" name against
                # the routes, so it decodes to an object with that name.
                data = msg.get("data")
                append(_tuple_new(Event, (names[tag - ROUTE_BASE],
                                          data if type(data) is dict else {},
                                          msg.get("timestamp"))))
                continue
            if type(msg) is not dict:
                if self.state is State.GREETING:
                    raise GreetingError("the peer did not start with a QMP greeting",
                                        excerpt=excerpt(line))
                append(DecodeError("a QMP message must be a JSON object",
                                   excerpt=excerpt(line)))
                continue
            if not ready:
                self._handle_setup(msg, line, out)
                ready = self.state is _READY
                if ready:
                    routes = self.routes
                    names = routes.names if routes is not None else ()
                continue
            if "return" in msg:
                ok = True
                value = msg["return"]
            elif "error" in msg:
                ok = False
                value = msg["error"]
            elif "event" in msg:
                # Not routed by the splitter: a catch-all subscription wants it, or its
                # name could not be matched in C (escapes), or it came in the same
                # batch as the end of negotiation.
                try:
                    event = Event.from_message(msg)
                except ValueError:
                    append(ProtocolError("event without a name", excerpt=excerpt(line)))
                    continue
                if routes is not None and not routes.wants(event.name):
                    self.dropped_events += 1
                    continue
                append(event)
                continue
            else:
                what = ("a second greeting from the peer" if "QMP" in msg
                        else "a QMP message of unknown kind")
                append(ProtocolError(what, excerpt=excerpt(line)))
                continue
            cid = msg.get("id", _NO_ID)
            if cid is _NO_ID:
                if not in_flight:
                    self.stale_replies += 1
                    append(StaleReply(None, excerpt(line)))
                    continue
                cid = next(iter(in_flight))
            try:
                token = in_flight.pop(cid)
            except (KeyError, TypeError):  # not ours, or an unhashable id
                self.stale_replies += 1
                append(StaleReply(cid, excerpt(line)))
                continue
            append(_tuple_new(Reply, (token, ok, value)))

    def _handle_setup(self, msg: dict[str, Any], line: bytes | bytearray,
                      out: list[Any]) -> None:
        if self.state is State.GREETING:
            if "QMP" not in msg:
                if "event" in msg:
                    self.events_before_greeting += 1
                    return
                if "return" in msg or "error" in msg:
                    # A reply to the previous client of the monitor: QEMU can write it
                    # before it greets the next one. Not ours, not the peer's fault.
                    self.stale_replies += 1
                    out.append(StaleReply(msg.get("id"), excerpt(line)))
                    return
                raise GreetingError("the peer did not start with a QMP greeting",
                                    excerpt=excerpt(line))
            self.version = parse_greeting(msg, line)
            self.state = State.NEGOTIATING
            out.append(Greeting(self.version))
            return
        # NEGOTIATING
        if "event" in msg:
            try:
                out.append(Event.from_message(msg))
            except ValueError:
                out.append(ProtocolError("event without a name", excerpt=excerpt(line)))
            return
        if "return" not in msg and "error" not in msg:
            out.append(ProtocolError("unexpected message during negotiation",
                                     excerpt=excerpt(line)))
            return
        in_flight = self._in_flight
        cid = msg.get("id", _NO_ID)
        if cid is _NO_ID:
            cid = next(iter(in_flight), None)
        try:
            token = in_flight.get(cid)
        except TypeError:
            token = None
        if token is not _NEGOTIATE:
            self.stale_replies += 1
            out.append(StaleReply(cid, excerpt(line)))
            return
        del in_flight[cid]
        if "error" in msg:
            err = msg["error"]
            desc = err.get("desc", "") if isinstance(err, dict) else str(err)
            raise NegotiationError(f"qmp_capabilities refused: {desc}", excerpt=excerpt(line))
        self.state = _READY


# --- The C decoder -----------------------------------------------------------------------
#
# qmplex._decode (csrc/decode.c) takes the routed event lines and the in-flight replies
# off Protocol._handle_lines, a run of them per call; the Python loop stays the reference
# for them and handles every other line. Without the module (a build without a C
# compiler) the loop does it all, and says so once.


def _load_decode() -> tuple[Callable[..., int] | None, str | None]:
    try:
        from .._decode import configure, decode
    except ImportError as exc:  # not built (or not for this Python)
        return None, f"{type(exc).__name__}: {exc}"
    configure(_loads, Event, Reply, _JSONDecodeError, ROUTE_BASE)
    return decode, None


#: The C decoder, or None: then :data:`C_IMPORT_ERROR` says why, and
#: ``Protocol._handle_lines`` decodes every line in Python (tests set it to None to run
#: that path).
_decode, C_IMPORT_ERROR = _load_decode()
#: Whether the C decoder (``qmplex._decode``) is in use.
C_AVAILABLE: bool = _decode is not None


def _warn_fallback() -> None:
    warnings.warn(
        "qmplex is running without its C speed-ups: the C decoder (qmplex._decode) could "
        f"not be imported ({C_IMPORT_ERROR}); decoding every line in Python. Reinstall "
        "qmplex where a C compiler and Python's headers are available "
        "(pip install --force-reinstall --no-cache-dir qmplex).",
        RuntimeWarning,
        stacklevel=2,
    )


# Once per process (a module runs once). When the splitter is missing too, its own
# warning (framing.py) already says that the C speed-ups are missing: one is enough.
if not C_AVAILABLE and _FRAMING_C:
    _warn_fallback()
