"""A scriptable fake QMP server, for testing code that talks to QEMU.

:class:`FakeQMPServer` speaks QMP the way QEMU 7.2 does on the wire (the greeting, CRLF
line endings, capability negotiation, ``"id"`` echo, in-order in-band replies,
``exec-oob``, events with timestamps, file descriptors passed with SCM_RIGHTS) and, by
default, behaves like an idle, paused QEMU 7.2 (``-S``): block nodes, devices with
``DEVICE_DELETED`` after ``device_del``, netdevs, chardevs, objects, CPUs, run states,
migration, QOM. The error classes and descriptions of the built-in commands are the ones
a real QEMU 7.2 returns (``tests/test_testing.py`` compares the two when QEMU is
installed). Every command can be scripted (:meth:`FakeQMPServer.on`), and faults can be
injected: no greeting, a slow greeting, garbage, half a line then EOF, a peer that stops
reading, dropped connections.

The server runs on a qmplex :class:`~qmplex.reactor.Reactor` with non-blocking sockets;
every callback runs on the reactor. It never blocks the reactor and never uses a lock
on the data path.

Two ways to run it:

* Deterministic (what qmplex's own tests do): the test's client and the server share one
  reactor and one thread; :meth:`FakeQMPServer.connect_pair` returns the client end of
  a socket pair (no file system, no thread)::

      reactor = Reactor()
      server = FakeQMPServer(reactor=reactor)
      client = Client(reactor)
      client.connect_socket(server.connect_pair())
      ...
      server.close()

* Threaded, for blocking client code: without a reactor, :meth:`FakeQMPServer.start`
  runs the server on its own reactor in a daemon thread and listens on a Unix socket
  (by default inside a fresh private directory, removed by :meth:`~FakeQMPServer.close`)::

      import qmplex
      from qmplex.testing import fake_server

      with fake_server() as server:
          server.on("query-name", returns={"name": "vm1"})
          with qmplex.connect(server.path, timeout=5) as client:
              assert client.execute("query-name").result(timeout=5) == {"name": "vm1"}
          assert server.commands() == ["qmp_capabilities", "query-name"]

Theory of operation:

* Input is cut into lines (clients send a newline after each object, and the splitter
  resumes where it stopped, so a partial line is never rescanned); each line holds one
  JSON value (several objects on one line are accepted too). An invalid line gets QEMU's
  ``GenericError`` "JSON parse error, ..." without an id. Unlike QEMU's streaming
  parser, an object without a newline after it waits for the newline.
* Every decoded object is recorded in :attr:`FakeQMPServer.received`. Then, per
  connection: ``exec-oob`` commands run at once; in-band commands join a queue that is
  served in order, one at a time, so a scripted ``delay`` holds the commands behind it
  (replies stay in order, as in QEMU). Like QEMU, the server stops reading a connection
  while its queue is full: 8 commands with OOB negotiated, else 1.
* A command's outcome comes from its script (:meth:`FakeQMPServer.on`) or else from the
  built-in handler; the script's ``events`` go out before the reply, its
  ``events_after`` later. Events go to every negotiated connection, as in QEMU.
* Output is appended to a per-connection buffer and written with ``send``; what the
  socket does not take waits for EVENT_WRITE. Replies to a batch of input are written
  with one ``send``. While the server is stalled nothing is written or executed.
* Public methods may be called from any thread: when the reactor is driven by another
  thread they run on it (``call_soon_threadsafe``) and wait until done, so a scripted
  reply is in place before the test's next command can arrive.

Known differences from QEMU 7.2: several clients are served at once (QEMU serves one at
a time); after ``quit`` the server closes every connection but keeps listening; unplug
completes (``DEVICE_DELETED`` after ``unplug_delay``) for every device, CPUs and DIMMs
included, which a QEMU without a guest never does (set ``unplug_delay=None`` to imitate
that); input validation is limited to required arguments.
"""

from __future__ import annotations

import array
import collections
import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson

from .errors import StateError, Timeout
from .reactor import Reactor, TimerHandle

