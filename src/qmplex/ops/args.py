"""Checking a caller's arguments, and spelling their names as QMP does.

Every operation checks its input here before it sends anything: a check returns the
value it was given (so a call reads ``args["id"] = check_id(op, "dev_id", dev_id)``)
or raises :class:`~qmplex.errors.ValidationError` naming the operation (``op``) and
the Python argument (``what``). Nothing here sends a command or knows a client.
"""

from __future__ import annotations

import os

from ..errors import ValidationError
from ..names import UNDERSCORE_COMMANDS, wire_name
from ..redact import REDACTED, is_redacted

__all__ = ["wire_name"]



def _shown(op: str, what: str, value: object) -> str:
    """``repr(value)`` for a message, or its type and ``<redacted>`` when the redaction
    rules (:mod:`qmplex.redact`, applied to the operation's command) hide it."""
    command = wire_name(op, underscored=UNDERSCORE_COMMANDS)
    if is_redacted(command, {wire_name(what): value}, (wire_name(what),)):
        return f"{type(value).__name__} {REDACTED}"
    return repr(value)


def check_id(op: str, what: str, value: object) -> str:
    """A non-empty string (an id, a path, a name)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{op}: {what} must be a non-empty string, "
                              f"not {_shown(op, what, value)}")
    return value


def check_str(op: str, what: str, value: object) -> str:
    """A string, maybe empty."""
    if not isinstance(value, str):
        raise ValidationError(f"{op}: {what} must be a string, not {_shown(op, what, value)}")
    return value


def check_opt_str(op: str, what: str, value: object) -> str | None:
    """A string, maybe empty, or None."""
    return None if value is None else check_str(op, what, value)


def check_bool(op: str, what: str, value: object) -> bool:
    """A bool (not merely a truthy value)."""
    if not isinstance(value, bool):
        raise ValidationError(f"{op}: {what} must be a bool, not {_shown(op, what, value)}")
    return value


def check_int(op: str, what: str, value: object, minimum: int | None = None) -> int:
    """An int (not a bool), at least ``minimum`` when given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{op}: {what} must be an integer, not {_shown(op, what, value)}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{op}: {what} must be at least {minimum}, "
                              f"not {_shown(op, what, value)}")
    return value


def check_fd(op: str, what: str, fd: object) -> int:
    """An open file descriptor of this process."""
    value = check_int(op, what, fd, 0)
    try:
        os.fstat(value)
    except OSError as exc:
        raise ValidationError(f"{op}: {what} {value} is not an open file descriptor: "
                              f"{exc.strerror}") from exc
    return value


def check_fdname(op: str, name: object) -> str:
    """A name for ``getfd``: non-empty, not starting with a digit."""
    fdname = check_id(op, "fdname", name)
    if fdname[0].isdigit():
        # QEMU reads a name starting with a digit as a descriptor number (getfd refuses it).
        raise ValidationError(f"{op}: fdname must not start with a digit: {fdname!r}")
    return fdname
