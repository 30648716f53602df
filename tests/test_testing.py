"""Tests of the fake QMP server itself (qmplex.testing), with plain sockets and orjson.

Most tests use the threaded mode through a blocking Unix socket; the tests of timing and
of "nothing happens" share one reactor with the server (``connect_pair``) and drive it
with a fake clock, so they never sleep. ``test_fake_matches_real_qemu`` runs the same
script against a real QEMU and the fake and compares the transcripts.
"""

from __future__ import annotations

import array
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from qmplex.errors import StateError, Timeout
from qmplex.reactor import Reactor
from qmplex.testing import FakeCommandError, FakeQMPServer, fake_server

NEGOTIATE = {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Peer:
    """A blocking QMP client on a plain socket."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def connect(cls, path: str) -> Peer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: dict[str, Any] | bytes) -> None:
        self.sock.sendall(msg if isinstance(msg, bytes) else orjson.dumps(msg) + b"\n")

    def line(self) -> bytes:
        """The next raw line, CRLF included."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF; pending bytes: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def msg(self) -> Any:
        return orjson.loads(self.line())

    def cmd(self, name: str, args: dict[str, Any] | None = None, **extra: Any) -> Any:
        """Send a command and return the next message."""
        msg: dict[str, Any] = {"execute": name, **extra}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        return self.msg()

    def handshake(self) -> dict[str, Any]:
        greeting: dict[str, Any] = self.msg()
        assert self.cmd("qmp_capabilities", {"enable": ["oob"]}) == {"return": {}}
        return greeting

    def read_eof(self) -> bytes:
        """Everything until EOF."""
        data = self.buf
        while chunk := self.sock.recv(65536):
            data += chunk
        self.buf = b""
        return data


@pytest.fixture
def server() -> Iterator[FakeQMPServer]:
    with fake_server() as srv:
        yield srv
        assert srv.handler_errors == []


@pytest.fixture
def peer(server: FakeQMPServer) -> Iterator[Peer]:
    p = Peer.connect(server.path)
    p.handshake()
    yield p
    p.close()


# ---------------------------------------------------------------------------- wire


def test_greeting_format_and_crlf() -> None:
    with fake_server(version=(7, 2, 22), package="pkg", capabilities=("oob",)) as srv:
        p = Peer.connect(srv.path)
        line = p.line()
        assert line.endswith(b"\r\n")
        assert orjson.loads(line) == {
            "QMP": {
                "version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "pkg"},
                "capabilities": ["oob"],
            }
        }
        assert list(orjson.loads(line)["QMP"]["version"]["qemu"]) == ["micro", "minor", "major"]
        p.send(NEGOTIATE)
        p.send({"execute": "cont"})
        p.send(b"nonsense\n")
        for _ in range(4):  # return, RESUME, return, parse error
            assert p.line().endswith(b"}\r\n")
        p.close()


def test_negotiation_rule(server: FakeQMPServer) -> None:
    p = Peer.connect(server.path)
    p.msg()
    assert p.cmd("query-status", id=1) == {
        "id": 1,
        "error": {
            "class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        },
    }
    assert p.cmd("qmp_capabilities") == {"return": {}}
    assert p.cmd("qmp_capabilities", id="again") == {
        "id": "again",
        "error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored",
        },
    }
    assert p.cmd("query-status")["return"]["status"] == "prelaunch"
    # Without OOB negotiated, exec-oob is not a valid member.
    p.send({"exec-oob": "yank", "id": 3})
    assert p.msg()["error"]["desc"] == "QMP input member 'exec-oob' is unexpected"
    assert server.commands()[:3] == ["query-status", "qmp_capabilities", "qmp_capabilities"]
    p.close()


def test_unknown_capability_is_refused_and_negotiation_stays_open(server: FakeQMPServer) -> None:
    p = Peer.connect(server.path)
    p.msg()
    err = p.cmd("qmp_capabilities", {"enable": ["foo"]})
    assert err["error"]["class"] == "GenericError"
    assert p.cmd("query-status")["error"]["class"] == "CommandNotFound"
    assert p.cmd("qmp_capabilities") == {"return": {}}
    p.close()


@pytest.mark.parametrize(
    "cid", [0, -7, 2**40, 1.5, "s", "", None, True, False, [1, {"a": None}], {"x": [1.5, "y"]}]
)
def test_id_is_echoed_verbatim(peer: Peer, cid: Any) -> None:
    reply = peer.cmd("query-status", id=cid)
    assert reply["id"] == cid and type(reply["id"]) is type(cid)
    peer.send({"execute": "no-such-command", "id": cid})
    raw = peer.line()
    assert raw.startswith(b'{"id":')  # QEMU writes "id" first in an error reply
    assert orjson.loads(raw)["id"] == cid


def test_reply_without_id_has_no_id_member(peer: Peer) -> None:
    assert "id" not in peer.cmd("query-status")


def test_unknown_command(peer: Peer) -> None:
    assert peer.cmd("nosuch", id=[1]) == {
        "id": [1],
        "error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"},
    }


