"""The deprecated names of qmplex 0.1: ``client.stop()`` ... and ``qmplex.operations``.

Each flat ``Client`` method must warn, naming its replacement, and forward its
arguments unchanged to ``client.<namespace>.<name>``; the table of aliases must cover
every operation of every namespace. Runs with no server: the namespace an alias
forwards to is replaced by a recorder.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

import pytest

import qmplex
from qmplex import Client, Future, Reactor, StatusInfo
from qmplex.ops import DeprecatedAlias, DeprecatedOperations, LazyNamespace, Namespace

from .recorder import Recorder


def _aliases() -> dict[str, DeprecatedAlias[Any, Any]]:
    return {name: value for name, value in vars(DeprecatedOperations).items()
            if isinstance(value, DeprecatedAlias)}


def _namespaces() -> dict[str, LazyNamespace[Any]]:
    return {name: value for name, value in vars(Client).items()
            if isinstance(value, LazyNamespace)}


ALIASES = sorted(_aliases())


class Forwarded:
    """Stands in for a namespace: records the call and returns a marker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def _record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return f"result of {name}"

        return _record


@pytest.fixture
def idle_client() -> Any:
    client = Client(Reactor())
    yield client
    client.close()
    client.reactor.close()


@pytest.mark.parametrize("name", ALIASES)
def test_alias_warns_and_forwards(idle_client: Client, name: str) -> None:
    namespace = _aliases()[name].namespace
    stand_in = Forwarded()
    vars(idle_client)[namespace] = stand_in  # where client.<namespace> is cached
    marker = object()
    message = f"Client.{name}() is deprecated; use client.{namespace}.{name}()"
    with pytest.warns(DeprecationWarning, match=re.escape(message)) as caught:
        result = getattr(idle_client, name)(1, "two", marker, timeout=3.0, extra=marker)
    assert result == f"result of {name}"
    assert stand_in.calls == [(name, (1, "two", marker), {"timeout": 3.0, "extra": marker})]
    # The warning points at the caller, not at qmplex.
    assert [w.filename for w in caught] == [__file__]


def test_aliases_cover_every_operation_once() -> None:
    namespaces = _namespaces()
    assert set(namespaces) == {"vm", "monitor", "block", "devices", "vfio", "cpu", "memory",
                               "net", "chardev", "fds", "migration", "qom"}
    operations: dict[str, str] = {}
    for attr, lazy in namespaces.items():
        assert issubclass(lazy.cls, Namespace)
        for name, member in vars(lazy.cls).items():
            if not name.startswith("_") and inspect.isfunction(member):
                assert name not in operations, f"{name} is in two namespaces"
                operations[name] = attr
    assert len(operations) == 54
    assert {name: alias.namespace for name, alias in _aliases().items()} == operations


def test_alias_on_the_class_is_the_old_method() -> None:
    from qmplex.ops import DeviceOps

    old = Client.scsi_device_add
    assert inspect.signature(old) == inspect.signature(DeviceOps.scsi_device_add)
    assert old.__doc__ is not None
    assert old.__doc__.startswith("Deprecated: use ``client.devices.scsi_device_add()``.")
    assert "scsi-id" in old.__doc__  # followed by the namespace method's own docstring


def test_alias_through_the_class_warns_and_forwards(idle_client: Client) -> None:
    stand_in = Forwarded()
    vars(idle_client)["vm"] = stand_in
    with pytest.warns(DeprecationWarning, match=re.escape("use client.vm.stop()")):
        Client.stop(idle_client, timeout=1.0)
    assert stand_in.calls == [("stop", (), {"timeout": 1.0})]


def test_alias_name_must_match_its_method() -> None:
    from qmplex.ops import VMOps

    # Python 3.11 wraps an error of __set_name__ in a RuntimeError; 3.12 does not.
    with pytest.raises((RuntimeError, TypeError)) as info:
        type("Bad", (), {"halt": DeprecatedAlias("vm", VMOps.stop)})
    assert "keeps its method's name" in str(info.value.__cause__ or info.value)


def test_flat_names_still_reach_the_peer(idle_client: Client) -> None:
    """Without a stand-in, an alias runs the real operation (here: refused, not
    connected, which shows it reached Client.execute)."""
    with pytest.warns(DeprecationWarning), pytest.raises(qmplex.StateError):
        idle_client.query_status()


def _typing_of_aliases(client: Client) -> None:
    """Never run: mypy --strict checks the aliases against the real signatures (each
    ignore below must be needed, or mypy reports it as unused)."""
    fut: Future[StatusInfo] = client.query_status(timeout=1.0)
    bad: int = client.query_status()  # type: ignore[assignment]
    client.scsi_device_add("b0", "d0", "scsi-hd", "scsi0.0", scsi_id="1")  # type: ignore[arg-type]
    client.blockdev_del("b0", node="b0")  # type: ignore[call-arg]
    client.netdev_add("user", "n0", ipv6_prefix="fd00::")  # **extra is kept
    del fut, bad


# ------------------------------------------------------------- qmplex.operations
@pytest.mark.parametrize("name, new", [
    ("wire_name", qmplex.ops.wire_name),
    ("SCSI_DRIVERS", qmplex.ops.SCSI_DRIVERS),
    ("MIGRATION_FINAL_STATES", qmplex.ops.MIGRATION_FINAL_STATES),
    ("StatusInfo", qmplex.StatusInfo),
    ("AddFdInfo", qmplex.AddFdInfo),
    ("CPUInfo", qmplex.CPUInfo),
    ("CPUProperties", qmplex.CPUProperties),
    ("HotpluggableCPU", qmplex.HotpluggableCPU),
    ("MemoryDevice", qmplex.MemoryDevice),
    ("MigrationInfo", qmplex.MigrationInfo),
    ("ObjectProperty", qmplex.ObjectProperty),
])
def test_old_module_names_warn(name: str, new: object) -> None:
    import qmplex.operations as old

    with pytest.warns(DeprecationWarning, match=f"qmplex.operations.{name} is deprecated"):
        assert getattr(old, name) is new
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def _old_operations() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from qmplex.operations import Operations
    return Operations


def test_operations_needs_execute() -> None:
    operations = _old_operations()
    with pytest.warns(DeprecationWarning), \
            pytest.raises(NotImplementedError, match="execute"):
        operations().stop()
    with pytest.warns(DeprecationWarning), \
            pytest.raises(NotImplementedError, match="wait_event"):
        operations().wait_migration()


def test_operations_over_a_custom_execute() -> None:
    """The old Operations is usable over any execute(): here one that records and
    answers {}."""

    class OldRecorder(Recorder, _old_operations()):  # type: ignore[misc]
        """Recorder's execute under the old base's flat methods."""

    rec = OldRecorder()
    assert rec.version is None
    with pytest.warns(DeprecationWarning, match=re.escape("use client.block.blockdev_del()")):
        assert rec.blockdev_del("b0", timeout=2.0).result() is None
    assert rec.sent == [("blockdev-del", {"node-name": "b0"}, {"timeout": 2.0})]
    assert rec.block is rec.block  # the namespaces are there too
