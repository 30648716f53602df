"""Finding the QEMU binary, its version, and the default headless command line.

Nothing here starts a long-lived process: ``qemu_version`` runs ``binary --version``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import unittest

from .errors import STDERR_TAIL_CHARS, QemuError

__all__ = [
    "DEFAULT_BINARY",
    "ENV_BINARY",
    "ENV_REQUIRE",
    "default_args",
    "find_qemu",
    "qemu_or_skip",
    "qemu_version",
]

#: The QEMU binary used when none is given.
DEFAULT_BINARY = "qemu-system-x86_64"
#: Environment variable naming the binary to use instead of :data:`DEFAULT_BINARY`.
ENV_BINARY = "QMPLEX_QEMU"
#: When this environment variable is ``1``, :func:`qemu_or_skip` fails instead of skipping.
ENV_REQUIRE = "QMPLEX_REQUIRE_QEMU"

_VERSION_RE = re.compile(r"version\s+(\d+)\.(\d+)(?:\.(\d+))?")


def find_qemu(binary: str = DEFAULT_BINARY) -> str | None:
    """Return the full path of a runnable QEMU binary, or None.

    Args:
        binary: a command name looked up on ``PATH``, or a path. When it is
            :data:`DEFAULT_BINARY` and the environment variable ``QMPLEX_QEMU`` is set,
            that variable's value is used instead.

    Returns:
        An absolute path to an executable file, or None when there is none.
    """
    if binary == DEFAULT_BINARY:
        binary = os.environ.get(ENV_BINARY) or binary
    found = shutil.which(binary)
    return os.path.abspath(found) if found is not None else None


def qemu_version(binary: str = DEFAULT_BINARY) -> tuple[int, int, int]:
    """Return QEMU's version as ``(major, minor, micro)``, from ``binary --version``.

    Args:
        binary: the QEMU binary (name or path).

    Raises:
        QemuError: the binary cannot be run, fails, or prints no version.
    """
    try:
        done = subprocess.run(
            [binary, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError(f"cannot run {binary} --version: {exc}") from exc
    out = done.stdout.decode("utf-8", "replace")
    err = done.stderr.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
    if done.returncode != 0:
        raise QemuError(f"{binary} --version failed", returncode=done.returncode, stderr=err)
    match = _VERSION_RE.search(out)
    if match is None:
        raise QemuError(f"{binary} --version printed no version: {out[:200]!r}", stderr=err)
    return int(match[1]), int(match[2]), int(match[3] or 0)


def qemu_or_skip() -> str:
    """Return the QEMU binary for a test, or skip the test when there is none.

    The binary is :func:`find_qemu`'s answer (``QMPLEX_QEMU`` or
    ``qemu-system-x86_64`` on ``PATH``). When it is missing the test is skipped with
    the reason, by raising :class:`unittest.SkipTest` (which pytest and unittest both
    honour), unless ``QMPLEX_REQUIRE_QEMU=1`` is set (as in CI): then the test fails.

    Raises:
        unittest.SkipTest: no QEMU and QEMU is not required.
        QemuError: no QEMU although ``QMPLEX_REQUIRE_QEMU=1``.
    """
    binary = find_qemu()
    if binary is not None:
        return binary
    wanted = os.environ.get(ENV_BINARY) or DEFAULT_BINARY
    reason = f"{wanted} not found (set {ENV_BINARY} to a QEMU binary)"
    if os.environ.get(ENV_REQUIRE) == "1":
        raise QemuError(f"{reason}, but {ENV_REQUIRE}=1 requires QEMU")
    raise unittest.SkipTest(reason)


def default_args(machine: str = "pc", memory_mib: int = 64, paused: bool = True) -> list[str]:
    """Return the headless QEMU command line used when no ``args`` are given.

    ``-machine MACHINE -accel tcg -nodefaults -display none [-S] -m MEMORY``: no
    default devices, no display, TCG (Debian's QEMU has no ``qtest`` accelerator).
    """
    line = ["-machine", machine, "-accel", "tcg", "-nodefaults", "-display", "none"]
    if paused:
        line.append("-S")
    line += ["-m", str(memory_mib)]
    return line
