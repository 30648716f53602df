#!/usr/bin/env python3
"""Build the API reference (``docs/_build/api.md``) from qmplex's docstrings.

Usage::

    python docs/build.py            # write docs/_build/api.md
    python docs/build.py --check    # only check; write nothing
    python docs/build.py -o FILE    # write elsewhere

Standard library only (``inspect``, ``ast``, ``pkgutil``), so CI needs nothing extra.
It imports qmplex from this checkout's ``src/`` directory and documents every name in
``qmplex.__all__`` and in the ``__all__`` of every public submodule (names without a
leading underscore): classes with their public methods and properties, functions,
and constants (with their ``#:`` comment). Google-style sections (``Args:``,
``Returns:``, ``Raises:``, ``Attributes:``...) become lists, ``::`` blocks become code
blocks, and Sphinx roles (``:class:`~qmplex.Client```) become code spans.

Exit status: 0 when every public callable (function, class, public method or
property defined in qmplex) has a docstring and every ``__all__`` entry exists; 1
otherwise, listing the offenders on stderr (the reference is still written, so the
gaps can be seen in it).
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib
import inspect
import os
import pkgutil
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUTPUT = os.path.join(HERE, "_build", "api.md")
PACKAGE = "qmplex"

_SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Attributes|Example|Examples|"
    r"Note|Notes|Warning|Warnings|See Also|Theory of operation):\s*$"
)
_LIST_SECTIONS = {"Args", "Arguments", "Parameters", "Raises", "Attributes"}
_ROLE_RE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj|const):`~?([^`]+)`")
_RST_LITERAL_RE = re.compile(r"``([^`]+)``")
_ENTRY_RE = re.compile(r"^(\*{0,2}[\w.,\s*]+?(?:\s*\([^)]*\))?):\s*(.*)$")
_TABLE_RULE_RE = re.compile(r"^=+(\s+=+)+\s*$")


@dataclass
class Report:
    """What the build found: missing docstrings and broken ``__all__`` entries."""

    missing: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing or broken."""
        return not self.missing and not self.broken


# ------------------------------------------------------------------ discovery
def public_modules() -> list[types.ModuleType]:
    """Import qmplex and its public submodules (no leading underscore), sorted; a
    module that a package names in its ``__all__`` follows that package."""
    package = importlib.import_module(PACKAGE)
    modules = [package]
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        modules.append(module)
        modules += exported_modules(module)
    return modules


def exported_modules(module: types.ModuleType) -> list[types.ModuleType]:
    """The submodules that ``module`` names in its ``__all__`` (a package's public
    submodule, e.g. ``qmplex.cli.demo``)."""
    return [obj for name in getattr(module, "__all__", ())
            if inspect.ismodule(obj := getattr(module, name, None))
            and obj.__name__.startswith(module.__name__ + ".")]


def _defined_in_qmplex(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == PACKAGE or module.startswith(PACKAGE + "."))


