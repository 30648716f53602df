"""qmplex: a fast, careful QEMU Machine Protocol (QMP) client for many VMs on one thread.

Quick start::

    import qmplex
    client = qmplex.connect("/run/vm1/qmp.sock", timeout=5)
    print(client.execute("query-status").result(timeout=5))

See the README and ``docs/`` for the guide; the layers are described in each module.
"""

from ._types import (
    AddFdInfo,
    CPUInfo,
    CPUProperties,
    HotpluggableCPU,
    MemoryDevice,
    MigrationInfo,
    ObjectProperty,
    StatusInfo,
)
from .client import Client, ClientState, connect
from .errors import (
    Cancelled,
    CommandError,
    ConnectError,
    ConnectionLost,
    DecodeError,
    GreetingError,
    LineTooLong,
    NegotiationError,
    ProtocolError,
    QMPError,
    StateError,
    Timeout,
    UnexpectedReply,
    ValidationError,
)
from .events import Event, EventFilter, Subscription
from .futures import Future, gather
from .protocol import QMPVersion
from .reactor import Reactor
from .schema import Argument, CallNamespace, Schema

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
    "ClientState",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "Event",
    "EventFilter",
    "Future",
    "GreetingError",
    "LineTooLong",
    "NegotiationError",
    "ProtocolError",
    "QMPError",
    "QMPVersion",
    "Reactor",
    "StateError",
    "Subscription",
    "Timeout",
    "UnexpectedReply",
    "ValidationError",
    "connect",
    "gather",
    "__version__",
]


def __getattr__(name: str) -> str:
    """Compute ``__version__`` on first use (importlib.metadata costs ~7 ms at import)."""
    if name != "__version__":
        raise AttributeError(f"module 'qmplex' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("qmplex")
    except PackageNotFoundError:  # running from a source tree without installing
        value = "0+unknown"
    globals()["__version__"] = value
    return value
