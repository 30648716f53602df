"""qmplex: a fast, careful QEMU Machine Protocol (QMP) client for many VMs on one thread.

Quick start::

    import qmplex
    client = qmplex.connect("/run/vm1/qmp.sock", timeout=5)
    print(client.execute("query-status").result(timeout=5))

See the README and ``docs/`` for the guide; the layers are described in each module.
"""

from typing import TYPE_CHECKING, Any

from .client import Client, ClientState, connect
from .core.messages import Event, QMPVersion
from .errors import (
    Cancelled,
    CommandError,
    ConnectError,
    ConnectionLost,
    DecodeError,
    GreetingError,
    LineTooLong,
    NegotiationError,
    OperationTimeout,
    ProtocolError,
    QMPError,
    StateError,
    Timeout,
    UnexpectedReply,
    ValidationError,
    WaitTimeout,
)
from .events import EventFilter, Subscription
from .futures import Future, gather
from .metrics import ClientMetrics, CommandSummary
from .ops import (
    AddFdInfo,
    CPUInfo,
    CPUProperties,
    HotpluggableCPU,
    MemoryDevice,
    MigrationInfo,
    ObjectProperty,
    StatusInfo,
)
from .reactor import Reactor
from .reconnect import ReconnectPolicy

if TYPE_CHECKING:
    from .schema import Argument, CallNamespace, Schema

# Imported when first used (``qmplex.Schema``): the schema module is a tenth of the
# package's import time, and most programs never ask for a schema.
_LAZY = {"Argument": "schema", "CallNamespace": "schema", "Schema": "schema"}

__all__ = [
    "AddFdInfo",
    "Argument",
    "CPUInfo",
    "CPUProperties",
    "CallNamespace",
    "HotpluggableCPU",
    "MemoryDevice",
    "MigrationInfo",
    "ObjectProperty",
    "Schema",
    "StatusInfo",
    "Cancelled",
    "Client",
    "ClientMetrics",
    "ClientState",
    "CommandError",
    "CommandSummary",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "Event",
    "EventFilter",
    "Future",
    "GreetingError",
    "LineTooLong",
    "NegotiationError",
    "OperationTimeout",
    "ProtocolError",
    "QMPError",
    "QMPVersion",
    "Reactor",
    "ReconnectPolicy",
    "StateError",
    "Subscription",
    "Timeout",
    "UnexpectedReply",
    "ValidationError",
    "WaitTimeout",
    "connect",
    "gather",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import the lazily loaded names, and compute ``__version__``, on first use
    (importlib.metadata costs ~7 ms at import)."""
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if name != "__version__":
        raise AttributeError(f"module 'qmplex' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("qmplex")
    except PackageNotFoundError:  # running from a source tree without installing
        value = _source_tree_version()
    globals()["__version__"] = value
    return value


def _source_tree_version() -> str:
    """The version in the ``pyproject.toml`` of the source tree this package sits in
    (``src/qmplex`` -> ``pyproject.toml``); ``"0+unknown"`` when there is none."""
    import re
    from pathlib import Path

    try:
        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8")
    except OSError:
        return "0+unknown"
    if not re.search(r'^name\s*=\s*"qmplex"', text, re.MULTILINE):
        return "0+unknown"
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0+unknown"
