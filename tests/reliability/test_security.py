"""Security: secrets never reach the debug log, an error message or a repr (the schema's
validation and the typed operations' checks quote values only where the redaction rules
allow); the sockets the library's tools create live in private (0700) directories that
are removed on exit; every file descriptor we duplicate to pass (SCM_RIGHTS) is closed
on every path, the error paths included."""

from __future__ import annotations

import gc
import gzip
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectionLost,
    Reactor,
    Schema,
    StateError,
    Timeout,
    ValidationError,
)
from qmplex.ops import args as ops_args
from qmplex.schema import CallNamespace

from .helpers import FakeClock, FastPeer, auto_pair

SECRET = "hunter2-s3cr3t"


# ------------------------------------------------------------------- log redaction
SECRET_COMMANDS: list[tuple[str, dict[str, object], str]] = [
    ("set_password", {"protocol": "vnc", "password": SECRET}, "vnc"),
    ("change-vnc-password", {"password": SECRET}, "change-vnc-password"),
    ("object-add", {"qom-type": "secret", "id": "sec0", "data": SECRET, "format": "raw"},
     "sec0"),
    ("object-add", {"qom-type": "secret", "id": "sec1", "props": {"data": SECRET}}, "sec1"),
    ("object-add", {"qom-type": "secret_keyring", "id": "sec2", "data": SECRET}, "sec2"),
    ("human-monitor-command", {"command-line": f"set_password vnc {SECRET}"}, "set_password"),
    ("human-monitor-command", {"command-line": f"object_add secret,id=s,data={SECRET}"},
     "object_add"),
    ("human-monitor-command",
     {"command-line": f"drive_add 0 if=none,file.driver=http,file.cookie={SECRET}"},
     "drive_add"),
    ("human-monitor-command", {"command-line": f"block_passwd d0 {SECRET}"}, "block_passwd"),
    ("qom-set", {"path": "/objects/x", "property": "password", "value": SECRET}, "/objects/x"),
    ("qom-set", {"path": "/objects/sec0", "property": "data", "value": SECRET}, "/objects/sec0"),
    ("transaction", {"actions": [{"type": "x", "data": {"passphrase": SECRET}}]}, "actions"),
    ("blockdev-add", {"driver": "luks", "node-name": "n0", "key-secret": SECRET}, "luks"),
    ("blockdev-add", {"driver": "http", "node-name": "n1", "url": "http://h/", "cookie": SECRET},
     "http://h/"),
    ("x-blockdev-amend", {"job-id": "j0", "node-name": "n0", "options": {
        "driver": "luks", "state": "active", "new-secret": SECRET, "old-secret": SECRET}}, "j0"),
    ("sev-inject-launch-secret", {"packet-header": "hdr", "secret": SECRET}, "hdr"),
    ("netdev_add", {"type": "l2tpv3", "id": "l0", "src": "a", "dst": "b", "txsession": 1,
                    "rxcookie": SECRET, "txcookie": SECRET, "cookie64": True}, "l2tpv3"),
]


@pytest.fixture
def debug_peer(caplog: pytest.LogCaptureFixture) -> Iterator[FastPeer]:
    caplog.set_level(logging.DEBUG)  # before the client reads the flag
    with Reactor() as r:
        client = Client(r)
        p = FastPeer(r, client)
        p.handshake()
        yield p
        client.close()
        p.close()


@pytest.mark.parametrize(("name", "args", "visible"), SECRET_COMMANDS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SECRET_COMMANDS)])
def test_secrets_are_redacted_in_debug_logs(
    debug_peer: FastPeer, caplog: pytest.LogCaptureFixture, name: str,
    args: dict[str, object], visible: str
) -> None:
    c = debug_peer.client
    fut = c.execute(name, args)
    (msg,) = debug_peer.read()
    assert msg["arguments"] == args  # the wire carries the real value, of course
    debug_peer.reply(msg, error=("GenericError", "refused"))  # an error path too
    debug_peer.pump()
    assert fut.exception(0) is not None
    text = caplog.text
    assert name in text and visible in text, text  # the command was logged...
    assert "<redacted>" in text
    assert SECRET not in text  # ...without its secret
    assert SECRET not in str(fut.exception(0))  # nor in the error's message


