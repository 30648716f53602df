"""Sans-I/O QMP: greeting, capability negotiation, command encoding, reply matching.

This module never touches a socket, a clock or a thread: bytes go in through
:meth:`Protocol.receive_data`, messages come out as its return value, and commands come
out as bytes from :meth:`Protocol.encode_command`. It is tested by feeding bytes.

Theory of operation
-------------------
States (:class:`State`) move only forward::

    GREETING --greeting--> NEGOTIATING --qmp_capabilities ok--> READY --eof/fatal--> CLOSED

1. ``GREETING``: the first line must be ``{"QMP": {"version": ..., "capabilities": [...]}}``
   (anything else is a fatal :class:`GreetingError`). :meth:`receive_data` returns a
   :class:`Greeting`; the caller then sends :meth:`negotiate`'s bytes.
2. ``NEGOTIATING``: the reply to ``qmp_capabilities`` moves to ``READY`` (an error reply is
   a fatal :class:`NegotiationError`). The caller may encode commands before that; it
   must hold their bytes until ``READY`` because QEMU refuses every other command
   until negotiation ends.
3. ``READY``: every command carries a per-connection integer ``id`` that QMP echoes
   verbatim (QMP spec: "id ... will be included in the response"). Replies are matched
   by id. A reply without an id matches the oldest command in flight: that serves peers
   that do not echo ids, and is never needed with QEMU because we send only valid JSON
   (QEMU's id-less replies answer unparsable input). A reply with an id that matches no
   command in flight is reported as :class:`UnexpectedReply` and dropped.

Events are routed before decoding: the framing layer matches each event line's name
against the ``router``'s names (a :class:`~qmplex.framing.RouteTable`), drops the lines
nobody wants without decoding them, and tags the others with their route, so
:meth:`Protocol.receive_into` decodes a wanted event once and calls its name's handler
with it at once (in stream order with the replies: there is no message list). A run of
routed lines goes through a C loop that does exactly that (``qmplex._deliver``,
``csrc/deliver.c``) and hands back to the Python loop every line it does not deliver
itself; without the extension the Python loop does it all.

Bad peer input, and what happens to the connection:

======================================  ===============================================
input                                   rule
======================================  ===============================================
line over ``max_line_bytes``            fatal: :class:`LineTooLong`
first line not a QMP greeting           fatal: :class:`GreetingError`
``qmp_capabilities`` refused            fatal: :class:`NegotiationError`
reply line that is not valid JSON       fatal: :class:`DecodeError` (its command unknown)
other invalid JSON, non-object JSON,    reported: :class:`DecodeError` / ProtocolError,
event without a name                    line dropped, connection continues
reply to no command (or twice)          reported: :class:`UnexpectedReply`, dropped
======================================  ===============================================

"Reported" errors come out of :meth:`receive_data` as :class:`ProtocolError` values in
the message list; "fatal" ones are raised, after the messages that preceded them were
returned through :attr:`Protocol.pending_messages`, and the protocol moves to CLOSED.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import (
    DecodeError,
    GreetingError,
    NegotiationError,
    ProtocolError,
    StateError,
    UnexpectedReply,
    ValidationError,
    excerpt,
)
from .events import DispatchTable, Event, _tuple_new, callback_failed
from .framing import (
    DEFAULT_MAX_LINE_BYTES,
    KIND_ERROR,
    KIND_RETURN,
    ROUTE_BASE,
    RouteTable,
    Splitter,
)

__all__ = ["State", "QMPVersion", "Greeting", "Reply", "Protocol"]

#: Deepest nesting of arrays/objects accepted from the peer (orjson's own limit).
MAX_JSON_DEPTH = 1024
# orjson before 3.9.15 has no depth limit: a peer's line of a million "[" overflows
# the C stack and kills the process (CVE-2024-27454). With such an orjson, lines that
# could be that deep are checked first (a cheap count; an exact scan only when it says
# so). Newer orjson refuses them itself, and this costs nothing.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep(line: bytes | bytearray) -> bool:
    if line.count(b"[") + line.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for m in _JSON_TOKEN.finditer(line):
        c = m.group()[0]
        if c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif c == 0x5D or c == 0x7D:  # ] }
            depth -= 1
    return False


def _loads_depth_checked(line: bytes | bytearray) -> Any:
    # A line of at most MAX_JSON_DEPTH bytes cannot nest deeper: skip the counts.
    if len(line) > MAX_JSON_DEPTH and _too_deep(line):
        raise orjson.JSONDecodeError(
            f"nesting deeper than {MAX_JSON_DEPTH} levels", "", 0)
    return orjson.loads(line)


def _orjson_limits_depth() -> bool:
    try:
        version = tuple(int(x) for x in orjson.__version__.split(".")[:3])
    except (AttributeError, ValueError):
        return False
    return version >= (3, 9, 15)


_loads: Callable[[bytes | bytearray], Any] = (
    orjson.loads if _orjson_limits_depth() else _loads_depth_checked)
_dumps = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE


class State(enum.Enum):
    """Where a QMP connection stands."""

    GREETING = "greeting"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class QMPVersion:
    """What the peer said about itself in its greeting.

    Attributes:
        major, minor, micro: QEMU's version numbers.
        package: the distribution's package string (may be empty).
        capabilities: the QMP capabilities offered (e.g. ``("oob",)``).
    """

    major: int
    minor: int
    micro: int
    package: str = ""
    capabilities: tuple[str, ...] = ()

    def at_least(self, major: int, minor: int = 0, micro: int = 0) -> bool:
        """Return True if this version is ``major.minor.micro`` or newer."""
        return (self.major, self.minor, self.micro) >= (major, minor, micro)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True, slots=True)
class Greeting:
    """The peer's greeting was received; send :meth:`Protocol.negotiate` next."""

    version: QMPVersion