def test_pipelined_1000_commands_answered_in_order(peer: Peer, server: FakeQMPServer) -> None:
    n = 1000
    blob = b"".join(
        orjson.dumps({"execute": "query-status" if i % 7 else "nosuch", "id": i}) + b"\n"
        for i in range(n)
    )
    peer.send(blob)
    replies = [peer.msg() for _ in range(n)]
    assert [r["id"] for r in replies] == list(range(n))
    assert all(("error" in r) == (r["id"] % 7 == 0) for r in replies)
    assert len(server.commands()) == n + 1


def test_input_split_across_writes_and_several_objects_per_line(peer: Peer) -> None:
    data = orjson.dumps({"execute": "query-status", "id": "split"}) + b"\n"
    for i in range(len(data)):  # one byte per write
        peer.send(data[i : i + 1])
    assert peer.msg()["id"] == "split"
    peer.send(b'\r\n  \n{"execute":"query-name","id":1}{"execute":"query-name","id":2}\r\n')
    assert [peer.msg()["id"], peer.msg()["id"]] == [1, 2]


def test_invalid_json_line_gets_error_without_id(peer: Peer, server: FakeQMPServer) -> None:
    peer.send(b'garbage\n{"execute": \n[1]\n{"id": 5}\n{"execute": 1}\n')
    peer.send({"execute": "query-status", "arguments": [], "id": 6})
    peer.send({"execute": "query-status", "id": 7})
    errors = [peer.msg() for _ in range(6)]
    for err in errors[:2]:
        assert set(err) == {"error"}
        assert err["error"]["class"] == "GenericError"
        assert err["error"]["desc"].startswith("JSON parse error, ")
    assert errors[2] == {
        "error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}
    }
    assert errors[3] == {
        "id": 5,
        "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"},
    }
    assert errors[4]["error"]["desc"] == "QMP input member 'execute' must be a string"
    assert errors[5] == {
        "id": 6,
        "error": {"class": "GenericError",
                  "desc": "QMP input member 'arguments' must be an object"},
    }
    assert peer.msg()["id"] == 7  # the stream goes on
    assert server.bad_lines == [b"garbage", b'{"execute": ']


# ---------------------------------------------------------------- emulated QEMU


def test_events_come_before_the_reply_of_stop_and_cont(peer: Peer) -> None:
    assert peer.cmd("stop") == {"return": {}}  # prelaunch: no STOP, as in QEMU
    resume = peer.cmd("cont", id="c")
    assert resume["event"] == "RESUME" and "data" not in resume
    assert set(resume["timestamp"]) == {"seconds", "microseconds"}
    assert abs(resume["timestamp"]["seconds"] - time.time()) < 60
    assert peer.msg() == {"return": {}, "id": "c"}
    assert peer.cmd("query-status")["return"] == {
        "status": "running", "singlestep": False, "running": True,
    }
    assert peer.cmd("stop")["event"] == "STOP"
    assert peer.msg() == {"return": {}}
    assert peer.cmd("query-status")["return"]["status"] == "paused"
    reset = peer.cmd("system_reset")
    assert (reset["event"], reset["data"]) == (
        "RESET", {"guest": False, "reason": "host-qmp-system-reset"},
    )
    assert peer.msg() == {"return": {}}


def test_device_deleted_follows_device_del_children_first(peer: Peer) -> None:
    assert peer.cmd("blockdev-add", {"driver": "null-co", "node-name": "b0"}) == {"return": {}}
    assert peer.cmd("device_add", {"driver": "virtio-blk-pci", "id": "vb0", "drive": "b0"}) == {
        "return": {}
    }
    assert peer.cmd("device_del", {"id": "vb0"}, id=1) == {"return": {}, "id": 1}
    child = peer.msg()
    assert child["event"] == "DEVICE_DELETED"
    assert child["data"] == {"path": "/machine/peripheral/vb0/virtio-backend"}
    main = peer.msg()
    assert main["data"] == {"device": "vb0", "path": "/machine/peripheral/vb0"}
    assert peer.cmd("blockdev-del", {"node-name": "b0"}) == {"return": {}}


def test_blockdev_del_of_a_node_in_use_fails_until_the_event(server: FakeQMPServer) -> None:
    server.unplug_delay = 0.2  # long enough for the pipelined blockdev-del to arrive first
    p = Peer.connect(server.path)
    p.handshake()
    p.cmd("blockdev-add", {"driver": "null-co", "node-name": "b0"})
    scsi = {"driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0",
            "scsi-id": 0, "lun": 0}  # fmt: skip
    assert p.cmd("device_add", scsi) == {"return": {}}
    p.send({"execute": "device_del", "arguments": {"id": "d0"}, "id": 1})
    p.send({"execute": "blockdev-del", "arguments": {"node-name": "b0"}, "id": 2})
    assert p.msg() == {"return": {}, "id": 1}
    assert p.msg() == {
        "id": 2, "error": {"class": "GenericError", "desc": "Node b0 is in use"},
    }
    event = p.msg()  # scsi-hd: one event only, as in QEMU 7.2
    assert event["data"] == {"device": "d0", "path": "/machine/peripheral/d0"}
    assert p.cmd("blockdev-del", {"node-name": "b0"}) == {"return": {}}
    assert p.cmd("blockdev-del", {"node-name": "b0"})["error"]["desc"] == (
        "Failed to find node with node-name='b0'"
    )
    p.close()


