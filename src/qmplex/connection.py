"""One QMP connection on a reactor: socket, command queue and window, fds, teardown.

This is the I/O half of a :class:`~qmplex.Client` (the client is the public facade:
thread hand-off, the event API, reconnection, typed operations). Everything here runs
on the reactor thread; the client makes sure of that.

Theory of operation
-------------------
A :class:`Connection` owns one socket and one sans-I/O
:class:`~qmplex.core.protocol.Protocol` at a time (a new pair per connect), the
client's :class:`~qmplex.events.DispatchTable`, and the queue of commands.

Commands are encoded by the client on the calling thread (so arguments that are not
JSON fail before anything is queued), then pass these stages (:class:`Stage`)::

    QUEUED --window has room--> SENT --reply--> DONE
                                 \\--reply, `until` event not yet seen--> ANSWERED --event--> DONE

At most ``window`` in-band commands are SENT and unanswered at once; the rest wait in
the queue in submission order, so commands reach QEMU in the order they were submitted.
The default of 7 keeps QEMU 7.2 reading its socket, so an out-of-band command is never
stuck behind a full in-band queue (QMP-NOTES.md). A command's reply frees its window
slot even if its future still waits for an event.

Commands come in through the intake (any thread), which the reactor thread drains at
the start of its next pass: everything submitted since the last pass is queued and
sent in one ``send``, and each receive's replies refill the window in one ``send``
too. What the socket does not take is sent when it becomes writable, so a slow peer
never blocks the reactor. A command with file descriptors is sent with them
(SCM_RIGHTS) in a ``sendmsg`` of its own.

Receiving: each ``recv`` is parsed whole by the protocol first; then its replies
complete their commands and its events are handed to the dispatch table, in stream
order (a run of consecutive events is one ready callback). No user code runs while a
buffer is being parsed, and every callback runs from the reactor's ready queue. A
callback that closes the client stops the delivery of the events after it (a closed
client delivers no events); replies that had arrived still complete their commands.

Cancelling or timing out a command:

- QUEUED: it is skipped when its turn comes (never sent);
- SENT: its reply, when it comes, is discarded (the window slot stays taken until then,
  as it does in QEMU);
- ANSWERED (waiting for its event): it completes as cancelled and the event is ignored.

Teardown (EOF, reset, a fatal protocol error, ``close()``): mark the state, fail every
queued, sent and waiting command with :class:`~qmplex.errors.ConnectionLost`,
unregister the socket, close it, then tell the client (which runs ``on_disconnect``
callbacks and its reconnect policy).
"""

from __future__ import annotations

import array
import collections
import enum
import errno
import itertools
import logging
import os
import random
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import tls
from .core.framing import DEFAULT_MAX_LINE_BYTES
from .core.messages import Event, Greeting, QMPVersion, Reply, StaleReply
from .core.protocol import Protocol as QMPProtocol
from .core.protocol import State
from .errors import (
    Cancelled,
    CommandError,
    ConnectError,
    ConnectionLost,
    OperationTimeout,
    ProtocolError,
    StateError,
    ValidationError,
    detail,
)
from .events import DispatchTable, EventFilter, Subscription
from .futures import _DONE, _FAILED, Future
from .metrics import FOLD_AT, LatencyBook, Outcome
from .redact import redact_arguments
from .tls import TLSConfig

if TYPE_CHECKING:
    from .reactor import Reactor, TimerHandle

__all__ = ["ClientState", "Stage", "Connection", "DEFAULT_WINDOW", "Address", "next_id"]

logger = logging.getLogger("qmplex.connection")

#: Default number of in-band commands in flight (see the module docstring).
DEFAULT_WINDOW = 7
# Bytes per recv(). A recv's lines are parsed into one batch before they are handed
# out; a large reply is just read in more pieces (the splitter never rescans).
_RECV_BYTES = 64 * 1024

#: A Unix socket path, or a (host, port) pair for TCP.
Address = str | os.PathLike[str] | tuple[str, int]

# Command ids: unique across every connection of this process (QEMU hands the reply of
# a command a previous client left running to the next client of its monitor), and
# started at a random point so that another process's leftovers are unlikely to match.
_ids = itertools.count(random.SystemRandom().randrange(1, 1 << 31) * 1000)
#: Return a fresh command id (thread-safe).
next_id = _ids.__next__


