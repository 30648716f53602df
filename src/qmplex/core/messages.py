"""The values the sans-I/O protocol hands back: what the peer's bytes meant.

:class:`~qmplex.core.protocol.Protocol.receive_data` returns a list of these, in stream
order: a :class:`Greeting`, :class:`Reply` values matched to their commands,
:class:`Event` values, :class:`StaleReply` notes, and reported
:class:`~qmplex.errors.ProtocolError` values. They are plain immutable values: nothing
here does I/O or calls anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..typed.view import EventData

try:  # CPython's C accessor for named tuple fields (what namedtuple uses)
    from collections import _tuplegetter as _item_getter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _item_getter(index: int, doc: str) -> Any:
        return property(itemgetter(index), doc=doc)

__all__ = ["QMPVersion", "Greeting", "Reply", "StaleReply", "Event"]

#: ``tuple.__new__``: how the protocol builds its tuple-based values without a call to
#: their ``__new__`` (``_tuple_new(Event, (name, data, raw_timestamp))``).
_tuple_new: Any = tuple.__new__


@dataclass(frozen=True, slots=True)
class QMPVersion:
    """What the peer said about itself in its greeting.

    Attributes:
        major: QEMU's major version number.
        minor: QEMU's minor version number.
        micro: QEMU's micro version number.
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
        """The version as ``major.minor.micro`` (``7.2.22``), without the package."""
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True, slots=True)
class Greeting:
    """The peer's greeting was received; send :meth:`Protocol.negotiate` next.

    Attributes:
        version: what the greeting said.
    """

    version: QMPVersion


class Reply(tuple[Any, bool, Any]):
    """A reply matched to the command that caused it.

    Attributes:
        token: what the caller gave :meth:`Protocol.sent` for that command.
        ok: True for ``{"return": ...}``, False for ``{"error": ...}``.
        value: the ``return`` value, or the ``error`` object (``class`` and ``desc``).
    """

    __slots__ = ()

    if TYPE_CHECKING:
        @property
        def token(self) -> Any:
            """What the caller gave :meth:`Protocol.sent` for the command."""

        @property
        def ok(self) -> bool:
            """True for a ``return``, False for an ``error``."""

        @property
        def value(self) -> Any:
            """The ``return`` value or the ``error`` object."""
    else:
        token = _item_getter(0, "What the caller gave Protocol.sent() for the command.")
        ok = _item_getter(1, "True for a return, False for an error.")
        value = _item_getter(2, "The return value or the error object.")

    def __new__(cls, token: Any, ok: bool, value: Any) -> Reply:
        """Make a reply."""
        reply: Reply = _tuple_new(cls, (token, ok, value))
        return reply

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"Reply(token={self[0]!r}, ok={self[1]}, value={self[2]!r})"


@dataclass(frozen=True, slots=True)
class StaleReply:
    """A reply whose id is not in flight on this connection: dropped.

    QEMU hands the reply of a command that a previous client left running to the next
    client of the monitor, so this is not the peer's fault; the caller may log it.

    Attributes:
        id: the reply's ``id`` (None when it had none).
        excerpt: at most ``EXCERPT_BYTES`` of the line.
    """

    id: Any
    excerpt: bytes