class Reply:
    """A reply matched to the command that caused it.

    Attributes:
        token: what the caller passed to :meth:`Protocol.encode_command`.
        ok: True for ``{"return": ...}``, False for ``{"error": ...}``.
        value: the ``return`` value, or the ``error`` object (``class`` and ``desc``).
    """

    __slots__ = ("token", "ok", "value")

    def __init__(self, token: Any, ok: bool, value: Any) -> None:
        self.token = token
        self.ok = ok
        self.value = value

    def __repr__(self) -> str:
        return f"Reply(token={self.token!r}, ok={self.ok}, value={self.value!r})"


def parse_greeting(msg: Any) -> QMPVersion:
    """Turn a decoded greeting into a :class:`QMPVersion`.

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
        raise GreetingError(
            "the peer's greeting is not a QMP greeting",
            excerpt=excerpt(orjson.dumps(msg, default=repr)),
        ) from exc
    return QMPVersion(major, minor, micro, package, tuple(caps))


_NEGOTIATE = object()  # token of our own qmp_capabilities


class Protocol:
    """One QMP connection's state machine, without I/O.

    Args:
        max_line_bytes: the longest line accepted from the peer.
        router: the event dispatch table: event lines of names it does not want are
            dropped undecoded (in the framing layer), and :meth:`receive_into` hands
            the others straight to its per-name handlers. ``None``: every event is
            decoded and returned.
        splitter_impl: ``"auto"``, ``"c"`` or ``"python"`` (see :class:`Splitter`).
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        router: DispatchTable | None = None,
        splitter_impl: str = "auto",
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.router = router
        self._splitter = Splitter(max_line_bytes, impl=splitter_impl)
        self.state = State.GREETING
        self.version: QMPVersion | None = None
        self.oob_enabled = False
        self._next_id = 1
        self._in_flight: dict[int, Any] = {}
        #: Messages decoded before a fatal error was raised by receive_data.
        self.pending_messages: list[Any] = []
        #: Event lines dropped undecoded because nobody wanted them.
        self.dropped_events = 0
        # (the router's routing, its names by tag, its handlers by tag)
        self._by_tag: tuple[Any, tuple[Any, ...], tuple[Any, ...]] = (None, (), ())

    # ------------------------------------------------------------- sending
    @property
    def in_flight(self) -> int:
        """How many commands were encoded and not yet answered."""
        return len(self._in_flight)

    def negotiate(self, enable_oob: bool = True) -> bytes:
        """Return the ``qmp_capabilities`` command to send after the greeting.

        OOB is enabled when the peer offered it and ``enable_oob`` is True.

        Raises:
            StateError: not in the NEGOTIATING state.
        """
        if self.state is not State.NEGOTIATING or self.version is None:
            raise StateError(f"negotiate() in state {self.state.value}, needs negotiating")
        args: dict[str, Any] = {}
        if enable_oob and "oob" in self.version.capabilities:
            args["enable"] = ["oob"]
            self.oob_enabled = True
        cid, data = self.encode("qmp_capabilities", args or None)
        self._in_flight[cid] = _NEGOTIATE
        return data

    def encode(
        self, name: str, arguments: dict[str, Any] | None = None, oob: bool = False
    ) -> tuple[int, bytes]:
        """Encode a command with a fresh id; return ``(id, bytes)``.

        Nothing is recorded: after calling this, the caller sends the bytes (in the
        order of the ids is not required, QMP echoes ids) and must call :meth:`expect`
        with the id when it hands the bytes to the transport, so the reply is matched.

        Raises:
            ValidationError: the arguments cannot be encoded as JSON (no id is used).
        """
        cid = self._next_id
        msg: dict[str, Any] = {"exec-oob" if oob else "execute": name, "id": cid}
        if arguments is not None:
            msg["arguments"] = arguments
        try:
            data = _dumps(msg, option=_NL)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise ValidationError(f"{name}: arguments are not JSON-serialisable: {exc}") from exc
        self._next_id = cid + 1
        return cid, data

    def expect(self, cid: int, token: Any) -> None:
        """Record that command ``cid`` was sent: its reply will carry ``token``.

        Raises:
            StateError: the connection is closed.
        """
        if self.state is _CLOSED:
            raise StateError("the QMP connection is closed")
        self._in_flight[cid] = token

    def encode_command(
        self, name: str, arguments: dict[str, Any] | None, token: Any, *, oob: bool = False
    ) -> bytes:
        """Encode a command and record it as sent (:meth:`encode` + :meth:`expect`).

        After calling this, the caller must send the returned bytes; the reply comes
        back from :meth:`receive_data` as a :class:`Reply` carrying ``token``.

        Raises:
            ValidationError: the arguments cannot be encoded as JSON (nothing recorded).
            StateError: the connection is closed.
        """
        if self.state is State.CLOSED:
            raise StateError("the QMP connection is closed")
        cid, data = self.encode(name, arguments, oob=oob)
        self._in_flight[cid] = token
        return data

    def forget(self, cid: int) -> None:
        """Stop expecting a reply to command ``cid``."""
        self._in_flight.pop(cid, None)

    @property
    def last_id(self) -> int:
        """The id given to the most recently encoded command."""
        return self._next_id - 1

    # ----------------------------------------------------------- receiving
    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes received from the peer; return what they completed, in order.

        The list holds :class:`Greeting`, :class:`Reply`, :class:`Event` and reported
        :class:`ProtocolError` values. After a ``Greeting``, the caller must send
        :meth:`negotiate`'s bytes. Our own ``qmp_capabilities`` reply is consumed here.
        With a ``router``, events of names it does not want are dropped undecoded; the
        others are returned (its callbacks are not called: see :meth:`receive_into`).

        Raises:
            ProtocolError: a fatal error (see the module docstring); messages decoded
                before it are in :attr:`pending_messages`, and the state is CLOSED.
        """
        out: list[Any] = []
        append = out.append

        def on_reply(token: Any, ok: bool, value: Any) -> None:
            append(Reply(token, ok, value))

        try:
            self.receive_into(data, on_reply, append, route=False)
        except ProtocolError:
            self.pending_messages = out
            raise
        return out

    def receive_into(
        self,
        data: bytes,
        on_reply: Callable[[Any, bool, Any], object],
        on_message: Callable[[Any], object],
        *,
        route: bool = True,
    ) -> None:
        """Feed bytes received from the peer and hand over what they completed, in
        stream order, as it is decoded (no list, no :class:`Reply` objects).

        Args:
            data: the bytes received.
            on_reply: called as ``on_reply(token, ok, value)`` for each reply (what a
                :class:`Reply` holds).
            on_message: called with each :class:`Greeting`, reported
                :class:`ProtocolError` and each :class:`Event` not delivered through the
                router.
            route: deliver the events the ``router`` routes straight to the handlers of
                its :meth:`~qmplex.events.DispatchTable.routing` (False: to
                ``on_message``).

        A callback that ends the connection (:meth:`receive_eof`) stops the processing:
        the rest of ``data`` is ignored and its replies' commands stay in flight (for
        :meth:`take_in_flight`).

        Raises:
            ProtocolError: a fatal error (see the module docstring), after everything
                that preceded it was handed over; the state is then CLOSED.
        """
        if self.state is _CLOSED:
            return
        router = self.router
        if router is not None and self.state is _READY:
            routing = router.routing()
            cached = self._by_tag
            if cached[0] is not routing:
                # Names and handlers indexed by tag (ROUTE_BASE + i), so the loop does
                # no subtraction per line; worked out once per routing.
                pad: tuple[Any, ...] = (None,) * ROUTE_BASE
                cached = self._by_tag = (routing, pad + routing[0].names, pad + routing[1])
            routes = routing[0]
            names_at = cached[1]
            handlers_at = cached[2] if route else None
        else:
            routes, names_at, handlers_at = _EVERY_EVENT, (), None
        buf, spans, error, dropped = self._splitter.feed_routed(data, routes)
        if dropped:
            self.dropped_events += dropped
        if spans:
            try:
                self._handle_lines(buf, spans, names_at, handlers_at, on_reply, on_message)
            except ProtocolError:
                self.state = _CLOSED
                raise
        if error is not None:
            self.state = _CLOSED
            raise error

    def receive_eof(self) -> list[Any]:
        """Tell the protocol the peer closed the connection; returns nothing more.

        Afterwards the state is CLOSED; commands still in flight will get no reply.
        """
        self.state = State.CLOSED
        return []

    def take_in_flight(self) -> list[Any]:
        """Return and forget the tokens of every command still in flight (oldest first)."""
        tokens = list(self._in_flight.values())
        self._in_flight.clear()
        return tokens

    def _handle_lines(
        self,
        buf: bytes | bytearray,
        spans: list[int],
        names_at: tuple[Any, ...],
        handlers_at: tuple[Any, ...] | None,
        on_reply: Callable[[Any, bool, Any], object],
        on_message: Callable[[Any], object],
    ) -> None:
        # names_at[tag] / handlers_at[tag]: the name and handler of a routed line's tag.
        in_flight = self._in_flight
        router = self.router
        version = router.version if router is not None else 0
        state_ready = self.state is _READY
        loads = _loads  # orjson.loads, or with an old orjson its depth-checking wrapper
        event_t = Event
        new_event = _tuple_new
        # Runs of routed lines go to the C loop when there is one (same work, no
        # bytecode per line); what it hands back, and everything else, is done here.
        deliver = _deliver if handlers_at is not None else None
        fields = iter(spans)  # ROUTED_FIELDS ints per line, unpacked by zip
        # No strict= keyword: zip() then skips its keyword parsing (~1k instructions).
        for tag, start, end in zip(fields, fields, fields):  # noqa: B905
            if tag >= ROUTE_BASE and deliver is not None:
                # It takes this line and the routed ones after it from `fields`.
                code, tag, start, end = deliver(buf, tag, start, end, fields, names_at,
                                                handlers_at, router, version, self)
                if code != _DELIVER_LINE:
                    if code != _DELIVER_CHANGED:
                        return  # no line left, or a callback ended the connection
                    # A callback (un)subscribed: as below.
                    version = router.version  # type: ignore[union-attr]
                    handlers_at = (router.dispatch,) * len(names_at)  # type: ignore[union-attr]
                    continue
                # A line for this loop: not routed, or one loads() refused.
            line = buf[start:end]
            if tag >= ROUTE_BASE:
                # An event line of a wanted name (the splitter matched the name, so
                # its "event" member is that name, and the line is a JSON object):
                # decode it and build the Event straight away.
                try:
                    msg = loads(line)
                except orjson.JSONDecodeError as exc:
                    on_message(DecodeError(f"invalid JSON from the peer ({exc})",
                                           excerpt=excerpt(line)))
                    if self.state is _CLOSED:
                        return
                    continue
                data = msg.get("data")
                event = new_event(event_t, (names_at[tag], data if type(data) is dict else {},
                                            msg.get("timestamp")))
                if handlers_at is None:
                    on_message(event)
                else:
                    handler = handlers_at[tag]
                    try:
                        handler(event)
                    except Exception:
                        callback_failed(handler)
                    if router.version != version:  # type: ignore[union-attr]
                        # A callback (un)subscribed: the rest of the batch goes through
                        # the table's general dispatch, which sees every change.
                        version = router.version  # type: ignore[union-attr]
                        handlers_at = (router.dispatch,) * len(names_at)  # type: ignore[union-attr]
                if self.state is _CLOSED:
                    return  # a callback ended the connection
                continue
            try:
                msg = loads(line)
            except orjson.JSONDecodeError as exc:
                err = DecodeError(f"invalid JSON from the peer ({exc})", excerpt=excerpt(line))
                if tag == KIND_RETURN or tag == KIND_ERROR or not state_ready:
                    raise err from exc
                on_message(err)
                if self.state is _CLOSED:
                    return
                continue
            if type(msg) is not dict:
                if not state_ready and self.state is State.GREETING:
                    raise GreetingError("the peer did not start with a QMP greeting",
                                        excerpt=excerpt(line))
                on_message(DecodeError("a QMP message must be a JSON object",
                                       excerpt=excerpt(line)))
                if self.state is _CLOSED:
                    return
                continue
            if not state_ready:
                self._handle_setup(msg, line, on_message)
                state_ready = self.state is _READY
                if self.state is _CLOSED:
                    return
                continue
            if "return" in msg:
                ok = True
                value = msg["return"]
            elif "error" in msg:
                ok = False
                value = msg["error"]
            elif "event" in msg:
                try:
                    event = Event.from_message(msg)
                except ValueError:
                    on_message(ProtocolError("event without a name", excerpt=excerpt(line)))
                    if self.state is _CLOSED:
                        return
                    continue
                if router is not None and not router.wants(
                        event.name.encode("ascii", "replace")):
                    self.dropped_events += 1
                    continue
                on_message(event)
                if self.state is _CLOSED:
                    return
                continue
            else:
                what = "a second greeting from the peer" if "QMP" in msg else \
                    "a QMP message of unknown kind"
                on_message(ProtocolError(what, excerpt=excerpt(line)))
                if self.state is _CLOSED:
                    return
                continue
            cid = msg.get("id", _NO_ID)
            if cid is _NO_ID:
                if not in_flight:
                    on_message(UnexpectedReply(
                        "a reply without id while no command is in flight",
                        excerpt=excerpt(line)))
                    if self.state is _CLOSED:
                        return
                    continue
                cid = next(iter(in_flight))
            try:
                token = in_flight.pop(cid)
            except (KeyError, TypeError):
                on_message(UnexpectedReply("a reply whose id matches no command in flight",
                                           excerpt=excerpt(line)))
                if self.state is _CLOSED:
                    return
                continue
            on_reply(token, ok, value)
            if self.state is _CLOSED:
                return  # a callback ended the connection

    def _handle_setup(self, msg: dict[str, Any], line: bytes | bytearray,
                      emit: Callable[[Any], object]) -> None:
        if self.state is State.GREETING:
            if "QMP" not in msg:
                raise GreetingError("the peer did not start with a QMP greeting",
                                    excerpt=excerpt(line))
            self.version = parse_greeting(msg)
            self.state = State.NEGOTIATING
            emit(Greeting(self.version))
            return
        # NEGOTIATING
        if "event" in msg:
            try:
                emit(Event.from_message(msg))
            except ValueError:
                emit(ProtocolError("event without a name", excerpt=excerpt(line)))
            return
        if "return" not in msg and "error" not in msg:
            emit(ProtocolError("unexpected message during negotiation",
                                     excerpt=excerpt(line)))
            return
        cid = msg.get("id", _NO_ID)
        in_flight = self._in_flight
        if cid is _NO_ID:
            cid = next(iter(in_flight), None)
        token = in_flight.get(cid) if isinstance(cid, int) else None
        if token is not _NEGOTIATE:
            emit(UnexpectedReply("a reply during negotiation that is not ours",
                                       excerpt=excerpt(line)))
            return
        del in_flight[cid]
        if "error" in msg:
            err = msg["error"]
            desc = err.get("desc", "") if isinstance(err, dict) else str(err)
            raise NegotiationError(f"qmp_capabilities refused: {desc}", excerpt=excerpt(line))
        self.state = State.READY


_NO_ID: Any = object()

# The C loop over routed event lines (csrc/deliver.c); None: the Python loop does it all.
_deliver: Callable[..., tuple[int, int, int, int]] | None
try:
    from ._deliver import CHANGED as _DELIVER_CHANGED
    from ._deliver import LINE as _DELIVER_LINE
    from ._deliver import configure as _configure_deliver
    from ._deliver import deliver as _deliver
except ImportError:  # a build without it: the Python loop is the same, only slower
    _deliver = None
    _DELIVER_LINE = _DELIVER_CHANGED = 0
else:
    _configure_deliver(_loads, Event, callback_failed, State.CLOSED,
                       orjson.JSONDecodeError, ROUTE_BASE)
# Before READY, and without a router: every event line reported, none routed.
_EVERY_EVENT = RouteTable((), catch_all=True)
_READY = State.READY  # enum member lookups cost ~65 ns each on 3.11: bind once
_CLOSED = State.CLOSED
