"""The ``qmplex`` command, run for real (``python -m qmplex`` in a subprocess) against
the fake QMP server in threaded mode; plus in-process tests of its pure helpers."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import qmplex
from qmplex import Client, Event, Reactor, StateError
from qmplex.cli import (
    EXIT_CODES,
    EXIT_COMMAND_ERROR,
    EXIT_CONNECTION,
    EXIT_DEMO_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    UsageError,
    build_parser,
    event_to_json,
    parse_address,
    parse_arguments,
    render_json,
)
from qmplex.cli.catalog import ArgInfo, CommandInfo, complete_words
from qmplex.cli.commands import events_command
from qmplex.reactor import TimerHandle
from qmplex.testing import FakeQMPServer

from .reliability.helpers import FakeClock
from .terminal import PROMPT, Terminal

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(qmplex.__file__)))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The subprocess imports the same qmplex as this test (source tree or installed).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
    env.pop("NO_COLOR", None)
    return env


def qmplex_cmd(*args: str, input: str | None = None, timeout: float = 20,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m qmplex ARGS`` and return the finished process (text mode)."""
    return subprocess.run(
        [sys.executable, "-m", "qmplex", *args], input=input, capture_output=True, text=True,
        timeout=timeout, env={**_env(), **(env or {})}, check=False,
    )


def qmplex_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qmplex", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=_env(),
    )


@pytest.fixture
def server() -> Iterator[FakeQMPServer]:
    with FakeQMPServer() as srv:
        yield srv


# ------------------------------------------------------------------ help, usage
@pytest.mark.parametrize("sub", [[], ["exec"], ["events"], ["shell"], ["demo"]])
def test_help_everywhere_documents_exit_codes(sub: list[str]) -> None:
    done = qmplex_cmd(*sub, "--help")
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.startswith("usage: qmplex")
    for code in EXIT_CODES:
        assert f"  {code:<4} " in done.stdout


def test_usage_errors_exit_2() -> None:
    assert qmplex_cmd().returncode == EXIT_USAGE  # no sub-command
    assert qmplex_cmd("exec").returncode == EXIT_USAGE  # missing SOCKET COMMAND
    assert qmplex_cmd("frobnicate").returncode == EXIT_USAGE
    done = qmplex_cmd("exec", "/nonexistent.sock", "query-status", "not-a-pair")
    assert done.returncode == EXIT_USAGE
    assert "expected key=value" in done.stderr


def test_python_dash_m_and_version() -> None:
    done = qmplex_cmd("--version")
    assert done.returncode == EXIT_OK
    assert done.stdout.startswith("qmplex ")


# ------------------------------------------------------------------------- exec
def test_exec_prints_pretty_json_without_colour_when_piped(server: FakeQMPServer) -> None:
    done = qmplex_cmd("exec", server.path, "query-status")
    assert done.returncode == EXIT_OK, done.stderr
    assert orjson.loads(done.stdout) == {"status": "prelaunch", "singlestep": False,
                                         "running": False}
    assert "\n  " in done.stdout  # indented
    assert "\x1b[" not in done.stdout


def test_exec_colour_can_be_forced(server: FakeQMPServer) -> None:
    done = qmplex_cmd("--color", "always", "exec", server.path, "query-status")
    assert done.returncode == EXIT_OK
    assert "\x1b[" in done.stdout
    assert "prelaunch" in done.stdout


def test_exec_key_value_arguments_are_json_when_they_parse(server: FakeQMPServer) -> None:
    server.on("x-echo", handler=lambda args: args)
    done = qmplex_cmd("exec", server.path, "x-echo", "n=3", "flag=true", "name=null-co",
                      'obj={"k": [1, 2]}', 'id="42"', "text=hello world")
    assert done.returncode == EXIT_OK, done.stderr
    expected = {"n": 3, "flag": True, "name": "null-co", "obj": {"k": [1, 2]}, "id": "42",
                "text": "hello world"}
    assert orjson.loads(done.stdout) == expected
    assert server.received[-1]["arguments"] == expected