__all__ = [
    "FakeQMPServer",
    "FakeCommandError",
    "MISSING",
    "QEMU_OOB_COMMANDS",
    "DEFAULT_UNPLUG_DELAY",
    "fake_server",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Commands that QEMU 7.2 allows with ``exec-oob`` (QMP-NOTES.md).
QEMU_OOB_COMMANDS: Final = frozenset({"migrate-pause", "migrate-recover", "query-yank", "yank"})

#: Seconds between a ``device_del`` reply and its ``DEVICE_DELETED`` event.
DEFAULT_UNPLUG_DELAY: Final = 0.001

# QEMU's QMP_REQ_QUEUE_LEN_MAX: with OOB on, reading stops while 8 commands are queued.
_QUEUE_LEN_MAX: Final = 8
_RECV_BYTES: Final = 256 * 1024
# SCM_MAX_FD on Linux: the most descriptors one sendmsg() can carry.
_MAX_FDS_PER_MSG: Final = 253
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(_MAX_FDS_PER_MSG * array.array("i").itemsize)
# How long a public method called from another thread waits for the reactor thread.
_SYNC_TIMEOUT: Final = 30.0

_CPU_TYPE: Final = "qemu64-x86_64-cpu"
_MIGRATION_CAPABILITIES: Final = (
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
)  # fmt: skip
_HMP_COMMANDS: Final = frozenset(
    {"info", "help", "?", "stop", "cont", "c", "system_reset", "system_powerdown", "quit", "q"}
)


class _Missing:
    """The type of :data:`MISSING`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


#: Default of :meth:`FakeQMPServer.on`'s ``returns``: no scripted return value.
MISSING: Final = _Missing()


class FakeCommandError(Exception):
    """Raised by a command handler to make the server answer ``{"error": ...}``.

    Args:
        error_class: the QMP error class, e.g. ``"GenericError"``, ``"DeviceNotFound"``.
        desc: the human-readable description.
    """

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


def _generic(desc: str) -> FakeCommandError:
    return FakeCommandError("GenericError", desc)


def _arg(args: Mapping[str, Any], name: str) -> Any:
    """Return a required argument, or fail like QEMU's argument visitor."""
    try:
        return args[name]
    except KeyError:
        raise _generic(f"Parameter '{name}' is missing") from None


def _encode(msg: Mapping[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\r\n"


def _event_line(name: str, data: Mapping[str, Any] | None) -> bytes:
    now = time.time()
    seconds = int(now)
    msg: dict[str, Any] = {
        "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)},
        "event": name,
    }
    if data is not None:
        msg["data"] = data
    return _encode(msg)


def _error_line(has_id: bool, cid: Any, error_class: str, desc: str) -> bytes:
    # QEMU writes "id" first in an error reply and last in a return (QMP-NOTES.md).
    error = {"class": error_class, "desc": desc}
    return _encode({"id": cid, "error": error} if has_id else {"error": error})


class _BadLine:
    """A line that is not JSON: answered with a parse error, in order."""

    __slots__ = ("desc",)

    def __init__(self, desc: str) -> None:
        self.desc = desc


def _decode_line(line: bytes) -> list[Any]:
    """Decode a line that orjson refused: blank, several objects, or invalid."""
    if not line.strip():
        return []
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return [_BadLine("JSON parse error, invalid UTF-8 sequence in string")]
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, end = 0, len(text)
    try:
        while True:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos == end:
                return values
            value, pos = decoder.raw_decode(text, pos)
            values.append(value)
    except json.JSONDecodeError as exc:
        values.append(_BadLine(f"JSON parse error, {exc.msg.lower()}"))
        return values


@dataclass(slots=True)
class _Script:
    handler: Callable[[dict[str, Any]], Any] | None
    returns: Any
    error: tuple[str, str] | None
    delay: float
    never: bool
    events: tuple[tuple[str, Mapping[str, Any] | None], ...]
    events_after: tuple[tuple[str, Mapping[str, Any] | None, float], ...]
    close_mid_line: bool
    reply_without_id: bool
    times: int | None


@dataclass(slots=True)
class _Request:
    name: str
    args: dict[str, Any]
    has_id: bool
    id: Any
    oob: bool


class _Conn:
    """One client connection."""

    __slots__ = (
        "sock", "fd", "rbuf", "wbuf", "greeted", "negotiated", "oob", "queue", "busy",
        "held", "fds", "timers", "reading", "writing", "batch", "closing", "closed",
    )  # fmt: skip

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.greeted = False
        self.negotiated = False
        self.oob = False
        self.queue: collections.deque[_Request] = collections.deque()
        self.busy = False  # an in-band command is being executed (delayed reply)
        self.held: collections.deque[Any] = collections.deque()  # input not yet dispatched
        self.fds: collections.deque[int] = collections.deque()  # received, not yet claimed
        self.timers: set[TimerHandle] = set()
        self.reading = False
        self.writing = False
        self.batch = False  # writes are flushed once, at the end of the current batch
        self.closing = False  # close once the write buffer is empty; write nothing more
        self.closed = False


@dataclass(slots=True)
class _Call:
    """A command being executed by a built-in handler."""

    conn: _Conn
    args: dict[str, Any]
    after: list[Callable[[], None]] = field(default_factory=list)  # run after the reply


class _Device:
    __slots__ = ("key", "driver", "path", "args", "cpu_slot")

    def __init__(self, key: str, args: dict[str, Any], cpu_slot: int | None) -> None:
        self.key = key  # the id, or the QOM path of a device added without one
        self.driver: str = args["driver"]
        self.path = key if key.startswith("/") else f"/machine/peripheral/{key}"
        self.args = args
        self.cpu_slot = cpu_slot


@dataclass(frozen=True, slots=True)
class _Table:
    """A named-object table (block nodes, netdevs, ...): its commands and QEMU's errors."""

    kind: str
    add: str
    remove: str
    key: str
    required: tuple[str, ...]  # arguments checked before the key, in order
    duplicate: str
    not_found: tuple[str, str]
    busy: str | None  # None: QEMU removes it even while a device uses it


_TABLES: Final = (
    _Table("block", "blockdev-add", "blockdev-del", "node-name", ("driver",),
           "Duplicate nodes with node-name='{}'",
           ("GenericError", "Failed to find node with node-name='{}'"), "Node {} is in use"),
    _Table("netdev", "netdev_add", "netdev_del", "id", ("type",),
           "Duplicate ID '{}'", ("DeviceNotFound", "Device '{}' not found"), None),
    _Table("chardev", "chardev-add", "chardev-remove", "id", (),
           "Chardev with id '{}' already exists",
           ("GenericError", "Chardev '{}' not found"), "Chardev '{}' is busy"),
    _Table("object", "object-add", "object-del", "id", ("qom-type",),
           "attempt to add duplicate property '{}' to object (type 'container')",
           ("GenericError", "object '{}' not found"), "object '{}' is in use, can not be deleted"),
)  # fmt: skip

# device_add properties that name a table entry, the table, and QEMU's error when the
# entry already serves another device ({driver}, {prop}, {value}, {holder}, {device}).
_DEVICE_REFS: Final = {
    "drive": ("block",
              "Permission conflict on node '{value}': permissions 'write' are both required "
              "by block device '{holder}' (uses node '{value}' as 'root' child) and unshared "
              "by block device '{device}' (uses node '{value}' as 'root' child)."),
    "netdev": ("netdev", "Property '{driver}.{prop}' can't take value '{value}', it's in use"),
    "chardev": ("chardev",
                "Property '{driver}.{prop}' can't take value '{value}': "
                "Device '{value}' is in use"),
    "memdev": ("object", "can't use already busy memdev: {value}"),
}  # fmt: skip


def _unplug_children(device: _Device) -> list[str]:
    """QOM paths of the child devices QEMU reports (children first) when unplugging."""
    name = device.path.rsplit("/", 1)[-1]
    if device.driver == "usb-storage":
        return [f"{device.path}/{name}.0/legacy[0]"]
    if device.driver.startswith("virtio-") and device.driver.endswith("-pci"):
        return [f"{device.path}/virtio-backend"]
    return []


def _remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class FakeQMPServer:
    """A scriptable QMP server that behaves like QEMU 7.2 on the wire.

    Args:
        path: the Unix socket to listen on (by :meth:`start`). Default: ``qmp.sock`` in
            a fresh private directory (mode 0700) that :meth:`close` removes.
        reactor: the reactor to run on (the caller drives it). Default: :meth:`start`
            creates one and drives it in a daemon thread.
        version: QEMU's (major, minor, micro) for the greeting and ``query-version``.
        package: the greeting's and ``query-version``'s ``package`` string.
        capabilities: the capabilities offered in the greeting.
        greeting: raw bytes sent instead of the greeting (include the line ending).
        echo_ids: echo the ``"id"`` of each command in its reply (QEMU always does).
        emulate_qemu: provide the built-in commands of an idle, paused QEMU 7.2. If
            False, only ``qmp_capabilities`` exists; everything else must be scripted.
        greeting_delay: seconds to wait before sending the greeting.
        no_greeting: never send the greeting (input is recorded, never answered).
        close_after_greeting: close each connection right after its greeting.
        unplug_delay: seconds between a ``device_del`` reply and ``DEVICE_DELETED``;
            None: unplug never completes (like a PCI device without a guest).
        migrate_delay: seconds between the steps of a migration (setup, active, completed).
        oob_commands: the commands allowed with ``exec-oob`` (None: all).
        max_cpus: CPU slots (sockets) of ``query-hotpluggable-cpus``; slot 0 is present.

    The fault switches (``greeting_delay``, ``no_greeting``, ``close_after_greeting``)
    and the delays are attributes too, read when a connection starts or a step is due.

    Attributes:
        received: every object received, decoded, in order of arrival on the reactor
            (including ``qmp_capabilities``, invalid commands and those never answered).
        bad_lines: every received line that is not JSON.
        received_fds: every file descriptor received (SCM_RIGHTS). They stay open, and
            owned by the server, until :meth:`close`.
        handler_errors: exceptions raised by handlers other than FakeCommandError (each
            was answered with a GenericError); a test can assert it is empty.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        reactor: Reactor | None = None,
        version: tuple[int, int, int] = (7, 2, 0),
        package: str = "qmplex-fake",
        capabilities: Sequence[str] = ("oob",),
        greeting: bytes | None = None,
        echo_ids: bool = True,
        emulate_qemu: bool = True,
        greeting_delay: float = 0.0,
        no_greeting: bool = False,
        close_after_greeting: bool = False,
        unplug_delay: float | None = DEFAULT_UNPLUG_DELAY,
        migrate_delay: float = 0.001,
        oob_commands: Collection[str] | None = QEMU_OOB_COMMANDS,
        max_cpus: int = 2,
    ) -> None:
        self._dir: str | None = None
        if path is None:
            self._dir = tempfile.mkdtemp(prefix="qmplex-fake-")  # mode 0700
            path = os.path.join(self._dir, "qmp.sock")
        self._dir_finalizer = weakref.finalize(self, _remove_dir, self._dir or "")
        if self._dir is None:
            self._dir_finalizer.detach()
        self.path: str = path
        self.version = version
        self.package = package
        self.capabilities = tuple(capabilities)
        self.greeting = greeting
        self.echo_ids = echo_ids
        self.emulate_qemu = emulate_qemu
        self.greeting_delay = greeting_delay
        self.no_greeting = no_greeting
        self.close_after_greeting = close_after_greeting
        self.unplug_delay = unplug_delay
        self.migrate_delay = migrate_delay
        self.oob_commands = None if oob_commands is None else frozenset(oob_commands)

        self.received: list[dict[str, Any]] = []
        self.bad_lines: list[bytes] = []
        self.received_fds: list[int] = []
        self.handler_errors: list[BaseException] = []
        self._commands: list[str] = []

        self._reactor = reactor
        self._own_reactor = reactor is None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._bound = False  # the socket file at path is ours to remove
        self._started = False
        self._closed = False
        self._conns: list[_Conn] = []
        self._timers: set[TimerHandle] = set()
        self._scripts: dict[str, _Script] = {}
        self._stalled = False
        self._stall_reading = False
        self._cond = threading.Condition()
        self._waiters = 0

        # The emulated machine.
        self.run_state = "prelaunch"
        self._tables: dict[str, dict[str, dict[str, Any]]] = {t.kind: {} for t in _TABLES}
        self._users: dict[tuple[str, str], _Device] = {}  # (table, name) -> its device
        self._devices: dict[str, _Device] = {}
        self._anon_devices = 0
        self._cpus: dict[int, str] = {0: "/machine/unattached/device[0]"}  # slot -> path
        self._max_cpus = max_cpus
        self._fdnames: dict[str, int] = {}
        self._fdsets: dict[int, list[int]] = {}
        self._qom_props: dict[str, dict[str, Any]] = {}
        self._migration_caps: dict[str, bool] = dict.fromkeys(_MIGRATION_CAPABILITIES, False)
        self._migration_status: str | None = None

        handlers: dict[str, Callable[[_Call], Any]] = {
            "qmp_capabilities": self._cmd_qmp_capabilities,
        }
        if emulate_qemu:
            handlers.update(self._qemu_handlers())
        self._handlers = handlers

    # ------------------------------------------------------------- lifecycle
    def start(self) -> FakeQMPServer:
        """Listen on :attr:`path`; without a reactor given, run one in a daemon thread.

        Returns:
            The server itself (for ``server = FakeQMPServer().start()``).

        Raises:
            StateError: the server was started or closed already.
            OSError: the socket could not be bound (e.g. ``path`` exists).
        """
        if self._closed:
            raise StateError("the fake QMP server is closed")
        if self._started:
            raise StateError("the fake QMP server is started already")
        self._started = True
        if self._reactor is None:
            # Its own thread's reactor never busy-polls: the client under test shares
            # this process (and its GIL) and must not have to wait for a spinning peer.
            self._reactor = Reactor()
            self._listen()
            self._thread = threading.Thread(
                target=self._reactor.run, name="qmplex-fake-qmp", daemon=True
            )
            self._thread.start()
        else:
            self._sync(self._listen)
        return self

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            self._bound = True
            listener.listen(128)
            listener.setblocking(False)
            self._require_reactor().add_reader(listener.fileno(), self._on_accept)
        except BaseException:
            listener.close()
            raise
        self._listener = listener

    def close(self) -> None:
        """Close the listener and every connection, stop the server's thread, close the
        received file descriptors, remove the socket (and the private directory).

        Idempotent. Pending delayed replies and events are dropped.

        Raises:
            StateError: called from a handler on the server's own thread.
        """
        if self._closed:
            return
        reactor = self._reactor
        if reactor is not None and self._thread is not None:
            if reactor.in_reactor_thread():
                raise StateError("close() cannot run on the fake server's own thread")
            reactor.stop()
            self._thread.join(_SYNC_TIMEOUT)
            self._thread = None  # the reactor is idle: tear down from this thread
        if reactor is not None and not reactor.closed:
            self._sync(self._teardown)
        self._closed = True
        if self._own_reactor and reactor is not None:
            reactor.close()
        for fd in self.received_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._bound:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._dir_finalizer()
        with self._cond:
            self._cond.notify_all()

    def _teardown(self) -> None:
        for conn in list(self._conns):
            self._close_conn(conn)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            self._require_reactor().remove_reader(listener.fileno())
            listener.close()

    def __enter__(self) -> FakeQMPServer:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reactor(self) -> Reactor | None:
        """The reactor the server runs on (None before :meth:`start` without one)."""
        return self._reactor

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def connect_pair(self) -> socket.socket:
        """Serve one end of a new socket pair and return the other (the client's end).

        The greeting is sent at once (subject to the greeting switches). The returned
        socket is blocking; the caller owns and closes it.

        Raises:
            StateError: there is no reactor yet (call :meth:`start` first), or closed.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sync(self._add_conn, ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        return theirs

    # ------------------------------------------------------------- scripting
    def on(
        self,
        command: str,
        handler: Callable[[dict[str, Any]], Any] | None = None,
        *,
        returns: Any = MISSING,
        error: tuple[str, str] | None = None,
        delay: float = 0.0,
        never: bool = False,
        events: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
        events_after: Sequence[tuple[str, Mapping[str, Any] | None, float]] = (),
        close_mid_line: bool = False,
        reply_without_id: bool = False,
        times: int | None = None,
    ) -> None:
        """Script how the server answers ``command`` (replacing an earlier script).

        At most one of ``handler``, ``returns`` and ``error`` may be given; with none,
        the built-in handler decides the outcome (or CommandNotFound if there is none),
        and the other options still apply.

        Args:
            command: the QMP command name.
            handler: called on the reactor thread with the arguments (a dict, ``{}`` if
                none were sent); returns the ``"return"`` value or raises
                :class:`FakeCommandError`. It may call :meth:`emit` (the event precedes
                the reply).
            returns: the ``"return"`` value.
            error: ``(class, desc)`` of an error reply.
            delay: seconds before the command executes and replies. An in-band command
                holds the in-band commands behind it (replies stay in order).
            never: execute the command but never send its reply; later commands are
                answered normally.
            events: ``(name, data)`` events sent before the reply (like ``STOP`` before
                the return of ``stop``); ``data`` None omits the member.
            events_after: ``(name, data, delay)`` events sent ``delay`` seconds after
                the reply.
            close_mid_line: send the first half of the reply line, then close the
                connection.
            reply_without_id: leave the ``"id"`` out of the reply.
            times: script only the next ``times`` executions, then fall back to the
                built-in behaviour (None: every execution).

        Raises:
            ValueError: more than one of handler, returns and error.
        """
        if sum((handler is not None, returns is not MISSING, error is not None)) > 1:
            raise ValueError("give at most one of handler, returns and error")
        script = _Script(
            handler, returns, None if error is None else (error[0], error[1]), delay, never,
            tuple((name, data) for name, data in events),
            tuple((name, data, after) for name, data, after in events_after),
            close_mid_line, reply_without_id, times,
        )  # fmt: skip
        self._sync(self._scripts.__setitem__, command, script)

    def off(self, command: str) -> None:
        """Remove the script of ``command`` (the built-in behaviour applies again)."""
        self._sync(self._scripts.pop, command, None)

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send an event to every negotiated client now (held while stalled).

        Args:
            name: the event name, e.g. ``"BLOCK_JOB_COMPLETED"``.
            data: the ``"data"`` member; None omits it.
        """
        self._sync(self._broadcast_event, name, data)

    def commands(self) -> list[str]:
        """Return the names of the commands received so far (``execute`` or
        ``exec-oob``), in order, ``qmp_capabilities`` included."""
        return list(self._commands)

    @property
    def clients(self) -> int:
        """The number of connected clients."""
        return len(self._conns)

    # ---------------------------------------------------------------- faults
    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is to every connected client (garbage, partial lines,
        over-long lines, NULs...), greeted or not."""
        self._sync(self._send_raw, bytes(data))

    def _send_raw(self, data: bytes) -> None:
        for conn in list(self._conns):
            self._write(conn, data)

    def stall(self, reading: bool = True) -> None:
        """Stop executing commands and writing anything, like a hung QEMU.

        Args:
            reading: also stop reading, so the clients' writes back up in the socket
                buffers. If False, input is still read and recorded in :attr:`received`.
        """
        self._sync(self._stall, reading)

    def _stall(self, reading: bool) -> None:
        self._stalled = True
        self._stall_reading = reading
        for conn in list(self._conns):
            self._update_reading(conn)

    def resume(self) -> None:
        """Undo :meth:`stall`: write what is pending, then execute what was received."""
        self._sync(self._resume)

    def _resume(self) -> None:
        self._stalled = False
        for conn in list(self._conns):
            self._update_reading(conn)
            self._flush(conn)
            if conn.greeted:
                self._replay(conn)

    def drop_clients(self) -> None:
        """Close every client connection now (the clients see EOF); pending output is
        discarded."""
        self._sync(self._drop_clients)

    def _drop_clients(self) -> None:
        for conn in list(self._conns):
            self._close_conn(conn)

    # -------------------------------------------------------------- waiting
    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` is true.

        With the server's own thread, waits for it to make progress; with a reactor
        given and driven by nobody, drives it (``run_once``) meanwhile.

        Raises:
            Timeout: ``predicate()`` was still false after ``timeout`` seconds.
            StateError: called on the thread driving the reactor (it would deadlock).
        """
        deadline = time.monotonic() + timeout
        reactor = self._reactor
        if reactor is not None and reactor.in_reactor_thread():
            raise StateError("wait_until() would block the reactor it waits for")
        if self._thread is None and reactor is not None and not reactor.is_running():
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout(f"condition not reached within {timeout} s")
                reactor.run_once(min(remaining, 0.05))
            return
        with self._cond:
            self._waiters += 1
            try:
                while not predicate():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Timeout(f"condition not reached within {timeout} s")
                    self._cond.wait(remaining)
            finally:
                self._waiters -= 1

    def wait_for_commands(self, n: int, timeout: float = 5.0) -> list[str]:
        """Wait until at least ``n`` commands were received; return :meth:`commands`.

        Raises:
            Timeout: fewer than ``n`` commands arrived within ``timeout`` seconds.
        """
        self.wait_until(lambda: len(self._commands) >= n, timeout)
        return self.commands()

    def wait_for_clients(self, n: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``n`` clients are connected (0: all gone).

        Raises:
            Timeout: the count differed after ``timeout`` seconds.
        """
        self.wait_until(lambda: len(self._conns) == n, timeout)

    def _notify(self) -> None:
        # Reading _waiters without the lock is safe: a waiter increments it, then checks
        # its predicate under the lock, after any state change made before this read.
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------------ emulated state
    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """Block nodes: node-name -> ``blockdev-add`` arguments (the live table)."""
        return self._tables["block"]

    @property
    def netdevs(self) -> dict[str, dict[str, Any]]:
        """Netdevs: id -> ``netdev_add`` arguments (the live table)."""
        return self._tables["netdev"]

    @property
    def chardevs(self) -> dict[str, dict[str, Any]]:
        """Chardevs: id -> ``chardev-add`` arguments (the live table)."""
        return self._tables["chardev"]

    @property
    def objects(self) -> dict[str, dict[str, Any]]:
        """User-created objects: id -> ``object-add`` arguments (the live table)."""
        return self._tables["object"]

    @property
    def devices(self) -> dict[str, dict[str, Any]]:
        """Devices: id (QOM path if added without one) -> ``device_add`` arguments
        (a copy). A device leaves this table when ``device_del`` is answered, as in
        QEMU, though its drive stays in use until ``DEVICE_DELETED``."""
        return {key: dev.args for key, dev in self._devices.items()}

    # ------------------------------------------------------------ plumbing
    def _require_reactor(self) -> Reactor:
        if self._reactor is None:
            raise StateError("the fake QMP server has no reactor yet: call start() first")
        return self._reactor

    def _sync(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the reactor's thread and return its result."""
        if self._closed:
            raise StateError("the fake QMP server is closed")
        reactor = self._reactor
        if reactor is None or reactor.in_reactor_thread() or not (
            self._thread is not None or reactor.is_running()
        ):
            return fn(*args)
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed to the calling thread
                box.append((False, exc))
            finally:
                done.set()

        reactor.call_soon_threadsafe(run)
        if not done.wait(_SYNC_TIMEOUT):
            raise Timeout("the fake QMP server's reactor thread did not respond")
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _later(
        self, delay: float, fn: Callable[..., object], *args: Any, conn: _Conn | None = None
    ) -> None:
        """Call ``fn(*args)`` after ``delay`` s; cancelled by closing ``conn`` (or the
        server, when ``conn`` is None)."""
        timers = self._timers if conn is None else conn.timers
        handles: list[TimerHandle] = []

        def fire() -> None:
            timers.discard(handles[0])
            fn(*args)

        handles.append(self._require_reactor().call_later(delay, fire))
        timers.add(handles[0])

    def _on_accept(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the others
                logger.warning("fake QMP server: accept failed: %s", exc)
                return
            self._add_conn(sock)

    def _add_conn(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        conn = _Conn(sock)
        self._conns.append(conn)
        self._require_reactor().add_reader(conn.fd, functools.partial(self._on_readable, conn))
        conn.reading = True
        if self.no_greeting:
            pass
        elif self.greeting_delay > 0:
            self._later(self.greeting_delay, self._greet, conn, conn=conn)
        else:
            self._greet(conn)
        self._notify()

    def _greeting_line(self) -> bytes:
        if self.greeting is not None:
            return self.greeting
        major, minor, micro = self.version
        return _encode({
            "QMP": {
                "version": {
                    "qemu": {"micro": micro, "minor": minor, "major": major},
                    "package": self.package,
                },
                "capabilities": list(self.capabilities),
            }
        })

    def _greet(self, conn: _Conn) -> None:
        self._write(conn, self._greeting_line())
        conn.greeted = True
        if self.close_after_greeting:
            self._close_after_output(conn)
        else:
            self._replay(conn)

    def _close_after_output(self, conn: _Conn) -> None:
        conn.closing = True
        if not conn.batch:
            self._flush(conn)

    def _close_conn(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.remove(conn)
        reactor = self._reactor
        if reactor is not None and not reactor.closed:
            if conn.reading:
                reactor.remove_reader(conn.fd)
            if conn.writing:
                reactor.remove_writer(conn.fd)
        conn.reading = conn.writing = False
        for timer in conn.timers:
            timer.cancel()
        conn.timers.clear()
        conn.queue.clear()
        conn.held.clear()
        conn.sock.close()
        self._notify()

    def _update_reading(self, conn: _Conn) -> None:
        # QEMU suspends its monitor while the in-band queue is full: 8 requests with
        # OOB on, else 1 (monitor/qmp.c, handle_qmp_command).
        queued = len(conn.queue) + conn.busy
        want = (
            not conn.closed
            and not (self._stalled and self._stall_reading)
            and queued < (_QUEUE_LEN_MAX if conn.oob else 1)
        )
        if want != conn.reading:
            reactor = self._require_reactor()
            if want:
                reactor.add_reader(conn.fd, functools.partial(self._on_readable, conn))
            else:
                reactor.remove_reader(conn.fd)
            conn.reading = want

    # --------------------------------------------------------------- output
    def _write(self, conn: _Conn, data: bytes) -> None:
        if conn.closed or conn.closing:
            return
        conn.wbuf += data
        if not conn.batch:
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.closed:
            return
        if self._stalled:  # hold the output; resume() flushes it
            if conn.writing:
                self._require_reactor().remove_writer(conn.fd)
                conn.writing = False
            return
        wbuf = conn.wbuf
        if wbuf:
            try:
                sent = conn.sock.send(wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the client went away (EPIPE, ECONNRESET)
                self._close_conn(conn)
                return
            del wbuf[:sent]
        if wbuf:
            if not conn.writing:
                self._require_reactor().add_writer(
                    conn.fd, functools.partial(self._flush, conn)
                )
                conn.writing = True
            return
        if conn.writing:
            self._require_reactor().remove_writer(conn.fd)
            conn.writing = False
        if conn.closing:
            self._close_conn(conn)

    def _broadcast_event(self, name: str, data: Mapping[str, Any] | None) -> None:
        # QEMU sends events only to monitors that left capabilities negotiation.
        line = _event_line(name, data)
        for conn in list(self._conns):
            if conn.negotiated:
                self._write(conn, line)

    # ---------------------------------------------------------------- input
    def _on_readable(self, conn: _Conn) -> None:
        try:
            data, ancdata, _flags, _addr = conn.sock.recvmsg(
                _RECV_BYTES, _ANCILLARY_BYTES, socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(conn)
            return
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                conn.fds.extend(fds)
                self.received_fds.extend(fds)
        if not data:
            self._close_conn(conn)
            return
        conn.batch = True
        try:
            self._feed(conn, data)
        finally:
            conn.batch = False
        self._flush(conn)
        self._notify()

    def _feed(self, conn: _Conn, data: bytes) -> None:
        buf = conn.rbuf
        scanned = len(buf)  # the partial line already held has no newline
        buf += data
        newline = buf.find(b"\n", scanned)
        start = 0
        while newline >= 0:
            line = bytes(buf[start:newline])
            start = newline + 1
            self._on_line(conn, line)
            if conn.closed:
                return
            newline = buf.find(b"\n", start)
        del buf[:start]

    def _on_line(self, conn: _Conn, line: bytes) -> None:
        try:
            values = [orjson.loads(line)]
        except orjson.JSONDecodeError:
            values = _decode_line(line)
        for value in values:
            if isinstance(value, dict):
                self.received.append(value)
                name = value.get("execute", value.get("exec-oob"))
                if isinstance(name, str):
                    self._commands.append(name)
            elif isinstance(value, _BadLine):
                self.bad_lines.append(line)
            if conn.closing:
                continue
            if conn.greeted and not self._stalled:
                self._dispatch(conn, value)
            else:
                conn.held.append(value)

    def _replay(self, conn: _Conn) -> None:
        """Dispatch the input held before the greeting or during a stall."""
        batch, conn.batch = conn.batch, True
        try:
            while conn.held and not self._stalled and not conn.closed:
                self._dispatch(conn, conn.held.popleft())
            self._pump(conn)
        finally:
            conn.batch = batch
        if not batch:
            self._flush(conn)

    def _dispatch(self, conn: _Conn, value: Any) -> None:
        if conn.closing or conn.closed:
            return
        if isinstance(value, _BadLine):
            self._write(conn, _error_line(False, None, "GenericError", value.desc))
            return
        if not isinstance(value, dict):
            self._write(conn, _error_line(False, None, "GenericError",
                                          "QMP input must be a JSON object"))
            return
        has_id = "id" in value
        cid = value.get("id")
        try:
            request = self._parse(conn, value, has_id, cid)
        except FakeCommandError as exc:
            self._write(conn, _error_line(has_id, cid, exc.error_class, exc.desc))
            return
        if request.oob:
            self._execute(conn, request)
        else:
            conn.queue.append(request)
            self._pump(conn)

    def _parse(self, conn: _Conn, msg: dict[str, Any], has_id: bool, cid: Any) -> _Request:
        """Check a command object's members as QEMU's qmp_dispatch does."""
        exec_key: str | None = None
        for key, value in msg.items():
            if key == "execute" or (key == "exec-oob" and conn.oob):
                if not isinstance(value, str):
                    raise _generic(f"QMP input member '{key}' must be a string")
                if exec_key is not None:
                    raise _generic("QMP input member 'execute' clashes with 'exec-oob'")
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise _generic("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise _generic(f"QMP input member '{key}' is unexpected")
        if exec_key is None:
            raise _generic("QMP input lacks member 'execute'")
        return _Request(msg[exec_key], msg.get("arguments", {}), has_id, cid,
                        exec_key == "exec-oob")

    # ------------------------------------------------------------ execution
    def _pump(self, conn: _Conn) -> None:
        """Execute queued in-band commands, in order, until one is delayed."""
        queue = conn.queue
        while queue and not conn.busy and not conn.closing and not self._stalled:
            self._execute(conn, queue.popleft())
        self._update_reading(conn)

    def _execute(self, conn: _Conn, req: _Request) -> None:
        name = req.name
        script: _Script | None = None
        try:
            if not conn.negotiated:
                if name != "qmp_capabilities":
                    raise FakeCommandError(
                        "CommandNotFound",
                        "Expecting capabilities negotiation with 'qmp_capabilities'")
            elif name == "qmp_capabilities":
                raise FakeCommandError(
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored")
            script = self._scripts.get(name)
            if script is None and name not in self._handlers:
                raise FakeCommandError("CommandNotFound",
                                       f"The command {name} has not been found")
            if req.oob and self.oob_commands is not None and name not in self.oob_commands:
                raise _generic(f"The command {name} does not support OOB")
        except FakeCommandError as exc:
            self._reply_error(conn, req, exc)
            return
        if script is not None and script.times is not None:
            script.times -= 1
            if script.times <= 0 and self._scripts.get(name) is script:
                del self._scripts[name]
        if script is not None and script.delay > 0:
            if not req.oob:
                conn.busy = True
            self._later(script.delay, self._complete_delayed, conn, req, script, conn=conn)
        else:
            self._complete(conn, req, script)

    def _complete_delayed(self, conn: _Conn, req: _Request, script: _Script) -> None:
        if not req.oob:
            conn.busy = False
        conn.batch = True
        try:
            self._complete(conn, req, script)
            self._pump(conn)
        finally:
            conn.batch = False
        self._flush(conn)

    def _reply_error(self, conn: _Conn, req: _Request, exc: FakeCommandError) -> None:
        has_id = req.has_id and self.echo_ids
        self._write(conn, _error_line(has_id, req.id, exc.error_class, exc.desc))

    def _complete(self, conn: _Conn, req: _Request, script: _Script | None) -> None:
        """Execute a command: effects, events before, the reply, what comes after."""
        if conn.closed or conn.closing:
            return
        call = _Call(conn, req.args)
        ok = False
        value: Any = None
        try:
            if script is not None and script.error is not None:
                raise FakeCommandError(*script.error)
            if script is not None and script.handler is not None:
                value = script.handler(req.args)
            elif script is not None and script.returns is not MISSING:
                value = script.returns
            else:
                handler = self._handlers.get(req.name)
                if handler is None:
                    raise FakeCommandError("CommandNotFound",
                                           f"The command {req.name} has not been found")
                value = handler(call)
            ok = True
        except FakeCommandError as exc:
            value = exc
        except Exception as exc:  # a bug in a test's handler: report it, keep serving
            logger.exception("fake QMP server: handler for %r raised", req.name)
            self.handler_errors.append(exc)
            value = _generic(f"fake handler for {req.name} raised {exc!r}")
        if script is not None:
            for name, data in script.events:
                self._broadcast_event(name, data)
        if script is None or not script.never:
            has_id = req.has_id and self.echo_ids
            if script is not None and script.reply_without_id:
                has_id = False
            if ok:
                try:
                    line = _encode({"return": value, "id": req.id} if has_id
                                   else {"return": value})
                except TypeError as exc:  # orjson.JSONEncodeError
                    self.handler_errors.append(exc)
                    line = _error_line(has_id, req.id, "GenericError",
                                       f"fake reply to {req.name} is not JSON: {exc}")
            else:
                line = _error_line(has_id, req.id, value.error_class, value.desc)
            if script is not None and script.close_mid_line:
                self._write(conn, line[: len(line) // 2])
                self._close_after_output(conn)
            else:
                self._write(conn, line)
        if ok and req.name == "qmp_capabilities":
            conn.negotiated = True
            conn.oob = "oob" in (req.args.get("enable") or ())
            self._update_reading(conn)
        for fn in call.after:
            fn()
        if script is not None:
            for name, data, after in script.events_after:
                self._later(after, self._broadcast_event, name, data)

    # ----------------------------------------------------- built-in commands
    def _qemu_handlers(self) -> dict[str, Callable[[_Call], Any]]:
        handlers: dict[str, Callable[[_Call], Any]] = {
            "query-status": self._cmd_query_status,
            "query-version": self._cmd_query_version,
            "query-commands": self._cmd_query_commands,
            "query-name": lambda call: {},
            "stop": self._cmd_stop,
            "cont": self._cmd_cont,
            "system_reset": self._cmd_system_reset,
            "system_powerdown": self._cmd_system_powerdown,
            "quit": self._cmd_quit,
            "device_add": self._cmd_device_add,
            "device_del": self._cmd_device_del,
            "query-named-block-nodes": self._cmd_query_named_block_nodes,
            "query-hotpluggable-cpus": self._cmd_query_hotpluggable_cpus,
            "query-cpus-fast": self._cmd_query_cpus_fast,
            "getfd": self._cmd_getfd,
            "closefd": self._cmd_closefd,
            "add-fd": self._cmd_add_fd,
            "remove-fd": self._cmd_remove_fd,
            "query-fdsets": self._cmd_query_fdsets,
            "human-monitor-command": self._cmd_human_monitor_command,
            "qom-list": self._cmd_qom_list,
            "qom-get": self._cmd_qom_get,
            "qom-set": self._cmd_qom_set,
            "migrate-set-capabilities": self._cmd_migrate_set_capabilities,
            "query-migrate-capabilities": self._cmd_query_migrate_capabilities,
            "migrate": self._cmd_migrate,
            "query-migrate": self._cmd_query_migrate,
            "yank": lambda call: {},
            "query-yank": lambda call: [{"type": "chardev", "id": "compat_monitor0"}],
        }
        for table in _TABLES:
            handlers[table.add] = functools.partial(self._cmd_table_add, table)
            handlers[table.remove] = functools.partial(self._cmd_table_remove, table)
        return handlers

    def _cmd_qmp_capabilities(self, call: _Call) -> Any:
        enable = call.args.get("enable", [])
        if not isinstance(enable, list):
            raise _generic("Invalid parameter type for 'enable', expected: array")
        for cap in enable:
            if cap != "oob":
                raise _generic(f"Parameter 'null' does not accept value '{cap}'")
            if cap not in self.capabilities:
                raise _generic(f"Capability '{cap}' not available")
        return {}

    def _cmd_query_status(self, call: _Call) -> Any:
        state = self.run_state
        return {"status": state, "singlestep": False, "running": state == "running"}

    def _cmd_query_version(self, call: _Call) -> Any:
        major, minor, micro = self.version
        return {"qemu": {"micro": micro, "minor": minor, "major": major},
                "package": self.package}

    def _cmd_query_commands(self, call: _Call) -> Any:
        return [{"name": name} for name in sorted(self._handlers.keys() | self._scripts.keys())]

    def _cmd_stop(self, call: _Call) -> Any:
        # QEMU sends STOP only when the guest was running; "prelaunch" stays as it is.
        if self.run_state == "running":
            self.run_state = "paused"
            self._broadcast_event("STOP", None)
        return {}

    def _cmd_cont(self, call: _Call) -> Any:
        if self.run_state != "running":
            self.run_state = "running"
            self._broadcast_event("RESUME", None)
        return {}

    def _cmd_system_reset(self, call: _Call) -> Any:
        self._broadcast_event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        return {}

    def _cmd_system_powerdown(self, call: _Call) -> Any:
        self._broadcast_event("POWERDOWN", None)
        return {}

    def _cmd_quit(self, call: _Call) -> Any:
        self._broadcast_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        call.after.append(self._quit)
        return {}

    def _quit(self) -> None:
        # QEMU exits: every connection ends once its pending output is written.
        for conn in list(self._conns):
            self._close_after_output(conn)

    # Named-object tables: block nodes, netdevs, chardevs, objects.
    def _cmd_table_add(self, table: _Table, call: _Call) -> Any:
        args = call.args
        for name in table.required:
            _arg(args, name)
        if table.key not in args:
            if table.kind == "block":
                raise _generic("'node-name' must be specified for the root node")
            _arg(args, table.key)
        if table.kind == "chardev":
            _arg(args, "backend")
        key = args[table.key]
        entries = self._tables[table.kind]
        if key in entries:
            raise _generic(table.duplicate.format(key))
        entries[key] = args
        return {}

    def _cmd_table_remove(self, table: _Table, call: _Call) -> Any:
        key = _arg(call.args, table.key)
        entries = self._tables[table.kind]
        if key not in entries:
            raise FakeCommandError(table.not_found[0], table.not_found[1].format(key))
        if (table.kind, key) in self._users:
            if table.busy is not None:
                raise _generic(table.busy.format(key))
            del self._users[table.kind, key]
        del entries[key]
        return {}

    def _cmd_query_named_block_nodes(self, call: _Call) -> Any:
        return [{"node-name": name, "drv": args.get("driver"), "ro": bool(args.get("read-only")),
                 "encrypted": False, "file": args.get("filename", f"{args.get('driver')}://")}
                for name, args in self.nodes.items()]

    # Devices.
    def _cmd_device_add(self, call: _Call) -> Any:
        args = call.args
        driver = _arg(args, "driver")
        dev_id = args.get("id")
        if dev_id is not None and dev_id in self._devices:
            raise _generic(f"Duplicate device ID '{dev_id}'")
        key = dev_id if dev_id is not None else (
            f"/machine/peripheral-anon/device[{self._anon_devices}]")
        refs: list[tuple[str, str]] = []
        for prop, (kind, in_use) in _DEVICE_REFS.items():
            value = args.get(prop)
            if value is None:
                continue
            if value not in self._tables[kind]:
                raise _generic(f"Property '{driver}.{prop}' can't find value '{value}'")
            holder = self._users.get((kind, value))
            if holder is not None:
                raise _generic(in_use.format(driver=driver, prop=prop, value=value,
                                             holder=holder.key, device=key))
            refs.append((kind, value))
        cpu_slot = self._check_cpu_slot(args) if driver == _CPU_TYPE else None
        device = _Device(key, dict(args), cpu_slot)
        if dev_id is None:
            self._anon_devices += 1
        self._devices[key] = device
        for ref in refs:
            self._users[ref] = device
        if cpu_slot is not None:
            self._cpus[cpu_slot] = device.path
        return {}

    def _check_cpu_slot(self, args: Mapping[str, Any]) -> int:
        socket_id = args.get("socket-id")
        if socket_id is None:
            raise _generic("CPU socket-id is not set")
        for prop, value, top in (("socket-id", socket_id, self._max_cpus - 1),
                                 ("core-id", args.get("core-id", 0), 0),
                                 ("thread-id", args.get("thread-id", 0), 0)):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise _generic(f"Invalid CPU {prop}: {value} must be in range 0:{top}")
        if socket_id in self._cpus:
            raise _generic(f"CPU[{socket_id}] with APIC ID {socket_id} exists")
        return int(socket_id)

    def _cmd_device_del(self, call: _Call) -> Any:
        dev_id = _arg(call.args, "id")
        key = dev_id
        if isinstance(dev_id, str) and dev_id.startswith("/machine/peripheral/"):
            key = dev_id[len("/machine/peripheral/"):]
        device = self._devices.get(key)
        if device is None:
            raise FakeCommandError("DeviceNotFound", f"Device '{dev_id}' not found")
        if self.unplug_delay is None:
            return {}  # the unplug request stays pending, as without a guest
        # QEMU frees the ID at once; the drive stays in use until DEVICE_DELETED.
        del self._devices[key]
        self._later(self.unplug_delay, self._unplugged, device)
        return {}

    def _unplugged(self, device: _Device) -> None:
        for ref, holder in list(self._users.items()):
            if holder is device:
                del self._users[ref]
        if device.cpu_slot is not None:
            self._cpus.pop(device.cpu_slot, None)
        for child in _unplug_children(device):
            self._broadcast_event("DEVICE_DELETED", {"path": child})
        if device.key.startswith("/"):
            self._broadcast_event("DEVICE_DELETED", {"path": device.path})
        else:
            self._broadcast_event("DEVICE_DELETED", {"device": device.key, "path": device.path})

    # CPUs.
    def _cmd_query_hotpluggable_cpus(self, call: _Call) -> Any:
        cpus = []
        for slot in reversed(range(self._max_cpus)):
            cpu: dict[str, Any] = {
                "props": {"core-id": 0, "thread-id": 0, "socket-id": slot},
                "vcpus-count": 1,
            }
            if slot in self._cpus:
                cpu["qom-path"] = self._cpus[slot]
            cpu["type"] = _CPU_TYPE
            cpus.append(cpu)
        return cpus

    def _cmd_query_cpus_fast(self, call: _Call) -> Any:
        return [{"thread-id": os.getpid() + slot,
                 "props": {"core-id": 0, "thread-id": 0, "socket-id": slot},
                 "qom-path": path, "cpu-index": slot, "target": "x86_64"}
                for slot, path in sorted(self._cpus.items())]

    # File descriptors.
    def _take_fd(self, conn: _Conn) -> int:
        if not conn.fds:
            raise _generic("No file descriptor supplied via SCM_RIGHTS")
        return conn.fds.popleft()

    def _cmd_getfd(self, call: _Call) -> Any:
        name = _arg(call.args, "fdname")
        self._fdnames[name] = self._take_fd(call.conn)
        return {}

    def _cmd_closefd(self, call: _Call) -> Any:
        name = _arg(call.args, "fdname")
        if self._fdnames.pop(name, None) is None:
            raise _generic(f"File descriptor named '{name}' not found")
        return {}  # the descriptor stays open in received_fds until close()

    def _cmd_add_fd(self, call: _Call) -> Any:
        fdset_id = call.args.get("fdset-id")
        fd = self._take_fd(call.conn)
        if fdset_id is None:
            fdset_id = next(i for i in range(len(self._fdsets) + 1) if i not in self._fdsets)
        self._fdsets.setdefault(fdset_id, []).append(fd)
        return {"fd": fd, "fdset-id": fdset_id}

    def _cmd_remove_fd(self, call: _Call) -> Any:
        fdset_id = _arg(call.args, "fdset-id")
        fd = call.args.get("fd")
        fds = self._fdsets.get(fdset_id, [])
        if fd is None and fds:
            del self._fdsets[fdset_id]
            return {}
        if fd is not None and fd in fds:
            fds.remove(fd)
            if not fds:
                del self._fdsets[fdset_id]
            return {}
        where = f"fdset-id:{fdset_id}" + ("" if fd is None else f", fd:{fd}")
        raise _generic(f"File descriptor named '{where}' not found")

    def _cmd_query_fdsets(self, call: _Call) -> Any:
        return [{"fds": [{"fd": fd} for fd in fds], "fdset-id": fdset_id}
                for fdset_id, fds in sorted(self._fdsets.items())]

    # Human monitor.
    def _cmd_human_monitor_command(self, call: _Call) -> Any:
        line = str(_arg(call.args, "command-line")).strip()
        words = line.split()
        if not words:
            return ""
        if words[0] not in _HMP_COMMANDS:
            return f"unknown command: '{words[0]}'\r\n"
        if words[:2] == ["info", "status"]:
            state = self.run_state
            if state in ("running", "paused"):
                return f"VM status: {state}\r\n"
            return f"VM status: paused ({state})\r\n"
        if words[:2] == ["info", "version"]:
            major, minor, micro = self.version
            return f"{major}.{minor}.{micro}{self.package}\r\n"
        simple = {"stop": self._cmd_stop, "cont": self._cmd_cont, "c": self._cmd_cont,
                  "system_reset": self._cmd_system_reset,
                  "system_powerdown": self._cmd_system_powerdown,
                  "quit": self._cmd_quit, "q": self._cmd_quit}
        if words[0] in simple:
            simple[words[0]](call)
        return ""

    # QOM.
    def _qom_type(self, path: str) -> str:
        """Return the QOM type at ``path``, or fail like QEMU."""
        path = path.rstrip("/") or "/"
        if path == "/machine":
            return "pc-i440fx-7.2-machine"
        if path in ("/", "/objects", "/machine/peripheral", "/machine/peripheral-anon",
                    "/machine/unattached"):
            return "container"
        for device in self._devices.values():
            if device.path == path:
                return device.driver
        if path.startswith("/objects/") and path[9:] in self.objects:
            return str(self.objects[path[9:]]["qom-type"])
        raise FakeCommandError("DeviceNotFound", f"Device '{path}' not found")

    def _cmd_qom_list(self, call: _Call) -> Any:
        path = str(_arg(call.args, "path")).rstrip("/") or "/"
        self._qom_type(path)
        props = [{"name": "type", "type": "string"}]
        if path == "/machine/peripheral":
            props += [{"name": d.key, "type": f"child<{d.driver}>"}
                      for d in self._devices.values() if not d.key.startswith("/")]
        elif path == "/machine/peripheral-anon":
            props += [{"name": d.key.rsplit("/", 1)[1], "type": f"child<{d.driver}>"}
                      for d in self._devices.values() if d.key.startswith("/")]
        elif path == "/objects":
            props += [{"name": key, "type": f"child<{args['qom-type']}>"}
                      for key, args in self.objects.items()]
        elif path == "/machine":
            props += [{"name": name, "type": "child<container>"}
                      for name in ("peripheral", "peripheral-anon", "unattached")]
        elif path.startswith("/machine/"):
            props += [{"name": "realized", "type": "bool"},
                      {"name": "hotplugged", "type": "bool"},
                      {"name": "hotpluggable", "type": "bool"},
                      {"name": "parent_bus", "type": "link<bus>"}]
        props += [{"name": name, "type": type(value).__name__}
                  for name, value in self._qom_props.get(path, {}).items()
                  if name not in {p["name"] for p in props}]
        return props

    def _cmd_qom_get(self, call: _Call) -> Any:
        path = str(_arg(call.args, "path")).rstrip("/") or "/"
        prop = _arg(call.args, "property")
        qom_type = self._qom_type(path)
        props = self._qom_props.get(path, {})
        if prop in props:
            return props[prop]
        if prop == "type":
            return qom_type
        device = next((d for d in self._devices.values() if d.path == path), None)
        if device is not None:
            if prop in ("realized", "hotplugged", "hotpluggable"):
                return True
            if prop in device.args and prop not in ("driver", "id"):
                return device.args[prop]
        raise _generic(f"Property '{qom_type}.{prop}' not found")

    def _cmd_qom_set(self, call: _Call) -> Any:
        path = str(_arg(call.args, "path")).rstrip("/") or "/"
        prop = _arg(call.args, "property")
        value = _arg(call.args, "value")
        self._qom_type(path)
        self._qom_props.setdefault(path, {})[prop] = value
        return {}

    # Migration.
    def _cmd_migrate_set_capabilities(self, call: _Call) -> Any:
        caps = _arg(call.args, "capabilities")
        for cap in caps:
            name = _arg(cap, "capability")
            if name not in self._migration_caps:
                raise _generic(f"Parameter 'capability' does not accept value '{name}'")
        for cap in caps:
            self._migration_caps[cap["capability"]] = bool(_arg(cap, "state"))
        return {}

    def _cmd_query_migrate_capabilities(self, call: _Call) -> Any:
        return [{"state": state, "capability": name}
                for name, state in self._migration_caps.items()]

    def _migration_event(self, status: str) -> None:
        self._migration_status = status
        if self._migration_caps["events"]:
            self._broadcast_event("MIGRATION", {"status": status})

    def _migration_pass(self, n: int) -> None:
        if self._migration_caps["events"]:
            self._broadcast_event("MIGRATION_PASS", {"pass": n})

    def _cmd_migrate(self, call: _Call) -> Any:
        _arg(call.args, "uri")
        if self._migration_status in ("setup", "active"):
            raise _generic("There's a migration process in progress")
        self._migration_event("setup")  # before the return, as QEMU does
        self._later(self.migrate_delay, self._migration_active)
        return {}

    def _migration_active(self) -> None:
        self._migration_pass(1)
        self._migration_event("active")
        self._later(self.migrate_delay, self._migration_completed)

    def _migration_completed(self) -> None:
        self._migration_pass(2)
        if self.run_state == "running":
            self._broadcast_event("STOP", None)
        self.run_state = "postmigrate"
        self._migration_event("completed")

    def _cmd_query_migrate(self, call: _Call) -> Any:
        status = self._migration_status
        if status is None:
            return {}
        info: dict[str, Any] = {"status": status}
        if status == "completed":
            info.update({"setup-time": 0, "downtime": 0, "total-time": 0,
                         "ram": {"total": 67108864, "transferred": 0, "remaining": 0,
                                 "duplicate": 0, "normal": 0, "mbps": 0}})
        elif status == "active":
            info.update({"setup-time": 0, "total-time": 0,
                         "ram": {"total": 67108864, "transferred": 0,
                                 "remaining": 67108864, "duplicate": 0, "normal": 0,
                                 "mbps": 0}})
        return info


@contextlib.contextmanager
def fake_server(**kwargs: Any) -> Iterator[FakeQMPServer]:
    """Start a :class:`FakeQMPServer` (keyword arguments as its constructor's) and close
    it on exit.

    Example::

        with fake_server(unplug_delay=0.01) as server:
            client = qmplex.connect(server.path, timeout=5)
    """
    server = FakeQMPServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.close()
