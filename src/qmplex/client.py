"""One QMP connection on a reactor: connect, the command queue and window, events.

Theory of operation
-------------------
A :class:`Client` owns one socket, one :class:`~qmplex.protocol.Protocol` and one
:class:`~qmplex.events.DispatchTable`, and lives on one :class:`~qmplex.Reactor`.
All its methods must be called on the thread driving that reactor (or while no thread
drives it); other threads go through ``reactor.call_soon_threadsafe``.

Commands (:meth:`Client.execute`) are encoded at once (so arguments that are not JSON
fail before anything is queued), then pass three stages::

    QUEUED --window has room--> SENT --reply--> done
                                 \\--reply, `until` event not yet seen--> ANSWERED --event--> done

At most ``window`` in-band commands are SENT and unanswered at once; the rest wait in
the queue in submission order, so commands reach QEMU in the order they were submitted.
The default of 7 keeps QEMU 7.2 reading its socket, so an out-of-band command is never
stuck behind a full in-band queue (QMP-NOTES.md). A command's reply frees its window
slot even if its future still waits for an event.

Bytes are collected in a send buffer and flushed once per reactor pass (one ``send``
for many commands); what the socket does not take is sent when it becomes writable, so
a slow peer never blocks the reactor. A command with file descriptors is sent alone
with them (SCM_RIGHTS) in its own ``sendmsg``.

Cancelling or timing out a command:

- QUEUED: it is skipped when its turn comes (never sent);
- SENT: its reply, when it comes, is discarded (the window slot stays taken until then,
  as it does in QEMU);
- ANSWERED (waiting for its event): it completes as cancelled and the event is ignored.

When the connection ends (EOF, reset, a fatal protocol error, :meth:`Client.close`)
every queued, sent and waiting future fails at once with :class:`ConnectionLost`.
Event subscriptions made with :meth:`Client.on_event` survive it and keep working after
:meth:`Client.reconnect`.
"""

from __future__ import annotations

import array
import collections
import enum
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import ops  # qmplex.ops hook (1/2); (2/2) is the block in class Client
from .errors import (
    Cancelled,
    CommandError,
    ConnectError,
    ConnectionLost,
    ProtocolError,
    StateError,
    Timeout,
    ValidationError,
)
from .events import DispatchTable, Event, EventFilter, Subscription
from .framing import DEFAULT_MAX_LINE_BYTES
from .futures import _DONE as _FUTURE_DONE
from .futures import _PENDING as _FUTURE_PENDING
from .futures import Future
from .protocol import Greeting, Protocol, QMPVersion, State
from .reactor import Reactor, TimerHandle

if TYPE_CHECKING:
    # Imported when first used: the schema module is a tenth of `import qmplex`.
    from .schema import CallNamespace, Schema

__all__ = ["Client", "ClientState", "connect", "DEFAULT_WINDOW", "Address"]

logger = logging.getLogger(__name__)

#: Default number of in-band commands in flight (see the module docstring).
DEFAULT_WINDOW = 7
# Bytes per recv(). A recv's lines are decoded into a batch before they are handled:
# 64 KiB batches (~500 events) stay in cache and die young, which delivers event
# floods ~5% faster than 256 KiB ones (bench/README.md); a large reply is just read in
# more pieces (the splitter never rescans a partial line).
_RECV_BYTES = 64 * 1024

#: A Unix socket path, or a (host, port) pair for TCP.
Address = str | os.PathLike[str] | tuple[str, int]


class ClientState(enum.Enum):
    """Where a client's connection stands."""

    IDLE = "idle"  # never connected
    CONNECTING = "connecting"  # socket connect, greeting or negotiation under way
    READY = "ready"
    DISCONNECTED = "disconnected"  # the connection ended; reconnect() may be called
    CLOSED = "closed"  # close() was called: final


# Enum member lookups cost ~65 ns each on Python 3.11: the hot paths use these.
_READY = ClientState.READY
_CONNECTING = ClientState.CONNECTING

_QUEUED = 0
_SENT = 1
_ANSWERED = 2
_DONE = 3


