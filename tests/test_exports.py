"""Every public name is exported, documented and importable."""

from __future__ import annotations

import inspect

import qmplex


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
