"""The monitor itself: capabilities, the schema, human monitor (HMP) commands.

:class:`MonitorOps` is ``client.monitor``. Part of :mod:`qmplex.ops`.
"""

from __future__ import annotations

from typing import Any

from ..futures import Future
from .args import check_id, check_int
from .executor import command
from .namespace import Namespace
from .results import parse_list

__all__ = ["MonitorOps"]


def _schema(value: Any) -> list[dict[str, Any]]:
    return [dict(x) for x in parse_list("query-qmp-schema", value)]


def _hmp_output(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class MonitorOps(Namespace):
    """The QMP monitor (``client.monitor``): ``qmp_capabilities``,
    ``query_qmp_schema``, ``human_monitor_command``."""

    __slots__ = ()

    def qmp_capabilities(self, *, timeout: float | None = None) -> Future[None]:
        """Send ``qmp_capabilities``.

        The client negotiates capabilities itself when it connects, and QEMU accepts
        the command only once per connection: on a negotiated connection QEMU answers
        ``CommandNotFound`` ("Capabilities negotiation is already complete"), so the
        future fails with that :class:`~qmplex.errors.CommandError`. Useful only to
        probe a peer.

        Returns:
            A future done (None) when QEMU accepts the command.
        """
        return command(self._executor, "qmp_capabilities", None, timeout)

    def query_qmp_schema(self, *, timeout: float | None = None,
                         ) -> Future[list[dict[str, Any]]]:
        """Fetch the QMP schema (``query-qmp-schema``; about 200 KB on QEMU 7.2).

        Returns:
            A future for the schema's entities, as QEMU sent them.
        """
        return self._executor.execute("query-qmp-schema", None, timeout=timeout).then(_schema)

    def human_monitor_command(self, command_line: str, *, cpu_index: int | None = None,
                              timeout: float | None = None) -> Future[str]:
        """Run a human monitor (HMP) command (``human-monitor-command``).

        Args:
            command_line: the HMP command, e.g. ``"info version"``.
            cpu_index: the vCPU to make current for the command (None: QEMU's).
            timeout: seconds for the command.

        Returns:
            A future for the command's output (lines end with CRLF; "" for none). HMP
            reports its errors in the output, not as a QMP error.

        Raises:
            ValidationError: an empty command line, a negative cpu_index.
        """
        op = "human_monitor_command"
        args: dict[str, Any] = {"command-line": check_id(op, "command_line", command_line)}
        if cpu_index is not None:
            args["cpu-index"] = check_int(op, "cpu_index", cpu_index, 0)
        return self._executor.execute("human-monitor-command", args,
                                      timeout=timeout).then(_hmp_output)