class Event(tuple[str, dict[str, Any], Any]):
    """One QMP event: an immutable value.

    Attributes:
        name: the event name, e.g. ``"DEVICE_DELETED"``.
        data: the event's ``data`` member (an empty dict when QEMU sent none).
        timestamp: QEMU's timestamp in seconds since the epoch (``seconds`` +
            ``microseconds`` / 1e6); ``0.0`` when absent or malformed.

    ``Event(name, data, timestamp)`` makes one. It is a tuple underneath (built once per
    delivered event, it is the cheapest immutable object CPython makes); use the
    attributes, not the items. Events compare equal when name, data and timestamp do.
    :meth:`typed` gives a typed view of the data, made only when asked for.
    """

    __slots__ = ()
    __match_args__ = ("name", "data", "timestamp")

    if TYPE_CHECKING:
        @property
        def name(self) -> str:
            """The event name, e.g. ``"DEVICE_DELETED"``."""

        @property
        def data(self) -> dict[str, Any]:
            """The event's ``data`` member (an empty dict when QEMU sent none)."""
    else:
        name = _item_getter(0, "The event name, e.g. ``\"DEVICE_DELETED\"``.")
        data = _item_getter(1, "The event's ``data`` member (an empty dict when QEMU sent "
                               "none).")

    def __new__(cls, name: str, data: dict[str, Any] | None = None,
                timestamp: float = 0.0) -> Event:
        """Make an event (``data`` None: an empty dict)."""
        event: Event = _tuple_new(cls, (name, {} if data is None else data, float(timestamp)))
        return event

    @property
    def timestamp(self) -> float:
        """QEMU's timestamp in seconds since the epoch; ``0.0`` when absent."""
        raw = self[2]
        if type(raw) is float:
            return raw
        return _wire_timestamp(raw)

    def typed(self) -> EventData:
        """A typed view of :attr:`data` (:mod:`qmplex.typed`), made on each call.

        The view's class is the event's (``DEVICE_DELETED`` ->
        :class:`qmplex.typed.DeviceDeletedData`, with ``device`` and ``path``), or
        :class:`qmplex.typed.EventData` for an event QEMU 11.1.3's schema does not have;
        its ``raw`` is :attr:`data` itself. Narrow it with ``isinstance`` or ``match``
        (``case DeviceDeletedData(device=dev):``), or make the class you expect
        directly: ``DeviceDeletedData(event.data)``. The first call imports
        :mod:`qmplex.typed`.
        """
        make = _typed_event_data
        if make is None:
            make = _load_typed_event_data()
        return make(self[0], self[1])

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> Event:
        """Build an event from a decoded QMP event message.

        Raises:
            ValueError: the message has no string ``event`` member.
        """
        name = msg.get("event")
        if not isinstance(name, str) or not name:
            raise ValueError("event message without a name")
        data = msg.get("data")
        # The timestamp stays as QEMU sent it until read (most callbacks never do).
        event: Event = _tuple_new(cls, (name, data if type(data) is dict else {},
                                        msg.get("timestamp")))
        return event

    def to_message(self) -> dict[str, Any]:
        """The event as QEMU sends it, ready for ``orjson.dumps``:
        ``{"timestamp": {"seconds": S, "microseconds": U}, "event": NAME, "data": {...}}``
        (the timestamp rebuilt from :attr:`timestamp`, to the microsecond)."""
        micros = round(self.timestamp * 1_000_000)
        seconds, micro = divmod(micros, 1_000_000)
        return {"timestamp": {"seconds": seconds, "microseconds": micro},
                "event": self[0], "data": self[1]}

    def __eq__(self, other: object) -> bool:
        """Events are equal when their names, timestamps and data are equal."""
        if not isinstance(other, Event):
            return NotImplemented
        return (self[0] == other[0] and self.timestamp == other.timestamp
                and self[1] == other[1])

    def __ne__(self, other: object) -> bool:
        """The negation of :meth:`__eq__`."""
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        """Hash the name and timestamp (events are hashable; their data is not hashed)."""
        return hash((self[0], self.timestamp))

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"Event(name={self[0]!r}, data={self[1]!r}, timestamp={self.timestamp!r})"

    def __getnewargs__(self) -> tuple[str, dict[str, Any], float]:
        """The constructor's arguments, so that events pickle and copy."""
        return self[0], self[1], self.timestamp


# qmplex.typed.event_data, imported by the first Event.typed() (an import statement in
# the method would cost a microsecond on every call).
_typed_event_data: Callable[[str, dict[str, Any]], EventData] | None = None


def _load_typed_event_data() -> Callable[[str, dict[str, Any]], EventData]:
    global _typed_event_data
    from ..typed import event_data

    _typed_event_data = event_data
    return event_data


def _wire_timestamp(raw: Any) -> float:
    """QEMU's ``{"seconds": S, "microseconds": U}`` as seconds; 0.0 if malformed."""
    if not isinstance(raw, dict):
        return 0.0
    seconds = raw.get("seconds", 0)
    micro = raw.get("microseconds", 0)
    if type(seconds) is int and type(micro) is int:
        return seconds + micro / 1e6
    try:
        return float(seconds) + float(micro) / 1e6
    except (TypeError, ValueError):
        return 0.0
