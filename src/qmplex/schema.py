"""QMP introspection: what one QEMU offers, argument validation, and ``client.call``.

This layer turns the return value of ``query-qmp-schema`` (a list of SchemaInfo objects,
described in QEMU's ``qapi/introspect.json``) into a :class:`Schema`. A schema answers
which commands, events, arguments and enum values a QEMU has, and checks a command's
arguments before anything is sent. The module also maps Python spellings to QMP's
(``blockdev_add`` -> ``blockdev-add``, with :mod:`qmplex.names`) and provides the
dynamic namespace behind ``client.call``. It never touches sockets: :func:`load_schema` and
:class:`CallNamespace` go through ``Client.execute``.

Theory of operation
-------------------
Introspection describes every entity by a SchemaInfo with a ``meta-type``:

- ``command``: ``arg-type``, ``ret-type``, ``allow-oob``; ``event``: ``arg-type``;
- ``object``: ``members`` (``name``, ``type``; a ``default`` key, always null, marks an
  optional member) and, for a union, ``tag`` (the discriminator member) and
  ``variants`` (``case`` -> the type whose members are added for that tag value);
- ``enum``: ``members`` (QEMU >= 6.2) or ``values`` (older); ``array``:
  ``element-type``; ``alternate``: ``members`` (``type`` only; one JSON type each);
- ``builtin``: ``json-type``, one of string, number, int, boolean, null, object,
  array, value (anything).

Type names other than builtins are masked ("0", "1", ...): they differ between QEMU
builds, so they are only followed, never shown. Commands and events keep real names.

Validation is conservative: it rejects only what QEMU rejects too. A type it cannot
resolve, an ``any`` value, and the extra properties of ``device_add`` (declared
``'gen': false`` in QEMU, so introspection lists only ``driver``, ``bus`` and ``id``
while QEMU passes every other argument on as a device property) all pass. The first
problem found raises :class:`~qmplex.errors.ValidationError`, whose message names the
command, the argument (a dotted path such as ``file.filename`` or
``capabilities[0].state`` for nested values) and what was expected.

A :class:`Schema` is never changed after it is built, so one instance may be shared by
many clients and threads (see the process-wide cache of :func:`load_schema`).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import CommandError, ProtocolError, ValidationError, excerpt
from .futures import Future
from .names import UNDERSCORE_ARGUMENTS, UNDERSCORE_COMMANDS, python_name, wire_name

if TYPE_CHECKING:
    from .events import EventFilter
    from .protocol import QMPVersion
    from .reactor import Reactor

__all__ = [
    "Argument",
    "CallNamespace",
    "Call",
    "Schema",
    "SchemaClient",
    "SCHEMA_CACHE_ENTRIES",
    "UNDERSCORE_ARGUMENTS",
    "UNDERSCORE_COMMANDS",
    "clear_schema_cache",
    "load_schema",
    "loaded_schema",
    "python_name",
    "wire_command",
    "wire_name",
]

# Commands whose arguments introspection does not fully describe: QEMU declares them
# 'gen': false and hands every argument to its own parser. device_add passes unknown
# arguments on as device properties. netdev_add and object-add were like that before
# they became boxed unions (QEMU 5.0 and 6.0): they count as open only while their
# argument type is not a union, so a 7.2 schema checks them fully.
_OPEN_COMMANDS = frozenset({"device_add"})
_OPEN_UNLESS_UNION = frozenset({"netdev_add", "object-add"})

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

# The JSON kinds a value may have, named like introspection's json-type.
_ALL_KINDS = frozenset({"string", "number", "int", "boolean", "null", "object", "array"})
_KINDS_OF_JSON_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "int": frozenset({"int"}),
    "number": frozenset({"int", "number"}),  # QMP's number takes integers too
    "boolean": frozenset({"boolean"}),
    "null": frozenset({"null"}),
    "object": frozenset({"object"}),
    "array": frozenset({"array"}),
    "value": _ALL_KINDS,
}
# Human-readable names of builtin JSON types (the QAPI spelling users know).
_BUILTIN_NAMES = {
    "string": "str",
    "int": "int",
    "number": "number",
    "boolean": "bool",
    "null": "null",
    "object": "object",
    "array": "array",
    "value": "any",
}
_KIND_NAMES = {
    "string": "str",
    "int": "int",
    "number": "number",
    "boolean": "bool",
    "null": "null",
    "object": "object",
    "array": "array",
}

#: The most schemas :func:`load_schema` keeps in its process-wide cache.
SCHEMA_CACHE_ENTRIES = 16
_MEMO_ATTR = "_schema_load"  # per-connection memo on the client (see load_schema)


def _kind(value: object) -> str:
    """Return the JSON kind of a Python value (introspection's json-type names)."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _show(value: object) -> str:
    """Describe a value for an error message: its JSON kind and a bounded repr."""
    kind = _kind(value)
    name = _KIND_NAMES.get(kind, kind)
    if kind in ("object", "array", "null"):
        return name
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _suggest(word: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest of ``choices``, or ""."""
    pool = list(choices)
    close = difflib.get_close_matches(word, pool, n=3, cutoff=0.6)
    if not close:  # a Python spelling of a wire name: compare with "_" for "-"
        alias = {python_name(c): c for c in pool}
        close = [alias[c] for c in difflib.get_close_matches(python_name(word), alias, n=3,
                                                             cutoff=0.6)]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class _Invalid(Exception):
    """Internal: one validation problem at ``path`` (turned into ValidationError)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


# ---------------------------------------------------------------------------- schema
@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a command, as :meth:`Schema.arguments` reports it.

    Attributes:
        name: the wire name, e.g. ``"node-name"``.
        type: a human-readable type: ``"str"``, ``"int"``, ``"number"``, ``"bool"``,
            ``"null"``, ``"any"``, ``"object"``, ``"array of X"``,
            ``"enum (a|b|c)"``, or members of an alternate joined by ``" or "``.
        required: False if the argument may be left out.
    """

    name: str
    type: str
    required: bool


@dataclass(frozen=True, slots=True)
class _Member:
    type: str
    required: bool


@dataclass(frozen=True, slots=True)
class _Object:
    members: dict[str, _Member]
    tag: str | None
    variants: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Command:
    arg_type: str
    ret_type: str
    allow_oob: bool
    arguments: frozenset[str]  # top-level names, base and every variant


def _malformed(what: str, entry: object) -> ProtocolError:
    return ProtocolError(f"query-qmp-schema: {what}",
                         excerpt=excerpt(repr(entry).encode("utf-8", "replace")))


class Schema:
    """What one QEMU offers over QMP, from its ``query-qmp-schema`` introspection.

    Build one with :meth:`from_introspection` (or :func:`load_schema` from a client).
    All names are wire names (``"blockdev-add"``, ``"node-name"``).

    Attributes:
        version: the QEMU version the schema came from, when known.
    """

    __slots__ = ("version", "_meta", "_builtins", "_enums", "_arrays", "_alternates",
                 "_objects", "_commands", "_events", "_describe_memo", "command_names",
                 "event_names")

    version: QMPVersion | None
    #: Every command name (for :func:`wire_name`'s ``candidates``).
    command_names: frozenset[str]
    #: Every event name.
    event_names: frozenset[str]

    def __init__(self) -> None:
        # Use from_introspection(); this makes an empty schema.
        self.version = None
        self._meta: dict[str, str] = {}
        self._builtins: dict[str, str] = {}
        self._enums: dict[str, tuple[str, ...]] = {}
        self._arrays: dict[str, str] = {}
        self._alternates: dict[str, tuple[str, ...]] = {}
        self._objects: dict[str, _Object] = {}
        self._commands: dict[str, _Command] = {}
        self._events: dict[str, str | None] = {}
        self._describe_memo: dict[str, str] = {}
        self.command_names = frozenset()
        self.event_names = frozenset()

    def __repr__(self) -> str:
        version = f" {self.version}" if self.version is not None else ""
        return (f"<Schema{version}: {len(self._commands)} commands, "
                f"{len(self._events)} events>")

    @classmethod
    def from_introspection(
        cls, info: Sequence[Mapping[str, Any]], *, version: QMPVersion | None = None
    ) -> Schema:
        """Build a schema from the return value of ``query-qmp-schema``.

        Args:
            info: the list of SchemaInfo objects.
            version: the QEMU version it came from (kept as :attr:`version`).

        Returns:
            The schema. Entities of an unknown ``meta-type`` are ignored.

        Raises:
            ProtocolError: ``info`` is not a list of SchemaInfo objects (with an
                excerpt of the offending entry).
        """
        if not isinstance(info, (list, tuple)):
            raise _malformed("the schema is not a list", info)
        self = cls()
        self.version = version
        raw_commands: list[tuple[str, Mapping[str, Any]]] = []
        try:
            for entry in info:
                name = entry["name"]
                meta = entry["meta-type"]
                if not isinstance(name, str) or not isinstance(meta, str):
                    raise _malformed("name and meta-type must be strings", entry)
                if meta == "command":
                    raw_commands.append((name, entry))
                    continue
                if meta == "event":
                    self._events[name] = entry.get("arg-type")
                    continue
                self._meta[name] = meta
                if meta == "builtin":
                    self._builtins[name] = entry["json-type"]
                elif meta == "enum":
                    if "members" in entry:
                        values = tuple(m["name"] for m in entry["members"])
                    else:
                        values = tuple(entry["values"])
                    self._enums[name] = values
                elif meta == "array":
                    self._arrays[name] = entry["element-type"]
                elif meta == "alternate":
                    self._alternates[name] = tuple(m["type"] for m in entry["members"])
                elif meta == "object":
                    members = {
                        m["name"]: _Member(m["type"], "default" not in m)
                        for m in entry["members"]
                    }
                    variants = {v["case"]: v["type"] for v in entry.get("variants", ())}
                    self._objects[name] = _Object(members, entry.get("tag"), variants)
        except ProtocolError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise _malformed(f"malformed SchemaInfo ({exc!r})", entry) from exc
        for name, entry in raw_commands:
            arg_type = entry.get("arg-type", "")
            self._commands[name] = _Command(
                arg_type, entry.get("ret-type", ""), bool(entry.get("allow-oob", False)),
                frozenset(self._all_member_names(arg_type)))
        self.command_names = frozenset(self._commands)
        self.event_names = frozenset(self._events)
        return self

    def _all_member_names(self, type_name: str) -> set[str]:
        """Member names of an object type, its variants' included (recursively)."""
        names: set[str] = set()
        todo = [type_name]
        seen: set[str] = set()
        while todo:
            t = todo.pop()
            obj = self._objects.get(t)
            if obj is None or t in seen:
                continue
            seen.add(t)
            names.update(obj.members)
            todo.extend(obj.variants.values())
        return names

    # ----------------------------------------------------------------- queries
    def has_command(self, name: str) -> bool:
        """Return True if this QEMU has the command ``name`` (wire spelling)."""
        return name in self._commands

    def has_event(self, name: str) -> bool:
        """Return True if this QEMU may emit the event ``name`` (e.g. ``"DEVICE_DELETED"``)."""
        return name in self._events

    def commands(self) -> list[str]:
        """Return every command name, sorted."""
        return sorted(self._commands)

    def events(self) -> list[str]:
        """Return every event name, sorted."""
        return sorted(self._events)

    def allows_oob(self, command: str) -> bool:
        """Return True if ``command`` may be sent out of band (``exec-oob``)."""
        info = self._commands.get(command)
        return info is not None and info.allow_oob

    def has_argument(self, command: str, argument: str) -> bool:
        """Return True if ``command`` takes ``argument``.

        Args:
            command: a command name.
            argument: a wire argument name, or a dotted path into nested objects
                (``"file.filename"`` for ``blockdev-add``). The members of every union
                variant count, and arrays are stepped through (``"capabilities.state"``).
        """
        return self._resolve(command, argument) is not None

    def argument_names(self, command: str) -> frozenset[str]:
        """Return every top-level argument name of ``command`` (of every union variant).

        Raises:
            ValidationError: ``command`` is unknown.
        """
        return self._command(command).arguments

    def has_enum_value(self, where: str | tuple[str, str], value: str) -> bool:
        """Return True if ``value`` is a valid value of an enum.

        Args:
            where: a type name of this schema (masked names like ``"291"`` work, as do
                unmasked ones), or a ``(command, argument)`` pair where the argument may
                be a dotted path, e.g. ``("blockdev-add", "driver")``. Arrays and
                alternates are looked through.
            value: the candidate value.

        Returns:
            False also when ``where`` does not lead to an enum.
        """
        if isinstance(where, tuple):
            type_name = self._resolve(*where)
        else:
            type_name = where if where in self._meta else None
        return type_name is not None and self._enum_has(type_name, value, set())

    def _enum_has(self, type_name: str, value: str, seen: set[str]) -> bool:
        if type_name in seen:
            return False
        seen.add(type_name)
        if type_name in self._enums:
            return value in self._enums[type_name]
        if type_name in self._arrays:
            return self._enum_has(self._arrays[type_name], value, seen)
        return any(self._enum_has(m, value, seen) for m in self._alternates.get(type_name, ()))

    def arguments(self, command: str, *, variant: str | None = None) -> list[Argument]:
        """Return the arguments of ``command``, in schema order.

        Args:
            command: a command name.
            variant: for a command whose arguments are a union (``blockdev-add``,
                ``object-add``, ...), the tag value whose variant members to add, e.g.
                ``"file"``; by default only the common members are listed.

        Returns:
            The arguments; empty for a command that takes none (or takes any object).

        Raises:
            ValidationError: ``command`` is unknown, or ``variant`` is not a case of its
                union.
        """
        info = self._command(command)
        obj = self._objects.get(info.arg_type)
        if obj is None:
            return []
        out = [Argument(n, self.describe(m.type), m.required) for n, m in obj.members.items()]
        if variant is not None:
            case = obj.variants.get(variant)
            if case is None:
                cases = ", ".join(obj.variants) or "none"
                raise ValidationError(f"{command}: {variant!r} is not a variant "
                                      f"(variants: {cases})")
            sub = self._objects.get(case)
            if sub is not None:
                out += [Argument(n, self.describe(m.type), m.required)
                        for n, m in sub.members.items()]
        return out

    def describe(self, type_name: str) -> str:
        """Return a human-readable description of a type (see :class:`Argument`)."""
        memo = self._describe_memo.get(type_name)
        if memo is None:
            memo = self._describe(type_name, 0)
            self._describe_memo[type_name] = memo  # benign race: same value
        return memo

    def _describe(self, type_name: str, depth: int) -> str:
        meta = self._meta.get(type_name)
        if meta is None or depth > 8:
            return "any"
        if meta == "builtin":
            return _BUILTIN_NAMES.get(self._builtins[type_name], "any")
        if meta == "enum":
            return "enum (" + "|".join(self._enums[type_name]) + ")"
        if meta == "array":
            return "array of " + self._describe(self._arrays[type_name], depth + 1)
        if meta == "alternate":
            return " or ".join(self._describe(m, depth + 1)
                               for m in self._alternates[type_name])
        if meta == "object":
            return "object"
        return "any"

    def _command(self, command: str) -> _Command:
        info = self._commands.get(command)
        if info is None:
            raise ValidationError(f"{command}: unknown command"
                                  f"{_suggest(command, self._commands)}")
        return info

    def _resolve(self, command: str, path: str) -> str | None:
        """Follow a dotted argument path; return the type name at its end, or None."""
        info = self._commands.get(command)
        if info is None:
            return None
        current = [info.arg_type]
        for part in path.split("."):
            found: list[str] = []
            for t in self._containers(current):
                found.extend(self._member_types(t, part))
            if not found:
                return None
            current = found
        return current[0]

    def _member_types(self, type_name: str, name: str, depth: int = 0) -> list[str]:
        """The types of member ``name`` of an object, in its base or any variant."""
        out: list[str] = []
        obj = self._objects.get(type_name)
        if obj is None or depth > 8:
            return out
        if name in obj.members:
            out.append(obj.members[name].type)
        for case in obj.variants.values():
            out.extend(self._member_types(case, name, depth + 1))
        return out

    def _containers(self, types: list[str]) -> list[str]:
        """The object types reachable from ``types`` through arrays and alternates."""
        out: list[str] = []
        todo = list(types)
        seen: set[str] = set()
        while todo:
            t = todo.pop(0)
            if t in seen:
                continue
            seen.add(t)
            if t in self._objects:
                out.append(t)
            elif t in self._arrays:
                todo.append(self._arrays[t])
            elif t in self._alternates:
                todo.extend(self._alternates[t])
        return out

    # -------------------------------------------------------------- validation
    def validate(self, command: str, arguments: Mapping[str, Any] | None) -> None:
        """Check ``arguments`` against what ``command`` accepts, before sending.

        Checks, recursively through nested objects, arrays, alternates and unions
        (the tag's value selects the variant whose members are added): unknown command,
        unknown argument, missing required argument, wrong JSON type (``number`` takes
        int and float, ``any`` takes everything, an alternate takes any of its members'
        types), and enum values.

        Args:
            command: the command's wire name.
            arguments: its arguments (None for none).

        Raises:
            ValidationError: the first problem found, e.g.
                ``"blockdev-add: file.filename: missing required argument (expected
                str)"``; unknown commands come with close names
                (``"blockdev_ad: unknown command (did you mean 'blockdev-add'?)"``).
        """
        info = self._command(command)
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, Mapping):
            raise ValidationError(f"{command}: arguments must be an object (a mapping), "
                                  f"got {_show(arguments)}")
        meta = self._meta.get(info.arg_type)
        if meta != "object":
            return  # 'any' (or unresolvable) arguments: QEMU decides
        obj = self._objects[info.arg_type]
        open_ = command in _OPEN_COMMANDS or (command in _OPEN_UNLESS_UNION
                                             and obj.tag is None)
        try:
            self._check_object(info.arg_type, arguments, "", open_)
        except _Invalid as exc:
            where = f"{exc.path}: " if exc.path else ""
            raise ValidationError(f"{command}: {where}{exc.problem}") from None

    def _check(self, type_name: str, value: Any, path: str) -> None:
        meta = self._meta.get(type_name)
        if meta is None:
            return  # unknown type: do not guess
        if meta == "builtin":
            kinds = _KINDS_OF_JSON_TYPE.get(self._builtins[type_name], _ALL_KINDS)
            if _kind(value) not in kinds:
                raise _Invalid(path, f"expected {self.describe(type_name)}, "
                                     f"got {_show(value)}")
        elif meta == "enum":
            values = self._enums[type_name]
            if not isinstance(value, str):
                raise _Invalid(path, f"expected {self.describe(type_name)}, "
                                     f"got {_show(value)}")
            if value not in values:
                raise _Invalid(path, f"{value!r} is not a valid value{_suggest(value, values)}"
                                     f"; expected one of: {', '.join(values)}")
        elif meta == "array":
            if _kind(value) != "array":
                raise _Invalid(path, f"expected {self.describe(type_name)}, "
                                     f"got {_show(value)}")
            element = self._arrays[type_name]
            for i, item in enumerate(value):
                self._check(element, item, f"{path}[{i}]")
        elif meta == "object":
            if not isinstance(value, Mapping):
                raise _Invalid(path, f"expected object, got {_show(value)}")
            self._check_object(type_name, value, path, False)
        elif meta == "alternate":
            self._check_alternate(type_name, value, path)

    def _kinds(self, type_name: str, depth: int = 0) -> frozenset[str]:
        """The JSON kinds a type accepts (for choosing an alternate's member)."""
        meta = self._meta.get(type_name)
        if meta == "builtin":
            return _KINDS_OF_JSON_TYPE.get(self._builtins[type_name], _ALL_KINDS)
        if meta == "enum":
            return _KINDS_OF_JSON_TYPE["string"]
        if meta == "array":
            return _KINDS_OF_JSON_TYPE["array"]
        if meta == "object":
            return _KINDS_OF_JSON_TYPE["object"]
        if meta == "alternate" and depth < 8:
            return frozenset().union(*(self._kinds(m, depth + 1)
                                       for m in self._alternates[type_name]))
        return _ALL_KINDS

    def _check_alternate(self, type_name: str, value: Any, path: str) -> None:
        kind = _kind(value)
        matching = [m for m in self._alternates[type_name] if kind in self._kinds(m)]
        if not matching:
            raise _Invalid(path, f"expected {self.describe(type_name)}, got {_show(value)}")
        first: _Invalid | None = None
        for member in matching:
            try:
                self._check(member, value, path)
                return
            except _Invalid as exc:
                if first is None:
                    first = exc
        assert first is not None
        raise first

    def _check_object(self, type_name: str, value: Mapping[str, Any], path: str,
                      open_: bool) -> None:
        members, variant = self._members_for(type_name, value, path)
        if not open_:
            for key in value:
                if not isinstance(key, str):
                    raise _Invalid(path, f"argument names must be strings, got {key!r}")
                if key not in members:
                    where = f" (with {variant})" if variant else ""
                    raise _Invalid(_join(path, key),
                                   f"unknown argument{_suggest(key, members)}; "
                                   f"expected one of{where}: {', '.join(members) or '(none)'}")
        for name, member in members.items():
            if member.required and name not in value:
                raise _Invalid(_join(path, name), f"missing required argument "
                                                  f"(expected {self.describe(member.type)})")
        for name, item in value.items():
            found = members.get(name)
            if found is not None:
                self._check(found.type, item, _join(path, name))

    def _members_for(self, type_name: str, value: Mapping[str, Any],
                     path: str) -> tuple[dict[str, _Member], str]:
        """The members an object value may have: the base and its tag's variant.

        Returns the members and a description of the selected variant ("" for none).
        """
        obj = self._objects[type_name]
        if obj.tag is None:
            return obj.members, ""
        tag = obj.members.get(obj.tag)
        if obj.tag not in value:
            if tag is not None and tag.required:
                raise _Invalid(_join(path, obj.tag), f"missing required argument "
                                                     f"(expected {self.describe(tag.type)})")
            return obj.members, ""
        choice = value[obj.tag]
        if tag is not None:
            self._check(tag.type, choice, _join(path, obj.tag))
        members = dict(obj.members)
        description = f"{obj.tag} {choice!r}"
        case = obj.variants.get(choice) if isinstance(choice, str) else None
        if case is not None and case in self._objects:
            sub, inner = self._members_for(case, value, path)
            members.update(sub)
            if inner:
                description += f", {inner}"
        return members, description


# ----------------------------------------------------------------- wire_command
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


# -------------------------------------------------------------- client.call
class SchemaClient(Protocol):
    """What this module needs of a client (``qmplex.Client`` has it)."""

    @property
    def reactor(self) -> Reactor | None:
        """The reactor the client's futures complete on."""
        ...

    @property
    def version(self) -> QMPVersion | None:
        """The peer's version from its greeting (None before the greeting)."""
        ...

    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        oob: bool = False,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        """Submit a QMP command (see :meth:`qmplex.Client.execute`)."""
        ...


class Call:
    """One command of :class:`CallNamespace`, ready to be called.

    Calling it validates (when a schema is loaded) and submits the command::

        client.call.blockdev_add(driver="null-co", node_name="b0", _timeout=5)
        client.call["query-status"]()
        client.call.object_add({"qom-type": "iothread", "id": "io0"})

    Arguments:

    - keyword arguments are top-level QMP arguments in Python spelling:
      ``node_name`` is sent as ``node-name``, unless the command spells it with ``_``
      (e.g. ``block_set_io_throttle``'s ``bps_rd``); a keyword gets a trailing ``_``
      (``if_``). Values, nested objects included, are sent as given: their keys are
      never renamed.
    - one optional positional mapping holds arguments in exact wire spelling (merged
      with the keywords; a name given both ways is an error).
    - options of :meth:`Client.execute` take a leading underscore, because no QMP
      name can start with one (QAPI names start with a letter) while plain names
      collide: ``blockdev-add`` has a ``timeout`` argument (http driver) and
      ``netdev_add`` has ``fds`` (tap). They are ``_timeout``, ``_until``, ``_oob`` and
      ``_fds``.

    Attributes:
        name: the command's wire name.
    """

    __slots__ = ("_client", "_schema", "name")

    def __init__(self, client: SchemaClient, schema: Schema | None, name: str) -> None:
        self._client = client
        self._schema = schema
        self.name = name

    def __repr__(self) -> str:
        return f"<qmplex call {self.name!r}>"

    @property
    def arguments(self) -> list[Argument]:
        """The command's arguments per the schema (empty without a schema).

        Raises:
            ValidationError: the schema does not have this command.
        """
        return [] if self._schema is None else self._schema.arguments(self.name)

    def __call__(
        self,
        arguments: Mapping[str, Any] | None = None,
        /,
        *,
        _timeout: float | None = None,
        _until: EventFilter | None = None,
        _oob: bool = False,
        _fds: Sequence[int] = (),
        **kwargs: Any,
    ) -> Future[Any]:
        """Validate and submit the command; see the class docstring.

        Returns:
            The future of :meth:`Client.execute`.

        Raises:
            ValidationError: the schema rejects the command or its arguments (nothing
                is sent), or an argument is given twice, or ``_oob`` is set for a
                command the schema does not allow out of band.
            TypeError: an unknown ``_``-prefixed option.
            StateError: as :meth:`Client.execute`.
        """
        name = self.name
        schema = self._schema
        args: dict[str, Any] = {}
        if arguments is not None:
            if not isinstance(arguments, Mapping):
                raise ValidationError(f"{name}: the positional argument must be a mapping "
                                      f"of wire names to values, got {_show(arguments)}")
            args.update(arguments)
        if kwargs:
            known: Collection[str] | None = None
            if schema is not None and schema.has_command(name):
                known = schema.argument_names(name)
            for key, value in kwargs.items():
                if key.startswith("_"):
                    raise TypeError(f"{python_name(name)}() got an unknown option {key!r} "
                                    "(options: _timeout, _until, _oob, _fds)")
                wire = wire_name(key, known)
                if wire in args:
                    raise ValidationError(f"{name}: {wire}: argument given twice")
                args[wire] = value
        if schema is not None:
            schema.validate(name, args)
            if _oob and not schema.allows_oob(name):
                raise ValidationError(f"{name}: cannot be sent out of band "
                                      "(the schema does not allow OOB for it)")
        return self._client.execute(name, args or None, timeout=_timeout, until=_until,
                                    oob=_oob, fds=_fds)


class CallNamespace:
    """Every QMP command as an attribute: ``client.call.<python_name>(...)``.

    ``client.call.blockdev_add(driver="null-co", node_name="b0")`` runs
    ``execute("blockdev-add", {"driver": "null-co", "node-name": "b0"})`` after
    validating it against the schema; ``client.call["query-status"]()`` names a command
    exactly. See :class:`Call` for the argument rules and the ``_timeout`` option.

    Without a schema (none loaded yet) names are mapped by :func:`wire_name`'s rules
    and nothing is validated: QEMU then reports the errors.

    Args:
        client: the client to execute on.
        schema: its peer's schema, or None.
    """

    __slots__ = ("_client", "_schema")

    def __init__(self, client: SchemaClient, schema: Schema | None) -> None:
        self._client = client
        self._schema = schema

    @property
    def schema(self) -> Schema | None:
        """The schema used for names and validation (None: none loaded)."""
        return self._schema

    def __getattr__(self, name: str) -> Call:
        if name.startswith("_"):  # dunder probes (copy, pickle, IPython) are not commands
            raise AttributeError(name)
        schema = self._schema
        wire = wire_name(name, schema.command_names if schema is not None else None)
        return Call(self._client, schema, wire)

    def __getitem__(self, name: str) -> Call:
        return Call(self._client, self._schema, name)

    def __dir__(self) -> list[str]:
        names = set(object.__dir__(self))
        if self._schema is not None:
            names.update(python_name(c) for c in self._schema.command_names)
        return sorted(names)

    def __repr__(self) -> str:
        return f"<qmplex CallNamespace schema={self._schema!r}>"


# ----------------------------------------------------------------- loading
_cache: dict[tuple[int, int, int, str, str], Schema] = {}
# The cache is the only state shared between reactors (threads); the lock guards the
# eviction's read-then-delete.
_cache_lock = threading.Lock()


def clear_schema_cache() -> None:
    """Forget every schema in :func:`load_schema`'s process-wide cache."""
    with _cache_lock:
        _cache.clear()


def _cache_get(key: tuple[int, int, int, str, str]) -> Schema | None:
    with _cache_lock:
        return _cache.get(key)


def _cache_put(key: tuple[int, int, int, str, str], schema: Schema) -> None:
    with _cache_lock:
        while len(_cache) >= SCHEMA_CACHE_ENTRIES:
            del _cache[next(iter(_cache))]
        _cache[key] = schema


def _version_key(version: QMPVersion | None) -> tuple[int, int, int, str] | None:
    if version is None:
        return None
    return (version.major, version.minor, version.micro, version.package)


def _memo(client: SchemaClient) -> Future[Schema] | None:
    """The client's schema load, if it still applies to the current connection."""
    fut: Future[Schema] | None = getattr(client, _MEMO_ATTR, None)
    if fut is None or not fut.done():
        return fut  # a load still running belongs to this connection
    if fut.cancelled() or fut.exception() is not None:
        return None  # retry
    if _version_key(fut.result().version) != _version_key(client.version):
        return None  # a new connection to another QEMU, and Client did not reset us
    return fut


def loaded_schema(client: SchemaClient) -> Schema | None:
    """Return the schema :func:`load_schema` loaded on this connection, if done.

    Returns:
        The schema, or None while it loads, if loading failed, or if it was never
        requested.
    """
    fut = _memo(client)
    if fut is None or not fut.done():
        return None
    return fut.result()


def load_schema(client: SchemaClient, *, cache: bool = True) -> Future[Schema]:
    """Load the schema of the client's peer with ``query-qmp-schema``.

    Runs once per connection: calls while it loads, or after it loaded, return the
    same future. The client keeps it in its ``_schema_load`` attribute, which
    ``Client`` resets to None on each connect; a loaded schema whose version is not
    the peer's is ignored as well. A failed or cancelled load is retried by the next
    call. Cancelling the returned future cancels the load for every caller sharing it.

    With ``cache=True`` schemas are also shared across connections in this process,
    keyed by QEMU version, package string and target architecture (``query-target``,
    one short round trip): the package string alone does not tell apart the
    qemu-system-* binaries of one distribution package, and their schemas differ. A
    peer with an empty package string (a local build, whose configuration the version
    does not pin down) is never cached; pass ``cache=False`` for other builds that
    share a version and package string but not a configuration.

    Args:
        client: a connected (or connecting) client.
        cache: use and fill the process-wide cache.

    Returns:
        A future for the :class:`Schema`; it fails like :meth:`Client.execute`, or with
        :class:`~qmplex.errors.ProtocolError` if the reply is not a schema.
    """
    fut = _memo(client)
    if fut is None:
        fut = _load_cached(client) if cache else _fetch(client, None)
        setattr(client, _MEMO_ATTR, fut)
    return fut


def _fetch(client: SchemaClient,
           key: tuple[int, int, int, str, str] | None) -> Future[Schema]:
    def build(info: Any) -> Schema:
        schema = Schema.from_introspection(info, version=client.version)
        if key is not None:
            _cache_put(key, schema)
        return schema

    return client.execute("query-qmp-schema").then(build)


def _load_cached(client: SchemaClient) -> Future[Schema]:
    out: Future[Schema] = Future(client.reactor)
    target = client.execute("query-target")

    def forward(f: Future[Schema]) -> None:
        if out.done():
            return
        exc = f.exception()
        if f.cancelled():
            out.cancel()
        elif exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    def on_target(f: Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
            return
        exc = f.exception()
        key: tuple[int, int, int, str, str] | None = None
        if exc is None:
            reply = f.result()
            version = client.version
            arch = reply.get("arch") if isinstance(reply, Mapping) else None
            if version is not None and version.package and isinstance(arch, str):
                key = (version.major, version.minor, version.micro, version.package, arch)
                hit = _cache_get(key)
                if hit is not None:
                    out.set_result(hit)
                    return
        elif not isinstance(exc, CommandError):
            out.set_exception(exc)  # connection lost, timeout ...: no schema either
            return
        # A peer without query-target (a CommandError) is loaded but not cached.
        nxt = _fetch(client, key)
        out._set_cancel_hook(nxt.cancel)
        nxt.add_done_callback(forward)

    out._set_cancel_hook(target.cancel)
    target.add_done_callback(on_target)
    return out

