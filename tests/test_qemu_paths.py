"""``qmplex.qemu``'s socket paths, without QEMU: the checks made before a start, what is
removed afterwards, and where each monitor goes."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator

import pytest

from qmplex import StateError
from qmplex.qemu import MAX_UNIX_PATH, QemuError, QemuProcess, SocketPathError, describe_exit, paths
from qmplex.qemu.workspace import Workspace


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory with a short path (pytest's tmp_path can be too long for AF_UNIX)."""
    path = tempfile.mkdtemp(prefix="qx-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stale_socket(path: str) -> None:
    """Leave a socket file nobody listens on, as a killed QEMU does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)


def test_a_path_too_long_for_af_unix_is_refused_up_front(short_dir: str) -> None:
    fits = os.path.join(short_dir, "s" * (MAX_UNIX_PATH - len(short_dir) - 1))
    assert len(fits) == MAX_UNIX_PATH
    paths.check_length(fits)
    with pytest.raises(SocketPathError) as info:
        QemuProcess(qmp_path=fits + "x")
    assert info.value.path == fits + "x"
    assert "108 bytes long; a Unix socket path holds at most 107" in str(info.value)
    assert isinstance(info.value, QemuError)
    with pytest.raises(SocketPathError, match="at most 107"):
        QemuProcess(extra_monitors={"ops": fits + "y"})


def test_claim_refuses_a_missing_directory_a_listener_and_a_plain_file(short_dir: str) -> None:
    with pytest.raises(SocketPathError, match="directory .* does not exist"):
        paths.claim(os.path.join(short_dir, "nodir", "vm.sock"))

    live = os.path.join(short_dir, "live.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(live)
        listener.listen()
        with pytest.raises(SocketPathError, match="already listening"):
            paths.claim(live)
        assert stat.S_ISSOCK(os.lstat(live).st_mode)  # left alone
    os.unlink(live)

    plain = os.path.join(short_dir, "plain.sock")
    with open(plain, "w") as f:
        f.write("keep me")
    with pytest.raises(SocketPathError, match="not a socket"):
        paths.claim(plain)
    with open(plain) as f:
        assert f.read() == "keep me"


def test_claim_removes_a_stale_socket(short_dir: str) -> None:
    path = os.path.join(short_dir, "vm.sock")
    paths.claim(path)  # nothing there: fine
    stale_socket(path)
    paths.claim(path)
    assert not os.path.exists(path)


def test_release_removes_only_the_socket_qemu_made(short_dir: str) -> None:
    path = os.path.join(short_dir, "vm.sock")
    stale_socket(path)
    made = paths.identity(path)
    assert made is not None
    other = os.path.join(short_dir, "other.sock")
    stale_socket(other)
    os.replace(other, path)  # another socket took the place (another inode)
    assert paths.identity(path) != made
    paths.release(path, made)
    assert os.path.exists(path)
    paths.release(path, paths.identity(path))
    assert not os.path.exists(path)
    # Never recorded: removed only when nobody listens.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        paths.release(path, None)
        assert os.path.exists(path)
    paths.release(path, None)
    assert not os.path.exists(path)
    assert os.path.isdir(short_dir)


def test_monitor_paths_beside_the_main_one_or_where_given(short_dir: str) -> None:
    main = os.path.join(short_dir, "vm1.sock")
    vm = QemuProcess(qmp_path=main, extra_monitors=["ops", "audit_2"])
    assert vm.qmp_path == main == vm.monitor_path()
    assert vm.monitor_names == ("ops", "audit_2")
    assert vm.monitor_path("ops") == os.path.join(short_dir, "vm1-ops.sock")
    assert vm.monitor_path("audit_2") == os.path.join(short_dir, "vm1-audit_2.sock")
    with pytest.raises(KeyError, match="no monitor named 'nope'"):
        vm.monitor_path("nope")
    argv = vm.argv
    assert argv.count("-qmp") == 4  # main, two extra, the launcher's own
    assert f"unix:{main},server=on,wait=off" in argv

    given = QemuProcess(extra_monitors={"ops": os.path.join(short_dir, "o,ps.sock")})
    assert given.monitor_path("ops") == os.path.join(short_dir, "o,ps.sock")
    assert f"unix:{short_dir}/o,,ps.sock,server=on,wait=off" in given.argv  # QEMU's escaping
    with pytest.raises(StateError, match="private directory"):
        _ = given.qmp_path  # in the private directory: not made yet


@pytest.mark.parametrize("monitors", [["a b"], [""], ["x" * 33], ["ops", "ops"], "ops"])
def test_bad_monitor_names_are_refused(monitors: list[str] | str) -> None:
    with pytest.raises((ValueError, TypeError)):
        QemuProcess(extra_monitors=monitors)


def test_two_monitors_on_one_path_are_refused(short_dir: str) -> None:
    main = os.path.join(short_dir, "vm.sock")
    with pytest.raises(ValueError, match="share a socket path"):
        QemuProcess(qmp_path=main, extra_monitors={"ops": main})


def test_workspace_keeps_its_directory_path_across_runs() -> None:
    files = Workspace(None, ["ops"])
    files.make()
    first = files.directory
    assert first is not None and stat.S_IMODE(os.stat(first).st_mode) == 0o700
    assert files.monitor_path("ops") == os.path.join(first, "qmp-ops.sock")
    with open(files.stderr_path, "wb") as f:
        f.write(b"line 1\nline 2\n")
    files.release(final=True)  # as after kill(): the directory goes, stderr is kept
    assert not os.path.exists(first)
    assert files.read_stderr(100) == b"line 1\nline 2\n"
    files.make()  # made again at the same path
    assert files.directory == first and os.path.isdir(first)
    files.remove()
    os.mkdir(first)  # someone else takes the name meanwhile: refused, not reused
    try:
        with pytest.raises(QemuError, match="cannot make the private directory"):
            files.make()
    finally:
        os.rmdir(first)


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(1) == "exited with status 1"
    assert describe_exit(-9) == "was killed by SIGKILL (signal 9)"
    assert describe_exit(-15) == "was killed by SIGTERM (signal 15)"


def test_qemu_error_shows_the_last_lines_of_stderr() -> None:
    stderr = "".join(f"line {i}\n" for i in range(100))
    error = QemuError("QEMU exited with status 1", returncode=1, stderr=stderr)
    assert error.stderr == stderr and error.returncode == 1
    text = str(error)
    assert text.startswith("QEMU exited with status 1; stderr:\nline 80\n")
    assert text.endswith("line 99") and "line 79" not in text
