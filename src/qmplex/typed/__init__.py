"""Typed results and events: attribute access with types over the dicts QEMU sends.

Two ways to ask for a typed view, neither of which loses the dict (a view's ``raw`` is
the very object QEMU's reply or event carried)::

    from qmplex import typed

    reply = client.execute("query-status").result(5)          # the dict, as always
    status = typed.result("query-status", reply)              # typed.QueryStatusResult
    status.running, status.status, status.raw is reply        # bool, "prelaunch", True

    event = client.wait_event("DEVICE_DELETED").result(5)     # a qmplex.Event (a tuple)
    data = event.typed()                                      # typed.DeviceDeletedData
    data.device, data.path                                    # str | None, str

Or make a view directly: ``typed.QueryStatusResult(reply)``,
``typed.DeviceDeletedData(event.data)``, ``client.call.query_jobs().then(...)``.

The classes are generated from QEMU 11.1.3's ``query-qmp-schema`` by
:mod:`qmplex.schema.generate` (see there for how they are named): ``<Command>Result``
for the object a command returns, ``<Command>Item`` for an item of the array it
returns, ``<Event>Data`` for an event's data, and ``<Owner><Member>`` for the types
those reach (enums are ``Literal`` aliases named the same way). A view reads its
members when asked and validates nothing: older QEMUs may leave out members that 11.1
always sends (reading one raises :class:`AttributeError`), and the run-time checks of
arguments remain :meth:`qmplex.Schema.validate`'s.

``import qmplex`` does not import this package; :meth:`qmplex.Event.typed` imports it
on first use.
"""

from . import _generated_types
from ._generated_types import *  # noqa: F403
from .view import Empty, EventData, ListView, View

__all__ = ["Empty", "EventData", "ListView", "View"]
__all__ += _generated_types.__all__
