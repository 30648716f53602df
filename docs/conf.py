"""Sphinx configuration: the qmplex site (guide, API reference, benchmarks).

Build (CI runs this with ``-W``, so every warning fails the build)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs site

The API reference is autodoc over the installed package, so the C extensions must be
built (``pip install -e .`` does it). Docstrings are Google style with reST inline
markup (``:class:`~qmplex.Client```, ``::`` literal blocks, simple tables), read by
napoleon. Each public name is documented once, under the path users import it from
(``qmplex.Client``, ``qmplex.ops.VMOps``); autodoc records the defining module as its
canonical name, so ``:class:`qmplex.client.Client``` resolves too.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import typing
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

project = "qmplex"
author = "the qmplex authors"
copyright = "the qmplex authors"

try:
    from importlib.metadata import version as _version

    release = _version("qmplex")
except Exception:  # a source tree without an install
    release = "0+unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# The guide's "Contents" list links to its own headings (#1-connecting).
myst_heading_anchors = 3

# Google-style sections; the reST inline markup inside them is kept as it is.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
# "Attributes:" sections as a field list, so that autodoc's own entries for the same
# attributes (dataclass fields) are not duplicate descriptions.
napoleon_use_ivar = True

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    # Also list class members without a docstring of their own: enum members, and
    # dataclass fields with their types and defaults (their meaning is in the class
    # docstring's "Attributes:").
    "undoc-members": True,
}
# The class docstring documents the constructor's arguments (Google style).
autoclass_content = "class"
autodoc_class_signature = "mixed"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False

html_theme = "furo"
html_title = f"qmplex {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"

# ----------------------------------------------------------------- completeness check
# Every name in the __all__ of these modules must be documented somewhere in the
# reference (under any of its public paths). A name added to an __all__ without a
# place in docs/api/ fails the build (as a warning, which -W turns into an error).
PUBLIC_MODULES = [
    "qmplex",
    "qmplex.aio",
    "qmplex.cli",
    "qmplex.cli.demo",
    "qmplex.client",
    "qmplex.core.framing",
    "qmplex.core.messages",
    "qmplex.core.protocol",
    "qmplex.errors",
    "qmplex.events",
    "qmplex.futures",
    "qmplex.metrics",
    "qmplex.names",
    "qmplex.ops",
    "qmplex.pytest_plugin",
    "qmplex.qemu",
    "qmplex.reactor",
    "qmplex.reconnect",
    "qmplex.redact",
    "qmplex.schema",
    "qmplex.testing",
    "qmplex.tls",
    "qmplex.typed",
]
# Names that are not objects with a page entry of their own.
NOT_DOCUMENTED = {
    "qmplex.__version__",  # computed on first use; the home page shows it
    "qmplex.cli.demo",  # a submodule, documented as a module
}

_log = logging.getLogger("qmplex.docs")
_NOTHING = object()


def _resolve(dotted: str) -> Any:
    """The object named by a dotted path (attributes first, then submodules), or
    ``_NOTHING``.

    ``qmplex.cli.main`` is the function the package exports, not the submodule.
    """
    first, *rest = dotted.split(".")
    obj: Any = importlib.import_module(first)
    path = first
    for part in rest:
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(path)
        except ImportError:
            return _NOTHING
    return obj


def _documented(env: BuildEnvironment) -> set[tuple[str, int]]:
    """(last name, object id) of every object the reference documents."""
    found = set()
    for name, entry in env.domains["py"].objects.items():
        if entry.objtype == "module" or entry.aliased:
            continue
        obj = _resolve(name)
        if obj is not _NOTHING:
            found.add((name.rpartition(".")[2], id(obj)))
    return found


def check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about every public name the reference does not document (once every page
    is read, before any is written)."""
    documented = _documented(env)
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # autodoc has reported it too
            _log.warning("cannot import %s to check its public names: %s", module_name,
                         exc, type="qmplex", subtype="undocumented")
            continue
        for name in getattr(module, "__all__", ()):
            qualname = f"{module_name}.{name}"
            if qualname not in NOT_DOCUMENTED \
                    and (name, id(getattr(module, name))) not in documented:
                _log.warning("public name %s is not documented in docs/api/", qualname,
                             type="qmplex", subtype="undocumented")


# ----------------------------------------------------------------- re-exported constants
# autodoc reads a constant's ``#:`` comment from the module being documented, so a
# constant re-exported by a package (``qmplex.cli.EXIT_OK`` from ``cli/exit_codes.py``)
# would lose it. This takes the comment from the module that assigns the name.


