"""Where QEMU's monitor sockets go: the private directory, and the caller's own paths.

Theory of operation:

- A path given by the caller is checked before QEMU starts: it must fit in
  ``sockaddr_un.sun_path`` (107 bytes and the NUL; QEMU refuses longer ones too), its
  directory must exist, and nothing may be listening there. QEMU unlinks whatever is at
  the path before it binds, so without this check a second QEMU would silently take
  the monitor of a first one. A socket file with nobody listening (a QEMU that was
  killed leaves its socket behind) is stale and removed; any other kind of file is
  left alone and refused.
- When QEMU is gone, the launcher removes a socket file at a caller's path only when it
  is the one QEMU made: the same inode as recorded once QEMU was ready (or, when it
  never got ready, a socket nobody listens on). The caller's directory is never removed.
- The private directory (``tempfile.mkdtemp``, mode 0700) holds QEMU's stderr, the
  launcher's own monitor and, by default, the monitors. When it must be made again at
  the same place (a restart after :meth:`~qmplex.qemu.QemuProcess.kill` removed it), it
  is made with ``mkdir`` at that path, which fails rather than reuse a directory that
  someone else created meanwhile.

Nothing here starts a process or speaks QMP.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile

from .errors import QemuError, SocketPathError

__all__ = ["MAX_UNIX_PATH", "check_length", "claim", "identity", "make_private_dir",
           "release"]

#: The longest Unix socket path, in bytes: ``sockaddr_un.sun_path`` holds 108 with the
#: terminating NUL (and QEMU refuses a path of 108 bytes or more).
MAX_UNIX_PATH = 107

Identity = tuple[int, int]  # (st_dev, st_ino) of a socket file


def check_length(path: str) -> None:
    """Refuse a path too long for a Unix socket address.

    Raises:
        SocketPathError: it is longer than :data:`MAX_UNIX_PATH` bytes.
    """
    size = len(os.fsencode(path))
    if size > MAX_UNIX_PATH:
        raise SocketPathError(path, f"{size} bytes long; a Unix socket path holds at most "
                                    f"{MAX_UNIX_PATH} (108 with the terminating NUL)")


def _listening(path: str) -> bool | None:
    """Whether something accepts connections at ``path``: True, False (refused: a
    stale socket), or None (no file there any more)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a Unix connect completes at once, or fails at once
        err = probe.connect_ex(path)
    if err == 0 or err in (errno.EAGAIN, errno.EWOULDBLOCK):  # EAGAIN: backlog full
        return True
    if err == errno.ECONNREFUSED:
        return False
    if err == errno.ENOENT:
        return None
    raise OSError(err, os.strerror(err), path)


def claim(path: str) -> None:
    """Make sure QEMU may create its monitor socket at ``path`` (a caller's path).

    Removes a stale socket file (nobody listening).

    Raises:
        SocketPathError: the path is too long, its directory does not exist, something
            listens there, a file that is not a socket is in the way, or it cannot be
            checked (the ``OSError`` is the cause).
    """
    check_length(path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise SocketPathError(path, f"its directory {directory!r} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketPathError(path, f"cannot be checked: {exc}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(path, "a file that is not a socket is in the way")
    try:
        live = _listening(path)
    except OSError as exc:
        raise SocketPathError(path, f"cannot be checked: {exc}") from exc
    if live:
        raise SocketPathError(path, "something is already listening there (another QEMU?)")
    if live is False:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SocketPathError(path, f"a stale socket there cannot be removed: {exc}"
                                  ) from exc


def identity(path: str) -> Identity | None:
    """The (device, inode) of the socket file at ``path``, or None if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None


def release(path: str, made: Identity | None) -> None:
    """Remove the socket file QEMU made at a caller's ``path``, once QEMU is gone.

    Args:
        path: the socket path.
        made: the identity recorded while QEMU ran (None: never recorded); a socket
            file of another identity is someone else's and is left alone.
    """
    found = identity(path)
    if found is None or (made is not None and found != made):
        return
    try:
        if made is None and _listening(path) is not False:
            return
        os.unlink(path)
    except OSError:
        pass


def make_private_dir(longest_name: str, previous: str | None = None) -> str:
    """Create the private directory (mode 0700) and return its path.

    Args:
        longest_name: the longest file name that will be a socket in it: the directory
            goes to ``/tmp`` instead of ``$TMPDIR`` when that one makes it too long.
        previous: make it again at this path (it must not exist).

    Raises:
        QemuError: ``previous`` exists (someone else made it) or cannot be made.
        SocketPathError: even in ``/tmp`` the socket path would be too long.
    """
    if previous is not None:
        try:
            os.mkdir(previous, 0o700)
            os.chmod(previous, 0o700)  # whatever the umask
        except OSError as exc:
            raise QemuError(f"cannot make the private directory {previous!r} again: "
                            f"{exc}") from exc
        return previous
    directory = tempfile.mkdtemp(prefix="qmplex-")
    if len(os.fsencode(os.path.join(directory, longest_name))) > MAX_UNIX_PATH:
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="qmplex-", dir="/tmp")
        try:
            check_length(os.path.join(directory, longest_name))
        except SocketPathError:
            os.rmdir(directory)
            raise
    os.chmod(directory, 0o700)  # mkdtemp already does; say it explicitly
    return directory