def test_object_tables_and_errors(peer: Peer, server: FakeQMPServer) -> None:
    assert peer.cmd("netdev_add", {"type": "user", "id": "n0"}) == {"return": {}}
    assert peer.cmd("netdev_add", {"type": "user", "id": "n0"})["error"]["desc"] == (
        "Duplicate ID 'n0'"
    )
    assert peer.cmd("chardev-add", {"id": "c0", "backend": {"type": "null", "data": {}}}) == {
        "return": {}
    }
    assert peer.cmd("object-add", {"qom-type": "iothread", "id": "io0"}) == {"return": {}}
    assert set(server.netdevs) == {"n0"} and set(server.chardevs) == {"c0"}
    assert set(server.objects) == {"io0"}
    assert peer.cmd("device_add", {"driver": "virtserialport", "id": "p0", "chardev": "c0"}) == {
        "return": {}
    }
    assert peer.cmd("chardev-remove", {"id": "c0"})["error"]["desc"] == "Chardev 'c0' is busy"
    assert peer.cmd("device_del", {"id": "nope"}) == {
        "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}
    }
    assert peer.cmd("netdev_del", {"id": "n0"}) == {"return": {}}
    assert peer.cmd("netdev_del", {"id": "n0"})["error"]["class"] == "DeviceNotFound"
    assert peer.cmd("object-del", {"id": "io0"}) == {"return": {}}
    assert peer.cmd("device_add", {"id": "x"})["error"]["desc"] == "Parameter 'driver' is missing"


def test_cpus_and_queries(peer: Peer) -> None:
    cpus = peer.cmd("query-hotpluggable-cpus")["return"]
    assert cpus == [
        {"props": {"core-id": 0, "thread-id": 0, "socket-id": 1}, "vcpus-count": 1,
         "type": "qemu64-x86_64-cpu"},
        {"props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "vcpus-count": 1,
         "qom-path": "/machine/unattached/device[0]", "type": "qemu64-x86_64-cpu"},
    ]  # fmt: skip
    cpu = {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 1, "core-id": 0,
           "thread-id": 0}  # fmt: skip
    assert peer.cmd("device_add", cpu) == {"return": {}}
    slots = peer.cmd("query-hotpluggable-cpus")["return"]
    assert slots[0]["qom-path"] == "/machine/peripheral/cpu1"
    assert len(peer.cmd("query-cpus-fast")["return"]) == 2
    assert peer.cmd("device_del", {"id": "cpu1"}) == {"return": {}}
    assert peer.msg()["data"]["device"] == "cpu1"
    assert len(peer.cmd("query-cpus-fast")["return"]) == 1
    version = peer.cmd("query-version")["return"]
    assert version == {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "qmplex-fake"}
    names = {c["name"] for c in peer.cmd("query-commands")["return"]}
    assert {"qmp_capabilities", "device_del", "blockdev-add", "quit"} <= names
    hmp = peer.cmd("human-monitor-command", {"command-line": "info status"})
    assert hmp == {"return": "VM status: paused (prelaunch)\r\n"}


def test_qom_and_migration(peer: Peer) -> None:
    peer.cmd("device_add", {"driver": "usb-tablet", "id": "t0"})
    children = peer.cmd("qom-list", {"path": "/machine/peripheral"})["return"]
    assert {"name": "t0", "type": "child<usb-tablet>"} in children
    assert peer.cmd("qom-get", {"path": "/machine/peripheral/t0", "property": "type"}) == {
        "return": "usb-tablet"
    }
    assert peer.cmd("qom-set", {"path": "/machine", "property": "p", "value": 3}) == {
        "return": {}
    }
    assert peer.cmd("qom-get", {"path": "/machine", "property": "p"}) == {"return": 3}
    assert peer.cmd("qom-list", {"path": "/nope"})["error"]["class"] == "DeviceNotFound"
    caps = {"capabilities": [{"capability": "events", "state": True}]}
    assert peer.cmd("migrate-set-capabilities", caps) == {"return": {}}
    assert peer.cmd("query-migrate") == {"return": {}}
    setup = peer.cmd("migrate", {"uri": "exec:cat > /dev/null"})
    assert (setup["event"], setup["data"]) == ("MIGRATION", {"status": "setup"})
    assert peer.msg() == {"return": {}}
    seen = [(m["event"], m["data"]) for m in (peer.msg() for _ in range(4))]
    assert seen == [
        ("MIGRATION_PASS", {"pass": 1}), ("MIGRATION", {"status": "active"}),
        ("MIGRATION_PASS", {"pass": 2}), ("MIGRATION", {"status": "completed"}),
    ]
    assert peer.cmd("query-migrate")["return"]["status"] == "completed"
    assert peer.cmd("query-status")["return"]["status"] == "postmigrate"


