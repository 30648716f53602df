"""The ``qmplex`` command's entry point: the argument parser, the dispatch to a
sub-command, logging, and turning a failure into its exit code and message.

The sub-commands themselves live in :mod:`.commands` (``exec``, ``events``,
``demo``) and :mod:`.shell` (``shell``); the codes in :mod:`.exit_codes`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..errors import QMPError
from .commands import demo_command, events_command, exec_command
from .exit_codes import EXIT_CODES, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, exit_code_for
from .render import error_text
from .shell import shell_command

__all__ = ["DEFAULT_COMMAND_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "build_parser", "main"]

#: Seconds to connect and negotiate, by default (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds to wait for a reply, by default (``exec`` and ``shell`` ``--timeout``).
DEFAULT_COMMAND_TIMEOUT = 30.0

_EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
_FORMATTER = argparse.RawDescriptionHelpFormatter


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                run: Callable[[argparse.Namespace], int], *, help: str, description: str,
                epilog: str = _EPILOG, socket: bool = True) -> argparse.ArgumentParser:
    """Add sub-command ``name``, run by ``run(ns)``; with ``socket``, its first
    positional argument is SOCKET."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=_FORMATTER)
    if socket:
        p.add_argument("socket", metavar="SOCKET", help="QMP socket path or HOST:PORT")
    p.set_defaults(run=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """Return the ``qmplex`` argument parser (sub-commands exec, events, shell, demo)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="qmplex",
        description="Talk to QEMU over QMP: run commands, watch events, explore the "
                    "schema\ninteractively, and run the bulk hot-plug demo.",
        epilog="SOCKET is a Unix socket path or HOST:PORT.\n\n" + _EPILOG,
        formatter_class=_FORMATTER,
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

    p = _subcommand(
        sub, "exec", exec_command, help="run one QMP command and print its return value",
        description="Run one QMP command and print its return value as pretty JSON.\n"
                    "Arguments are key=value words (values parsed as JSON when they "
                    "parse,\nelse strings) or one JSON object.",
        epilog="examples:\n"
               "  qmplex exec /tmp/qmp.sock query-status\n"
               "  qmplex exec /tmp/qmp.sock blockdev-add driver=null-co node-name=n0\n"
               "  qmplex exec /tmp/qmp.sock device_add "
               "'{\"driver\": \"scsi-hd\", \"id\": \"d0\", \"drive\": \"n0\"}'\n\n" + _EPILOG)
    p.add_argument("command", metavar="COMMAND", help="QMP command, e.g. query-status")
    p.add_argument("arguments", metavar="ARG", nargs="*",
                   help="key=value words, or one JSON object")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_COMMAND_TIMEOUT,
                   metavar="S", help="seconds to wait for the reply (default: %(default)s)")
    p.add_argument("--oob", action="store_true", help="send as exec-oob (out of band)")

    p = _subcommand(
        sub, "events", events_command, help="print QMP events, one JSON object per line",
        description="Print QMP events as they arrive, one JSON object per line, as QEMU "
                    "sent them\n(timestamp, event, data). Runs until --count events, "
                    "--timeout seconds,\nCtrl-C or the end of the connection.",
        epilog="With --count, fewer events than N within --timeout exits with 4; "
               "--timeout alone\nis a duration and exits with 0. A connection closed by "
               "QEMU exits with 3.\n\n" + _EPILOG)
    p.add_argument("--name", action="append", metavar="NAME",
                   help="only events with this name (repeatable; default: all)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="exit after S seconds")

    p = _subcommand(
        sub, "shell", shell_command, help="interactive QMP shell with completion",
        description="An interactive QMP shell: history, TAB completion of command and "
                    "argument\nnames from the connected QEMU's schema, 'help COMMAND', "
                    "and events printed\nas they arrive. 'quit' or Ctrl-D leaves; '!quit' "
                    "sends QMP's quit. Each line is\nchecked against the schema before it "
                    "is sent (a ValidationError is not sent).\nFed from a pipe or a file, "
                    "it runs every line and exits with the code of the\nfirst line that "
                    "failed (0 if none did), the code exec gives that failure.")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_COMMAND_TIMEOUT,
                   metavar="S", help="seconds to wait for each reply (default: %(default)s)")
    p.add_argument("--history", metavar="FILE",
                   help="history file (default: $QMPLEX_HISTORY or ~/.qmplex_history)")
    p.add_argument("--no-history", action="store_true", help="do not read or write history")

    p = _subcommand(
        sub, "demo", demo_command, socket=False,
        help="bulk SCSI hot-plug demo (real QEMU, or the fake server)",
        description="Start a paused QEMU with a virtio-scsi-pci controller (or the built-in "
                    "fake\nQMP server when QEMU is not installed, or with --fake), plug N "
                    "SCSI disks over\nnull-co block nodes with pipelined commands, unplug "
                    "them (each device_del\nwaits for its DEVICE_DELETED, then frees its "
                    "node), and print the time of\neach phase. Progress goes to stderr.")
    p.add_argument("--disks", type=int, default=300, metavar="N",
                   help="disks to plug and unplug (default: %(default)s)")
    p.add_argument("--fake", action="store_true", help="use the fake QMP server")
    p.add_argument("--qemu", metavar="BINARY",
                   help="QEMU binary (default: qemu-system-x86_64 from PATH)")
    p.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S",
                   help="seconds allowed per phase (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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
        _fail(error_text(exc), exit_code_for(exc))
