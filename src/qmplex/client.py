"""The public QMP client: one connection to one QEMU, usable from any thread.

A :class:`Client` is the facade over a :class:`~qmplex.connection.Connection` (socket,
queue, window, teardown) living on a :class:`~qmplex.Reactor`. It adds what users call:
the thread hand-off, the event API, connection callbacks, the reconnect policy, the
schema, and the typed operations.

Theory of operation: threads
----------------------------
Every public method may be called from any thread. A command goes into its
connection's intake (a deque any thread may append to), which the reactor thread
drains at the start of its next pass; the thread that drives the reactor is woken if it
sleeps, so a command submitted from an API thread while a service thread runs
``reactor.run()`` is written within one pass, never left waiting for unrelated I/O,
and commands submitted from one thread reach QEMU in that thread's order. Other work
that touches the connection runs as reactor-thread code (:meth:`Reactor.run_in_reactor`):
at once when the caller drives the reactor (a callback) or nobody does (the blocking
style: the call takes the idle reactor for its own length), and otherwise handed to the
thread that drives it.

What can be checked without the connection (a closed client, arguments that are not
JSON, descriptors that cannot be duplicated) raises on the calling thread. When a call
is handed over, an error found on the reactor thread fails the returned future instead.

Callbacks (done-callbacks, event subscriptions, ``on_disconnect``, ``on_error``,
``on_reconnect``) all run on the reactor thread, from its ready queue, in the order
their causes happened: see :mod:`qmplex.futures` and :mod:`qmplex.events`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import ops
from .connection import (
    DEFAULT_WINDOW,
    Address,
    ClientState,
    Command,
    Connection,
    _Special,
    dup_fds,
    next_id,
)
from .core.framing import DEFAULT_MAX_LINE_BYTES
from .core.messages import Event, QMPVersion
from .core.protocol import encode_command
from .errors import (
    ConnectionLost,
    OperationTimeout,
    ProtocolError,
    StateError,
    ValidationError,
    detail,
)
from .events import DispatchTable, EventFilter, Subscription
from .futures import _DONE, _FAILED, _PENDING, Future
from .metrics import ClientMetrics
from .reactor import Reactor, TimerHandle
from .reconnect import ReconnectPolicy
from .tls import TLSConfig, tls_config

if TYPE_CHECKING:
    from ssl import SSLContext

    # Imported when first used: the schema module is a tenth of `import qmplex`.
    from .schema import CallNamespace, Schema

__all__ = ["Client", "ClientState", "connect", "DEFAULT_WINDOW", "Address"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Keep:
    """A reconnection: keep the TLS settings of the last connect."""


_KEEP = _Keep()

_READY = ClientState.READY
_CONNECTING = ClientState.CONNECTING


class _EventWait(Future[Event]):
    """The future of :meth:`Client.wait_event`: a one-shot subscription and a timer."""

    __slots__ = ("client", "flt", "timeout", "sub", "timer")

    def __init__(self, client: Client, flt: EventFilter, timeout: float | None) -> None:
        Future.__init__(self, client.reactor)
        self.client = client
        self.flt = flt
        self.timeout = timeout
        self.sub: Subscription | None = None
        self.timer: TimerHandle | None = None

    def start(self) -> None:
        """Register (reactor thread)."""
        if self._state != _PENDING:
            return
        client = self.client
        if client._conn.state is ClientState.CLOSED:
            self._complete(_FAILED, ConnectionLost("waiting for an event: the client is "
                                                   "closed", connection=client.name))
            return
        self.sub = client._table.subscribe(self.flt, self._on_event, once=True)
        if self.timeout is not None:
            self.timer = client.reactor.call_later(self.timeout, self._on_timeout)
        client._waits.add(self)

    def _drop(self) -> None:
        self.client._waits.discard(self)
        sub, timer = self.sub, self.timer
        self.sub = self.timer = None
        if sub is not None:
            sub.cancel()
        if timer is not None:
            timer.cancel()

    def _on_event(self, event: Event) -> None:
        self._drop()
        self._complete(_DONE, event)

    def _on_timeout(self) -> None:
        self.timer = None
        self._drop()
        self._complete(_FAILED, OperationTimeout(
            f"no {self.flt.name or 'matching'} event within {self.timeout} s",
            connection=self.client.name))

    def _cancelling(self) -> None:
        self._drop()

    def fail(self, reason: BaseException) -> None:
        """The connection ended (or the client closed) first."""
        self._drop()
        err = ConnectionLost(f"waiting for an event: {detail(reason)}",
                             connection=self.client.name)
        err.__cause__ = reason
        self._complete(_FAILED, err)


class Client(ops.DeprecatedOperations):
    """A QMP client living on a reactor.

    The typed operations are grouped by domain: ``client.vm.stop()``,
    ``client.devices.scsi_device_add(...)``, ``client.block.blockdev_add(...)`` ...
    (see :mod:`qmplex.ops`). The flat names of 0.1 (``client.stop()``) still work, with
    a ``DeprecationWarning``, for one release.

    Args:
        reactor: the reactor to live on (a new private one when omitted: it is then
            closed by :meth:`close`).
        name: how errors and log records name this connection (default: the address
            given to :meth:`connect`).
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.
        enable_oob: negotiate out-of-band execution when the peer offers it.
        splitter_impl: ``"auto"``, ``"c"`` or ``"python"``: the line splitter to use.
        reconnect: reconnect after an established connection is lost, by this policy
            (None, the default: never; see :class:`~qmplex.ReconnectPolicy`).

    Every method may be called from any thread (see the module docstring).
    """

    # The typed operations by domain. Each namespace is made on first use and kept in
    # the instance's __dict__ (an idle client pays nothing).
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

    def __init__(
        self,
        reactor: Reactor | None = None,
        *,
        name: str | None = None,
        window: int = DEFAULT_WINDOW,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        enable_oob: bool = True,
        splitter_impl: str = "auto",
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be at least 64")
        if reconnect is not None and not isinstance(reconnect, ReconnectPolicy):
            raise TypeError("reconnect must be a qmplex.ReconnectPolicy or None")
        self._own_reactor = reactor is None
        self._reactor = reactor if reactor is not None else Reactor()
        self._name = name
        self._table = DispatchTable(self._reactor, name or "qmp")
        self._conn = Connection(self._reactor, self._table, self,
                                name=name or "qmp", window=window,
                                max_line_bytes=max_line_bytes, enable_oob=enable_oob,
                                splitter_impl=splitter_impl)
        self._error_callbacks: list[Callable[[ProtocolError], object]] = []
        self._disconnect_callbacks: list[Callable[[BaseException | None], object]] = []
        self._reconnect_callbacks: list[Callable[[int, BaseException | None], object]] = []
        self._waits: set[_EventWait] = set()
        self._policy = reconnect
        self._reconnecting = False  # the policy is at work: attempts scheduled or running
        self._attempts = 0  # failed attempts in a row
        self._reconnect_timer: TimerHandle | None = None
        self._rng = random.Random()
        self._schema_load: Future[Schema] | None = None
        self._command_hooks: list[Callable[[str, float, str], object]] = []
        self._reconnects = 0  # connections re-established by the policy

    # -------------------------------------------------------------- properties
    @property
    def reactor(self) -> Reactor:
        """The reactor this client lives on."""
        return self._reactor

    @property
    def name(self) -> str:
        """How errors and log records name this connection."""
        return self._conn.name

    @property
    def state(self) -> ClientState:
        """Where the connection stands."""
        return self._conn.state

    @property
    def address(self) -> Address | None:
        """The address of the last :meth:`connect`."""
        return self._conn.address

    @property
    def version(self) -> QMPVersion | None:
        """The peer's version (from its greeting); None before it."""
        return self._conn.version

    @property
    def window(self) -> int:
        """The most in-band commands in flight at once."""
        return self._conn.window

    @property
    def max_line_bytes(self) -> int:
        """The longest line accepted from the peer."""
        return self._conn.max_line_bytes

    @property
    def enable_oob(self) -> bool:
        """Whether out-of-band execution is negotiated when offered."""
        return self._conn.enable_oob

    @property
    def oob_enabled(self) -> bool:
        """True if out-of-band execution was negotiated on this connection."""
        proto = self._conn.proto
        return proto is not None and proto.oob_enabled

    @property
    def pending(self) -> int:
        """Commands not yet finished: queued, sent, or waiting for their event.

        A command cancelled or timed out after it was sent is finished (its future is
        done) although its reply, which still holds a window slot, is awaited.
        """
        return self._conn.pending

    @property
    def commands_sent(self) -> int:
        """Commands submitted since the client was made."""
        return self._conn.commands_sent

    @property
    def dropped_events(self) -> int:
        """Event lines dropped undecoded on this connection because nobody wanted them."""
        proto = self._conn.proto
        return proto.dropped_events if proto is not None else 0

    @property
    def stale_replies(self) -> int:
        """Replies dropped on this connection because their id was not in flight (a
        previous client's leftovers: QEMU hands them to the next client)."""
        proto = self._conn.proto
        return proto.stale_replies if proto is not None else 0

    def metrics(self) -> ClientMetrics:
        """What this client did since it was made: counters and a latency summary per
        command name (:mod:`qmplex.metrics`). Callable from any thread; the figures are
        read as they stand (a command finishing during the read may be half counted)."""
        conn = self._conn
        queued, in_flight = conn.counts()
        proto = conn.proto
        dropped = conn.events_dropped + (proto.dropped_events if proto is not None else 0)
        stale = conn.stale_replies + (proto.stale_replies if proto is not None else 0)
        commands = conn.latencies.summaries()
        return ClientMetrics(
            commands_sent=conn.commands_sent, commands_completed=conn.completed,
            commands_failed=conn.failed, in_flight=in_flight, queued=queued,
            events_received=conn.events_received, events_dropped=dropped,
            stale_replies=stale, reconnects=self._reconnects, commands=commands)

    @property
    def reconnect_policy(self) -> ReconnectPolicy | None:
        """The reconnect policy given to the constructor."""
        return self._policy

    def fileno(self) -> int:
        """The socket's file descriptor, or -1 when not connected."""
        return self._conn.fd

    # ------------------------------------------------------------------ schema
    # The client owns its connection's schema load: self._schema_load (reset on every
    # connect) holds the future of the load; qmplex.schema keeps nothing on the client.
    # The schema package is imported on first use (it is a tenth of `import qmplex`).
    def load_schema(self, *, cache: bool = True) -> Future[Schema]:
        """Load the peer's schema (``query-qmp-schema``) once per connection.

        Calls while it loads, or after it loaded, return the same future; a failed or
        cancelled load is retried by the next call, and each connect starts afresh.
        Cancelling the returned future cancels the load for every caller sharing it.
        With ``cache=True`` a schema already loaded from the same QEMU build (version,
        package and target) in this process is reused. See
        :func:`qmplex.schema.load_schema`.
        """
        return self._hand_over(self._load_schema, cache)

    def _load_schema(self, cache: bool) -> Future[Schema]:
        fut = self._schema_load
        if fut is None or (fut.done() and fut.exception() is not None):
            from .schema import load_schema

            fut = self._schema_load = load_schema(self, cache=cache)
        return fut

    @property
    def schema(self) -> Schema | None:
        """The peer's schema once :meth:`load_schema` completed on this connection."""
        fut = self._schema_load
        if fut is None or not fut.done() or fut.exception() is not None:
            return None
        return fut.result()

    @property
    def call(self) -> CallNamespace:
        """Every QMP command as a method: ``client.call.blockdev_add(node_name="b0")``.

        Python names map to QMP's spelling (``blockdev_add`` -> ``blockdev-add``,
        ``node_name`` -> ``node-name``); execute options take a leading underscore
        (``_timeout``, ``_until``, ``_oob``, ``_fds``). Once :meth:`load_schema` has
        completed, arguments are validated before anything is sent. Exact names:
        ``client.call["query-status"]()``.
        """
        from .schema import CallNamespace

        return CallNamespace(self, self.schema)

    # ----------------------------------------------------------------- connect
    def connect(self, address: Address, *, timeout: float | None = None,
                ssl: SSLContext | bool | None = None,
                server_hostname: str | None = None) -> Future[QMPVersion]:
        """Connect to a QMP server, read its greeting and negotiate capabilities.

        Args:
            address: a Unix socket path, or ``(host, port)`` for TCP.
            timeout: seconds for the whole handshake (TLS included); on expiry the
                future fails with :class:`~qmplex.OperationTimeout` and the socket is
                closed.
            ssl: speak TLS (a QEMU chardev with ``tls-creds``): an
                :class:`ssl.SSLContext` for the client side, or True for
                :func:`ssl.create_default_context` (the system's CAs). The context
                decides what is verified; a default context verifies the server's
                certificate and name. Reconnections (:meth:`reconnect`, the policy)
                use the same settings. See :mod:`qmplex.tls`.
            server_hostname: the name the server's certificate must carry (default:
                the host of ``address``; required for TLS over a Unix socket).

        Returns:
            A future for the peer's :class:`QMPVersion`, done once commands can be sent.
            Commands submitted before that are queued and sent afterwards. It fails with
            :class:`~qmplex.ConnectError` (socket errors),
            :class:`~qmplex.OperationTimeout`, or a :class:`~qmplex.ProtocolError` (not
            a QMP greeting, negotiation refused). A failed connect fails only this
            future: ``on_disconnect`` callbacks are for established connections.

        Raises:
            StateError: the client is closed or already connected / connecting.
            TypeError, ValueError: bad ``ssl`` / ``server_hostname`` (e.g. TLS over a
                Unix socket without ``server_hostname``).
        """
        config = tls_config(address, ssl, server_hostname)
        return self._hand_over(self._connect, address, timeout, config)

    def _connect(self, address: Address, timeout: float | None,
                 config: TLSConfig | None | _Keep = _KEEP) -> Future[QMPVersion]:
        self._cancel_reconnect_timer()
        if self._name is None:
            self._conn.name = self._table.name = _address_name(address)
        self._schema_load = None
        conn = self._conn
        if not isinstance(config, _Keep) and conn.state is not _CONNECTING \
                and conn.state is not _READY:
            conn.tls = config  # (else connect() refuses below and nothing changes)
        return conn.connect(address, timeout)

    def connect_socket(
        self, sock: socket.socket, *, timeout: float | None = None
    ) -> Future[QMPVersion]:
        """Speak QMP over an already connected stream socket (e.g. one end of a
        ``socketpair`` or a descriptor inherited from a launcher).

        The client takes ownership of ``sock`` and closes it when the connection ends.
        Returns a future like :meth:`connect`'s; :meth:`reconnect` is not possible.
        """
        def _start() -> Future[QMPVersion]:
            self._cancel_reconnect_timer()
            if self._name is None:
                self._conn.name = self._table.name = f"socket:{sock.fileno()}"
            self._schema_load = None
            if self._conn.state is not _CONNECTING and self._conn.state is not _READY:
                self._conn.tls = None
            return self._conn.connect_socket(sock, timeout)

        return self._hand_over(_start)

    def reconnect(self, *, timeout: float | None = None) -> Future[QMPVersion]:
        """Connect again to the last address (after the connection was lost).

        Event subscriptions made with :meth:`on_event` carry over. A reconnect policy's
        pending attempt is replaced by this one.

        Raises:
            StateError: no :meth:`connect` was made before, or as :meth:`connect`.
        """
        address = self._conn.address
        if address is None:
            raise StateError(f"{self.name}: reconnect() before any connect()")
        return self._hand_over(self._connect, address, timeout)

    def _hand_over(self, fn: Callable[..., Future[T]], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` (which returns a future) as reactor-thread code and return its
        future: ``fn``'s own when it ran on this thread (its exceptions propagate), or
        one that takes over its outcome (and its exceptions) when it was handed to the
        thread that drives the reactor."""
        reactor = self._reactor
        if reactor.in_reactor_thread() or reactor.closed:
            return fn(*args, **kwargs)
        caller = threading.get_ident()
        proxy: Future[T] = Future(reactor)
        here: list[Any] = []  # fn's outcome when it ran on this thread

        def _run() -> None:
            try:
                inner = fn(*args, **kwargs)
            except Exception as exc:
                if threading.get_ident() == caller:
                    here.append(exc)
                else:
                    proxy._complete(_FAILED, exc)
                return
            if threading.get_ident() == caller:
                here.append(inner)
            else:
                proxy._on_cancel = inner.cancel
                inner.add_done_callback(proxy._take_outcome)

        reactor.run_in_reactor(_run)
        if not here:
            return proxy
        if isinstance(here[0], BaseException):
            raise here[0]
        inner_future: Future[T] = here[0]
        return inner_future

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

        Safe from any thread: the command goes to the connection's intake, which the
        reactor thread drains at the start of its next pass (the thread that drives
        the reactor is woken if it sleeps), so it is written within one pass; commands
        submitted from one thread reach QEMU in that thread's order.

        Args:
            name: the command, spelled as QMP spells it (``"device_del"``,
                ``"blockdev-add"``).
            arguments: its arguments (a JSON object), or None.
            timeout: seconds until the future fails with
                :class:`~qmplex.OperationTimeout` (counted from now; covers queueing,
                the reply and the ``until`` event).
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
            :class:`~qmplex.CommandError` for a QMP error reply,
            :class:`~qmplex.ConnectionLost`, :class:`~qmplex.OperationTimeout` or
            :class:`~qmplex.Cancelled`. Cancelling it follows the rules of
            :mod:`qmplex.connection` (a queued command is never sent; a sent one has its
            reply discarded).

        Raises:
            StateError: the client is closed or not connected (and no reconnect policy
                is at work), or ``oob`` was not negotiated.
            ValidationError: the arguments are not a JSON object of serialisable values,
                or an entry of ``fds`` cannot be duplicated (raised before anything is
                queued or sent; no duplicate is left open).
        """
        conn = self._conn
        state = conn.state
        if state is not _READY and state is not _CONNECTING:
            self._check_can_submit(name, state)
        if arguments is not None and type(arguments) is not dict:
            if not isinstance(arguments, Mapping):
                raise ValidationError(f"{name}: arguments must be a mapping, "
                                      f"not {type(arguments).__name__}")
            arguments = dict(arguments)
        cid = next_id()
        cmd = Command(conn, name, arguments, cid, encode_command(name, arguments, cid, oob))
        if timeout is not None or until is not None or oob or fds:
            cmd.special = self._special(name, timeout, until, oob, fds, state)
        conn.take(cmd)
        return cmd

    def _check_can_submit(self, name: str, state: ClientState) -> None:
        if state is ClientState.CLOSED:
            raise StateError(f"{self.name}: {name}: the client is closed")
        if state is ClientState.DISCONNECTED and self.keeps_queue(False):
            return  # waits for the reconnection
        raise StateError(f"{self.name}: {name}: the client is not connected ({state.value})")

    def _special(self, name: str, timeout: float | None, until: EventFilter | None,
                 oob: bool, fds: Sequence[int], state: ClientState) -> _Special:
        if oob and state is _READY and not self.oob_enabled:
            raise StateError(f"{self.name}: {name}: out-of-band execution was not "
                             "negotiated")
        dups = None
        if fds:
            sock = self._conn._sock
            if sock is not None and sock.family != socket.AF_UNIX:
                raise ValidationError(f"{name}: file descriptors can only be passed over a "
                                      "Unix socket")
            dups = dup_fds(name, fds)
        deadline = None if timeout is None else self._reactor.time() + timeout
        return _Special(until, timeout, deadline, dups, oob)

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
            callback: runs on the reactor thread, in arrival order, after the receive
                the event came in was parsed; an exception it raises is logged and
                does not affect other callbacks.
            name: the event name (``None``: every event; note that this makes every
                event line decoded).
            match: a dict compared against the event's data (nested keys allowed).
            predicate: an extra test.
            queue: ``None`` (default): the callback runs as each receive's events are
                handed out; a slow callback slows reading this connection (the socket
                pushes back on the peer) and no event is ever dropped. ``N``: events
                wait in a backlog of at most ``N`` and are delivered at most
                ``qmplex.events.DRAIN_BATCH`` per pass, so reading goes on at full
                speed; an event that finds the backlog full is dropped and counted in
                ``Subscription.dropped``.

        Returns:
            A :class:`Subscription`; call its ``cancel()`` to stop. It survives
            reconnection. Safe from any thread: events that arrive after this call
            returns are delivered.

        Raises:
            ValueError: ``queue`` is below 1.
        """
        sub = Subscription(self._table, EventFilter(name, match, predicate), callback,
                           queue=queue)
        self._reactor.run_in_reactor(self._table.add, sub)
        return sub

    def wait_event(
        self,
        name: str | EventFilter,
        match: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Future[Event]:
        """Return a future for the next event passing the filter.

        It fails with :class:`~qmplex.OperationTimeout` after ``timeout`` seconds and
        with :class:`~qmplex.ConnectionLost` if the connection ends first (or, for a
        wait made while disconnected, when :meth:`close` is called). Cancelling it
        removes the wait.

        Raises:
            StateError: the client is closed (no event can ever arrive).
        """
        if self._conn.state is ClientState.CLOSED:
            raise StateError(f"{self.name}: wait_event: the client is closed")
        flt = name if isinstance(name, EventFilter) else EventFilter(name, match)
        fut = _EventWait(self, flt, timeout)
        self._reactor.run_in_reactor(fut.start)
        return fut

    def on_error(self, callback: Callable[[ProtocolError], object]) -> Subscription:
        """Call ``callback(error)`` (on the reactor thread) for every protocol error the
        peer causes.

        Non-fatal errors (e.g. an invalid event line) are reported here and the
        connection continues; fatal ones are reported here before the connection ends.
        """
        return self._callback_list(self._error_callbacks, callback)

    def on_disconnect(self, callback: Callable[[BaseException | None], object]) -> Subscription:
        """Call ``callback(reason)`` (on the reactor thread) once each time an
        established connection ends: ``reason`` is the error (``None``: closed by
        :meth:`close`). A connect attempt that fails fails its own future only."""
        return self._callback_list(self._disconnect_callbacks, callback)

    def on_reconnect(self, callback: Callable[[int, BaseException | None], object]
                     ) -> Subscription:
        """Call ``callback(attempt, error)`` (on the reactor thread) after each
        attempt of the reconnect policy: ``attempt`` counts from 1 since the connection
        was lost, ``error`` is None when it succeeded. Attempts are logged too."""
        return self._callback_list(self._reconnect_callbacks, callback)

    def on_command(self, callback: Callable[[str, float, str], object]) -> Subscription:
        """Call ``callback(name, latency, outcome)`` (on the reactor thread) for every
        command that finishes: its QMP name, the seconds from ``execute`` to its outcome,
        and the outcome, one of the :class:`~qmplex.metrics.Outcome` strings (``"ok"``,
        ``"error"``, ``"timeout"``, ``"lost"``, ``"cancelled"``).

        For a manager's own metrics; :meth:`metrics` keeps counters and latencies without
        a hook. While no hook is registered, finishing a command costs no callback.
        """
        return self._callback_list(self._command_hooks, callback, self._hooks_changed)

    def _hooks_changed(self) -> None:
        self._conn.want_done = bool(self._command_hooks)

    def commands_done(self, done: list[tuple[str, float, str]]) -> None:
        """Connection listener: commands finished (reactor thread; only while hooks
        are registered)."""
        hooks = self._command_hooks
        if hooks:
            self._reactor.call_soon(self._run_command_hooks, list(hooks), done)

    def _run_command_hooks(self, hooks: list[Callable[[str, float, str], object]],
                           done: list[tuple[str, float, str]]) -> None:
        for hook in hooks:
            try:
                for name, latency, outcome in done:
                    hook(name, latency, outcome)
            except Exception:
                logger.exception("%s: command hook %r raised", self.name, hook)

    def _callback_list(self, items: list[Any], callback: Callable[..., object],
                       changed: Callable[[], None] | None = None) -> Subscription:
        sub = _ListSubscription(items, callback, self._reactor, changed)
        self._reactor.run_in_reactor(sub.add)
        return sub

    def _schedule_callbacks(self, items: list[Any], *args: Any) -> None:
        reactor = self._reactor
        for cb in list(items):
            if reactor.closed:
                self._run_callback(cb, args)
            else:
                reactor.call_soon(self._run_callback, cb, args)

    def _run_callback(self, cb: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            cb(*args)
        except Exception:
            logger.exception("%s: callback %r raised", self.name, cb)

    # -------------------------------------------- what the connection tells us
    def connection_ready(self) -> None:
        """Connection listener: negotiation finished (reactor thread)."""
        if self._reconnecting:
            attempt = self._attempts + 1
            self._reconnecting = False
            self._attempts = 0
            self._reconnects += 1
            logger.info("%s: reconnected (attempt %d)", self.name, attempt)
            self._schedule_callbacks(self._reconnect_callbacks, attempt, None)

    def protocol_error(self, error: ProtocolError) -> None:
        """Connection listener: the peer broke QMP (reactor thread)."""
        logger.warning("%s: protocol error: %s", self.name, error)
        self._schedule_callbacks(self._error_callbacks, error)

    def keeps_queue(self, established: bool) -> bool:
        """Connection listener: keep never-sent commands queued while disconnected?"""
        return (self._policy is not None and self._conn.address is not None
                and (established or self._reconnecting))

    def connection_lost(self, reason: BaseException, established: bool, final: bool) -> None:
        """Connection listener: the connection ended (reactor thread)."""
        waits = list(self._waits)
        self._waits.clear()
        for wait in waits:
            wait.fail(reason)
        if established:
            self._schedule_callbacks(self._disconnect_callbacks, None if final else reason)
        if final:
            self._cancel_reconnect_timer()
            self._reconnecting = False
            return
        policy = self._policy
        if policy is None or self._conn.address is None:
            return
        if self._reconnecting and not established:  # an attempt failed
            self._attempts += 1
            logger.warning("%s: reconnect attempt %d failed: %s", self.name,
                           self._attempts, reason)
            self._schedule_callbacks(self._reconnect_callbacks, self._attempts, reason)
            if policy.gives_up_after(self._attempts):
                self._reconnecting = False
                gave_up = ConnectionLost(f"gave up reconnecting after {self._attempts} "
                                         f"attempts: {reason}", connection=self.name)
                logger.error("%s", gave_up)
                self._conn.fail_queue(gave_up)
                return
        elif established:
            self._reconnecting = True
            self._attempts = 0
            logger.warning("%s: connection lost (%s); reconnecting", self.name, reason)
        else:
            return  # a connect made by hand failed: not the policy's business
        try:
            delay = policy.delay(self._attempts + 1, self._rng)
        except Exception:  # never let a policy's arithmetic end the reconnecting
            logger.exception("%s: reconnect policy %r failed; using its maximum delay",
                             self.name, policy)
            delay = policy.maximum
        self._reconnect_timer = self._reactor.call_later(delay, self._attempt_reconnect)

    def _attempt_reconnect(self) -> None:
        self._reconnect_timer = None
        conn = self._conn
        address = conn.address
        if not self._reconnecting or address is None or conn.state is not \
                ClientState.DISCONNECTED:
            return
        assert self._policy is not None
        self._schema_load = None
        conn.connect(address, self._policy.connect_timeout)

    def _cancel_reconnect_timer(self) -> None:
        timer = self._reconnect_timer
        if timer is not None:
            self._reconnect_timer = None
            timer.cancel()

    # -------------------------------------------------------------------- close
    def close(self) -> None:
        """Close the connection for good.

        Every queued, sent and waiting future fails with
        :class:`~qmplex.ConnectionLost` (their callbacks and later ``then``/``chain``
        steps run, also when the client owns its reactor); afterwards :meth:`execute`
        raises :class:`StateError`. A reactor the client created itself is closed too.
        Safe to call more than once, and from any thread (off the reactor thread it
        returns once the connection is closed).
        """
        reactor = self._reactor
        if reactor.closed:
            self._close_now()
        else:
            closed: Future[None] = Future(reactor)

            def _run() -> None:
                try:
                    self._close_now()
                finally:
                    closed._complete(_DONE, None)

            if not reactor.run_in_reactor(_run):
                closed.result()
        if self._own_reactor:
            reactor.close()

    def _close_now(self) -> None:
        conn = self._conn
        if conn.state is ClientState.CLOSED:
            return
        self._cancel_reconnect_timer()
        self._reconnecting = False
        conn.lost(ConnectionLost("the client was closed", connection=self.name), final=True)
        waits = list(self._waits)  # made while disconnected
        self._waits.clear()
        for wait in waits:
            wait.fail(ConnectionLost("the client was closed", connection=self.name))

    # -------------------------------------------------------------- utilities
    def __repr__(self) -> str:
        """Show the name and the connection state (for logs; not a stable format)."""
        return f"<Client {self.name!r} {self._conn.state.value}>"

    def __enter__(self) -> Client:
        """Return the client; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Call :meth:`close` (exceptions propagate)."""
        self.close()


class _ListSubscription(Subscription):
    """A subscription that adds a callback to, and removes it from, a plain list."""

    __slots__ = ("_list", "_reactor", "_changed")

    def __init__(self, items: list[Any], callback: Callable[..., object],
                 reactor: Reactor, changed: Callable[[], None] | None = None) -> None:
        Subscription.__init__(self, None, EventFilter(), callback)
        self._list: list[Any] | None = items
        self._reactor = reactor
        self._changed = changed  # told after the list changed

    def add(self) -> None:
        """Register (reactor thread)."""
        if self.active and self._list is not None:
            self._list.append(self.callback)
            if self._changed is not None:
                self._changed()

    def cancel(self) -> None:
        """Stop receiving callbacks (safe from any thread)."""
        if not self.active:
            return
        self.active = False
        if self._reactor.closed:
            self._remove()
        else:
            self._reactor.run_in_reactor(self._remove)

    def _remove(self) -> None:
        items = self._list
        self._list = None
        if items is not None:
            try:
                items.remove(self.callback)
            except ValueError:
                pass
            if self._changed is not None:
                self._changed()


def _address_name(address: Address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return os.fspath(address)


def connect(
    address: Address,
    *,
    reactor: Reactor | None = None,
    timeout: float | None = None,
    window: int = DEFAULT_WINDOW,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    name: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    ssl: SSLContext | bool | None = None,
    server_hostname: str | None = None,
) -> Client:
    """Connect to a QMP server and return a ready :class:`Client` (blocking).

    Args:
        address: a Unix socket path, or ``(host, port)``.
        reactor: the reactor to live on; a private one when omitted.
        timeout: seconds for the whole handshake.
        window: the most in-band commands in flight at once.
        max_line_bytes: the longest line accepted from the peer.
        name: how errors and logs name the connection (default: ``address``).
        reconnect: the reconnect policy (default: none).
        ssl: TLS settings, as :meth:`Client.connect`'s.
        server_hostname: as :meth:`Client.connect`'s.

    Raises:
        ConnectError, OperationTimeout, ProtocolError: as :meth:`Client.connect`'s
            future.
    """
    client = Client(reactor, window=window, max_line_bytes=max_line_bytes, name=name,
                    reconnect=reconnect)
    try:
        client.connect(address, timeout=timeout, ssl=ssl,
                       server_hostname=server_hostname).result()
    except BaseException:
        client.close()
        raise
    return client
