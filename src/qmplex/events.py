"""Events, event filters, subscriptions and the dispatch table.

An :class:`Event` is one QMP event (``{"event": NAME, "data": {...}, "timestamp": ...}``).
An :class:`EventFilter` selects events by name, by a dict compared against their data
(nested dicts compare nested keys), and by an optional predicate.

The :class:`DispatchTable` routes each event to the subscriptions that want it without
offering it to every listener: it is keyed by event name, and inside one name the
subscriptions whose filter compares one data key with a scalar (``{"device": "d7"}``)
are indexed by that key's value. So 1,000 ``device_del`` calls waiting for their own
``DEVICE_DELETED`` cost one dictionary lookup per event, not 1,000 comparisons. The
table also tells the framing layer which event names anyone wants at all
(:meth:`DispatchTable.routing`): the others are dropped before they are decoded, and
each wanted name comes with its handler, called as soon as its line is decoded.

This module does no I/O; callbacks run on the reactor's thread, in the order the
events arrived.

Slow subscribers: by default a subscription's callback runs inline while the event's
line is processed, so a slow callback slows the reading of its connection and the
socket pushes back on the peer: nothing is ever dropped, and memory stays bounded by
one receive buffer. A subscription made with ``queue=N`` instead gets its events
through the reactor: they wait in a backlog of at most ``N`` events that is drained at
most :data:`DRAIN_BATCH` events per reactor pass, so reading (and every other command
and connection) goes on at full speed. An event that finds the backlog full is
dropped and counted in :attr:`Subscription.dropped`; accepted events are delivered in
arrival order.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .framing import RouteTable

try:  # CPython's C accessor for named tuple fields (what namedtuple uses)
    from collections import _tuplegetter as _item_getter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _item_getter(index: int, doc: str) -> Any:
        return property(itemgetter(index), doc=doc)

__all__ = ["Event", "EventFilter", "Subscription", "DispatchTable", "DRAIN_BATCH",
           "callback_failed"]

logger = logging.getLogger(__name__)

_MISSING = object()

#: Events delivered from one queued subscription's backlog per reactor pass.
DRAIN_BATCH = 64


class Event(tuple[str, dict[str, Any], Any]):
    """One QMP event: an immutable value.

    Attributes:
        name: the event name, e.g. ``"DEVICE_DELETED"``.
        data: the event's ``data`` member (an empty dict when QEMU sent none).
        timestamp: QEMU's timestamp in seconds since the epoch (``seconds`` +
            ``microseconds`` / 1e6); ``0.0`` when absent or malformed.

    ``Event(name, data, timestamp)`` makes one. It is a tuple underneath (built once per
    delivered event, it is the cheapest immutable object CPython makes: see
    ``bench/README.md``); use the attributes, not the items. Events compare equal when
    name, data and timestamp do.
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
        if not isinstance(other, Event):
            return NotImplemented
        return (self[0] == other[0] and self.timestamp == other.timestamp
                and self[1] == other[1])

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((self[0], self.timestamp))

    def __repr__(self) -> str:
        return f"Event(name={self[0]!r}, data={self[1]!r}, timestamp={self.timestamp!r})"

    def __getnewargs__(self) -> tuple[str, dict[str, Any], float]:
        return self[0], self[1], self.timestamp


def callback_failed(callback: Callable[..., object]) -> None:
    """Log the exception an event callback just raised (call from an ``except``)."""
    logger.exception("event callback %r raised", callback)


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


#: ``tuple.__new__``: how the protocol builds an event per line, with the name it routed
#: the line by, the data already checked to be a dict and the raw timestamp:
#: ``_tuple_new(Event, (name, data, msg.get("timestamp")))``.
_tuple_new: Any = tuple.__new__


def _matches(data: Any, match: Mapping[str, Any]) -> bool:
    if not isinstance(data, dict):
        return False
    for key, want in match.items():
        have = data.get(key, _MISSING)
        if have is _MISSING:
            return False
        if isinstance(want, Mapping):
            if not _matches(have, want):
                return False
        elif have != want:
            return False
    return True


