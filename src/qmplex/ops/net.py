"""Network backends (netdevs): over options, a chardev, or open descriptors.

:class:`NetOps` is ``client.net``. Part of :mod:`qmplex.ops`. The NICs that use a
netdev are plugged by :class:`~qmplex.ops.DeviceOps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ValidationError
from ..futures import Future
from .args import check_bool, check_fd, check_fdname, check_id, check_int, wire_name
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
    def netdev_add(self, /, netdev_type: str, netdev_id: str, *, ifname: str | None = None,
                   script: str | None = None, downscript: str | None = None,
                   queues: int | None = None, vhost: bool = False,
                   timeout: float | None = None, **extra: Any) -> Future[None]:
        """Add a network backend (``netdev_add``).

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID}`` plus ``"ifname"``,
        ``"queues"`` and ``"vhost": true`` when given, and each ``extra`` keyword under
        its QMP name (``ipv6_prefix=...`` -> ``"ipv6-prefix"``, see :func:`wire_name`).
        A ``tap`` always gets ``"script"`` and ``"downscript"``: ``"no"`` unless given,
        since QEMU would otherwise run ``/etc/qemu-ifup`` (govmm sends ``ifname``,
        ``script`` and ``downscript`` for every type, which QEMU refuses for types
        without them, such as ``user``); other types get them only when given.

        Args:
            netdev_type: ``"tap"``, ``"user"``, ``"socket"``, ``"vhost-user"`` ...
            netdev_id: the netdev's id.
            ifname: the tap interface's name (None: the kernel chooses).
            script: the tap up script (None: ``"no"`` for a tap).
            downscript: the tap down script (None: ``"no"`` for a tap).
            queues: the number of queues (None: one).
            vhost: use vhost-net.
            timeout: seconds for the command.
            **extra: further netdev options (values sent as given).

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type, id or name, queues below 1, wrong types.
        """
        op = "netdev_add"
        netdev_type = check_id(op, "netdev_type", netdev_type)
        args: dict[str, Any] = {"type": netdev_type,
                                "id": check_id(op, "netdev_id", netdev_id)}
        tap = netdev_type in _TAP_TYPES
        if ifname is not None:
            args["ifname"] = check_id(op, "ifname", ifname)
        for name, value in (("downscript", downscript), ("script", script)):
            if value is not None:
                args[name] = check_id(op, name, value)
            elif tap:
                args[name] = "no"
        if queues is not None:
            args["queues"] = check_int(op, "queues", queues, 1)
        if check_bool(op, "vhost", vhost):
            args["vhost"] = True
        for key, value in extra.items():
            wire = wire_name(key)
            if wire in args:
                raise ValidationError(f"{op}: {key!r} repeats the argument {wire!r}")
            args[wire] = value
        return command(self._executor, "netdev_add", args, timeout)

    def netdev_chardev_add(self, netdev_type: str, netdev_id: str, chardev: str, *,
                           queues: int | None = None,
                           timeout: float | None = None) -> Future[None]:
        """Add a network backend over a chardev (``netdev_add``), i.e. ``vhost-user``.

        Sends ``{"type": NETDEV_TYPE, "id": NETDEV_ID, "chardev": CHARDEV}`` plus
        ``"queues"`` when given.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: an empty type or id, queues below 1, wrong types.
        """
        op = "netdev_chardev_add"
        args: dict[str, Any] = {
            "type": check_id(op, "netdev_type", netdev_type),
            "id": check_id(op, "netdev_id", netdev_id),
            "chardev": check_id(op, "chardev", chardev),
        }
        if queues is not None:
            args["queues"] = check_int(op, "queues", queues, 1)
        return command(self._executor, "netdev_add", args, timeout)

    def netdev_add_by_fds(self, netdev_type: str, netdev_id: str, fds: Sequence[int | str],
                          *, vhost_fds: Sequence[int | str] = (),
                          timeout: float | None = None) -> Future[None]:
        """Add a network backend over descriptors (a tap or macvtap queue each).

        Each of ``fds`` is an open descriptor or the name of one QEMU already holds
        (given with :meth:`FdOps.getfd`, as govmm's ``ExecuteNetdevAddByFds`` takes
        them); likewise ``vhost_fds``. A descriptor is passed to QEMU with ``getfd``
        (SCM_RIGHTS) as ``"fd<i>"`` (``"vhostfd<i>"`` for ``vhost_fds[i]``), a name is
        used as it is; then ``netdev_add`` gets ``{"type", "id", "fds": "N0:N1..."}``
        and, when there are vhost descriptors, ``"vhost": true, "vhostfds":
        "V0:V1..."``.

        The ``getfd`` commands and ``netdev_add`` are submitted together, so no other
        command of this client comes between them and two such operations cannot swap
        their ``fd<i>`` names (QEMU consumes a name when ``netdev_add`` uses it). When
        a ``getfd`` or ``netdev_add`` fails, the names this call registered are
        released with ``closefd`` and the future fails with the first error.

        Args:
            netdev_type: usually ``"tap"``.
            netdev_id: the netdev's id.
            fds: the queue descriptors or their names (at least one). The caller
                keeps its descriptors; QEMU gets copies.
            vhost_fds: ``/dev/vhost-net`` descriptors or names, one per queue, or none.
            timeout: seconds for each command.

        Returns:
            A future done (None) when the netdev exists.

        Raises:
            ValidationError: no ``fds``, a descriptor that is not open, a name that
                is empty, starts with a digit or is also the name of a passed
                descriptor, an empty type or id (nothing is sent).
        """
        op = "netdev_add_by_fds"
        args: dict[str, Any] = {"type": check_id(op, "netdev_type", netdev_type),
                                "id": check_id(op, "netdev_id", netdev_id)}
        if isinstance(fds, (str, bytes)) or isinstance(vhost_fds, (str, bytes)):
            raise ValidationError(f"{op}: fds and vhost_fds are sequences of descriptors "
                                  "or names")
        if not fds:
            raise ValidationError(f"{op}: at least one descriptor is needed in fds")
        named: list[tuple[str, int]] = []
        names: dict[str, list[str]] = {"fds": [], "vhost_fds": []}
        for what, prefix, items in (("fds", "fd", fds), ("vhost_fds", "vhostfd", vhost_fds)):
            for i, item in enumerate(items):
                if isinstance(item, str):
                    names[what].append(check_fdname(op, item))
                else:
                    named.append((f"{prefix}{i}", check_fd(op, f"{what}[{i}]", item)))
                    names[what].append(f"{prefix}{i}")
        passed = {name for name, _ in named}
        clash = passed & {n for items in (fds, vhost_fds) for n in items if isinstance(n, str)}
        if clash:
            raise ValidationError(f"{op}: the name {sorted(clash)[0]!r} is also the name of a "
                                  "descriptor passed in this call")
        args["fds"] = ":".join(names["fds"])
        if names["vhost_fds"]:
            args["vhost"] = True
            args["vhostfds"] = ":".join(names["vhost_fds"])
        if not named:
            return command(self._executor, "netdev_add", args, timeout)
        return with_named_fds(self._executor, op, named, "netdev_add", args, timeout)

    def netdev_del(self, netdev_id: str, *, timeout: float | None = None) -> Future[None]:
        """Remove a network backend (``netdev_del {"id"}``).

        Returns:
            A future done (None) when the netdev is gone.

        Raises:
            ValidationError: ``netdev_id`` is empty or not a string.
        """
        netdev_id = check_id("netdev_del", "netdev_id", netdev_id)
        return command(self._executor, "netdev_del", {"id": netdev_id}, timeout)
