"""Block nodes: ``blockdev-add`` over a file or block device, ``blockdev-del``.

:class:`BlockOps` is ``client.block``. Part of :mod:`qmplex.ops`. The devices that
use a node are plugged by :class:`~qmplex.ops.DeviceOps`.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..futures import Future
from .args import check_bool, check_id
from .executor import command, qemu_at_least
from .namespace import Namespace

__all__ = ["BlockOps"]


class BlockOps(Namespace):
    """Block nodes (``client.block``): ``blockdev_add``, ``blockdev_add_with_cache``,
    ``blockdev_add_with_driver_cache``, ``blockdev_del``."""

    __slots__ = ()

    def _blockdev_args(self, driver: str, device: str, blockdev_id: str, read_only: bool,
                       cache: dict[str, bool] | None) -> dict[str, Any]:
        # QEMU 2.9 made blockdev-add take the node's options flat, named by node-name;
        # before, they were wrapped in "options" and named by "id".
        flat = qemu_at_least(self._executor, 2, 9)
        node: dict[str, Any] = {
            "driver": "raw",
            "node-name" if flat else "id": blockdev_id,
            "read-only": read_only,
            "file": {"driver": driver, "filename": device},
        }
        if cache is not None:
            node["cache"] = cache
        return node if flat else {"options": node}

    @staticmethod
    def _file_driver(device: str) -> str:
        try:
            mode = os.stat(device).st_mode
        except OSError:
            return "file"  # not here (e.g. QEMU runs elsewhere): let QEMU judge it
        return "host_device" if stat.S_ISBLK(mode) else "file"

    def _blockdev_add(self, op: str, driver: str | None, device: str, blockdev_id: str,
                      read_only: bool, cache: tuple[bool, bool] | None,
                      timeout: float | None) -> Future[None]:
        device = check_id(op, "device", device)
        driver = self._file_driver(device) if driver is None else check_id(op, "driver", driver)
        blockdev_id = check_id(op, "blockdev_id", blockdev_id)
        read_only = check_bool(op, "read_only", read_only)
        cache_args = None
        if cache is not None:
            cache_args = {"direct": check_bool(op, "direct", cache[0]),
                          "no-flush": check_bool(op, "no_flush", cache[1])}
        args = self._blockdev_args(driver, device, blockdev_id, read_only, cache_args)
        return command(self._executor, "blockdev-add", args, timeout)

    def blockdev_add(self, device: str, blockdev_id: str, *, read_only: bool = False,
                     timeout: float | None = None) -> Future[None]:
        """Add a raw block node over a file or a block device (``blockdev-add``).

        The protocol node is ``host_device`` when ``device`` is a block device here,
        else ``file`` (also when ``device`` does not exist locally). With QEMU 2.9 or
        newer::

            {"driver": "raw", "node-name": ID, "read-only": RO,
             "file": {"driver": "file" | "host_device", "filename": DEVICE}}

        and before 2.9 the same wrapped as ``{"options": {...}}``, with ``"id"``
        instead of ``"node-name"``.

        Args:
            device: the image file or block device path, as QEMU sees it.
            blockdev_id: the node name (the ``drive`` of a later ``device_add``).
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or non-string argument.
        """
        return self._blockdev_add("blockdev_add", None, device, blockdev_id, read_only,
                                  None, timeout)

    def blockdev_add_with_cache(self, device: str, blockdev_id: str, direct: bool,
                                no_flush: bool, *, read_only: bool = False,
                                timeout: float | None = None) -> Future[None]:
        """Like :meth:`blockdev_add`, with the node's cache mode
        (``"cache": {"direct": DIRECT, "no-flush": NO_FLUSH}``).

        Args:
            device: the image file or block device path.
            blockdev_id: the node name.
            direct: bypass the host page cache (O_DIRECT).
            no_flush: ignore the guest's flush requests.
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        return self._blockdev_add("blockdev_add_with_cache", None, device, blockdev_id,
                                  read_only, (direct, no_flush), timeout)

    def blockdev_add_with_driver_cache(self, driver: str, device: str, blockdev_id: str,
                                       direct: bool, no_flush: bool, read_only: bool = False,
                                       *, timeout: float | None = None) -> Future[None]:
        """Like :meth:`blockdev_add_with_cache`, with the protocol driver chosen by the
        caller (``"file"``, ``"host_device"``, ``"host_cdrom"`` ...).

        Args:
            driver: the driver of the ``file`` child node.
            device: its ``filename``.
            blockdev_id: the node name.
            direct: bypass the host page cache.
            no_flush: ignore flush requests.
            read_only: open the node read-only.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        return self._blockdev_add("blockdev_add_with_driver_cache", driver, device,
                                  blockdev_id, read_only, (direct, no_flush), timeout)

    def blockdev_del(self, blockdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a block node: ``blockdev-del {"node-name": ID}`` (QEMU 2.9 or newer),
        ``x-blockdev-del {"id": ID}`` before.

        A node still attached to a device fails with "Node ... is in use": after
        :meth:`device_del`, wait for its future (the ``DEVICE_DELETED`` event) first.

        Returns:
            A future done (None) when the node is gone.

        Raises:
            ValidationError: ``blockdev_id`` is empty or not a string.
        """
        blockdev_id = check_id("blockdev_del", "blockdev_id", blockdev_id)
        if qemu_at_least(self._executor, 2, 9):
            return command(self._executor, "blockdev-del", {"node-name": blockdev_id}, timeout)
        return command(self._executor, "x-blockdev-del", {"id": blockdev_id}, timeout)
