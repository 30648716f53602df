"""The user's words, turned into what the library takes: ``SOCKET`` into an address,
``key=value`` words or a JSON object into a command's arguments.

Used by the one-shot sub-commands (``exec``, ``events``) and by each line of the shell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import orjson

from ..client import Address
from .exit_codes import UsageError

__all__ = ["parse_address", "parse_arguments"]

_TCP_RE = re.compile(
    r"^(?:tcp:)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^/:\[\]]+)):(?P<port>\d+)$")


def parse_address(text: str) -> Address:
    """Turn a ``SOCKET`` argument into a client address.

    Args:
        text: a Unix socket path; or ``HOST:PORT``, ``tcp:HOST:PORT``, ``[V6]:PORT``.
            An existing file always counts as a path, so ``./a:1`` stays a path.

    Returns:
        A path string, or ``(host, port)`` for TCP.
    """
    if text.startswith("tcp:") or (not os.path.exists(text) and "/" not in text):
        m = _TCP_RE.match(text)
        if m is not None:
            return (m.group("v6") or m.group("host"), int(m.group("port")))
    return text


def _json_or_string(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def parse_arguments(words: Sequence[str]) -> dict[str, Any] | None:
    """Turn the words after ``COMMAND`` into QMP arguments.

    Args:
        words: either one JSON object (possibly split over several words, as an
            unquoted shell line is), or ``key=value`` words. A value is used as JSON
            when it parses as JSON, else as a string. A word ``key=`` followed by a
            word without ``=`` takes that word as its value (so ``id= d0`` works,
            which is what tab completion leaves behind).

    Returns:
        The arguments, or None when ``words`` is empty.

    Raises:
        UsageError: a word is not ``key=value``, a key repeats, or the JSON is not an
            object.
    """
    if not words:
        return None
    if words[0].lstrip().startswith("{"):
        text = " ".join(words)
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError("arguments must be a JSON object")
        return value
    args: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        key, sep, raw = word.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {word!r}")
        if not raw and i + 1 < len(words) and "=" not in words[i + 1]:
            i += 1
            raw = words[i]
        if key in args:
            raise UsageError(f"argument {key!r} given twice")
        args[key] = _json_or_string(raw)
        i += 1
    return args
