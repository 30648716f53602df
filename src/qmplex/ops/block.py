"""Block nodes: ``blockdev-add`` of a :class:`BlockDevice`, ``blockdev-del``.

:class:`BlockOps` is ``client.block``. Part of :mod:`qmplex.ops`. A
:class:`BlockDevice` describes the node (the image or block device, its AIO, discard
and cache modes); :meth:`BlockOps.add` adds it. The devices that use a node are
plugged by :class:`~qmplex.ops.DeviceOps`, which takes the device's own properties
(``logical_block_size``, ``physical_block_size``, ``iothread``, ``discard``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import check_bool, check_id
from .executor import command, qemu_at_least
from .namespace import Namespace
from .versions import AIO_IO_URING, require

__all__ = ["AIO_MODES", "BlockDevice", "BlockOps"]

#: The ``aio`` modes of a file node: a thread pool, Linux native AIO, io_uring.
AIO_MODES = frozenset({"threads", "native", "io_uring"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockDevice:
    """A raw block node over an image file or a host block device (govmm's
    ``BlockDevice``, as far as a node goes).

    :meth:`BlockOps.add` sends it as a ``raw`` format node over a protocol node::

        {"driver": "raw", "node-name": NODE_NAME, "read-only": READ_ONLY,
         ["discard": "unmap",] ["cache": {"direct": D, "no-flush": N},]
         "file": {"driver": PROTOCOL, "filename": PATH, ["aio": AIO,]
                  ["discard": "unmap"]}}

    The device's own properties (block sizes, ``iothread``, ``discard`` on a
    ``virtio-blk``) are arguments of :meth:`DeviceOps.device_add` and
    :meth:`DeviceOps.pci_device_add`.

    Attributes:
        node_name: the node's name (the ``drive`` of a later ``device_add``).
        path: the image file or block device, as QEMU sees it.
        read_only: open the node read-only.
        protocol: the protocol node's driver: ``"file"``, ``"host_device"``,
            ``"host_cdrom"`` ...; None: ``"host_device"`` when ``path`` is a block
            device here, else ``"file"`` (also when ``path`` does not exist here).
        aio: ``"threads"``, ``"native"`` (needs ``direct=True``) or ``"io_uring"``
            (QEMU built with liburing); None: QEMU's default (threads).
        discard: pass discard requests down to the image or device (``"discard":
            "unmap"`` on the format node and on the protocol node); False: QEMU's
            default, ignore them.
        direct: bypass the host page cache (``cache.direct``, O_DIRECT); None:
            QEMU's default (off).
        no_flush: ignore the guest's flush requests (``cache.no-flush``); None:
            QEMU's default (off).
    """

    node_name: str
    path: str
    read_only: bool = False
    protocol: str | None = None
    aio: str | None = None
    discard: bool = False
    direct: bool | None = None
    no_flush: bool | None = None


def _protocol_for(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "file"  # not here (e.g. QEMU runs elsewhere): let QEMU judge it
    return "host_device" if stat.S_ISBLK(mode) else "file"


class BlockOps(Namespace):
    """Block nodes (``client.block``): ``add``, ``blockdev_del``, and the older
    ``blockdev_add``, ``blockdev_add_with_cache``, ``blockdev_add_with_driver_cache``
    (thin wrappers of ``add``)."""

    __slots__ = ()

    def add(self, device: BlockDevice, *, timeout: float | None = None) -> Future[None]:
        """Add a block node (``blockdev-add``) as ``device`` describes it.

        The node is ``raw`` over a protocol node; see :class:`BlockDevice` for what is
        sent. To QEMU before 2.9 the same is wrapped as ``{"options": {...}}``, with
        ``"id"`` instead of ``"node-name"``.

        Args:
            device: the node.
            timeout: seconds for the command.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: not a :class:`BlockDevice`, an empty name or path, an
                unknown ``aio`` mode, ``aio="native"`` without ``direct=True`` (QEMU
                refuses it), ``io_uring`` for a QEMU without it, wrong types.
        """
        return self._add("block.add", device, timeout)

    def _add(self, op: str, device: BlockDevice, timeout: float | None) -> Future[None]:
        if not isinstance(device, BlockDevice):
            raise ValidationError(f"{op}: expected a BlockDevice, not {device!r}")
        path = check_id(op, "path", device.path)
        protocol = (_protocol_for(path) if device.protocol is None
                    else check_id(op, "protocol", device.protocol))
        node_name = check_id(op, "node_name", device.node_name)
        read_only = check_bool(op, "read_only", device.read_only)
        discard = check_bool(op, "discard", device.discard)
        file: dict[str, Any] = {"driver": protocol, "filename": path}
        aio = device.aio
        if aio is not None:
            if aio not in AIO_MODES:
                raise ValidationError(
                    f"{op}: aio must be one of {sorted(AIO_MODES)}, not {aio!r}")
            if aio == "native" and device.direct is not True:
                raise ValidationError(f"{op}: aio='native' needs direct=True "
                                      "(QEMU refuses native AIO through the page cache)")
            if aio == "io_uring":
                require(self._executor, op, AIO_IO_URING, "aio='io_uring'")
            file["aio"] = aio
        if discard:
            file["discard"] = "unmap"
        cache: dict[str, bool] = {}
        if device.direct is not None:
            cache["direct"] = check_bool(op, "direct", device.direct)
        if device.no_flush is not None:
            cache["no-flush"] = check_bool(op, "no_flush", device.no_flush)
        # QEMU 2.9 made blockdev-add take the node's options flat, named by node-name;
        # before, they were wrapped in "options" and named by "id".
        flat = qemu_at_least(self._executor, 2, 9)
        node: dict[str, Any] = {
            "driver": "raw",
            "node-name" if flat else "id": node_name,
            "read-only": read_only,
        }
        if discard:
            node["discard"] = "unmap"
        if cache:
            node["cache"] = cache
        node["file"] = file
        args = node if flat else {"options": node}
        return command(self._executor, "blockdev-add", args, timeout)

    def blockdev_add(self, device: str, blockdev_id: str, *, read_only: bool = False,
                     timeout: float | None = None) -> Future[None]:
        """A thin wrapper of :meth:`add`, kept for code written against it: the same
        as ``add(BlockDevice(node_name=blockdev_id, path=device,
        read_only=read_only))``.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or non-string argument.
        """
        return self._add("blockdev_add", BlockDevice(
            node_name=blockdev_id, path=device, read_only=read_only), timeout)

    def blockdev_add_with_cache(self, device: str, blockdev_id: str, direct: bool,
                                no_flush: bool, *, read_only: bool = False,
                                timeout: float | None = None) -> Future[None]:
        """A thin wrapper of :meth:`add`, kept for code written against it: the same
        as ``add(BlockDevice(node_name=blockdev_id, path=device, direct=direct,
        no_flush=no_flush, read_only=read_only))``. (govmm's
        ``ExecuteBlockdevAddWithCache`` always uses ``host_device``; here the
        protocol follows the path, as in :class:`BlockDevice`.)

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        if not isinstance(direct, bool) or not isinstance(no_flush, bool):
            raise ValidationError("blockdev_add_with_cache: direct and no_flush must be "
                                  f"bools, not {direct!r} and {no_flush!r}")
        return self._add("blockdev_add_with_cache", BlockDevice(
            node_name=blockdev_id, path=device, direct=direct, no_flush=no_flush,
            read_only=read_only), timeout)

    def blockdev_add_with_driver_cache(self, driver: str, device: str, blockdev_id: str,
                                       direct: bool, no_flush: bool, read_only: bool = False,
                                       *, timeout: float | None = None) -> Future[None]:
        """A thin wrapper of :meth:`add`, kept for code written against it: the same
        as ``add(BlockDevice(node_name=blockdev_id, path=device, protocol=driver,
        direct=direct, no_flush=no_flush, read_only=read_only))``.

        Returns:
            A future done (None) when the node exists.

        Raises:
            ValidationError: an empty or wrongly typed argument.
        """
        op = "blockdev_add_with_driver_cache"
        if not isinstance(direct, bool) or not isinstance(no_flush, bool):
            raise ValidationError(f"{op}: direct and no_flush must be bools, not "
                                  f"{direct!r} and {no_flush!r}")
        return self._add(op, BlockDevice(
            node_name=blockdev_id, path=device, protocol=check_id(op, "driver", driver),
            direct=direct, no_flush=no_flush, read_only=read_only), timeout)

    def blockdev_del(self, blockdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a block node: ``blockdev-del {"node-name": ID}`` (QEMU 2.9 or newer),
        ``x-blockdev-del {"id": ID}`` before.

        A node still attached to a device fails with "Node ... is in use": after
        :meth:`DeviceOps.device_del`, wait for its future (the ``DEVICE_DELETED``
        event) first.

        Returns:
            A future done (None) when the node is gone.

        Raises:
            ValidationError: ``blockdev_id`` is empty or not a string.
        """
        blockdev_id = check_id("blockdev_del", "blockdev_id", blockdev_id)
        if qemu_at_least(self._executor, 2, 9):
            return command(self._executor, "blockdev-del", {"node-name": blockdev_id}, timeout)
        return command(self._executor, "x-blockdev-del", {"id": blockdev_id}, timeout)
