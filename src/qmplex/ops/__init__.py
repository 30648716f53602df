"""Typed QMP operations by domain: ``client.vm``, ``client.block``, ``client.devices`` ...

Each domain is a namespace class over an :class:`Executor` (what a
:class:`~qmplex.Client` provides: ``execute``, ``wait_event``, ``version``), reached
as an attribute of the client and created there on first use:

====================  =====================  ====================================================
attribute             class                  operations
====================  =====================  ====================================================
``client.vm``         :class:`VMOps`         run state, reset, power button, balloon, memory dump
``client.monitor``    :class:`MonitorOps`    ``qmp_capabilities``, the schema, HMP commands
``client.block``      :class:`BlockOps`      ``add`` (a :class:`BlockDevice`), ``blockdev_del``
``client.devices``    :class:`DeviceOps`     ``device_add`` of disks, NICs, vhost-user, vsock,
                                             serial ports; ``device_del``
``client.vfio``       :class:`VFIOOps`       PCI, mediated, CCW and AP pass-through
``client.cpu``        :class:`CPUOps`        vCPU slots, hot-plug, listing
``client.memory``     :class:`MemoryOps`     memory backends with DIMMs, NVDIMMs ...
``client.net``        :class:`NetOps`        netdevs (from options, a chardev, descriptors)
``client.chardev``    :class:`ChardevOps`    Unix socket chardevs, removal
``client.fds``        :class:`FdOps`         ``getfd``, ``closefd``, fd sets
``client.migration``  :class:`MigrationOps`  capabilities, migrating out and in, waiting
``client.qom``        :class:`QOMOps`        ``qom_get``, ``qom_set``, ``qom_list``
====================  =====================  ====================================================

Method names are the QMP command's (``device_del``, ``qom_get``) or, for the composite
operations, the govmm function's (``scsi_device_add``, ``hotplug_memory``);
``client.block.add`` takes a :class:`BlockDevice`. A namespace also works over any
other :class:`Executor`: ``VMOps(recorder).stop()``.

Each method builds the arguments of one or a few QMP commands, checks the caller's
input, submits the commands with ``execute`` and returns a :class:`~qmplex.Future` at
once; nothing here blocks, touches a socket or keeps state. Methods run on the
reactor's thread like every other ``Client`` method (callbacks may call them).

Rules every operation follows:

- Invalid input (a wrong type, an empty id, an unknown driver ...) raises
  :class:`~qmplex.errors.ValidationError` (a ``ValueError``) before any command is sent.
- Argument names are the snake_case of QMP's; the wire names stay as QMP spells them
  (device properties included: ``logical_block_size``, ``scsi-id``).
- Required arguments come first; optional ones, and those easily swapped (two ids,
  two flags), are keyword-only. None means "not given" for every optional argument
  (the argument is left out of the command).
- QEMU 5.0 and newer are supported. Where QMP changed between releases, the form the
  peer has is chosen (from its schema when loaded, else its version); a request the
  peer cannot express is refused before sending, naming its version
  (:mod:`qmplex.ops.versions`).
- ``timeout`` is passed to every command the operation sends (each command gets the
  whole ``timeout``); a command that times out fails the operation with
  :class:`~qmplex.errors.Timeout`.
- A multi-step operation (``object-add`` then ``device_add``; ``getfd`` then
  ``netdev_add``) undoes its earlier steps when a later one fails (a timeout included),
  and then fails with the error of the step that failed: a failed undo is logged, never
  reported instead. Cancelling its future cancels the step under way (a command already
  written may still run in QEMU) and undoes nothing.
- An operation completes when QEMU answers, except those whose effect comes later
  (``device_del``, ``system_powerdown``, ``migrate_and_wait``): they complete on their
  event, whose wait is registered before the command is written, so an event that
  overtakes the reply is not missed.
- Failures arrive through the future: a QMP error reply as
  :class:`~qmplex.errors.CommandError`, :class:`~qmplex.errors.Timeout`,
  :class:`~qmplex.errors.ConnectionLost` or :class:`~qmplex.errors.Cancelled`; a reply
  of the wrong shape as :class:`~qmplex.errors.ProtocolError`.

The flat names of qmplex 0.1 (``client.stop()``, ``client.scsi_device_add(...)``) are
deprecated aliases for one release (:class:`DeprecatedOperations`).

Modules: ``executor`` (the :class:`Executor` protocol and the command sequences the
operations share), ``versions`` (what each QEMU release can express), ``args`` (input
checks, :func:`wire_name`), ``device_table``
(``device_add`` rows and their builder), ``namespace`` (:class:`Namespace`,
:class:`LazyNamespace`), ``results`` (the typed results), ``deprecated`` (the old flat
names), and one module per domain, named as its attribute.
"""

from .args import wire_name
from .block import AIO_MODES, BlockDevice, BlockOps
from .chardev import ChardevOps
from .cpu import CPUOps
from .deprecated import DeprecatedAlias, DeprecatedOperations
from .device_table import SCSI_DRIVERS
from .devices import DeviceOps
from .executor import CommandSender, Executor
from .fds import FdOps
from .memory import MemoryOps
from .migration import MIGRATION_FINAL_STATES, MigrationOps
from .monitor import MonitorOps
from .namespace import LazyNamespace, Namespace
from .net import NetOps
from .qom import QOMOps
from .results import (
    AddFdInfo,
    CPUInfo,
    CPUProperties,
    HotpluggableCPU,
    MemoryDevice,
    MigrationInfo,
    ObjectProperty,
    StatusInfo,
)
from .vfio import VFIOOps
from .vm import VMOps

__all__ = [
    "AIO_MODES",
    "AddFdInfo",
    "BlockDevice",
    "BlockOps",
    "CPUInfo",
    "CPUOps",
    "CPUProperties",
    "ChardevOps",
    "DeprecatedAlias",
    "DeprecatedOperations",
    "DeviceOps",
    "CommandSender",
    "Executor",
    "FdOps",
    "HotpluggableCPU",
    "LazyNamespace",
    "MIGRATION_FINAL_STATES",
    "MemoryDevice",
    "MemoryOps",
    "MigrationInfo",
    "MigrationOps",
    "MonitorOps",
    "Namespace",
    "NetOps",
    "ObjectProperty",
    "QOMOps",
    "SCSI_DRIVERS",
    "StatusInfo",
    "VFIOOps",
    "VMOps",
    "wire_name",
]