def _index_key(match: Mapping[str, Any] | None) -> tuple[tuple[str, ...], Hashable] | None:
    """Pick one (path, scalar value) of ``match`` to index a subscription by."""
    if not match:
        return None
    path: list[str] = []
    node: Mapping[str, Any] = match
    while True:
        key, want = next(iter(node.items()))
        path.append(key)
        if isinstance(want, Mapping):
            if not want:
                return None
            node = want
            continue
        if isinstance(want, (str, int, float, bool)) or want is None:
            return tuple(path), want
        return None


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Selects events.

    Args:
        name: the event name (``None``: any name).
        match: a dict compared against the event's data: every key must be present and
            equal; a dict value compares the nested keys the same way.
        predicate: an extra test run on events that passed ``name`` and ``match``.
    """

    name: str | None = None
    match: Mapping[str, Any] | None = None
    predicate: Callable[[Event], bool] | None = None

    def matches(self, event: Event) -> bool:
        """Return True if ``event`` passes this filter."""
        if self.name is not None and event.name != self.name:
            return False
        if self.match and not _matches(event.data, self.match):
            return False
        return self.predicate is None or bool(self.predicate(event))


class Subscription:
    """A registered event callback; :meth:`cancel` unregisters it.

    Attributes:
        filter: the filter the callback was registered with.
        dropped: events refused because the backlog of a ``queue=N`` subscription was
            full (always 0 for an inline subscription, which never drops).
    """

    __slots__ = ("filter", "callback", "_table", "_key", "active", "once",
                 "dropped", "_backlog", "_limit", "_schedule", "_draining")

    def __init__(
        self,
        table: DispatchTable,
        flt: EventFilter,
        callback: Callable[[Event], object],
        once: bool = False,
        queue: int | None = None,
        schedule: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        self.filter = flt
        self.callback = callback
        self._table: DispatchTable | None = table
        self._key = _index_key(flt.match)
        self.active = True
        self.once = once
        self.dropped = 0
        self._backlog: collections.deque[Event] | None = None
        self._limit = 0
        self._schedule = schedule
        self._draining = False
        if queue is not None:
            if queue < 1 or once or schedule is None:
                raise ValueError("queue must be >= 1, with a scheduler and once=False")
            self._backlog = collections.deque()
            self._limit = queue

    @property
    def backlog(self) -> int:
        """Events accepted and not yet delivered (0 for an inline subscription)."""
        backlog = self._backlog
        return 0 if backlog is None else len(backlog)

    def cancel(self) -> None:
        """Stop receiving events. Safe to call more than once and from a callback.

        Events still in a ``queue=N`` backlog are discarded (not counted as dropped).
        """
        if self.active:
            self.active = False
            table = self._table
            self._table = None
            if table is not None:
                table._remove(self)
            if self._backlog is not None:
                self._backlog.clear()

    def _enqueue(self, event: Event) -> bool:
        backlog = self._backlog
        assert backlog is not None
        if len(backlog) >= self._limit:
            self.dropped += 1
            return False
        backlog.append(event)
        if not self._draining:
            self._draining = True
            assert self._schedule is not None
            self._schedule(self._drain)
        return True

    def _drain(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        callback = self.callback
        for _ in range(min(len(backlog), DRAIN_BATCH)):
            if not self.active:
                break
            event = backlog.popleft()
            try:
                callback(event)
            except Exception:
                callback_failed(callback)
        if backlog and self.active:
            assert self._schedule is not None
            self._schedule(self._drain)  # the rest on the next pass, after I/O
        else:
            self._draining = False


class _Bucket:
    """The subscriptions of one event name (or of every name)."""

    __slots__ = ("plain", "indexed", "paths", "count", "_simple")

    def __init__(self) -> None:
        self.plain: list[Subscription] = []
        self.indexed: dict[tuple[tuple[str, ...], Hashable], list[Subscription]] = {}
        self.paths: dict[tuple[str, ...], int] = {}
        self.count = 0
        # simple()'s answer, _MISSING until worked out.
        self._simple: Any = _MISSING

    def simple(self) -> tuple[Subscription, ...] | None:
        """The subscriptions, if every one is a plain inline callback (no match, no
        predicate, no backlog, not once): dispatch then calls them straight away.
        Worked out on the first dispatch after each change."""
        simple = self._simple
        if simple is _MISSING:
            if self.indexed or not all(
                    not sub.filter.match and sub.filter.predicate is None
                    and sub._backlog is None and not sub.once for sub in self.plain):
                simple = None
            else:
                simple = tuple(self.plain)
            self._simple = simple
        return simple  # type: ignore[no-any-return]

    def add(self, sub: Subscription) -> None:
        self.count += 1
        self._simple = _MISSING
        key = sub._key
        if key is None:
            self.plain.append(sub)
            return
        try:
            self.indexed.setdefault(key, []).append(sub)
        except TypeError:  # unhashable after all
            sub._key = None
            self.plain.append(sub)
            return
        self.paths[key[0]] = self.paths.get(key[0], 0) + 1

    def remove(self, sub: Subscription) -> None:
        self._simple = _MISSING
        key = sub._key
        if key is None:
            try:
                self.plain.remove(sub)
            except ValueError:
                return
        else:
            subs = self.indexed.get(key)
            if subs is None or sub not in subs:
                return
            subs.remove(sub)
            if not subs:
                del self.indexed[key]
            n = self.paths[key[0]] - 1
            if n:
                self.paths[key[0]] = n
            else:
                del self.paths[key[0]]
        self.count -= 1

    def candidates(self, data: dict[str, Any]) -> list[Subscription]:
        if not self.paths:
            return list(self.plain)
        found = list(self.plain)
        for path in self.paths:
            value = _lookup(data, path)
            if value is _MISSING:
                continue
            try:
                subs = self.indexed.get((path, value))
            except TypeError:
                continue
            if subs:
                found.extend(subs)
        return found


class DispatchTable:
    """Routes events to subscriptions by name, then by an indexed data key.

    ``wanted`` is the set of event names (as ASCII bytes, as the framing layer reports
    them) that at least one subscription wants; ``want_all`` is True while a
    subscription without a name exists.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, _Bucket] = {}
        self._any = _Bucket()
        self.wanted: set[bytes] = set()
        self.want_all = False
        #: Changes with every subscribe and cancel.
        self.version = 0
        self._routing: tuple[RouteTable, tuple[Callable[[Event], object], ...]] | None = None

    def routing(self) -> tuple[RouteTable, tuple[Callable[[Event], object], ...]]:
        """The names the framing layer should route, and one handler per name.

        Returns ``(routes, handlers)``: ``handlers[i]`` delivers an event named
        ``routes.names[i]`` exactly as :meth:`dispatch` would, as long as
        :attr:`version` does not change: for a name whose only subscription is a plain
        callback (no match, predicate, backlog or once), it is that callback itself
        (the caller logs what it raises, see :func:`callback_failed`); otherwise
        :meth:`dispatch`. ``routes.catch_all`` is set while a subscription without a
        name exists. Worked out again after each change, on first use.
        """
        routing = self._routing
        if routing is None:
            names = tuple(self._by_name)
            dispatch = self.dispatch
            handlers: list[Callable[[Event], object]] = []
            for name in names:
                simple = None if self._any.count else self._by_name[name].simple()
                if simple is not None and len(simple) == 1:
                    handlers.append(simple[0].callback)
                else:
                    handlers.append(dispatch)
            routing = self._routing = (
                RouteTable(names, catch_all=self.want_all), tuple(handlers))
        return routing

    def wants(self, name: bytes) -> bool:
        """Return True if some subscription may want an event called ``name``."""
        return self.want_all or name in self.wanted

    def subscribe(
        self,
        flt: EventFilter,
        callback: Callable[[Event], object],
        *,
        once: bool = False,
        queue: int | None = None,
        schedule: Callable[[Callable[[], object]], object] | None = None,
    ) -> Subscription:
        """Register ``callback`` for events passing ``flt``; returns its subscription.

        With ``once=True`` the subscription cancels itself before its first call. With
        ``queue=N`` events are not delivered inline but put in a backlog of at most
        ``N`` that ``schedule`` (e.g. ``reactor.call_soon``) drains later; see the
        module docstring.

        Raises:
            ValueError: ``queue`` is below 1, or given with ``once`` or no ``schedule``.
        """
        sub = Subscription(self, flt, callback, once, queue, schedule)
        self.version += 1
        self._routing = None
        if flt.name is None:
            self._any.add(sub)
            self.want_all = True
        else:
            bucket = self._by_name.get(flt.name)
            if bucket is None:
                bucket = self._by_name[flt.name] = _Bucket()
                self.wanted.add(flt.name.encode("ascii", "replace"))
            bucket.add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self.version += 1
        self._routing = None
        name = sub.filter.name
        if name is None:
            self._any.remove(sub)
            self.want_all = self._any.count > 0
            return
        bucket = self._by_name.get(name)
        if bucket is None:
            return
        bucket.remove(sub)
        if bucket.count == 0:
            del self._by_name[name]
            self.wanted.discard(name.encode("ascii", "replace"))

    def __len__(self) -> int:
        return self._any.count + sum(b.count for b in self._by_name.values())

    def dispatch(self, event: Event) -> int:
        """Call every subscription whose filter passes ``event``; return how many.

        A ``queue=N`` subscription gets the event in its backlog instead (counted if
        accepted). A callback that raises is logged (``qmplex.events`` logger) and the
        others still run.
        """
        bucket = self._by_name.get(event.name)
        if bucket is not None and not self._any.count:
            simple = bucket._simple
            if simple is _MISSING:
                simple = bucket.simple()
            if simple is not None:
                # Fast path, same outcome as the loop below for such subscriptions.
                delivered = 0
                for sub in simple:
                    if sub.active:
                        delivered += 1
                        try:
                            sub.callback(event)
                        except Exception:
                            callback_failed(sub.callback)
                return delivered
        if bucket is not None:
            # A snapshot: a callback may (un)subscribe while we iterate.
            subs = bucket.candidates(event.data) if bucket.paths else bucket.plain[:]
            if self._any.count:
                subs.extend(self._any.candidates(event.data))
        elif self._any.count:
            subs = self._any.candidates(event.data)
        else:
            return 0
        delivered = 0
        for sub in subs:
            if not sub.active:
                continue
            flt = sub.filter
            if flt.match and not _matches(event.data, flt.match):
                continue
            if flt.predicate is not None:
                try:
                    if not flt.predicate(event):
                        continue
                except Exception:
                    logger.exception("event predicate %r raised", flt.predicate)
                    continue
            if sub._backlog is not None:
                if sub._enqueue(event):
                    delivered += 1
                continue
            if sub.once:
                sub.cancel()
            delivered += 1
            try:
                sub.callback(event)
            except Exception:
                callback_failed(sub.callback)
        return delivered
