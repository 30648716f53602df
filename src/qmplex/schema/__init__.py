"""QMP introspection: what one QEMU offers, argument validation, and ``client.call``.

This layer turns the return value of ``query-qmp-schema`` into a :class:`Schema`,
which answers which commands, events, arguments and enum values a QEMU has and checks
a command's arguments before anything is sent, and provides the dynamic namespace
behind ``client.call``. It never touches sockets and never sets anything on a client:
it goes through the client's ``execute``, and the client keeps its own per-connection
memo of the schema (:meth:`qmplex.Client.load_schema`, :attr:`qmplex.Client.schema`).

One job per module:

- :mod:`~qmplex.schema.model`: parsing the introspection into :class:`Schema`, and its
  queries;
- :mod:`~qmplex.schema.validate`: checking arguments against a schema, and the error
  messages;
- :mod:`~qmplex.schema.call`: :class:`CallNamespace` and :class:`Call`, Python names
  to QMP names, execute options with a leading underscore;
- :mod:`~qmplex.schema.load`: :func:`load_schema`, fetching a schema through a client;
- :mod:`~qmplex.schema.cache`: the process-wide cache of schemas per QEMU build, and
  its lock;
- :mod:`~qmplex.schema.history`: :func:`wire_command`, which spelling of a renamed
  command a QEMU has;
- :mod:`~qmplex.schema.executor`: :class:`SchemaClient`, what the layer needs of a
  client.

The name mapping itself (:func:`python_name`, :func:`wire_name`) lives in
:mod:`qmplex.names`, shared with the typed operations, and is re-exported here.
``import qmplex`` does not import this package; ``qmplex.Schema`` and
``client.load_schema()`` import it on first use.
"""

from ..names import UNDERSCORE_ARGUMENTS, UNDERSCORE_COMMANDS, python_name, wire_name
from .cache import SCHEMA_CACHE_ENTRIES, clear_schema_cache
from .call import Call, CallNamespace
from .executor import SchemaClient
from .history import wire_command
from .load import load_schema, loaded_schema
from .model import Argument, Schema

__all__ = [
    "Argument",
    "CallNamespace",
    "Call",
    "Schema",
    "SchemaClient",
    "SCHEMA_CACHE_ENTRIES",
    "UNDERSCORE_ARGUMENTS",
    "UNDERSCORE_COMMANDS",
    "clear_schema_cache",
    "load_schema",
    "loaded_schema",
    "python_name",
    "wire_command",
    "wire_name",
]