def test_exec_accepts_one_json_object(server: FakeQMPServer) -> None:
    done = qmplex_cmd("exec", server.path, "blockdev-add",
                      '{"driver": "null-co", "node-name": "n0"}')
    assert done.returncode == EXIT_OK, done.stderr
    assert orjson.loads(done.stdout) == {}
    assert "n0" in server.nodes


def test_exec_command_error_prints_class_and_desc(server: FakeQMPServer) -> None:
    done = qmplex_cmd("exec", server.path, "device_del", "id=nope")
    assert done.returncode == EXIT_COMMAND_ERROR
    assert done.stderr.strip() == "DeviceNotFound: Device 'nope' not found"
    assert done.stdout == ""


def test_exec_unknown_command(server: FakeQMPServer) -> None:
    done = qmplex_cmd("exec", server.path, "no-such-command")
    assert done.returncode == EXIT_COMMAND_ERROR
    assert done.stderr.startswith("CommandNotFound: ")


def test_exec_cannot_connect_exits_3(tmp_path: Any) -> None:
    done = qmplex_cmd("exec", str(tmp_path / "absent.sock"), "query-status")
    assert done.returncode == EXIT_CONNECTION
    assert done.stderr.startswith("ConnectError: ")


@pytest.mark.parametrize(("greeting", "error"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "DecodeError"),
    (b'{"hello": "world"}\r\n', "GreetingError"),
])
def test_exec_peer_that_is_not_qmp_exits_3(greeting: bytes, error: str) -> None:
    with FakeQMPServer(greeting=greeting) as srv:
        done = qmplex_cmd("exec", srv.path, "query-status")
    assert done.returncode == EXIT_CONNECTION
    assert done.stderr.startswith(f"{error}: ")
    assert len(done.stderr.splitlines()) == 1


def test_exec_reply_timeout_exits_4(server: FakeQMPServer) -> None:
    server.on("query-status", never=True)
    done = qmplex_cmd("exec", "--timeout", "0.2", server.path, "query-status")
    assert done.returncode == EXIT_TIMEOUT
    assert done.stderr.startswith("OperationTimeout: ")
    assert "query-status: timed out after 0.2 s" in done.stderr


def test_exec_greeting_timeout_exits_4() -> None:
    with FakeQMPServer(no_greeting=True) as srv:
        done = qmplex_cmd("--connect-timeout", "0.2", "exec", srv.path, "query-status")
    assert done.returncode == EXIT_TIMEOUT


def test_connect_timeout_says_another_client_may_hold_the_socket() -> None:
    # What QEMU's monitor socket does while it serves another client: the connection is
    # accepted by the kernel (the listen backlog) and no greeting ever comes.
    tmp = tempfile.mkdtemp(prefix="qmplex-held-")
    path = os.path.join(tmp, "qmp.sock")
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path)
            listener.listen(1)
            done = qmplex_cmd("--connect-timeout", "0.3", "exec", path, "query-status")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == EXIT_TIMEOUT
    assert done.stderr == (
        f"OperationTimeout: {path}: connecting to {path!r}: no answer within 0.3 s (waiting "
        "for the greeting; QEMU serves one client at a time on a monitor socket, so another "
        "client may be holding it)\n")


def test_verbose_logs_the_connection_on_stderr(server: FakeQMPServer) -> None:
    done = qmplex_cmd("-v", "exec", server.path, "query-name")
    assert done.returncode == EXIT_OK
    assert "connected to" in done.stderr and "QEMU 7.2.0" in done.stderr


# ----------------------------------------------------------------------- events
def _start_events(server: FakeQMPServer, *args: str) -> subprocess.Popen[str]:
    proc = qmplex_popen("events", server.path, *args)
    # Once qmp_capabilities has arrived, the subscriptions (made before connecting)
    # see every event that follows its reply.
    server.wait_for_commands(1, timeout=10)
    return proc


def test_events_prints_one_json_per_line_and_stops_at_count(server: FakeQMPServer) -> None:
    proc = _start_events(server, "--count", "2")
    server.emit("RTC_CHANGE", {"offset": 1})
    server.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    server.emit("RTC_CHANGE", {"offset": 3})
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == EXIT_OK, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in lines] == ["RTC_CHANGE", "RESET"]
    assert lines[0]["data"] == {"offset": 1}
    assert set(lines[0]["timestamp"]) == {"seconds", "microseconds"}
    assert lines[0]["timestamp"]["seconds"] > 1_000_000_000


