"""How the fake server's QMP messages look on the wire, in both directions.

Output: one JSON object per line, ended by CRLF as QEMU writes it: the greeting,
``{"return": ...}`` and ``{"error": ...}`` replies (with the command's ``"id"`` where
it is echoed), and events with their timestamp. Input: the JSON values on one received
line, or a :class:`BadLine` for what is not JSON.

Pure functions of their arguments (events read the wall clock for their timestamp):
no sockets, no state, no knowledge of sessions or commands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = [
    "BadLine",
    "decode_line",
    "encode",
    "error_line",
    "event_line",
    "greeting_line",
    "return_line",
]


def encode(msg: Mapping[str, Any]) -> bytes:
    """Return ``msg`` as one line, CRLF included."""
    return orjson.dumps(msg) + b"\r\n"


def greeting_line(version: tuple[int, int, int], package: str,
                  capabilities: Sequence[str]) -> bytes:
    """Return QEMU's greeting for ``version`` (major, minor, micro)."""
    major, minor, micro = version
    return encode({
        "QMP": {
            "version": {
                "qemu": {"micro": micro, "minor": minor, "major": major},
                "package": package,
            },
            "capabilities": list(capabilities),
        }
    })


def event_line(name: str, data: Mapping[str, Any] | None) -> bytes:
    """Return an event stamped with the current wall-clock time (``data`` None: no
    ``"data"`` member)."""
    now = time.time()
    seconds = int(now)
    msg: dict[str, Any] = {
        "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)},
        "event": name,
    }
    if data is not None:
        msg["data"] = data
    return encode(msg)


def error_line(has_id: bool, cid: Any, error_class: str, desc: str) -> bytes:
    """Return an error reply; ``cid`` is echoed only when ``has_id``."""
    # QEMU writes "id" first in an error reply and last in a return (QMP-NOTES.md).
    error = {"class": error_class, "desc": desc}
    return encode({"id": cid, "error": error} if has_id else {"error": error})


def return_line(has_id: bool, cid: Any, value: Any) -> bytes:
    """Return a successful reply; ``cid`` is echoed only when ``has_id``.

    Raises:
        TypeError: ``value`` is not JSON (``orjson.JSONEncodeError``).
    """
    return encode({"return": value, "id": cid} if has_id else {"return": value})


class BadLine:
    """A line that is not JSON: answered with a parse error, in order."""

    __slots__ = ("desc",)

    def __init__(self, desc: str) -> None:
        self.desc = desc


def decode_line(line: bytes) -> list[Any]:
    """Return the JSON values on one received line (without its newline).

    Usually one value; none for a blank line; several when a client put several
    objects on one line. What is not JSON ends the list as a :class:`BadLine`
    carrying QEMU's description ("JSON parse error, ...").
    """
    try:
        return [orjson.loads(line)]
    except orjson.JSONDecodeError:
        pass
    if not line.strip():
        return []
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return [BadLine("JSON parse error, invalid UTF-8 sequence in string")]
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, end = 0, len(text)
    try:
        while True:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos == end:
                return values
            value, pos = decoder.raw_decode(text, pos)
            values.append(value)
    except json.JSONDecodeError as exc:
        values.append(BadLine(f"JSON parse error, {exc.msg.lower()}"))
        return values