class _Command(Future[Any]):
    """One submitted command and what it waits for: it is also the future that
    :meth:`Client.execute` returns (one object per command, not two)."""

    __slots__ = (
        "client",
        "name",
        "args",
        "cid",
        "data",
        "until",
        "sub",
        "event",
        "stage",
        "timer",
        "fds",
        "oob",
    )

    def __init__(self, client: Client, name: str, args: dict[str, Any] | None,
                 cid: int, data: bytes, oob: bool) -> None:
        # Future's own fields, set here: Future.__init__ would cost a call per command.
        self._reactor = client._reactor
        self._state = _FUTURE_PENDING
        self._result = None
        self._exception = None
        self._callbacks = None
        self._waiter = None
        self._cancel_hook = None
        self.client = client
        self.name = name
        self.args = args
        self.cid = cid
        self.data = data
        self.until: EventFilter | None = None
        self.sub: Subscription | None = None
        self.event: Event | None = None
        self.stage = _QUEUED
        self.timer: TimerHandle | None = None
        self.fds: list[int] | None = None
        self.oob = oob

    def cancel(self) -> bool:
        """Cancel the command: a queued one is never sent; a sent one has its reply
        discarded (see :meth:`Future.cancel`)."""
        if not Future.cancel(self):
            return False
        self.client._abandon(self)
        return True

    def on_event(self, event: Event) -> None:
        if self.stage == _DONE:
            return
        if self.stage == _QUEUED:
            # Not written yet, so this event cannot be its effect (a stale one, e.g.
            # from an earlier unplug of the same id): keep waiting for the next.
            return
        sub = self.sub
        self.sub = None
        if sub is not None:
            sub.cancel()
        if self.stage == _ANSWERED:
            self.client._finish(self)
            self.set_result(event)
        else:
            self.event = event  # the event came before the return: keep it

    def on_timeout(self) -> None:
        self.timer = None
        if self.stage == _DONE:
            return
        stage = {_QUEUED: "queued", _SENT: "sent, no reply", _ANSWERED: "waiting for event"}
        what = stage.get(self.stage, "")
        self.client._abandon(self)
        self.set_exception(Timeout(f"{self.name}: timed out ({what})"))


