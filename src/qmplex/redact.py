"""Secrets kept out of logs, error messages and reprs.

:func:`redact_arguments` returns a command's arguments with every secret replaced by
``"<redacted>"``; anything that shows arguments to a human (debug logs, error
messages) goes through it, and :func:`is_redacted` tells an error message whether the
value it is about to quote is one of them. Redacted:

- any member named like a password, secret or cookie (``password``, ``passphrase``,
  ``secret``, ``cookie``, a name ending in ``-password``, ``-passphrase``, ``-secret``
  or ``-cookie`` such as ``key-secret``, ``new-secret`` and ``old-secret``, and
  ``netdev_add``'s L2TPv3 ``cookie64``, ``rxcookie``, ``txcookie``), at any depth, inside
  lists too;
- the ``data`` and ``iv`` of ``object-add`` for ``secret`` / ``secret_keyring`` objects
  (also inside the ``props`` of QEMU before 6.0);
- the ``value`` of ``qom-set`` on a property named like a password, secret or cookie,
  and on the ``data`` or ``iv`` of an object under ``/objects/`` (where secret objects
  live);
- the command line of a ``human-monitor-command`` that mentions a password, passphrase,
  secret or cookie (:func:`mentions_secret`: ``set_password vnc PW``, ``change vnc
  password PW``, ``object_add secret,...``), also when it is given as bytes: only its
  first word is kept.

Names of members of the secrets' own objects (``key-secret`` names a ``secret`` object)
are redacted too: harmless, and one rule fewer to get wrong. These are rules on names,
so a secret in a member with an innocent name (a guest's password typed through
``send-key``, say) is not found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REDACTED", "is_redacted", "mentions_secret", "redact_arguments"]

#: What a secret value is replaced with.
REDACTED = "<redacted>"

_SECRET_KEYS = frozenset({"password", "passphrase", "secret", "cookie",
                          "cookie64", "rxcookie", "txcookie"})
_SECRET_SUFFIXES = ("-password", "-passphrase", "-secret", "-cookie")
_SECRET_QOM_TYPES = frozenset({"secret", "secret_keyring"})
# Words that make a whole HMP command line (or a QOM property) secret.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "cookie")


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and (key in _SECRET_KEYS or key.endswith(_SECRET_SUFFIXES))


def mentions_secret(text: object) -> bool:
    """Return True for a str or bytes that contains a word of a secret's name.

    The words are ``password``, ``passwd``, ``passphrase``, ``secret`` and ``cookie``, in
    any case. An HMP command line that mentions one is redacted whole; the ``qmplex
    shell`` keeps such lines out of its history file.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("latin-1")
    return isinstance(text, str) and any(w in text.lower() for w in _SECRET_WORDS)


def redact_arguments(name: str, arguments: Mapping[str, Any] | None) -> Any:
    """Return ``arguments`` of command ``name`` with its secrets replaced.

    Args:
        name: the command's wire name.
        arguments: its arguments, in wire spelling.

    Returns:
        A copy with every secret replaced by :data:`REDACTED` (dicts and lists are
        copied, other values kept); ``arguments`` itself when it is empty. ``arguments``
        is never changed.
    """
    if not arguments:
        return arguments
    if name == "human-monitor-command":
        line = arguments.get("command-line")
        if mentions_secret(line):
            text = line.decode("latin-1") if isinstance(line, (bytes, bytearray)) else line
            words = str(text).split(None, 1)
            return dict(_redact_dict(arguments, False),
                        **{"command-line": f"{words[0]} {REDACTED}"})
    if name == "qom-set":
        prop = arguments.get("property")
        path = arguments.get("path")
        if mentions_secret(prop) or (prop in ("data", "iv") and isinstance(path, str)
                                      and path.startswith("/objects/")):
            return dict(_redact_dict(arguments, False), value=REDACTED)
    secret_obj = name == "object-add" and arguments.get("qom-type") in _SECRET_QOM_TYPES
    return _redact_dict(arguments, secret_obj)


def is_redacted(name: str, arguments: Mapping[str, Any] | None,
                path: Sequence[str | int]) -> bool:
    """Return True if :func:`redact_arguments` hides the value at ``path``.

    Error messages that quote an argument's value ask this first (for the schema's
    validation and the typed operations' checks).

    Args:
        name: the command's wire name.
        arguments: its arguments, in wire spelling.
        path: the keys (and list indices) from ``arguments`` to the value, e.g.
            ``("file", "password")`` or ``("capabilities", 0, "state")``.

    Returns:
        True if that value, or an object or list holding it, is redacted. False for a
        path that does not lead to a value, and for an object or list that only holds
        a secret (quoting it would show only its kind).
    """
    original: Any = arguments
    shown: Any = redact_arguments(name, arguments)
    for key in path:
        if isinstance(original, Mapping):
            if not isinstance(shown, Mapping):
                return True  # the whole object was replaced
            if key not in original:
                return False
            original, shown = original[key], shown.get(key)
        elif isinstance(original, (list, tuple)):
            if not isinstance(shown, list):
                return True
            if not isinstance(key, int) or not -len(original) <= key < len(original):
                return False
            original, shown = original[key], shown[key]
        else:
            return False  # the path goes on past a plain value
    if isinstance(original, (Mapping, list, tuple)):
        return False
    return shown is not original


def _redact_dict(d: Mapping[str, Any], secret_obj: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if _secret_key(k) or (secret_obj and k in ("data", "iv")):
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
