"""QMP over TLS against the fake server behind a TLS front (``tests/tls_support.py``):
the handshake on the reactor, certificate and name verification, the refusals QEMU
gives, large replies (OpenSSL holding decrypted bytes), reconnection with the same
settings, and the argument checks. What real QEMU 7.2 does over TLS is tested in
``tests/integration/test_tls_qemu.py``."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmplex import (
    Client,
    ClientState,
    ConnectError,
    OperationTimeout,
    Reactor,
    ReconnectPolicy,
    ValidationError,
    gather,
)
from qmplex.testing import FakeQMPServer

from .reliability.helpers import open_fds
from .tls_support import Credentials, TLSFront, make_credentials, make_credentials_for


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, Credentials]:
    return make_credentials(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def good(creds: tuple[Credentials, Credentials]) -> Credentials:
    return creds[0]


@pytest.fixture
def rogue(creds: tuple[Credentials, Credentials]) -> Credentials:
    return creds[1]


class Rig:
    """A fake QMP server (on its own reactor thread) behind a TLS front, and a client
    on a reactor the test drives."""

    def __init__(self, server_ctx: ssl.SSLContext) -> None:
        self.server = FakeQMPServer().start()
        self.front = TLSFront(server_ctx, self.server.path)
        self.reactor = Reactor()

    def client(self, **kwargs: Any) -> Client:
        return Client(self.reactor, name="vm-tls", **kwargs)

    def close(self) -> None:
        self.front.close()
        self.server.close()
        for _ in range(10):
            self.reactor.run_once(0)
        assert self.reactor.watched_fds() == 0, "a socket is still registered"
        self.reactor.close()


@pytest.fixture
def rig_for(good: Credentials) -> Iterator[Any]:
    rigs: list[Rig] = []
    before = open_fds()

    def make(server_ctx: ssl.SSLContext | None = None) -> Rig:
        rig = Rig(server_ctx or good.server_context())
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    assert open_fds() <= before, "file descriptors leaked"


def test_commands_and_events_over_tls(rig_for: Any, good: Credentials) -> None:
    rig = rig_for()
    client = rig.client()
    version = client.connect(rig.front.address, ssl=good.client_context(),
                             timeout=10).result(10)
    assert (version.major, version.minor) == (7, 2) and rig.front.handshakes == 1
    assert client.execute("query-status").result(10)["status"] == "prelaunch"
    stops: list[str] = []
    client.on_event(lambda e: stops.append(e.name), "STOP")
    client.execute("cont").result(10)
    client.execute("stop").result(10)
    # Pipelined: a thousand commands in flight through the window.
    futures = [client.execute("query-name") for _ in range(1000)]
    assert gather(futures).result(30) == [{}] * 1000
    client.reactor.run_once(0)
    assert stops == ["STOP"]
    client.close()


def test_a_reply_larger_than_a_read_arrives_whole(rig_for: Any, good: Credentials) -> None:
    """A 1 MiB reply spans many TLS records, some of which OpenSSL decrypts beyond
    what one recv() returns; the reactor is never told about those (the socket is
    drained), so the connection must take them itself."""
    rig = rig_for()
    blob = "x" * (1 << 20)
    rig.server.on("big", returns={"blob": blob})
    client = rig.client(max_line_bytes=4 << 20)
    client.connect(rig.front.address, ssl=good.client_context(), timeout=10).result(10)
    results = gather([client.execute("big") for _ in range(5)]).result(30)
    assert [len(r["blob"]) for r in results] == [1 << 20] * 5
    client.close()


def test_a_certificate_from_an_unknown_ca_is_refused(rig_for: Any, good: Credentials,
                                                     rogue: Credentials) -> None:
    rig = rig_for(rogue.server_context())
    client = rig.client()
    fut = client.connect(rig.front.address, ssl=good.client_context(), timeout=10)
    exc = fut.exception(10)
    assert isinstance(exc, ConnectError)
    assert "certificate was refused" in str(exc) and "issuer" in str(exc)
    assert isinstance(exc.__cause__, ssl.SSLCertVerificationError)
    assert client.state is ClientState.DISCONNECTED
    client.close()


def test_a_certificate_for_another_name_is_refused(rig_for: Any, tmp_path: Path) -> None:
    named = make_credentials_for(tmp_path, "qemu.example")
    rig = rig_for(named.server_context())
    client = rig.client()
    exc = client.connect(rig.front.address, ssl=named.client_context(),
                         timeout=10).exception(10)
    assert isinstance(exc, ConnectError) and "mismatch" in str(exc)
    # The name the certificate carries, given explicitly, is accepted.
    client.connect(rig.front.address, ssl=named.client_context(),
                   server_hostname="qemu.example", timeout=10).result(10)
    assert client.execute("query-name").result(10) == {}
    client.close()


def test_a_server_that_wants_a_client_certificate(rig_for: Any, good: Credentials,
                                                  rogue: Credentials) -> None:
    """QEMU with verify-peer=on: without a certificate from its CA, the handshake
    succeeds on the client's side (TLS 1.3) and the server hangs up before greeting;
    the error says what that means. With one, it works."""
    rig = rig_for(good.server_context(require_client_cert=True))
    for ctx in (good.client_context(), rogue.client_context(with_cert=True)):
        ctx.load_verify_locations(str(good.ca))
        client = rig.client()
        exc = client.connect(rig.front.address, ssl=ctx, timeout=10).exception(10)
        assert isinstance(exc, ConnectError), exc
        assert "refuses the client's certificate" in str(exc)
        client.close()
    client = rig.client()
    client.connect(rig.front.address, ssl=good.client_context(with_cert=True),
                   timeout=10).result(10)
    assert client.execute("query-status").result(10)["running"] is False
    client.close()


def test_a_plain_qmp_server_is_not_mistaken_for_tls(good: Credentials) -> None:
    """A TCP chardev without tls-creds greets in plain text at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()[:2]
    greeting = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
                b'"package": ""}, "capabilities": []}}\r\n')
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.sendall(greeting)

    thread = threading.Thread(target=serve)
    thread.start()
    with Reactor() as reactor:
        client = Client(reactor)
        exc = client.connect(address, ssl=good.client_context(), timeout=10).exception(10)
        thread.join(10)
        assert isinstance(exc, ConnectError) and "TLS handshake failed" in str(exc)
        client.close()
    for s in (*accepted, listener):
        s.close()