class ClientState(enum.Enum):
    """Where a client's connection stands."""

    IDLE = "idle"  # never connected
    CONNECTING = "connecting"  # socket connect, greeting or negotiation under way
    READY = "ready"
    DISCONNECTED = "disconnected"  # the connection ended; reconnect() may be called
    CLOSED = "closed"  # close() was called: final


class Stage(enum.Enum):
    """Where a command stands (see the module docstring)."""

    QUEUED = "queued"
    SENT = "sent, no reply"
    ANSWERED = "answered, waiting for its event"
    DONE = "done"


# Bound once: enum member lookups cost an attribute lookup each on the hot paths.
_READY = ClientState.READY
_CONNECTING = ClientState.CONNECTING
_QUEUED = Stage.QUEUED
_SENT = Stage.SENT
_ANSWERED = Stage.ANSWERED
_FINISHED = Stage.DONE
_PROTO_CLOSED = State.CLOSED


class Listener(Protocol):
    """What a connection tells its owner (the client)."""

    def connection_ready(self) -> None:
        """Negotiation finished: the connection is READY."""

    def connection_lost(self, reason: BaseException, established: bool, final: bool) -> None:
        """The connection ended; ``established``: it had been READY; ``final``: by
        ``close()``."""

    def protocol_error(self, error: ProtocolError) -> None:
        """The peer sent something that is not QMP (reported, maybe fatal)."""

    def commands_done(self, done: list[tuple[str, float, str]]) -> None:
        """Commands finished: ``(name, latency, outcome)`` each (only asked for while the
        client has :meth:`Client.on_command` hooks)."""

    def keeps_queue(self, established: bool) -> bool:
        """Whether commands never sent stay queued when the connection ends (or while
        it is down): True while a reconnect policy will connect again."""


class _Special:
    """What only some commands have: a timeout, an event to wait for, descriptors,
    out-of-band execution (kept apart so that a plain command stays small)."""

    __slots__ = ("until", "sub", "event", "timer", "fds", "oob", "timeout", "deadline")

    def __init__(self, until: EventFilter | None, timeout: float | None,
                 deadline: float | None, fds: list[int] | None, oob: bool) -> None:
        self.until = until
        self.sub: Subscription | None = None
        self.event: Event | None = None
        self.timeout = timeout  # as given, for messages
        self.deadline = deadline  # reactor.time() when it times out
        self.timer: TimerHandle | None = None
        self.fds = fds
        self.oob = oob


class Command(Future[Any]):
    """One submitted command: also the future that ``Client.execute`` returns.

    Attributes:
        name: the QMP command.
        cid: its id on the wire.
        stage: where it stands (:class:`Stage`).
    """

    __slots__ = ("conn", "name", "args", "cid", "data", "stage", "special", "t0")

    def __init__(self, conn: Connection, name: str, args: dict[str, Any] | None,
                 cid: int, data: bytes) -> None:
        Future.__init__(self, conn.reactor)
        self.conn = conn
        self.name = name
        self.args = args
        self.cid = cid
        self.data = data
        self.stage = _QUEUED
        self.special: _Special | None = None
        self.t0 = conn.clock()  # for the latency figures (qmplex.metrics)

    def _cancelling(self) -> None:
        if self.stage is not _FINISHED:
            self.conn.abandon(self)
            self.conn.record(self, Outcome.CANCELLED)

    def __repr__(self) -> str:
        """The client's name, the command and its state (for logs; not a stable format)."""
        return f"<Command {self.conn.name}: {self.describe()} ({Future.__repr__(self)})>"

    def on_event(self, event: Event) -> None:
        """The ``until`` event arrived (a dispatch-table callback)."""
        if self.stage is _FINISHED:
            return
        if self.stage is _QUEUED:
            # Not written yet, so this event cannot be its effect (a stale one, e.g.
            # from an earlier unplug of the same id): keep waiting for the next.
            return
        special = self.special
        assert special is not None
        sub = special.sub
        special.sub = None
        if sub is not None:
            sub.cancel()
        if self.stage is _ANSWERED:
            self.conn.finish(self)
            self._complete(_DONE, event)
            self.conn.record(self, Outcome.OK)
        else:
            special.event = event  # the event came before the return: keep it

    def on_timeout(self) -> None:
        """The command's own timeout passed (a reactor timer)."""
        special = self.special
        if special is not None:
            special.timer = None
        if self.stage is _FINISHED:
            return
        stage = self.stage
        self.conn.abandon(self)
        self._complete(_FAILED, OperationTimeout(
            f"{self.describe()}: timed out after {special.timeout if special else '?'} s "
            f"({stage.value})", connection=self.conn.name, command=self.name))
        self.conn.record(self, Outcome.TIMEOUT)

    def describe(self) -> str:
        """The command as errors name it: ``device_del d3`` for commands on a device."""
        args = self.args
        if args:
            for key in ("id", "node-name", "node_name"):
                value = args.get(key)
                if isinstance(value, str):
                    return f"{self.name} {value}"
        return self.name


