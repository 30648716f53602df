"""The ``qmplex`` command line (also ``python -m qmplex``).

This module belongs to the tools layer: it parses the command line, connects a
:class:`~qmplex.client.Client` and prints what comes back. It holds no QMP logic of its
own; the bulk hot-plug demo lives in :mod:`qmplex.demo`.

Sub-commands::

    qmplex exec SOCKET COMMAND [key=value ... | JSON]   run one command, print its return
    qmplex events SOCKET [--name NAME ...] [--count N] [--timeout S]
                                                        print events, one JSON per line
    qmplex shell SOCKET                                 interactive, with completion
    qmplex demo [--disks N] [--fake] [--qemu BINARY]    bulk SCSI hot-plug demo

``SOCKET`` is a Unix socket path, or ``HOST:PORT`` / ``tcp:HOST:PORT`` for a TCP
monitor (``[::1]:4444`` for IPv6).

Command arguments are either one JSON object, or ``key=value`` words whose value is
taken as JSON when it parses as JSON (``lun=3``, ``read-only=true``,
``enable='["oob"]'``) and as a string otherwise (``driver=null-co``); quote a JSON
string to keep digits a string (``id='"42"'``).

Exit codes (:data:`EXIT_CODES`):

====  =======================================================================
code  meaning
====  =======================================================================
0     success
1     QEMU answered with an error (printed as ``CLASS: desc`` on stderr)
2     usage error: unknown option, bad arguments, arguments that are not JSON
3     connection or protocol error: cannot connect, not a QMP peer, connection lost
4     timeout: no reply, no greeting, or fewer events than ``--count`` in time
5     the demo failed: QEMU could not be started, or a check after a phase failed
130   interrupted (Ctrl-C)
====  =======================================================================
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import logging
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO

import orjson

from .client import Address, Client
from .errors import (
    CommandError,
    ConnectError,
    ConnectionLost,
    ProtocolError,
    QMPError,
    StateError,
    Timeout,
    ValidationError,
)
from .events import Event
from .futures import Future

if TYPE_CHECKING:
    from .demo import DemoResult
    from .schema import Schema

__all__ = [
    "EXIT_OK",
    "EXIT_COMMAND_ERROR",
    "EXIT_USAGE",
    "EXIT_CONNECTION",
    "EXIT_TIMEOUT",
    "EXIT_DEMO_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "build_parser",
    "event_to_json",
    "exit_code_for",
    "main",
    "parse_address",
    "parse_arguments",
    "render_json",
]

logger = logging.getLogger(__name__)

#: Success.
EXIT_OK = 0
#: QEMU answered the command with an error.
EXIT_COMMAND_ERROR = 1
#: Bad options or arguments (also argparse's own code).
EXIT_USAGE = 2
#: Cannot connect, the peer is not QMP, or the connection was lost.
EXIT_CONNECTION = 3
#: A deadline passed.
EXIT_TIMEOUT = 4
#: The demo failed (QEMU could not be started, or a check failed).
EXIT_DEMO_FAILED = 5
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: Every exit code and what it means (shown by ``--help``).
EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "success",
    EXIT_COMMAND_ERROR: "QEMU answered with an error (CLASS: desc on stderr)",
    EXIT_USAGE: "usage error (bad options or arguments)",
    EXIT_CONNECTION: "connection or protocol error (cannot connect, lost, not QMP)",
    EXIT_TIMEOUT: "timeout",
    EXIT_DEMO_FAILED: "the demo failed (QEMU did not start, or a check failed)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 30.0

_EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())

_TCP_RE = re.compile(
    r"^(?:tcp:)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^/:\[\]]+)):(?P<port>\d+)$")


class UsageError(QMPError, ValueError):
    """The command line is wrong in a way argparse cannot see (exit code 2)."""


# ---------------------------------------------------------------------- parsing
def parse_address(text: str) -> Address:
    """Turn a ``SOCKET`` argument into a client address.

    Args:
        text: a Unix socket path; or ``HOST:PORT``, ``tcp:HOST:PORT``, ``[V6]:PORT``.
            An existing file always counts as a path, so ``./a:1`` stays a path.

    Returns:
        A path string, or ``(host, port)`` for TCP.
    """
    if text.startswith("tcp:") or (not os.path.exists(text) and "/" not in text):
        m = _TCP_RE.match(text)
        if m is not None:
            return (m.group("v6") or m.group("host"), int(m.group("port")))
    return text


def _json_or_string(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def parse_arguments(words: Sequence[str]) -> dict[str, Any] | None:
    """Turn the words after ``COMMAND`` into QMP arguments.

    Args:
        words: either one JSON object (possibly split over several words, as an
            unquoted shell line is), or ``key=value`` words. A value is used as JSON
            when it parses as JSON, else as a string. A word ``key=`` followed by a
            word without ``=`` takes that word as its value (so ``id= d0`` works,
            which is what tab completion leaves behind).

    Returns:
        The arguments, or None when ``words`` is empty.

    Raises:
        UsageError: a word is not ``key=value``, a key repeats, or the JSON is not an
            object.
    """
    if not words:
        return None
    if words[0].lstrip().startswith("{"):
        text = " ".join(words)
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError("arguments must be a JSON object")
        return value
    args: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        key, sep, raw = word.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {word!r}")
        if not raw and i + 1 < len(words) and "=" not in words[i + 1]:
            i += 1
            raw = words[i]
        if key in args:
            raise UsageError(f"argument {key!r} given twice")
        args[key] = _json_or_string(raw)
        i += 1
    return args


# --------------------------------------------------------------------- printing
_RESET = "\x1b[0m"
_KEY = "\x1b[1;34m"
_STRING = "\x1b[32m"
_NUMBER = "\x1b[36m"
_LITERAL = "\x1b[35m"
_EVENT = "\x1b[1;33m"


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def render_json(value: Any, colour: bool = False) -> str:
    """Format ``value`` as pretty JSON (2-space indent, keys in QMP's order).

    Args:
        value: any JSON value.
        colour: add ANSI colours (keys, strings, numbers, literals).

    Returns:
        The text, without a trailing newline.
    """
    if not colour:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    parts: list[str] = []
    _render(value, 0, parts)
    return "".join(parts)


def _render(value: Any, level: int, out: list[str]) -> None:
    indent = 2
    pad = " " * (indent * (level + 1))
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{\n")
        for n, (key, item) in enumerate(value.items()):
            out.append(f"{pad}{_KEY}{_dump(str(key))}{_RESET}: ")
            _render(item, level + 1, out)
            out.append(",\n" if n + 1 < len(value) else "\n")
        out.append(" " * (indent * level) + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        out.append("[\n")
        for n, item in enumerate(value):
            out.append(pad)
            _render(item, level + 1, out)
            out.append(",\n" if n + 1 < len(value) else "\n")
        out.append(" " * (indent * level) + "]")
    elif isinstance(value, str):
        out.append(f"{_STRING}{_dump(value)}{_RESET}")
    elif value is None or isinstance(value, bool):
        out.append(f"{_LITERAL}{_dump(value)}{_RESET}")
    else:
        out.append(f"{_NUMBER}{_dump(value)}{_RESET}")


def event_to_json(event: Event) -> dict[str, Any]:
    """Return ``event`` as QEMU sent it: ``{"timestamp": {...}, "event": ..., "data": ...}``.

    The timestamp is rebuilt from :attr:`Event.timestamp` (to the microsecond).
    """
    return event.to_message()


def _use_colour(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _error_text(exc: BaseException) -> str:
    """``CLASS: desc`` for a QMP error, ``Kind: message`` for the others."""
    if isinstance(exc, CommandError):
        return f"{exc.error_class}: {exc.desc}"
    return f"{type(exc).__name__}: {exc}"


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the command's exit code (see :data:`EXIT_CODES`).

    Args:
        exc: what a sub-command failed with.

    Returns:
        The exit code; 1 for anything not listed (it is a failure all the same).
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Timeout):
        return EXIT_TIMEOUT
    if isinstance(exc, CommandError):
        return EXIT_COMMAND_ERROR
    if isinstance(exc, (UsageError, ValidationError)):
        return EXIT_USAGE
    if isinstance(exc, (ConnectError, ConnectionLost, ProtocolError, OSError)):
        return EXIT_CONNECTION
    from .demo import DemoError  # late: the demo pulls in the launcher and fake server

    if isinstance(exc, DemoError):
        return EXIT_DEMO_FAILED
    return EXIT_COMMAND_ERROR


# --------------------------------------------------------------------- commands
def _connect(ns: argparse.Namespace, client: Client | None = None) -> Client:
    client = client if client is not None else Client()
    address = parse_address(ns.socket)
    try:
        version = client.connect(address, timeout=ns.connect_timeout).result()
    except BaseException:
        client.close()
        raise
    logger.info("connected to %s: QEMU %s, capabilities %s", ns.socket, version,
                ",".join(version.capabilities) or "none")
    return client


def _cmd_exec(ns: argparse.Namespace) -> int:
    arguments = parse_arguments(ns.arguments)
    client = _connect(ns)
    try:
        result = client.execute(ns.command, arguments, oob=ns.oob, timeout=ns.timeout).result()
    finally:
        client.close()
    colour = _use_colour(ns.color, sys.stdout)
    sys.stdout.write(render_json(result, colour) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _cmd_events(ns: argparse.Namespace) -> int:
    if ns.count is not None and ns.count < 1:
        raise UsageError("--count must be at least 1")
    if ns.timeout is not None and ns.timeout <= 0:
        raise UsageError("--timeout must be positive")
    client = Client()
    reactor = client.reactor
    seen = [0]
    outcome: list[BaseException | None] = []
    out = sys.stdout

    def on_event(event: Event) -> None:
        if outcome:
            return
        try:
            out.write(orjson.dumps(event_to_json(event)).decode() + "\n")
            out.flush()
        except BrokenPipeError as exc:  # e.g. `qmplex events ... | head -1`
            outcome.append(exc)
            reactor.stop()
            return
        seen[0] += 1
        if ns.count is not None and seen[0] >= ns.count:
            outcome.append(None)
            reactor.stop()

    def on_disconnect(reason: BaseException | None) -> None:
        if not outcome:
            outcome.append(reason or ConnectionLost("the connection was closed"))
            reactor.stop()

    def on_deadline() -> None:
        if not outcome:
            if ns.count is None:
                outcome.append(None)  # --timeout alone is a duration
            else:
                outcome.append(Timeout(f"{seen[0]} of {ns.count} events within {ns.timeout} s"))
        reactor.stop()

    for name in ns.name or [None]:
        client.on_event(on_event, name)
    try:
        _connect(ns, client)
        # Events that came with the handshake's last bytes were delivered while
        # connecting; they may have been enough already.
        if not outcome:
            client.on_disconnect(on_disconnect)
            if ns.timeout is not None:
                reactor.call_later(ns.timeout, on_deadline)
            reactor.run()
    finally:
        client.close()
        if not reactor.closed:
            reactor.close()
    reason = outcome[0] if outcome else None
    if isinstance(reason, BrokenPipeError):
        _silence_stdout()
        return EXIT_OK
    if reason is not None:
        raise reason
    return EXIT_OK


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would complain about the closed pipe again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import ProgressBar, run_demo

    if ns.disks < 1:
        raise UsageError("--disks must be at least 1")
    bar = ProgressBar(sys.stderr) if not ns.quiet else None
    result = run_demo(
        ns.disks,
        fake=ns.fake,
        qemu_binary=ns.qemu,
        progress=bar,
        timeout=ns.timeout,
    )
    if bar is not None:
        bar.finish()
    if ns.json:
        sys.stdout.write(orjson.dumps(result.to_dict()).decode() + "\n")
    else:
        sys.stdout.write(_demo_report(result))
    sys.stdout.flush()
    return EXIT_OK


def _demo_report(result: DemoResult) -> str:
    lines = [f"backend: {result.backend_description}"]
    for phase in result.phases:
        rate = f" ({phase.commands / phase.seconds:,.0f} commands/s)" \
            if phase.commands and phase.seconds > 0 else ""
        what = f"{phase.commands} commands" if phase.commands else ""
        lines.append(f"{phase.name + ':':<8} {phase.seconds:8.3f} s  {what}{rate}".rstrip())
    lines.append(f"{'total:':<8} {result.total_seconds:8.3f} s  "
                 f"{result.disks} disks plugged and unplugged")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ shell
@dataclass(frozen=True, slots=True)
class _ArgInfo:
    name: str
    type: str
    optional: bool
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _CommandInfo:
    name: str
    args: tuple[_ArgInfo, ...] | None  # None: unknown (no schema)
    variant_args: tuple[str, ...] = ()  # members of union variants (blockdev-add ...)


_BUILTINS = ("help", "quit", "exit")


def _load_catalog(client: Client, timeout: float) -> tuple[dict[str, _CommandInfo], str]:
    """Commands and their arguments from ``query-qmp-schema`` (:mod:`qmplex.schema`);
    names only, from ``query-commands``, when the peer has no schema."""
    try:
        schema = client.load_schema().result(timeout)
    except CommandError:
        names = client.execute("query-commands").result(timeout)
        return ({str(c["name"]): _CommandInfo(str(c["name"]), None)
                 for c in names if isinstance(c, dict) and "name" in c}, "query-commands")
    return _catalog_from_schema(schema), "query-qmp-schema"


def _catalog_from_schema(schema: Schema) -> dict[str, _CommandInfo]:
    catalog: dict[str, _CommandInfo] = {}
    for name in schema.commands():
        args = []
        for a in schema.arguments(name):
            kind = a.type
            values: tuple[str, ...] = ()
            if kind.startswith("enum (") and kind.endswith(")"):
                kind, values = "enum", tuple(kind[6:-1].split("|"))
            args.append(_ArgInfo(a.name, kind, not a.required, values))
        base = {a.name for a in args}
        extra = tuple(sorted(n for n in schema.argument_names(name) if n not in base))
        catalog[name] = _CommandInfo(name, tuple(args), extra)
    return catalog


def _complete_words(catalog: Mapping[str, _CommandInfo], line: str, begidx: int,
                   text: str) -> list[str]:
    """Completion candidates for the word ``text`` at ``begidx`` in ``line``.

    The first word completes to command names (and the shell's own ``help``, ``quit``);
    the word after ``help`` to command names; later words to ``name=`` for arguments
    of the command not given yet, and after ``name=`` to the values of an enum. A
    finished word (a command, a value) carries a trailing space, ``name=`` does not.
    """
    words = line[:begidx].split()
    if not words:
        prefix = "!" if text.startswith("!") else ""
        stem = text[len(prefix):]
        names = sorted(catalog) + ([] if prefix else list(_BUILTINS))
        return [f"{prefix}{n} " for n in names if n.startswith(stem)]
    head = words[0].lstrip("!")
    if head in ("help", "?") and len(words) == 1:
        return [f"{n} " for n in sorted(catalog) if n.startswith(text)]
    info = catalog.get(head)
    if info is None or not info.args:
        return []
    if "=" in text:
        key, _, value = text.partition("=")
        arg = next((a for a in info.args if a.name == key), None)
        if arg is None:
            return []
        return [f"{key}={v} " for v in arg.values if v.startswith(value)]
    given = {w.split("=", 1)[0] for w in words[1:] if "=" in w}
    names = [a.name for a in info.args] + list(info.variant_args)
    return [f"{n}=" for n in names if n not in given and n.startswith(text)]


def _help_text(catalog: Mapping[str, _CommandInfo], source: str, topic: str | None) -> str:
    if topic is None:
        return (
            "Type a QMP command and its arguments, as key=value words or one JSON object:\n"
            "  blockdev-add driver=null-co node-name=n0\n"
            '  blockdev-add {"driver": "null-co", "node-name": "n0"}\n'
            "Shell commands: help [COMMAND], quit / exit (Ctrl-D). A line starting with\n"
            "'!' is always sent to QEMU ('!quit' stops QEMU). Events print as they arrive.\n"
            f"{len(catalog)} commands known (from {source}); TAB completes command and\n"
            "argument names."
        )
    info = catalog.get(topic)
    if info is None:
        return f"unknown command: {topic}"
    if info.args is None:
        return f"{topic}: arguments unknown (the peer has no query-qmp-schema)"
    lines = [topic + "".join(f" {a.name}=<{a.type}>" if not a.optional
                             else f" [{a.name}=<{a.type}>]" for a in info.args)]
    if info.args:
        width = max(len(a.name) for a in info.args)
        for a in info.args:
            extra = " (optional)" if a.optional else ""
            values = ""
            if a.values:
                shown = "|".join(a.values[:12]) + ("|..." if len(a.values) > 12 else "")
                values = f"  one of {shown}"
            lines.append(f"  {a.name:<{width}}  {a.type}{extra}{values}")
    elif not info.variant_args:
        lines.append("  (no arguments)")
    if info.variant_args:
        shown = ", ".join(info.variant_args[:20]) + (", ..." if len(info.variant_args) > 20
                                                      else "")
        lines.append(f"  per variant also: {shown}")
    return "\n".join(lines)


class _Shell:
    """The interactive loop.

    Threads: the main thread reads lines (``input()`` with readline, so Ctrl-C clears
    the line as usual) and waits for each command's result; the client's reactor runs
    in a second thread, which prints events as they arrive (and blocks SIGINT, so
    Ctrl-C always reaches readline on the main thread). The main thread reaches the
    client only through ``reactor.call_soon_threadsafe``.
    """

    def __init__(self, client: Client, catalog: dict[str, _CommandInfo], source: str,
                 ns: argparse.Namespace) -> None:
        self.client = client
        self.catalog = catalog
        self.source = source
        self.timeout: float | None = ns.timeout
        self.interactive = sys.stdin.isatty()
        self.colour = _use_colour(ns.color, sys.stdout)
        self.prompt = "qmplex> " if self.interactive else ""
        self.history: str | None = None if ns.no_history else (
            ns.history or os.environ.get("QMPLEX_HISTORY")
            or os.path.join(os.path.expanduser("~"), ".qmplex_history"))
        self._lock = threading.Lock()  # one writer at a time
        self._state_lock = threading.Lock()  # _at_prompt and _lost, checked together
        self._at_prompt = False
        self._lost: BaseException | None = None
        self._main = threading.get_ident()
        self._matches: list[str] = []
        self._readline: Any = None

    # Printing (any thread).
    def write(self, text: str, stream: IO[str] | None = None) -> None:
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
        when = datetime.datetime.fromtimestamp(event.timestamp).strftime("%H:%M:%S.%f")[:-3]
        data = _dump(event.data)
        if self.colour:
            self.write(f"[{when}] {_EVENT}{event.name}{_RESET} {data}")
        else:
            self.write(f"[{when}] {event.name} {data}")

    def on_disconnect(self, reason: BaseException | None) -> None:
        if reason is None:
            return
        with self._state_lock:
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

        The lock makes sure the main thread is between its check of ``_lost`` and the
        end of input(). A signal that lands before readline starts waiting is only
        noted (readline checks for signals when its select() is interrupted), so it is
        sent again every 50 ms until input() has returned.
        """
        with self._state_lock:
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

    def _save_history(self) -> None:
        if self._readline is not None and self.history:
            try:
                self._readline.write_history_file(self.history)
            except OSError:
                pass

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            rl = self._readline
            self._matches = _complete_words(self.catalog, rl.get_line_buffer(),
                                           rl.get_begidx(), text)
        return self._matches[state] if state < len(self._matches) else None

    # Running commands.
    def _execute(self, name: str, arguments: dict[str, Any] | None) -> Any:
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

    def handle(self, line: str) -> bool:
        """Run one input line; return False when the shell should end."""
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
                self.write(_help_text(self.catalog, self.source, topic))
                return True
        rest = rest.strip()
        try:
            words = [rest] if rest.startswith("{") else shlex.split(rest)
            arguments = parse_arguments(words)
        except (UsageError, ValueError) as exc:
            self.write(f"error: {exc}", sys.stderr)
            return True
        try:
            result = self._execute(name, arguments)
        except QMPError as exc:
            self.write(_error_text(exc), sys.stderr)
            return not isinstance(exc, (ConnectionLost, StateError))
        self.write(render_json(result, self.colour))
        return True

    def _run_reactor(self) -> None:
        # Keep terminal signals for the main thread: a Ctrl-C handled by this thread
        # would not interrupt readline's wait there, so the line would not be dropped.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGWINCH})
        self.client.reactor.run()

    def loop(self) -> int:
        """Read and run lines until quit, EOF or a lost connection; return the exit code."""
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
                    with self._state_lock:
                        if self._lost is not None:
                            break
                        self._at_prompt = True
                    try:
                        line = input(self.prompt)
                    finally:
                        with self._state_lock:
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
            with self._state_lock:
                self._at_prompt = False  # no more SIGINT from _interrupt_prompt
            reactor.stop()
            thread.join(5)
            self._save_history()
        return EXIT_CONNECTION if self._lost is not None else EXIT_OK


def _cmd_shell(ns: argparse.Namespace) -> int:
    client = Client()
    shell: _Shell | None = None

    def on_event(event: Event) -> None:
        if shell is not None:
            shell.on_event(event)

    client.on_event(on_event)
    try:
        _connect(ns, client)
        catalog, source = _load_catalog(client, ns.connect_timeout)
        shell = _Shell(client, catalog, source, ns)
        client.on_disconnect(shell.on_disconnect)
        return shell.loop()
    finally:
        client.close()


# ------------------------------------------------------------------------ parser
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the ``qmplex`` argument parser (sub-commands exec, events, shell, demo)."""
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="qmplex",
        description="Talk to QEMU over QMP: run commands, watch events, explore the "
                    "schema\ninteractively, and run the bulk hot-plug demo.",
        epilog="SOCKET is a Unix socket path or HOST:PORT.\n\n" + _EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"qmplex {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr: -v connection steps, -vv also the QMP "
                        "traffic (secrets redacted)")
    parser.add_argument("--connect-timeout", type=_positive_float,
                        default=DEFAULT_CONNECT_TIMEOUT, metavar="S",
                        help="seconds to connect and negotiate (default: %(default)s)")
    parser.add_argument("--color", "--colour", choices=("auto", "always", "never"),
                        default="auto", help="colour the output (auto: when stdout is a "
                        "terminal and NO_COLOR is unset)")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "exec", help="run one QMP command and print its return value",
        description="Run one QMP command and print its return value as pretty JSON.\n"
                    "Arguments are key=value words (values parsed as JSON when they "
                    "parse,\nelse strings) or one JSON object.",
        epilog="examples:\n"
               "  qmplex exec /tmp/qmp.sock query-status\n"
               "  qmplex exec /tmp/qmp.sock blockdev-add driver=null-co node-name=n0\n"
               "  qmplex exec /tmp/qmp.sock device_add "
               "'{\"driver\": \"scsi-hd\", \"id\": \"d0\", \"drive\": \"n0\"}'\n\n" + _EPILOG,
        formatter_class=formatter)
    p.add_argument("socket", metavar="SOCKET", help="QMP socket path or HOST:PORT")
    p.add_argument("command", metavar="COMMAND", help="QMP command, e.g. query-status")
    p.add_argument("arguments", metavar="ARG", nargs="*",
                   help="key=value words, or one JSON object")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_COMMAND_TIMEOUT,
                   metavar="S", help="seconds to wait for the reply (default: %(default)s)")
    p.add_argument("--oob", action="store_true", help="send as exec-oob (out of band)")
    p.set_defaults(run=_cmd_exec)

    p = sub.add_parser(
        "events", help="print QMP events, one JSON object per line",
        description="Print QMP events as they arrive, one JSON object per line, as QEMU "
                    "sent them\n(timestamp, event, data). Runs until --count events, "
                    "--timeout seconds,\nCtrl-C or the end of the connection.",
        epilog="With --count, fewer events than N within --timeout exits with 4; "
               "--timeout alone\nis a duration and exits with 0. A connection closed by "
               "QEMU exits with 3.\n\n" + _EPILOG,
        formatter_class=formatter)
    p.add_argument("socket", metavar="SOCKET", help="QMP socket path or HOST:PORT")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="only events with this name (repeatable; default: all)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="exit after S seconds")
    p.set_defaults(run=_cmd_events)

    p = sub.add_parser(
        "shell", help="interactive QMP shell with completion",
        description="An interactive QMP shell: history, TAB completion of command and "
                    "argument\nnames from the connected QEMU's schema, 'help COMMAND', "
                    "and events printed\nas they arrive. 'quit' or Ctrl-D leaves; '!quit' "
                    "sends QMP's quit.",
        epilog=_EPILOG, formatter_class=formatter)
    p.add_argument("socket", metavar="SOCKET", help="QMP socket path or HOST:PORT")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_COMMAND_TIMEOUT,
                   metavar="S", help="seconds to wait for each reply (default: %(default)s)")
    p.add_argument("--history", metavar="FILE",
                   help="history file (default: $QMPLEX_HISTORY or ~/.qmplex_history)")
    p.add_argument("--no-history", action="store_true", help="do not read or write history")
    p.set_defaults(run=_cmd_shell)

    p = sub.add_parser(
        "demo", help="bulk SCSI hot-plug demo (real QEMU, or the fake server)",
        description="Start a paused QEMU with a virtio-scsi-pci controller (or the built-in "
                    "fake\nQMP server when QEMU is not installed, or with --fake), plug N "
                    "SCSI disks over\nnull-co block nodes with pipelined commands, unplug "
                    "them (each device_del\nwaits for its DEVICE_DELETED, then frees its "
                    "node), and print the time of\neach phase. Progress goes to stderr.",
        epilog=_EPILOG, formatter_class=formatter)
    p.add_argument("--disks", type=int, default=300, metavar="N",
                   help="disks to plug and unplug (default: %(default)s)")
    p.add_argument("--fake", action="store_true", help="use the fake QMP server")
    p.add_argument("--qemu", metavar="BINARY",
                   help="QEMU binary (default: qemu-system-x86_64 from PATH)")
    p.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S",
                   help="seconds allowed per phase (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_demo)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``qmplex`` command.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (see :data:`EXIT_CODES`); usage errors found by argparse exit
        with 2 through ``SystemExit``.
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.verbose:
        logging.basicConfig(
            level=logging.DEBUG if ns.verbose > 1 else logging.INFO,
            format="qmplex: %(name)s: %(message)s", stream=sys.stderr)
    else:
        # The command reports failures itself; keep the library's warnings (which
        # would reach stderr through logging's last-resort handler) out of the way.
        logging.getLogger("qmplex").addHandler(logging.NullHandler())
    run: Callable[[argparse.Namespace], int] = ns.run
    try:
        return run(ns)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"qmplex {ns.subcommand}: error: {exc}\n")
    except (QMPError, OSError) as exc:
        _fail(_error_text(exc), exit_code_for(exc))