def test_quit_sends_shutdown_then_return_then_closes(peer: Peer, server: FakeQMPServer) -> None:
    shutdown = peer.cmd("quit", id="q")
    assert (shutdown["event"], shutdown["data"]) == (
        "SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"},
    )
    assert peer.msg() == {"return": {}, "id": "q"}
    assert peer.read_eof() == b""
    server.wait_for_clients(0)


def test_emulate_qemu_off_knows_only_negotiation() -> None:
    with fake_server(emulate_qemu=False) as srv:
        p = Peer.connect(srv.path)
        p.handshake()
        assert p.cmd("query-status")["error"]["class"] == "CommandNotFound"
        srv.on("query-status", returns={"status": "running"})
        assert p.cmd("query-status") == {"return": {"status": "running"}}
        p.close()


# -------------------------------------------------------------------- scripting


def test_scripted_replies_handlers_errors_and_times(peer: Peer, server: FakeQMPServer) -> None:
    server.on("query-name", returns={"name": "vm"}, times=1)
    assert peer.cmd("query-name") == {"return": {"name": "vm"}}
    assert peer.cmd("query-name") == {"return": {}}  # the built-in again

    def add(args: dict[str, Any]) -> Any:
        if args.get("b") == 0:
            raise FakeCommandError("GenericError", "b must not be 0")
        server.emit("ADDED", {"sum": args["a"] + args["b"]})
        return args["a"] + args["b"]

    server.on("x-add", add)
    event = peer.cmd("x-add", {"a": 1, "b": 2}, id=1)
    assert (event["event"], event["data"]) == ("ADDED", {"sum": 3})
    assert peer.msg() == {"return": 3, "id": 1}
    assert peer.cmd("x-add", {"a": 1, "b": 0}) == {
        "error": {"class": "GenericError", "desc": "b must not be 0"}
    }
    server.on("device_del", error=("DeviceNotFound", "nope"), events=[("BEFORE", None)])
    assert peer.cmd("device_del", {"id": "a"}) == {"event": "BEFORE", "timestamp": peer_ts(peer)}
    assert peer.msg() == {"error": {"class": "DeviceNotFound", "desc": "nope"}}
    server.on("stop", reply_without_id=True)
    assert peer.cmd("stop", id=9) == {"return": {}}
    server.off("stop")
    assert peer.cmd("stop", id=9) == {"return": {}, "id": 9}
    with pytest.raises(ValueError):
        server.on("stop", returns=1, error=("A", "b"))


def peer_ts(peer: Peer) -> Any:
    """A matcher for any timestamp (the last one read is not kept)."""

    class _Any:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, dict) and set(other) == {"seconds", "microseconds"}

    return _Any()


