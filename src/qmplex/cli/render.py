"""How the ``qmplex`` command prints: results as pretty (optionally coloured) JSON,
events as QEMU sent them or as one line in the shell, errors as ``CLASS: desc``, and
the demo's report.

Pure formatting: functions of their arguments that return text (only
:func:`use_colour` looks at the stream and the environment).
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from ..errors import CommandError
from ..events import Event

if TYPE_CHECKING:
    from .demo import DemoResult

__all__ = [
    "demo_report",
    "error_text",
    "event_line",
    "event_to_json",
    "render_json",
    "use_colour",
]

_RESET = "\x1b[0m"
_KEY = "\x1b[1;34m"
_STRING = "\x1b[32m"
_NUMBER = "\x1b[36m"
_LITERAL = "\x1b[35m"
_EVENT = "\x1b[1;33m"


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def render_json(value: Any, colour: bool = False) -> str:
    """Format ``value`` as pretty JSON (2-space indent, keys in QMP's order).

    Args:
        value: any JSON value.
        colour: add ANSI colours (keys, strings, numbers, literals).

    Returns:
        The text, without a trailing newline.
    """
    if not colour:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    parts: list[str] = []
    _render(value, 0, parts)
    return "".join(parts)


def _render(value: Any, level: int, out: list[str]) -> None:
    indent = 2
    pad = " " * (indent * (level + 1))
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{\n")
        for n, (key, item) in enumerate(value.items()):
            out.append(f"{pad}{_KEY}{_dump(str(key))}{_RESET}: ")
            _render(item, level + 1, out)
            out.append(",\n" if n + 1 < len(value) else "\n")
        out.append(" " * (indent * level) + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        out.append("[\n")
        for n, item in enumerate(value):
            out.append(pad)
            _render(item, level + 1, out)
            out.append(",\n" if n + 1 < len(value) else "\n")
        out.append(" " * (indent * level) + "]")
    elif isinstance(value, str):
        out.append(f"{_STRING}{_dump(value)}{_RESET}")
    elif value is None or isinstance(value, bool):
        out.append(f"{_LITERAL}{_dump(value)}{_RESET}")
    else:
        out.append(f"{_NUMBER}{_dump(value)}{_RESET}")


def event_to_json(event: Event) -> dict[str, Any]:
    """Return ``event`` as QEMU sent it: ``{"timestamp": {...}, "event": ..., "data": ...}``.

    The timestamp is rebuilt from :attr:`Event.timestamp` (to the microsecond).
    """
    return event.to_message()


def use_colour(choice: str, stream: TextIO) -> bool:
    """Whether to colour output to ``stream`` for ``--color choice`` (``auto``: a
    terminal, unless ``NO_COLOR`` is set)."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def error_text(exc: BaseException) -> str:
    """``CLASS: desc`` for a QMP error, ``Kind: message`` for the others."""
    if isinstance(exc, CommandError):
        return f"{exc.error_class}: {exc.desc}"
    return f"{type(exc).__name__}: {exc}"


def event_line(event: Event, colour: bool = False) -> str:
    """One line for an event in the shell: ``[HH:MM:SS.mmm] NAME {data}`` (local time)."""
    when = datetime.datetime.fromtimestamp(event.timestamp).strftime("%H:%M:%S.%f")[:-3]
    data = _dump(event.data)
    if colour:
        return f"[{when}] {_EVENT}{event.name}{_RESET} {data}"
    return f"[{when}] {event.name} {data}"


def demo_report(result: DemoResult) -> str:
    """The demo's result for people: the backend, then each phase's time and rate."""
    lines = [f"backend: {result.backend_description}"]
    for phase in result.phases:
        rate = f" ({phase.commands / phase.seconds:,.0f} commands/s)" \
            if phase.commands and phase.seconds > 0 else ""
        what = f"{phase.commands} commands" if phase.commands else ""
        lines.append(f"{phase.name + ':':<8} {phase.seconds:8.3f} s  {what}{rate}".rstrip())
    lines.append(f"{'total:':<8} {result.total_seconds:8.3f} s  "
                 f"{result.disks} disks plugged and unplugged")
    return "\n".join(lines) + "\n"
