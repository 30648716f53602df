"""What the schema layer needs of a client: the peer's version and ``execute``.

:func:`~qmplex.schema.load_schema` and :class:`~qmplex.schema.CallNamespace` take any
object with these two members (``qmplex.Client`` has them, and tests pass fakes); they
only call ``execute`` and read ``version``, and never set anything on it. The protocol
is the operations layer's :class:`~qmplex.ops.executor.CommandSender`, under the name
this layer has always used.
"""

from __future__ import annotations

from ..ops.executor import CommandSender as SchemaClient

__all__ = ["SchemaClient"]