def test_nothing_is_formatted_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    class Tripwire(dict[str, object]):
        def __repr__(self) -> str:  # would be called by a debug line
            raise AssertionError("arguments formatted with debug off")

    with Reactor() as r:
        client = Client(r)
        p = FastPeer(r, client)
        p.handshake()
        args = Tripwire(password=SECRET)
        client.execute("set_password", args)
        p.read()
        assert SECRET not in caplog.text
        client.close()
        p.close()


# ---------------------------------------------------------- validation messages
DATA = Path(__file__).parent.parent / "data"
SECRET_INT = 424242  # the example: object-add: data: ... 424242


def _schemas() -> list[tuple[str, Schema]]:
    old = json.loads((DATA / "qmp-schema-7.2.json").read_text())
    new = json.loads(gzip.decompress((DATA / "qmp-schema-11.1.3.json.gz").read_bytes()))
    return [("7.2", Schema.from_introspection(old)), ("11.1.3", Schema.from_introspection(new))]


SCHEMAS = _schemas()

# Arguments that fail validation at a secret (the path in the message): before
# redaction, each message quoted the secret's value.
INVALID_SECRETS: list[tuple[str, dict[str, Any], str]] = [
    ("set_password", {"protocol": "vnc", "password": SECRET.encode()}, "password"),
    ("set_password", {"protocol": "vnc", "password": SECRET_INT}, "password"),
    ("change-vnc-password", {"password": SECRET.encode()}, "password"),
    ("object-add", {"qom-type": "secret", "id": "s0", "data": SECRET_INT}, "data"),
    ("object-add", {"qom-type": "secret", "id": "s0", "data": "x", "iv": SECRET_INT}, "iv"),
    ("object-add", {"qom-type": "secret_keyring", "id": "s0", "serial": 1, "iv": SECRET_INT},
     "iv"),
    ("human-monitor-command", {"command-line": f"set_password vnc {SECRET}".encode()},
     "command-line"),
    ("human-monitor-command", {"command-line": f"object_add secret,data={SECRET}".encode()},
     "command-line"),
    ("blockdev-add", {"driver": "luks", "node-name": "n0", "file": "f0",
                      "key-secret": SECRET_INT}, "key-secret"),
    ("blockdev-add", {"driver": "http", "node-name": "n0", "url": "http://h/",
                      "cookie": SECRET_INT}, "cookie"),
    ("blockdev-add", {"driver": "qcow2", "node-name": "n0", "file": "f0",
                      "encrypt": {"format": "luks", "key-secret": SECRET_INT}},
     "encrypt.key-secret"),
    ("blockdev-create", {"job-id": "j0", "options": {"driver": "luks", "file": "f0", "size": 1,
                                                     "key-secret": SECRET_INT}},
     "options.key-secret"),
    ("x-blockdev-amend", {"job-id": "j0", "node-name": "n0", "options": {
        "driver": "luks", "state": "active", "new-secret": SECRET_INT}}, "options.new-secret"),
    ("x-blockdev-amend", {"job-id": "j0", "node-name": "n0", "options": {
        "driver": "luks", "state": "active", "old-secret": SECRET_INT}}, "options.old-secret"),
    ("sev-inject-launch-secret", {"packet-header": "h", "secret": SECRET.encode()}, "secret"),
    ("netdev_add", {"type": "l2tpv3", "id": "l0", "src": "a", "dst": "b", "txsession": 1,
                    "rxcookie": SECRET}, "rxcookie"),
]


def _assert_no_secret(text: str) -> None:
    for shown in (SECRET, str(SECRET_INT), repr(SECRET.encode())):
        assert shown not in text, text


