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

    def cpu_device_add(self, driver: str, cpu_id: str, *, socket_id: int | None = None,
                       die_id: int | None = None, core_id: int | None = None,
                       thread_id: int | None = None, node_id: int | None = None,
                       timeout: float | None = None) -> Future[None]:
        """Plug a vCPU into a free slot (``device_add``).

        Give the topology ids that the slot's ``props`` in
        :meth:`query_hotpluggable_cpus` have (``client.cpu.cpu_device_add(slot.type,
        "cpu1", socket_id=slot.properties.socket, ...)``); None leaves an id out.
        Ids are sent as JSON integers. Only the ids the CPU model takes are sent, as
        govmm does: s390x (``*-s390x-cpu``) and ppc64 (``*-spapr-cpu-core``,
        ``host-powerpc64-cpu``) take ``core-id`` alone (ppc64 also ``node-id``), and
        ``die-id`` goes to x86 models only; other ids given for those models are left
        out.

        Args:
            driver: the CPU type, the slot's :attr:`HotpluggableCPU.type`.
            cpu_id: the new device's id.
            socket_id: ``socket-id``.
            die_id: ``die-id`` (x86).
            core_id: ``core-id``.
            thread_id: ``thread-id``.
            node_id: ``node-id``.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has created the vCPU. Without a guest OS,
            unplugging it never completes.

        Raises:
            ValidationError: an empty driver or id, a negative or non-integer id.
        """
        return plug(self._executor, table.CPU_DEVICE, timeout, driver=driver, cpu_id=cpu_id,
                    socket_id=socket_id, die_id=die_id, core_id=core_id,
                    thread_id=thread_id, node_id=node_id)

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

        Sends ``query-cpus-fast`` to QEMU 2.12 or newer, and when the version is
        unknown. That is a deliberate choice where both commands exist (2.12 to 5.2,
        and govmm's ``ExecQueryCpus`` sends ``query-cpus``): ``query-cpus`` stops
        every vCPU to read its registers, was deprecated in 2.12 and is gone from 6.0
        on, while ``query-cpus-fast`` reads what QEMU already knows. To an older QEMU
        ``query-cpus`` is sent, falling back to ``query-cpus-fast`` if QEMU answers
        ``CommandNotFound``. Both shapes become :class:`CPUInfo` (``query-cpus``'s
        ``halted``, ``pc`` and ``current`` are not kept; ask
        ``client.execute("query-cpus")`` on a QEMU before 6.0 for them).

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
