"""Argument validation: checking a command's arguments against a :class:`Schema`.

:func:`validate_arguments` is what :meth:`Schema.validate` runs; this module also
writes the messages of the errors it raises (:func:`show` for a value, :func:`suggest`
for "did you mean"), which the model and the call namespace reuse. It reads the
schema's tables and never changes them; it never sends anything.

Validation is conservative: it rejects only what QEMU rejects too. A type it cannot
resolve, an ``any`` value, and the extra properties of ``device_add`` (declared
``'gen': false`` in QEMU, so introspection lists only ``driver``, ``bus`` and ``id``
while QEMU passes every other argument on as a device property) all pass. The first
problem found raises :class:`~qmplex.errors.ValidationError`, whose message names the
command, the argument (a dotted path such as ``file.filename`` or
``capabilities[0].state`` for nested values) and what was expected. A message quotes
the offending value only when :mod:`qmplex.redact`'s rules do not hide it: a secret
shows as its kind and ``<redacted>`` (``set_password: password: expected str, got
bytes <redacted>``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..names import python_name
from ..redact import REDACTED, is_redacted

if TYPE_CHECKING:  # the model imports this module; this module only reads the model
    from .model import Schema, _Member

# Nothing public: Schema.validate is the entry point; the model and the call namespace
# use validate_arguments, is_free_form, show and suggest.
__all__: list[str] = []

# Commands whose arguments introspection does not fully describe: QEMU declares them
# 'gen': false and hands every argument to its own parser. device_add passes unknown
# arguments on as device properties. netdev_add and object-add were like that before
# they became boxed unions (QEMU 5.0 and 6.0): they count as open only while their
# argument type is not a union, so a 7.2 schema checks them fully.
_OPEN_COMMANDS = frozenset({"device_add"})
_OPEN_UNLESS_UNION = frozenset({"netdev_add", "object-add"})

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
#: How messages name a JSON kind (the QAPI spelling users know); the schema's builtin
#: types use the same names (``value``, any kind, aside).
KIND_NAMES = {
    "string": "str",
    "int": "int",
    "number": "number",
    "boolean": "bool",
    "null": "null",
    "object": "object",
    "array": "array",
}


# ------------------------------------------------------------------ messages
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


def kind_name(value: object) -> str:
    """The JSON kind of a value as messages name it (``str``, ``object``, ``bytes`` ...)."""
    kind = _kind(value)
    return KIND_NAMES.get(kind, kind)


def show(value: object) -> str:
    """Describe a value for an error message: its JSON kind and a bounded repr."""
    kind = _kind(value)
    name = KIND_NAMES.get(kind, kind)
    if kind in ("object", "array", "null"):
        return name
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def show_secret(value: object) -> str:
    """Describe a secret value for an error message: its kind only."""
    kind = _kind(value)
    name = KIND_NAMES.get(kind, kind)
    return name if kind in ("object", "array", "null") else f"{name} {REDACTED}"


def suggest(word: str, choices: Iterable[str]) -> str:
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


_Path = tuple[str | int, ...]


def path_text(path: _Path) -> str:
    """``("file", "filename")`` -> ``file.filename``; ``("caps", 0, "state")`` ->
    ``caps[0].state``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


class _Invalid(Exception):
    """Internal: one validation problem at ``path`` (turned into ValidationError).

    ``secret_problem`` is the same problem said without the value (None when
    ``problem`` quotes no value); it is used when the value is a secret.
    """

    def __init__(self, path: _Path, problem: str, secret_problem: str | None = None) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem
        self.secret_problem = secret_problem


def _wrong_kind(path: _Path, expected: str, value: object) -> _Invalid:
    return _Invalid(path, f"expected {expected}, got {show(value)}",
                    f"expected {expected}, got {show_secret(value)}")


# ---------------------------------------------------------------- validation
def is_free_form(schema: Schema, command: str) -> bool:
    """True if ``command`` takes arguments its introspection does not list (see
    :meth:`Schema.is_free_form`)."""
    if command in _OPEN_COMMANDS:
        return True
    if command not in _OPEN_UNLESS_UNION:
        return False
    info = schema._commands.get(command)
    obj = schema._objects.get(info.arg_type) if info is not None else None
    return obj is not None and obj.tag is None


def validate_arguments(schema: Schema, command: str,
                       arguments: Mapping[str, Any] | None) -> None:
    """Check ``arguments`` against what ``command`` accepts (see :meth:`Schema.validate`).

    Args:
        schema: the schema to check against.
        command: the command's wire name.
        arguments: its arguments (None for none).

    Raises:
        ValidationError: the first problem found.
    """
    info = schema._command(command)
    if arguments is None:
        arguments = {}
    elif not isinstance(arguments, Mapping):
        # The kind only: a value given in the wrong place may be anything, a secret too.
        raise ValidationError(f"{command}: arguments must be an object (a mapping), "
                              f"got {kind_name(arguments)}")
    meta = schema._meta.get(info.arg_type)
    if meta != "object":
        return  # 'any' (or unresolvable) arguments: QEMU decides
    open_ = is_free_form(schema, command)
    try:
        _check_object(schema, info.arg_type, arguments, (), open_)
    except _Invalid as exc:
        where = f"{path_text(exc.path)}: " if exc.path else ""
        problem = exc.problem
        if exc.secret_problem is not None and is_redacted(command, arguments, exc.path):
            problem = exc.secret_problem
        raise ValidationError(f"{command}: {where}{problem}") from None


