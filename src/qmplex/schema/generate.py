"""The generator of qmplex's typed views and ``client.call`` stubs, from a QEMU schema.

Run as a module, from a checkout (the outputs are committed)::

    python -m qmplex.schema.generate tests/data/qmp-schema-11.1.3.json.gz
    python -m qmplex.schema.generate --check tests/data/qmp-schema-11.1.3.json.gz

It reads the return value of ``query-qmp-schema`` (JSON, optionally gzip-compressed)
and writes two files into the package (``--out`` names another package directory):

- ``typed/_generated_types.py``: a :class:`~qmplex.typed.View` class for the return
  value of each command and for the members' object types, an
  :class:`~qmplex.typed.EventData` class for each event, a ``Literal`` alias for each
  enum they use, and ``result()`` / ``event_data()`` with an overload per name;
- ``schema/_generated_call.pyi``: a stub that gives each attribute of
  ``client.call`` (:class:`~qmplex.schema.CallNamespace`) a signature with the
  command's arguments (names, types, which are required; one overload per variant of a
  union), for mypy only: at run time ``client.call`` is what it always was.

With ``--check`` nothing is written: the exit status is 1, with the names of the stale
files, when a file differs from what the schema gives (CI runs this, as trio's
``gen_exports --test``). The generator may also be run against another QEMU's schema
(``qmplex exec SOCK query-qmp-schema > schema.json``) with ``--out`` pointing at a copy.

Theory of operation
-------------------
Introspection masks the names of types ("0", "1", ...): only commands, events and
members keep theirs. A class is therefore named by where it is first met, in a fixed
order: the return value of each command (sorted by name) is ``<Command>Result`` (an
array's item ``<Command>Item``), the data of each event (sorted) ``<Event>Data``; then,
breadth first, the object type of a member is ``<Owner><Member>``, and a variant of a
union ``<Union><Case>``. Enums are named the same way and become ``Literal`` aliases.
The names of the first two kinds depend only on their own command or event; the others
follow the first path that reaches them, so a later schema may rename them (annotate
with the root classes, or let the type checker infer).

Member names use :func:`~qmplex.names.python_name` (a keyword gets a trailing ``_``), and
a member named like an attribute of :class:`~qmplex.typed.View` (``raw``) gets one too.
Arguments are typed at the top level only: a nested object is any mapping (its keys
in QMP spelling), an array any sequence; an enum is a ``Literal`` of its values. The
output depends only on the input: sorted names, QEMU's member order, no timestamps.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import keyword
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..names import python_name
from .validate import _OPEN_COMMANDS

__all__: list[str] = []

#: The files written, relative to the package directory.
TYPES_FILE = "typed/_generated_types.py"
CALL_STUB_FILE = "schema/_generated_call.pyi"

_LINE = 100  # ruff's line length for the package
# Attributes of View that a member must not shadow.
_VIEW_NAMES = frozenset({"raw"})
# Builtin json-types as Python types: in views (what QEMU sends) and in arguments.
_PY_TYPES = {"string": "str", "int": "int", "number": "float", "boolean": "bool",
             "null": "None", "value": "Any", "object": "dict[str, Any]",
             "array": "list[Any]"}
# Builtins that the generated classes use in their bodies, which a member may hide.
_BUILTINS = frozenset({"property", "str", "int", "float", "bool", "list", "dict"})
# Execute options of every call (the runtime Call.__call__ takes the same).
_OPTIONS = ("_timeout: float | None = ...", "_until: EventFilter | None = ...",
            "_oob: bool = ...", "_fds: Sequence[int] = ...")


class GenerateError(Exception):
    """The schema has a shape the generator does not handle (it says which)."""


def camel(name: str) -> str:
    """``query-cpus-fast`` -> ``QueryCpusFast``, ``DEVICE_DELETED`` -> ``DeviceDeleted``."""
    parts = [p for p in re.split(r"[-_.]+", name) if p]
    return "".join(p[:1].upper() + p[1:].lower() for p in parts)


def attribute_name(member: str) -> str:
    """The Python attribute of a member in a view (see the module docstring)."""
    name = python_name(member)
    if name in _VIEW_NAMES:
        name += "_"
    if not name.isidentifier() or keyword.iskeyword(name):
        raise GenerateError(f"member {member!r} has no Python spelling")
    return name


def argument_name(member: str) -> str:
    """The keyword argument of a command's argument in ``client.call``."""
    name = python_name(member)
    if not name.isidentifier() or name in ("self", "arguments"):
        raise GenerateError(f"argument {member!r} cannot be a keyword argument")
    return name


