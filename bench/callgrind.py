"""Instructions per command on the pipelined path, counted by valgrind's callgrind.

Instruction counts barely move on a noisy machine, unlike wall time. The Python process
runs under callgrind against the C fake peer (which runs natively); each implementation
runs once: after the start-up, the imports, the connection set-up and a warm-up, it calls
``os.getppid()`` before and after N pipelined commands, and callgrind (with
``--dump-before=getppid``) writes the counters at each call, so the middle dump holds
exactly the N commands::

    python -m bench.callgrind [--quick] [--impl qmplex|floor ...]

The measured loop is the pipelined row's (window 64): ``bench.qmplex_impl.Pipelined``
and ``bench.floor.Pipelined``; ``--row serial`` measures the serial round trips instead,
``--row events`` / ``--row drop`` an event flood (per event).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from .common import FakePeer, ensure_qmplex, pin_self

_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _target(impl: str, row: str, path: str, n: int) -> None:
    """Run inside valgrind: open, warm up, then ``n`` commands of ``row``."""
    if impl == "qmplex":
        from . import qmplex_impl as mod
    else:
        from . import floor as mod  # type: ignore[no-redef]
    if row in ("events", "drop"):
        w: Any = mod.Events(path, n, "deliver" if row == "events" else "drop")
    else:
        w = (mod.Pipelined if row == "pipelined" else mod.Serial)(path, n)
    w.open()
    # Warm-up on the same connection: first-call costs stay out of the measured part.
    w.count = 128
    w.run()
    w.count = n
    os.getppid()  # callgrind dumps here: the start of the measured part
    w.run()
    os.getppid()  # and here: its end
    w.close()


def available() -> bool:
    return shutil.which("valgrind") is not None


def per_command(impl: str, path: str, n: int, row: str = "pipelined") -> float:
    """Instructions per command (per event for the event rows) over ``n`` of them."""
    with tempfile.TemporaryDirectory(prefix="qmplex-cg-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-before=getppid",
             f"--callgrind-out-file={out}",
             sys.executable, "-m", "bench.callgrind", "--target", impl, row, path, str(n)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # out.1: start-up to the first marker; out.2: between the markers.
        with open(out + ".2", "rb") as f:
            m = _TOTALS.search(f.read())
        if m is None:
            raise RuntimeError("no totals in the callgrind output")
        return int(m.group(1)) / n


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--target"]:
        ensure_qmplex()
        _target(args[1], args[2], args[3], int(args[4]))
        return
    p = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts")
    p.add_argument("--impl", action="append", choices=["qmplex", "floor"])
    p.add_argument("--row", choices=["pipelined", "serial", "events", "drop"],
                   default="pipelined",
                   help="events: a flood delivered to a callback; drop: nobody subscribed")
    ns = p.parse_args(args)
    ensure_qmplex()
    if not available():
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    n = 1000 if ns.quick else 20000
    if ns.row in ("events", "drop"):
        n *= 10
    pin_self()
    with FakePeer() as peer:
        for impl in ns.impl or ["qmplex", "floor"]:
            count = per_command(impl, peer.path, n, ns.row)
            what = "event" if ns.row in ("events", "drop") else "command"
            print(f"{impl} {ns.row}: {count:,.0f} instructions/{what}")


if __name__ == "__main__":
    main()
