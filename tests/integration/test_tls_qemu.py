"""QMP over TLS against a real QEMU 7.2 (TCG, paused, no guest): a ``socket`` chardev
with ``tls-creds`` (a ``tls-creds-x509`` object reading credentials made for the test).

What QEMU decides, checked here: the handshake and greeting; that commands sent one
at a time are answered at once (QEMU 7.2 holds the last TLS record it received until
more bytes come: the client ends each write with a record of its own, see
``qmplex.tls``), pipelined commands and events; ``verify-peer=on`` refusing a client
without a certificate from its CA (a clean handshake, then the connection closed
without a greeting) and accepting one with it; the client refusing a server
certificate from an unknown CA; a plain TCP monitor not taken for TLS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmplex import Client, ConnectError, Event, Reactor, gather
from qmplex.qemu import QemuProcess, qemu_or_skip

from ..tls_support import Credentials, free_port, make_credentials

pytestmark = pytest.mark.qemu


def tls_monitor_args(creds: Credentials, port: int, *, verify_peer: bool,
                     ident: str = "tls") -> list[str]:
    return [
        "-object", f"tls-creds-x509,id={ident}0,dir={creds.dir},endpoint=server,"
                   f"verify-peer={'on' if verify_peer else 'off'}",
        "-chardev", f"socket,id={ident}mon,host=127.0.0.1,port={port},server=on,wait=off,"
                    f"tls-creds={ident}0",
        "-mon", f"chardev={ident}mon,mode=control",
    ]


def plain_monitor_args(port: int) -> list[str]:
    return ["-chardev", f"socket,id=plainmon,host=127.0.0.1,port={port},server=on,wait=off",
            "-mon", "chardev=plainmon,mode=control"]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, Credentials]:
    return make_credentials(tmp_path_factory.mktemp("qemu-pki"))


def start_vm(args: list[str]) -> QemuProcess:
    return QemuProcess(qemu_or_skip(), extra_args=args, connect=False).start()


def connect(reactor: Reactor, port: int, **kwargs: object) -> Client:
    """A client connected to 127.0.0.1:port (QEMU listens by the time the launcher's
    own monitor, created after this one, does)."""
    client = Client(reactor)
    client.connect(("127.0.0.1", port), timeout=10, **kwargs).result(15)  # type: ignore[arg-type]
    return client


@pytest.fixture(scope="module")
def vm(creds: tuple[Credentials, Credentials]) -> Iterator[tuple[QemuProcess, int, int]]:
    """QEMU with a TLS monitor (verify-peer=off) and a plain TCP monitor."""
    tls_port, plain_port = free_port(), free_port()
    process = start_vm(tls_monitor_args(creds[0], tls_port, verify_peer=False)
                       + plain_monitor_args(plain_port))
    yield process, tls_port, plain_port
    process.stop()


def test_commands_one_at_a_time_are_answered_at_once(
        vm: tuple[QemuProcess, int, int], creds: tuple[Credentials, Credentials]) -> None:
    """Each command waits for its reply before the next is sent: without the final
    one-byte record, QEMU 7.2 would answer none of them until the next write."""
    _, port, _ = vm
    with Reactor() as reactor:
        client = connect(reactor, port, ssl=creds[0].client_context())
        assert client.version is not None and client.version.major >= 7
        started = time.monotonic()
        for _ in range(20):
            assert client.execute("query-status", timeout=5).result(10)["status"] == \
                "prelaunch"
        elapsed = time.monotonic() - started
        client.close()
    # Not a speed assertion: a held reply takes the whole 5 s timeout and fails above;
    # this only reports the figure when the test is run with -s.
    print(f"20 serial commands over TLS: {elapsed * 1000:.1f} ms")


def test_pipelined_commands_and_events(vm: tuple[QemuProcess, int, int],
                                       creds: tuple[Credentials, Credentials]) -> None:
    _, port, _ = vm
    with Reactor() as reactor:
        client = connect(reactor, port, ssl=creds[0].client_context())
        events: list[Event] = []
        client.on_event(events.append, "RESUME")
        client.on_event(events.append, "STOP")
        names = gather([client.execute("query-name") for _ in range(500)]).result(30)
        assert names == [{}] * 500
        client.execute("cont").result(10)
        client.execute("stop").result(10)
        for _ in range(200):
            if len(events) == 2:
                break
            reactor.run_once(0.05)
        assert [e.name for e in events] == ["RESUME", "STOP"]
        assert client.execute("query-status").result(10)["status"] == "paused"
        client.close()


def test_a_plain_tcp_monitor_is_not_taken_for_tls(
        vm: tuple[QemuProcess, int, int], creds: tuple[Credentials, Credentials]) -> None:
    _, _, plain_port = vm
    with Reactor() as reactor:
        client = Client(reactor)
        exc = client.connect(("127.0.0.1", plain_port), ssl=creds[0].client_context(),
                             timeout=10).exception(15)
        assert isinstance(exc, ConnectError) and "TLS handshake failed" in str(exc)
        client.close()
        # The same monitor without TLS works (QEMU was not upset).
        plain = connect(reactor, plain_port)
        assert plain.execute("query-status").result(10)["running"] is False
        plain.close()


def test_a_server_certificate_from_an_unknown_ca_is_refused(
        vm: tuple[QemuProcess, int, int], creds: tuple[Credentials, Credentials]) -> None:
    _, port, _ = vm
    with Reactor() as reactor:
        client = Client(reactor)
        exc = client.connect(("127.0.0.1", port), ssl=creds[1].client_context(),
                             timeout=10).exception(15)
        assert isinstance(exc, ConnectError)
        assert "certificate was refused" in str(exc) and "issuer" in str(exc)
        client.close()
        # QEMU serves the next client (one client at a time per monitor).
        good = connect(reactor, port, ssl=creds[0].client_context())
        assert good.execute("query-name").result(10) == {}
        good.close()


def test_verify_peer_wants_a_client_certificate_from_its_ca(
        creds: tuple[Credentials, Credentials], tmp_path: Path) -> None:
    good, rogue = creds
    port = free_port()
    process = start_vm(tls_monitor_args(good, port, verify_peer=True))
    try:
        with Reactor() as reactor:
            for ctx in (good.client_context(), rogue.client_context(with_cert=True)):
                ctx.load_verify_locations(str(good.ca))  # trusts QEMU; QEMU not it
                client = Client(reactor)
                exc = client.connect(("127.0.0.1", port), ssl=ctx, timeout=10).exception(15)
                assert isinstance(exc, ConnectError), exc
                assert "refuses the client's certificate" in str(exc)
                client.close()
            client = connect(reactor, port, ssl=good.client_context(with_cert=True))
            assert client.execute("query-status").result(10)["status"] == "prelaunch"
            client.close()
        assert process.alive()
    finally:
        process.stop()
