"""The schema model: what one QEMU offers over QMP, built from its introspection.

:class:`Schema` is the return value of ``query-qmp-schema`` (a list of SchemaInfo
objects, described in QEMU's ``qapi/introspect.json``) parsed into tables, with the
queries a caller asks of them: which commands, events, arguments and enum values this
QEMU has, and a human-readable description of each type. :meth:`Schema.validate` hands
the checking of arguments to :mod:`qmplex.schema.validate`. Nothing here talks to QEMU
or keeps state outside the instance.

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

A :class:`Schema` is never changed after it is built (its description memo only fills
in), so one instance may be shared by many clients and threads (see the process-wide
cache of :func:`~qmplex.schema.load_schema`). :mod:`qmplex.schema.validate` reads the
tables (``_meta``, ``_objects``, ...) directly: they are private to this package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolError, ValidationError, excerpt
from .validate import KIND_NAMES, is_free_form, suggest, validate_arguments

if TYPE_CHECKING:
    from ..core.messages import QMPVersion

__all__ = ["Argument", "Schema"]

# Human-readable names of builtin JSON types (the QAPI spelling users know).
_BUILTIN_NAMES = {**KIND_NAMES, "value": "any"}


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

    Build one with :meth:`from_introspection` (or :func:`~qmplex.schema.load_schema` from a client).
    All names are wire names (``"blockdev-add"``, ``"node-name"``).

    Attributes:
        version: the QEMU version the schema came from, when known.
    """

    __slots__ = ("version", "_meta", "_builtins", "_enums", "_arrays", "_alternates",
                 "_objects", "_commands", "_events", "_describe_memo", "command_names",
                 "event_names")

    version: QMPVersion | None
    #: Every command name (for :func:`~qmplex.names.wire_name`'s ``candidates``).
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
        """A short description for logs and debugging (not a stable format)."""
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

    def is_free_form(self, command: str) -> bool:
        """Return True if ``command`` takes arguments that introspection does not list.

        ``device_add`` (every device property), and ``object-add`` and ``netdev_add``
        while their arguments are not a union (``object-add`` before QEMU 6.0,
        ``netdev_add`` before 5.0): QEMU declares them ``'gen': false`` and passes the
        other arguments on to the object's or device's property parser, which spells
        property names its own way (``host_mtu``, ``scsi-id``). Validation lets such
        arguments through, and :class:`~qmplex.schema.Call` sends their names as given.
        """
        return is_free_form(self, command)

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
                                  f"{suggest(command, self._commands)}")
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
        validate_arguments(self, command, arguments)
