"""Every public name is exported, documented and importable."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import qmplex
import qmplex.names


def test_all_names_exist_and_are_documented() -> None:
    for name in qmplex.__all__:
        obj = getattr(qmplex, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        assert inspect.getdoc(obj), f"qmplex.{name} has no docstring"


def test_public_client_methods_have_docstrings_and_hints() -> None:
    for name, member in inspect.getmembers(qmplex.Client):
        if name.startswith("_") or not callable(member):
            continue
        assert inspect.getdoc(member), f"Client.{name} has no docstring"
        if inspect.isfunction(member):
            assert "return" in member.__annotations__, f"Client.{name} lacks a return type"



# What qmplex.schema exported when it was one module: every name stays importable.
SCHEMA_NAMES = {
    "Argument", "Call", "CallNamespace", "SCHEMA_CACHE_ENTRIES", "Schema", "SchemaClient",
    "UNDERSCORE_ARGUMENTS", "UNDERSCORE_COMMANDS", "clear_schema_cache", "load_schema",
    "loaded_schema", "python_name", "wire_command", "wire_name",
}


def test_schema_package_reexports_its_modules() -> None:
    import qmplex.schema

    assert set(qmplex.schema.__all__) == SCHEMA_NAMES
    for name in qmplex.schema.__all__:
        obj = getattr(qmplex.schema, name)
        assert not callable(obj) or obj.__doc__, f"qmplex.schema.{name} has no docstring"
    # every public name of a submodule is exported by the package (websockets' rule)
    for info in pkgutil.iter_modules(qmplex.schema.__path__):
        module = importlib.import_module(f"qmplex.schema.{info.name}")
        assert set(module.__all__) <= SCHEMA_NAMES, info.name
    for name in qmplex.names.__all__:
        assert getattr(qmplex.schema, name) is getattr(qmplex.names, name)
    assert qmplex.Schema is qmplex.schema.Schema
    assert qmplex.CallNamespace is qmplex.schema.CallNamespace


def test_import_qmplex_does_not_import_the_schema() -> None:
    code = ("import sys, qmplex\n"
            "assert not [m for m in sys.modules if m.startswith('qmplex.schema')]\n"
            "qmplex.Schema\n"
            "assert 'qmplex.schema.model' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ops_names_exist_and_are_documented() -> None:
    import qmplex.ops

    for name in qmplex.ops.__all__:
        obj = getattr(qmplex.ops, name)
        if isinstance(obj, frozenset):
            continue
        assert inspect.getdoc(obj), f"qmplex.ops.{name} has no docstring"


def test_result_types_are_exported_from_qmplex_and_ops() -> None:
    import qmplex.ops

    for name in ("AddFdInfo", "CPUInfo", "CPUProperties", "HotpluggableCPU", "MemoryDevice",
                 "MigrationInfo", "ObjectProperty", "StatusInfo"):
        assert getattr(qmplex, name) is getattr(qmplex.ops, name)
        assert getattr(qmplex, name).__module__ == "qmplex.ops.results"


def test_client_namespaces_are_documented() -> None:
    for name in ("vm", "monitor", "block", "devices", "vfio", "cpu", "memory", "net",
                 "chardev", "fds", "migration", "qom"):
        assert inspect.getdoc(getattr(qmplex.Client, name)), f"Client.{name} has no docstring"
