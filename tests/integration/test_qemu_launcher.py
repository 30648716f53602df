"""``qmplex.qemu``: starting, stopping, killing and freezing a real QEMU.

Each test starts its own paused QEMU (``-S``, TCG, no devices) and leaves nothing
behind: no process, no zombie, no socket directory. A few tests use a shell script as a
fake QEMU binary to reach the failure paths.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import unittest
from pathlib import Path

import pytest

import qmplex
from qmplex.qemu import (
    DEFAULT_BINARY,
    ENV_BINARY,
    ENV_REQUIRE,
    QemuError,
    QemuProcess,
    find_qemu,
    qemu_or_skip,
    qemu_version,
)

pytestmark = pytest.mark.qemu


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


def read_line(sock: socket.socket) -> bytes:
    """Read one CRLF-terminated line from a blocking socket (b"" on EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return data
        data += chunk
    return data


def assert_reaped(pid: int) -> None:
    """The process is gone: not our unreaped child, and not a zombie anywhere."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return
    state = stat_line.rsplit(")", 1)[1].split()[0]
    assert state != "Z", f"pid {pid} is a zombie"


def fake_binary(tmp_path: Path, body: str) -> str:
    """Write an executable shell script acting as a QEMU binary; return its path."""
    path = tmp_path / "fake-qemu"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def test_context_manager_starts_connects_and_cleans_up(binary: str) -> None:
    with QemuProcess(binary, name="vm,1") as vm:
        sock_dir = os.path.dirname(vm.qmp_path)
        assert stat.S_IMODE(os.stat(sock_dir).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(vm.qmp_path).st_mode)
        assert vm.alive() and vm.returncode is None
        pid = vm.pid
        assert vm.client is not None
        status = vm.client.execute("query-status").result(timeout=10)
        assert status["status"] == "prelaunch"  # paused=True passes -S
        # -name is passed with QEMU's comma escaping.
        assert vm.client.execute("query-name").result(timeout=10) == {"name": "vm,1"}
        client = vm.client
    assert vm.returncode == 0  # quit was sent: a clean exit, no signal
    assert "terminating on signal" not in vm.stderr_tail()
    assert not vm.alive()
    assert vm.client is None and client.state is qmplex.ClientState.CLOSED
    assert not os.path.exists(sock_dir)
    assert_reaped(pid)
    assert vm.stop() == 0  # idempotent


def test_raw_socket_reads_the_greeting(binary: str) -> None:
    with QemuProcess(binary, connect=False) as vm:
        assert vm.client is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(vm.qmp_path)
            greeting = read_line(sock)
            assert greeting.endswith(b"}\r\n")
            version = json.loads(greeting)["QMP"]["version"]["qemu"]
            found = (version["major"], version["minor"], version["micro"])
            assert found == qemu_version(binary)
            sock.sendall(b'{"execute": "qmp_capabilities", "id": 1}\n')
            assert read_line(sock) == b'{"return": {}, "id": 1}\r\n'
        pid = vm.pid
        # Without a client, stop() falls back to SIGTERM, on which QEMU exits cleanly.
        assert vm.stop() == 0
        assert "terminating on signal 15" in vm.stderr_tail()
    assert_reaped(pid)


def test_args_replace_the_default_machine_line(binary: str) -> None:
    args = ["-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none"]
    with QemuProcess(binary, args, paused=True) as vm:
        assert "-S" not in vm.argv and vm.argv[-2] == "-qmp"
        assert vm.client is not None
        assert vm.client.execute("query-status").result(timeout=10)["running"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # Rejected before the QMP socket exists.
        (["-no-such-option"], "-no-such-option: invalid option"),
        # Rejected after QEMU listened and greeted: start() must still notice.
        (["-device", "no-such-model"], "'no-such-model' is not a valid device model name"),
    ],
)
@pytest.mark.parametrize("connect", [False, True])
def test_bad_argument_raises_with_stderr(
    binary: str, extra: list[str], message: str, connect: bool
) -> None:
    vm = QemuProcess(binary, extra_args=extra, connect=connect)
    with pytest.raises(QemuError) as info:
        vm.start()
    assert message in str(info.value)
    assert "exited with status 1 during start-up" in str(info.value)
    assert message in info.value.stderr
    assert info.value.returncode == 1
    assert not os.path.exists(os.path.dirname(vm.qmp_path))
    assert message in vm.stderr_tail()  # kept after the file was removed
    assert_reaped(vm.pid)
    with pytest.raises(qmplex.StateError):
        vm.start()  # a QemuProcess runs once


def test_kill_drops_the_connection(binary: str) -> None:
    vm = QemuProcess(binary, connect=False).start()
    pid = vm.pid
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(vm.qmp_path)
        assert read_line(sock).startswith(b'{"QMP"')
        vm.kill()
        assert sock.recv(1) == b""  # EOF: the peer is gone
    assert vm.returncode == -9 and not vm.alive()
    assert not os.path.exists(os.path.dirname(vm.qmp_path))
    assert_reaped(pid)
    assert vm.stop() == -9  # idempotent after kill


def test_freeze_makes_commands_time_out_and_thaw_answers_them(binary: str) -> None:
    with QemuProcess(binary) as vm:
        assert vm.client is not None
        vm.freeze()
        assert vm.alive()
        pending = vm.client.execute("query-status")
        with pytest.raises(qmplex.Timeout):
            pending.result(timeout=0.2)
        vm.thaw()
        assert pending.result(timeout=10)["status"] == "prelaunch"
        vm.freeze()  # stop() must cope with a frozen QEMU: thaw, then quit
        pid = vm.pid
    assert vm.returncode == 0
    assert_reaped(pid)


def test_stop_while_another_thread_drives_the_reactor(binary: str) -> None:
    reactor = qmplex.Reactor()
    vm = QemuProcess(binary, reactor=reactor).start()
    client = vm.client
    assert client is not None and client.reactor is reactor
    driver = threading.Thread(target=reactor.run)
    driver.start()
    try:
        assert vm.stop() == 0
        assert "terminating on signal" not in vm.stderr_tail()  # quit, handed over
    finally:
        reactor.call_soon_threadsafe(reactor.stop)
        driver.join(10)
    assert client.state is qmplex.ClientState.CLOSED
    reactor.close()


def test_start_timeout_kills_a_binary_that_never_listens(tmp_path: Path) -> None:
    fake = fake_binary(tmp_path, "echo 'fake qemu is sulking' >&2\nexec sleep 60\n")
    vm = QemuProcess(fake, start_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(QemuError) as info:
        vm.start()
    assert time.monotonic() - began < 5
    assert "within 0.3 s" in str(info.value)
    assert "fake qemu is sulking" in info.value.stderr
    assert info.value.returncode == -9
    assert not os.path.exists(os.path.dirname(vm.qmp_path))
    assert_reaped(vm.pid)


def test_a_binary_that_exits_reports_its_status(tmp_path: Path) -> None:
    fake = fake_binary(tmp_path, 'echo "args: $*" >&2\nexit 3\n')
    vm = QemuProcess(fake, extra_args=["-device", "x"])
    with pytest.raises(QemuError) as info:
        vm.start()
    assert info.value.returncode == 3
    # The default headless line, then extra_args, then -qmp on the private socket.
    line = "args: -machine pc -accel tcg -nodefaults -display none -S -m 64 -device x -qmp unix:"
    assert line in info.value.stderr


def test_a_binary_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    fake = fake_binary(tmp_path, "echo 'out of memory, say' >&2\nkill -KILL $$\n")
    vm = QemuProcess(fake, name="vm7")
    with pytest.raises(QemuError) as info:
        vm.start()
    assert info.value.returncode == -9
    assert str(info.value).startswith(
        "QEMU 'vm7' was killed by SIGKILL (signal 9) during start-up; stderr:\n")
    assert str(info.value).endswith("out of memory, say")
    error = vm.exit_error()
    assert error is not None and error.returncode == -9
    assert "out of memory, say" in error.stderr


def test_restart_before_any_start_is_refused() -> None:
    vm = QemuProcess("qemu-that-never-runs")
    with pytest.raises(qmplex.StateError, match="never started"):
        vm.restart()
    with pytest.raises(qmplex.StateError, match="never started"):
        vm.stop()
    assert vm.exit_error() is None and vm.returncode is None and not vm.alive()


def test_a_missing_binary_raises_qemu_error(tmp_path: Path) -> None:
    vm = QemuProcess(str(tmp_path / "no-such-qemu"))
    with pytest.raises(QemuError, match="cannot run"):
        vm.start()
    with pytest.raises(qmplex.StateError):
        _ = vm.pid


def test_atexit_kills_a_forgotten_qemu(binary: str, tmp_path: Path) -> None:
    src = str(Path(qmplex.__file__).parent.parent)
    script = (
        "import os\n"
        "from qmplex.qemu import QemuProcess\n"
        f"vm = QemuProcess({binary!r}, connect=False).start()\n"
        "print(vm.pid, os.path.dirname(vm.qmp_path), flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    pid_text, sock_dir = done.stdout.split()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_text), 0)
    assert not os.path.exists(sock_dir)


def test_find_qemu_and_qemu_version_with_a_fake_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_binary(tmp_path, "echo 'QEMU emulator version 9.1.50 (v9.1.0-50-gdeadbeef)'\n")
    monkeypatch.setenv(ENV_BINARY, fake)
    assert find_qemu() == fake
    assert find_qemu(DEFAULT_BINARY) == fake
    assert qemu_version(fake) == (9, 1, 50)
    assert find_qemu(str(tmp_path / "absent")) is None
    silent = fake_binary(tmp_path, "exit 0\n")
    with pytest.raises(QemuError, match="no version"):
        qemu_version(silent)


def test_qemu_or_skip_skips_or_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, str(tmp_path / "absent-qemu"))
    monkeypatch.delenv(ENV_REQUIRE, raising=False)
    with pytest.raises(unittest.SkipTest, match="absent-qemu not found"):
        qemu_or_skip()
    monkeypatch.setenv(ENV_REQUIRE, "1")
    with pytest.raises(QemuError, match="QMPLEX_REQUIRE_QEMU=1"):
        qemu_or_skip()