class Client(ops.DeprecatedOperations):  # qmplex.ops hook (2/2): this base and the block
    """A QMP client living on a reactor.

    The typed operations are grouped by domain: ``client.vm.stop()``,
    ``client.devices.scsi_device_add(...)`` ... (see :mod:`qmplex.ops`).

    Args:
        reactor: the reactor to live on (a new private one when omitted: it is then
            closed by :meth:`close`).
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.
        enable_oob: negotiate out-of-band execution when the peer offers it.
        splitter_impl: ``"auto"``, ``"c"`` or ``"python"``: the line splitter to use.
    """

    # ---- BEGIN qmplex.ops hook ---------------------------------------------------
    # The typed operations by domain. Each namespace is made on first use and kept in
    # the instance's __dict__ (an idle client pays nothing). DeprecatedOperations, the
    # base class, holds the flat names of 0.1 (client.stop() ...) for one release.
    vm = ops.LazyNamespace(ops.VMOps)
    monitor = ops.LazyNamespace(ops.MonitorOps)
    block = ops.LazyNamespace(ops.BlockOps)
    devices = ops.LazyNamespace(ops.DeviceOps)
    vfio = ops.LazyNamespace(ops.VFIOOps)
    cpu = ops.LazyNamespace(ops.CPUOps)
    memory = ops.LazyNamespace(ops.MemoryOps)
    net = ops.LazyNamespace(ops.NetOps)
    chardev = ops.LazyNamespace(ops.ChardevOps)
    fds = ops.LazyNamespace(ops.FdOps)
    migration = ops.LazyNamespace(ops.MigrationOps)
    qom = ops.LazyNamespace(ops.QOMOps)
    # ---- END qmplex.ops hook -----------------------------------------------------

    def __init__(
        self,
        reactor: Reactor | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        enable_oob: bool = True,
        splitter_impl: str = "auto",
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be at least 64")
        self._own_reactor = reactor is None
        self._reactor = reactor if reactor is not None else Reactor()
        self.window = window
        self.max_line_bytes = max_line_bytes
        self.enable_oob = enable_oob
        self._splitter_impl = splitter_impl
        self._table = DispatchTable()
        self._error_callbacks: list[Callable[[ProtocolError], object]] = []
        self._disconnect_callbacks: list[Callable[[BaseException | None], object]] = []
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._state = ClientState.IDLE
        self._address: Address | None = None
        self._sock: socket.socket | None = None
        # The socket's recv and send, bound once per connection: an attribute lookup on
        # a socket.socket goes through its type's __getattribute__ slot (~0.8k
        # instructions, twice per round trip).
        self._sock_recv: Callable[[int], bytes] = _no_recv
        self._sock_send: Callable[[Any], int] = _no_send
        self._fd = -1
        self._proto: Protocol | None = None
        self._connect_future: Future[QMPVersion] | None = None
        self._connect_timer: TimerHandle | None = None
        self._queue: collections.deque[_Command] = collections.deque()
        self._outstanding = 0  # in-band commands sent and not answered
        self._answered: dict[int, _Command] = {}  # waiting for their `until` event
        self._waits: set[Future[Event]] = set()
        self._segments: collections.deque[list[Any]] = collections.deque()
        self._flush_scheduled = False
        self._writing = False
        self.version: QMPVersion | None = None
        self._schema_load: Future[Schema] | None = None
        #: Commands submitted since the client was made.
        self.commands_sent = 0

    # -------------------------------------------------------------- properties
    @property
    def reactor(self) -> Reactor:
        """The reactor this client lives on."""
        return self._reactor

    @property
    def state(self) -> ClientState:
        """Where the connection stands."""
        return self._state

    @property
    def address(self) -> Address | None:
        """The address of the last :meth:`connect`."""
        return self._address

    @property
    def oob_enabled(self) -> bool:
        """True if out-of-band execution was negotiated on this connection."""
        return self._proto is not None and self._proto.oob_enabled

    @property
    def pending(self) -> int:
        """Commands not yet finished: queued, sent, or waiting for their event.

        A command cancelled or timed out after it was sent is finished (its future is
        done) although its reply, which still holds a window slot, is awaited.
        """
        queued = sum(1 for c in self._queue if c.stage == _QUEUED)
        sent = 0
        if self._proto is not None:
            sent = sum(1 for c in self._proto._in_flight.values()
                       if getattr(c, "stage", None) == _SENT)
        return queued + sent + len(self._answered)

    # ------------------------------------------------------------------ schema
    def load_schema(self, *, cache: bool = True) -> Future[Schema]:
        """Load the peer's schema (``query-qmp-schema``) once per connection.

        With ``cache=True`` a schema already loaded from the same QEMU build (version,
        package and target) in this process is reused. See :func:`qmplex.schema.load_schema`.
        """
        from .schema import load_schema

        return load_schema(self, cache=cache)

    @property
    def schema(self) -> Schema | None:
        """The peer's schema once :meth:`load_schema` completed on this connection."""
        from .schema import loaded_schema

        return loaded_schema(self)

    @property
    def call(self) -> CallNamespace:
        """Every QMP command as a method: ``client.call.blockdev_add(node_name="b0")``.

        Python names map to QMP's spelling (``blockdev_add`` -> ``blockdev-add``,
        ``node_name`` -> ``node-name``); execute options take a leading underscore
        (``_timeout``, ``_until``, ``_oob``, ``_fds``). Once :meth:`load_schema` has
        completed, arguments are validated before anything is sent. Exact names:
        ``client.call["query-status"]()``.
        """
        from .schema import CallNamespace, loaded_schema

        return CallNamespace(self, loaded_schema(self))

    @property
    def dropped_events(self) -> int:
        """Event lines dropped undecoded on this connection because nobody wanted them."""
        return self._proto.dropped_events if self._proto is not None else 0

    def fileno(self) -> int:
        """The socket's file descriptor, or -1 when not connected."""
        return self._fd

    # ----------------------------------------------------------------- connect
    def connect(self, address: Address, *, timeout: float | None = None) -> Future[QMPVersion]:
        """Connect to a QMP server, read its greeting and negotiate capabilities.

        Args:
            address: a Unix socket path, or ``(host, port)`` for TCP.
            timeout: seconds for the whole handshake; on expiry the future fails with
                :class:`Timeout` and the socket is closed.

        Returns:
            A future for the peer's :class:`QMPVersion`, done once commands can be sent.
            Commands submitted before that are queued and sent afterwards. It fails with
            :class:`ConnectError` (socket errors), :class:`Timeout`, or a
            :class:`ProtocolError` (not a QMP greeting, negotiation refused).

        Raises:
            StateError: the client is closed or already connected / connecting.
        """
        fut = self._begin_connect(address, timeout)
        try:
            if isinstance(address, tuple):
                sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                                     socket.SOCK_STREAM)
                target: Any = address
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target = os.fspath(address)
        except OSError as exc:
            self._fail_connect(ConnectError(f"cannot create a socket: {exc}"), exc)
            return fut
        sock.setblocking(False)
        self._sock = sock
        self._sock_recv = sock.recv
        self._sock_send = sock.send
        self._fd = sock.fileno()
        self._try_connect(target, 0.001)
        return fut

    def _try_connect(self, target: Any, backoff: float) -> None:
        sock = self._sock
        if sock is None or self._state is not ClientState.CONNECTING:
            return
        err = sock.connect_ex(target)
        if err in (0, errno.EISCONN):
            self._reactor.add_reader(self._fd, self._on_readable)
        elif err == errno.EAGAIN and sock.family == socket.AF_UNIX:
            # A Unix listener's backlog is full: nothing is in progress, try again
            # (bounded by the connect timeout).
            self._reactor.call_later(backoff, self._try_connect, target, min(backoff * 2, 0.1))
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            self._reactor.add_writer(self._fd, self._on_connected)
        else:
            exc = OSError(err, os.strerror(err))
            self._fail_connect(
                ConnectError(f"cannot connect to {self._address!r}: {os.strerror(err)}"), exc)

    def connect_socket(
        self, sock: socket.socket, *, timeout: float | None = None
    ) -> Future[QMPVersion]:
        """Speak QMP over an already connected stream socket (e.g. one end of a
        ``socketpair`` or a descriptor inherited from a launcher).

        The client takes ownership of ``sock`` and closes it when the connection ends.
        Returns a future like :meth:`connect`'s; :meth:`reconnect` is not possible.
        """
        fut = self._begin_connect(None, timeout)
        sock.setblocking(False)
        self._sock = sock
        self._sock_recv = sock.recv
        self._sock_send = sock.send
        self._fd = sock.fileno()
        self._reactor.add_reader(self._fd, self._on_readable)
        return fut

    def reconnect(self, *, timeout: float | None = None) -> Future[QMPVersion]:
        """Connect again to the last address (after the connection was lost).

        Event subscriptions made with :meth:`on_event` carry over.
        """
        if self._address is None:
            raise StateError("reconnect() before any connect()")
        return self.connect(self._address, timeout=timeout)

    def _begin_connect(self, address: Address | None, timeout: float | None) -> Future[QMPVersion]:
        if self._state is ClientState.CLOSED:
            raise StateError("the client is closed")
        if self._state in (ClientState.CONNECTING, ClientState.READY):
            raise StateError(f"the client is already {self._state.value}")
        reactor = self._reactor
        fut: Future[QMPVersion] = Future(reactor)
        if address is not None:
            self._address = address
        self._connect_future = fut
        self._state = ClientState.CONNECTING
        self._proto = Protocol(self.max_line_bytes, router=self._table,
                               splitter_impl=self._splitter_impl)
        self.version = None
        self._schema_load = None
        if timeout is not None:
            self._connect_timer = reactor.call_later(timeout, self._on_connect_timeout, timeout)
        fut._set_cancel_hook(self._on_connect_cancel)
        return fut

    def _on_connected(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._reactor.remove_writer(self._fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            exc = OSError(err, os.strerror(err))
            self._fail_connect(
                ConnectError(f"cannot connect to {self._address!r}: {os.strerror(err)}"), exc)
            return
        self._reactor.add_reader(self._fd, self._on_readable)

    def _on_connect_timeout(self, timeout: float) -> None:
        self._connect_timer = None
        if self._state is ClientState.CONNECTING:
            stage = "the greeting" if self._proto is None or self._proto.version is None \
                else "capabilities negotiation"
            self._fail_connect(
                Timeout(f"connecting to {self._address!r}: no answer within {timeout} s "
                        f"(waiting for {stage})"), None)

    def _on_connect_cancel(self) -> None:
        if self._state is ClientState.CONNECTING:
            self._lost(Cancelled("connect was cancelled"))

    def _fail_connect(self, exc: BaseException, cause: BaseException | None) -> None:
        if cause is not None:
            exc.__cause__ = cause
        fut = self._connect_future
        self._connect_future = None
        if fut is not None:
            fut.set_exception(exc)
        self._lost(exc)

    # ------------------------------------------------------------------ execute
    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        oob: bool = False,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        """Submit a QMP command.

        Args:
            name: the command, spelled as QMP spells it (``"device_del"``,
                ``"blockdev-add"``).
            arguments: its arguments (a JSON object), or None.
            timeout: seconds until the future fails with :class:`Timeout` (counted from
                now; covers queueing, the reply and the ``until`` event).
            until: complete only when an event passing this filter arrives (it is
                registered before the command is written, so an event that comes
                before the reply counts; one that comes while the command still waits
                in the queue cannot be its effect and is ignored); the future then
                resolves to that :class:`Event`.
            oob: send as ``exec-oob`` (out of band), bypassing the window; needs OOB
                negotiated.
            fds: file descriptors to pass with the command (SCM_RIGHTS, Unix sockets
                only). They are duplicated now; the caller keeps its own.

        Returns:
            A future for QMP's ``return`` value (or the ``until`` event). It fails with
            :class:`CommandError` for a QMP error reply, :class:`ConnectionLost`,
            :class:`Timeout` or :class:`Cancelled`.

        Raises:
            StateError: the client is closed or not connected.
            ValidationError: the arguments are not a JSON object of serialisable values,
                or an entry of ``fds`` cannot be duplicated (raised before anything is
                queued or sent; no duplicate is left open).
        """
        state = self._state
        if state is not _READY and state is not _CONNECTING:
            if state is ClientState.CLOSED:
                raise StateError(f"{name}: the client is closed")
            raise StateError(f"{name}: the client is not connected ({state.value})")
        if arguments is not None and type(arguments) is not dict:
            if not isinstance(arguments, Mapping):
                raise ValidationError(f"{name}: arguments must be a mapping, "
                                      f"not {type(arguments).__name__}")
            arguments = dict(arguments)
        proto = self._proto
        assert proto is not None
        if oob and not proto.oob_enabled and state is _READY:
            raise StateError(f"{name}: out-of-band execution was not negotiated")
        cid, data = proto.encode(name, arguments, oob)
        cmd = _Command(self, name, arguments, cid, data, oob)
        if fds:
            if self._sock is not None and self._sock.family != socket.AF_UNIX:
                raise ValidationError(f"{name}: file descriptors can only be passed over a "
                                      "Unix socket")
            cmd.fds = _dup_fds(name, fds)
        if until is not None:
            cmd.until = until
            cmd.sub = self._table.subscribe(until, cmd.on_event)
        if timeout is not None:
            cmd.timer = self._reactor.call_later(timeout, cmd.on_timeout)
        self.commands_sent += 1
        if self._debug:
            logger.debug("%s queue %s id=%d %s", self._label(), name, cid,
                         _redacted(name, arguments))
        if oob:
            if state is _READY:
                self._send(cmd)
            else:
                self._queue.append(cmd)
        elif state is _READY and self._outstanding < self.window and not self._queue:
            self._send(cmd)
        else:
            self._queue.append(cmd)
        return cmd

    def _send(self, cmd: _Command) -> None:
        proto = self._proto
        assert proto is not None
        cmd.stage = _SENT
        proto.expect(cmd.cid, cmd)
        if not cmd.oob:
            self._outstanding += 1
        fds = cmd.fds
        if fds:
            cmd.fds = None
        self._buffer(cmd.data, fds)
        cmd.data = b""

    def _buffer(self, data: bytes, fds: list[int] | None = None) -> None:
        """Add ``data`` (with ``fds`` to pass on its first byte) to what the next flush
        sends, and make sure a flush comes."""
        segments = self._segments
        if fds:
            segments.append([data, fds])
        elif segments and segments[-1][1] is None:
            last = segments[-1]
            if type(last[0]) is bytes:  # more bytes this pass: make it growable
                last[0] = bytearray(last[0])
            last[0] += data
        else:
            segments.append([data, None])  # bytes: a lone command is not copied
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            # One send for everything submitted this pass, just before the reactor
            # sleeps (a call_soon would cost a pass, and a poll, more).
            self._reactor.call_before_wait(self._flush)

    def _pump(self) -> None:
        """Send queued commands while the window has room."""
        queue = self._queue
        window = self.window
        proto = self._proto
        assert proto is not None
        expect = proto.expect
        # A run of plain commands (the usual window refill) is what _send does, with
        # one joined write for the whole run.
        chunks: list[bytes] = []
        while queue:
            cmd = queue[0]
            if cmd.stage != _QUEUED:
                queue.popleft()  # cancelled or timed out while queued
                continue
            if not cmd.oob and self._outstanding >= window:
                break
            queue.popleft()
            if cmd.oob or cmd.fds:
                if chunks:
                    self._buffer(b"".join(chunks))
                    chunks = []
                self._send(cmd)
                continue
            cmd.stage = _SENT
            expect(cmd.cid, cmd)
            self._outstanding += 1
            chunks.append(cmd.data)
            cmd.data = b""
        if chunks:
            self._buffer(b"".join(chunks))

    def _flush(self) -> bool:
        """Send what the socket takes. True if the connection was lost meanwhile
        (futures were failed: see Reactor.call_before_wait)."""
        self._flush_scheduled = False
        sock = self._sock
        if sock is None:
            return False
        segments = self._segments
        try:
            while segments:
                seg = segments[0]
                data, fds = seg
                if fds is None:
                    n = self._sock_send(data)
                else:
                    n = sock.sendmsg(
                        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    _close_fds(fds)
                    seg[1] = None  # the descriptors went with the first byte
                if n < len(data):
                    seg[0] = bytearray(memoryview(data)[n:])
                    break
                segments.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._lost(ConnectionLost(f"send failed: {exc}"), exc)
            return True
        if segments:
            if not self._writing:
                self._writing = True
                self._reactor.add_writer(self._fd, self._on_writable)
        elif self._writing:
            self._writing = False
            self._reactor.remove_writer(self._fd)
        return False

    def _on_writable(self) -> None:
        self._flush()

    # ------------------------------------------------------------------ reading
    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = self._sock_recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(ConnectionLost(f"receive failed: {exc}"), exc)
            return
        if not data:
            self._lost(ConnectionLost("the peer closed the connection"))
            return
        proto = self._proto
        assert proto is not None
        try:
            # Replies and events are handled as each line is decoded, in stream order.
            proto.receive_into(data, self._on_reply, self._on_message, route=not self._debug)
        except ProtocolError as exc:
            self._report_error(exc)
            if self._proto is not proto:
                return  # a callback already replaced the connection
            if self._state is ClientState.CONNECTING:
                self._fail_connect(exc, None)
            else:
                self._lost(ConnectionLost(f"protocol error: {exc}"), exc)
            return
        if self._proto is not proto:
            return  # a callback ended (or replaced) the connection
        if self._state is ClientState.CONNECTING:
            if proto.state is State.READY:
                self._on_ready()
        elif self._queue and self._outstanding < self.window:
            self._pump()

    def _on_reply(self, cmd: _Command, ok: bool, value: Any) -> None:
        """A reply from the protocol (``receive_into``), for the command it belongs to."""
        if not cmd.oob:
            self._outstanding -= 1
        if cmd.stage != _SENT:
            return  # cancelled or timed out: the reply is discarded
        if ok:
            if cmd.until is None:
                if cmd.timer is None and cmd.sub is None and not cmd.fds:
                    cmd.stage = _DONE  # all that _finish() would do here
                else:
                    self._finish(cmd)
                if cmd._waiter is None and not cmd._callbacks:
                    # Future.set_result, inlined for the usual reply nobody waits on
                    # from another thread or listens to (it is pending: stage was SENT).
                    cmd._result = value
                    cmd._state = _FUTURE_DONE
                else:
                    cmd.set_result(value)
            elif cmd.event is not None:
                event = cmd.event
                self._finish(cmd)
                cmd.set_result(event)
            else:
                cmd.stage = _ANSWERED
                self._answered[cmd.cid] = cmd
        else:
            self._finish(cmd)
            err = value if isinstance(value, dict) else {}
            cmd.set_exception(CommandError(
                cmd.name, str(err.get("class", "GenericError")),
                str(err.get("desc", value)), cmd.args))

    def _on_message(self, msg: Any) -> None:
        """Anything else from the protocol: a greeting, a reported error, an event that
        did not go straight to its handler."""
        t = type(msg)
        if t is Event:
            if self._debug:
                logger.debug("%s event %s %s", self._label(), msg.name, msg.data)
            self._table.dispatch(msg)
        elif t is Greeting:
            self._on_greeting(msg)
        elif isinstance(msg, ProtocolError):
            self._report_error(msg)

    def _on_greeting(self, greeting: Greeting) -> None:
        proto = self._proto
        assert proto is not None
        self.version = greeting.version
        if self._debug:
            logger.debug("%s greeting: QEMU %s %s", self._label(), greeting.version,
                         greeting.version.capabilities)
        data = proto.negotiate(self.enable_oob)
        self._segments.appendleft([bytearray(data), None])
        self._flush()

    def _on_ready(self) -> None:
        self._state = ClientState.READY
        timer = self._connect_timer
        if timer is not None:
            timer.cancel()
            self._connect_timer = None
        fut = self._connect_future
        self._connect_future = None
        if fut is not None and self.version is not None:
            fut.set_result(self.version)
        self._pump()

    def _finish(self, cmd: _Command) -> None:
        """Release what a command holds (timer, subscription) and mark it done."""
        if cmd.stage == _ANSWERED:
            self._answered.pop(cmd.cid, None)
        cmd.stage = _DONE
        timer = cmd.timer
        if timer is not None:
            cmd.timer = None
            timer.cancel()
        sub = cmd.sub
        if sub is not None:
            cmd.sub = None
            sub.cancel()
        if cmd.fds:
            _close_fds(cmd.fds)
            cmd.fds = None

    def _abandon(self, cmd: _Command) -> None:
        # Cancel/timeout: a queued command is skipped by _pump; a sent one keeps its
        # in-flight entry so its reply is recognised and discarded.
        if cmd.stage != _DONE:
            if cmd.stage == _QUEUED:
                # It stays in the queue until _pump passes it (possibly long, behind a
                # stuck peer): keep only a small shell, not its encoded bytes.
                cmd.data = b""
                cmd.args = None
            self._finish(cmd)

    # ------------------------------------------------------------------- events
    def on_event(
        self,
        callback: Callable[[Event], object],
        name: str | None = None,
        match: Mapping[str, Any] | None = None,
        *,
        predicate: Callable[[Event], bool] | None = None,
        queue: int | None = None,
    ) -> Subscription:
        """Call ``callback(event)`` for every event passing the filter.

        Args:
            callback: runs on the reactor's thread, in arrival order; an exception it
                raises is logged and does not affect other callbacks.
            name: the event name (``None``: every event; note that this makes every
                event line decoded).
            match: a dict compared against the event's data (nested keys allowed).
            predicate: an extra test.
            queue: ``None`` (default): the callback runs inline as each event is read;
                a slow callback slows reading this connection (the socket pushes
                back on the peer) and no event is ever dropped. ``N``: events wait in
                a backlog of at most ``N`` and are delivered through the reactor (at
                most ``qmplex.events.DRAIN_BATCH`` per pass), so reading goes on at
                full speed; an event that finds the backlog full is dropped and
                counted in ``Subscription.dropped``.

        Returns:
            A :class:`Subscription`; call its ``cancel()`` to stop. It survives
            reconnection.

        Raises:
            ValueError: ``queue`` is below 1.
        """
        flt = EventFilter(name, match, predicate)
        if queue is None:
            return self._table.subscribe(flt, callback)
        return self._table.subscribe(flt, callback, queue=queue,
                                     schedule=self._reactor.call_soon)

    def wait_event(
        self,
        name: str | EventFilter,
        match: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Future[Event]:
        """Return a future for the next event passing the filter.

        It fails with :class:`Timeout` after ``timeout`` seconds and with
        :class:`ConnectionLost` if the connection ends first (or, for a wait made
        while disconnected, when :meth:`close` is called). Cancelling it removes
        the wait.

        Raises:
            StateError: the client is closed (no event can ever arrive).
        """
        if self._state is ClientState.CLOSED:
            raise StateError("wait_event: the client is closed")
        flt = name if isinstance(name, EventFilter) else EventFilter(name, match)
        reactor = self._reactor
        fut: Future[Event] = Future(reactor)
        waits = self._waits
        timer: list[TimerHandle | None] = [None]

        def _on_event(event: Event) -> None:
            waits.discard(fut)
            if timer[0] is not None:
                timer[0].cancel()
            fut.set_result(event)

        sub = self._table.subscribe(flt, _on_event, once=True)

        def _drop() -> None:
            waits.discard(fut)
            sub.cancel()
            if timer[0] is not None:
                timer[0].cancel()

        def _on_timeout() -> None:
            timer[0] = None
            _drop()
            fut.set_exception(Timeout(f"no {flt.name or 'matching'} event within {timeout} s"))

        if timeout is not None:
            timer[0] = reactor.call_later(timeout, _on_timeout)
        fut._set_cancel_hook(_drop)
        waits.add(fut)
        return fut

    def on_error(self, callback: Callable[[ProtocolError], object]) -> Subscription:
        """Call ``callback(error)`` for every protocol error the peer causes.

        Non-fatal errors (e.g. an invalid event line) are reported here and the
        connection continues; fatal ones are reported here before the connection ends.
        """
        return _ListSubscription(self._error_callbacks, callback)

    def on_disconnect(self, callback: Callable[[BaseException | None], object]) -> Subscription:
        """Call ``callback(reason)`` each time the connection ends (``None``: closed
        by :meth:`close`)."""
        return _ListSubscription(self._disconnect_callbacks, callback)

    def _report_error(self, exc: ProtocolError) -> None:
        logger.warning("%s protocol error: %s", self._label(), exc)
        for cb in list(self._error_callbacks):
            try:
                cb(exc)
            except Exception:
                logger.exception("error callback %r raised", cb)

    # -------------------------------------------------------------------- close
    def close(self) -> None:
        """Close the connection for good.

        Every queued, sent and waiting future fails with :class:`ConnectionLost`;
        afterwards :meth:`execute` raises :class:`StateError`. A reactor the client
        created itself is closed too. Safe to call more than once.
        """
        if self._state is ClientState.CLOSED:
            return
        if self._state is ClientState.CONNECTING and self._connect_future is not None:
            fut = self._connect_future
            self._connect_future = None
            fut.set_exception(ConnectionLost("the client was closed while connecting"))
        self._lost(ConnectionLost("the client was closed"), final=True)
        if self._own_reactor and not self._reactor.is_running():
            self._reactor.close()

    def _lost(self, reason: BaseException, cause: BaseException | None = None, *,
              final: bool = False) -> None:
        """Tear the connection down: mark, fail every future, unregister, close."""
        if self._state in (ClientState.DISCONNECTED, ClientState.CLOSED) and \
                self._sock is None:
            if final:
                self._state = ClientState.CLOSED
                self._fail_waits(str(reason), reason)  # made while disconnected
            return
        was_closed_by_user = final
        self._state = ClientState.CLOSED if final else ClientState.DISCONNECTED
        if self._debug:
            logger.debug("%s connection ended: %s", self._label(), reason)
        if cause is not None and reason.__cause__ is None:
            reason.__cause__ = cause
        timer = self._connect_timer
        if timer is not None:
            timer.cancel()
            self._connect_timer = None
        fut = self._connect_future
        self._connect_future = None
        if fut is not None:
            fut.set_exception(reason)
        proto = self._proto
        victims: list[_Command] = []
        if proto is not None:
            victims.extend(proto.take_in_flight())
            proto.receive_eof()
        victims.extend(self._answered.values())
        victims.extend(self._queue)
        self._answered = {}
        self._queue = collections.deque()
        self._outstanding = 0
        for seg in self._segments:
            if seg[1]:
                _close_fds(seg[1])
        self._segments.clear()
        message = str(reason)
        for cmd in victims:
            if not isinstance(cmd, _Command) or cmd.stage == _DONE:
                continue
            self._finish(cmd)
            err = ConnectionLost(f"{cmd.name}: {message}")
            err.__cause__ = reason
            cmd.set_exception(err)
        self._fail_waits(message, reason)
        sock = self._sock
        self._sock = None
        self._sock_recv = _no_recv
        self._sock_send = _no_send
        if sock is not None:
            fd = self._fd
            self._fd = -1
            self._writing = False
            if not self._reactor.closed:
                self._reactor.remove_reader(fd)
                self._reactor.remove_writer(fd)
            sock.close()
        arg: BaseException | None = None if was_closed_by_user else reason
        for cb in list(self._disconnect_callbacks):
            try:
                cb(arg)
            except Exception:
                logger.exception("disconnect callback %r raised", cb)

    def _fail_waits(self, message: str, reason: BaseException) -> None:
        waits = list(self._waits)
        self._waits.clear()
        for w in waits:
            err = ConnectionLost(f"waiting for an event: {message}")
            err.__cause__ = reason
            hook = w._cancel_hook
            w._set_cancel_hook(None)
            if hook is not None:
                hook()
            w.set_exception(err)

    # -------------------------------------------------------------- utilities
    def _label(self) -> str:
        return f"qmp[{self._address}]"

    def __repr__(self) -> str:
        return f"<Client {self._address!r} {self._state.value}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ListSubscription(Subscription):
    """A subscription that removes a callback from a plain list."""

    __slots__ = ("_list",)

    def __init__(self, items: list[Any], callback: Callable[..., object]) -> None:
        self._list: list[Any] | None = items
        self.callback = callback
        self.active = True
        self.once = False
        self.dropped = 0
        self._backlog = None
        self.filter = EventFilter()
        items.append(callback)

    def cancel(self) -> None:
        """Stop receiving callbacks."""
        if self.active and self._list is not None:
            self.active = False
            try:
                self._list.remove(self.callback)
            except ValueError:
                pass
            self._list = None


def _no_recv(size: int) -> bytes:
    raise OSError(errno.ENOTCONN, "not connected")


def _no_send(data: Any) -> int:
    raise OSError(errno.ENOTCONN, "not connected")


def _dup_fds(name: str, fds: Sequence[int]) -> list[int]:
    """Duplicate ``fds``; on failure close the duplicates made so far."""
    dups: list[int] = []
    try:
        for fd in fds:
            dups.append(os.dup(fd))
    except (OSError, TypeError, ValueError) as exc:
        _close_fds(dups)
        raise ValidationError(f"{name}: cannot duplicate file descriptor {fd!r}: {exc}") \
            from exc
    return dups


def _close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_SECRET_KEYS = frozenset({"password", "passphrase", "secret", "key-secret", "new-secret",
                          "cookie"})
_SECRET_QOM_TYPES = frozenset({"secret", "secret_keyring"})
# Words that make a whole HMP command line secret (``set_password vnc PW``,
# ``change vnc password PW``, ``object_add secret,id=s0,data=PW``).
_SECRET_HMP_WORDS = ("password", "passwd", "secret")


def _redacted(name: str, arguments: Mapping[str, Any] | None) -> Any:
    """``arguments`` with secrets replaced, for debug logs only.

    Redacted: any member named like a password or secret, at any depth (inside lists
    too); the ``data`` / ``iv`` of ``object-add`` for ``secret`` objects; the ``value``
    of ``qom-set`` on a password or secret property; and the arguments of a
    ``human-monitor-command`` whose command line mentions a password or secret.
    """
    if not arguments:
        return arguments
    if name == "human-monitor-command":
        line = arguments.get("command-line")
        if isinstance(line, str) and any(w in line.lower() for w in _SECRET_HMP_WORDS):
            words = line.split(None, 1)
            return dict(arguments, **{"command-line": f"{words[0]} <redacted>"})
    if name == "qom-set":
        prop = arguments.get("property")
        if isinstance(prop, str) and any(w in prop.lower() for w in _SECRET_HMP_WORDS):
            return dict(_redact_dict(arguments, False), value="<redacted>")
    secret_obj = name == "object-add" and arguments.get("qom-type") in _SECRET_QOM_TYPES
    return _redact_dict(arguments, secret_obj)


def _redact_dict(d: Mapping[str, Any], secret_obj: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in _SECRET_KEYS or (secret_obj and k in ("data", "iv")):
            out[k] = "<redacted>"
        else:
            out[k] = _redact_value(v, secret_obj)
    return out


def _redact_value(v: Any, secret_obj: bool) -> Any:
    if isinstance(v, Mapping):
        return _redact_dict(v, secret_obj)
    if isinstance(v, (list, tuple)):
        return [_redact_value(x, secret_obj) for x in v]
    return v


def connect(
    address: Address,
    *,
    reactor: Reactor | None = None,
    timeout: float | None = None,
    window: int = DEFAULT_WINDOW,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Client:
    """Connect to a QMP server and return a ready :class:`Client` (blocking).

    Args:
        address: a Unix socket path, or ``(host, port)``.
        reactor: the reactor to live on; a private one when omitted.
        timeout: seconds for the whole handshake.
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.

    Raises:
        ConnectError, Timeout, ProtocolError: as :meth:`Client.connect`'s future.
    """
    client = Client(reactor, window=window, max_line_bytes=max_line_bytes)
    try:
        client.connect(address, timeout=timeout).result()
    except BaseException:
        client.close()
        raise
    return client
