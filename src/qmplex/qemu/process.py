"""QemuProcess: one QEMU, started, restarted and stopped (see the package docstring)."""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import Cancelled, StateError
from ..futures import Future
from ..reactor import Reactor
from .binary import DEFAULT_BINARY, default_args
from .child import Child
from .errors import STDERR_TAIL_CHARS, QemuError, describe_exit
from .launch import Launch, Plan
from .stop import Stop, stop_blocking
from .workspace import StrPath, Workspace, qemu_opt_escape

if TYPE_CHECKING:
    from ..client import Client
    from ..core.messages import QMPVersion

__all__ = ["QemuProcess"]


class _State(enum.Enum):
    NEW = "not started"
    STARTING = "starting"
    RUNNING = "running"  # started; QEMU may have exited by itself since
    STOPPING = "stopping"
    STOPPED = "stopped"  # stop(), kill(), or a failed start: restart() may follow


class QemuProcess:
    """One QEMU process with QMP monitors on Unix sockets.

    Use it as a context manager (``with QemuProcess(...) as vm:``), which starts it and
    stops it, or call :meth:`start` and :meth:`stop` yourself; :meth:`launch`,
    :meth:`shutdown` and :meth:`relaunch` are their non-blocking forms, which return a
    :class:`~qmplex.Future` completed on the reactor. :meth:`restart` runs a new QEMU
    with the same command line and the same socket paths. Its methods are not
    thread-safe: call them from one thread at a time (which need not be the thread
    driving the reactor).

    Monitors: the main one is at :attr:`qmp_path`, each extra one at
    :meth:`monitor_path`; QEMU serves one client at a time on each, so give every
    client of yours a monitor of its own. :attr:`client`, the launcher's own client,
    uses a further monitor in the private directory and never takes one of yours.

    Args:
        binary: the QEMU binary (name on ``PATH`` or path).
        args: the machine part of the command line, replacing the default
            (see :func:`default_args`; ``machine``, ``memory_mib`` and ``paused`` are
            then ignored). The ``-qmp`` options are always added by the launcher.
        machine: the ``-machine`` type of the default command line.
        memory_mib: guest memory of the default command line, in MiB.
        paused: pass ``-S`` in the default command line (the guest never runs; status
            ``prelaunch``).
        extra_args: appended after the machine part (default or ``args``), e.g.
            ``["-device", "virtio-scsi-pci,id=scsi0"]``.
        reactor: the reactor the launch, the exit watch and :attr:`client` run on (None:
            a private one, made at the first start and closed by :meth:`stop`).
        start_timeout: seconds to wait for QEMU to answer on its monitor, and then for
            the client's handshake.
        connect: connect :attr:`client` once QEMU is ready.
        name: a label: passed to QEMU as ``-name`` and shown in errors and ``repr``.
        qmp_path: where the main monitor's socket goes (None: ``qmp.sock`` in the
            private directory). Its directory must exist; it is checked before each
            start (see :class:`~qmplex.qemu.SocketPathError`), and only the socket file
            QEMU made is removed afterwards, never the directory.
        extra_monitors: more monitors, by name (1 to 32 letters, digits, ``-`` or
            ``_``). A sequence of names puts each beside the main one (``vm1.sock`` ->
            ``vm1-NAME.sock``; ``qmp-NAME.sock`` in the private directory); a mapping
            from name to path puts each where you say.

    Raises:
        SocketPathError: a socket path is longer than :data:`~qmplex.qemu.MAX_UNIX_PATH`
            bytes.
        ValueError: a monitor name is invalid or given twice, or two monitors share a path.
    """

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        args: Sequence[str] | None = None,
        *,
        machine: str = "pc",
        memory_mib: int = 64,
        paused: bool = True,
        extra_args: Sequence[str] = (),
        reactor: Reactor | None = None,
        start_timeout: float = 10.0,
        connect: bool = True,
        name: str | None = None,
        qmp_path: StrPath | None = None,
        extra_monitors: Sequence[str] | Mapping[str, StrPath] = (),
    ) -> None:
        if isinstance(args, str) or isinstance(extra_args, str):
            raise TypeError("args and extra_args are sequences of arguments, not a string")
        if isinstance(extra_monitors, str):
            raise TypeError("extra_monitors is a sequence of names (or a mapping), not a string")
        self.binary = binary
        self.name = name
        self.start_timeout = start_timeout
        self._connect = connect
        self._connect_now = connect  # what the current (or next) run does
        self._reactor = reactor
        self._own_reactor = False
        machine_args = list(args) if args is not None else default_args(machine, memory_mib, paused)
        if name is not None:
            machine_args += ["-name", qemu_opt_escape(name)]
        self._machine_args = machine_args + list(extra_args)
        self._files = Workspace(qmp_path, extra_monitors)
        #: The launcher's own client (``connect=True``), on a monitor of its own;
        #: reconnected by :meth:`restart`, closed by :meth:`stop`.
        self.client: Client | None = None
        self._state = _State.NEW
        self._child: Child | None = None
        self._cleaned: Child | None = None  # the child whose files are cleaned up
        self._launch: Launch | None = None
        self._pending: Future[QemuProcess] | None = None  # a start or restart under way
        self._frozen = False

    # ----------------------------------------------------------------- properties

    @property
    def reactor(self) -> Reactor | None:
        """The reactor of the launch, the exit watch and :attr:`client` (None before the
        first start when none was given: a private one is made then)."""
        return self._reactor

    @property
    def connects(self) -> bool:
        """Whether :meth:`start` connects :attr:`client` by default."""
        return self._connect

    @property
    def qmp_path(self) -> str:
        """The main monitor's socket path (the socket exists only while QEMU runs).

        Raises:
            StateError: it is in the private directory, and QEMU was never started.
        """
        return self.monitor_path(None)

    @property
    def monitor_names(self) -> tuple[str, ...]:
        """The names of the extra monitors, in the order given."""
        return self._files.names

    def monitor_path(self, name: str | None = None) -> str:
        """The socket path of monitor ``name`` (None: the main one, :attr:`qmp_path`).

        Raises:
            KeyError: there is no extra monitor of that name.
            StateError: it is in the private directory, and QEMU was never started.
        """
        return self._files.monitor_path(name)

    @property
    def pid(self) -> int:
        """QEMU's process id (of the current or last run).

        Raises:
            StateError: QEMU was never spawned.
        """
        return self._require_child("pid").pid

    @property
    def argv(self) -> list[str]:
        """The full command line QEMU was (or will be) started with (``PRIVATE`` stands
        for the private directory before it is made)."""
        return [self.binary, *self._machine_args, *self._files.qmp_options()]

    @property
    def returncode(self) -> int | None:
        """The exit status once QEMU has exited (negative: killed by that signal), else None.

        Reading it reaps an exited process, so it never stays a zombie.
        """
        return self._child.poll() if self._child is not None else None

    def alive(self) -> bool:
        """Whether QEMU was started and has not exited (a frozen QEMU is alive)."""
        return self._child is not None and self._child.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def launch(self, *, connect: bool | None = None) -> Future[QemuProcess]:
        """Start QEMU without blocking: the non-blocking form of :meth:`start`.

        Spawning happens at once (on the reactor thread, or on this one while nobody
        drives the reactor); waiting for the monitor is done by the reactor (timers,
        and a pidfd that tells at once when QEMU exits), so one reactor thread can start
        any number of QEMUs at a time and keep serving everything else meanwhile. The
        reactor must be driven for the future to complete: ``result()`` does it in the
        blocking style, ``qmplex.aio.start`` attaches it to the running asyncio loop.
        :attr:`pid` is known once QEMU is spawned: when this returns, unless another
        thread drives the reactor (then within its next pass).

        Args:
            connect: connect :attr:`client` (None: as the constructor said).

        Returns:
            A future on :attr:`reactor` completed with this process once QEMU answered
            (and :attr:`client` is connected). It fails with
            :class:`~qmplex.qemu.SocketPathError` (nothing was started),
            :class:`~qmplex.qemu.QemuError` (QEMU could not be run, exited during
            start-up, or did not answer within ``start_timeout``: its exit status and
            the end of its stderr are in the error) or the client's connect error; in
            every case QEMU is reaped and the private directory removed first.
            Cancelling it kills QEMU.

        Raises:
            StateError: the process was already started (use :meth:`restart`), or
                ``reactor`` is closed.
        """
        if self._state is not _State.NEW:
            raise StateError("QemuProcess.launch: already started; use restart() to run "
                             "QEMU again")
        return self._begin(lambda out: self._start_run(out), connect)

    def start(self, *, connect: bool | None = None) -> QemuProcess:
        """Start QEMU and wait until its QMP monitor answers.

        With ``connect=True``, :attr:`client` is then connected (and negotiated) on
        :attr:`reactor`. In a coroutine, use ``await qmplex.aio.start(vm)``; on a
        reactor thread, :meth:`launch`.

        Args:
            connect: connect :attr:`client` (None: as the constructor said).

        Returns:
            self, so ``vm = QemuProcess(...).start()`` works.

        Raises:
            QemuError: QEMU could not be run, exited during start-up (the message names
                the exit status and ends with its stderr, also in ``.returncode`` and
                ``.stderr``), or did not answer within ``start_timeout`` (it is then
                killed).
            SocketPathError: a socket path cannot be used (nothing was started).
            StateError: the process was already started, or this is a callback of its
                reactor (use :meth:`launch` there).
            QMPError: the client could not connect although QEMU is running (QEMU is
                killed first).
        """
        self._refuse_on_reactor("start", "launch")
        return self.launch(connect=connect).result()

    def relaunch(self, timeout: float = 5.0) -> Future[QemuProcess]:
        """Restart without blocking: the non-blocking form of :meth:`restart`.

        The running QEMU is stopped on the reactor as by :meth:`shutdown` (its files
        and :attr:`client` are kept), then started again as by :meth:`launch`.

        Returns:
            A future on :attr:`reactor` completed with this process once the new QEMU
            answered (and :attr:`client` is reconnected); it fails as :meth:`launch`'s
            does. Cancelling it while the old QEMU stops lets that stop finish and
            starts nothing; cancelling it later kills the new QEMU.

        Raises:
            StateError: never started, a start or stop is under way, or the reactor
                given to the constructor is closed.
        """
        if self._state is _State.NEW:
            raise StateError("QemuProcess.relaunch: never started; start it first")
        if self._state in (_State.STARTING, _State.STOPPING):
            raise StateError(f"QemuProcess.relaunch: QEMU is {self._state.value}")
        return self._begin(lambda out: self._restart_run(out, timeout), None)

    def restart(self, timeout: float = 5.0) -> QemuProcess:
        """Stop QEMU (as :meth:`stop` does) and start a new one with the same command line
        and the same socket paths.

        Clients of yours with a :class:`~qmplex.ReconnectPolicy` see their connection
        drop (``on_disconnect``) and connect again by themselves to the same path
        (``on_reconnect``). :attr:`client` stays the same object: it is reconnected
        (its event subscriptions carry over); after :meth:`stop` closed it, a new one is
        made (if the process connects). Also valid after QEMU exited by itself, after
        :meth:`kill`, after :meth:`stop` and after a failed start.

        Args:
            timeout: seconds each clean step of stopping is given (see :meth:`stop`).

        Returns:
            self, running again.

        Raises:
            As :meth:`start`; StateError also when never started, or while a start or
            stop is under way.
        """
        self._refuse_on_reactor("restart", "relaunch")
        return self.relaunch(timeout).result()

    def shutdown(self, timeout: float = 5.0) -> Future[int]:
        """Stop without blocking: the non-blocking form of :meth:`stop`.

        Returns:
            A future on :attr:`reactor` completed with QEMU's exit status once it is
            reaped and everything is released (the private reactor, if any, closes
            right after).

        Raises:
            StateError: QEMU was never spawned.
        """
        self._require_child("shutdown")
        reactor = self._reactor
        assert reactor is not None
        if reactor.closed:
            done: Future[int] = Future()
            done.set_result(self._stop_blocking(timeout))
            return done
        out: Future[int] = Future(reactor)
        reactor.run_in_reactor(self._shutdown_run, out, timeout)
        return out

    def stop(self, timeout: float = 5.0) -> int:
        """Stop QEMU cleanly if possible, and release everything.

        Steps: a frozen QEMU is thawed; with a connected :attr:`client`, ``quit`` is
        sent and the exit awaited; then SIGTERM and a wait; then SIGKILL. Finally the
        client is closed, the socket files QEMU made are removed (never a directory of
        yours), the private directory is removed and a private reactor closed. Each
        clean step waits at most ``timeout`` seconds. Calling it again returns the same
        exit status. A start under way is cancelled (QEMU is killed).

        May be called from any thread. Inside a callback of the reactor it cannot wait
        for ``quit`` and goes straight to signals (which block briefly); there,
        :meth:`shutdown` does not block.

        Returns:
            QEMU's exit status (0 after ``quit``, and also after SIGTERM, on which QEMU
            exits cleanly; ``-9`` after SIGKILL).

        Raises:
            StateError: QEMU was never spawned.
        """
        self._require_child("stop")
        reactor = self._reactor
        if reactor is None or reactor.closed or reactor.in_reactor_thread():
            return self._stop_blocking(timeout)
        return self.shutdown(timeout).result()

    def kill(self) -> None:
        """SIGKILL QEMU now, reap it and remove its socket files and private directory.

        Meant for fault tests: :attr:`client`, if any, is left open so the test can
        watch it see the connection drop; :meth:`stop` (or leaving the ``with``
        block) closes it, and :meth:`restart` reconnects it.

        Raises:
            StateError: QEMU was never spawned.
        """
        child = self._require_child("kill")
        child.signal(signal.SIGKILL)
        child.popen.wait()
        self._frozen = False
        self._on_reactor(lambda: self._release_run(child, final=True, close_client=False))
        self._release_reactor()

    def freeze(self) -> None:
        """Stop QEMU with SIGSTOP: its sockets stay open but nothing is answered.

        Raises:
            StateError: QEMU is not running.
        """
        self._require_alive("freeze").signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """Let a frozen QEMU continue (SIGCONT).

        Raises:
            StateError: QEMU is not running.
        """
        self._require_alive("thaw").signal(signal.SIGCONT)
        self._frozen = False

    # ------------------------------------------------------------ exit and stderr

    def wait_exit(self) -> Future[int]:
        """A future completed with the exit status when the current QEMU exits (negative:
        the signal that killed it), on :attr:`reactor`, which must be driven.

        Each call returns a new future (cancelling it affects nobody else). With
        :meth:`exit_error` it tells why a client's connection was lost::

            client.on_disconnect(lambda reason: vm.wait_exit().add_done_callback(
                lambda _: log.warning("%s", vm.exit_error())))

        Raises:
            StateError: QEMU was never spawned.
        """
        child = self._require_child("wait_exit")
        out: Future[int] = Future(self._reactor)
        child.exited.add_done_callback(lambda exited: out.set_result(exited.result()))
        return out

    def exit_error(self) -> QemuError | None:
        """How the current (or last) QEMU ended, as an error to log or raise; None while it
        runs or when it was never spawned.

        Its message names the exit status or the signal ("was killed by SIGKILL (signal
        9)") and ends with QEMU's last lines of stderr; ``.returncode`` and ``.stderr``
        hold them. Also given for a clean exit (status 0).
        """
        returncode = self.returncode
        if returncode is None:
            return None
        return QemuError(f"{self._label()} {describe_exit(returncode)}",
                         returncode=returncode, stderr=self.stderr_tail())

    def stderr_tail(self, limit: int = STDERR_TAIL_CHARS) -> str:
        """Return at most the last ``limit`` characters the current (or last) QEMU wrote
        to stderr.

        Works also after :meth:`stop` or :meth:`kill` (from a copy of the last 64 KiB
        kept before the file was removed). Invalid UTF-8 is replaced.
        """
        if limit <= 0:
            return ""
        data = self._files.read_stderr(limit * 4)  # enough bytes for ``limit`` characters
        return data.decode("utf-8", "replace")[-limit:]

    def __enter__(self) -> QemuProcess:
        """Call :meth:`start` and return the process; leaving the ``with`` block calls
        :meth:`stop` (if it was started).
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Call :meth:`stop` if QEMU was started (exceptions propagate)."""
        if self._child is not None:
            self.stop()

    def __repr__(self) -> str:
        """Show the name and the process state: not started, pid (and frozen), or exit status
        (for logs; not a stable format).
        """
        label = f" {self.name!r}" if self.name is not None else ""
        child = self._child
        if child is None:
            state = self._state.value
        elif child.poll() is None:
            state = f"pid {child.pid}" + (" frozen" if self._frozen else "")
        else:
            state = f"exited {child.popen.returncode}"
        return f"<QemuProcess{label} {state}>"

    # ------------------------------------------------- internals: on the reactor

    def _begin(self, run: Callable[[Future[QemuProcess]], None],
               connect: bool | None) -> Future[QemuProcess]:
        """Make the reactor if needed, and hand ``run(out)`` to its thread."""
        reactor = self._reactor
        if reactor is None or (self._own_reactor and reactor.closed):
            reactor = self._reactor = Reactor()
            self._own_reactor = True
        elif reactor.closed:
            raise StateError("QemuProcess: its reactor is closed")
        if connect is not None:
            self._connect_now = connect
        elif self._state is _State.NEW:
            self._connect_now = self._connect
        out: Future[QemuProcess] = Future(reactor, on_cancel=self._cancel_launch)
        self._state = _State.STARTING
        self._pending = out
        reactor.run_in_reactor(run, out)
        return out

    def _cancel_launch(self) -> None:
        launch = self._launch
        if launch is not None:
            launch.future.cancel()

    def _restart_run(self, out: Future[QemuProcess], timeout: float) -> None:
        """Reactor thread: stop the running QEMU (keeping the client and the directory),
        wait until the client saw it go, then start anew."""
        child = self._child
        if child is None or self._cleaned is child:
            self._start_run(out)
            return
        reactor = self._reactor
        assert reactor is not None
        stop = Stop(reactor, child, self.client, timeout, self._frozen)

        def stopped(_: Future[int]) -> None:
            self._frozen = False
            self._release_run(child, final=False, close_client=False)
            self._when_client_down(timeout, lambda: self._start_run(out))

        stop.future.add_done_callback(stopped)
        stop.start()

    def _when_client_down(self, timeout: float, then: Callable[[], None]) -> None:
        """Call ``then()`` once :attr:`client` saw its connection end (at once if it has
        none); at most ``timeout`` seconds later in any case."""
        client = self.client
        from ..client import ClientState  # the launcher imports the client only if used

        if client is None or client.state not in (ClientState.READY, ClientState.CONNECTING):
            then()
            return
        assert self._reactor is not None
        called: list[bool] = []

        def once(*_: object) -> None:
            if not called:
                called.append(True)
                sub.cancel()
                guard.cancel()
                then()

        sub = client.on_disconnect(once)
        guard = self._reactor.call_later(timeout, once)

    def _start_run(self, out: Future[QemuProcess]) -> None:
        """Reactor thread: make the directory, then launch (see :class:`Launch`)."""
        if out.done():  # cancelled while the old QEMU stopped
            if self._state is _State.STARTING:  # (else a shutdown is releasing everything)
                self._state = _State.STOPPED
                self._files.remove()
                self._release_reactor()
            return
        reactor = self._reactor
        assert reactor is not None
        files = self._files
        try:
            files.make()
        except QemuError as exc:
            self._state = _State.STOPPED
            out.set_exception(exc)
            self._release_reactor()
            return
        assert files.directory is not None
        plan = Plan(
            argv=tuple(self.argv),
            stderr_path=files.stderr_path,
            private_dir=files.directory,
            public_paths=files.public_paths,
            probe_path=files.launcher_path,
            timeout=self.start_timeout,
            label=self._label(),
        )
        launch = self._launch = Launch(reactor, plan, self.stderr_tail)
        launch.future.add_done_callback(lambda f: self._launched(out, launch, f))
        launch.start()
        if launch.child is not None:
            self._child = launch.child

    def _launched(self, out: Future[QemuProcess], launch: Launch, done: Future[Child]) -> None:
        self._launch = None
        if done.cancelled() or done.exception() is not None:
            error = done.exception() or Cancelled("the start was cancelled")
            self._fail_run(out, launch.child, error)
            return
        child = done.result()
        self._files.record()
        self._connect_client(out, child)

    def _connect_client(self, out: Future[QemuProcess], child: Child) -> None:
        """Reactor thread: connect (or reconnect) :attr:`client`, then complete ``out``."""
        from ..client import Client, ClientState

        client = self.client
        reactor = self._reactor
        assert reactor is not None
        path = self._files.launcher_path
        if client is not None and client.state is ClientState.DISCONNECTED:
            connecting = client.reconnect(timeout=self.start_timeout)
        elif client is None or client.state is ClientState.CLOSED:
            if not self._connect_now:
                self._state = _State.RUNNING
                out.set_result(self)
                return
            client = Client(reactor, name=self.name)
            connecting = client.connect(path, timeout=self.start_timeout)
        else:  # still connected to the old QEMU somehow: start afresh
            client.close()
            client = Client(reactor, name=self.name)
            connecting = client.connect(path, timeout=self.start_timeout)

        def connected(f: Future[QMPVersion]) -> None:
            error = f.exception()
            if error is None and out.done():  # a stop came first: it ends this QEMU
                if client is not self.client:
                    client.close()
                return
            if error is None:
                self.client = client
                self._state = _State.RUNNING
                out.set_result(self)
                return
            if client is not self.client:
                client.close()
            child.signal(signal.SIGKILL)

            def reaped(exited: Future[int]) -> None:
                returncode = exited.result()
                reason: BaseException = error
                if returncode != -9:  # it exited by itself
                    reason = QemuError(
                        f"{self._label()} {describe_exit(returncode)} while the client "
                        "was connecting", returncode=returncode, stderr=self.stderr_tail())
                    reason.__cause__ = error
                self._fail_run(out, child, reason)

            child.exited.add_done_callback(reaped)

        connecting.add_done_callback(connected)

    def _fail_run(self, out: Future[QemuProcess], child: Child | None,
                  error: BaseException) -> None:
        """Reactor thread: a start failed; once QEMU is reaped, release everything and
        fail ``out``."""
        def release(_: object = None) -> None:
            if child is not None:
                self._release_run(child, final=True, close_client=False)
            else:
                self._files.remove()
            self._state = _State.STOPPED
            if not out.done():
                out.set_exception(error)
            self._release_reactor()

        if child is not None and not child.exited.done():
            child.exited.add_done_callback(release)
        else:
            release()

    def _shutdown_run(self, out: Future[int], timeout: float) -> None:
        """Reactor thread: stop (see :class:`Stop`), then release everything."""
        pending, self._pending = self._pending, None
        self._state = _State.STOPPING
        if pending is not None:
            pending.cancel()  # a start under way: QEMU is killed
        child = self._child
        assert child is not None and self._reactor is not None
        if self._cleaned is child:  # stopped or killed already (so reaped)
            self._close_client()
            self._state = _State.STOPPED
            out.set_result(stop_blocking(child, timeout, False))
            self._release_reactor()
            return
        stop = Stop(self._reactor, child, self.client, timeout, self._frozen)

        def stopped(f: Future[int]) -> None:
            self._frozen = False
            self._close_client()
            self._release_run(child, final=True, close_client=True)
            self._state = _State.STOPPED
            out.set_result(f.result())
            self._release_reactor()

        stop.future.add_done_callback(stopped)
        stop.start()

    def _stop_blocking(self, timeout: float) -> int:
        """Stop with signals in this thread (no reactor can help), then release."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        child = self._require_child("stop")
        returncode = stop_blocking(child, timeout, self._frozen)
        self._frozen = False
        self._close_client()
        self._release_run(child, final=True, close_client=True)
        self._state = _State.STOPPED
        self._release_reactor()
        return returncode

    def _release_run(self, child: Child, *, final: bool, close_client: bool) -> None:
        """Reactor thread (or a closed reactor), QEMU reaped: finish its exit watch, keep
        the end of its stderr, remove the socket files it made (and with ``final`` the
        private directory). Idempotent."""
        child.finish()
        if close_client:
            self._close_client()
        if final:
            self._state = _State.STOPPED
        if self._cleaned is child:
            if final:
                self._files.remove()
            return
        self._cleaned = child
        self._files.release(final)
        child.forget()

    # ------------------------------------------------------------------- internals

    def _refuse_on_reactor(self, what: str, instead: str) -> None:
        reactor = self._reactor
        if reactor is not None and not reactor.closed and reactor.in_reactor_thread():
            raise StateError(f"QemuProcess.{what}() blocks, and this is a callback of its "
                             f"reactor (it would stop it): use {instead}() there")

    def _on_reactor(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` as reactor-thread code and return once it ran."""
        reactor = self._reactor
        if reactor is None or reactor.closed:
            fn()
            return
        ran: Future[None] = Future(reactor)

        def run() -> None:
            try:
                fn()
            finally:
                ran.set_result(None)

        if not reactor.run_in_reactor(run):
            ran.result()

    def _release_reactor(self) -> None:
        """Close the private reactor when nothing of ours lives on it any more."""
        reactor = self._reactor
        if self._own_reactor and reactor is not None and self.client is None:
            reactor.close()

    def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _require_child(self, what: str) -> Child:
        if self._child is None:
            raise StateError(f"QemuProcess.{what}: the process was never started")
        return self._child

    def _require_alive(self, what: str) -> Child:
        child = self._require_child(what)
        if child.poll() is not None:
            raise StateError(f"QemuProcess.{what}: QEMU has exited ({child.popen.returncode})")
        return child

    def _label(self) -> str:
        return f"QEMU {self.name!r}" if self.name is not None else f"QEMU ({self.binary})"
