"""Character devices (chardevs): a Unix socket chardev, removing one.

:class:`ChardevOps` is ``client.chardev``. Part of :mod:`qmplex.ops`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import check_bool, check_id, check_int
from .executor import command
from .namespace import Namespace
from .versions import RECONNECT_MS, peer_has, peer_name

__all__ = ["ChardevOps"]


class ChardevOps(Namespace):
    """Chardevs (``client.chardev``): ``chardev_unix_socket_add``, ``chardev_del``."""

    __slots__ = ()

    def chardev_unix_socket_add(self, chardev_id: str, path: str, *, wait: bool = False,
                                server: bool = True, reconnect: int | None = None,
                                reconnect_ms: int | None = None,
                                timeout: float | None = None) -> Future[None]:
        """Add a chardev on a Unix socket (``chardev-add`` with a ``socket`` backend).

        Sends ``{"id": ID, "backend": {"type": "socket", "data": {"server": SERVER,
        "addr": {"type": "unix", "data": {"path": PATH}}}}}``, with ``"wait": WAIT``
        in ``data`` for a server (QEMU refuses ``wait`` for a client), and for a
        client that reconnects, the delay in the spelling the peer has:
        ``"reconnect-ms"`` (milliseconds) from QEMU 9.2 on, ``"reconnect"`` (whole
        seconds) before; 9.2 deprecated ``reconnect`` and 11.x no longer has it.

        Args:
            chardev_id: the chardev's id.
            path: the socket's path.
            wait: a server waits for a client before QEMU goes on (blocks QEMU).
            server: listen (True) or connect (False).
            reconnect: a client reconnects this many seconds after losing its
                connection (0: never; None: QEMU's default, never).
            reconnect_ms: the same in milliseconds; before QEMU 9.2 only whole
                seconds can be expressed.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the chardev exists (a server is listening).

        Raises:
            ValidationError: an empty id or path, wrong types, both ``reconnect`` and
                ``reconnect_ms``, a reconnect delay for a server, or a delay that is
                not whole seconds for a QEMU before 9.2.
        """
        op = "chardev_unix_socket_add"
        server = check_bool(op, "server", server)
        data: dict[str, Any] = {
            "server": server,
            "addr": {"type": "unix", "data": {"path": check_id(op, "path", path)}},
        }
        wait = check_bool(op, "wait", wait)
        if server:
            data["wait"] = wait
        if reconnect is not None and reconnect_ms is not None:
            raise ValidationError(f"{op}: give reconnect or reconnect_ms, not both")
        delay_ms: int | None = None
        if reconnect is not None:
            delay_ms = check_int(op, "reconnect", reconnect, 0) * 1000
        elif reconnect_ms is not None:
            delay_ms = check_int(op, "reconnect_ms", reconnect_ms, 0)
        if delay_ms is not None:
            if server:
                raise ValidationError(f"{op}: only a client (server=False) reconnects")
            if peer_has(self._executor, RECONNECT_MS):
                data["reconnect-ms"] = delay_ms
            elif delay_ms % 1000:
                raise ValidationError(
                    f"{op}: reconnect_ms={delay_ms} is not whole seconds, and "
                    f"{peer_name(self._executor)} has reconnect in seconds only "
                    f"(reconnect-ms came in QEMU 9.2)")
            else:
                data["reconnect"] = delay_ms // 1000
        args = {"id": check_id(op, "chardev_id", chardev_id),
                "backend": {"type": "socket", "data": data}}
        return command(self._executor, "chardev-add", args, timeout)

    def chardev_del(self, chardev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a chardev (``chardev-remove {"id"}``); QEMU refuses one in use.

        Returns:
            A future done (None) when the chardev is gone.

        Raises:
            ValidationError: ``chardev_id`` is empty or not a string.
        """
        chardev_id = check_id("chardev_del", "chardev_id", chardev_id)
        return command(self._executor, "chardev-remove", {"id": chardev_id}, timeout)