def test_events_filters_by_name(server: FakeQMPServer) -> None:
    proc = _start_events(server, "--name", "STOP", "--name", "RESUME", "--count", "2")
    server.emit("RTC_CHANGE", {"offset": 1})
    server.emit("STOP")
    server.emit("RESET", {"guest": True})
    server.emit("RESUME")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == EXIT_OK, err
    assert [orjson.loads(line)["event"] for line in out.splitlines()] == ["STOP", "RESUME"]


def test_events_too_few_before_timeout_exits_4(server: FakeQMPServer) -> None:
    proc = _start_events(server, "--count", "3", "--timeout", "0.5")
    server.emit("STOP")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == EXIT_TIMEOUT
    assert len(out.splitlines()) == 1
    assert "1 of 3 events" in err


class _Output(io.StringIO):
    """A stdout that another thread writes to, and this one waits on."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def write(self, text: str) -> int:
        with self.changed:
            n = super().write(text)
            self.changed.notify_all()
        return n

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: text in self.getvalue(), timeout), \
                f"{text!r} not written; output: {self.getvalue()!r}"


class _TimerLog(Reactor):
    """A reactor that tells when a timer of ``delay`` seconds has been scheduled."""

    def __init__(self, delay: float, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.delay = delay
        self.scheduled = threading.Event()

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> TimerHandle:
        handle = super().call_later(delay, callback, *args)
        if delay == self.delay:
            self.scheduled.set()
        return handle


def test_events_timeout_alone_is_a_duration(
        server: FakeQMPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--timeout S`` without ``--count`` prints the events of S seconds, then exits
    with 0 and no message. The command's reactor runs on a clock that only this test
    moves, so no step depends on how fast the machine is."""
    clock = FakeClock()
    reactor = _TimerLog(7.25, clock)
    out = _Output()
    monkeypatch.setattr(sys, "stdout", out)
    ns = build_parser().parse_args(["events", server.path, "--timeout", "7.25"])
    ended: list[int | BaseException] = []

    def run() -> None:
        try:
            ended.append(events_command(ns, Client(reactor)))
        except BaseException as exc:
            ended.append(exc)

    def reactor_passes(n: int = 2) -> None:
        """Let the command's reactor run ``n`` passes (it wakes for each)."""
        for _ in range(n):
            passed = threading.Event()
            reactor.call_soon_threadsafe(passed.set)
            assert passed.wait(10)

    def wake() -> None:
        with contextlib.suppress(StateError):  # closed: the command has ended
            reactor.call_soon_threadsafe(lambda: None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        server.wait_for_commands(1, timeout=10)
        assert reactor.scheduled.wait(10), "the command set no 7.25 s deadline"
        start = clock.now
        server.emit("RTC_CHANGE", {"offset": 1})
        out.wait_for('"offset":1')
        # A moment before the end, the command still runs: after its reactor has run
        # at that time, an event is still printed.
        clock.now = start + 7.2
        reactor_passes()
        server.emit("RTC_CHANGE", {"offset": 2})
        out.wait_for('"offset":2')
        assert not ended
        # At the end it stops by itself.
        clock.now = start + 7.25
        wake()
        worker.join(10)
    finally:
        if worker.is_alive():  # unblock it whatever went wrong
            clock.now += 3600
            wake()
            worker.join(10)
    assert ended == [EXIT_OK]
    assert [orjson.loads(line)["data"] for line in out.getvalue().splitlines()] == [
        {"offset": 1}, {"offset": 2}]


def test_events_connection_lost_exits_3(server: FakeQMPServer) -> None:
    proc = _start_events(server)
    server.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    server.drop_clients()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == EXIT_CONNECTION
    assert orjson.loads(out)["event"] == "SHUTDOWN"
    assert err.startswith("ConnectionLost: ")


# ------------------------------------------------------------------------ shell
def test_shell_reads_commands_from_a_pipe(server: FakeQMPServer) -> None:
    script = ("query-status\n"
              "blockdev-add driver=null-co node-name=n1\n"
              'blockdev-add {"driver": "null-co", "node-name": "n1"}\n'
              "help\n"
              "quit\n")
    done = qmplex_cmd("shell", "--no-history", server.path, input=script)
    # Every line ran; the exit code is the failed line's, as exec gives it.
    assert done.returncode == EXIT_COMMAND_ERROR, done.stderr
    assert '"prelaunch"' in done.stdout
    assert "GenericError: Duplicate nodes with node-name='n1'" in done.stderr
    assert "commands known (from query-commands)" in done.stdout
    assert server.commands()[-3:] == ["query-status", "blockdev-add", "blockdev-add"]


SCHEMA_7_2 = orjson.loads((Path(__file__).parent / "data" / "qmp-schema-7.2.json").read_bytes())


@pytest.fixture
def schema_server(server: FakeQMPServer) -> FakeQMPServer:
    """The fake server, answering query-qmp-schema with QEMU 7.2's schema."""
    server.on("query-qmp-schema", returns=SCHEMA_7_2)
    return server


def test_shell_validates_each_line_against_the_schema(schema_server: FakeQMPServer) -> None:
    script = ("blockdev-add driver=null-co node-name=n1 bogus=1\n"
              "query-statuss\n"
              "device_del\n"
              "set_password protocol=vnc password=424242\n"
              "query_status\n"
              "blockdev-add driver=null-co node-name=n2\n"
              "help blockdev-add\n")
    done = qmplex_cmd("shell", "--no-history", schema_server.path, input=script)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.splitlines() == [
        "ValidationError: blockdev-add: bogus: unknown argument; expected one of (with "
        "driver 'null-co'): driver, node-name, discard, cache, read-only, auto-read-only, "
        "force-share, detect-zeroes, size, latency-ns, read-zeroes",
        "ValidationError: query-statuss: unknown command (did you mean 'query-status' or "
        "'query-stats' or 'query-colo-status'?)",
        "ValidationError: device_del: id: missing required argument (expected str)",
        "ValidationError: set_password: password: expected str, got int <redacted>",
        "ValidationError: query_status: unknown command (did you mean 'query-status' or "
        "'query-stats' or 'query-colo-status'?)",
    ]
    assert "commands known (from query-qmp-schema)" not in done.stdout  # help COMMAND only
    assert "blockdev-add driver=<enum> [node-name=<str>]" in done.stdout
    # Only the valid line reached QEMU (after the shell's own schema load).
    assert [c for c in schema_server.commands() if c not in (
        "qmp_capabilities", "query-target", "query-qmp-schema")] == ["blockdev-add"]
    assert "n2" in schema_server.nodes and "n1" not in schema_server.nodes


@pytest.mark.parametrize(("script", "code"), [
    ("query-status\nquery-name\n", EXIT_OK),
    ("device_del id=nope\nblockdev-add driver=null-co node-name=n1 x\n", EXIT_COMMAND_ERROR),
    ("blockdev-add driver=null-co x\ndevice_del id=nope\n", EXIT_USAGE),
    ('blockdev-add {"driver": \n', EXIT_USAGE),
    ("query-status\ndevice_del id=nope\n!quit\nquery-name\n", EXIT_COMMAND_ERROR),
    ("query-status\n!quit\nquery-name\n", EXIT_CONNECTION),
], ids=["ok", "qemu-error-first", "usage-first", "bad-json", "error-then-lost", "lost"])
def test_shell_from_a_pipe_exits_with_the_first_failure(server: FakeQMPServer, script: str,
                                                        code: int) -> None:
    done = qmplex_cmd("shell", "--no-history", server.path, input=script)
    assert done.returncode == code, done.stderr


def test_shell_from_a_pipe_timeout_exits_4(server: FakeQMPServer) -> None:
    server.on("query-status", never=True)
    done = qmplex_cmd("shell", "--no-history", "--timeout", "0.2", server.path,
                      input="query-status\ndevice_del id=nope\nquery-name\n")
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "query-status: timed out after 0.2 s" in done.stderr
    assert "DeviceNotFound" in done.stderr  # the lines after it ran
    assert '"name"' in done.stdout or "{}" in done.stdout


def test_shell_ends_at_eof_and_reports_a_lost_connection(server: FakeQMPServer) -> None:
    done = qmplex_cmd("shell", "--no-history", server.path, input="query-name\n")
    assert done.returncode == EXIT_OK
    done = qmplex_cmd("shell", "--no-history", server.path, input="!quit\nquery-name\n")
    assert done.returncode == EXIT_CONNECTION
    assert "connection lost" in done.stderr or "ConnectionLost" in done.stderr


def _shell_on_a_terminal(server: FakeQMPServer, home: str) -> Terminal:
    return Terminal([sys.executable, "-m", "qmplex", "shell", "--no-history", server.path],
                    {**_env(), "TERM": "xterm", "HOME": home})


def test_shell_prints_events_above_the_prompt(server: FakeQMPServer, tmp_path: Any) -> None:
    term = _shell_on_a_terminal(server, str(tmp_path))
    try:
        term.expect(PROMPT)
        term.send("query-st")
        term.expect("query-st")
        # The event goes on its own line, then the prompt comes back with what was typed.
        server.emit("RTC_CHANGE", {"offset": 7})
        term.expect(r'RTC_CHANGE \{"offset":7\}\s*' + PROMPT + "query-st")
        term.send("atus\r")
        assert '"prelaunch"' in term.expect(PROMPT)
        term.send("quit\r")
        assert term.wait() == EXIT_OK
    finally:
        term.kill()


def test_shell_keeps_secrets_out_of_its_history(server: FakeQMPServer, tmp_path: Any) -> None:
    history = tmp_path / "history"
    term = Terminal([sys.executable, "-m", "qmplex", "shell", "--history", str(history),
                     server.path], {**_env(), "TERM": "xterm", "HOME": str(tmp_path)})
    try:
        term.expect(PROMPT)
        term.send("change-vnc-password password=hunter2\r")
        term.expect(PROMPT)
        term.send("query-status\r")
        term.expect(PROMPT)
        term.send("quit\r")
        assert term.wait() == EXIT_OK  # at a terminal a failed line does not set the code
    finally:
        term.kill()
    text = history.read_text()
    assert "query-status" in text
    assert "hunter2" not in text and "change-vnc-password" not in text


def test_shell_waiting_at_the_prompt_ends_when_the_connection_is_lost(
        server: FakeQMPServer, tmp_path: Any) -> None:
    # input() returns only on Enter, EOF or a signal: the shell's reactor thread sends
    # SIGINT to the main thread waiting there.
    term = _shell_on_a_terminal(server, str(tmp_path))
    try:
        term.expect(PROMPT)
        server.drop_clients()
        term.expect("connection lost")
        assert term.wait() == EXIT_CONNECTION
    finally:
        term.kill()


# ------------------------------------------------------------------------- demo
def test_demo_on_the_fake_server() -> None:
    done = qmplex_cmd("demo", "--fake", "--disks", "20", "--json")
    assert done.returncode == EXIT_OK, done.stderr
    result = orjson.loads(done.stdout)
    assert result["backend"] == "fake" and result["disks"] == 20
    assert [p["name"] for p in result["phases"]] == ["start", "plug", "unplug"]
    assert result["phases"][1]["commands"] == 40
    # Not a terminal: one progress line per phase on stderr.
    assert "plug    20/20 done" in done.stderr
    assert "unplug  20/20 done" in done.stderr


def test_demo_human_report_and_bad_disks() -> None:
    done = qmplex_cmd("demo", "--fake", "--disks", "3", "--quiet")
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.splitlines()[0].startswith("backend: the fake QMP server")
    assert any(line.startswith("plug:") for line in done.stdout.splitlines())
    assert done.stderr == ""
    assert qmplex_cmd("demo", "--fake", "--disks", "0").returncode == EXIT_USAGE


def test_demo_without_qemu_falls_back_to_the_fake_server() -> None:
    done = qmplex_cmd("demo", "--disks", "2", "--json",
                      env={"QMPLEX_QEMU": "/nonexistent/qemu-system-x86_64"})
    assert done.returncode == EXIT_OK, done.stderr
    assert orjson.loads(done.stdout)["backend"] == "fake"


def test_demo_failures_exit_5(tmp_path: Any) -> None:
    done = qmplex_cmd("demo", "--disks", "2", "--qemu", str(tmp_path / "no-such-qemu"))
    assert done.returncode == EXIT_DEMO_FAILED
    assert done.stderr.startswith("DemoError: QEMU binary not found")
    done = qmplex_cmd("demo", "--disks", "2", "--qemu", "false")  # exits at once
    assert done.returncode == EXIT_DEMO_FAILED
    assert "QEMU did not start" in done.stderr


def test_qmplex_demo_is_a_deprecated_alias_of_qmplex_cli_demo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from qmplex.cli import demo

    monkeypatch.delitem(sys.modules, "qmplex.demo", raising=False)
    with pytest.warns(DeprecationWarning, match=r"qmplex\.cli\.demo"):
        legacy = importlib.import_module("qmplex.demo")
    assert legacy.__all__ == demo.__all__
    assert all(getattr(legacy, name) is getattr(demo, name) for name in demo.__all__)


# ---------------------------------------------------------------- pure helpers
def test_parse_arguments() -> None:
    assert parse_arguments([]) is None
    assert parse_arguments(["a=1", "b=x", "c=", "d"]) == {"a": 1, "b": "x", "c": "d"}
    assert parse_arguments(["s=", "t=2"]) == {"s": "", "t": 2}
    assert parse_arguments(['{"a":', "[1]}"]) == {"a": [1]}
    assert parse_arguments(["v=[1, 2]"]) == {"v": [1, 2]}
    for bad in (["x"], ["=1"], ["a=1", "a=2"], ["{nope"], ["[1]"]):
        with pytest.raises(UsageError):
            parse_arguments(bad)


def test_parse_address() -> None:
    assert parse_address("/run/qmp.sock") == "/run/qmp.sock"
    assert parse_address("qmp.sock") == "qmp.sock"
    assert parse_address("localhost:4444") == ("localhost", 4444)
    assert parse_address("tcp:10.0.0.1:5") == ("10.0.0.1", 5)
    assert parse_address("[::1]:4444") == ("::1", 4444)


def test_render_json_plain_equals_indented_json() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}, "e": [], "f": {}}
    assert orjson.loads(render_json(value)) == value
    coloured = render_json(value, colour=True)
    stripped = coloured
    for code in ("\x1b[0m", "\x1b[1;34m", "\x1b[32m", "\x1b[36m", "\x1b[35m"):
        stripped = stripped.replace(code, "")
    assert stripped == render_json(value)


