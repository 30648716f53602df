"""The public fake QMP server: its socket, its reactor or thread, and its API.

:class:`FakeQMPServer` listens on a Unix socket (or serves one end of a socket pair),
accepts connections and gives each a :class:`~.session.Session`; it holds what every
session shares: the switches (its constructor's arguments, also attributes), the
scripts (:mod:`.script`), the simulated QEMU (:class:`~.model.QemuModel`), the
records of what was received, and the server-wide timers. It runs on a qmplex
:class:`~qmplex.reactor.Reactor` with non-blocking sockets: the reactor given, driven
by the caller, or its own, driven by a daemon thread (:meth:`FakeQMPServer.start`).
Every callback runs on that reactor; it never blocks the reactor and never uses a
lock on the data path.

The thread bridge: public methods may be called from any thread. When the reactor is
driven by another thread they run on it (``call_soon_threadsafe``) and wait until done,
so a scripted reply is in place before the test's next command can arrive; the
``wait_*`` methods sleep on a condition that the reactor thread notifies after each
batch of input and each connection change (or, on an idle shared reactor, drive it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

from ..errors import StateError, Timeout
from ..reactor import Reactor
from . import wire
from .captured import CapturedRelease, captured_release
from .model import DEFAULT_UNPLUG_DELAY, QEMU_OOB_COMMANDS, Call, QemuModel
from .script import MISSING, FakeCommandError, Script, Scripts
from .session import Session, Timers, negotiate

__all__ = ["FakeQMPServer", "fake_server"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long a public method called from another thread waits for the reactor thread.
_SYNC_TIMEOUT: Final = 30.0


def _remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class FakeQMPServer:
    """A scriptable QMP server that behaves like QEMU 7.2 on the wire.

    Args:
        path: the Unix socket to listen on (by :meth:`start`). Default: ``qmp.sock`` in
            a fresh private directory (mode 0700) that :meth:`close` removes.
        reactor: the reactor to run on (the caller drives it). Default: :meth:`start`
            creates one and drives it in a daemon thread.
        version: QEMU's (major, minor, micro) for the greeting and ``query-version``
            (default: ``qemu_version``'s, else (7, 2, 0)).
        package: the greeting's and ``query-version``'s ``package`` string (default:
            ``qemu_version``'s, else ``"qmplex-fake"``).
        qemu_version: a captured QEMU release to be (:data:`CAPTURED_QEMU_VERSIONS`:
            ``"5.0.0"`` ... ``"11.1.3"``; ``"9.2"`` names the 9.2 release captured).
            The server greets with its version and package, answers
            ``query-qmp-schema`` with its schema (and ``query-target``), allows
            ``exec-oob`` for the commands its schema allows it for (unless
            ``oob_commands`` is given), answers ``CommandNotFound`` for commands it
            lacks, and refuses what that QEMU refuses: arguments its schema does not
            accept, and ``device_add`` properties a captured device type does not have
            (``GenericError``, with qmplex's description of the problem). The
            simulated machine is still the idle QEMU 7.2 of the built-in commands.
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
        version: tuple[int, int, int] | None = None,
        package: str | None = None,
        qemu_version: str | tuple[int, int, int] | None = None,
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
        release = None if qemu_version is None else captured_release(qemu_version)
        self._release: CapturedRelease | None = release
        if release is not None:
            if version is not None and tuple(version) != release.version:
                raise ValueError(f"version {version} contradicts qemu_version "
                                 f"{release.name!r}: give one of them")
            version = release.version
            if package is None:
                package = release.package
            if oob_commands is QEMU_OOB_COMMANDS:
                schema = release.schema
                oob_commands = {c for c in schema.command_names if schema.allows_oob(c)}
        self.capabilities = tuple(capabilities)
        self.greeting = greeting
        self.echo_ids = echo_ids
        self.emulate_qemu = emulate_qemu
        self.greeting_delay = greeting_delay
        self.no_greeting = no_greeting
        self.close_after_greeting = close_after_greeting
        self.oob_commands = None if oob_commands is None else frozenset(oob_commands)

        self.received: list[dict[str, Any]] = []
        self.bad_lines: list[bytes] = []
        self.received_fds: list[int] = []
        self.handler_errors: list[BaseException] = []

        self._reactor = reactor
        self._own_reactor = reactor is None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._bound = False  # the socket file at path is ours to remove
        self._started = False
        self._closed = False
        self._cond = threading.Condition()
        self._waiters = 0

        # Shared with the sessions (session.py reads and updates these).
        self._sessions: list[Session] = []
        self._commands: list[str] = []
        self._scripts = Scripts()
        self._stalled = False
        self._stall_reading = False
        self._timers = Timers()  # the server's own: cancelled by close()

        self._model = QemuModel(
            version=(7, 2, 0) if version is None else version,
            package="qmplex-fake" if package is None else package, unplug_delay=unplug_delay,
            migrate_delay=migrate_delay, max_cpus=max_cpus, emit=self._broadcast_event,
            later=self._later, quit=self._quit,
            commands=lambda: self._handlers.keys() | self._scripts.names(),
        )
        handlers: dict[str, Callable[[Call], Any]] = {
            "qmp_capabilities": lambda call: negotiate(call, self.capabilities),
        }
        if emulate_qemu:
            handlers.update(self._model.handlers())
            if release is not None:
                handlers["query-qmp-schema"] = lambda call: release.schema_info
                handlers["query-target"] = lambda call: {"arch": "x86_64"}
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
        for session in list(self._sessions):
            session.close()
        self._timers.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            self._require_reactor().remove_reader(listener.fileno())
            listener.close()

    def __enter__(self) -> FakeQMPServer:
        """Start the server unless it was started, and return it; leaving the ``with``
        block calls :meth:`close`.
        """
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Call :meth:`close` (exceptions propagate)."""
        self.close()

    @property
    def reactor(self) -> Reactor | None:
        """The reactor the server runs on (None before :meth:`start` without one)."""
        return self._reactor

    @property
    def release(self) -> CapturedRelease | None:
        """The captured QEMU release the server is (``qemu_version``), or None."""
        return self._release

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
            self._sync(self._add_session, ours)
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
        script = Script(
            handler, returns, None if error is None else (error[0], error[1]), delay, never,
            tuple((name, data) for name, data in events),
            tuple((name, data, after) for name, data, after in events_after),
            close_mid_line, reply_without_id, times,
        )  # fmt: skip
        self._sync(self._scripts.set, command, script)

    def off(self, command: str) -> None:
        """Remove the script of ``command`` (the built-in behaviour applies again)."""
        self._sync(self._scripts.remove, command)

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
        return len(self._sessions)

    # ---------------------------------------------------------------- faults
    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is to every connected client (garbage, partial lines,
        over-long lines, NULs...), greeted or not."""
        self._sync(self._send_raw, bytes(data))

    def _send_raw(self, data: bytes) -> None:
        for session in list(self._sessions):
            session.write(data)

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
        for session in list(self._sessions):
            session.update_reading()

    def resume(self) -> None:
        """Undo :meth:`stall`: write what is pending, then execute what was received."""
        self._sync(self._resume)

    def _resume(self) -> None:
        self._stalled = False
        for session in list(self._sessions):
            session.update_reading()
            session.flush()
            if session.greeted:
                session.replay()

    def drop_clients(self) -> None:
        """Close every client connection now (the clients see EOF); pending output is
        discarded."""
        self._sync(self._drop_clients)

    def _drop_clients(self) -> None:
        for session in list(self._sessions):
            session.close()

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
            idle: Reactor = reactor  # driven by nobody: drive it while waiting
            _poll(predicate, deadline, timeout, lambda left: idle.run_once(min(left, 0.05)))
            return
        with self._cond:
            self._waiters += 1
            try:
                _poll(predicate, deadline, timeout, self._cond.wait)
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
        self.wait_until(lambda: len(self._sessions) == n, timeout)

    def _notify(self) -> None:
        # Reading _waiters without the lock is safe: a waiter increments it, then checks
        # its predicate under the lock, after any state change made before this read.
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------------ emulated state
    @property
    def version(self) -> tuple[int, int, int]:
        """QEMU's (major, minor, micro), in the greeting and ``query-version``."""
        return self._model.version

    @version.setter
    def version(self, value: tuple[int, int, int]) -> None:
        self._model.version = value

    @property
    def package(self) -> str:
        """The ``package`` string of the greeting and ``query-version``."""
        return self._model.package

    @package.setter
    def package(self, value: str) -> None:
        self._model.package = value

    @property
    def unplug_delay(self) -> float | None:
        """Seconds between a ``device_del`` reply and ``DEVICE_DELETED`` (None: never)."""
        return self._model.unplug_delay

    @unplug_delay.setter
    def unplug_delay(self, value: float | None) -> None:
        self._model.unplug_delay = value

    @property
    def migrate_delay(self) -> float:
        """Seconds between the steps of a migration."""
        return self._model.migrate_delay

    @migrate_delay.setter
    def migrate_delay(self, value: float) -> None:
        self._model.migrate_delay = value

    @property
    def run_state(self) -> str:
        """The run state ``query-status`` reports (``"prelaunch"`` at first)."""
        return self._model.run_state

    @run_state.setter
    def run_state(self, value: str) -> None:
        self._model.run_state = value

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """Block nodes: node-name -> ``blockdev-add`` arguments (the live table)."""
        return self._model.tables["block"]

    @property
    def netdevs(self) -> dict[str, dict[str, Any]]:
        """Netdevs: id -> ``netdev_add`` arguments (the live table)."""
        return self._model.tables["netdev"]

    @property
    def chardevs(self) -> dict[str, dict[str, Any]]:
        """Chardevs: id -> ``chardev-add`` arguments (the live table)."""
        return self._model.tables["chardev"]

    @property
    def objects(self) -> dict[str, dict[str, Any]]:
        """User-created objects: id -> ``object-add`` arguments (the live table)."""
        return self._model.tables["object"]

    @property
    def devices(self) -> dict[str, dict[str, Any]]:
        """Devices: id (QOM path if added without one) -> ``device_add`` arguments
        (a copy). A device leaves this table when ``device_del`` is answered, as in
        QEMU, though its drive stays in use until ``DEVICE_DELETED``."""
        return self._model.device_args()

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

    def _later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` after ``delay`` s, unless the server closes first."""
        self._timers.later(self._require_reactor(), delay, fn, *args)

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
            self._add_session(sock)

    def _add_session(self, sock: socket.socket) -> None:
        session = Session(self, self._require_reactor(), sock)
        self._sessions.append(session)
        session.start()
        self._notify()

    def _forget(self, session: Session) -> None:
        """Called by a session that closes."""
        self._sessions.remove(session)

    def _emulates(self, name: str) -> bool:
        """True if ``name`` is a built-in command (of the captured release, if any)."""
        if name not in self._handlers:
            return False
        release = self._release
        return release is None or name == "qmp_capabilities" or (
            release.schema.has_command(name))

    def _refusal(self, name: str, args: Mapping[str, Any]) -> FakeCommandError | None:
        """How the captured release would refuse this command, or None (see
        :meth:`CapturedRelease.refusal`); commands it lacks are only ever scripted."""
        release = self._release
        if release is None or not release.schema.has_command(name):
            return None
        return release.refusal(name, args)

    def _broadcast_event(self, name: str, data: Mapping[str, Any] | None) -> None:
        # QEMU sends events only to monitors that left capabilities negotiation.
        line = wire.event_line(name, data)
        for session in list(self._sessions):
            if session.negotiated:
                session.write(line)

    def _quit(self) -> None:
        # QEMU exits: every connection ends once its pending output is written.
        for session in list(self._sessions):
            session.close_after_output()


def _poll(predicate: Callable[[], bool], deadline: float, timeout: float,
          wait: Callable[[float], object]) -> None:
    """Call ``wait(seconds left)`` until ``predicate()`` is true or ``deadline`` passes.

    Raises:
        Timeout: the deadline (``timeout`` seconds after the start) passed.
    """
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(f"condition not reached within {timeout} s")
        wait(remaining)


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
