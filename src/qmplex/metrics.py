"""Per-client counters and latencies, always on, for a manager to export.

A :class:`~qmplex.Client` counts what it does (commands sent, completed, failed;
events received and dropped; reconnects) and keeps a latency summary per command
name; :meth:`Client.metrics` returns a :class:`ClientMetrics` snapshot. The counters
are updated on the reactor thread as things happen and read by :meth:`Client.metrics`
from any thread; they only grow.

Latencies are seconds on the reactor's clock (``time.monotonic``) from ``execute()`` to
the command's outcome (its reply, or its event for a command with ``until=``). Per
command name the client keeps the count, the failures, the mean and the maximum since
it was made, and the most recent :data:`RECENT` latencies, from which the percentiles
are computed exactly on each read: a percentile over a recent window is what a
dashboard wants, and a name costs a bounded few kilobytes whatever the traffic.

Cost: finishing a command appends one float to a list (the folding into the figures
happens in bulk, every few thousand commands, and on each read); ``bench/README.md``
measures it in instructions per command.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RECENT", "ClientMetrics", "CommandSummary", "Outcome"]

#: Latencies kept per command name for the percentiles.
RECENT = 1024
FOLD_AT = 4096  # latencies appended (all names) before they are folded in


class Outcome:
    """How a command ended, as :meth:`Client.on_command` reports it (plain strings)."""

    OK = "ok"  #: QEMU answered with ``return`` (and the ``until`` event came)
    ERROR = "error"  #: QEMU answered with ``error`` (a ``CommandError``)
    TIMEOUT = "timeout"  #: its own timeout passed (``OperationTimeout``)
    LOST = "lost"  #: the connection ended first (``ConnectionLost``)
    CANCELLED = "cancelled"  #: cancelled by the caller


class _Figures:
    """The folded figures of one command name (guarded by the book's lock)."""

    __slots__ = ("count", "failed", "total", "max", "recent")

    def __init__(self) -> None:
        self.count = 0  # finished, any outcome
        self.failed = 0  # finished with another outcome than "ok"
        self.total = 0.0  # seconds, summed
        self.max = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT)


class LatencyBook:
    """The latencies of one client's commands, by name.

    The reactor thread appends each finished command's latency to
    ``pending[name]`` (a plain list: the cheapest thing Python can do per command) and
    adds how many it appended to :attr:`unfolded`; every :data:`FOLD_AT` latencies they are
    folded into the per-name figures under a lock, which :meth:`summaries` (any thread)
    takes too.
    """

    __slots__ = ("pending", "unfolded", "_figures", "_lock")

    def __init__(self) -> None:
        self.pending: dict[str, list[float]] = {}
        self._figures: dict[str, _Figures] = {}
        self._lock = threading.Lock()
        #: Latencies appended to the pending lists since they were last folded in.
        self.unfolded = 0

    def new(self, name: str) -> list[float]:
        """The pending list of a name seen for the first time (reactor thread)."""
        with self._lock:
            self._figures[name] = _Figures()
            pending = self.pending[name] = []
        return pending

    def add(self, name: str, latency: float, ok: bool) -> None:
        """Count one finished command (the paths other than a plain reply's)."""
        pending = self.pending.get(name)
        if pending is None:
            pending = self.new(name)
        pending.append(latency)
        if not ok:
            with self._lock:
                self._figures[name].failed += 1
        self.unfolded += 1
        if self.unfolded >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Fold the pending latencies into the figures (reactor thread; when
        :attr:`unfolded` reaches :data:`FOLD_AT`)."""
        self.unfolded = 0
        with self._lock:
            for name, pending in self.pending.items():
                if pending:
                    figures = self._figures[name]
                    figures.count += len(pending)
                    figures.total += sum(pending)
                    figures.max = max(figures.max, max(pending))
                    figures.recent.extend(pending)
                    pending.clear()

    def summaries(self) -> dict[str, CommandSummary]:
        """A summary per command name (any thread)."""
        out = {}
        with self._lock:
            for name, figures in self._figures.items():
                pending = list(self.pending[name])  # the reactor thread may append
                count = figures.count + len(pending)
                if not count:
                    continue
                window = list(figures.recent)
                window.extend(pending)
                window = sorted(window[-RECENT:])
                out[name] = CommandSummary(
                    name, count, figures.failed, (figures.total + sum(pending)) / count,
                    max(figures.max, max(pending, default=0.0)),
                    _rank(window, 0.5), _rank(window, 0.99))
        return out


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class CommandSummary:
    """The latency summary of one command name.

    Attributes:
        name: the QMP command.
        count: how many finished (any outcome).
        failed: how many finished with an error, a timeout, a lost connection or a
            cancellation.
        mean: the mean latency, in seconds.
        max: the longest latency, in seconds.
        p50: the median latency of the most recent :data:`RECENT`, in seconds.
        p99: the 99th percentile of the most recent :data:`RECENT`, in seconds.
    """

    name: str
    count: int
    failed: int
    mean: float
    max: float
    p50: float
    p99: float


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """What a client did, since it was made (:meth:`Client.metrics`).

    Attributes:
        commands_sent: commands submitted with ``execute`` (typed operations included).
        commands_completed: commands that finished with QEMU's ``return``.
        commands_failed: commands that finished otherwise (error reply, timeout, lost
            connection, cancelled).
        in_flight: commands written and not answered (or answered and waiting for their
            event).
        queued: commands waiting for room in the window (or for the connection).
        events_received: events delivered to subscriptions.
        events_dropped: event lines dropped undecoded because nobody wanted them.
        stale_replies: replies dropped because their id was not in flight.
        reconnects: connections re-established by the reconnect policy.
        commands: the latency summary per command name.
    """

    commands_sent: int
    commands_completed: int
    commands_failed: int
    in_flight: int
    queued: int
    events_received: int
    events_dropped: int
    stale_replies: int
    reconnects: int
    commands: Mapping[str, CommandSummary]

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data (for a metrics exporter or JSON)."""
        out: dict[str, Any] = {
            "commands_sent": self.commands_sent,
            "commands_completed": self.commands_completed,
            "commands_failed": self.commands_failed,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "events_received": self.events_received,
            "events_dropped": self.events_dropped,
            "stale_replies": self.stale_replies,
            "reconnects": self.reconnects,
        }
        out["commands"] = {name: {"count": s.count, "failed": s.failed, "mean": s.mean,
                                  "max": s.max, "p50": s.p50, "p99": s.p99}
                           for name, s in self.commands.items()}
        return out