class Connection:
    """The I/O of one client: reactor-thread code only (see the module docstring).

    Args:
        reactor: the reactor it lives on.
        table: the client's event dispatch table (it outlives connections).
        listener: the client, told about readiness, loss and protocol errors.
        name: the client's name, used in errors and log records.
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.
        enable_oob: negotiate out-of-band execution when the peer offers it.
        splitter_impl: ``"auto"``, ``"c"`` or ``"python"``: the line splitter to use.
    """

    __slots__ = ("reactor", "table", "listener", "name", "window", "max_line_bytes",
                 "enable_oob", "splitter_impl", "state", "address", "version", "proto",
                 "_sock", "_sock_recv", "_sock_send", "fd", "_connect_future",
                 "_connect_timer", "_retry_timer", "intake", "_drain_asked", "queue",
                 "outstanding", "_answered",
                 "_segments", "_writing", "_debug", "_established",
                 "commands_sent", "completed", "failed", "events_received",
                 "events_dropped", "stale_replies", "latencies", "want_done", "clock",
                 "tls", "_handshaking", "__weakref__")

    def __init__(self, reactor: Reactor, table: DispatchTable, listener: Listener, *,
                 name: str, window: int = DEFAULT_WINDOW,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, enable_oob: bool = True,
                 splitter_impl: str = "auto") -> None:
        self.reactor = reactor
        self.table = table
        self.listener = listener
        self.name = name
        self.window = window
        self.max_line_bytes = max_line_bytes
        self.enable_oob = enable_oob
        self.splitter_impl = splitter_impl
        self.state = ClientState.IDLE
        self.address: Address | None = None
        self.version: QMPVersion | None = None
        self.proto: QMPProtocol | None = None
        self._sock: socket.socket | None = None
        # The socket's recv and send, bound once per connection.
        self._sock_recv: Any = _no_recv
        self._sock_send: Any = _no_send
        self.fd = -1
        self._connect_future: Future[QMPVersion] | None = None
        self._connect_timer: TimerHandle | None = None
        self._retry_timer: TimerHandle | None = None
        # Commands submitted from any thread, not yet seen by the reactor thread.
        self.intake: collections.deque[Command] = collections.deque()
        self._drain_asked = False  # a drain is scheduled and has not begun
        self.queue: collections.deque[Command] = collections.deque()
        self.outstanding = 0  # in-band commands sent and not answered
        self._answered: dict[int, Command] = {}  # waiting for their `until` event
        self._segments: collections.deque[list[Any]] = collections.deque()
        self._writing = False  # waiting for the socket to take more
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._established = False  # this connection reached READY
        # Counters since the client was made (qmplex.metrics): the protocol's counters of
        # earlier connections are added to events_dropped / stale_replies when they end.
        self.commands_sent = 0
        self.completed = 0
        self.failed = 0
        self.events_received = 0
        self.events_dropped = 0
        self.stale_replies = 0
        self.latencies = LatencyBook()
        self.want_done = False  # the client has on_command hooks: report each outcome
        self.clock = reactor.clock  # the reactor's clock, for latencies
        #: TLS settings of :meth:`connect` (kept for reconnections); None: plain.
        self.tls: TLSConfig | None = None
        self._handshaking = False  # the TLS handshake is under way

    # ----------------------------------------------------------------- connect
    def connect(self, address: Address, timeout: float | None) -> Future[QMPVersion]:
        """Connect, read the greeting and negotiate (see ``Client.connect``), over TLS
        when :attr:`tls` is set."""
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
            self._fail_connect(ConnectError(f"{self.name}: cannot create a socket: {exc}"), exc)
            return fut
        self._adopt(sock)
        self._try_connect(target, 0.001)
        return fut

    def connect_socket(self, sock: socket.socket, timeout: float | None) -> Future[QMPVersion]:
        """Speak QMP over an already connected socket (see ``Client.connect_socket``)."""
        fut = self._begin_connect(None, timeout)
        self._adopt(sock)
        self.reactor.add_reader(self.fd, self._on_readable)
        return fut

    def _adopt(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._sock_recv = sock.recv
        self._sock_send = sock.send
        self.fd = sock.fileno()

    def _begin_connect(self, address: Address | None, timeout: float | None) -> Future[QMPVersion]:
        if self.state is ClientState.CLOSED:
            raise StateError(f"{self.name}: the client is closed")
        if self.state is _CONNECTING or self.state is _READY:
            raise StateError(f"{self.name}: the client is already {self.state.value}")
        reactor = self.reactor
        fut: Future[QMPVersion] = Future(reactor, on_cancel=self._on_connect_cancel)
        if address is not None:
            self.address = address
        self._connect_future = fut
        self.state = _CONNECTING
        self._established = False
        self.proto = QMPProtocol(self.max_line_bytes, routes=self.table.routes(),
                                 splitter_impl=self.splitter_impl)
        self.version = None
        if timeout is not None:
            self._connect_timer = reactor.call_later(timeout, self._on_connect_timeout, timeout)
        return fut

    def _try_connect(self, target: Any, backoff: float) -> None:
        self._retry_timer = None
        sock = self._sock
        if sock is None or self.state is not _CONNECTING:
            return
        err = sock.connect_ex(target)
        if err in (0, errno.EISCONN):
            self._on_socket_connected()
        elif err == errno.EAGAIN and sock.family == socket.AF_UNIX:
            # A Unix listener's backlog is full: nothing is in progress, try again
            # (bounded by the connect timeout).
            self._retry_timer = self.reactor.call_later(
                backoff, self._try_connect, target, min(backoff * 2, 0.1))
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            self.reactor.add_writer(self.fd, self._on_connected)
        else:
            exc = OSError(err, os.strerror(err))
            self._fail_connect(ConnectError(
                f"{self.name}: cannot connect to {self.address!r}: {os.strerror(err)}"), exc)

    def _on_connected(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self.reactor.remove_writer(self.fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            exc = OSError(err, os.strerror(err))
            self._fail_connect(ConnectError(
                f"{self.name}: cannot connect to {self.address!r}: {os.strerror(err)}"), exc)
            return
        self._on_socket_connected()

    def _on_socket_connected(self) -> None:
        """The socket is connected: read the greeting, after a TLS handshake if any."""
        sock = self._sock
        assert sock is not None
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait
        config = self.tls
        if config is None:
            self.reactor.add_reader(self.fd, self._on_readable)
            return
        try:
            wrapped = tls.wrap(sock, config)
        except (OSError, ValueError) as exc:
            self._fail_connect(ConnectError(
                f"{self.name}: cannot start TLS with {self.address!r}: {exc}"), exc)
            return
        self._sock = wrapped  # the plain socket object is detached: same descriptor
        self._handshaking = True
        self._handshake()

    def _handshake(self) -> None:
        """Advance the TLS handshake (again when the socket is ready as it asked)."""
        sock = self._sock
        if sock is None or not self._handshaking:
            return
        reactor = self.reactor
        try:
            wait = tls.handshake_step(sock)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._handshaking = False
            reactor.remove_reader(self.fd)
            reactor.remove_writer(self.fd)
            self._fail_connect(ConnectError(
                f"{self.name}: {tls.describe_failure(exc)}"), exc)
            return
        if wait == "read":
            reactor.remove_writer(self.fd)
            reactor.add_reader(self.fd, self._handshake)
        elif wait == "write":
            reactor.remove_reader(self.fd)
            reactor.add_writer(self.fd, self._handshake)
        else:
            self._handshaking = False
            reactor.remove_writer(self.fd)
            stream = tls.TLSStream(sock)
            self._sock_recv = stream.recv
            self._sock_send = stream.send
            reactor.add_reader(self.fd, self._on_readable)
            if self._debug:
                logger.debug("%s: TLS established (%s)", self.name,
                             tls.describe_session(sock))

    def _tls_refused(self, exc: OSError | None) -> bool:
        """Fail the connect if a TLS server ended the connection before its greeting
        (how a server refuses the client's certificate); False if that is not the case."""
        proto = self.proto
        if self.tls is None or self.state is not _CONNECTING or proto is None \
                or proto.version is not None:
            return False
        alert = f" ({getattr(exc, 'reason', None) or exc})" if exc is not None else ""
        self._fail_connect(ConnectError(
            f"{self.name}: {tls.REFUSED_HINT}{alert}"), exc)
        return True

    def _on_connect_timeout(self, timeout: float) -> None:
        self._connect_timer = None
        if self.state is not _CONNECTING:
            return
        proto = self.proto
        if self._handshaking:
            stage = "the TLS handshake"
        elif proto is None or proto.version is None:
            stage = ("the greeting; QEMU serves one client at a time on a monitor "
                     "socket, so another client may be holding it")
        else:
            stage = "capabilities negotiation"
        self._fail_connect(OperationTimeout(
            f"connecting to {self.address!r}: no answer within {timeout} s "
            f"(waiting for {stage})", connection=self.name), None)

    def _on_connect_cancel(self) -> None:
        self._connect_future = None
        if self.state is _CONNECTING:
            self.lost(Cancelled(f"{self.name}: connect was cancelled"))

    def _fail_connect(self, exc: BaseException, cause: BaseException | None) -> None:
        if cause is not None:
            exc.__cause__ = cause
        fut = self._connect_future
        self._connect_future = None
        if fut is not None:
            fut._complete(_FAILED, exc)
        self.lost(exc)

    # ---------------------------------------------------------------- commands
    def take(self, cmd: Command) -> None:
        """Accept a command from any thread: it waits in the intake until the reactor
        thread drains it (at the start of its next pass), in arrival order."""
        self.intake.append(cmd)  # deque.append is atomic
        # Ask for a drain unless one is asked for and not started yet (drain clears the
        # flag before it takes the commands). Two threads may both ask: the second
        # drain finds nothing. Neither can miss: a thread that sees the flag set
        # appended before the drain began, which then takes its command.
        if not self._drain_asked:
            self._drain_asked = True
            self.reactor.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Move the intake's commands to the queue and send what the window allows
        (reactor thread)."""
        self._drain_asked = False
        intake = self.intake
        state = self.state
        if state is not _READY and state is not _CONNECTING and not (
                state is ClientState.DISCONNECTED and self.listener.keeps_queue(False)):
            while intake:
                self._refuse(intake.popleft(), state)
            return
        queue = self.queue
        debug = self._debug
        taken = 0
        while intake:
            cmd = intake.popleft()
            if cmd.stage is not _QUEUED:
                continue  # cancelled (or timed out) before it got here
            special = cmd.special
            if special is not None:
                self._prepare(cmd, special)
            queue.append(cmd)
            taken += 1
            if debug:
                self._log_queued(cmd)
        self.commands_sent += taken
        if state is _READY:
            self._pump()

    def _prepare(self, cmd: Command, special: _Special) -> None:
        """Register what a command waits for, before its bytes can be written."""
        if special.until is not None:
            special.sub = self.table.subscribe(special.until, cmd.on_event)
        if special.deadline is not None:
            special.timer = self.reactor.call_at(special.deadline, cmd.on_timeout)

    def _refuse(self, cmd: Command, state: ClientState) -> None:
        if state is ClientState.CLOSED:
            err: BaseException = ConnectionLost(f"{cmd.name}: the client is closed",
                                                connection=self.name)
        else:
            err = ConnectionLost(f"{cmd.name}: the client is not connected ({state.value})",
                                 connection=self.name)
        self.finish(cmd)
        cmd._complete(_FAILED, err)
        self.record(cmd, Outcome.LOST)

    def _log_queued(self, cmd: Command) -> None:
        logger.debug("%s: queue %s id=%d %s", self.name, cmd.name, cmd.cid,
                     redact_arguments(cmd.name, cmd.args))

    def _buffer(self, data: bytes, fds: list[int] | None = None) -> None:
        """Add ``data`` (with ``fds`` to pass on its first byte) to what the next
        :meth:`_flush` sends."""
        segments = self._segments
        if fds:
            segments.append([data, fds])
        elif segments and segments[-1][1] is None:
            last = segments[-1]
            if type(last[0]) is bytes:  # more bytes before the flush: make it growable
                last[0] = bytearray(last[0])
            last[0] += data
        else:
            segments.append([data, None])  # bytes: a lone command is not copied

    def _pump(self) -> None:
        """Send queued commands while the window has room (out-of-band ones at once)."""
        queue = self.queue
        proto = self.proto
        assert proto is not None
        sent = proto.sent
        room = self.window - self.outstanding
        # A run of plain commands (the usual window refill) goes out in one joined write;
        # a command with descriptors, or out of band, in a write of its own.
        chunks: list[bytes] = []
        while queue:
            cmd = queue[0]
            if cmd.stage is not _QUEUED:
                queue.popleft()  # cancelled or timed out while queued
                continue
            special = cmd.special
            oob = special is not None and special.oob
            if not oob:
                if room <= 0:
                    break
                room -= 1
            queue.popleft()
            cmd.stage = _SENT
            sent(cmd.cid, cmd)
            if special is not None and (oob or special.fds):
                if chunks:
                    self._buffer(b"".join(chunks))
                    chunks = []
                fds, special.fds = special.fds, None
                self._buffer(cmd.data, fds)
            else:
                chunks.append(cmd.data)
            cmd.data = b""
        self.outstanding = self.window - room
        if chunks:
            self._buffer(b"".join(chunks))
        if self._segments and not self._writing:
            self._flush()  # else the socket is full: its writer sends when it can

    def _flush(self) -> None:
        """Send what the socket takes; the rest when it becomes writable."""
        sock = self._sock
        if sock is None:
            return
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
            self.lost(ConnectionLost(f"send failed: {exc}", connection=self.name), exc)
            return
        if segments:
            if not self._writing:
                self._writing = True
                self.reactor.add_writer(self.fd, self._flush)
        elif self._writing:
            self._writing = False
            self.reactor.remove_writer(self.fd)

    def abandon(self, cmd: Command) -> None:
        """A command was cancelled or timed out: a queued one is skipped by the pump; a
        sent one keeps its in-flight entry so that its reply is recognised and
        discarded."""
        if cmd.stage is not _FINISHED:
            if cmd.stage is _QUEUED:
                # It stays in the queue until the pump passes it (possibly long, behind
                # a stuck peer): keep only a small shell, not its encoded bytes.
                cmd.data = b""
                cmd.args = None
            self.finish(cmd)

    def finish(self, cmd: Command) -> None:
        """Release what a command holds (timer, subscription, fds) and mark it done."""
        if cmd.stage is _ANSWERED:
            self._answered.pop(cmd.cid, None)
        cmd.stage = _FINISHED
        special = cmd.special
        if special is not None:
            timer = special.timer
            if timer is not None:
                special.timer = None
                timer.cancel()
            sub = special.sub
            if sub is not None:
                special.sub = None
                sub.cancel()
            if special.fds:
                _close_fds(special.fds)
                special.fds = None

    def record(self, cmd: Command, outcome: str) -> None:
        """Count a finished command (every path but the plain reply's, which
        :meth:`_hand_out` counts itself)."""
        latency = self.clock() - cmd.t0
        ok = outcome is Outcome.OK
        self.latencies.add(cmd.name, latency, ok)
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        if self.want_done:
            self.listener.commands_done([(cmd.name, latency, outcome)])

    @property
    def pending(self) -> int:
        """Commands not yet finished: queued, sent, or waiting for their event."""
        queued, in_flight = self.counts()
        return queued + in_flight

    def counts(self) -> tuple[int, int]:
        """``(queued, in_flight)``: commands waiting to be written, and commands written
        whose reply (or ``until`` event) has not come; finished ones are not counted."""
        queued = sum(1 for c in list(self.queue) if c.stage is _QUEUED)
        queued += sum(1 for c in list(self.intake) if c.stage is _QUEUED)
        in_flight = len(self._answered)
        proto = self.proto
        if proto is not None:
            in_flight += sum(1 for c in list(proto._in_flight.values())
                             if getattr(c, "stage", None) is _SENT)
        return queued, in_flight

    # ----------------------------------------------------------------- reading
    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = self._sock_recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if not self._tls_refused(exc):
                self.lost(ConnectionLost(f"receive failed: {exc}", connection=self.name), exc)
            return
        if not data:
            if not self._tls_refused(None):
                self.lost(ConnectionLost("the peer closed the connection",
                                         connection=self.name))
            return
        proto = self.proto
        assert proto is not None
        proto.routes = self.table.routes()
        items = proto.receive_data(data)
        if items:
            self._hand_out(items, proto)
            if self.proto is not proto:
                return  # the connection ended meanwhile (a failed send)
        if proto.state is _PROTO_CLOSED:
            error = proto.error
            assert error is not None
            if self.state is _CONNECTING:
                self._fail_connect(error, None)
            else:
                self.lost(ConnectionLost(f"protocol error: {error}", connection=self.name),
                          error)
        elif self.state is _CONNECTING:
            if proto.state is State.READY:
                self._on_ready()
        elif self.queue and self.outstanding < self.window:
            self._pump()

    def _hand_out(self, items: list[Any], proto: QMPProtocol) -> None:
        """Complete the commands and dispatch the events of one receive, in stream
        order: completions schedule their futures' callbacks, and each run of
        consecutive events becomes one ready callback of the dispatch table."""
        events: list[Event] | None = None
        answered = 0  # in-band replies: window slots freed
        completed = 0
        now = self.clock()  # one reading for the latencies of this receive's replies
        latencies = self.latencies.pending
        done: list[tuple[str, float, str]] | None = [] if self.want_done else None
        for item in items:
            kind = type(item)
            if kind is Reply:
                if events is not None:
                    self.reactor.call_soon(self.table.dispatch_run, events)
                    events = None
                cmd, ok, value = item
                special = cmd.special
                if special is None:  # the usual command
                    answered += 1
                    if cmd.stage is _SENT:  # else cancelled or timed out: discarded
                        if ok:
                            cmd.stage = _FINISHED
                            cmd._complete(_DONE, value)
                            pending = latencies.get(cmd.name)
                            if pending is None:
                                pending = self.latencies.new(cmd.name)
                            pending.append(now - cmd.t0)
                            completed += 1
                            if done is not None:
                                done.append((cmd.name, now - cmd.t0, Outcome.OK))
                        else:
                            self._refused(cmd, value)
                    continue
                if not special.oob:
                    answered += 1
                if cmd.stage is not _SENT:
                    continue
                if not ok:
                    self._refused(cmd, value)
                elif special.until is None:
                    self.finish(cmd)
                    cmd._complete(_DONE, value)
                    self.record(cmd, Outcome.OK)
                elif special.event is not None:
                    self.finish(cmd)
                    cmd._complete(_DONE, special.event)
                    self.record(cmd, Outcome.OK)
                else:
                    cmd.stage = _ANSWERED
                    self._answered[cmd.cid] = cmd
            elif kind is Event:
                if events is None:
                    events = [item]
                else:
                    events.append(item)
            elif kind is Greeting:
                self._on_greeting(item, proto)
                if self.proto is not proto:
                    return  # the negotiation could not be sent: the connection ended
            elif kind is StaleReply:
                if self._debug:
                    logger.debug("%s: dropped a reply to no command in flight (id %r, "
                                 "a previous client's?): %r", self.name, item.id,
                                 item.excerpt)
            elif isinstance(item, ProtocolError):
                if events is not None:  # in stream order with the events before it
                    self.reactor.call_soon(self.table.dispatch_run, events)
                    events = None
                if not (item is proto.error and self.state is _CONNECTING):
                    # (a fatal error while connecting fails the connect, and only it)
                    self.listener.protocol_error(item)
        self.outstanding -= answered
        if completed:
            self.completed += completed
            book = self.latencies
            book.unfolded += completed
            if book.unfolded >= FOLD_AT:
                book.fold()
        if done:
            self.listener.commands_done(done)
        if events is not None:
            self.events_received += len(events)
            self.reactor.call_soon(self.table.dispatch_run, events)

    def _refused(self, cmd: Command, value: Any) -> None:
        """QMP answered ``cmd`` with an error."""
        self.finish(cmd)
        err = value if isinstance(value, dict) else {}
        cmd._complete(_FAILED, CommandError(
            cmd.name, str(err.get("class", "GenericError")), str(err.get("desc", value)),
            cmd.args, connection=self.name))
        self.record(cmd, Outcome.ERROR)

    def _on_greeting(self, greeting: Greeting, proto: QMPProtocol) -> None:
        self.version = greeting.version
        if proto.state is not State.NEGOTIATING:
            return  # a fatal line came in the same receive: closing follows
        if proto.events_before_greeting:
            logger.info("%s: skipped %d event(s) sent before the greeting", self.name,
                        proto.events_before_greeting)
        if self._debug:
            logger.debug("%s: greeting: QEMU %s %s", self.name, greeting.version,
                         greeting.version.capabilities)
        data = proto.negotiate(next_id(), self.enable_oob)
        self._segments.appendleft([bytearray(data), None])
        self._flush()

    def _on_ready(self) -> None:
        self.state = _READY
        self._established = True
        timer = self._connect_timer
        if timer is not None:
            timer.cancel()
            self._connect_timer = None
        fut = self._connect_future
        self._connect_future = None
        self._pump()
        if fut is not None and self.version is not None:
            fut._complete(_DONE, self.version)
        self.listener.connection_ready()

    # ---------------------------------------------------------------- teardown
    def lost(self, reason: BaseException, cause: BaseException | None = None, *,
             final: bool = False) -> None:
        """Tear the connection down: mark, fail the futures, unregister, close, tell
        the client.

        Commands in flight (QEMU may have run them) fail with ``ConnectionLost``;
        commands never sent fail too, unless the client keeps them for its next
        connection (:meth:`Listener.keeps_queue`).

        Args:
            reason: why (the error the futures fail with, wrapped per command).
            cause: the underlying exception, set as ``reason.__cause__``.
            final: ``close()`` was called: the state becomes CLOSED.
        """
        if self._sock is None and self.proto is None:
            if final and self.state is not ClientState.CLOSED:
                self.state = ClientState.CLOSED
                self.table.closed = True
                self.fail_queue(reason)
            return
        established = self._established
        self._established = False
        self.state = ClientState.CLOSED if final else ClientState.DISCONNECTED
        if final:
            self.table.closed = True
        if self._debug:
            logger.debug("%s: connection ended: %s", self.name, reason)
        if cause is not None and reason.__cause__ is None:
            reason.__cause__ = cause
        for attr in ("_connect_timer", "_retry_timer"):
            timer = getattr(self, attr)
            if timer is not None:
                timer.cancel()
                setattr(self, attr, None)
        fut = self._connect_future
        self._connect_future = None
        if fut is not None:
            fut._complete(_FAILED, reason)
        proto = self.proto
        self.proto = None
        victims: list[Command] = []
        if proto is not None:
            self.events_dropped += proto.dropped_events
            self.stale_replies += proto.stale_replies
            victims.extend(proto.close())
        victims.extend(self._answered.values())
        self._answered = {}
        if final or not self.listener.keeps_queue(established):
            victims.extend(self.queue)
            self.queue = collections.deque()
            victims.extend(_take_all(self.intake))
        self.outstanding = 0
        for seg in self._segments:
            if seg[1]:
                _close_fds(seg[1])
        self._segments.clear()
        self._fail(victims, reason)
        sock = self._sock
        self._sock = None
        self._sock_recv = _no_recv
        self._sock_send = _no_send
        self._handshaking = False
        if sock is not None:
            fd = self.fd
            self.fd = -1
            self._writing = False
            if not self.reactor.closed:
                self.reactor.remove_reader(fd)
                self.reactor.remove_writer(fd)
            sock.close()
        self.listener.connection_lost(reason, established, final)

    def fail_queue(self, reason: BaseException) -> None:
        """Fail every command still queued (a reconnect policy gave up, or the client
        was closed while disconnected)."""
        victims = list(self.queue)
        self.queue = collections.deque()
        victims.extend(_take_all(self.intake))
        self._fail(victims, reason)

    def _fail(self, commands: list[Command], reason: BaseException) -> None:
        """Fail every command not finished yet with ``ConnectionLost`` naming it."""
        message = detail(reason)
        for cmd in commands:
            if cmd.stage is _FINISHED:
                continue
            self.finish(cmd)
            err = ConnectionLost(f"{cmd.describe()}: {message}", connection=self.name)
            err.__cause__ = reason
            cmd._complete(_FAILED, err)
            self.record(cmd, Outcome.LOST)



def _take_all(intake: collections.deque[Command]) -> list[Command]:
    """Empty a deque other threads may append to (no item lost or taken twice)."""
    taken = []
    while True:
        try:
            taken.append(intake.popleft())
        except IndexError:
            return taken


def _no_recv(size: int) -> bytes:
    raise OSError(errno.ENOTCONN, "not connected")


def _no_send(data: Any) -> int:
    raise OSError(errno.ENOTCONN, "not connected")


def dup_fds(name: str, fds: Sequence[int]) -> list[int]:
    """Duplicate ``fds`` (so the caller keeps its own); on failure close the duplicates
    made so far.

    Raises:
        ValidationError: an entry cannot be duplicated.
    """
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
