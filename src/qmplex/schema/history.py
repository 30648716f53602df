"""Renamed commands: which spelling of a command one QEMU has.

QMP commands have been renamed over the years (``x-blockdev-del`` became
``blockdev-del``, ``query-cpus`` gave way to ``query-cpus-fast``). :func:`wire_command`
picks the spelling a peer has: from its schema when one is loaded, else from the
release history recorded here and the version of the peer's greeting. It only reads
what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ValidationError

if TYPE_CHECKING:
    from ..core.messages import QMPVersion
    from .model import Schema

__all__ = ["wire_command"]

# When each command appeared and disappeared ((major, minor), None = unknown/never), for
# wire_command() without a schema. Only facts about released QEMU versions go here.
_COMMAND_HISTORY: dict[str, tuple[tuple[int, int] | None, tuple[int, int] | None]] = {
    "blockdev-del": ((2, 9), None),
    "x-blockdev-del": (None, (2, 9)),
    "blockdev-reopen": ((6, 1), None),
    "x-blockdev-reopen": ((4, 0), (6, 1)),
    "query-cpus-fast": ((2, 12), None),
    "query-cpus": (None, (6, 0)),
}


def wire_command(schema: Schema | None, version: QMPVersion | None,
                 candidates: Sequence[str]) -> str:
    """Pick the spelling of a command this QEMU has, among ``candidates`` in order.

    Used by operations whose command was renamed, e.g.
    ``("blockdev-del", "x-blockdev-del")`` or ``("query-cpus-fast", "query-cpus")``.

    Args:
        schema: the peer's schema if loaded: the first candidate it has wins.
        version: the peer's version, used without a schema: the first candidate known
            to exist in that version wins (a candidate with no recorded history counts
            as existing).
        candidates: wire names, preferred first.

    Returns:
        The chosen name; ``candidates[0]`` when neither schema nor version decides.

    Raises:
        ValidationError: the schema has none of the candidates.
        ValueError: ``candidates`` is empty.
    """
    if not candidates:
        raise ValueError("wire_command() needs at least one candidate")
    if schema is not None:
        for name in candidates:
            if schema.has_command(name):
                return name
        raise ValidationError(f"{candidates[0]}: unknown command: this QEMU has none of "
                              f"{', '.join(candidates)}")
    if version is not None:
        at = (version.major, version.minor)
        for name in candidates:
            added, removed = _COMMAND_HISTORY.get(name, (None, None))
            if (added is None or at >= added) and (removed is None or at < removed):
                return name
    return candidates[0]

