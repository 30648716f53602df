"""Test support for QMP over TLS: x509 credentials made for the test (``cryptography``),
SSL contexts, and a TLS front for the fake QMP server.

``make_credentials(dir)`` writes what QEMU's ``tls-creds-x509`` object reads
(``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``) plus a client certificate
(``client-cert.pem``, ``client-key.pem``) and, in ``dir/rogue``, the same made by
another CA (a certificate nobody trusts).

``TLSFront`` listens on 127.0.0.1 with a server-side context and relays each TLS
connection to a Unix socket (the fake QMP server), one thread per front: the client
under test speaks TLS exactly as to QEMU, and the fake server scripts the QMP side.
"""

from __future__ import annotations

import datetime
import ipaddress
import selectors
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Credentials:
    """Where the PEM files of one CA and its server and client certificates are."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca-cert.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client-cert.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client-key.pem"

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting this CA (and presenting its client certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server context with this CA's server certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(self.ca))
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, subject: str,
           key: ec.EllipticCurvePrivateKey, *, server: bool, sans: list[x509.GeneralName]
           ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(ca_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, key_encipherment=True, content_commitment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    # Python 3.13's default context checks X.509 strictly: a leaf needs the key
    # identifier of its issuer.
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
        critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _make_set(directory: Path, ca_common_name: str, server_sans: list[x509.GeneralName]
              ) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(ca_common_name)
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, key_encipherment=False, content_commitment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True,
              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    creds = Credentials(directory)
    creds.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for server, subject, cert_path, key_path, sans in (
            (True, "qemu", creds.server_cert, creds.server_key, server_sans),
            (False, "manager", creds.client_cert, creds.client_key, [])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_key, ca_name, subject, key, server=server, sans=sans)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return creds


LOCAL_SANS: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                      x509.DNSName("localhost")]


def make_credentials(directory: Path) -> tuple[Credentials, Credentials]:
    """The test's CA with a server certificate for 127.0.0.1/localhost and a client
    certificate, and a rogue CA with the same (nobody trusts it): ``(good, rogue)``."""
    return (_make_set(directory, "qmplex test CA", LOCAL_SANS),
            _make_set(directory / "rogue", "rogue CA", LOCAL_SANS))


def make_credentials_for(directory: Path, *names: str) -> Credentials:
    """A CA whose server certificate carries only the DNS ``names`` (no IP)."""
    return _make_set(directory, "named CA", [x509.DNSName(n) for n in names])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TLSFront:
    """A TLS listener on 127.0.0.1 relaying each connection to a Unix socket.

    One thread serves every connection with a selector; :meth:`close` stops it and
    closes everything. ``handshakes`` counts completed server-side handshakes and
    ``refused`` the failed ones (e.g. a client without the required certificate).
    """

    def __init__(self, context: ssl.SSLContext, unix_path: str) -> None:
        self._context = context
        self._unix_path = unix_path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self.handshakes = 0
        self.refused = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="tls-front", daemon=True)
        self._thread.start()

    def drop_clients(self) -> None:
        """Close every relayed connection (the listener stays)."""
        self._wake_w.send(b"d")

    def close(self) -> None:
        self._wake_w.send(b"q")
        self._thread.join(10)
        assert not self._thread.is_alive(), "the TLS front did not stop"
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in sel.select():
                    what = key.data
                    if what == "accept":
                        self._accept(sel, peers)
                    elif what == "wake":
                        command = self._wake_r.recv(1)
                        for s in list(peers):
                            sel.unregister(s)
                            s.close()
                        peers.clear()
                        if command == b"q":
                            return
                    else:
                        self._relay(key.fileobj, sel, peers)  # type: ignore[arg-type]
        finally:
            for s in peers:
                s.close()
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]
                ) -> None:
        raw, _ = self._listener.accept()
        raw.settimeout(5)
        try:
            tls_sock = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        self.handshakes += 1
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self._unix_path)
        tls_sock.setblocking(False)
        upstream.setblocking(False)
        peers[tls_sock] = upstream
        peers[upstream] = tls_sock
        sel.register(tls_sock, selectors.EVENT_READ, "relay")
        sel.register(upstream, selectors.EVENT_READ, "relay")

    def _relay(self, src: socket.socket, sel: selectors.BaseSelector,
               peers: dict[socket.socket, socket.socket]) -> None:
        dst = peers.get(src)
        if dst is None:
            return
        try:
            data = src.recv(1 << 16)
            while isinstance(src, ssl.SSLSocket) and src.pending():
                data += src.recv(src.pending())
        except (ssl.SSLWantReadError, BlockingIOError):
            return  # part of a record: the rest comes with the next readable
        except OSError:
            data = b""
        if data:
            try:
                dst.setblocking(True)
                dst.sendall(data)
                dst.setblocking(False)
                return
            except OSError:
                pass
        for s in (src, dst):
            sel.unregister(s)
            peers.pop(s, None)
            s.close()
