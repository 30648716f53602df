"""Network backends (netdevs): over options, a chardev, or open descriptors.

:class:`NetOps` is ``client.net``. Part of :mod:`qmplex.ops`. The NICs that use a
netdev are plugged by :class:`~qmplex.ops.DeviceOps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import check_bool, check_fd, check_id, check_int, check_str, wire_name
from .executor import command, with_named_fds
from .namespace import Namespace

__all__ = ["NetOps"]

#: Netdev types that take ``ifname``, ``script`` and ``downscript``.
_TAP_TYPES = frozenset({"tap"})


class NetOps(Namespace):
    """Network backends (``client.net``): ``netdev_add``, ``netdev_chardev_add``,
    ``netdev_add_by_fds``, ``netdev_del``."""

    __slots__ = ()

    # ``self`` is positional-only, so that ``**extra`` may take any other keyword.
    def netdev_add(self, /, netdev_type: str, netdev_id: str, ifname: str = "",
                   downscript: str = "no", script: str = "no", queues: int = 0,
                   vhost: bool = False, *, timeout: float | None = None,
                   **extra: Any) -> Future[None]:
        """Add a network backend (``netdev_add``).

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID}``; for ``tap`` also
        ``"ifname"``, ``"downscript"`` and ``"script"`` (as govmm does; other types get
        them only when not empty / not ``"no"``, and QEMU refuses them for types that
        lack them, e.g. ``user``); ``"queues"`` when above 1; ``"vhost": true`` when
        asked; and each ``extra`` keyword under its QMP name (``ipv6_prefix=...`` ->
        ``"ipv6-prefix"``, see :func:`wire_name`).

        Args:
            netdev_type: ``"tap"``, ``"user"``, ``"socket"``, ``"vhost-user"`` ...
            netdev_id: the netdev's id.
            ifname: the tap interface's name ("" lets the kernel choose).
            downscript: the tap down script (``"no"``: none).
            script: the tap up script (``"no"``: none).
            queues: the number of queues (sent when above 1).
            vhost: use vhost-net.
            timeout: seconds for the command.
            **extra: further netdev options (values sent as given).

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type or id, negative queues, wrong types.
        """
        op = "netdev_add"
        netdev_type = check_id(op, "netdev_type", netdev_type)
        args: dict[str, Any] = {"type": netdev_type,
                                "id": check_id(op, "netdev_id", netdev_id)}
        ifname = check_str(op, "ifname", ifname)
        downscript = check_str(op, "downscript", downscript)
        script = check_str(op, "script", script)
        tap = netdev_type in _TAP_TYPES
        if tap or ifname:
            args["ifname"] = ifname
        if tap or downscript != "no":
            args["downscript"] = downscript
        if tap or script != "no":
            args["script"] = script
        if check_int(op, "queues", queues, 0) > 1:
            args["queues"] = queues
        if check_bool(op, "vhost", vhost):
            args["vhost"] = True
        for key, value in extra.items():
            wire = wire_name(key)
            if wire in args:
                raise ValidationError(f"{op}: {key!r} repeats the argument {wire!r}")
            args[wire] = value
        return command(self._executor, "netdev_add", args, timeout)

    def netdev_chardev_add(self, netdev_type: str, netdev_id: str, chardev: str,
                           queues: int = 0, *, timeout: float | None = None) -> Future[None]:
        """Add a network backend over a chardev (``netdev_add``), i.e. ``vhost-user``.

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID, "chardev": CHARDEV}`` plus
        ``"queues"`` when above 1.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type or id, negative queues, wrong types.
        """
        op = "netdev_chardev_add"
        args: dict[str, Any] = {
            "type": check_id(op, "netdev_type", netdev_type),
            "id": check_id(op, "netdev_id", netdev_id),
            "chardev": check_id(op, "chardev", chardev),
        }
        if check_int(op, "queues", queues, 0) > 1:
            args["queues"] = queues
        return command(self._executor, "netdev_add", args, timeout)

    def netdev_add_by_fds(self, netdev_type: str, netdev_id: str, fds: Sequence[int],
                          vhost_fds: Sequence[int] = (), *,
                          timeout: float | None = None) -> Future[None]:
        """Add a network backend over open descriptors (a tap or macvtap queue each).

        Each of ``fds`` is passed to QEMU with ``getfd`` (SCM_RIGHTS) as ``"fd0"``,
        ``"fd1"`` ..., each of ``vhost_fds`` as ``"vhostfd0"`` ..., then ``netdev_add``
        gets ``{"type", "id", "fds": "fd0:fd1"}`` and, when there are vhost
        descriptors, ``"vhost": true, "vhostfds": "vhostfd0:vhostfd1"``.

        All the commands are submitted together, so no other command of this client
        comes between them and two such operations cannot swap their ``fdN`` names
        (QEMU consumes a name when ``netdev_add`` uses it). When a ``getfd`` or
        ``netdev_add`` fails, the names already registered are released with
        ``closefd`` and the future fails with the first error.

        Args:
            netdev_type: usually ``"tap"``.
            netdev_id: the netdev's id.
            fds: the queue descriptors (at least one). The caller keeps them; QEMU
                gets copies.
            vhost_fds: ``/dev/vhost-net`` descriptors, one per queue, or none.
            timeout: seconds for each command.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: no ``fds``, a descriptor that is not open, an empty type
                or id (nothing is sent).
        """
        op = "netdev_add_by_fds"
        args: dict[str, Any] = {"type": check_id(op, "netdev_type", netdev_type),
                                "id": check_id(op, "netdev_id", netdev_id)}
        if isinstance(fds, (str, bytes)) or isinstance(vhost_fds, (str, bytes)):
            raise ValidationError(f"{op}: fds and vhost_fds are sequences of descriptors")
        if not fds:
            raise ValidationError(f"{op}: at least one descriptor is needed in fds")
        named = [(f"fd{i}", check_fd(op, f"fds[{i}]", fd)) for i, fd in enumerate(fds)]
        vhost_named = [(f"vhostfd{i}", check_fd(op, f"vhost_fds[{i}]", fd))
                       for i, fd in enumerate(vhost_fds)]
        args["fds"] = ":".join(name for name, _ in named)
        if vhost_named:
            args["vhost"] = True
            args["vhostfds"] = ":".join(name for name, _ in vhost_named)
        return with_named_fds(self._executor, op, named + vhost_named, "netdev_add", args, timeout)

    def netdev_del(self, netdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a network backend (``netdev_del {"id"}``).

        Returns:
            A future done (None) when the netdev is gone.

        Raises:
            ValidationError: ``netdev_id`` is empty or not a string.
        """
        netdev_id = check_id("netdev_del", "netdev_id", netdev_id)
        return command(self._executor, "netdev_del", {"id": netdev_id}, timeout)
