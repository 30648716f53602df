"""Event filters, subscriptions and the dispatch table (the :class:`Event` value itself
lives in :mod:`qmplex.core.messages`, the protocol's values).

An :class:`EventFilter` selects events by name, by a dict compared against their data
(nested dicts compare nested keys), and by an optional predicate.

The :class:`DispatchTable` hands each event to the subscriptions that want it without
offering it to every listener: it is keyed by event name, and inside one name the
subscriptions whose filter compares one data key with a scalar (``{"device": "d7"}``)
are indexed by that key's value. So 1,000 ``device_del`` calls waiting for their own
``DEVICE_DELETED`` cost one dictionary lookup per event, not 1,000 comparisons. The
table also tells the framing layer which event names anyone wants at all
(:meth:`DispatchTable.routes`): the others are dropped before they are decoded.

This module does no I/O and never parses. The client hands each run of events of a
receive to :meth:`DispatchTable.dispatch_run` from the reactor's ready queue after the
receive was parsed, so callbacks run on the reactor thread, in the order the events arrived, and
an exception from one is logged (``qmplex.events``) and affects no other.

Slow subscribers: by default a subscription's callback runs as the events of a receive
are handed out, so a slow callback slows the reading of its connection and the socket
pushes back on the peer: nothing is ever dropped, and memory stays bounded by one
receive buffer. A subscription made with ``queue=N`` instead gets its events through a
backlog of at most ``N`` events drained at most :data:`DRAIN_BATCH` events per reactor
pass, so reading (and every other command and connection) goes on at full speed. An
event that finds the backlog full is dropped and counted in
:attr:`Subscription.dropped`; accepted events are delivered in arrival order.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core.framing import RouteTable
from .core.messages import Event

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = ["Event", "EventFilter", "Subscription", "DispatchTable", "DRAIN_BATCH",
           "callback_failed"]

logger = logging.getLogger(__name__)

_MISSING = object()

#: Events delivered from one queued subscription's backlog per reactor pass.
DRAIN_BATCH = 64


def callback_failed(callback: Callable[..., object], owner: str | None = None) -> None:
    """Log the exception an event callback just raised (call from an ``except``),
    naming the connection (``owner``) when known."""
    if owner is None:
        logger.exception("event callback %r raised", callback)
    else:
        logger.exception("%s: event callback %r raised", owner, callback)


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
    """A registered callback; :meth:`cancel` unregisters it.

    Attributes:
        filter: the filter the callback was registered with.
        callback: the callback.
        active: True until cancelled.
        once: True if it cancels itself before its first call.
        dropped: events refused because the backlog of a ``queue=N`` subscription was
            full (always 0 for a subscription without a backlog, which never drops).
    """

    __slots__ = ("filter", "callback", "_table", "_key", "active", "once",
                 "dropped", "_backlog", "_limit", "_draining")

    def __init__(
        self,
        table: DispatchTable | None,
        flt: EventFilter,
        callback: Callable[[Event], object],
        once: bool = False,
        queue: int | None = None,
    ) -> None:
        self.filter = flt
        self.callback = callback
        self._table = table
        self._key = _index_key(flt.match)
        self.active = True
        self.once = once
        self.dropped = 0
        self._backlog: collections.deque[Event] | None = None
        self._limit = 0
        self._draining = False
        if queue is not None:
            if queue < 1 or once or table is None or table._reactor is None:
                raise ValueError("queue must be >= 1, with a reactor and once=False")
            self._backlog = collections.deque()
            self._limit = queue

    @property
    def backlog(self) -> int:
        """Events accepted and not yet delivered (0 without a backlog)."""
        backlog = self._backlog
        return 0 if backlog is None else len(backlog)

    def cancel(self) -> None:
        """Stop receiving events. Safe to call more than once, from a callback, and from
        any thread (off the reactor thread the removal is handed to it; no event is
        delivered to this subscription once this call returns, except one that was
        already being delivered).

        Events still in a ``queue=N`` backlog are discarded (not counted as dropped).
        """
        if not self.active:
            return
        self.active = False
        table = self._table
        if table is None:
            return
        reactor = table._reactor
        if reactor is None or reactor.closed:
            self._remove()
        else:
            reactor.run_in_reactor(self._remove)

    def _remove(self) -> None:
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
            self._schedule_drain()
        return True

    def _schedule_drain(self) -> None:
        table = self._table
        if table is not None and table._reactor is not None:
            table._reactor.call_soon(self._drain)

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
                table = self._table
                callback_failed(callback, table.name if table is not None else None)
        if backlog and self.active:
            self._schedule_drain()  # the rest on the next pass, after I/O
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
        self._simple: Any = _MISSING  # simple()'s answer, worked out after each change

    def simple(self) -> tuple[Subscription, ...] | None:
        """The subscriptions, if every one is a plain callback (no match, predicate,
        backlog or once): dispatch then calls them without filtering. None otherwise."""
        simple = self._simple
        if simple is _MISSING:
            plain = self.plain
            if self.indexed or not all(
                    not sub.filter.match and sub.filter.predicate is None
                    and sub._backlog is None and not sub.once for sub in plain):
                simple = None
            else:
                simple = tuple(plain)
            self._simple = simple
        return simple  # type: ignore[no-any-return]

    def add(self, sub: Subscription) -> None:
        self._simple = _MISSING
        self.count += 1
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
        """The subscriptions that may want an event with ``data`` (a new list)."""
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
    """Hands events to subscriptions by name, then by an indexed data key.

    Args:
        reactor: the reactor whose thread owns the table: :meth:`Subscription.cancel`
            from another thread is handed to it, and ``queue=N`` backlogs drain
            through it. None: a table used from one thread only, without backlogs.
        name: the connection it serves, named in the log records of raising callbacks.

    Every method but :meth:`Subscription.cancel` must be called on the reactor thread.
    """

    def __init__(self, reactor: Reactor | None = None, name: str | None = None) -> None:
        self._reactor = reactor
        #: The connection's name, for log records.
        self.name = name
        self._by_name: dict[str, _Bucket] = {}
        self._any = _Bucket()
        self._routes: RouteTable | None = None
        self._changes = 0  # counts subscribes and removals (see dispatch_run)
        #: Set when the connection it serves is closed for good: nothing is delivered.
        self.closed = False

    def routes(self) -> RouteTable:
        """The event names the framing layer should route (decode) rather than drop:
        the names of the subscriptions, catching all while a subscription without a
        name exists. Worked out again after each change, on first use."""
        routes = self._routes
        if routes is None:
            routes = self._routes = RouteTable(tuple(self._by_name),
                                               catch_all=self._any.count > 0)
        return routes

    def subscribe(
        self,
        flt: EventFilter,
        callback: Callable[[Event], object],
        *,
        once: bool = False,
        queue: int | None = None,
    ) -> Subscription:
        """Register ``callback`` for events passing ``flt``; returns its subscription.

        With ``once=True`` the subscription cancels itself before its first call. With
        ``queue=N`` events go to a backlog of at most ``N`` that the reactor drains
        (see the module docstring).

        Raises:
            ValueError: ``queue`` is below 1, or given with ``once`` or without a
                reactor.
        """
        sub = Subscription(self, flt, callback, once, queue)
        self.add(sub)
        return sub

    def add(self, sub: Subscription) -> None:
        """Register a subscription made beforehand (on another thread, say)."""
        if not sub.active:
            return
        sub._table = self
        self._routes = None
        self._changes += 1
        if sub.filter.name is None:
            self._any.add(sub)
        else:
            bucket = self._by_name.get(sub.filter.name)
            if bucket is None:
                bucket = self._by_name[sub.filter.name] = _Bucket()
            bucket.add(sub)

    def _remove(self, sub: Subscription) -> None:
        self._routes = None
        self._changes += 1
        name = sub.filter.name
        if name is None:
            self._any.remove(sub)
            return
        bucket = self._by_name.get(name)
        if bucket is None:
            return
        bucket.remove(sub)
        if bucket.count == 0:
            del self._by_name[name]

    def __len__(self) -> int:
        """The number of active subscriptions in the table."""
        return self._any.count + sum(b.count for b in self._by_name.values())

    def dispatch_run(self, events: list[Event]) -> None:
        """Dispatch ``events`` in order, as :meth:`dispatch` does each, and stop if
        :attr:`closed` becomes true (a callback closed the client).

        A flood of one name whose subscriptions are plain callbacks costs a call per
        event and callback: the name's callbacks are looked up again only when the name
        or the subscriptions change (a callback may subscribe or cancel).
        """
        dispatch = self.dispatch
        name: str | None = None
        changes = -1
        simple: tuple[Subscription, ...] | None = None
        for event in events:
            if self.closed:
                return
            if event[0] is not name or self._changes != changes:
                name = event[0]
                changes = self._changes
                bucket = self._by_name.get(name)
                simple = bucket.simple() if bucket is not None and not self._any.count \
                    else None  # (None: the general dispatch)
            if simple is None:
                dispatch(event)
                continue
            for sub in simple:
                if sub.active:
                    try:
                        sub.callback(event)
                    except Exception:
                        callback_failed(sub.callback, self.name)

    def dispatch(self, event: Event) -> int:
        """Call every subscription whose filter passes ``event``; return how many.

        A ``queue=N`` subscription gets the event in its backlog instead (counted if
        accepted). A callback that raises is logged (``qmplex.events`` logger) and the
        others still run.
        """
        bucket = self._by_name.get(event[0])
        if bucket is not None and not self._any.count:
            simple = bucket._simple  # bucket.simple(), without a call once worked out
            if simple is _MISSING:
                simple = bucket.simple()
            if simple is not None:
                # Only plain callbacks for this name: nothing to filter. A snapshot
                # (a tuple), so (un)subscribing from a callback is seen by the next event.
                delivered = 0
                for sub in simple:
                    if sub.active:
                        delivered += 1
                        try:
                            sub.callback(event)
                        except Exception:
                            callback_failed(sub.callback, self.name)
                return delivered
        if bucket is not None:
            # A copy: a callback may (un)subscribe while we iterate.
            subs = bucket.candidates(event[1]) if bucket.paths else bucket.plain[:]
            if self._any.count:
                subs = subs + self._any.candidates(event[1])
        elif self._any.count:
            subs = self._any.candidates(event[1])
        else:
            return 0
        delivered = 0
        for sub in subs:
            if not sub.active:
                continue
            flt = sub.filter
            if flt.match and not _matches(event[1], flt.match):
                continue
            if flt.predicate is not None:
                try:
                    if not flt.predicate(event):
                        continue
                except Exception:
                    logger.exception("%s: event predicate %r raised", self.name,
                                     flt.predicate)
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
                callback_failed(sub.callback, self.name)
        return delivered
