"""QMP over TLS: the settings a client connects with, the steps of a non-blocking
handshake, and the socket I/O of an encrypted connection.

QEMU serves QMP over TLS with a socket chardev that has ``tls-creds`` (a
``tls-creds-x509`` object); ``Client.connect(("host", port), ssl=context)`` speaks to it
on the same reactor as every other connection. The handshake is non-blocking: the
connection waits for readability or writability as OpenSSL asks, under the connect
timeout. Certificates are verified as the :class:`ssl.SSLContext` says; a context from
:func:`ssl.create_default_context` (``ssl=True`` makes one) verifies the server's
certificate and its name.

Two facts about QEMU shape the I/O (measured on QEMU 7.2, see the guide):

- QEMU does not act on the last TLS record it received until more bytes arrive: a
  command sent in one record is not answered until the next command. Every write
  therefore ends with a record of its own holding only the final newline, which QEMU's
  JSON parser ignores; the command before it is handled at once. ``TCP_NODELAY`` keeps
  the two small records from waiting on each other.
- When QEMU refuses the client's certificate (``verify-peer=on``), the handshake
  succeeds on the client's side and QEMU then closes the connection without a
  greeting; the connect error says so.

This module does not import :mod:`ssl` until a TLS connection is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import socket
    import ssl

__all__ = ["TLSConfig", "tls_config"]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How a client speaks TLS to its server: kept for its reconnections.

    Attributes:
        context: the client-side SSL context (CA, client certificate, verification).
        server_hostname: the name the server's certificate must carry (its host by
            default), also sent as SNI.
    """

    context: ssl.SSLContext
    server_hostname: str


def tls_config(address: str | os.PathLike[str] | tuple[str, int],
               context: ssl.SSLContext | bool | None,
               server_hostname: str | None) -> TLSConfig | None:
    """Check a connect's TLS arguments and return its settings (None: no TLS).

    Args:
        address: where the client connects.
        context: an :class:`ssl.SSLContext`, True for :func:`ssl.create_default_context`
            (the system's CAs, verification on), or None/False for no TLS.
        server_hostname: the name to verify; None: the host of ``address``.

    Raises:
        TypeError: ``context`` is not a context or a bool.
        ValueError: ``server_hostname`` without TLS, a server-side context, or a Unix
            socket address without ``server_hostname``.
    """
    if context is None or context is False:
        if server_hostname is not None:
            raise ValueError("server_hostname is only for TLS connections (ssl=...)")
        return None
    import ssl

    if context is True:
        context = ssl.create_default_context()
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or a bool, not "
                        f"{type(context).__name__}")
    if context.protocol is ssl.PROTOCOL_TLS_SERVER:
        raise ValueError("ssl: a server-side context (PROTOCOL_TLS_SERVER) cannot "
                         "connect; use ssl.create_default_context() or PROTOCOL_TLS_CLIENT")
    if server_hostname is None:
        if not isinstance(address, tuple):
            raise ValueError("TLS over a Unix socket needs server_hostname= (the name "
                             "the server's certificate carries)")
        server_hostname = address[0]
    return TLSConfig(context, server_hostname)


def wrap(sock: socket.socket, config: TLSConfig) -> ssl.SSLSocket:
    """Wrap a connected, non-blocking socket for a handshake driven by
    :func:`handshake_step` (``sock`` must not be used afterwards)."""
    return config.context.wrap_socket(sock, server_hostname=config.server_hostname,
                                      do_handshake_on_connect=False)


def handshake_step(sock: socket.socket) -> str | None:
    """Advance the handshake of a socket made by :func:`wrap`: ``"read"`` or
    ``"write"`` when it must wait for the socket to become readable or writable, None
    when it is done.

    Raises:
        ssl.SSLError, OSError: the handshake failed (see :func:`describe_failure`).
    """
    import ssl

    try:
        cast("ssl.SSLSocket", sock).do_handshake()
    except ssl.SSLWantReadError:
        return "read"
    except ssl.SSLWantWriteError:
        return "write"
    return None


def describe_session(sock: socket.socket) -> str:
    """The protocol and cipher of an established connection (for the debug log)."""
    tls_sock = cast("ssl.SSLSocket", sock)
    cipher = tls_sock.cipher()
    return f"{tls_sock.version()}, {cipher[0] if cipher else '?'}"


def describe_failure(exc: BaseException) -> str:
    """Why a handshake failed, in words for a connect error."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate was refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, ConnectionError) or (isinstance(exc, OSError) and exc.errno):
        return (f"TLS handshake failed: {exc.strerror or exc} (is the server speaking "
                "TLS? a QEMU chardev without tls-creds is not)")
    return f"TLS handshake failed: {exc}"


#: What a connect error adds when a TLS server closes the connection before greeting.
REFUSED_HINT = ("the server closed the connection after the TLS handshake, before its "
                "greeting: QEMU does this when it refuses the client's certificate "
                "(verify-peer=on needs one issued by its CA: "
                "SSLContext.load_cert_chain)")


class TLSStream:
    """``recv`` and ``send`` of an established TLS connection, as the connection calls
    them on a plain socket: non-blocking, ``BlockingIOError`` when the socket has
    nothing to give or take."""

    __slots__ = ("_sock", "_want")

    def __init__(self, sock: socket.socket) -> None:
        import ssl

        self._sock = cast("ssl.SSLSocket", sock)
        self._want: tuple[type[BaseException], ...] = (ssl.SSLWantReadError,
                                                       ssl.SSLWantWriteError)

    def recv(self, size: int) -> bytes:
        """Read what has arrived, including what OpenSSL decrypted and holds beyond
        ``size`` (the reactor would not report it: the socket itself is drained)."""
        sock = self._sock
        try:
            data = sock.recv(size)
        except self._want:
            raise BlockingIOError from None
        held = sock.pending()
        if held:
            chunks = [data]
            while held:
                chunks.append(sock.recv(held))
                held = sock.pending()
            data = b"".join(chunks)
        return data

    def send(self, data: Any) -> int:
        """Write ``data`` as two records, the last holding only its final byte (a
        newline: see the module docstring); return how many bytes were written."""
        sock = self._sock
        written = 0
        with memoryview(data) as view:
            size = len(view)
            try:
                if size > 1:
                    written = sock.send(view[:size - 1])
                    if written < size - 1:
                        return written
                written += sock.send(view[size - 1:])
            except self._want:
                if not written:
                    raise BlockingIOError from None
        return written
