"""Migration: capabilities, starting one out or in, waiting for its end.

:class:`MigrationOps` is ``client.migration``. Part of :mod:`qmplex.ops`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ValidationError
from ..events import Event, EventFilter
from ..futures import Future
from .args import check_bool, check_id
from .executor import command, done
from .namespace import Namespace
from .results import MigrationInfo

__all__ = ["MIGRATION_FINAL_STATES", "MigrationOps"]

#: ``MIGRATION`` event statuses after which a migration is over.
MIGRATION_FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


def _migration_over(event: Event) -> bool:
    return event.data.get("status") in MIGRATION_FINAL_STATES


_MIGRATION_OVER = EventFilter("MIGRATION", predicate=_migration_over)


def _event_status(event: Event) -> str:
    return str(event.data.get("status"))


class MigrationOps(Namespace):
    """Migration (``client.migration``): ``migrate_set_capabilities``, ``migrate``,
    ``migrate_incoming``, ``migrate_and_wait``, ``wait_migration``,
    ``query_migrate``."""

    __slots__ = ()

    def query_migrate(self, *, timeout: float | None = None) -> Future[MigrationInfo]:
        """Ask for the state of the outgoing migration (``query-migrate``).

        Returns:
            A future for a :class:`MigrationInfo` (``status`` None when no migration
            was started).
        """
        return self._executor.execute("query-migrate", None,
                                      timeout=timeout).then(MigrationInfo.from_qmp)

    def migrate_set_capabilities(self, capabilities: Mapping[str, bool], *,
                                 timeout: float | None = None) -> Future[None]:
        """Turn migration capabilities on or off (``migrate-set-capabilities`` with
        ``{"capabilities": [{"capability": NAME, "state": BOOL}, ...]}``).

        ``{"events": True}`` makes QEMU emit the ``MIGRATION`` events that
        :meth:`wait_migration` and :meth:`migrate_and_wait` wait for.

        Returns:
            A future done (None) when QEMU has applied them.

        Raises:
            ValidationError: an empty mapping, a non-string name, a non-bool state.
        """
        op = "migrate_set_capabilities"
        if not isinstance(capabilities, Mapping) or not capabilities:
            raise ValidationError(f"{op}: capabilities must be a non-empty mapping "
                                  "of names to bools")
        caps = [{"capability": check_id(op, "a capability name", name),
                 "state": check_bool(op, f"the state of {name!r}", state)}
                for name, state in capabilities.items()]
        return command(self._executor, "migrate-set-capabilities", {"capabilities": caps}, timeout)

    def migrate(self, uri: str, *, timeout: float | None = None) -> Future[None]:
        """Start migrating out (``migrate {"uri"}``), e.g. to ``"tcp:HOST:PORT"``,
        ``"unix:PATH"`` or ``"exec:cat > FILE"``.

        Returns:
            A future done (None) when the migration has started (not finished; use
            :meth:`wait_migration`, or :meth:`migrate_and_wait` instead).

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = check_id("migrate", "uri", uri)
        return command(self._executor, "migrate", {"uri": uri}, timeout)

    def migrate_incoming(self, uri: str, *, timeout: float | None = None) -> Future[None]:
        """Start listening for an incoming migration (``migrate-incoming {"uri"}``);
        QEMU must have been started with ``-incoming defer``.

        Returns:
            A future done (None) when QEMU listens.

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = check_id("migrate_incoming", "uri", uri)
        return command(self._executor, "migrate-incoming", {"uri": uri}, timeout)

    def migrate_and_wait(self, uri: str, *, timeout: float | None = None) -> Future[str]:
        """Start migrating out (``migrate {"uri"}``) and wait until it is over.

        The wait for a ``MIGRATION`` event with status ``completed``, ``failed`` or
        ``cancelled`` is registered before ``migrate`` is written. Needs the
        ``events`` capability (see :meth:`migrate_set_capabilities`): without it the
        future only ends by ``timeout``.

        Args:
            uri: the destination.
            timeout: seconds for the whole migration.

        Returns:
            A future for the final status (``"completed"``, ``"failed"`` or
            ``"cancelled"``); it fails with :class:`~qmplex.errors.CommandError` when
            QEMU refuses to start.

        Raises:
            ValidationError: ``uri`` is empty or not a string.
        """
        uri = check_id("migrate_and_wait", "uri", uri)
        finished: Future[Event] = self._executor.execute(
            "migrate", {"uri": uri}, timeout=timeout, until=_MIGRATION_OVER)
        return finished.then(_event_status)

    def wait_migration(self, timeout: float | None = None) -> Future[str]:
        """Wait until the outgoing migration is over.

        Registers a wait for a ``MIGRATION`` event with status ``completed``,
        ``failed`` or ``cancelled`` first, then sends ``query-migrate``: when that
        already reports a final status (the migration ended before this call), the
        future completes with it at once, so an end that came before the call is not
        missed. That also means a finished earlier migration is reported if no new
        one was started: call it after :meth:`migrate`, or use
        :meth:`migrate_and_wait`. Needs the ``events`` capability.

        Args:
            timeout: seconds to wait.

        Returns:
            A future for the final status.
        """
        waiter = self._executor.wait_event(_MIGRATION_OVER, timeout=timeout)

        def _decide(info: MigrationInfo) -> Future[str]:
            if info.status in MIGRATION_FINAL_STATES:
                return done(waiter, info.status)
            return waiter.then(_event_status)

        def _release(_: Future[str]) -> None:
            waiter.cancel()  # no effect if the event came

        out = self.query_migrate(timeout=timeout).chain(_decide)
        out.add_done_callback(_release)
        return out