def test_event_to_json_rebuilds_qemu_timestamp() -> None:
    ev = Event("STOP", {}, 1700000000.25)
    assert event_to_json(ev) == {"timestamp": {"seconds": 1700000000, "microseconds": 250000},
                                 "event": "STOP", "data": {}}


def test_completion_candidates() -> None:
    catalog = {
        "blockdev-add": CommandInfo("blockdev-add", (ArgInfo("driver", "str", False,
                                                             ("null-co", "raw")),
                                                     ArgInfo("node-name", "str", True))),
        "blockdev-del": CommandInfo("blockdev-del", (ArgInfo("node-name", "str", False),)),
        "device_del": CommandInfo("device_del", (ArgInfo("id", "str", False),)),
        "query-name": CommandInfo("query-name", None),
    }
    assert complete_words(catalog, "blockdev-", 0, "blockdev-") == ["blockdev-add ",
                                                                    "blockdev-del "]
    assert complete_words(catalog, "", 0, "") == [f"{n} " for n in [*sorted(catalog), "help",
                                                                   "quit", "exit"]]
    assert complete_words(catalog, "!q", 0, "!q") == ["!query-name "]
    assert complete_words(catalog, "help dev", 5, "dev") == ["device_del "]
    assert complete_words(catalog, "device_del ", 11, "") == ["id="]
    line = "blockdev-add driver=null-co "
    assert complete_words(catalog, line, len(line), "") == ["node-name="]
    line = "blockdev-add driver=n"
    assert complete_words(catalog, line, 13, "driver=n") == ["driver=null-co "]
    assert complete_words(catalog, "query-name ", 11, "") == []
