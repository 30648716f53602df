"""Python and QMP spellings of command and argument names: one function each way.

QMP spells most names with ``-`` (``blockdev-add``, ``node-name``) and some with ``_``
(``device_add``, ``block_set_io_throttle``'s ``bps_rd``); Python needs ``_``.
:func:`python_name` maps a wire name to Python, :func:`wire_name` maps it back. Every
layer that renames (``client.call``, the typed operations' extra keywords, the schema's
"did you mean" suggestions) goes through these two functions, so the rules live here
only.

This module imports nothing from qmplex, so any layer may use it without pulling in
another (the typed operations use it without importing :mod:`qmplex.schema`).
"""

from __future__ import annotations

import keyword
from collections.abc import Collection

__all__ = [
    "UNDERSCORE_ARGUMENTS",
    "UNDERSCORE_COMMANDS",
    "python_name",
    "wire_name",
]

#: QMP commands spelled with ``_`` rather than ``-``: every such command of QEMU 7.2's
#: schema, plus older ones since removed (``block_passwd``, ``migrate_set_downtime``,
#: ``migrate_set_speed``). :func:`wire_name` keeps these as they are when it has no
#: schema to ask. Names QMP spells with ``-`` (``human-monitor-command``,
#: ``query-status``, ``x-blockdev-del``, ...) are the rule and are not listed.
UNDERSCORE_COMMANDS: frozenset[str] = frozenset({
    "add_client",
    "block_passwd",
    "block_resize",
    "block_set_io_throttle",
    "client_migrate_info",
    "device_add",
    "device_del",
    "expire_password",
    "migrate_cancel",
    "migrate_set_downtime",
    "migrate_set_speed",
    "netdev_add",
    "netdev_del",
    "qmp_capabilities",
    "set_link",
    "set_password",
    "system_powerdown",
    "system_reset",
    "system_wakeup",
})

#: Top-level command arguments (including the members of union variants) that QEMU
#: 7.2's schema spells with ``_``: ``block_set_io_throttle``'s limits, ``netdev_add``'s
#: tap ``vnet_hdr``, ``object-add``'s colo-compare, filter and input-linux properties.
#: :func:`wire_name` keeps these as they are when it has no schema to ask.
UNDERSCORE_ARGUMENTS: frozenset[str] = frozenset({
    "bps_max",
    "bps_max_length",
    "bps_rd",
    "bps_rd_max",
    "bps_rd_max_length",
    "bps_wr",
    "bps_wr_max",
    "bps_wr_max_length",
    "compare_timeout",
    "expired_scan_cycle",
    "grab_all",
    "iops_max",
    "iops_max_length",
    "iops_rd",
    "iops_rd_max",
    "iops_rd_max_length",
    "iops_size",
    "iops_wr",
    "iops_wr_max",
    "iops_wr_max_length",
    "max_queue_size",
    "notify_dev",
    "primary_in",
    "secondary_in",
    "vnet_hdr",
    "vnet_hdr_support",
})

# Both lists at once: in QEMU 7.2 no command or top-level argument is spelled like the
# dashed form of a listed name (tests/test_schema.py checks), so one set serves both.
_UNDERSCORED = UNDERSCORE_COMMANDS | UNDERSCORE_ARGUMENTS


def python_name(wire: str) -> str:
    """Return the Python spelling of a QMP command or argument name.

    ``-`` becomes ``_``, and a Python keyword gets a trailing ``_`` (the argument
    ``if`` becomes ``if_``), so the result can be written as an attribute or a keyword
    argument. :func:`wire_name` reverses it.

    Args:
        wire: the name as QMP spells it, e.g. ``"blockdev-add"`` or ``"node-name"``.

    Returns:
        e.g. ``"blockdev_add"``, ``"node_name"``; ``"device_add"`` stays.
    """
    name = wire.replace("-", "_")
    if keyword.iskeyword(name):
        name += "_"
    return name


def _dashed(name: str) -> str:
    # A downstream extension keeps its "__RFQDN_" prefix (e.g. "__com.redhat_"): only
    # the part after it is the name proper.
    if name.startswith("__") and "." in name:
        dot = name.rfind(".")
        cut = name.find("_", dot)
        if cut >= 0:
            return name[: cut + 1] + name[cut + 1:].replace("_", "-")
    return name.replace("_", "-")


def wire_name(
    python: str,
    candidates: Collection[str] | None = None,
    *,
    underscored: Collection[str] | None = None,
) -> str:
    """Return the QMP spelling of a Python command or argument name.

    QMP mixes ``_`` and ``-`` (``device_add``, ``query-status``, ``x-blockdev-del``), so
    the spelling comes from ``candidates`` (the names the schema has) when given:
    ``python`` itself if it is there, else its dashed form, else any candidate whose
    :func:`python_name` is ``python``. Without candidates, or when none matches,
    names in ``underscored`` keep their ``_`` and every other ``_`` becomes ``-``.
    A trailing ``_`` after a Python keyword is dropped (``if_`` -> ``if``).

    Args:
        python: e.g. ``"blockdev_add"``, ``"node_name"``.
        candidates: the wire names to choose from (e.g. ``Schema.command_names`` or a
            command's ``Schema.argument_names``), or None.
        underscored: the names known to be spelled with ``_``; None (the default)
            means :data:`UNDERSCORE_COMMANDS` and :data:`UNDERSCORE_ARGUMENTS`.

    Returns:
        e.g. ``"blockdev-add"``, ``"device_add"``, ``"node-name"``, ``"vnet_hdr"``.
    """
    name = python
    if name.endswith("_") and keyword.iskeyword(name[:-1]):
        name = name[:-1]
    if candidates is not None:
        if name in candidates:
            return name
        dashed = _dashed(name)
        if dashed in candidates:
            return dashed
        for candidate in candidates:
            if python_name(candidate) == python:
                return candidate
    if name in (_UNDERSCORED if underscored is None else underscored):
        return name
    return _dashed(name)
