"""Deprecated: the typed operations moved to :mod:`qmplex.ops`.

In qmplex 0.1 this module held ``Operations``, the base class that gave
:class:`~qmplex.Client` every operation as a method. The operations are now grouped
by domain in :mod:`qmplex.ops` (``client.vm.stop()``, ``client.block.blockdev_add``
...). For one release the old names can still be imported from here; each import
emits a :class:`DeprecationWarning` naming the new place:

- ``wire_name``, ``SCSI_DRIVERS``, ``MIGRATION_FINAL_STATES``: from :mod:`qmplex.ops`;
- the result classes (``StatusInfo`` ...): from :mod:`qmplex` (or :mod:`qmplex.ops`);
- ``Operations``: a class with the old flat methods, deprecated too, over
  ``execute``/``wait_event``/``version`` that a subclass provides. New code builds a
  namespace over any :class:`~qmplex.ops.Executor` instead: ``VMOps(executor)``.
"""

from __future__ import annotations

import warnings
from typing import Any

# Nothing is exported on purpose: every old name warns when it is used.
__all__: list[str] = []

_MOVED = {
    "wire_name": "qmplex.ops.wire_name",
    "SCSI_DRIVERS": "qmplex.ops.SCSI_DRIVERS",
    "MIGRATION_FINAL_STATES": "qmplex.ops.MIGRATION_FINAL_STATES",
    "AddFdInfo": "qmplex.AddFdInfo",
    "CPUInfo": "qmplex.CPUInfo",
    "CPUProperties": "qmplex.CPUProperties",
    "HotpluggableCPU": "qmplex.HotpluggableCPU",
    "MemoryDevice": "qmplex.MemoryDevice",
    "MigrationInfo": "qmplex.MigrationInfo",
    "ObjectProperty": "qmplex.ObjectProperty",
    "StatusInfo": "qmplex.StatusInfo",
    "Operations": "the namespaces of qmplex.ops over an Executor (e.g. qmplex.ops.VMOps)",
}


def __getattr__(name: str) -> Any:
    """Return an old name, with a :class:`DeprecationWarning` naming its new place."""
    where = _MOVED.get(name)
    if where is None:
        raise AttributeError(f"module 'qmplex.operations' has no attribute {name!r}")
    warnings.warn(f"qmplex.operations.{name} is deprecated; use {where}",
                  DeprecationWarning, stacklevel=2)
    from . import ops

    if name == "Operations":
        return _operations_class()
    return getattr(ops, name)


_OPERATIONS: list[type] = []


def _operations_class() -> type:
    """The old ``Operations`` base: the deprecated flat methods and the namespaces,
    over ``execute``, ``wait_event`` and ``version`` provided by a subclass."""
    if _OPERATIONS:
        return _OPERATIONS[0]
    from .client import Client
    from .ops import DeprecatedOperations, LazyNamespace

    def execute(self: Any, name: str, arguments: Any = None, **options: Any) -> Any:
        """Submit one QMP command (provided by the subclass)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def wait_event(self: Any, name: Any, match: Any = None, **options: Any) -> Any:
        """Wait for the next matching event (provided by the subclass)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement wait_event()")

    body: dict[str, Any] = {
        "__doc__": "Deprecated: the operations as methods, over a subclass's execute().",
        "__module__": __name__,
        "version": None,
        "execute": execute,
        "wait_event": wait_event,
    }
    for attr, value in vars(Client).items():
        if isinstance(value, LazyNamespace):
            body[attr] = LazyNamespace(value.cls)
    cls = type("Operations", (DeprecatedOperations,), body)
    _OPERATIONS.append(cls)
    return cls
