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
(:meth:`DispatchTable.wants`): the others are dropped before they are decoded.

This module does no I/O; callbacks run on the reactor's thread, in the order the
events arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventFilter", "Subscription", "DispatchTable"]

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Event:
    """One QMP event.

    Attributes:
        name: the event name, e.g. ``"DEVICE_DELETED"``.
        data: the event's ``data`` member (an empty dict when QEMU sent none).
        timestamp: QEMU's timestamp in seconds since the epoch (``seconds`` +
            ``microseconds`` / 1e6); ``0.0`` when absent.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0

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
        if not isinstance(data, dict):
            data = {}
        ts = msg.get("timestamp")
        timestamp = 0.0
        if isinstance(ts, dict):
            try:
                timestamp = float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6
            except (TypeError, ValueError):
                timestamp = 0.0
        return cls(name, data, timestamp)


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
    """

    __slots__ = ("filter", "callback", "_table", "_key", "active", "once")

    def __init__(
        self,
        table: DispatchTable,
        flt: EventFilter,
        callback: Callable[[Event], object],
        once: bool = False,
    ) -> None:
        self.filter = flt
        self.callback = callback
        self._table: DispatchTable | None = table
        self._key = _index_key(flt.match)
        self.active = True
        self.once = once

    def cancel(self) -> None:
        """Stop receiving events. Safe to call more than once and from a callback."""
        if self.active:
            self.active = False
            table = self._table
            self._table = None
            if table is not None:
                table._remove(self)


class _Bucket:
    """The subscriptions of one event name (or of every name)."""

    __slots__ = ("plain", "indexed", "paths", "count")

    def __init__(self) -> None:
        self.plain: list[Subscription] = []
        self.indexed: dict[tuple[tuple[str, ...], Hashable], list[Subscription]] = {}
        self.paths: dict[tuple[str, ...], int] = {}
        self.count = 0

    def add(self, sub: Subscription) -> None:
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
        self.on_change: Callable[[], object] | None = None

    def wants(self, name: bytes) -> bool:
        """Return True if some subscription may want an event called ``name``."""
        return self.want_all or name in self.wanted

    def subscribe(
        self, flt: EventFilter, callback: Callable[[Event], object], *, once: bool = False
    ) -> Subscription:
        """Register ``callback`` for events passing ``flt``; returns its subscription.

        With ``once=True`` the subscription cancels itself before its first call.
        """
        sub = Subscription(self, flt, callback, once)
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

        A callback that raises is logged (``qmplex.events`` logger) and the others
        still run.
        """
        bucket = self._by_name.get(event.name)
        if bucket is not None:
            subs = bucket.candidates(event.data)
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
            if sub.once:
                sub.cancel()
            delivered += 1
            try:
                sub.callback(event)
            except Exception:
                logger.exception("event callback %r raised", sub.callback)
        return delivered