@pytest.mark.parametrize(("version", "schema"), SCHEMAS, ids=[v for v, _ in SCHEMAS])
@pytest.mark.parametrize(("command", "arguments", "path"), INVALID_SECRETS,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(INVALID_SECRETS)])
def test_validation_never_quotes_a_secret(version: str, schema: Schema, command: str,
                                          arguments: dict[str, Any], path: str) -> None:
    if not schema.has_command(command):
        pytest.skip(f"QEMU {version} has no {command}")
    with pytest.raises(ValidationError) as info:
        schema.validate(command, arguments)
    message = str(info.value)
    assert message.startswith(f"{command}: {path}: "), message
    assert "<redacted>" in message
    _assert_no_secret(message)
    _assert_no_secret(repr(info.value))
    # client.call validates the same way, and sends nothing.
    sent: list[str] = []

    class Recorder:
        version = None

        def execute(self, name: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(name)

    with pytest.raises(ValidationError) as info:
        CallNamespace(Recorder(), schema)[command](arguments)
    _assert_no_secret(str(info.value))
    assert "<redacted>" in str(info.value) and sent == []


@pytest.mark.parametrize(("version", "schema"), SCHEMAS, ids=[v for v, _ in SCHEMAS])
def test_validation_still_quotes_what_is_not_secret(version: str, schema: Schema) -> None:
    with pytest.raises(ValidationError, match=r"set_password: connected: 'kep' is not a valid "
                                              r"value \(did you mean 'keep'\?\)"):
        schema.validate("set_password", {"protocol": "vnc", "password": SECRET,
                                         "connected": "kep"})
    with pytest.raises(ValidationError, match="blockdev-add: size: expected int, got str '1G'"):
        schema.validate("blockdev-add", {"driver": "null-co", "node-name": "n0", "size": "1G"})
    with pytest.raises(ValidationError, match="human-monitor-command: command-line: expected "
                                              "str, got bytes b'info version'"):
        schema.validate("human-monitor-command", {"command-line": b"info version"})
    # The kind of a secret is not secret.
    with pytest.raises(ValidationError,
                       match="set_password: password: expected str, got bytes <redacted>$"):
        schema.validate("set_password", {"protocol": "vnc", "password": SECRET.encode()})


def test_a_value_in_the_wrong_place_is_never_quoted() -> None:
    _, schema = SCHEMAS[-1]
    with pytest.raises(ValidationError) as info:
        schema.validate("set_password", SECRET)  # type: ignore[arg-type]
    assert str(info.value) == ("set_password: arguments must be an object (a mapping), "
                               "got str")
    with pytest.raises(ValidationError) as info:
        CallNamespace(Client(), schema).set_password(SECRET)  # type: ignore[call-overload]
    assert str(info.value).endswith("must be a mapping of wire names to values, got str")


def test_typed_operations_never_quote_a_secret() -> None:
    client = Client()  # the checks run before anything is sent
    with pytest.raises(ValidationError) as info:
        client.monitor.human_monitor_command(f"set_password vnc {SECRET}".encode())  # type: ignore[arg-type]
    assert str(info.value) == ("human_monitor_command: command_line must be a non-empty "
                               "string, not bytes <redacted>")
    with pytest.raises(ValidationError) as info:
        client.qom.qom_set("/objects/s0", "", SECRET)
    _assert_no_secret(str(info.value))
    # The checks of qmplex.ops.args, for any operation and argument the rules cover.
    checks = [
        (ops_args.check_str, "set_password", "password", SECRET.encode()),
        (ops_args.check_id, "change_vnc_password", "password", SECRET_INT),
        (ops_args.check_id, "blockdev_add", "key_secret", SECRET_INT),
        (ops_args.check_int, "netdev_add", "rxcookie", SECRET),
        (ops_args.check_bool, "x_blockdev_amend", "new_secret", SECRET),
    ]
    for check, op, what, value in checks:
        with pytest.raises(ValidationError) as info:
            check(op, what, value)  # type: ignore[operator]
        assert f"{op}: {what} must be" in str(info.value)
        assert "<redacted>" in str(info.value)
        _assert_no_secret(str(info.value))
    with pytest.raises(ValidationError, match="password must be at least 0, not int <redacted>"):
        ops_args.check_int("set_password", "password", -SECRET_INT, 0)
    # Not secret: quoted as before.
    with pytest.raises(ValidationError, match="node_name must be a string, not 5"):
        ops_args.check_str("blockdev_add", "node_name", 5)
    with pytest.raises(ValidationError, match="command_line must be a non-empty string, "
                                              "not b'info version'"):
        client.monitor.human_monitor_command(b"info version")  # type: ignore[arg-type]
    client.close()


# -------------------------------------------------------------- private sockets
def _private_dir(path: str) -> Path:
    d = Path(path).parent
    mode = stat.S_IMODE(d.stat().st_mode)
    assert mode == 0o700, oct(mode)
    assert d.stat().st_uid == os.getuid()
    assert stat.S_ISSOCK(Path(path).stat().st_mode)
    return d


def test_fake_server_socket_is_private_and_removed_on_close() -> None:
    from qmplex.testing import FakeQMPServer, fake_server

    with fake_server() as server:
        d = _private_dir(server.path)
    assert not d.exists()
    server2 = FakeQMPServer().start()
    d2 = _private_dir(server2.path)
    server2.close()
    assert not d2.exists()


def test_fake_server_directory_removed_even_without_close() -> None:
    from qmplex.testing import FakeQMPServer

    server = FakeQMPServer()  # never started, never closed: dropped
    d = Path(server.path).parent
    assert d.exists() and stat.S_IMODE(d.stat().st_mode) == 0o700
    del server
    gc.collect()
    assert not d.exists()


def test_fake_server_closes_the_descriptors_it_received(pipe: int) -> None:
    from qmplex.testing import FakeQMPServer

    with Reactor() as reactor:
        server = FakeQMPServer(reactor=reactor)
        client = Client(reactor)
        client.connect_socket(server.connect_pair()).result(5)
        for i in range(5):
            client.execute("getfd", {"fdname": f"f{i}"}, fds=[pipe]).result(5)
        assert _refs(pipe) == 1 + 5  # ours + the server's five
        client.close()
        server.close()
    assert _refs(pipe) == 1


def test_qemu_launcher_socket_is_private_and_removed() -> None:
    from qmplex.qemu import QemuProcess, find_qemu

    binary = find_qemu()
    if binary is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    vm = QemuProcess(binary, connect=False)
    with vm:
        d = _private_dir(vm.qmp_path)
    assert not d.exists()
    vm2 = QemuProcess(binary, connect=False).start()
    d2 = _private_dir(vm2.qmp_path)
    vm2.kill()
    assert not d2.exists()


# ------------------------------------------------------------ descriptors passed
def _refs(fd: int) -> int:
    """How many descriptors of this process refer to the same open file as ``fd``."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[int]:
    """A descriptor on a file of its own, so its duplicates can be counted by path."""
    path = tmp_path / "passed-file"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def fpeer() -> Iterator[FastPeer]:
    with Reactor() as r:
        client = Client(r, window=1)
        p = FastPeer(r, client)
        p.handshake()
        yield p
        client.close()
        p.close()


def test_passed_fd_closed_after_it_is_sent(fpeer: FastPeer, pipe: int) -> None:
    fut = fpeer.client.execute("getfd", {"fdname": "a"}, fds=[pipe])
    assert _refs(pipe) == 2  # our duplicate waits to be sent
    (m,) = fpeer.read()  # the peer reads without ancillary data: the kernel drops it
    assert _refs(pipe) == 1
    fpeer.reply(m)
    fpeer.pump()
    assert fut.result(0) == {}


def test_passed_fd_closed_when_cancelled_while_queued(fpeer: FastPeer, pipe: int) -> None:
    c = fpeer.client
    c.execute("block")  # fills the window of 1
    fut = c.execute("getfd", {"fdname": "a"}, fds=[pipe, pipe, pipe])
    assert _refs(pipe) == 4
    fut.cancel()
    assert _refs(pipe) == 1


def test_passed_fd_closed_when_timed_out_while_queued(pipe: int) -> None:
    clock = FakeClock()
    with Reactor(clock=clock) as r:
        c = Client(r, window=1)
        p = FastPeer(r, c)
        p.handshake()
        c.execute("block")
        fut = c.execute("getfd", {"fdname": "a"}, fds=[pipe], timeout=1)
        p.read()
        clock.advance(2)
        p.pump()
        assert isinstance(fut.exception(0), Timeout)
        assert _refs(pipe) == 1
        c.close()
        p.close()


def test_passed_fd_closed_when_connection_lost_before_sending(
    fpeer: FastPeer, pipe: int
) -> None:
    c = fpeer.client
    c.execute("block")
    queued = c.execute("getfd", {"fdname": "q"}, fds=[pipe])
    fpeer.sock.close()
    fpeer.pump()
    assert isinstance(queued.exception(0), ConnectionLost)
    assert _refs(pipe) == 1


def test_passed_fd_closed_when_lost_in_the_send_buffer(pipe: int) -> None:
    """Sent into the client's buffer (the window let it through) but not yet written,
    then the connection is lost: the duplicate in the buffer is closed."""
    with Reactor() as r:
        c = Client(r)
        p = FastPeer(r, c)
        p.handshake()
        c.execute("big", {"blob": "x" * (8 << 20)})  # fills the socket: the peer never reads
        fut = c.execute("getfd", {"fdname": "a"}, fds=[pipe])
        r.run_once(0)  # both are sent into the buffer: the first part-written
        assert c._conn._writing and c._conn._segments[-1][1]
        p.sock.close()
        c.close()  # before the reactor ever flushed
        assert isinstance(fut.exception(0), ConnectionLost)
        assert _refs(pipe) == 1


def test_passed_fd_closed_when_lost_before_the_reactor_saw_it(pipe: int) -> None:
    """Still in the connection's intake (no reactor pass since execute) when the client
    is closed: the duplicate is closed too."""
    with Reactor() as r:
        c = Client(r)
        p = FastPeer(r, c)
        p.handshake()
        fut = c.execute("getfd", {"fdname": "a"}, fds=[pipe])
        assert _refs(pipe) == 2 and c.pending == 1
        c.close()
        assert isinstance(fut.exception(0), ConnectionLost)
        assert _refs(pipe) == 1
        p.close()


def test_passed_fd_closed_when_send_fails(fpeer: FastPeer, pipe: int) -> None:
    c = fpeer.client
    fpeer.sock.shutdown(socket.SHUT_RD)  # our sendmsg gets EPIPE
    fut = c.execute("getfd", {"fdname": "a"}, fds=[pipe])
    fpeer.pump()
    assert isinstance(fut.exception(0), ConnectionLost)
    assert c.state is ClientState.DISCONNECTED
    assert _refs(pipe) == 1


def test_passed_fd_closed_when_connect_fails(pipe: int, tmp_path: Path) -> None:
    with Reactor() as r:
        c = Client(r)
        c.connect(str(tmp_path / "nobody.sock"))
        # Refused at once: the state is already DISCONNECTED, execute refuses.
        with pytest.raises(StateError):
            c.execute("getfd", {"fdname": "a"}, fds=[pipe])
        assert _refs(pipe) == 1
        a, b = socket.socketpair()
        fut = c.connect_socket(b, timeout=5)  # a peer that closes before greeting
        queued = c.execute("getfd", {"fdname": "a"}, fds=[pipe])
        assert _refs(pipe) == 2
        a.close()
        for _ in range(10):
            r.run_once(0.01)
            if fut.done():
                break
        assert isinstance(queued.exception(0), ConnectionLost)
        assert _refs(pipe) == 1
        c.close()


def test_passed_fd_closed_on_close_with_commands_queued(fpeer: FastPeer, pipe: int) -> None:
    c = fpeer.client
    c.execute("block")
    futs = [c.execute("getfd", {"fdname": f"f{i}"}, fds=[pipe]) for i in range(20)]
    assert _refs(pipe) == 21
    c.close()
    assert all(isinstance(f.exception(0), ConnectionLost) for f in futs)
    assert _refs(pipe) == 1


def test_fds_refused_over_tcp_without_duplicating(pipe: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with Reactor() as r:
        c = Client(r)
        try:
            c.connect(listener.getsockname())
            with pytest.raises(ValidationError):
                c.execute("getfd", {"fdname": "x"}, fds=[pipe])
            assert _refs(pipe) == 1
        finally:
            c.close()
            listener.close()


def test_many_fd_commands_through_an_auto_peer_leave_nothing(pipe: int) -> None:
    with Reactor() as r:
        c = Client(r)
        peer = auto_pair(r, c)
        for i in range(200):
            c.execute("getfd", {"fdname": f"f{i}"}, fds=[pipe]).result(5)
        assert _refs(pipe) == 1
        c.close()
        peer.close()