def test_a_server_that_never_answers_the_handshake_times_out(good: Credentials) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), says nothing
    with Reactor() as reactor:
        client = Client(reactor)
        fut = client.connect(listener.getsockname()[:2], ssl=good.client_context(),
                             timeout=0.3)
        exc = fut.exception(10)
        assert isinstance(exc, OperationTimeout)
        assert "TLS handshake" in str(exc)
        client.close()
    listener.close()


def test_reconnection_keeps_the_tls_settings(rig_for: Any, good: Credentials) -> None:
    rig = rig_for()
    policy = ReconnectPolicy(initial=0.01, maximum=0.05, jitter=0, connect_timeout=5)
    client = rig.client(reconnect=policy)
    reconnected = threading.Event()

    def on_reconnect(attempt: int, error: BaseException | None) -> None:
        if error is None:
            reconnected.set()

    client.on_reconnect(on_reconnect)
    client.connect(rig.front.address, ssl=good.client_context(), timeout=10).result(10)
    rig.front.drop_clients()
    for _ in range(2000):
        if reconnected.is_set():
            break
        rig.reactor.run_once(0.01)
    assert reconnected.is_set() and client.state is ClientState.READY
    assert rig.front.handshakes == 2
    assert client.execute("query-status").result(10)["status"] == "prelaunch"
    # And reconnect() by hand.
    client.close()


def test_file_descriptors_are_not_passed_over_tcp(rig_for: Any, good: Credentials) -> None:
    rig = rig_for()
    client = rig.client()
    client.connect(rig.front.address, ssl=good.client_context(), timeout=10).result(10)
    r, w = socket.socketpair()
    with pytest.raises(ValidationError, match="only be passed over a Unix socket"):
        client.execute("getfd", {"fdname": "f"}, fds=[r.fileno()])
    r.close()
    w.close()
    client.close()


# ============================================================ argument checks


@pytest.mark.parametrize(("address", "kwargs", "error", "match"), [
    ("/tmp/x.sock", {"ssl": True}, ValueError, "Unix socket needs server_hostname"),
    (("127.0.0.1", 1), {"server_hostname": "a"}, ValueError, "only for TLS"),
    (("127.0.0.1", 1), {"ssl": "yes"}, TypeError, "ssl must be an ssl.SSLContext"),
    (("127.0.0.1", 1), {"ssl": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)}, ValueError,
     "server-side context"),
])
def test_bad_tls_arguments_are_refused_up_front(address: Any, kwargs: dict[str, Any],
                                                error: type[Exception], match: str) -> None:
    with Reactor() as reactor:
        client = Client(reactor)
        with pytest.raises(error, match=match):
            client.connect(address, **kwargs)
        assert client.state is ClientState.IDLE
        client.close()


def test_ssl_true_uses_the_system_trust_store(rig_for: Any) -> None:
    """``ssl=True``: a default context, which does not trust the test's CA."""
    rig = rig_for()
    client = rig.client()
    exc = client.connect(rig.front.address, ssl=True, timeout=10).exception(10)
    assert isinstance(exc, ConnectError) and "certificate was refused" in str(exc)
    client.close()