def _unwrap(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    return member


def _namespace_class(member: Any) -> type | None:
    """The class of an operation namespace attribute (``Client.vm``), else None."""
    from qmplex.ops import LazyNamespace

    return member.cls if isinstance(member, LazyNamespace) else None


def class_members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods, properties and operation namespaces defined by ``cls`` itself,
    in source order."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        raw = _unwrap(member)
        if isinstance(member, property) or inspect.isfunction(raw) \
                or _namespace_class(member) is not None:
            yield name, member


# ------------------------------------------------------------------ docstrings
def _inline(text: str) -> str:
    text = _ROLE_RE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`"
                        if "(" not in m.group(1) else f"`{m.group(1)}`", text)
    return _RST_LITERAL_RE.sub(r"`\1`", text)


def render_docstring(doc: str) -> str:
    """Turn a Google-style docstring (with some reST) into Markdown."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    section: str | None = None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        m = _SECTION_RE.match(stripped) if not line.startswith(" ") else None
        if m:
            section = m.group(1)
            if out and out[-1] != "":
                out.append("")
            out.append(f"**{section}:**")
            out.append("")
            i += 1
            if section in ("Example", "Examples"):
                block, i = _take_indented(lines, i)
                if block:
                    out += ["```python", *block, "```"]
                section = None
            continue
        if section in _LIST_SECTIONS and line.startswith(" "):
            entry, i = _take_entry(lines, i)
            out.append(_render_entry(entry))
            continue
        if section in ("Returns", "Return", "Yields") and line.startswith(" "):
            block, i = _take_indented(lines, i)
            out.append(_inline(" ".join(b.strip() for b in block)))
            continue
        if stripped and not line.startswith(" "):
            section = None
        if _TABLE_RULE_RE.match(stripped):
            block = [line]
            i += 1
            rules = 1
            while i < len(lines) and rules < 3:
                block.append(lines[i])
                if _TABLE_RULE_RE.match(lines[i].strip()):
                    rules += 1
                i += 1
            out += _rst_table(_dedent(block))
            continue
        if stripped.endswith("::"):
            text = stripped[:-2].rstrip()
            if text:
                out.append(_inline(text + ":"))
            i += 1
            block, i = _take_indented(lines, i)
            if block:
                out += ["", "```python" if _looks_like_python(block) else "```text",
                        *block, "```", ""]
            continue
        if line.startswith("    ") and out and out[-1] == "":
            block, i = _take_indented(lines, i)
            out += ["```text", *block, "```"]
            continue
        out.append(_inline(line.rstrip()))
        i += 1
    return "\n".join(out).strip() + "\n"


def _rst_table(block: list[str]) -> list[str]:
    """A simple reST table (``====  ====`` rules) as a Markdown table."""
    rule = block[0]
    starts = [m.start() for m in re.finditer(r"=+", rule)]
    rows: list[list[str]] = []
    for line in block[1:]:
        if _TABLE_RULE_RE.match(line.strip()) or not line.strip():
            continue
        ends = [*starts[1:], len(line) + 1]
        cells = [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]
        if rows and not cells[0]:  # a continuation line of the previous row
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    if not rows:
        return []
    out = ["", "| " + " | ".join(_inline(c) for c in rows[0]) + " |",
           "|" + "---|" * len(starts)]
    for row in rows[1:]:
        out.append("| " + " | ".join(_inline(c).replace("|", "\\|") for c in row) + " |")
    return [*out, ""]


def _looks_like_python(block: list[str]) -> bool:
    text = "\n".join(block)
    return bool(re.search(r"^\s*(import |from |def |async |with |for |[\w.]+\(|\w+ = )",
                          text, re.M)) and "$ " not in text


def _take_indented(lines: list[str], i: int) -> tuple[list[str], int]:
    """Take the indented block starting at ``i`` (blank lines inside it included)."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    block: list[str] = []
    while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
    return _dedent(block), i


def _dedent(block: list[str]) -> list[str]:
    widths = [len(b) - len(b.lstrip()) for b in block if b.strip()]
    cut = min(widths) if widths else 0
    return [b[cut:] for b in block]


def _take_entry(lines: list[str], i: int) -> tuple[list[str], int]:
    first = lines[i]
    indent = len(first) - len(first.lstrip())
    entry = [first.strip()]
    i += 1
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            break
        if len(line) - len(line.lstrip()) <= indent:
            break
        entry.append(line.strip())
        i += 1
    return entry, i


def _render_entry(entry: list[str]) -> str:
    m = _ENTRY_RE.match(entry[0])
    rest = " ".join(entry[1:])
    if m:
        text = (m.group(2) + " " + rest).strip()
        return f"- `{m.group(1).strip()}`: {_inline(text)}"
    return f"- {_inline((entry[0] + ' ' + rest).strip())}"


# ------------------------------------------------------------------ signatures
def _annotation(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return ""
    if isinstance(ann, str):
        return ann
    return inspect.formatannotation(ann)


def signature(obj: Callable[..., Any], skip_self: bool = False) -> str:
    """``(a: int, *, b: str = 'x') -> T`` with annotations shown as written."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    seen_kwonly = False
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for n, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly:
            parts.append("*")
            seen_kwonly = True
        if p.kind is p.VAR_POSITIONAL:
            seen_kwonly = True
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        text = prefix + p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not p.empty:
            text += (" = " if ann else "=") + _default(p.default)
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (n + 1 == len(params)
                                             or params[n + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    ret = _annotation(sig.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {ret}" if ret else "")


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    text = repr(value)
    if text.startswith("<") and len(text) > 40:
        return "..."
    return text


# ------------------------------------------------------------------ constants
def constant_comments(module: types.ModuleType) -> dict[str, str]:
    """``#:`` comments above module-level assignments, keyed by the assigned name."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.parse(source).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names:
            continue
        doc: list[str] = []
        j = node.lineno - 2
        while j >= 0 and lines[j].strip().startswith("#:"):
            doc.insert(0, lines[j].strip()[2:].strip())
            j -= 1
        if doc:
            for name in names:
                comments[name] = " ".join(doc)
    return comments


def package_constant_comments(module: types.ModuleType) -> dict[str, str]:
    """:func:`constant_comments` of a module and, for a package, of its submodules too
    (a package re-exports constants whose ``#:`` comment stands where they are set)."""
    comments = constant_comments(module)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.startswith("_"):
            continue
        submodule = importlib.import_module(f"{module.__name__}.{info.name}")
        for name, text in constant_comments(submodule).items():
            comments.setdefault(name, text)
    return comments


# ------------------------------------------------------------------ rendering
def _anchor(qualname: str) -> str:
    return qualname.lower().replace(".", "")


def document_module(module: types.ModuleType, report: Report,
                    documented: dict[int, str]) -> list[str]:
    """Markdown for one module's ``__all__``; records gaps in ``report``."""
    name = module.__name__
    out = [f"## `{name}`", ""]
    if module.__doc__:
        out.append(render_docstring(module.__doc__))
    else:
        report.missing.append(f"{name} (module docstring)")
    exported = getattr(module, "__all__", None)
    if exported is None:
        report.broken.append(f"{name}: no __all__")
        return out
    comments = package_constant_comments(module)
    for export in exported:
        if export.startswith("__"):
            continue
        if not hasattr(module, export):
            report.broken.append(f"{name}.__all__ names {export!r}, which does not exist")
            continue
        obj = getattr(module, export)
        qualname = f"{name}.{export}"
        if inspect.ismodule(obj):
            out += [f"### `{qualname}` (module)", "",
                    f"See [`{obj.__name__}`](#{_anchor(obj.__name__)}).", ""]
            continue
        home = documented.get(id(obj))
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and home is not None \
                and home != qualname:
            out += [f"### `{qualname}`", "", f"Re-export of [`{home}`](#{_anchor(home)}).", ""]
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if _defined_in_qmplex(obj) and getattr(obj, "__module__", "") != name \
                    and name == PACKAGE:
                # The package re-exports: document the name where it is defined.
                home = f"{obj.__module__}.{obj.__name__}"
                out += [f"### `{qualname}`", "", f"Re-export of [`{home}`](#{_anchor(home)}).",
                        ""]
                continue
            documented[id(obj)] = qualname
        if inspect.isclass(obj):
            out += document_class(qualname, obj, report)
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            out += document_function(qualname, obj, report)
        else:
            out += document_constant(qualname, obj, comments.get(export))
    return out


def document_function(qualname: str, fn: Callable[..., Any], report: Report) -> list[str]:
    """Markdown for a function."""
    prefix = "async " if inspect.iscoroutinefunction(fn) else ""
    out = [f"### `{qualname}`", "", "```python", f"{prefix}def {qualname.rsplit('.', 1)[-1]}"
           f"{signature(fn)}", "```", ""]
    doc = fn.__doc__
    if doc and doc.strip():
        out.append(render_docstring(doc))
    elif _defined_in_qmplex(fn):
        report.missing.append(qualname)
    return out


def document_class(qualname: str, cls: type, report: Report) -> list[str]:
    """Markdown for a class and its public members."""
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    kind = "exception" if issubclass(cls, BaseException) else "class"
    head = f"class {cls.__name__}"
    if issubclass(cls, enum.Enum):
        head += f"({', '.join(bases)})"
    elif "__init__" in vars(cls) or not issubclass(cls, BaseException):
        init = vars(cls).get("__init__")
        head += signature(init, skip_self=True).split(" -> ")[0] if init else ""
        if bases:
            head += f"  # bases: {', '.join(bases)}"
    elif bases:
        head += f"({', '.join(bases)})"
    out = [f"### `{qualname}` ({kind})", "", "```python", head, "```", ""]
    own_doc = cls.__dict__.get("__doc__")
    if own_doc and own_doc.strip() and not own_doc.startswith(f"{cls.__name__}("):
        out.append(render_docstring(own_doc))
    elif _defined_in_qmplex(cls):
        report.missing.append(qualname)
    if issubclass(cls, enum.Enum):
        members = ", ".join(f"`{m.name}` = `{m.value!r}`" for m in cls)
        out += [f"Members: {members}", ""]
        return out
    for name, member in class_members(cls):
        member_name = f"{qualname}.{name}"
        namespace = _namespace_class(member)
        if namespace is not None:
            home = f"{PACKAGE}.ops.{namespace.__name__}"
            out += [f"#### `{member_name}` (namespace)", "",
                    f"A [`{home}`](#{_anchor(home)}) over this object, made on first use.", ""]
            continue
        if isinstance(member, property):
            ann = ""
            if member.fget is not None:
                ann = _annotation(inspect.signature(member.fget).return_annotation)
            out += [f"#### `{member_name}` (property{': ' + ann if ann else ''})", ""]
            doc = member.__doc__
        else:
            fn = _unwrap(member)
            deco = "@classmethod " if isinstance(member, classmethod) else \
                "@staticmethod " if isinstance(member, staticmethod) else ""
            prefix = "async " if inspect.iscoroutinefunction(fn) else ""
            sig = signature(fn, skip_self=not isinstance(member, staticmethod))
            out += [f"#### `{member_name}`", "", "```python",
                    f"{deco}{prefix}def {name}{sig}", "```", ""]
            doc = fn.__doc__
        if doc and doc.strip():
            out.append(render_docstring(doc))
        else:
            report.missing.append(member_name)
    return out


def document_constant(qualname: str, value: Any, comment: str | None) -> list[str]:
    """Markdown for a constant or type alias."""
    text = repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    out = [f"### `{qualname}`", "", "```python", f"{qualname.rsplit('.', 1)[-1]} = {text}",
           "```", ""]
    if comment:
        out += [_inline(comment), ""]
    return out


def build(report: Report) -> str:
    """Return the whole reference as Markdown."""
    modules = public_modules()
    documented: dict[int, str] = {}
    # Submodules first, so the package's re-exports can point at their home.
    body: dict[str, list[str]] = {}
    for module in modules[1:]:
        body[module.__name__] = document_module(module, report, documented)
    body[PACKAGE] = document_module(modules[0], report, documented)
    version = getattr(modules[0], "__version__", "?")
    out = [
        "<!-- AUTOGENERATED by docs/build.py from the docstrings; do not edit. -->",
        "",
        f"# qmplex API reference ({version})",
        "",
        "Modules:",
        "",
    ]
    for module in modules:
        summary = (module.__doc__ or "").strip().splitlines()
        first = _inline(summary[0]) if summary else ""
        out.append(f"- [`{module.__name__}`](#{_anchor(module.__name__)}): {first}")
    out.append("")
    for module in modules:
        out += body[module.__name__]
        out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build the reference; return 0, or 1 when a public callable lacks a docstring."""
    parser = argparse.ArgumentParser(description="Build qmplex's API reference.")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help="Markdown file to write (default: docs/_build/api.md)")
    parser.add_argument("--check", action="store_true",
                        help="check docstrings only; write nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "src"))
    report = Report()
    text = build(report)
    if not args.check:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(args.output)} ({len(text.splitlines())} lines)")
    for item in report.broken:
        print(f"error: {item}", file=sys.stderr)
    for item in report.missing:
        print(f"error: missing docstring: {item}", file=sys.stderr)
    if not report.ok:
        print(f"{len(report.missing)} missing docstrings, {len(report.broken)} broken "
              "__all__ entries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
