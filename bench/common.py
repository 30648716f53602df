"""Shared plumbing for the benchmarks: paths, the C fake peer, process memory.

Nothing here measures anything; it builds and starts what the suites measure against.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
PEER_SOURCE = BENCH_DIR / "fakepeer.c"
PEER_BINARY = BUILD_DIR / "fakepeer"


def ensure_qmplex() -> None:
    """Make ``import qmplex`` work from a source checkout, with the C splitter built.

    An installed qmplex is used as is. From a checkout, ``src/`` is put on ``sys.path``
    (and on ``PYTHONPATH`` for child processes), and ``build.py`` runs when the C module
    is missing: a benchmark of the pure-Python fallback would measure the wrong thing.
    """
    src = REPO_DIR / "src"
    try:
        import qmplex  # noqa: F401
    except ImportError:
        if not (src / "qmplex").is_dir():
            raise
        sys.path.insert(0, str(src))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    from qmplex import framing

    if framing.C_AVAILABLE:
        return
    if (REPO_DIR / "build.py").is_file() and (src / "qmplex").is_dir():
        print("bench: building the C splitter (python build.py)", file=sys.stderr)
        subprocess.run([sys.executable, "build.py"], cwd=REPO_DIR, check=True,
                       stdout=subprocess.DEVNULL)
        # framing already settled on the fallback: start this command again.
        os.execv(sys.executable, sys.orig_argv)
    raise SystemExit(f"bench: qmplex._lines is not importable ({framing.C_IMPORT_ERROR}); "
                     "the benchmarks refuse to measure the pure-Python splitter")


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def pinning() -> bool:
    """Whether to pin (``--pin`` or ``QMPLEX_BENCH_PIN=1``; needs 2+ CPUs)."""
    return (os.cpu_count() or 1) >= 2 and os.environ.get("QMPLEX_BENCH_PIN", "") == "1"


def pin_self() -> None:
    """Pin this process (and the children it starts later) to its first CPU.

    Where the scheduler puts the client and its peer decides a round trip's latency
    (a hand-off on one CPU takes ~5 us, a wake-up across CPUs 50-70 us here), and it
    changes from run to run. Pinning the client to one CPU and the peers (the C fake
    peer, QEMU) to another makes every implementation pay the same cross-CPU hand-off:
    steadier numbers, but not the conditions the issue's reference figures were taken
    in (nothing pinned), so it is opt-in.
    """
    cpus = _cpus()
    if pinning() and len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})


def peer_preexec() -> None:
    """``preexec_fn`` for peer processes: run them on the client's neighbour CPU."""
    if pinning():
        cpus = sorted(os.sched_getaffinity(0))
        others = [c for c in range(os.cpu_count() or 1) if c not in cpus]
        if others:
            os.sched_setaffinity(0, {others[0]})


def build_peer(force: bool = False) -> Path:
    """Compile ``bench/fakepeer.c`` with ``$CC`` (default ``cc``) unless up to date."""
    if (not force and PEER_BINARY.exists()
            and PEER_BINARY.stat().st_mtime >= PEER_SOURCE.stat().st_mtime):
        return PEER_BINARY
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench: no C compiler (cc) found; install gcc to build the fake peer")
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = PEER_BINARY.with_suffix(".tmp")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(PEER_SOURCE)], check=True)
    tmp.replace(PEER_BINARY)
    return PEER_BINARY


class FakePeer:
    """The C fake QMP peer, running in its own process on a Unix socket."""

    def __init__(self, *, oob: bool = False) -> None:
        self._dir = tempfile.mkdtemp(prefix="qmplex-bench-")
        self.path = os.path.join(self._dir, "peer.sock")
        args = [str(build_peer()), self.path] + (["--oob"] if oob else [])
        # stdin is a pipe we never write: when this process dies the peer sees EOF.
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, preexec_fn=peer_preexec)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"fake peer did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FakePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raise_fd_limit(wanted: int = 8192) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (1,000 VMs need > 1,024 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start (or since :func:`reset_peak_rss`)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def now() -> float:
    return time.perf_counter()