def _check(schema: Schema, type_name: str, value: Any, path: _Path) -> None:
    meta = schema._meta.get(type_name)
    if meta is None:
        return  # unknown type: do not guess
    if meta == "builtin":
        kinds = _KINDS_OF_JSON_TYPE.get(schema._builtins[type_name], _ALL_KINDS)
        if _kind(value) not in kinds:
            raise _wrong_kind(path, schema.describe(type_name), value)
    elif meta == "enum":
        values = schema._enums[type_name]
        if not isinstance(value, str):
            raise _wrong_kind(path, schema.describe(type_name), value)
        if value not in values:
            expected = f"; expected one of: {', '.join(values)}"
            raise _Invalid(path, f"{value!r} is not a valid value{suggest(value, values)}"
                                 f"{expected}", f"{REDACTED} is not a valid value{expected}")
    elif meta == "array":
        if _kind(value) != "array":
            raise _wrong_kind(path, schema.describe(type_name), value)
        element = schema._arrays[type_name]
        for i, item in enumerate(value):
            _check(schema, element, item, (*path, i))
    elif meta == "object":
        if not isinstance(value, Mapping):
            raise _wrong_kind(path, "object", value)
        _check_object(schema, type_name, value, path, False)
    elif meta == "alternate":
        _check_alternate(schema, type_name, value, path)


def _kinds(schema: Schema, type_name: str, depth: int = 0) -> frozenset[str]:
    """The JSON kinds a type accepts (for choosing an alternate's member)."""
    meta = schema._meta.get(type_name)
    if meta == "builtin":
        return _KINDS_OF_JSON_TYPE.get(schema._builtins[type_name], _ALL_KINDS)
    if meta == "enum":
        return _KINDS_OF_JSON_TYPE["string"]
    if meta == "array":
        return _KINDS_OF_JSON_TYPE["array"]
    if meta == "object":
        return _KINDS_OF_JSON_TYPE["object"]
    if meta == "alternate" and depth < 8:
        return frozenset().union(*(_kinds(schema, m, depth + 1)
                                   for m in schema._alternates[type_name]))
    return _ALL_KINDS


def _check_alternate(schema: Schema, type_name: str, value: Any, path: _Path) -> None:
    kind = _kind(value)
    matching = [m for m in schema._alternates[type_name] if kind in _kinds(schema, m)]
    if not matching:
        raise _wrong_kind(path, schema.describe(type_name), value)
    first: _Invalid | None = None
    for member in matching:
        try:
            _check(schema, member, value, path)
            return
        except _Invalid as exc:
            if first is None:
                first = exc
    assert first is not None
    raise first


def _check_object(schema: Schema, type_name: str, value: Mapping[str, Any], path: _Path,
                  open_: bool) -> None:
    members, variant = _members_for(schema, type_name, value, path)
    if not open_:
        for key in value:
            if not isinstance(key, str):
                raise _Invalid(path, f"argument names must be strings, got {show(key)}")
            if key not in members:
                where = f" (with {variant})" if variant else ""
                raise _Invalid((*path, key),
                               f"unknown argument{suggest(key, members)}; "
                               f"expected one of{where}: {', '.join(members) or '(none)'}")
    for name, member in members.items():
        if member.required and name not in value:
            raise _Invalid((*path, name), f"missing required argument "
                                          f"(expected {schema.describe(member.type)})")
    for name, item in value.items():
        found = members.get(name)
        if found is not None:
            _check(schema, found.type, item, (*path, name))


def _members_for(schema: Schema, type_name: str, value: Mapping[str, Any],
                 path: _Path) -> tuple[dict[str, _Member], str]:
    """The members an object value may have: the base and its tag's variant.

    Returns the members and a description of the selected variant ("" for none).
    """
    obj = schema._objects[type_name]
    if obj.tag is None:
        return obj.members, ""
    tag = obj.members.get(obj.tag)
    if obj.tag not in value:
        if tag is not None and tag.required:
            raise _Invalid((*path, obj.tag), f"missing required argument "
                                             f"(expected {schema.describe(tag.type)})")
        return obj.members, ""
    choice = value[obj.tag]
    if tag is not None:
        _check(schema, tag.type, choice, (*path, obj.tag))
    members = dict(obj.members)
    description = f"{obj.tag} {choice!r}"
    case = obj.variants.get(choice) if isinstance(choice, str) else None
    if case is not None and case in schema._objects:
        sub, inner = _members_for(schema, case, value, path)
        members.update(sub)
        if inner:
            description += f", {inner}"
    return members, description
