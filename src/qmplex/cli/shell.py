"""``qmplex shell``: the interactive QMP shell (history, TAB completion, events shown
as they arrive).

Each line is checked against the schema the shell loaded for completion (when the peer
has ``query-qmp-schema``) before anything is sent: a misspelt command or argument, a
wrong type or enum value is reported as a ``ValidationError`` and QEMU never sees it.
Fed from a pipe or a file, the shell runs every line and exits with the code of the
first line that failed (0 if none did), the code ``qmplex exec`` gives the same
failure: 1 for QEMU's error, 2 for a line that is not ``key=value`` words or JSON or
that the schema rejects, 3 for a lost connection, 4 for a timeout. At a terminal it
exits with 0 (3 if the connection was lost). Lines that mention a password, secret or
cookie (:func:`qmplex.redact.mentions_secret`) are kept out of the history file.

Threads: the main thread reads lines (``input()`` with readline, so Ctrl-C clears the
line as usual) and waits for each command's result; the client's reactor runs in a
second thread, which prints events as they arrive and notices a lost connection. The
main thread reaches the client only through ``reactor.call_soon_threadsafe``.

Three pieces of thread handling remain, each for a reason:

* The reactor thread blocks SIGINT (and SIGWINCH): the kernel hands a terminal's
  signal to any thread that does not block it, and readline drops the typed line (or
  follows a resize) only when the signal interrupts its own wait on the main thread.
* One lock guards the terminal and the prompt's state. Output from the two threads
  never interleaves; a line printed while the user types goes above the prompt, which
  is drawn again with what was typed; and the reactor thread's "is the main thread in
  ``input()``?" cannot race with the main thread entering or leaving it.
* ``input()`` only returns on Enter, EOF or a signal, so when the connection is lost
  while the user sits at the prompt, the reactor thread sends SIGINT to the main
  thread (``pthread_kill``), only while it is in ``input()``, and again every 50 ms
  until it has left (a signal that lands before readline waits is only noted).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shlex
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from ..client import Client
from ..errors import ConnectionLost, QMPError, StateError
from ..events import Event
from ..futures import Future
from ..redact import mentions_secret
from .arguments import parse_arguments
from .catalog import CommandInfo, complete_words, help_text, load_catalog
from .commands import connect
from .exit_codes import (
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    exit_code_for,
)
from .render import error_text, event_line, render_json, use_colour

if TYPE_CHECKING:
    from ..schema import Schema

__all__ = ["Shell", "shell_command"]


class Shell:
    """The interactive loop over a connected client (see the module for its threads).

    Args:
        client: connected; its reactor is idle (the shell runs it in a thread).
        catalog: the commands known, for completion and ``help``.
        source: where the catalog came from (shown by ``help``).
        ns: the parsed command line (``timeout``, ``color``, ``history``,
            ``no_history``).
        schema: the peer's schema, which each line is validated against before it is
            sent (None: no validation, QEMU reports the errors).

    Attributes:
        status: the exit code of the first line that failed (:data:`EXIT_OK` while
            none has); what :meth:`loop` returns when stdin is not a terminal.
    """

    def __init__(self, client: Client, catalog: dict[str, CommandInfo], source: str,
                 ns: argparse.Namespace, schema: Schema | None = None) -> None:
        self.client = client
        self.catalog = catalog
        self.source = source
        self.schema = schema
        self.status = EXIT_OK
        self.timeout: float | None = ns.timeout
        self.interactive = sys.stdin.isatty()
        self.colour = use_colour(ns.color, sys.stdout)
        self.prompt = "qmplex> " if self.interactive else ""
        self.history: str | None = None if ns.no_history else (
            ns.history or os.environ.get("QMPLEX_HISTORY")
            or os.path.join(os.path.expanduser("~"), ".qmplex_history"))
        self._lock = threading.Lock()  # the terminal, _at_prompt and _lost
        self._at_prompt = False  # the main thread is in input() (or about to enter it)
        self._lost: BaseException | None = None
        self._main = threading.get_ident()
        self._matches: list[str] = []
        self._readline: Any = None

    # Printing (any thread).
    def write(self, text: str, stream: IO[str] | None = None) -> None:
        """Print ``text`` and a newline (stdout by default) above the prompt, if shown."""
        stream = stream if stream is not None else sys.stdout
        with self._lock:
            if self._at_prompt and self.interactive and self._readline is not None:
                buf = self._readline.get_line_buffer()
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()
                stream.write(text + "\n")
                stream.flush()
                sys.stdout.write(self.prompt + buf)
            else:
                stream.write(text + "\n")
            stream.flush()
            sys.stdout.flush()

    def on_event(self, event: Event) -> None:
        """Print an event (on the reactor thread)."""
        self.write(event_line(event, self.colour))

    def on_disconnect(self, reason: BaseException | None) -> None:
        """Note a lost connection and end the loop (on the reactor thread)."""
        if reason is None:
            return
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
            interrupt = self._at_prompt
        self.write(f"connection lost: {reason}", sys.stderr)
        if interrupt:
            self._interrupt_prompt()

    def _interrupt_prompt(self) -> None:
        """Make the main thread's input() return, with SIGINT (readline gives up its
        line on EINTR and input() raises KeyboardInterrupt, which loop() catches).

        Sent under the lock, so only while the main thread is between its check of
        ``_lost`` and the end of input(). A signal that lands before readline starts
        waiting is only noted (readline checks for signals when its select() is
        interrupted), so it is sent again every 50 ms until input() has returned.
        """
        with self._lock:
            if not self._at_prompt:
                return
            signal.pthread_kill(self._main, signal.SIGINT)
        self.client.reactor.call_later(0.05, self._interrupt_prompt)

    # Readline.
    def _setup_readline(self) -> None:
        if not self.interactive:
            return
        try:
            import readline
        except ImportError:  # pragma: no cover - readline is part of CPython on Linux
            return
        self._readline = readline
        readline.set_completer_delims(" \t\n")
        readline.set_completer(self._complete)
        readline.parse_and_bind("tab: complete")
        if self.history:
            readline.set_history_length(1000)
            try:
                readline.read_history_file(self.history)
            except OSError:
                pass

    def _forget_line(self, line: str) -> None:
        """Take a line that mentions a secret out of the history (input() added it)."""
        rl = self._readline
        if rl is None or not mentions_secret(line):
            return
        last = rl.get_current_history_length()
        if last > 0 and rl.get_history_item(last) == line:
            rl.remove_history_item(last - 1)

    def _save_history(self) -> None:
        if self._readline is not None and self.history:
            try:
                self._readline.write_history_file(self.history)
            except OSError:
                pass

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            rl = self._readline
            self._matches = complete_words(self.catalog, rl.get_line_buffer(),
                                           rl.get_begidx(), text)
        return self._matches[state] if state < len(self._matches) else None

    # Running commands.
    def _execute(self, name: str, arguments: dict[str, Any] | None) -> Any:
        """Run one command on the reactor thread and wait for it here; Ctrl-C while
        waiting cancels it (on the reactor thread, after it was started)."""
        reactor = self.client.reactor
        box: concurrent.futures.Future[Any] = concurrent.futures.Future()
        started: list[Future[Any]] = []

        def transfer(fut: Future[Any]) -> None:
            exc = fut.exception()
            if exc is not None:
                box.set_exception(exc)
            else:
                box.set_result(fut.result())

        def start() -> None:
            try:
                fut = self.client.execute(name, arguments, timeout=self.timeout)
            except BaseException as exc:
                box.set_exception(exc)
                return
            started.append(fut)
            fut.add_done_callback(transfer)

        def cancel() -> None:
            if started:
                started[0].cancel()

        reactor.call_soon_threadsafe(start)
        try:
            return box.result()
        except KeyboardInterrupt:
            reactor.call_soon_threadsafe(cancel)
            raise

    def _failed(self, code: int) -> None:
        """Note a failed line: the first one's code is the exit code (from a pipe)."""
        if self.status == EXIT_OK:
            self.status = code

    def handle(self, line: str) -> bool:
        """Run one input line; return False when the shell should end.

        A line that fails (cannot be parsed, rejected by the schema, answered with an
        error, timed out, connection lost) prints why on stderr and sets :attr:`status`
        if it is the first.
        """
        self._forget_line(line)
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        head, _, rest = line.partition(" ")
        forced = head.startswith("!")
        name = head[1:] if forced else head
        if not forced:
            if name in ("quit", "exit"):
                return False
            if name in ("help", "?"):
                topic = rest.strip() or None
                self.write(help_text(self.catalog, self.source, topic))
                return True
        rest = rest.strip()
        try:
            words = [rest] if rest.startswith("{") else shlex.split(rest)
            arguments = parse_arguments(words)
        except (UsageError, ValueError) as exc:
            self.write(f"error: {exc}", sys.stderr)
            self._failed(EXIT_USAGE)
            return True
        try:
            if self.schema is not None:
                self.schema.validate(name, arguments)  # nothing is sent if it fails
            result = self._execute(name, arguments)
        except QMPError as exc:
            self.write(error_text(exc), sys.stderr)
            ended = isinstance(exc, (ConnectionLost, StateError))  # StateError: not connected
            self._failed(EXIT_CONNECTION if ended else exit_code_for(exc))
            return not ended
        self.write(render_json(result, self.colour))
        return True

    def _run_reactor(self) -> None:
        # Keep terminal signals for the main thread: a Ctrl-C handled by this thread
        # would not interrupt readline's wait there, so the line would not be dropped.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGWINCH})
        self.client.reactor.run()

    def loop(self) -> int:
        """Read and run lines until quit, EOF or a lost connection; return the exit code:
        from a pipe, the first failed line's (see :attr:`status`), else 0; at a terminal
        0; :data:`EXIT_CONNECTION` for a lost connection unless a line failed first."""
        self._setup_readline()
        reactor = self.client.reactor
        thread = threading.Thread(target=self._run_reactor, name="qmplex-shell-reactor",
                                  daemon=True)
        thread.start()
        if self.interactive:
            version = self.client.version
            self.write(f"Connected to QEMU {version} ({len(self.catalog)} commands). "
                       "Type 'help' for help, 'quit' to leave.")
        try:
            while True:
                try:
                    with self._lock:
                        if self._lost is not None:
                            break
                        self._at_prompt = True
                    try:
                        line = input(self.prompt)
                    finally:
                        with self._lock:
                            self._at_prompt = False
                except EOFError:
                    if self.interactive:
                        self.write("")
                    break
                except KeyboardInterrupt:
                    if self._lost is not None:
                        break
                    self.write("^C" if self.interactive else "")
                    if not self.interactive:
                        return EXIT_INTERRUPTED
                    continue
                try:
                    if not self.handle(line):
                        break
                except KeyboardInterrupt:
                    self.write("interrupted (the command was cancelled)", sys.stderr)
        finally:
            with self._lock:
                self._at_prompt = False  # no more SIGINT from _interrupt_prompt
            reactor.stop()
            thread.join(5)
            self._save_history()
        if self._lost is not None:
            self._failed(EXIT_CONNECTION)
            return self.status if not self.interactive else EXIT_CONNECTION
        return self.status if not self.interactive else EXIT_OK


def shell_command(ns: argparse.Namespace) -> int:
    """``qmplex shell``: connect, load the catalog, run the loop; return the exit code."""
    client = Client()
    try:
        connect(ns, client)
        catalog, source = load_catalog(client, ns.connect_timeout)
        shell = Shell(client, catalog, source, ns, client.schema)
        # Events that came while connecting and loading were not for the shell (it
        # did not exist); from here on, the reactor thread prints them.
        client.on_event(shell.on_event)
        client.on_disconnect(shell.on_disconnect)
        return shell.loop()
    finally:
        client.close()
