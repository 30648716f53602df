"""The flat operation names of qmplex 0.1 (``client.stop()`` ...), deprecated.

In qmplex 0.1 every operation was a method of :class:`~qmplex.Client` itself. They now
live in namespaces (``client.vm.stop()``); for one release the old names stay, as
:class:`DeprecatedOperations`, a base class of ``Client`` whose body is the table
``old name = DeprecatedAlias("namespace", NamespaceClass.method)``. Calling an alias
emits a :class:`DeprecationWarning` that names its replacement, then calls it with
the same arguments.

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
from collections.abc import Callable
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

__all__ = ["DeprecatedAlias", "DeprecatedOperations"]

P = ParamSpec("P")
R = TypeVar("R")


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
    """

    __slots__ = ("namespace", "name", "message", "function")

    def __init__(self, namespace: str, method: Callable[Concatenate[Any, P], R]) -> None:
        name = method.__name__
        self.namespace = namespace
        self.name = name
        self.message = f"Client.{name}() is deprecated; use client.{namespace}.{name}()"
        message = self.message

        def alias(instance: Any, *args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return getattr(getattr(instance, namespace), name)(*args, **kwargs)

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
    system_powerdown = DeprecatedAlias("vm", VMOps.system_powerdown)
    query_status = DeprecatedAlias("vm", VMOps.query_status)
    balloon = DeprecatedAlias("vm", VMOps.balloon)
    dump_guest_memory = DeprecatedAlias("vm", VMOps.dump_guest_memory)

    # client.monitor
    qmp_capabilities = DeprecatedAlias("monitor", MonitorOps.qmp_capabilities)
    query_qmp_schema = DeprecatedAlias("monitor", MonitorOps.query_qmp_schema)
    human_monitor_command = DeprecatedAlias("monitor", MonitorOps.human_monitor_command)

    # client.block
    blockdev_add = DeprecatedAlias("block", BlockOps.blockdev_add)
    blockdev_add_with_cache = DeprecatedAlias("block", BlockOps.blockdev_add_with_cache)
    blockdev_add_with_driver_cache = DeprecatedAlias(
        "block", BlockOps.blockdev_add_with_driver_cache)
    blockdev_del = DeprecatedAlias("block", BlockOps.blockdev_del)

    # client.devices
    device_add = DeprecatedAlias("devices", DeviceOps.device_add)
    scsi_device_add = DeprecatedAlias("devices", DeviceOps.scsi_device_add)
    pci_device_add = DeprecatedAlias("devices", DeviceOps.pci_device_add)
    pci_vhost_user_device_add = DeprecatedAlias("devices", DeviceOps.pci_vhost_user_device_add)
    net_pci_device_add = DeprecatedAlias("devices", DeviceOps.net_pci_device_add)
    net_ccw_device_add = DeprecatedAlias("devices", DeviceOps.net_ccw_device_add)
    pci_vsock_add = DeprecatedAlias("devices", DeviceOps.pci_vsock_add)
    virt_serial_port_add = DeprecatedAlias("devices", DeviceOps.virt_serial_port_add)
    device_del = DeprecatedAlias("devices", DeviceOps.device_del)

    # client.vfio
    vfio_device_add = DeprecatedAlias("vfio", VFIOOps.vfio_device_add)
    pci_vfio_device_add = DeprecatedAlias("vfio", VFIOOps.pci_vfio_device_add)
    pci_vfio_mediated_device_add = DeprecatedAlias("vfio", VFIOOps.pci_vfio_mediated_device_add)
    ap_vfio_mediated_device_add = DeprecatedAlias("vfio", VFIOOps.ap_vfio_mediated_device_add)

    # client.cpu
    cpu_device_add = DeprecatedAlias("cpu", CPUOps.cpu_device_add)
    query_hotpluggable_cpus = DeprecatedAlias("cpu", CPUOps.query_hotpluggable_cpus)
    query_cpus = DeprecatedAlias("cpu", CPUOps.query_cpus)

    # client.memory
    memdev_add = DeprecatedAlias("memory", MemoryOps.memdev_add)
    hotplug_memory = DeprecatedAlias("memory", MemoryOps.hotplug_memory)
    nvdimm_device_add = DeprecatedAlias("memory", MemoryOps.nvdimm_device_add)
    query_memory_devices = DeprecatedAlias("memory", MemoryOps.query_memory_devices)

    # client.net
    netdev_add = DeprecatedAlias("net", NetOps.netdev_add)
    netdev_chardev_add = DeprecatedAlias("net", NetOps.netdev_chardev_add)
    netdev_add_by_fds = DeprecatedAlias("net", NetOps.netdev_add_by_fds)
    netdev_del = DeprecatedAlias("net", NetOps.netdev_del)

    # client.chardev
    chardev_unix_socket_add = DeprecatedAlias("chardev", ChardevOps.chardev_unix_socket_add)
    chardev_del = DeprecatedAlias("chardev", ChardevOps.chardev_del)

    # client.fds
    getfd = DeprecatedAlias("fds", FdOps.getfd)
    closefd = DeprecatedAlias("fds", FdOps.closefd)
    add_fd = DeprecatedAlias("fds", FdOps.add_fd)
    remove_fd = DeprecatedAlias("fds", FdOps.remove_fd)

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
