"""Real QEMU releases, as captured: their version, QMP schema and device properties.

``data/`` holds what a freshly started ``qemu-system-x86_64`` of each of 17 releases,
5.0.0 to 11.1.3, answered to ``query-version``, ``query-qmp-schema`` and
``device-list-properties`` (``data/README.md`` says where each capture comes from).
:func:`captured_release` reads one; :data:`CAPTURED_QEMU_VERSIONS` lists them.

The fake server uses a release to greet as that QEMU, to serve its schema, and to
check what it receives the way that QEMU would (:meth:`CapturedRelease.refusal`):
an unknown command, an argument its schema does not accept, a device property its
device type does not have. The checks are qmplex's own schema validation
(:meth:`qmplex.schema.Schema.validate`), so the error descriptions are qmplex's, not
QEMU's; the error classes are QEMU's.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from ..errors import ValidationError
from .script import FakeCommandError, generic_error

if TYPE_CHECKING:
    from ..schema import Schema

__all__ = ["CAPTURED_QEMU_VERSIONS", "CapturedRelease", "captured_release"]

#: The captured releases, oldest first (``"5.0.0"`` ... ``"11.1.3"``).
CAPTURED_QEMU_VERSIONS: Final = (
    "5.0.0", "5.1.0", "5.2.0", "6.0.0", "6.1.0", "6.2.0", "7.0.0", "7.1.0", "7.2.0",
    "8.0.0", "8.1.0", "8.2.0", "9.0.0", "9.1.0", "9.2.0", "10.0.0", "11.1.3",
)  # fmt: skip

# libvirt's captures of QEMU 5.0 to 6.2 list virtio-iommu-pci's properties as this
# placeholder of its own test data, not as QEMU answered: such a type counts as not
# captured.
_PLACEHOLDER: Final = ["fake-data"]

# device_add arguments that are not device properties (qdev takes them itself).
_DEVICE_ADD_OWN: Final = frozenset({"driver", "id", "bus"})


@dataclass(frozen=True, slots=True, eq=False)
class CapturedRelease:
    """One captured QEMU release (see the module docstring).

    Attributes:
        name: the version as a string, e.g. ``"9.2.0"``.
        version: ``(major, minor, micro)``.
        package: the ``package`` string of ``query-version`` (``"v9.2.0"``).
        query_version: the return of ``query-version``.
        schema_info: the return of ``query-qmp-schema`` (treat it as read-only).
        devices: device type -> the names of its properties, for the device types
            captured (not every type QEMU has).
    """

    name: str
    version: tuple[int, int, int]
    package: str
    query_version: Mapping[str, Any]
    schema_info: Sequence[Mapping[str, Any]]
    devices: Mapping[str, frozenset[str]]
    _parsed: list[Schema] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<CapturedRelease QEMU {self.name}>"

    @property
    def schema(self) -> Schema:
        """The release's schema, parsed (once) into a :class:`~qmplex.schema.Schema`."""
        if not self._parsed:
            from ..core.messages import QMPVersion
            from ..schema import Schema

            major, minor, micro = self.version
            version = QMPVersion(major, minor, micro, self.package, ())
            parsed = Schema.from_introspection(list(self.schema_info), version=version)
            with _lock:
                if not self._parsed:
                    self._parsed.append(parsed)
        return self._parsed[0]

    def refusal(self, command: str, arguments: Mapping[str, Any]) -> FakeCommandError | None:
        """How this QEMU would refuse ``command`` with ``arguments``, or None.

        ``CommandNotFound`` for a command its schema lacks; a ``GenericError`` for
        arguments its schema does not accept, and for a ``device_add`` property that
        a captured device type does not have (``Property 'T.P' not found``, as QEMU
        says). Device types that were not captured are not checked.
        """
        schema = self.schema
        if not schema.has_command(command):
            return FakeCommandError("CommandNotFound", f"The command {command} has not been found")
        try:
            schema.validate(command, arguments)
        except ValidationError as exc:
            return generic_error(str(exc))
        if command == "device_add":
            driver = arguments.get("driver")
            props = self.devices.get(driver) if isinstance(driver, str) else None
            if props is not None:
                for key in arguments:
                    if key not in _DEVICE_ADD_OWN and key not in props:
                        return generic_error(f"Property '{driver}.{key}' not found")
        return None

    def device_accepts(self, driver: str, prop: str) -> bool | None:
        """True if device type ``driver`` has property ``prop`` (or it is one of
        ``device_add``'s own: ``driver``, ``id``, ``bus``); None if the type was not
        captured."""
        props = self.devices.get(driver)
        if props is None:
            return None
        return prop in _DEVICE_ADD_OWN or prop in props


_lock = threading.Lock()
_loaded: dict[str, CapturedRelease] = {}


def _resolve(version: str | tuple[int, int, int]) -> str:
    if isinstance(version, tuple):
        version = ".".join(str(part) for part in version)
    if not isinstance(version, str):
        raise TypeError(f"a QEMU version is a string like '9.2.0', not {version!r}")
    if version in CAPTURED_QEMU_VERSIONS:
        return version
    same = [v for v in CAPTURED_QEMU_VERSIONS if v.rsplit(".", 1)[0] == version]
    if len(same) == 1:  # "9.2" or "11.1": the one captured release of that line
        return same[0]
    raise ValueError(f"no captured QEMU {version}: the captured releases are "
                     f"{', '.join(CAPTURED_QEMU_VERSIONS)}")


def captured_release(version: str | tuple[int, int, int]) -> CapturedRelease:
    """Return a captured release (read from the package's data once per process).

    Args:
        version: ``"9.2.0"`` or ``(9, 2, 0)``; ``"9.2"`` names the one captured
            release of the 9.2 line.

    Raises:
        ValueError: no release of that version was captured (the message lists them).
    """
    name = _resolve(version)
    with _lock:
        found = _loaded.get(name)
    if found is not None:
        return found
    raw = (resources.files(__package__) / "data" / f"qemu-{name}.json.gz").read_bytes()
    doc = json.loads(gzip.decompress(raw))
    qemu = doc["query-version"]["qemu"]
    release = CapturedRelease(
        name=name,
        version=(int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"])),
        package=str(doc["query-version"]["package"]),
        query_version=doc["query-version"],
        schema_info=doc["query-qmp-schema"],
        devices={t: frozenset(p) for t, p in doc["device-list-properties"].items()
                 if p != _PLACEHOLDER},
    )
    with _lock:
        return _loaded.setdefault(name, release)
