"""Passing file descriptors to QEMU: named (``getfd``) and in fd sets (``add-fd``).

:class:`FdOps` is ``client.fds``. Part of :mod:`qmplex.ops`. Descriptors travel with
their command as SCM_RIGHTS (``execute(..., fds=[fd])``), so only over a Unix socket.
"""

from __future__ import annotations

from typing import Any

from ..futures import Future
from .args import check_fd, check_fdname, check_id, check_int, check_opt_str
from .executor import command, discard
from .namespace import Namespace
from .results import AddFdInfo

__all__ = ["FdOps"]


class FdOps(Namespace):
    """File descriptors (``client.fds``): ``getfd``, ``closefd``, ``add_fd``,
    ``remove_fd``."""

    __slots__ = ()

    def getfd(self, fdname: str, fd: int, *, timeout: float | None = None) -> Future[None]:
        """Pass a file descriptor to QEMU under a name (``getfd {"fdname"}``, the
        descriptor travelling with the command as SCM_RIGHTS).

        A later command names it (``"fd": NAME``, ``"vhostfd": NAME`` ...), which
        consumes the name; :meth:`closefd` releases an unused one. Giving a name again
        replaces (and closes, in QEMU) the earlier descriptor.

        Args:
            fdname: the name; it must not start with a digit.
            fd: an open descriptor. The caller keeps it: QEMU gets a copy.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU holds the descriptor.

        Raises:
            ValidationError: an empty name or one starting with a digit, a descriptor
                that is not open.
        """
        op = "getfd"
        fdname = check_fdname(op, fdname)
        fd = check_fd(op, "fd", fd)
        return self._executor.execute("getfd", {"fdname": fdname}, fds=[fd],
                                      timeout=timeout).then(discard)

    def closefd(self, fdname: str, *, timeout: float | None = None) -> Future[None]:
        """Close a descriptor QEMU received with :meth:`getfd` (``closefd {"fdname"}``).

        Returns:
            A future done (None) when QEMU has closed it.

        Raises:
            ValidationError: ``fdname`` is empty or not a string.
        """
        fdname = check_id("closefd", "fdname", fdname)
        return command(self._executor, "closefd", {"fdname": fdname}, timeout)

    def add_fd(self, fd: int, *, fdset_id: int | None = None, opaque: str | None = None,
               timeout: float | None = None) -> Future[AddFdInfo]:
        """Add a descriptor to an fd set (``add-fd``, the descriptor travelling as
        SCM_RIGHTS), usable as ``/dev/fdset/ID`` where QEMU opens a file.

        Args:
            fd: an open descriptor. The caller keeps it: QEMU gets a copy.
            fdset_id: the set (None: QEMU picks a free one).
            opaque: a free-form note QEMU stores with it.
            timeout: seconds for the command.

        Returns:
            A future for the :class:`AddFdInfo` (the set's id, QEMU's fd number).

        Raises:
            ValidationError: a descriptor that is not open, a negative set id.
        """
        op = "add_fd"
        fd = check_fd(op, "fd", fd)
        args: dict[str, Any] = {}
        if fdset_id is not None:
            args["fdset-id"] = check_int(op, "fdset_id", fdset_id, 0)
        opaque = check_opt_str(op, "opaque", opaque)
        if opaque is not None:
            args["opaque"] = opaque
        return self._executor.execute("add-fd", args or None, fds=[fd],
                                      timeout=timeout).then(AddFdInfo.from_qmp)

    def remove_fd(self, fdset_id: int, *, fd: int | None = None,
                  timeout: float | None = None) -> Future[None]:
        """Remove a descriptor, or a whole fd set, from QEMU (``remove-fd``).

        QEMU closes the descriptor once nothing uses it; on a paused VM the set may
        stay listed by ``query-fdsets``.

        Args:
            fdset_id: the set.
            fd: QEMU's fd number (:attr:`AddFdInfo.fd`); None removes the whole set.
            timeout: seconds for the command.

        Returns:
            A future done (None) when QEMU has removed it.

        Raises:
            ValidationError: negative or non-integer ids.
        """
        op = "remove_fd"
        args: dict[str, Any] = {"fdset-id": check_int(op, "fdset_id", fdset_id, 0)}
        if fd is not None:
            args["fd"] = check_int(op, "fd", fd, 0)
        return command(self._executor, "remove-fd", args, timeout)
