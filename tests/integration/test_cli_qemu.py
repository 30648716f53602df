"""The ``qmplex`` command against a real QEMU (TCG, paused, no guest): exec, events, the
bulk hot-plug demo, and the interactive shell driven through a pseudo-terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

import qmplex
from qmplex.cli import (
    EXIT_COMMAND_ERROR,
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from qmplex.qemu import QemuProcess, qemu_or_skip

from ..terminal import PROMPT, Terminal

pytestmark = pytest.mark.qemu

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(qmplex.__file__)))
SCSI = ["-device", "virtio-scsi-pci,id=scsi0"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def qmplex_cmd(*args: str, timeout: float = 30,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qmplex", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(), check=False, input=input)


@pytest.fixture
def binary() -> str:
    return qemu_or_skip()


@pytest.fixture
def vm(binary: str, tmp_path: object) -> Iterator[QemuProcess]:
    # No client of our own: QEMU serves one client per QMP socket at a time.
    with QemuProcess(binary, extra_args=SCSI, connect=False) as proc:
        yield proc


def test_exec_on_qemu(vm: QemuProcess) -> None:
    done = qmplex_cmd("exec", vm.qmp_path, "query-status")
    assert done.returncode == EXIT_OK, done.stderr
    status = orjson.loads(done.stdout)
    status.pop("singlestep", None)  # gone from query-status in newer QEMU
    assert status == {"status": "prelaunch", "running": False}
    done = qmplex_cmd("exec", vm.qmp_path, "blockdev-add", "driver=null-co", "node-name=n0")
    assert done.returncode == EXIT_OK, done.stderr
    done = qmplex_cmd("exec", vm.qmp_path, "device_add",
                      '{"driver": "scsi-hd", "id": "d0", "drive": "n0", "bus": "scsi0.0"}')
    assert done.returncode == EXIT_OK, done.stderr
    done = qmplex_cmd("exec", vm.qmp_path, "qom-list", "path=/machine/peripheral")
    assert "d0" in {p["name"] for p in orjson.loads(done.stdout)}
    done = qmplex_cmd("exec", vm.qmp_path, "device_del", "id=nope")
    assert done.returncode == EXIT_COMMAND_ERROR
    assert done.stderr.strip() == "DeviceNotFound: Device 'nope' not found"


def test_events_on_qemu(binary: str, tmp_path: os.PathLike[str]) -> None:
    # A second QMP monitor for the test's own commands: QMP events go to every monitor.
    second = os.path.join(os.fspath(tmp_path), "second.sock")
    extra = [*SCSI, "-qmp", f"unix:{second},server=on,wait=off"]
    with QemuProcess(binary, extra_args=extra, connect=False) as vm:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qmplex", "-v", "events", vm.qmp_path, "--name", "RESUME",
             "--name", "STOP", "--count", "2", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # -v: "connected to ..." once subscribed
            assert "connected to" in line
            with qmplex.connect(second, timeout=10) as client:
                client.execute("cont").result(timeout=10)
                client.execute("query-status").result(timeout=10)  # not an event
                client.execute("stop").result(timeout=10)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == EXIT_OK, err
        events = [orjson.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events] == ["RESUME", "STOP"]
        assert all(e["timestamp"]["seconds"] > 1_000_000_000 for e in events)


def test_demo_on_qemu(binary: str) -> None:
    done = qmplex_cmd("demo", "--disks", "50", "--json", "--qemu", binary, timeout=60)
    assert done.returncode == EXIT_OK, done.stderr
    result = orjson.loads(done.stdout)
    assert result["backend"] == "qemu"
    assert int(result["version"].split(".")[0]) >= 5  # QEMU 5.0 and newer are supported
    assert [p["name"] for p in result["phases"]] == ["start", "plug", "unplug"]
    assert result["phases"][1]["commands"] == 100
    assert "unplug  50/50 done" in done.stderr


def test_shell_through_a_pseudo_terminal(vm: QemuProcess, tmp_path: os.PathLike[str]) -> None:
    history = os.path.join(os.fspath(tmp_path), "history")
    term = Terminal([sys.executable, "-m", "qmplex", "shell", "--history", history,
                     vm.qmp_path], _env(TERM="xterm", HOME=os.fspath(tmp_path)))
    try:
        banner = term.expect(PROMPT)
        assert "Connected to QEMU 7." in banner or "Connected to QEMU" in banner
        # A command and its pretty-printed return.
        term.send("query-status\r")
        out = term.expect(PROMPT)
        assert '"status": "prelaunch"' in out
        assert b"\x1b[32m\"prelaunch\"" in term.raw  # a terminal gets colours
        # Tab completion of command names: ambiguous, so a second TAB lists them.
        term.send("blockdev-\t\t")
        listing = term.expect(r"(?s)blockdev-del.*" + PROMPT + r"blockdev-", timeout=10)
        assert "blockdev-add" in listing and "blockdev-del" in listing
        term.send("\x15")  # Ctrl-U: clear the line
        # A unique completion, then argument names and enum values from the schema.
        term.send("blockdev-a\t")
        term.expect(r"blockdev-add ")
        term.send("driv\t")
        term.expect(r"driver=")
        term.send("null-c\t")
        term.expect(r"null-co ")
        term.send("node-name=n7\r")
        assert "{}" in term.expect(PROMPT)
        # help COMMAND shows its arguments.
        term.send("help device_del\r")
        out = term.expect(PROMPT)
        assert "device_del id=<str>" in out
        # Errors as CLASS: desc; events printed as they arrive.
        term.send("device_del id=nope\r")
        assert "DeviceNotFound: Device 'nope' not found" in term.expect(PROMPT)
        term.send("cont\r")
        assert "RESUME" in term.expect(PROMPT)
        # Ctrl-C drops the line being typed, as in other shells. (Wait for the echo:
        # the terminal discards typed input that readline has not read yet on ^C.)
        term.send("query-sta")
        term.expect("query-sta")
        term.interrupt(r"\^C\s*" + PROMPT)
        term.send("quit\r")
        assert term.wait() == EXIT_OK
    finally:
        term.kill()
    with open(history, encoding="utf-8") as f:
        assert "query-status" in f.read()


def test_shell_ends_when_qemu_quits(vm: QemuProcess, tmp_path: os.PathLike[str]) -> None:
    term = Terminal([sys.executable, "-m", "qmplex", "shell", "--no-history", vm.qmp_path],
                    _env(TERM="xterm", HOME=os.fspath(tmp_path)))
    try:
        term.expect(PROMPT)
        term.send("!quit\r")  # '!': QMP's quit, not the shell's
        term.expect("connection lost")
        assert term.wait() == EXIT_CONNECTION
    finally:
        term.kill()


def test_exec_while_another_client_holds_the_socket(vm: QemuProcess) -> None:
    # QEMU serves one client per monitor socket: the second waits for a greeting that
    # comes only when the first leaves, and the connect timeout says so.
    holder = qmplex.connect(vm.qmp_path, timeout=10)
    try:
        done = qmplex_cmd("--connect-timeout", "1", "exec", vm.qmp_path, "query-status")
    finally:
        holder.close()
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "no answer within 1.0 s (waiting for the greeting; QEMU serves one client at a " \
           "time on a monitor socket, so another client may be holding it)" in done.stderr
    done = qmplex_cmd("--connect-timeout", "10", "exec", vm.qmp_path, "query-status")
    assert done.returncode == EXIT_OK, done.stderr


def test_shell_from_a_pipe_validates_and_exits_with_the_first_failure(vm: QemuProcess) -> None:
    script = ("blockdev-add driver=null-co node-name=n0\n"
              "blockdev-add driver=null-co node-name=n1 size=1G\n"
              "device_del id=nope\n"
              "query-named-block-nodes flat=true\n")
    done = qmplex_cmd("shell", "--no-history", vm.qmp_path, input=script)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.splitlines() == [
        "ValidationError: blockdev-add: size: expected int, got str '1G'",
        "DeviceNotFound: Device 'nope' not found",
    ]
    nodes = orjson.loads(done.stdout[done.stdout.index("["):])
    assert [n["node-name"] for n in nodes] == ["n0"]  # n1 was never sent
    done = qmplex_cmd("shell", "--no-history", vm.qmp_path,
                      input="device_del id=nope\nblockdev-add driver=null-co bogus=1\n")
    assert done.returncode == EXIT_COMMAND_ERROR, done.stderr
