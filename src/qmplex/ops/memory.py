"""Memory hot-plug: a backend (``object-add``) and its device (DIMM, NVDIMM ...).

:class:`MemoryOps` is ``client.memory``. Part of :mod:`qmplex.ops`. The device part
of ``memdev_add`` is a row of :mod:`qmplex.ops.device_table`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from ..futures import Future
from . import device_table as table
from .args import check_bool, check_id, check_int
from .device_table import device_args
from .executor import object_add_args, undo_on_failure
from .namespace import Namespace
from .results import MemoryDevice, parse_list

__all__ = ["MemoryOps"]


def _memory_devices(value: Any) -> list[MemoryDevice]:
    return [MemoryDevice.from_qmp(x) for x in parse_list("query-memory-devices", value)]


class MemoryOps(Namespace):
    """Memory (``client.memory``): ``memdev_add``, ``hotplug_memory``,
    ``nvdimm_device_add``, ``query_memory_devices``."""

    __slots__ = ()

    def _memory_backend_then_device(self, object_args: dict[str, Any],
                                    device: dict[str, Any],
                                    timeout: float | None) -> Future[None]:
        """``object-add``, then ``device_add``; if ``device_add`` fails, ``object-del``
        the backend and fail with ``device_add``'s error."""
        executor = self._executor
        object_id = object_args["id"]

        def _plug(_: object) -> Future[None]:
            step = executor.execute("device_add", device, timeout=timeout)
            return undo_on_failure(executor, step, "object-del", {"id": object_id}, timeout)

        return executor.execute("object-add", object_args, timeout=timeout).chain(_plug)

    def memdev_add(self, qom_type: str, mem_id: str, size: int, *, driver: str,
                   driver_id: str, mem_path: str | None = None, share: bool = False,
                   addr: str | None = None, bus: str | None = None,
                   devno: str | None = None, timeout: float | None = None) -> Future[None]:
        """Hot-plug memory: a memory backend (``object-add``), then the device that
        shows it to the guest (``device_add``).

        The backend is ``{"qom-type": QOM_TYPE, "id": MEM_ID, "size": SIZE MiB in
        bytes}`` plus ``"mem-path"`` when given and ``"share": true`` when asked
        (QEMU before 5.0 gets them inside ``"props"``). The device is
        ``{"driver": DRIVER, "id": DRIVER_ID, "memdev": MEM_ID}`` plus ``"addr"``,
        ``"bus"`` or ``"devno"`` when given. When ``device_add`` fails, the backend is
        removed (``object-del``) and the future fails with ``device_add``'s error.

        Args:
            qom_type: the backend type: ``"memory-backend-ram"``,
                ``"memory-backend-file"`` (needs ``mem_path``) or another
                ``memory-backend-*``.
            mem_id: the backend's id.
            size: the size in MiB (as govmm's; :meth:`nvdimm_device_add` takes bytes).
            driver: the device: ``"pc-dimm"``, ``"virtio-mem-pci"``,
                ``"virtio-mem-ccw"``, ``"nvdimm"`` ...
            driver_id: the device's id.
            mem_path: the backing file or hugetlbfs directory (None: none).
            share: map the memory shared (needed by vhost-user devices).
            addr: the PCI slot of a ``virtio-mem-pci`` (None: QEMU chooses).
            bus: the device's bus (None: QEMU chooses).
            devno: the device number of a CCW device (``virtio-mem-ccw``, s390x);
                neither ``addr`` nor ``bus`` with it.
            timeout: seconds for each command.

        Returns:
            A future done (None) when the device exists. Without a guest OS, unplugging
            a DIMM never completes.

        Raises:
            ValidationError: a type that is not a memory backend, a file backend
                without a path, a size below 1, an empty id, ``devno`` with ``addr``
                or ``bus``, wrong types.
        """
        op = "memdev_add"
        qom_type = check_id(op, "qom_type", qom_type)
        if not qom_type.startswith("memory-backend-"):
            raise ValidationError(f"{op}: qom_type must be a memory-backend-* type, "
                                  f"not {qom_type!r}")
        mem_id = check_id(op, "mem_id", mem_id)
        mem_path = None if mem_path is None else check_id(op, "mem_path", mem_path)
        if qom_type == "memory-backend-file" and mem_path is None:
            raise ValidationError(f"{op}: memory-backend-file needs a mem_path")
        size = check_int(op, "size", size, 1)
        props: dict[str, Any] = {"size": size << 20}
        if mem_path is not None:
            props["mem-path"] = mem_path
        if check_bool(op, "share", share):
            props["share"] = True
        device, _ = device_args(self._executor, table.MEMORY_DEVICE, {
            "driver": driver, "driver_id": driver_id, "mem_id": mem_id, "bus": bus,
            "addr": addr, "devno": devno})
        return self._memory_backend_then_device(
            object_add_args(self._executor, qom_type, mem_id, props), device, timeout)

    def hotplug_memory(self, qom_type: str, mem_id: str, size: int, *,
                       mem_path: str | None = None, share: bool = False,
                       timeout: float | None = None) -> Future[None]:
        """Hot-plug a ``pc-dimm`` with id ``"dimm" + mem_id`` over a new backend: the
        same as ``memdev_add(qom_type, mem_id, size, driver="pc-dimm",
        driver_id="dimm" + mem_id, mem_path=mem_path, share=share)`` (see
        :meth:`memdev_add`; ``size`` in MiB).

        Returns:
            A future done (None) when the DIMM exists.

        Raises:
            ValidationError: as :meth:`memdev_add`.
        """
        return self.memdev_add(qom_type, mem_id, size, driver="pc-dimm",
                               driver_id=f"dimm{check_id('hotplug_memory', 'mem_id', mem_id)}",
                               mem_path=mem_path, share=share, timeout=timeout)

    def nvdimm_device_add(self, dev_id: str, mem_path: str, size: int, *,
                          pmem: bool | None = None,
                          timeout: float | None = None) -> Future[None]:
        """Hot-plug an NVDIMM: a shared ``memory-backend-file`` with id
        ``"nvdimmbackmem" + dev_id`` (``object-add``), then an ``nvdimm`` device with id
        ``"nvdimm" + dev_id`` over it (``device_add``). When ``device_add`` fails, the
        backend is removed (``object-del``) and the future fails with
        ``device_add``'s error. The machine needs ``nvdimm=on``.

        Args:
            dev_id: the suffix of both ids.
            mem_path: the backing file.
            size: the size in bytes.
            pmem: the backend's ``pmem`` property (None: QEMU's default).
            timeout: seconds for each command.

        Returns:
            A future done (None) when the NVDIMM exists.

        Raises:
            ValidationError: an empty id or path, a size below 1, wrong types.
        """
        op = "nvdimm_device_add"
        dev_id = check_id(op, "dev_id", dev_id)
        backend_id = f"nvdimmbackmem{dev_id}"
        props: dict[str, Any] = {
            "mem-path": check_id(op, "mem_path", mem_path),
            "size": check_int(op, "size", size, 1),
            "share": True,
        }
        if pmem is not None:
            props["pmem"] = check_bool(op, "pmem", pmem)
        device = {"driver": "nvdimm", "id": f"nvdimm{dev_id}", "memdev": backend_id}
        backend = object_add_args(self._executor, "memory-backend-file", backend_id, props)
        return self._memory_backend_then_device(backend, device, timeout)

    def query_memory_devices(self, *, timeout: float | None = None,
                             ) -> Future[list[MemoryDevice]]:
        """List the memory devices (``query-memory-devices``): DIMMs, NVDIMMs,
        virtio-mem ...

        Returns:
            A future for the devices (empty without hot-plugged memory).
        """
        return self._executor.execute("query-memory-devices", None,
                                      timeout=timeout).then(_memory_devices)
