"""The flat operation names of qmplex 0.1 (``client.stop()`` ...), deprecated.

In qmplex 0.1 every operation was a method of :class:`~qmplex.Client` itself. They now
live in namespaces (``client.vm.stop()``); for one release the old names stay, as
:class:`DeprecatedOperations`, a base class of ``Client`` whose body is the table
``old name = DeprecatedAlias("namespace", NamespaceClass.method)``. Calling an alias
emits a :class:`DeprecationWarning` that names its replacement, then calls it with
the same arguments; for a method whose signature changed since 0.1 (optional
arguments now keyword-only, None for "not given"), a :class:`Legacy` maps the 0.1
form of the call onto the current one.

Typing: :class:`DeprecatedAlias` is generic in the method's parameters and result
(``ParamSpec``), so ``mypy`` checks ``client.scsi_device_add(...)`` against the real
signature of :meth:`~qmplex.ops.DeviceOps.scsi_device_add`.

To remove the aliases: delete this module and ``DeprecatedOperations`` from
``Client``'s bases.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .block import BlockOps
from .chardev import ChardevOps
from .cpu import CPUOps
from .devices import DeviceOps
from .fds import FdOps
from .memory import MemoryOps
from .migration import MigrationOps
from .monitor import MonitorOps
from .net import NetOps
from .qom import QOMOps
from .vfio import VFIOOps
from .vm import VMOps

__all__ = ["DeprecatedAlias", "DeprecatedOperations", "Legacy"]

P = ParamSpec("P")
R = TypeVar("R")

#: What a converter returns for an argument to leave out.
_DROP: Any = object()


class Legacy:
    """How a call in qmplex 0.1's form maps onto the method's current signature.

    The methods took some optional arguments positionally and spelled "not given" as
    ``""``, ``0`` or ``-1`` (govmm's way); they now take them by keyword, with None.
    An alias with a :class:`Legacy` binds positional arguments by their 0.1 names and
    converts the old spellings, so a 0.1 call keeps working (with its warning) for
    the one release the alias lives.

    Args:
        positional: the 0.1 signature's parameters that could be given positionally,
            in order.
        convert: argument name -> a function of the value given (returns the value
            to pass, or :data:`_DROP` to leave the argument out).
    """

    __slots__ = ("positional", "convert")

    def __init__(self, *positional: str,
                 convert: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
        self.positional = positional
        self.convert = dict(convert or {})

    def adapt(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the current method.

        Raises:
            TypeError: too many positional arguments, or one given twice.
        """
        if len(args) > len(self.positional):
            raise TypeError(f"{name}() takes at most {len(self.positional)} positional "
                            f"arguments ({len(args)} given)")
        out = dict(zip(self.positional, args, strict=False))
        for key, value in kwargs.items():
            if key in out:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            out[key] = value
        for key, fn in self.convert.items():
            if key in out:
                value = fn(out[key])
                if value is _DROP:
                    del out[key]
                else:
                    out[key] = value
        return out


def _is(value: Any, old: Any) -> bool:
    return type(value) is type(old) and value == old


def _none_if(*olds: Any) -> Callable[[Any], Any]:
    """A converter: the old "not given" values (``""``, ``0`` ...) become None."""
    return lambda value: None if any(_is(value, old) for old in olds) else value


def _negative_is_none(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return None
    return value


def _drop_if(*olds: Any) -> Callable[[Any], Any]:
    """A converter for a removed argument: its old no-op values are left out (any
    other value is passed on, and the method refuses it)."""
    return lambda value: _DROP if any(_is(value, old) for old in olds) else value


def _topology_id(value: Any) -> Any:
    # 0.1 took govmm's strings: "" for none, "1" for 1.
    if isinstance(value, str):
        if value == "":
            return None
        if value.isdecimal():
            return int(value)
    return value


_EMPTY = _none_if("")
_ZERO = _none_if(0)


class DeprecatedAlias(Generic[P, R]):
    """A deprecated flat name for ``obj.<namespace>.<method>``.

    As a class attribute named like the method, ``obj.name(...)`` warns
    (:class:`DeprecationWarning`: "Client.name() is deprecated; use
    client.namespace.name()") and returns ``getattr(obj, namespace).name(...)``. Read
    from the class, it is a plain function taking the instance first, as the old
    method was.

    Args:
        namespace: the attribute holding the namespace (``"vm"``).
        method: the namespace's method (``VMOps.stop``); its name is the alias's.
        legacy: for a method whose signature changed since 0.1, how a 0.1 call maps
            onto it (typing follows the current signature; 0.1 calls still run).
    """

    __slots__ = ("namespace", "name", "message", "function", "legacy")

    def __init__(self, namespace: str, method: Callable[Concatenate[Any, P], R],
                 legacy: Legacy | None = None) -> None:
        name = method.__name__
        self.namespace = namespace
        self.name = name
        self.legacy = legacy
        self.message = f"Client.{name}() is deprecated; use client.{namespace}.{name}()"
        message = self.message

        def alias(instance: Any, *args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            target = getattr(getattr(instance, namespace), name)
            if legacy is None:
                return target(*args, **kwargs)
            return target(**legacy.adapt(name, args, kwargs))

        functools.update_wrapper(alias, method)
        # The method's docstring, indented as its other lines are (a method's eight
        # spaces), so that inspect.cleandoc() dedents the whole.
        alias.__doc__ = (f"Deprecated: use ``client.{namespace}.{name}()``.\n\n"
                         f"        {method.__doc__ or ''}")
        self.function: Callable[..., Any] = alias

    def __set_name__(self, owner: type[Any], name: str) -> None:
        """Check that the alias is named like its method, and give its function the
        owner's qualified name and module (for warnings and tracebacks).

        Raises:
            TypeError: the attribute's name is not the method's.
        """
        if name != self.name:
            raise TypeError(f"{owner.__name__}.{name}: a deprecated alias keeps its "
                            f"method's name ({self.name!r})")
        self.function.__qualname__ = f"{owner.__qualname__}.{name}"
        self.function.__module__ = owner.__module__

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Callable[Concatenate[Any, P], R]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Callable[P, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Callable[..., Any]:
        """On the class, the plain function; on an instance, a bound method that warns
        and then calls ``getattr(instance, namespace).<method>``.
        """
        if instance is None:
            return self.function
        return types.MethodType(self.function, instance)


class DeprecatedOperations:
    """The operation names of qmplex 0.1, deprecated: a base class of
    :class:`~qmplex.Client` for one release.

    Each ``client.<name>(...)`` warns and calls ``client.<namespace>.<name>(...)``;
    this class's body is the whole table. The namespaces themselves are attributes of
    ``Client`` (``vm = LazyNamespace(VMOps)`` ...).
    """

    __slots__ = ()

    # client.vm
    stop = DeprecatedAlias("vm", VMOps.stop)
    cont = DeprecatedAlias("vm", VMOps.cont)
    quit = DeprecatedAlias("vm", VMOps.quit)
    system_reset = DeprecatedAlias("vm", VMOps.system_reset)
    system_powerdown = DeprecatedAlias("vm", VMOps.system_powerdown, Legacy("until"))
    query_status = DeprecatedAlias("vm", VMOps.query_status)
    balloon = DeprecatedAlias("vm", VMOps.balloon)
    dump_guest_memory = DeprecatedAlias("vm", VMOps.dump_guest_memory,
                                        Legacy("protocol", "paging", "format"))

    # client.monitor
    qmp_capabilities = DeprecatedAlias("monitor", MonitorOps.qmp_capabilities)
    query_qmp_schema = DeprecatedAlias("monitor", MonitorOps.query_qmp_schema)
    human_monitor_command = DeprecatedAlias("monitor", MonitorOps.human_monitor_command,
                                            Legacy("command_line", "cpu_index"))

    # client.block
    blockdev_add = DeprecatedAlias("block", BlockOps.blockdev_add)
    blockdev_add_with_cache = DeprecatedAlias("block", BlockOps.blockdev_add_with_cache)
    blockdev_add_with_driver_cache = DeprecatedAlias(
        "block", BlockOps.blockdev_add_with_driver_cache)
    blockdev_del = DeprecatedAlias("block", BlockOps.blockdev_del)

    # client.devices
    device_add = DeprecatedAlias("devices", DeviceOps.device_add, Legacy(
        "blockdev_id", "dev_id", "driver", "bus", convert={"bus": _EMPTY}))
    scsi_device_add = DeprecatedAlias("devices", DeviceOps.scsi_device_add, Legacy(
        "blockdev_id", "dev_id", "driver", "bus", "scsi_id", "lun", convert={
            "scsi_id": _negative_is_none, "lun": _negative_is_none,
            "romfile": _drop_if(None), "disable_modern": _drop_if(False)}))
    pci_device_add = DeprecatedAlias("devices", DeviceOps.pci_device_add, Legacy(
        "blockdev_id", "dev_id", "driver", "addr", "bus",
        convert={"addr": _EMPTY, "bus": _EMPTY, "queues": _ZERO}))
    pci_vhost_user_device_add = DeprecatedAlias(
        "devices", DeviceOps.pci_vhost_user_device_add, Legacy(
            "chardev_id", "dev_id", "driver", "addr", "bus",
            convert={"addr": _EMPTY, "bus": _EMPTY}))
    net_pci_device_add = DeprecatedAlias("devices", DeviceOps.net_pci_device_add, Legacy(
        "netdev_id", "dev_id", "mac", "addr", "bus", "romfile", "queues", "disable_modern",
        convert={"mac": _EMPTY, "addr": _EMPTY, "bus": _EMPTY, "queues": _ZERO}))
    net_ccw_device_add = DeprecatedAlias("devices", DeviceOps.net_ccw_device_add, Legacy(
        "netdev_id", "dev_id", "mac", "devno", "queues",
        convert={"mac": _EMPTY, "queues": _ZERO}))
    pci_vsock_add = DeprecatedAlias("devices", DeviceOps.pci_vsock_add, Legacy(
        "vsock_id", "guest_cid", "vhostfd", "addr", "bus", "disable_modern",
        convert={"addr": _EMPTY, "bus": _EMPTY}))
    virt_serial_port_add = DeprecatedAlias("devices", DeviceOps.virt_serial_port_add, Legacy(
        "dev_id", "chardev_id", "name", "bus", convert={"bus": _EMPTY}))
    device_del = DeprecatedAlias("devices", DeviceOps.device_del)

    # client.vfio
    vfio_device_add = DeprecatedAlias("vfio", VFIOOps.vfio_device_add,
                                      Legacy("dev_id", "bdf", "romfile"))
    pci_vfio_device_add = DeprecatedAlias("vfio", VFIOOps.pci_vfio_device_add, Legacy(
        "dev_id", "bdf", "addr", "bus", "romfile", convert={"addr": _EMPTY, "bus": _EMPTY}))
    pci_vfio_mediated_device_add = DeprecatedAlias(
        "vfio", VFIOOps.pci_vfio_mediated_device_add, Legacy(
            "dev_id", "sysfsdev", "addr", "bus", "romfile",
            convert={"addr": _EMPTY, "bus": _EMPTY}))
    ap_vfio_mediated_device_add = DeprecatedAlias("vfio", VFIOOps.ap_vfio_mediated_device_add)

    # client.cpu
    cpu_device_add = DeprecatedAlias("cpu", CPUOps.cpu_device_add, Legacy(
        "driver", "cpu_id", "socket_id", "core_id", "thread_id", convert={
            name: _topology_id
            for name in ("socket_id", "core_id", "thread_id", "die_id", "node_id")}))
    query_hotpluggable_cpus = DeprecatedAlias("cpu", CPUOps.query_hotpluggable_cpus)
    query_cpus = DeprecatedAlias("cpu", CPUOps.query_cpus)

    # client.memory
    memdev_add = DeprecatedAlias("memory", MemoryOps.memdev_add, Legacy(
        "qom_type", "mem_id", "mem_path", "size", "share", "driver", "driver_id", "addr",
        "bus", convert={"mem_path": _EMPTY, "addr": _EMPTY, "bus": _EMPTY}))
    hotplug_memory = DeprecatedAlias("memory", MemoryOps.hotplug_memory, Legacy(
        "qom_type", "mem_id", "mem_path", "size", "share", convert={"mem_path": _EMPTY}))
    nvdimm_device_add = DeprecatedAlias("memory", MemoryOps.nvdimm_device_add,
                                        Legacy("dev_id", "mem_path", "size", "pmem"))
    query_memory_devices = DeprecatedAlias("memory", MemoryOps.query_memory_devices)

    # client.net
    netdev_add = DeprecatedAlias("net", NetOps.netdev_add, Legacy(
        "netdev_type", "netdev_id", "ifname", "downscript", "script", "queues", "vhost",
        convert={"ifname": _EMPTY, "script": _none_if("no"),
                 "downscript": _none_if("no"), "queues": _none_if(0, 1)}))
    netdev_chardev_add = DeprecatedAlias("net", NetOps.netdev_chardev_add, Legacy(
        "netdev_type", "netdev_id", "chardev", "queues", convert={"queues": _none_if(0, 1)}))
    netdev_add_by_fds = DeprecatedAlias("net", NetOps.netdev_add_by_fds, Legacy(
        "netdev_type", "netdev_id", "fds", "vhost_fds"))
    netdev_del = DeprecatedAlias("net", NetOps.netdev_del)

    # client.chardev
    chardev_unix_socket_add = DeprecatedAlias(
        "chardev", ChardevOps.chardev_unix_socket_add, Legacy(
            "chardev_id", "path", "wait", "server", convert={"reconnect": _ZERO}))
    chardev_del = DeprecatedAlias("chardev", ChardevOps.chardev_del)

    # client.fds
    getfd = DeprecatedAlias("fds", FdOps.getfd)
    closefd = DeprecatedAlias("fds", FdOps.closefd)
    add_fd = DeprecatedAlias("fds", FdOps.add_fd, Legacy("fd", "fdset_id", "opaque"))
    remove_fd = DeprecatedAlias("fds", FdOps.remove_fd, Legacy("fdset_id", "fd"))

    # client.migration
    migrate_set_capabilities = DeprecatedAlias("migration", MigrationOps.migrate_set_capabilities)
    migrate = DeprecatedAlias("migration", MigrationOps.migrate)
    migrate_incoming = DeprecatedAlias("migration", MigrationOps.migrate_incoming)
    migrate_and_wait = DeprecatedAlias("migration", MigrationOps.migrate_and_wait)
    wait_migration = DeprecatedAlias("migration", MigrationOps.wait_migration)
    query_migrate = DeprecatedAlias("migration", MigrationOps.query_migrate)

    # client.qom
    qom_set = DeprecatedAlias("qom", QOMOps.qom_set)
    qom_get = DeprecatedAlias("qom", QOMOps.qom_get)
    qom_list = DeprecatedAlias("qom", QOMOps.qom_list)