def _constant_comment(name: str, obj: Any) -> list[str]:
    """The ``#:`` comment of the module-level assignment of ``obj`` to ``name``'s last
    part, in the qmplex module that holds it; [] when there is none."""
    package, _, attr = name.rpartition(".")
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith(package.split(".")[0]) or module_name == package:
            continue
        if getattr(module, attr, _NOTHING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", attr) in docs:
            return list(docs[("", attr)])
    return []


def fill_constant_docs(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                       lines: list[str]) -> None:
    """Give a re-exported module constant the ``#:`` comment of its assignment (rather
    than nothing, or the docstring of its type: ``dict``'s for a dict)."""
    if what == "data":
        comment = _constant_comment(name, obj)
        if comment:
            lines[:] = comment


# ----------------------------------------------------------------- builtin type names
# With no intersphinx (CI builds offline), ``type`` in a signature such as
# ``LazyNamespace(cls: type[N])`` would be resolved fuzzily to some attribute named
# ``type`` (``qmplex.Argument.type``): a wrong link, and a warning. Builtin types are
# left as plain text instead.


class UnlinkBuiltinTypes(SphinxPostTransform):
    """Turn references to builtin types (``type``, ``int``, ``Exception`` ...) into
    their text before references are resolved."""

    default_priority = 5  # before sphinx's ReferencesResolver (10)

    def run(self, **kwargs: Any) -> None:
        """Replace each such pending reference by its content."""
        for node in list(self.document.findall(addnodes.pending_xref)):
            target = node.get("reftarget", "")
            if node.get("refdomain") != "py" \
                    or not isinstance(getattr(builtins, target, None), type):
                continue
            content = node.children
            for child in node.children:
                if isinstance(child, addnodes.pending_xref_condition) \
                        and child.get("condition") == "*":
                    content = child.children
            node.replace_self(list(content))


# ----------------------------------------------------------------- attribute docstrings
# For an attribute, property or constant, napoleon's only work is to read a first line
# "TYPE: description" as a type. qmplex never writes types there (annotations give
# them) but often starts with "what: detail" ("Commands not yet finished: queued,
# sent, ..."), which napoleon would show as a type. These docstrings are kept as
# written.

_ATTRIBUTE_KINDS = {"attribute", "data", "property"}
_as_written: dict[str, list[str]] = {}


def remember_attribute_docstring(app: Sphinx, what: str, name: str, obj: Any,
                                 options: Any, lines: list[str]) -> None:
    """Before napoleon: keep the docstring of an attribute-like object."""
    if what in _ATTRIBUTE_KINDS:
        _as_written[name] = list(lines)


def restore_attribute_docstring(app: Sphinx, what: str, name: str, obj: Any,
                                options: Any, lines: list[str]) -> None:
    """After napoleon: put that docstring back as it was written."""
    if what in _ATTRIBUTE_KINDS and name in _as_written:
        lines[:] = _as_written.pop(name)


# ----------------------------------------------------------------- short cross-references
# Docstrings name things the way their module sees them (``:class:`Schema``` in
# qmplex.client, ``:meth:`Client.execute``` in qmplex.ops). Sphinx resolves such a name
# only inside the current module and class; when it finds nothing there, this looks
# for the one documented object whose dotted name ends with it.


def resolve_short_name(app: Sphinx, env: BuildEnvironment, node: Any,
                       contnode: Any) -> Any:
    """Resolve a py reference by the unique documented object whose name ends with
    ``.target``; None (left unresolved, shown as code) when there is no single one."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    domain = env.domains["py"]
    suffix = "." + target
    matches = [name for name, entry in domain.objects.items()
               if name.endswith(suffix) and not entry.aliased]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                               matches[0], node, contnode)


# ----------------------------------------------------------------- generated aliases
# autodoc documents the classes a package re-exports, but not its re-exported module
# constants (it finds those by their assignment in the documented module's source). The
# enum aliases of qmplex.typed are assigned in its generated module, so this directive
# lists them, one autodata each, without a hand-kept list to go stale.


class TypedAliases(SphinxDirective):
    """``.. qmplex-typed-aliases::``: an ``autodata`` entry for every ``Literal`` alias
    in ``qmplex.typed.__all__``."""

    def run(self) -> list[nodes.Node]:
        """The autodata entries, parsed as if they were written here."""
        module = importlib.import_module("qmplex.typed")
        lines: list[str] = []
        for name in module.__all__:
            if typing.get_origin(getattr(module, name)) is typing.Literal:
                lines += [f".. autodata:: {name}", ""]
        holder = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, "qmplex-typed-aliases"), holder)
        return list(holder.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hooks above."""
    app.add_directive("qmplex-typed-aliases", TypedAliases)
    app.add_post_transform(UnlinkBuiltinTypes)
    # napoleon handles autodoc-process-docstring at the default priority, 500.
    app.connect("autodoc-process-docstring", remember_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", restore_attribute_docstring, priority=600)
    app.connect("autodoc-process-docstring", fill_constant_docs, priority=700)
    app.connect("env-check-consistency", check_public_names)
    app.connect("missing-reference", resolve_short_name)
    return {"parallel_read_safe": True}