def literal(values: Iterable[str]) -> str:
    """``Literal["a", "b"]``."""
    return "Literal[" + ", ".join(json.dumps(v) for v in values) + "]"


def wrap_list(head: str, items: Sequence[str], tail: str, indent: str = "") -> list[str]:
    """``head + ", ".join(items) + tail`` on one line, or the items filled over several
    lines (indented four more, each followed by a comma) when that is too long."""
    one = f"{indent}{head}{', '.join(items)}{tail}"
    if len(one) <= _LINE:
        return [one]
    lines = [indent + head]
    inner = indent + "    "
    current = ""
    for item in items:
        piece = item + ","
        if current and len(inner) + len(current) + 1 + len(piece) > _LINE:
            lines.append(inner + current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        lines.append(inner + current)
    lines.append(indent + tail.lstrip(","))
    return lines


def docstring(text: str, indent: str) -> list[str]:
    """A one-line docstring, or a wrapped one when it does not fit."""
    one = f'{indent}"""{text}"""'
    if len(one) <= _LINE:
        return [one]
    body = textwrap.wrap(text, _LINE - len(indent) - 3)
    return [f'{indent}"""{body[0]}', *(indent + line for line in body[1:]), f'{indent}"""']


# ----------------------------------------------------------------------- the schema
@dataclass
class _Member:
    name: str
    type: str
    optional: bool


@dataclass
class _Object:
    name: str
    members: list[_Member]
    tag: str | None
    variants: list[tuple[str, str]]  # (case, type)


class _Schema:
    """The introspection's entities, by (masked) name."""

    def __init__(self, info: Sequence[Mapping[str, Any]]) -> None:
        self.meta: dict[str, str] = {}
        self.builtins: dict[str, str] = {}
        self.enums: dict[str, list[str]] = {}
        self.arrays: dict[str, str] = {}
        self.alternates: dict[str, list[str]] = {}
        self.objects: dict[str, _Object] = {}
        self.commands: dict[str, Mapping[str, Any]] = {}
        self.events: dict[str, str] = {}
        for entry in info:
            name, meta = entry["name"], entry["meta-type"]
            if meta == "command":
                self.commands[name] = entry
                continue
            if meta == "event":
                self.events[name] = entry.get("arg-type", "")
                continue
            self.meta[name] = meta
            if meta == "builtin":
                self.builtins[name] = entry["json-type"]
            elif meta == "enum":
                self.enums[name] = ([m["name"] for m in entry["members"]]
                                    if "members" in entry else list(entry["values"]))
            elif meta == "array":
                self.arrays[name] = entry["element-type"]
            elif meta == "alternate":
                self.alternates[name] = [m["type"] for m in entry["members"]]
            elif meta == "object":
                self.objects[name] = _Object(
                    name,
                    [_Member(m["name"], m["type"], "default" in m) for m in entry["members"]],
                    entry.get("tag"),
                    [(v["case"], v["type"]) for v in entry.get("variants", ())])

    def is_empty(self, type_name: str) -> bool:
        obj = self.objects.get(type_name)
        return obj is not None and not obj.members and not obj.variants


# ------------------------------------------------------------------ the typed views
@dataclass
class _Class:
    """One generated view class."""

    name: str
    type: str  # the object type it views
    base: str  # "View", "EventData" or the union's class
    origin: str  # where it was first met, for its docstring
    members: list[_Member]
    path: list[str]  # the CamelCase parts of where it was met, for its members' names
    tag: str = ""
    cases: dict[str, str] = field(default_factory=dict)  # case -> class name
    event: str = ""


class _Views:
    """Names every object and enum type that results and events reach."""

    def __init__(self, schema: _Schema) -> None:
        self.s = schema
        self.used: set[str] = {"View", "EventData", "Empty", "ListView", "EVENTS", "result",
                               "event_data"}
        self.by_type: dict[str, str] = {}  # object type -> its class (not event roots)
        self.classes: list[_Class] = []
        self.enum_alias: dict[str, str] = {}  # enum type -> alias name
        self.enum_origin: dict[str, str] = {}  # enum type -> where it was first met
        self.queue: list[_Class] = []
        self.event_classes: dict[str, str] = {}
        self.results: dict[str, str] = {}  # command -> annotation of result()

        for command in sorted(schema.commands):
            ret = schema.commands[command].get("ret-type", "")
            root = [camel(command)]
            if ret in schema.objects and not schema.is_empty(ret):
                if ret not in self.by_type:
                    self._object(ret, self._take(root[0] + "Result"),
                                 f"the return value of ``{command}``", root)
            elif ret in schema.arrays and schema.arrays[ret] in schema.objects:
                item = schema.arrays[ret]
                if not schema.is_empty(item) and item not in self.by_type:
                    self._object(item, self._take(root[0] + "Item"),
                                 f"an item of the return value of ``{command}``", root)
            elif ret in schema.enums and ret not in self.enum_alias:
                self.enum_alias[ret] = self._take(root[0] + "Result")
                self.enum_origin[ret] = f"the return value of ``{command}``"
        for event in sorted(schema.events):
            self._event(event, schema.events[event])
        while self.queue:
            cls = self.queue.pop(0)
            for member in cls.members:
                self._reach(member.type, [*cls.path, camel(member.name)],
                            f"``{member.name}`` of :class:`{cls.name}`")
        for command in sorted(schema.commands):
            self.results[command] = self.annotation(schema.commands[command].get("ret-type", ""))

    def _take(self, name: str) -> str:
        """Claim ``name`` (with a number after it when it is taken)."""
        out, n = name, 2
        while out in self.used:
            out, n = f"{name}{n}", n + 1
        self.used.add(out)
        return out

    def _name(self, path: list[str]) -> str:
        """The name of a type met at ``path``: its last two parts, or as many more as
        make it unique (names met first, breadth first, are the shortest)."""
        for k in range(min(2, len(path)), len(path) + 1):
            candidate = "".join(path[-k:])
            if candidate not in self.used:
                return self._take(candidate)
        return self._take("".join(path))

    def _reach(self, type_name: str, path: list[str], origin: str, depth: int = 0) -> None:
        """Name the object and enum types inside a member's type."""
        s = self.s
        if depth > 8:
            raise GenerateError(f"{''.join(path)}: types nested too deeply")
        if type_name in s.objects:
            if not s.is_empty(type_name) and type_name not in self.by_type:
                self._object(type_name, self._name(path), origin, path)
        elif type_name in s.enums:
            if type_name not in self.enum_alias:
                self.enum_alias[type_name] = self._name(path)
                self.enum_origin[type_name] = origin
        elif type_name in s.arrays:
            self._reach(s.arrays[type_name], path, origin, depth + 1)
        elif type_name in s.alternates:
            for member in s.alternates[type_name]:
                self._reach(member, path, origin, depth + 1)

    def _object(self, type_name: str, name: str, origin: str, path: list[str]) -> None:
        cls = _Class(name, type_name, "View", origin, self.s.objects[type_name].members, path)
        self.by_type[type_name] = cls.name
        self._add(cls)

    def _event(self, event: str, type_name: str) -> None:
        obj = self.s.objects.get(type_name)
        members = obj.members if obj is not None else []
        cls = _Class(self._take(camel(event) + "Data"), type_name, "EventData",
                     f"the data of the event ``{event}``", members, [camel(event)], event=event)
        self.event_classes[event] = cls.name
        self._add(cls)

    def _add(self, cls: _Class) -> None:
        """Add a class, and the classes of its union's variants (recursively)."""
        self.classes.append(cls)
        self.queue.append(cls)
        obj = self.s.objects.get(cls.type)
        if obj is None or not obj.tag:
            return
        cls.tag = obj.tag
        seen: dict[str, str] = {}
        for case, variant in obj.variants:
            if self.s.is_empty(variant):
                continue
            if variant not in seen:
                vobj = self.s.objects[variant]
                path = [*cls.path[:-1], cls.path[-1] + camel(case)]
                sub = _Class(self._take(cls.name + camel(case)), variant, cls.name,
                             f":class:`{cls.name}` with ``{obj.tag}`` ``{case}``",
                             vobj.members, path)
                seen[variant] = sub.name
                self._add(sub)
            cls.cases[case] = seen[variant]

    # ------------------------------------------------------------ annotations, code
    def annotation(self, type_name: str, depth: int = 0) -> str:
        """The Python type of a value of ``type_name`` as a view gives it."""
        s = self.s
        if depth > 8:
            return "Any"
        if type_name in s.builtins:
            return _PY_TYPES[s.builtins[type_name]]
        if type_name in s.enums:
            return self.enum_alias.get(type_name, "str")
        if type_name in s.objects:
            if s.is_empty(type_name):
                return "Empty"
            return self.by_type.get(type_name, "dict[str, Any]")
        if type_name in s.arrays:
            element = s.arrays[type_name]
            inner = self.annotation(element, depth + 1)
            return f"ListView[{inner}]" if self.wrapper(element) else f"list[{inner}]"
        if type_name in s.alternates:
            kinds = _unique_list(self.annotation(m, depth + 1) for m in s.alternates[type_name])
            return " | ".join(kinds)
        return "Any"

    def wrapper(self, type_name: str) -> str | None:
        """The expression that makes the view of a value of ``type_name``, or None
        when the value is used as it is."""
        s = self.s
        if type_name in s.objects:
            if s.is_empty(type_name):
                return "Empty"
            cls = self.by_type[type_name]
            return f"{cls}._of" if self._is_union(cls) else cls
        if type_name in s.arrays:
            inner = self.wrapper(s.arrays[type_name])
            if inner is None:
                return None
            raise GenerateError(f"an array of arrays of objects ({type_name}) is not handled")
        if type_name in s.alternates:
            if any(self.wrapper(m) for m in s.alternates[type_name]):
                raise GenerateError(f"an alternate with an object ({type_name}) is not handled")
        return None

    def _is_union(self, class_name: str) -> bool:
        return any(c.name == class_name and c.cases for c in self.classes)


def _unique_list(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _property(views: _Views, member: _Member, shadowed: frozenset[str]) -> list[str]:
    """The property of one member. ``shadowed``: the builtins that members of the class
    hide in its body (a member named ``str`` or ``property``), written ``builtins.X``."""
    s = views.s
    attr = attribute_name(member.name)
    key = json.dumps(member.name)
    annotation = views.annotation(member.type)
    for name in shadowed:
        annotation = re.sub(rf"\b{name}\b", f"builtins.{name}", annotation)
    wrap: str | None
    if member.type in s.arrays and views.wrapper(s.arrays[member.type]):
        wrap = f"ListView({views.wrapper(s.arrays[member.type])}, " + "{})"
    else:
        w = views.wrapper(member.type)
        wrap = None if w is None else w + "({})"
    out = ["    @builtins.property" if "property" in shadowed else "    @property"]
    if member.optional:
        annotation += " | None"
    head = f"    def {attr}(self) -> {annotation}:"
    out += [head] if len(head) <= _LINE else [f"    def {attr}(", "        self,",
                                               f"    ) -> {annotation}:"]
    if member.optional:
        if wrap is None:
            out.append(f"        return self.raw.get({key})")
        else:
            out.append(f"        v = self.raw.get({key})")
            out.append("        if v is None:")
            out.append("            return None")
            out.append(f"        return {wrap.format('v')}")
    else:
        out.append("        try:")
        if wrap is None:
            out.append(f"            return self.raw[{key}]")
        else:
            out.append(f"            v = self.raw[{key}]")
        out.append("        except KeyError:")
        out.append(f"            raise self._missing({key}) from None")
        if wrap is not None:
            out.append(f"        return {wrap.format('v')}")
    return [line if len(line) <= _LINE else _too_long(line) for line in out]


def _too_long(line: str) -> str:
    raise GenerateError(f"generated line too long: {line}")


def _header(source: str) -> list[str]:
    return [
        "# AUTOGENERATED by `python -m qmplex.schema.generate`: do not edit.",
        f"# From {source}.",
        "# Edit the generator (src/qmplex/schema/generate.py) and run it again; CI checks",
        "# that this file is what the generator makes of that schema.",
    ]


def _types_module(views: _Views, source: str, label: str) -> str:
    s = views.s
    lines = [
        *_header(source),
        "# mypy: no-warn-return-any",
        f'"""Typed views of the results and events of {label} (generated).',
        "",
        "Import them from :mod:`qmplex.typed`, which documents how they are named and used.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import builtins",
        "from collections.abc import Mapping",
        "from typing import Any, Literal, overload",
        "",
        "from .view import Empty, EventData, ListView, View",
        "",
    ]
    names = sorted(views.enum_alias.values()) + [c.name for c in views.classes]
    lines += wrap_list("__all__ = [", [json.dumps(n) for n in
                                       ["EVENTS", "event_data", "result", *names]], "]")
    lines += ["", "", "# " + "-" * 66 + " enums"]
    for type_name, alias in sorted(views.enum_alias.items(), key=lambda kv: kv[1]):
        values = [json.dumps(v) for v in s.enums[type_name]]
        origin = views.enum_origin.get(type_name, "")
        text = f"The values of an enum, first met as {origin}." if origin else "An enum's values."
        lines += ["#: " + line for line in textwrap.wrap(text, _LINE - 3)]
        lines += wrap_list(f"{alias} = Literal[", values, "]")
    lines += ["", "", "# " + "-" * 63 + " classes"]
    for cls in views.classes:
        lines += ["", ""]
        head = f"class {cls.name}({cls.base}):"
        lines += [head] if len(head) <= _LINE else [f"class {cls.name}(", f"    {cls.base},", "):"]
        doc = f"View of {cls.origin}."
        if cls.event:
            doc = f"The data of the event ``{cls.event}``."
        lines += docstring(doc, "    ")
        lines.append("")
        lines.append("    __slots__ = ()")
        if cls.event:
            lines.append(f"    EVENT = {json.dumps(cls.event)}")
        if cls.tag:
            lines.append(f"    _TAG = {json.dumps(cls.tag)}")
        if cls.base not in ("View", "EventData"):
            lines.append("    _CASES = None")
        shadowed = _BUILTINS & {attribute_name(m.name) for m in cls.members}
        for member in cls.members:
            lines.append("")
            lines += _property(views, member, shadowed)
    unions = [c for c in views.classes if c.cases]
    if unions:
        lines += ["", "", "# The class of each case of the unions (made above)."]
        for cls in unions:
            items = [f"{json.dumps(case)}: {sub}" for case, sub in cls.cases.items()]
            lines += wrap_list(f"{cls.name}._CASES = {{", items, "}")
    # events
    lines += ["", "#: Every event of the schema, and the class of its data."]
    items = [f"{json.dumps(e)}: {c}" for e, c in sorted(views.event_classes.items())]
    lines += wrap_list("EVENTS: dict[str, type[EventData]] = {", items, "}")
    # result(): a table of the commands whose value is made into a view
    table: list[str] = []
    overloads: dict[str, list[str]] = {}
    for command in sorted(s.commands):
        ret = s.commands[command].get("ret-type", "")
        annotation = views.results[command]
        if annotation == "Any":
            continue
        overloads.setdefault(annotation, []).append(command)
        if ret in s.arrays:
            inner = views.wrapper(s.arrays[ret])
            if inner is not None:
                table.append(f"{json.dumps(command)}: _list({inner})")
        else:
            w = views.wrapper(ret)
            if w is not None:
                table.append(f"{json.dumps(command)}: {w}")
    lines += [
        "", "",
        "def _list(wrap: Any) -> Any:",
        '    """The maker of a ListView of ``wrap``\'s views."""',
        "    return lambda raw: ListView(wrap, raw)",
        "",
        "",
        "# How result() makes the view of each command's return value (the others are",
        "# returned as they are).",
    ]
    lines += wrap_list("_RESULTS: dict[str, Any] = {", table, "}")
    for annotation, commands in overloads.items():
        lines += ["", "", "@overload"]
        lines += wrap_list("def result(command: Literal[", [json.dumps(c) for c in commands],
                           f"], value: Any) -> {annotation}: ...")
    lines += [
        "", "",
        "@overload",
        "def result(command: str, value: Any) -> Any: ...",
        "",
        "",
        "def result(command: str, value: Any) -> Any:",
        '    """The typed view of the return value of a command.',
        "",
        "    Args:",
        "        command: the command's wire name, e.g. ``\"query-status\"``.",
        "        value: what it returned (``client.execute(command).result()``).",
        "",
        "    Returns:",
        "        A view for an object (:class:`~qmplex.typed.Empty` for ``{}``), a",
        "        :class:`~qmplex.typed.ListView` for an array of objects; ``value`` itself",
        "        for anything else and for a command the schema does not have.",
        "",
        "    Raises:",
        "        TypeError: ``value`` is not the JSON kind the schema says.",
        '    """',
        "    wrap = _RESULTS.get(command)",
        "    return value if wrap is None else wrap(value)",
    ]
    for event, cls_name in sorted(views.event_classes.items()):
        lines += ["", ""]
        lines += ["@overload",
                  f"def event_data(name: Literal[{json.dumps(event)}],",
                  f"               data: Mapping[str, Any]) -> {cls_name}: ..."]
    lines += [
        "", "",
        "@overload",
        "def event_data(name: str, data: Mapping[str, Any]) -> EventData: ...",
        "",
        "",
        "def event_data(name: str, data: Mapping[str, Any]) -> EventData:",
        '    """The typed view of the data of an event (what :meth:`qmplex.Event.typed` returns).',
        "",
        "    Args:",
        "        name: the event's name, e.g. ``\"DEVICE_DELETED\"``.",
        "        data: its data (``event.data``).",
        "",
        "    Returns:",
        "        A view of the event's class in :data:`EVENTS`, or a plain",
        "        :class:`~qmplex.typed.EventData` for an event the schema does not have.",
        '    """',
        "    return EVENTS.get(name, EventData)._of(data)",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the call stubs
class _Calls:
    """The stub of ``client.call``: one class per command."""

    def __init__(self, schema: _Schema, views: _Views) -> None:
        self.s = schema
        self.views = views
        self.imported: set[str] = set()  # enum aliases from the views module
        self.local: dict[str, str] = {}  # enum type -> alias defined in the stub
        self.used = set(views.used) | set(views.enum_alias.values())

    def enum(self, type_name: str, name: str) -> str:
        alias = self.views.enum_alias.get(type_name)
        if alias is not None:
            self.imported.add(alias)
            return alias
        if type_name not in self.local:
            out, n = name, 2
            while out in self.used:
                out, n = f"{name}{n}", n + 1
            self.used.add(out)
            self.local[type_name] = out
        return self.local[type_name]

    def argument(self, type_name: str, name: str, depth: int = 0) -> str:
        """The Python type an argument of ``type_name`` accepts."""
        s = self.s
        if depth > 8:
            return "Any"
        if type_name in s.builtins:
            kind = s.builtins[type_name]
            return {"object": "Mapping[str, Any]", "array": "Sequence[Any]"}.get(
                kind, _PY_TYPES[kind])
        if type_name in s.enums:
            return self.enum(type_name, name)
        if type_name in s.objects:
            return "Mapping[str, Any]"
        if type_name in s.arrays:
            return f"Sequence[{self.argument(s.arrays[type_name], name, depth + 1)}]"
        if type_name in s.alternates:
            return " | ".join(_unique_list(self.argument(m, name, depth + 1)
                                           for m in s.alternates[type_name]))
        return "Any"

    def returns(self, type_name: str) -> str:
        s = self.s
        if type_name in s.builtins:
            return _PY_TYPES[s.builtins[type_name]]
        if type_name in s.enums:
            return self.enum(type_name, "Result")
        if type_name in s.objects:
            return "dict[str, Any]"
        if type_name in s.arrays:
            return "list[Any]"
        return "Any"

    def command(self, command: str) -> list[str]:
        s = self.s
        entry = s.commands[command]
        cls = camel(command) + "Call"
        ret = self.returns(entry.get("ret-type", ""))
        arg = s.objects.get(entry.get("arg-type", ""))
        base_name = camel(command)
        lines = ["", "", f"class {cls}(Call):", f'    """``{command}``."""', ""]
        open_ = command in _OPEN_COMMANDS
        if arg is None or (not arg.members and not arg.variants):
            lines += _signature([], ret, mapping="optional", extra=open_)
            return lines
        params = [(m, self.argument(m.type, base_name + camel(m.name))) for m in arg.members]
        groups: list[tuple[list[str], list[_Member]]] = []
        if arg.tag:
            by_type: dict[str, list[str]] = {}
            for case, variant in arg.variants:
                by_type.setdefault(variant, []).append(case)
            tag_type = next(m.type for m in arg.members if m.name == arg.tag)
            listed = {c for cases in by_type.values() for c in cases}
            rest = [v for v in s.enums.get(tag_type, []) if v not in listed]
            for variant, cases in by_type.items():
                vobj = s.objects[variant]
                if vobj.tag:
                    raise GenerateError(f"{command}: a union inside a union variant")
                groups.append((cases, vobj.members))
            if rest:  # tag values without a variant: the common members only
                groups.append((rest, []))
        else:
            groups.append(([], []))
        for cases, extra_members in groups:
            keyword_params = []
            for member, annotation in params:
                if member.name == arg.tag and cases:
                    annotation = literal(cases)
                keyword_params.append(_param(member, annotation, member.optional))
            for member in extra_members:
                annotation = self.argument(member.type, base_name + camel(member.name))
                keyword_params.append(_param(member, annotation, member.optional))
            lines += ["    @overload"]
            lines += _signature(keyword_params, ret, mapping="none", extra=open_)
        # The wire-spelled mapping form: every keyword optional.
        every: dict[str, str] = {}
        for member, annotation in params:
            every[member.name] = annotation
        for _, extra_members in groups:
            for member in extra_members:
                annotation = self.argument(member.type, base_name + camel(member.name))
                known = every.get(member.name)
                every[member.name] = annotation if known is None or known == annotation \
                    else " | ".join(_unique_list([*known.split(" | "), *annotation.split(" | ")]))
        optional = [_param(_Member(n, "", True), a, True) for n, a in every.items()]
        lines += ["    @overload"]
        lines += _signature(optional, ret, mapping="required", extra=open_)
        return lines


def _param(member: _Member, annotation: str, optional: bool) -> tuple[str, str, str]:
    return argument_name(member.name), annotation, " = ..." if optional else ""


def _signature(params: list[tuple[str, str, str]], ret: str, *, mapping: str,
               extra: bool) -> list[str]:
    first = {"optional": "arguments: Mapping[str, Any] | None = ...",
             "none": "arguments: None = ...",
             "required": "arguments: Mapping[str, Any]"}[mapping]
    lines = ["    def __call__(", "        self,", f"        {first},", "        /,", "        *,"]
    for name, annotation, default in params:
        line = f"        {name}: {annotation}{default},"
        if len(line) <= _LINE:
            lines.append(line)
        elif annotation.startswith("Literal[") and annotation.endswith("]"):
            values = annotation[len("Literal["):-1].split(", ")
            lines += wrap_list(f"{name}: Literal[", values, f"]{default},", "        ")
        else:
            raise GenerateError(f"parameter too long: {line.strip()}")
    lines += [f"        {option}," for option in _OPTIONS]
    if extra:
        lines.append("        **properties: Any,")
    lines.append(f"    ) -> Future[{ret}]: ...")
    return lines


def _call_stub(schema: _Schema, views: _Views, source: str, label: str) -> str:
    calls = _Calls(schema, views)
    bodies: list[str] = []
    names: dict[str, str] = {}
    for command in sorted(schema.commands):
        py = python_name(command)
        if py in names:
            raise GenerateError(f"{command} and {names[py]} have one Python name")
        names[py] = command
        bodies += calls.command(command)
    head = [
        *_header(source),
        "# mypy: disable-error-code=\"override\"",
        f'"""``client.call.<command>(...)`` for type checkers: the commands of {label}.',
        "",
        "A stub only (there is no module behind it): :class:`qmplex.schema.CallNamespace`",
        "takes :class:`Commands` as its base class when type checking, so mypy checks each",
        "command's keyword arguments (names, types, the required ones; one overload per",
        "variant of a union) and knows the JSON kind of its return value. A command that is",
        "not here is reached by its wire name: ``client.call[\"x-new-command\"](...)``.",
        '"""',
        "",
        "from collections.abc import Mapping, Sequence",
        "from typing import Any, Literal, overload",
        "",
        "from ..events import EventFilter",
        "from ..futures import Future",
    ]
    if calls.imported:
        one = "from ..typed._generated_types import " + ", ".join(sorted(calls.imported))
        if len(one) <= _LINE:
            head.append(one)
        else:  # as ruff's isort writes it
            head += ["from ..typed._generated_types import (",
                     *(f"    {name}," for name in sorted(calls.imported)), ")"]
    head += ["from .call import Call", ""]
    for type_name, alias in sorted(calls.local.items(), key=lambda kv: kv[1]):
        head += wrap_list(f"{alias} = Literal[",
                          [json.dumps(v) for v in schema.enums[type_name]], "]")
    tail = ["", "", "class Commands:",
            '    """Every command of the schema as an attribute of ``client.call``."""', ""]
    for py, command in sorted(names.items()):
        tail.append(f"    {py}: {camel(command)}Call")
    return "\n".join(head + bodies + tail) + "\n"


# ----------------------------------------------------------------------- entry points
def load(path: Path) -> tuple[list[Mapping[str, Any]], str]:
    """Read a schema file (JSON, or gzip-compressed JSON when it ends with ``.gz``);
    return it and the sha256 of its JSON text."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    info = json.loads(data)
    if not isinstance(info, list):
        raise GenerateError(f"{path}: not the return value of query-qmp-schema (a list)")
    return info, hashlib.sha256(data).hexdigest()


def generate(info: Sequence[Mapping[str, Any]], source: str) -> dict[str, str]:
    """The generated files for a schema.

    Args:
        info: the return value of ``query-qmp-schema``.
        source: how the files' headers name the schema (its file name and hash).

    Returns:
        ``{path relative to the package directory: text}``.

    Raises:
        GenerateError: a shape of type the generator does not handle.
    """
    schema = _Schema(info)
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", source)
    label = f"QEMU {match.group(1)}" if match else source
    views = _Views(schema)
    return {TYPES_FILE: _types_module(views, source, label),
            CALL_STUB_FILE: _call_stub(schema, views, source, label)}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m qmplex.schema.generate",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("schema", type=Path, help="query-qmp-schema's return (.json or .json.gz)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the qmplex package directory to write into (default: this one)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a generated file is not current")
    ns = parser.parse_args(argv)
    info, digest = load(ns.schema)
    files = generate(info, f"{ns.schema.name} (sha256 {digest[:16]})")
    stale = []
    for relative, text in files.items():
        target = ns.out / relative
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        if ns.check:
            stale.append(str(target))
        else:
            target.write_text(text)
            print(f"wrote {target}")
    if stale:
        print("stale generated files (run python -m qmplex.schema.generate "
              f"{ns.schema}):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
