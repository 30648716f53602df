"""The one-shot sub-commands: ``qmplex exec``, ``qmplex events`` and ``qmplex demo``.

Each takes the parsed command line and returns the exit code, or raises what
:func:`~qmplex.cli.exit_codes.exit_code_for` maps to one. The interactive shell lives
in :mod:`.shell`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import orjson

from ..client import Client
from ..errors import ConnectionLost, Timeout
from ..events import Event
from .arguments import parse_address, parse_arguments
from .demo import ProgressBar, run_demo
from .exit_codes import EXIT_OK, UsageError
from .render import demo_report, event_to_json, render_json, use_colour

__all__ = ["connect", "demo_command", "events_command", "exec_command"]

logger = logging.getLogger(__name__)


def connect(ns: argparse.Namespace, client: Client | None = None) -> Client:
    """Connect ``client`` (default: a new one) to ``ns.socket`` within
    ``ns.connect_timeout``; on failure it is closed and the error raised."""
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


def exec_command(ns: argparse.Namespace) -> int:
    """``qmplex exec``: run one command and print its return value."""
    arguments = parse_arguments(ns.arguments)
    client = connect(ns)
    try:
        result = client.execute(ns.command, arguments, oob=ns.oob, timeout=ns.timeout).result()
    finally:
        client.close()
    colour = use_colour(ns.color, sys.stdout)
    sys.stdout.write(render_json(result, colour) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def events_command(ns: argparse.Namespace, client: Client | None = None) -> int:
    """``qmplex events``: print events until ``--count``, ``--timeout``, the end of the
    connection or a closed stdout.

    Args:
        ns: the parsed command line.
        client: the client to use, not connected yet (default: a new one, on a
            reactor of its own). The command runs its reactor, and closes both.
    """
    if ns.count is not None and ns.count < 1:
        raise UsageError("--count must be at least 1")
    if ns.timeout is not None and ns.timeout <= 0:
        raise UsageError("--timeout must be positive")
    client = client if client is not None else Client()
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
        connect(ns, client)
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


def demo_command(ns: argparse.Namespace) -> int:
    """``qmplex demo``: run the bulk hot-plug demo and print its report."""
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
        sys.stdout.write(demo_report(result))
    sys.stdout.flush()
    return EXIT_OK
