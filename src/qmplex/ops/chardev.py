"""Character devices (chardevs): a Unix socket chardev, removing one.

:class:`ChardevOps` is ``client.chardev``. Part of :mod:`qmplex.ops`.
"""

from __future__ import annotations

from typing import Any

from ..futures import Future
from .args import check_bool, check_id, check_int
from .executor import command
from .namespace import Namespace

__all__ = ["ChardevOps"]


class ChardevOps(Namespace):
    """Chardevs (``client.chardev``): ``chardev_unix_socket_add``, ``chardev_del``."""

    __slots__ = ()

    def chardev_unix_socket_add(self, chardev_id: str, path: str, wait: bool = False,
                                server: bool = True, *, reconnect: int = 0,
                                timeout: float | None = None) -> Future[None]:
        """Add a chardev on a Unix socket (``chardev-add`` with a ``socket`` backend).

        Sends ``{"id": ID, "backend": {"type": "socket", "data": {"server": SERVER,
        "addr": {"type": "unix", "data": {"path": PATH}}}}}``, with ``"wait": WAIT``
        in ``data`` for a server (QEMU refuses ``wait`` for a client) and
        ``"reconnect"`` when above 0.

        Args:
            chardev_id: the chardev's id.
            path: the socket's path.
            wait: a server waits for a client before QEMU goes on (blocks QEMU).
            server: listen (True) or connect (False).
            reconnect: a client reconnects after this many seconds (0: never).
            timeout: seconds for the command.

        Returns:
            A future done (None) when the chardev exists (a server is listening).

        Raises:
            ValidationError: an empty id or path, wrong types.
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
        if check_int(op, "reconnect", reconnect, 0) > 0:
            data["reconnect"] = reconnect
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
