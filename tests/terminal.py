"""A child process on a pseudo-terminal, for tests of the interactive shell."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import termios
import time


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pseudo-terminal, read with a deadline (no sleeps)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        # A session of its own whose controlling terminal is the pty, as in a real
        # terminal: ^C then reaches the shell as SIGINT.
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True, start_new_session=True,
                                     preexec_fn=_take_terminal)
        os.close(slave)
        self.fd = master
        self.seen = ""  # unread output, terminal escape sequences removed
        self.raw = b""  # everything, as written

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """Read until ``pattern`` (a regex) matches the unread output; return the text
        read up to the end of the match and keep the rest."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            m = regex.search(self.seen)
            if m:
                before, self.seen = self.seen[:m.end()], self.seen[m.end():]
                return before
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen; output so far: {self.seen!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"EOF before {pattern!r}; output: {self.seen!r}")
                self.raw += data
                self.seen += _ANSI.sub("", data.decode(errors="replace"))

    def interrupt(self, pattern: str, attempts: int = 20) -> str:
        """Type Ctrl-C until ``pattern`` shows.

        Python's readline acts on SIGINT only when it interrupts readline's wait for a
        key; a ^C that lands while readline is still echoing the previous key is noted
        but not acted on until the next one, which a person never types that fast.
        """
        for _ in range(attempts - 1):
            self.send("\x03")
            try:
                return self.expect(pattern, timeout=0.5)
            except AssertionError:
                continue
        self.send("\x03")
        return self.expect(pattern)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            os.close(self.fd)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: What the shell's prompt looks like in ``Terminal.seen`` (a regex).
PROMPT = r"qmplex> "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
