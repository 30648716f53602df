"""What each QEMU release can express: the version-dependent forms of the operations.

The operations support QEMU 5.0 and newer; ``tests/test_version_matrix.py`` checks
every one of them against the real schemas (and device property lists) of 17
releases, 5.0.0 to 11.1.3. Where QMP changed between releases, an operation picks
the form its peer has:

- from the peer's schema when the client has loaded one (``client.load_schema()``:
  the schema is what that build of QEMU really accepts, backports included);
- else from the version in the peer's greeting;
- else (no greeting yet: a test double) the newest QEMU is assumed.

Where the peer has no way to express a request, the operation refuses it before
sending anything, with a :class:`~qmplex.errors.ValidationError` that names the
operation, what was asked and the peer's version.

A :class:`Feature` is one such change: what it is, the first release that has it,
and how to ask a schema about it. The table at the end is the whole list of the
features the operations decide on (the older forms of QEMU 2.x, kept for peers
older than the supported range, are decided in :mod:`qmplex.ops.executor` by
version alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ValidationError
from .executor import Executor

__all__ = ["Feature"]


class SchemaView(Protocol):
    """The queries of :class:`qmplex.schema.Schema` a feature's probe may ask."""

    def has_command(self, name: str) -> bool:
        """True if the peer has the command."""

    def has_argument(self, command: str, argument: str) -> bool:
        """True if the command takes the (dotted) argument."""

    def has_enum_value(self, where: str | tuple[str, str], value: str) -> bool:
        """True if the value is valid for the enum at ``where``."""


class Feature:
    """A change of QMP that an operation depends on.

    Attributes:
        what: a short description for error messages (``"reconnect-ms"``).
        since: the first QEMU release that has it, ``(major, minor)``.
        probe: asks a loaded schema whether the peer has it (None: decided by the
            version alone).
    """

    __slots__ = ("what", "since", "probe")

    def __init__(self, what: str, since: tuple[int, int],
                 probe: Callable[[SchemaView], bool] | None = None) -> None:
        self.what = what
        self.since = since
        self.probe = probe

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<Feature {self.what} since {self.since[0]}.{self.since[1]}>"


def loaded_schema(executor: Executor) -> SchemaView | None:
    """The peer's schema if the executor has loaded one (``Client.schema``), else None."""
    schema: Any = getattr(executor, "schema", None)
    if schema is None or not hasattr(schema, "has_argument"):
        return None
    view: SchemaView = schema
    return view


def peer_has(executor: Executor, feature: Feature) -> bool:
    """True if the peer has ``feature``: its loaded schema says so, or else its
    version is ``feature.since`` or newer (or unknown)."""
    schema = loaded_schema(executor)
    if schema is not None and feature.probe is not None:
        return feature.probe(schema)
    version = executor.version
    return version is None or version.at_least(*feature.since)


def peer_name(executor: Executor) -> str:
    """``"QEMU 8.2.0"`` (or ``"this QEMU"`` when the version is unknown)."""
    version = executor.version
    return "this QEMU" if version is None else f"QEMU {version}"


def require(executor: Executor, op: str, feature: Feature, asked: str) -> None:
    """Refuse a request the peer cannot express.

    Raises:
        ValidationError: ``"OP: ASKED needs FEATURE (QEMU M.N or newer); the peer is
            QEMU X.Y.Z"``.
    """
    if not peer_has(executor, feature):
        major, minor = feature.since
        raise ValidationError(f"{op}: {asked} needs {feature.what} (QEMU {major}.{minor} "
                              f"or newer); the peer is {peer_name(executor)}")


# ------------------------------------------------------------------ the table
#: ``chardev-add``'s socket ``reconnect-ms`` (milliseconds); before it, ``reconnect``
#: (whole seconds), deprecated in 9.2 and gone in 11.x.
RECONNECT_MS = Feature(
    "reconnect-ms", (9, 2),
    lambda s: s.has_argument("chardev-add", "backend.data.reconnect-ms"))
#: The ``iommufd`` object, and the ``iommufd`` property of VFIO devices.
IOMMUFD = Feature(
    "the iommufd backend", (9, 0),
    lambda s: s.has_enum_value(("object-add", "qom-type"), "iommufd"))
#: ``aio: "io_uring"`` of a file node (QEMU built with liburing).
AIO_IO_URING = Feature(
    "aio io_uring", (5, 0),
    lambda s: s.has_enum_value(("blockdev-add", "file.aio"), "io_uring"))
#: ``share-rw`` of block devices.
SHARE_RW = Feature("share-rw", (2, 10))
