"""What the schema layer needs of a client: the peer's version and ``execute``.

:func:`~qmplex.schema.load_schema` and :class:`~qmplex.schema.CallNamespace` take any
object with these two members (``qmplex.Client`` has them, and tests pass fakes); they
only call ``execute`` and read ``version``, and never set anything on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..core.messages import QMPVersion
    from ..events import EventFilter
    from ..futures import Future

__all__ = ["SchemaClient"]


# TODO(ops merge): replace SchemaClient with the ops package's Executor protocol (the
# execute signature below repeats Client.execute's) plus the ``version`` member; keep
# the name SchemaClient as an alias for one release.
class SchemaClient(Protocol):
    """What :mod:`qmplex.schema` needs of a client (``qmplex.Client`` has it)."""

    @property
    def version(self) -> QMPVersion | None:
        """The peer's version from its greeting (None before the greeting)."""
        ...

    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        oob: bool = False,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        """Submit a QMP command (see :meth:`qmplex.Client.execute`)."""
        ...
