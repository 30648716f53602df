"""What the shell knows about the connected QEMU's commands: the catalog (names,
arguments, their types and enum values), TAB completion over it, and ``help`` text.

The catalog comes from ``query-qmp-schema`` through :mod:`qmplex.schema`, or only the
names from ``query-commands`` when the peer has no schema. Everything here but
:func:`load_catalog` is a pure function of the catalog and the typed line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..client import Client
from ..errors import CommandError

if TYPE_CHECKING:
    from ..schema import Schema

__all__ = ["ArgInfo", "CommandInfo", "complete_words", "help_text", "load_catalog"]


@dataclass(frozen=True, slots=True)
class ArgInfo:
    """One argument of a command."""

    name: str
    type: str
    optional: bool
    values: tuple[str, ...] = ()  # an enum's values


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """One command and its arguments."""

    name: str
    args: tuple[ArgInfo, ...] | None  # None: unknown (no schema)
    variant_args: tuple[str, ...] = ()  # members of union variants (blockdev-add ...)


_BUILTINS = ("help", "quit", "exit")


def load_catalog(client: Client, timeout: float) -> tuple[dict[str, CommandInfo], str]:
    """Commands and their arguments from ``query-qmp-schema`` (:mod:`qmplex.schema`);
    names only, from ``query-commands``, when the peer has no schema."""
    try:
        schema = client.load_schema().result(timeout)
    except CommandError:
        names = client.execute("query-commands").result(timeout)
        return ({str(c["name"]): CommandInfo(str(c["name"]), None)
                 for c in names if isinstance(c, dict) and "name" in c}, "query-commands")
    return _catalog_from_schema(schema), "query-qmp-schema"


def _catalog_from_schema(schema: Schema) -> dict[str, CommandInfo]:
    catalog: dict[str, CommandInfo] = {}
    for name in schema.commands():
        args = []
        for a in schema.arguments(name):
            kind = a.type
            values: tuple[str, ...] = ()
            if kind.startswith("enum (") and kind.endswith(")"):
                kind, values = "enum", tuple(kind[6:-1].split("|"))
            args.append(ArgInfo(a.name, kind, not a.required, values))
        base = {a.name for a in args}
        extra = tuple(sorted(n for n in schema.argument_names(name) if n not in base))
        catalog[name] = CommandInfo(name, tuple(args), extra)
    return catalog


def complete_words(catalog: Mapping[str, CommandInfo], line: str, begidx: int,
                   text: str) -> list[str]:
    """Completion candidates for the word ``text`` at ``begidx`` in ``line``.

    The first word completes to command names (and the shell's own ``help``, ``quit``);
    the word after ``help`` to command names; later words to ``name=`` for arguments
    of the command not given yet, and after ``name=`` to the values of an enum. A
    finished word (a command, a value) carries a trailing space, ``name=`` does not.
    """
    words = line[:begidx].split()
    if not words:
        prefix = "!" if text.startswith("!") else ""
        stem = text[len(prefix):]
        names = sorted(catalog) + ([] if prefix else list(_BUILTINS))
        return [f"{prefix}{n} " for n in names if n.startswith(stem)]
    head = words[0].lstrip("!")
    if head in ("help", "?") and len(words) == 1:
        return [f"{n} " for n in sorted(catalog) if n.startswith(text)]
    info = catalog.get(head)
    if info is None or not info.args:
        return []
    if "=" in text:
        key, _, value = text.partition("=")
        arg = next((a for a in info.args if a.name == key), None)
        if arg is None:
            return []
        return [f"{key}={v} " for v in arg.values if v.startswith(value)]
    given = {w.split("=", 1)[0] for w in words[1:] if "=" in w}
    names = [a.name for a in info.args] + list(info.variant_args)
    return [f"{n}=" for n in names if n not in given and n.startswith(text)]


def help_text(catalog: Mapping[str, CommandInfo], source: str, topic: str | None) -> str:
    """The shell's ``help`` (``topic`` None) or ``help COMMAND`` text; ``source`` names
    where the catalog came from."""
    if topic is None:
        return (
            "Type a QMP command and its arguments, as key=value words or one JSON object:\n"
            "  blockdev-add driver=null-co node-name=n0\n"
            '  blockdev-add {"driver": "null-co", "node-name": "n0"}\n'
            "Shell commands: help [COMMAND], quit / exit (Ctrl-D). A line starting with\n"
            "'!' is always sent to QEMU ('!quit' stops QEMU). Events print as they arrive.\n"
            f"{len(catalog)} commands known (from {source}); TAB completes command and\n"
            "argument names."
        )
    info = catalog.get(topic)
    if info is None:
        return f"unknown command: {topic}"
    if info.args is None:
        return f"{topic}: arguments unknown (the peer has no query-qmp-schema)"
    lines = [topic + "".join(f" {a.name}=<{a.type}>" if not a.optional
                             else f" [{a.name}=<{a.type}>]" for a in info.args)]
    if info.args:
        width = max(len(a.name) for a in info.args)
        for a in info.args:
            extra = " (optional)" if a.optional else ""
            values = ""
            if a.values:
                shown = "|".join(a.values[:12]) + ("|..." if len(a.values) > 12 else "")
                values = f"  one of {shown}"
            lines.append(f"  {a.name:<{width}}  {a.type}{extra}{values}")
    elif not info.variant_args:
        lines.append("  (no arguments)")
    if info.variant_args:
        shown = ", ".join(info.variant_args[:20]) + (", ..." if len(info.variant_args) > 20
                                                      else "")
        lines.append(f"  per variant also: {shown}")
    return "\n".join(lines)
