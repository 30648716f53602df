"""Secrets kept out of logs, error messages and reprs.

:func:`redact_arguments` returns a command's arguments with every secret replaced by
``"<redacted>"``; anything that shows arguments to a human (debug logs, error
messages) goes through it. Redacted:

- any member named like a password or secret (``password``, ``passphrase``,
  ``secret``, ``key-secret``, ``new-secret``, ``cookie``), at any depth, inside lists too;
- the ``data`` and ``iv`` of ``object-add`` for ``secret`` / ``secret_keyring`` objects;
- the ``value`` of ``qom-set`` on a property named like a password or secret;
- the command line of a ``human-monitor-command`` that mentions a password or secret
  (``set_password vnc PW``, ``change vnc password PW``, ``object_add secret,...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact_arguments"]

#: What a secret value is replaced with.
REDACTED = "<redacted>"

_SECRET_KEYS = frozenset({"password", "passphrase", "secret", "key-secret", "new-secret",
                          "cookie"})
_SECRET_QOM_TYPES = frozenset({"secret", "secret_keyring"})
# Words that make a whole HMP command line (or a QOM property) secret.
_SECRET_WORDS = ("password", "passwd", "secret")


def redact_arguments(name: str, arguments: Mapping[str, Any] | None) -> Any:
    """Return ``arguments`` of command ``name`` with its secrets replaced (a copy when
    anything is secret; ``arguments`` itself is never changed)."""
    if not arguments:
        return arguments
    if name == "human-monitor-command":
        line = arguments.get("command-line")
        if isinstance(line, str) and any(w in line.lower() for w in _SECRET_WORDS):
            words = line.split(None, 1)
            return dict(arguments, **{"command-line": f"{words[0]} {REDACTED}"})
    if name == "qom-set":
        prop = arguments.get("property")
        if isinstance(prop, str) and any(w in prop.lower() for w in _SECRET_WORDS):
            return dict(_redact_dict(arguments, False), value=REDACTED)
    secret_obj = name == "object-add" and arguments.get("qom-type") in _SECRET_QOM_TYPES
    return _redact_dict(arguments, secret_obj)


def _redact_dict(d: Mapping[str, Any], secret_obj: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in _SECRET_KEYS or (secret_obj and k in ("data", "iv")):
            out[k] = REDACTED
        else:
            out[k] = _redact_value(v, secret_obj)
    return out


def _redact_value(v: Any, secret_obj: bool) -> Any:
    if isinstance(v, Mapping):
        return _redact_dict(v, secret_obj)
    if isinstance(v, (list, tuple)):
        return [_redact_value(x, secret_obj) for x in v]
    return v
