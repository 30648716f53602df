"""Helpers for the thread tests: a reactor run by its own thread, worker threads whose
failures reach the test, a capture of the ``qmplex`` loggers' errors, a selector that
tells when the reactor sleeps, and a tracer that pauses a thread at a chosen line.

Nothing here sleeps to synchronise: every wait is on an ``Event``, a ``Condition``, a
``Barrier``, a join or a future, and every one is bounded.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import selectors
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from qmplex import Reactor

#: The longest any single wait in these tests may take (a safety bound, never a delay).
BOUND = 20.0


def open_fds() -> set[int]:
    """The descriptors open in this process now."""
    return {int(x) for x in os.listdir("/proc/self/fd")}


class ReactorThread:
    """Runs ``reactor.run()`` on a thread of its own until :meth:`stop`.

    Attributes:
        ident: the thread's ``threading.get_ident()`` (known once started).
    """

    def __init__(self, reactor: Reactor, name: str = "reactor") -> None:
        self.reactor = reactor
        self.ident: int | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        self.ident = threading.get_ident()
        self._started.set()
        try:
            self.reactor.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> ReactorThread:
        self._thread.start()
        assert self._started.wait(BOUND), "the reactor thread did not start"
        # run() has the drive once a handed-over callback runs on this thread.
        assert self.reactor.submit(threading.get_ident).result(BOUND) == self.ident
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop ``run()`` and join the thread (bounded); raise what ``run()`` raised."""
        if self._thread.is_alive():
            self.reactor.stop()
            self._thread.join(BOUND)
            assert not self._thread.is_alive(), "reactor.run() did not return after stop()"
        if self.error is not None:
            raise AssertionError(f"reactor.run() raised {self.error!r}") from self.error

    def __enter__(self) -> ReactorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Workers:
    """Start ``n`` threads running ``fn(k)`` together (behind a barrier); :meth:`join`
    waits for all (bounded) and re-raises the first exception one of them raised."""

    def __init__(self, n: int, fn: Callable[[int], object], name: str = "worker") -> None:
        self.errors: list[tuple[int, BaseException]] = []
        self._barrier = threading.Barrier(n)
        self._fn = fn
        self._threads = [threading.Thread(target=self._main, args=(k,), name=f"{name}-{k}",
                                          daemon=True) for k in range(n)]
        self.idents: dict[int, int] = {}

    def _main(self, k: int) -> None:
        self.idents[k] = threading.get_ident()
        try:
            self._barrier.wait(BOUND)
            self._fn(k)
        except BaseException as exc:
            self.errors.append((k, exc))

    def start(self) -> Workers:
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        for t in self._threads:
            t.join(timeout)
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"threads still running after {timeout} s: {stuck}"
        if self.errors:
            k, exc = self.errors[0]
            raise AssertionError(f"worker {k} failed: {exc!r} "
                                 f"({len(self.errors)} worker(s) failed)") from exc


class ErrorRecords(logging.Handler):
    """Collects the records of level ERROR and above logged under ``qmplex``."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def unexpected(self, provoked: type[BaseException]) -> list[str]:
        """The records not caused by an exception of type ``provoked``."""
        out = []
        for rec in list(self.records):
            exc = rec.exc_info[1] if rec.exc_info else None
            if not isinstance(exc, provoked):
                out.append(f"{rec.name}: {rec.getMessage()} ({exc!r})")
        return out


@contextlib.contextmanager
def qmplex_errors() -> Iterator[ErrorRecords]:
    """Capture ERROR records of the ``qmplex`` loggers for the block's length."""
    handler = ErrorRecords()
    log = logging.getLogger("qmplex")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


class SleepSpy(selectors.DefaultSelector):
    """A selector that tells when the reactor blocks in ``select`` with no timeout: the
    reactor is idle, waiting for I/O or a wake-up, and has nothing else to do."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.sleeping = False
        self.sleeps = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        idle = timeout is None
        if idle:
            with self.cond:
                self.sleeping = True
                self.sleeps += 1
                self.cond.notify_all()
        try:
            result: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
            return result
        finally:
            if idle:
                with self.cond:
                    self.sleeping = False

    def wait_asleep(self, timeout: float = BOUND) -> None:
        """Block until the reactor sleeps in ``select(None)``."""
        with self.cond:
            assert self.cond.wait_for(lambda: self.sleeping, timeout), \
                "the reactor never went idle"


class PauseAt:
    """Pause the thread that installs :meth:`tracer` when it reaches the line of
    ``function`` whose source contains ``text`` (the first time only), until
    :meth:`resume`.

    Used to force one interleaving of two threads deterministically (no sleeps).

    Raises (from :meth:`__init__`):
        RuntimeError: ``function`` has no such line: the code moved, update the test.
    """

    def __init__(self, function: Callable[..., Any], text: str) -> None:
        func: Any = inspect.unwrap(function)
        self.code = func.__code__
        lines, first = inspect.getsourcelines(func)
        found = [first + i for i, line in enumerate(lines) if text in line]
        if len(found) != 1:
            raise RuntimeError(f"{func.__qualname__} has {len(found)} lines containing "
                               f"{text!r}: the code changed, update this test")
        self.lineno = found[0]
        self.paused = threading.Event()
        self.returned = threading.Event()  # the paused call has returned since
        self._go = threading.Event()
        self._used = False

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno == self.lineno and not self._used:
            self._used = True
            self.paused.set()
            self._go.wait(BOUND)
        elif event == "return" and self._used:
            self.returned.set()
        return self._local

    def _global(self, frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is self.code:
            return self._local
        return None

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn()`` on this thread with the pause armed."""
        sys.settrace(self._global)
        try:
            return fn()
        finally:
            sys.settrace(None)

    def wait_paused(self) -> None:
        assert self.paused.wait(BOUND), "the traced thread never reached the line"

    def resume(self) -> None:
        self._go.set()

    def wait_returned(self) -> None:
        assert self.returned.wait(BOUND), "the paused call never returned"


class Returned:
    """An ``Event`` set when the thread that runs :meth:`run` returns from
    ``function`` (the first time)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        func: Any = inspect.unwrap(function)
        self.code = func.__code__
        self.event = threading.Event()

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "return":
            self.event.set()
        return self._local

    def _global(self, frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is self.code and not self.event.is_set():
            return self._local
        return None

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn()`` on this thread with the signal armed."""
        sys.settrace(self._global)
        try:
            return fn()
        finally:
            sys.settrace(None)

    def wait(self) -> None:
        assert self.event.wait(BOUND), f"{self.code.co_name} never returned"