def test_handler_bug_is_reported_and_the_server_keeps_serving() -> None:
    with fake_server() as srv:
        srv.on("boom", lambda args: 1 // 0)
        p = Peer.connect(srv.path)
        p.handshake()
        err = p.cmd("boom")
        assert err["error"]["class"] == "GenericError"
        assert "ZeroDivisionError" in err["error"]["desc"]
        assert p.cmd("query-status")["return"]["status"] == "prelaunch"
        assert len(srv.handler_errors) == 1
        p.close()


def test_never_drops_the_reply_but_later_commands_are_answered(
    peer: Peer, server: FakeQMPServer
) -> None:
    server.on("query-status", never=True)
    peer.send({"execute": "query-status", "id": 1})
    assert peer.cmd("query-name", id=2) == {"return": {}, "id": 2}


def test_events_after_and_emit_reach_every_negotiated_client(server: FakeQMPServer) -> None:
    a, b, c = (Peer.connect(server.path) for _ in range(3))
    a.handshake()
    b.handshake()
    c.msg()  # greeted, not negotiated: gets no events (as in QEMU)
    server.wait_for_clients(3)
    server.on("block-job-go", returns={}, events_after=[("JOB_DONE", {"id": "j"}, 0.01)])
    assert a.cmd("block-job-go") == {"return": {}}
    for p in (a, b):
        assert p.msg()["event"] == "JOB_DONE"
    server.emit("HELLO")
    for p in (a, b):
        assert p.msg()["event"] == "HELLO"
    assert c.cmd("qmp_capabilities") == {"return": {}}  # nothing was queued for it
    for p in (a, b, c):
        p.close()


def test_wait_for_commands_and_clients(server: FakeQMPServer) -> None:
    p = Peer.connect(server.path)
    p.send(NEGOTIATE)
    p.send({"execute": "query-status"})
    assert server.wait_for_commands(2) == ["qmp_capabilities", "query-status"]
    with pytest.raises(Timeout):
        server.wait_for_commands(3, timeout=0.05)
    p.close()
    server.wait_for_clients(0)
    assert server.received[1] == {"execute": "query-status"}


# ----------------------------------------------------------------------- faults


def test_close_after_greeting() -> None:
    with fake_server(close_after_greeting=True) as srv:
        p = Peer.connect(srv.path)
        assert orjson.loads(p.read_eof())["QMP"]["capabilities"] == ["oob"]
        p.close()


def test_raw_greeting_override() -> None:
    with fake_server(greeting=b"HELLO\n") as srv:
        p = Peer.connect(srv.path)
        assert p.line() == b"HELLO\n"
        assert p.cmd("qmp_capabilities") == {"return": {}}
        p.close()


def test_close_mid_line(peer: Peer, server: FakeQMPServer) -> None:
    server.on("query-status", close_mid_line=True)
    peer.send({"execute": "query-status", "id": 1})
    rest = peer.read_eof()
    full = b'{"return":{"status":"prelaunch","singlestep":false,"running":false},"id":1}\r\n'
    assert rest == full[: len(full) // 2]
    server.wait_for_clients(0)


def test_send_raw_and_drop_clients(peer: Peer, server: FakeQMPServer) -> None:
    junk = b"\x00garbage\r\n" + b"x" * 100_000 + b'\n{"partial'
    server.send_raw(junk)
    server.drop_clients()
    assert peer.read_eof() == junk
    assert server.clients == 0


def test_stall_backs_up_writes_and_resume_answers_everything(server: FakeQMPServer) -> None:
    p = Peer.connect(server.path)
    p.handshake()
    server.stall()
    line = orjson.dumps({"execute": "query-status", "id": 0})
    p.sock.setblocking(False)
    sent, pending = 0, b""
    while True:  # fill the socket buffers: the server reads nothing
        data = line.replace(b"0}", f"{sent}}}".encode()) + b"\n"
        try:
            n = p.sock.send(data)
        except BlockingIOError:
            break
        sent += 1
        if n < len(data):
            pending = data[n:]
            break
    assert sent > 100
    p.sock.settimeout(5.0)
    server.resume()
    p.sock.sendall(pending)
    assert [p.msg()["id"] for _ in range(sent)] == list(range(sent))
    p.close()


def test_fd_reception_with_scm_rights(peer: Peer, server: FakeQMPServer) -> None:
    r, w = os.pipe()
    try:
        cmd = orjson.dumps({"execute": "getfd", "arguments": {"fdname": "x"}}) + b"\n"
        peer.sock.sendmsg([cmd], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        assert peer.msg() == {"return": {}}
        assert len(server.received_fds) == 1
        theirs = os.fstat(server.received_fds[0])
        assert (theirs.st_ino, theirs.st_dev) == (os.fstat(r).st_ino, os.fstat(r).st_dev)
        assert peer.cmd("getfd", {"fdname": "y"})["error"]["desc"] == (
            "No file descriptor supplied via SCM_RIGHTS"
        )
        assert peer.cmd("closefd", {"fdname": "x"}) == {"return": {}}
        assert peer.cmd("closefd", {"fdname": "x"})["error"]["desc"] == (
            "File descriptor named 'x' not found"
        )
        cmd = orjson.dumps({"execute": "add-fd", "arguments": {"fdset-id": 2}}) + b"\n"
        peer.sock.sendmsg([cmd], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        added = peer.msg()["return"]
        assert added == {"fd": server.received_fds[1], "fdset-id": 2}
        assert peer.cmd("query-fdsets")["return"] == [{"fds": [{"fd": added["fd"]}], "fdset-id": 2}]
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------------- lifecycle


def test_socket_dir_is_private_and_removed_on_close() -> None:
    srv = FakeQMPServer().start()
    directory = os.path.dirname(srv.path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(srv.path).st_mode)
    srv.close()
    assert not os.path.exists(directory)


def test_explicit_path_is_unlinked_but_its_dir_kept(tmp_path: Any) -> None:
    path = str(tmp_path / "q.sock")
    with FakeQMPServer(path) as srv:
        Peer.connect(srv.path).close()
    assert not os.path.exists(path) and os.path.isdir(tmp_path)


def test_close_is_idempotent_and_leaks_no_fds() -> None:
    before = _open_fds()
    srv = FakeQMPServer().start()
    peers = [Peer.connect(srv.path) for _ in range(3)]
    pair = Peer(srv.connect_pair())
    for p in [*peers, pair]:
        p.handshake()
    r, w = os.pipe()
    cmd = orjson.dumps({"execute": "getfd", "arguments": {"fdname": "x"}}) + b"\n"
    peers[0].sock.sendmsg([cmd], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
    assert peers[0].msg() == {"return": {}}
    os.close(r)
    os.close(w)
    srv.stall()  # output pending and held
    srv.emit("X")
    srv.close()
    srv.close()
    for p in [*peers, pair]:
        assert p.read_eof() == b""
        p.close()
    assert _open_fds() == before
    with pytest.raises(StateError):
        srv.emit("X")
    with pytest.raises(StateError):
        srv.start()


def test_connect_pair_needs_a_reactor() -> None:
    srv = FakeQMPServer()
    with pytest.raises(StateError):
        srv.connect_pair()
    srv.close()


# ------------------------------------------------ one shared reactor, fake clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared() -> Iterator[tuple[Reactor, Clock, FakeQMPServer]]:
    clock = Clock()
    reactor = Reactor(clock=clock)
    srv = FakeQMPServer(reactor=reactor)
    yield reactor, clock, srv
    srv.close()
    assert reactor.watched_fds() == 0 and reactor.pending_timers() == 0
    reactor.close()


def pump(reactor: Reactor, turns: int = 10) -> None:
    for _ in range(turns):
        reactor.run_once(0)


def drain(sock: socket.socket) -> list[Any]:
    """Every complete message readable now, without blocking."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    assert data == b"" or data.endswith(b"\r\n")
    return [orjson.loads(line) for line in data.splitlines()]


def test_shared_reactor_is_deterministic(shared: tuple[Reactor, Clock, FakeQMPServer]) -> None:
    reactor, clock, srv = shared
    srv.greeting_delay = 1.0
    srv.unplug_delay = 5.0
    sock = srv.connect_pair()
    try:
        pump(reactor)
        assert drain(sock) == []  # the greeting is not due yet
        sock.sendall(orjson.dumps(NEGOTIATE) + b"\n")
        pump(reactor)
        assert drain(sock) == [] and srv.commands() == ["qmp_capabilities"]  # held
        clock.now += 1.0
        pump(reactor)
        greeting, ok = drain(sock)
        assert "QMP" in greeting and ok == {"return": {}}

        srv.on("query-status", delay=2.0)
        for msg in (
            {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "b"}},
            {"execute": "device_add", "arguments": {"driver": "scsi-hd", "id": "d", "drive": "b"}},
            {"execute": "device_del", "arguments": {"id": "d"}, "id": "del"},
            {"execute": "query-status", "id": "slow"},
            {"execute": "query-name", "id": "after"},
        ):
            sock.sendall(orjson.dumps(msg) + b"\n")
        pump(reactor)
        assert [m.get("id") for m in drain(sock)] == [None, None, "del"]
        clock.now += 2.0
        pump(reactor)
        assert [m["id"] for m in drain(sock)] == ["slow", "after"]
        assert "d" not in srv.devices and "b" in srv.nodes
        clock.now += 3.0
        pump(reactor)
        (event,) = drain(sock)
        assert event["data"] == {"device": "d", "path": "/machine/peripheral/d"}

        srv.stall(reading=False)
        sock.sendall(b'{"execute": "query-name", "id": 1}\n')
        pump(reactor)
        assert drain(sock) == [] and srv.received[-1]["id"] == 1  # read, not answered
        srv.resume()
        pump(reactor)
        assert drain(sock) == [{"return": {}, "id": 1}]

        srv.no_greeting = True
        quiet = srv.connect_pair()
        quiet.sendall(orjson.dumps(NEGOTIATE) + b"\n")
        pump(reactor)
        assert drain(quiet) == [] and srv.clients == 2
        quiet.close()
        pump(reactor)
        assert srv.clients == 1
    finally:
        sock.close()
        pump(reactor)


def test_full_queue_stops_reading_so_oob_waits(
    shared: tuple[Reactor, Clock, FakeQMPServer],
) -> None:
    reactor, clock, srv = shared
    sock = srv.connect_pair()
    sock.sendall(orjson.dumps(NEGOTIATE) + b"\n")
    pump(reactor)
    drain(sock)
    srv.on("query-status", delay=1.0, times=1)
    sock.sendall(b"".join(
        orjson.dumps({"execute": "query-status" if i == 0 else "query-name", "id": i}) + b"\n"
        for i in range(8)
    ))  # fmt: skip
    pump(reactor)
    assert drain(sock) == []
    sock.sendall(b'{"exec-oob": "yank", "arguments": {"instances": []}, "id": "oob"}\n')
    pump(reactor)
    assert drain(sock) == []  # 8 in-band commands queued: QEMU stops reading too
    clock.now += 1.0
    pump(reactor)
    ids = [m["id"] for m in drain(sock)]
    assert ids[:8] == list(range(8)) and ids[8:] == ["oob"]
    sock.close()
    pump(reactor)


def test_delay_keeps_in_band_order_and_oob_overtakes(
    shared: tuple[Reactor, Clock, FakeQMPServer],
) -> None:
    reactor, clock, srv = shared
    sock = srv.connect_pair()
    sock.sendall(orjson.dumps(NEGOTIATE) + b"\n")
    pump(reactor)
    drain(sock)
    srv.on("query-name", returns={"name": "slow"}, delay=0.5)
    for msg in (
        {"execute": "query-name", "id": 1},
        {"execute": "query-status", "id": 2},
        {"exec-oob": "yank", "arguments": {"instances": []}, "id": 3},
        {"exec-oob": "query-status", "id": 4},
    ):
        sock.sendall(orjson.dumps(msg) + b"\n")
        pump(reactor)
    first = drain(sock)
    assert [m["id"] for m in first] == [3, 4]
    assert first[1]["error"]["desc"] == "The command query-status does not support OOB"
    clock.now += 0.5
    pump(reactor)
    assert [m["id"] for m in drain(sock)] == [1, 2]
    sock.close()
    pump(reactor)


def test_wait_until_drives_an_idle_shared_reactor(
    shared: tuple[Reactor, Clock, FakeQMPServer],
) -> None:
    reactor, clock, srv = shared
    sock = srv.connect_pair()
    sock.sendall(orjson.dumps(NEGOTIATE) + b"\n")
    assert srv.wait_for_commands(1) == ["qmp_capabilities"]
    sock.close()
    srv.wait_for_clients(0)


# -------------------------------------------------------------- versus real QEMU


def _qemu_steps() -> list[tuple[Any, int]]:
    """(what to send, how many messages come back) -- counts measured on QEMU 7.2."""
    def ex(name: str, args: Any = None, n: int = 1, **extra: Any) -> Any:
        msg: dict[str, Any] = {"execute": name, **extra}
        if args is not None:
            msg["arguments"] = args
        return (msg, n)

    null = {"driver": "null-co"}
    return [
        ex("query-status", id=1),
        ex("qmp_capabilities", {"enable": ["oob"]}),
        ex("qmp_capabilities", id="again"),
        ex("nosuch", id=[1, {"a": None}]),
        (b"garbage\n", 1), (b"[1]\n", 1), (b'{"id": 3}\n', 1), (b'{"execute": 1}\n', 1),
        ex("query-status", [], id=4),
        ({"execute": "query-status", "exec-oob": "yank", "id": 5}, 1),
        ({"exec-oob": "yank", "arguments": {"instances": []}, "id": 6}, 1),
        ({"exec-oob": "query-status", "id": 7}, 1),
        ({"exec-oob": "nosuch", "id": 8}, 1),
        ex("query-status", id={"x": [1.5, True, None, "s"]}), ex("query-version"),
        ex("stop"), ex("query-status"), ex("cont", n=2), ex("cont"), ex("stop", n=2),
        ex("query-status"), ex("human-monitor-command", {"command-line": "info status"}),
        ex("system_reset", n=2), ex("system_powerdown", n=2),
        ex("blockdev-add", {**null, "node-name": "b0"}),
        ex("blockdev-add", {**null, "node-name": "b0"}),
        ex("blockdev-add", null), ex("blockdev-add", {"node-name": "x"}),
        ex("blockdev-del", {"node-name": "nope"}), ex("blockdev-del", {}),
        ex("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0",
                          "scsi-id": 0, "lun": 0}),
        ex("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0"}),
        ex("device_add", {"driver": "scsi-hd", "id": "d1", "drive": "nonode", "bus": "scsi0.0"}),
        ex("device_add", {"driver": "scsi-hd", "id": "d1", "drive": "b0", "bus": "scsi0.0",
                          "scsi-id": 1, "lun": 0}),
        ex("device_add", {"id": "d2"}),
        ex("blockdev-del", {"node-name": "b0"}), ex("device_del", {"id": "nodev"}),
        ex("device_del", {}), ex("device_del", {"id": "d0"}, n=2),
        ex("blockdev-del", {"node-name": "b0"}),
        ex("blockdev-add", {**null, "node-name": "u0"}),
        ex("device_add", {"driver": "usb-storage", "id": "us0", "drive": "u0", "bus": "xhci.0"}),
        ex("device_del", {"id": "us0"}, n=3),
        ex("blockdev-add", {**null, "node-name": "v0"}),
        ex("device_add", {"driver": "virtio-blk-pci", "id": "vb0", "drive": "v0", "bus": "br0",
                          "addr": "0x3"}),
        ex("device_del", {"id": "vb0"}, n=3),
        ex("device_add", {"driver": "usb-tablet", "bus": "xhci.0"}),
        ex("device_del", {"id": "/machine/peripheral-anon/device[0]"}, n=2),
        ex("device_add", {"driver": "usb-tablet", "bus": "xhci.0", "id": "t1"}),
        ex("device_del", {"id": "/machine/peripheral/t1"}, n=2),
        ex("netdev_add", {"type": "user", "id": "n0"}),
        ex("netdev_add", {"type": "user", "id": "n0"}),
        ex("netdev_add", {"type": "user"}), ex("netdev_add", {"id": "n1"}),
        ex("device_add", {"driver": "e1000", "id": "nic0", "netdev": "n0"}),
        ex("device_add", {"driver": "e1000", "id": "nic1", "netdev": "n0"}),
        ex("device_add", {"driver": "e1000", "id": "nic2", "netdev": "nx"}),
        ex("netdev_del", {"id": "n0"}), ex("netdev_del", {"id": "n0"}),
        ex("chardev-add", {"id": "c0", "backend": {"type": "null", "data": {}}}),
        ex("chardev-add", {"id": "c0", "backend": {"type": "null", "data": {}}}),
        ex("device_add", {"driver": "virtserialport", "id": "p0", "chardev": "c0",
                          "bus": "vs0.0"}),
        ex("device_add", {"driver": "virtserialport", "id": "p1", "chardev": "c0",
                          "bus": "vs0.0"}),
        ex("chardev-remove", {"id": "c0"}), ex("device_del", {"id": "p0"}, n=2),
        ex("chardev-remove", {"id": "c0"}), ex("chardev-remove", {"id": "c0"}),
        ex("chardev-remove", {}),
        ex("object-add", {"qom-type": "iothread", "id": "io0"}),
        ex("object-add", {"qom-type": "iothread", "id": "io0"}),
        ex("object-del", {"id": "io0"}), ex("object-del", {"id": "io0"}),
        ex("getfd", {"fdname": "x"}), ex("closefd", {"fdname": "x"}), ex("closefd", {}),
        ex("add-fd", {"fdset-id": 3}), ex("remove-fd", {"fdset-id": 3}), ex("query-fdsets"),
        ex("query-hotpluggable-cpus"), ex("query-cpus-fast"),
        ex("device_add", {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 5,
                          "core-id": 0, "thread-id": 0}),
        ex("device_add", {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 1,
                          "core-id": 0, "thread-id": 0}),
        ex("device_add", {"driver": "qemu64-x86_64-cpu", "id": "cpu2", "socket-id": 1,
                          "core-id": 0, "thread-id": 0}),
        ex("query-hotpluggable-cpus"), ex("query-cpus-fast"),
        ex("qom-get", {"path": "/machine", "property": "type"}),
        ex("qom-get", {"path": "/machine", "property": "nope"}),
        ex("qom-list", {"path": "/nope"}),
        ex("qom-get", {"path": "/machine/peripheral/nope", "property": "type"}),
        ex("human-monitor-command", {"command-line": "nosuchcmd"}),
        ex("query-migrate"),
        ex("migrate-set-capabilities", {"capabilities": [{"capability": "events",
                                                          "state": True}]}),
        ex("migrate", {}), ex("query-yank"),
        ex("quit", id="bye", n=2),
    ]  # fmt: skip


def _normalize(msg: Any) -> Any:
    msg.pop("timestamp", None)
    ret = msg.get("return")
    if isinstance(ret, list):
        for item in ret:
            if isinstance(item, dict) and "thread-id" in item and "cpu-index" in item:
                item["thread-id"] = 0
    err = msg.get("error")
    if err and err["desc"].startswith("JSON parse error, "):
        err["desc"] = "JSON parse error, ..."
    return msg


def _transcript(sock: socket.socket, steps: list[tuple[Any, int]]) -> list[Any]:
    p = Peer(sock, timeout=10)
    out = [p.msg()]
    for what, n in steps:
        p.send(what if isinstance(what, bytes) else orjson.dumps(what) + b"\n")
        out.append(("sent", what))
        try:
            out += [_normalize(p.msg()) for _ in range(n)]
        except (TimeoutError, EOFError) as exc:
            raise AssertionError(f"no reply to {what!r}; transcript: {out}") from exc
    out.append(("eof", p.read_eof()))
    return out


@pytest.mark.qemu
def test_fake_matches_real_qemu() -> None:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        if os.environ.get("QMPLEX_REQUIRE_QEMU") == "1":
            pytest.fail("qemu-system-x86_64 is required (QMPLEX_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
    steps = _qemu_steps()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qmp.sock")
        proc = subprocess.Popen(
            [binary, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
             "-S", "-m", "64", "-smp", "1,sockets=2,maxcpus=2",
             "-device", "virtio-scsi-pci,id=scsi0",
             "-device", "qemu-xhci,id=xhci", "-device", "virtio-serial-pci,id=vs0",
             "-device", "pci-bridge,chassis_nr=1,id=br0,shpc=on",
             "-global", "PIIX4_PM.acpi-pci-hotplug-with-bridge-support=off",
             "-qmp", f"unix:{path},server=on,wait=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.monotonic() + 20
            while True:
                try:
                    sock.connect(path)
                    break
                except OSError:
                    assert proc.poll() is None, "QEMU exited"
                    assert time.monotonic() < deadline, "QEMU's QMP socket never came up"
                    time.sleep(0.01)  # waiting for another process to listen
            with sock:
                real = _transcript(sock, steps)
            proc.wait(10)
        finally:
            proc.kill()
            proc.wait()
    version = real[0]["QMP"]["version"]
    qemu = version["qemu"]
    with fake_server(version=(qemu["major"], qemu["minor"], qemu["micro"]),
                     package=version["package"]) as srv:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(srv.path)
        with sock:
            fake = _transcript(sock, steps)
        assert srv.handler_errors == []
    for i, (r, f) in enumerate(zip(real, fake, strict=True)):
        assert f == r, f"step {i}: context {real[max(0, i - 3):i]}"
