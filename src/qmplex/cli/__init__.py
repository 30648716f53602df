"""The ``qmplex`` command line (also ``python -m qmplex``).

This package belongs to the tools layer: it parses the command line, connects a
:class:`~qmplex.client.Client` and prints what comes back. It holds no QMP logic of its
own; the bulk hot-plug demo lives in :mod:`qmplex.cli.demo`.

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

``qmplex shell`` checks each line against the schema it loaded (when the peer has
``query-qmp-schema``) before sending it. Fed from a pipe or a file, it runs every line
and exits with the code of the first line that failed (0 if none did), the code
``exec`` gives the same failure; at a terminal it exits with 0, or 3 when the
connection was lost.

Exit codes (:data:`EXIT_CODES`):

====  =======================================================================
code  meaning
====  =======================================================================
0     success
1     QEMU answered with an error (printed as ``CLASS: desc`` on stderr)
2     usage error: unknown option, bad arguments, arguments that are not JSON, or (in
      the shell) arguments the schema rejects
3     connection or protocol error: cannot connect, not a QMP peer, connection lost
4     timeout: no reply, no greeting, or fewer events than ``--count`` in time
5     the demo failed: QEMU could not be started, or a check after a phase failed
130   interrupted (Ctrl-C)
====  =======================================================================

Where things live:

* ``main.py``: :func:`main` (the console entry point) and :func:`build_parser`:
  options, sub-command dispatch, logging, failures turned into exit codes.
* ``exit_codes.py``: the exit codes, :func:`exit_code_for`, :class:`UsageError`.
* ``arguments.py``: ``SOCKET`` and ``ARG`` words into an address and QMP arguments.
* ``render.py``: how results, events, errors and the demo's report are printed.
* ``commands.py``: the ``exec``, ``events`` and ``demo`` sub-commands.
* ``shell.py``: the interactive shell (its loop, threads and readline);
  ``catalog.py``: what it knows of the commands (completion, ``help``).
* ``demo.py``: the bulk hot-plug demo itself (:func:`~qmplex.cli.demo.run_demo`).
"""

from . import demo
from .arguments import parse_address, parse_arguments
from .exit_codes import (
    EXIT_CODES,
    EXIT_COMMAND_ERROR,
    EXIT_CONNECTION,
    EXIT_DEMO_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    UsageError,
    exit_code_for,
)
from .main import DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, build_parser, main
from .render import event_to_json, render_json

__all__ = [
    "EXIT_OK",
    "EXIT_COMMAND_ERROR",
    "EXIT_USAGE",
    "EXIT_CONNECTION",
    "EXIT_TIMEOUT",
    "EXIT_DEMO_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "UsageError",
    "build_parser",
    "demo",
    "event_to_json",
    "exit_code_for",
    "main",
    "parse_address",
    "parse_arguments",
    "render_json",
]
