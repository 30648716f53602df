"""The QEMU object model (QOM): reading, setting and listing properties.

:class:`QOMOps` is ``client.qom``. Part of :mod:`qmplex.ops`.
"""

from __future__ import annotations

from typing import Any

from ..futures import Future
from .args import check_id
from .executor import command
from .namespace import Namespace
from .results import ObjectProperty, parse_list

__all__ = ["QOMOps"]


def _object_properties(value: Any) -> list[ObjectProperty]:
    return [ObjectProperty.from_qmp(x) for x in parse_list("qom-list", value)]


class QOMOps(Namespace):
    """QOM (``client.qom``): ``qom_set``, ``qom_get``, ``qom_list``."""

    __slots__ = ()

    def qom_set(self, path: str, property: str, value: Any, *,
                timeout: float | None = None) -> Future[None]:
        """Set a QOM property (``qom-set {"path", "property", "value"}``).

        Returns:
            A future done (None) when QEMU has set it.

        Raises:
            ValidationError: an empty path or property name.
        """
        op = "qom_set"
        args = {"path": check_id(op, "path", path),
                "property": check_id(op, "property", property), "value": value}
        return command(self._executor, "qom-set", args, timeout)

    def qom_get(self, path: str, property: str, *,
                timeout: float | None = None) -> Future[Any]:
        """Read a QOM property (``qom-get {"path", "property"}``).

        Returns:
            A future for the value, as QEMU sent it (any JSON value).

        Raises:
            ValidationError: an empty path or property name.
        """
        op = "qom_get"
        args = {"path": check_id(op, "path", path),
                "property": check_id(op, "property", property)}
        return self._executor.execute("qom-get", args, timeout=timeout)

    def qom_list(self, path: str, *,
                 timeout: float | None = None) -> Future[list[ObjectProperty]]:
        """List the properties (and children) of a QOM object (``qom-list {"path"}``).

        Returns:
            A future for the properties.

        Raises:
            ValidationError: an empty path.
        """
        path = check_id("qom_list", "path", path)
        return self._executor.execute("qom-list", {"path": path},
                                      timeout=timeout).then(_object_properties)
