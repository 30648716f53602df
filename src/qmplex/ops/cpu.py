"""vCPUs: the hot-pluggable slots, plugging one, listing them.

:class:`CPUOps` is ``client.cpu``. Part of :mod:`qmplex.ops`. ``cpu_device_add``
sends a row of :mod:`qmplex.ops.device_table`; ``client.devices.device_del`` unplugs.
"""

from __future__ import annotations

from typing import Any

from ..errors import CommandError
from ..futures import Future
from . import device_table as table
from .device_table import plug
from .executor import failed, qemu_at_least
from .namespace import Namespace
from .results import CPUInfo, HotpluggableCPU, parse_list

__all__ = ["CPUOps"]


def _hotpluggable_cpus(value: Any) -> list[HotpluggableCPU]:
    return [HotpluggableCPU.from_qmp(x) for x in parse_list("query-hotpluggable-cpus", value)]


def _cpus_fast(value: Any) -> list[CPUInfo]:
    return [CPUInfo.from_fast(x) for x in parse_list("query-cpus-fast", value)]


def _cpus_legacy(value: Any) -> list[CPUInfo]:
    return [CPUInfo.from_legacy(x) for x in parse_list("query-cpus", value)]


class CPUOps(Namespace):
    """vCPUs (``client.cpu``): ``cpu_device_add``, ``query_hotpluggable_cpus``,
    ``query_cpus``."""

    __slots__ = ()

    def cpu_device_add(self, driver: str, cpu_id: str, socket_id: int | str | None,
                       core_id: int | str | None, thread_id: int | str | None, *,
                       die_id: int | str | None = None, node_id: int | str | None = None,
                       timeout: float | None = None) -> Future[None]:
        """Plug a vCPU into a free slot (``device_add``).

        Pass exactly the topology ids that the slot's ``props`` in
        :meth:`query_hotpluggable_cpus` have (the others as None): QEMU refuses an id
        the machine does not use. Ids are sent as JSON integers; a decimal string
        (``"1"``) is converted, an empty string is omitted like None.

        Args:
            driver: the CPU type, the slot's :attr:`HotpluggableCPU.type`.
            cpu_id: the new device's id.
            socket_id: ``socket-id``.
            core_id: ``core-id``.
            thread_id: ``thread-id``.
            die_id: ``die-id``.
            node_id: ``node-id``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the vCPU. Without a guest OS,
            unplugging it never completes.

        Raises:
            ValidationError: an empty driver or id, a negative or non-numeric id.
        """
        return plug(self._executor, table.CPU_DEVICE, timeout, driver=driver, cpu_id=cpu_id,
                    socket_id=socket_id, core_id=core_id, thread_id=thread_id,
                    die_id=die_id, node_id=node_id)

    def query_hotpluggable_cpus(self, *, timeout: float | None = None,
                                ) -> Future[list[HotpluggableCPU]]:
        """List the vCPU slots (``query-hotpluggable-cpus``).

        Returns:
            A future for the slots, as QEMU orders them (highest first); a slot with
            :attr:`HotpluggableCPU.qom_path` None is free.
        """
        return self._executor.execute("query-hotpluggable-cpus", None,
                                      timeout=timeout).then(_hotpluggable_cpus)

    def query_cpus(self, *, timeout: float | None = None) -> Future[list[CPUInfo]]:
        """List the vCPUs.

        Sends ``query-cpus-fast`` (which does not interrupt the vCPUs) to QEMU 2.12
        or newer, and when the version is unknown; to an older QEMU ``query-cpus``,
        falling back to ``query-cpus-fast`` if QEMU answers ``CommandNotFound`` (QEMU
        6.0 removed ``query-cpus``). Both shapes become :class:`CPUInfo`.

        Returns:
            A future for the vCPUs.
        """
        executor = self._executor
        if qemu_at_least(executor, 2, 12):
            return executor.execute("query-cpus-fast", None, timeout=timeout).then(_cpus_fast)
        legacy = executor.execute("query-cpus", None, timeout=timeout).then(_cpus_legacy)

        def _fallback(error: BaseException) -> Future[list[CPUInfo]]:
            if isinstance(error, CommandError) and error.error_class == "CommandNotFound":
                return executor.execute("query-cpus-fast", None, timeout=timeout).then(_cpus_fast)
            return failed(legacy, error)

        return legacy.recover(_fallback)
