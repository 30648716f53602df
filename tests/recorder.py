"""An :class:`~qmplex.ops.Executor` for tests of the operations without a peer.

It records each command and answers ``{}`` at once (on a detached future, whose
callbacks run inline), so a test sees exactly what an operation would send.
"""

from __future__ import annotations

from typing import Any

from qmplex import QMPVersion
from qmplex.events import Event, EventFilter
from qmplex.futures import Future


class Recorder:
    """Records ``execute`` calls as ``(name, arguments, options)``; answers ``{}``."""

    def __init__(self, version: QMPVersion | None = None) -> None:
        self.version = version
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []

    def execute(self, name: str, arguments: Any = None, **kwargs: Any) -> Future[Any]:
        self.sent.append((name, arguments, kwargs))
        fut: Future[Any] = Future()
        fut.set_result({})
        return fut

    def wait_event(self, name: str | EventFilter, match: Any = None, *,
                   timeout: float | None = None) -> Future[Event]:
        raise NotImplementedError("Recorder does not wait for events")
