"""What the operations need from a client, and the command sequences they share.

:class:`Executor` is everything an operation may use of the object it runs over:
``execute``, ``wait_event`` and ``version``; :class:`CommandSender` is its part that
sends commands (``execute`` and ``version``: what the schema layer needs).
:class:`~qmplex.Client` provides both; so may a test double or a recorder. This is the
one place where the signature of ``execute`` is written for typing.

The functions below are the steps several operations share: a command whose
``return`` is dropped, a step that is undone when the next one fails, ``getfd``
sequences, and the shape of ``object-add`` by QEMU version. They submit commands
through the executor and return a :class:`~qmplex.Future` at once; they never block,
never touch a socket and keep no state. Only the public API of
:class:`~qmplex.Future` and :func:`~qmplex.gather` is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ..core.messages import QMPVersion
from ..events import Event, EventFilter
from ..futures import Future, gather

__all__ = ["CommandSender", "Executor"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CommandSender(Protocol):
    """What sends commands: the peer's version and ``execute`` (:class:`~qmplex.Client`
    is one; :mod:`qmplex.schema` needs no more)."""

    @property
    def version(self) -> QMPVersion | None:
        """The peer's version; None before the greeting (then the newest QEMU is
        assumed)."""

    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        oob: bool = False,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        """Submit one QMP command; see :meth:`qmplex.Client.execute`."""


class Executor(CommandSender, Protocol):
    """What an operation needs from a client (:class:`~qmplex.Client` is one).

    Every namespace of :mod:`qmplex.ops` (``VMOps(executor)`` ...) runs over one.
    """

    def wait_event(
        self,
        name: str | EventFilter,
        match: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Future[Event]:
        """Wait for the next matching event; see :meth:`qmplex.Client.wait_event`."""


# ----------------------------------------------------------------- versions
def qemu_at_least(executor: Executor, major: int, minor: int) -> bool:
    """True if the peer is QEMU ``major.minor`` or newer, or its version is unknown."""
    version = executor.version
    return version is None or version.at_least(major, minor)


def object_add_args(executor: Executor, qom_type: str, object_id: str,
                    props: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``object-add`` for this peer."""
    # QEMU 5.0 deprecated the "props" wrapper (flat members instead); 6.0 removed it.
    if qemu_at_least(executor, 5, 0):
        return {"qom-type": qom_type, "id": object_id, **props}
    return {"qom-type": qom_type, "id": object_id, "props": props}


# ---------------------------------------------------------------- futures
def discard(_: object) -> None:
    """Drop a QMP ``return`` value (``{}`` for commands that only act)."""
    return None


def done(like: Future[Any], value: T) -> Future[T]:
    """A future on ``like``'s reactor, already completed with ``value``."""
    fut: Future[T] = Future(like.reactor)
    fut.set_result(value)
    return fut


def failed(like: Future[Any], exc: BaseException) -> Future[T]:
    """A future on ``like``'s reactor, already failed with ``exc``."""
    fut: Future[T] = Future(like.reactor)
    fut.set_exception(exc)
    return fut


def settle(futures: Sequence[Future[Any]]) -> Future[list[Any]]:
    """Return a future done once every one of ``futures`` is done, whatever their
    outcome (it fails only when cancelled). Cancelling it cancels them all."""

    def _as_done(_: BaseException) -> Future[None]:
        return done(futures[0], None)

    return gather([f.then(discard).recover(_as_done) for f in futures])


def first_error(futures: Sequence[Future[Any]]) -> BaseException | None:
    """The exception of the first failed future among ``futures`` (all done)."""
    for f in futures:
        exc = f.exception()
        if exc is not None:
            return exc
    return None


def fail_after(cleanups: Sequence[Future[Any]], error: BaseException, what: str,
               level: int = logging.WARNING) -> Future[T]:
    """Return a future that fails with ``error`` once every cleanup step is done; a
    failed cleanup step is logged at ``level`` (it must never hide ``error``)."""
    out: Future[T] = Future(cleanups[0].reactor)

    def _after(_: Future[list[Any]]) -> None:
        for step in cleanups:
            problem = step.exception()
            if problem is not None:
                logger.log(level, "%s failed while undoing after %r: %s", what, error, problem)
        out.set_exception(error)

    settle(cleanups).add_done_callback(_after)
    return out


# ---------------------------------------------------------------- commands
def command(executor: Executor, name: str, arguments: Mapping[str, Any] | None,
            timeout: float | None) -> Future[None]:
    """Submit ``name``; the future is done (None) when QEMU answers."""
    return executor.execute(name, arguments, timeout=timeout).then(discard)


def attempt(executor: Executor, name: str, arguments: Mapping[str, Any],
            timeout: float | None, like: Future[Any]) -> Future[Any]:
    """Submit an undo step; a refusal to submit becomes a failed future."""
    try:
        return executor.execute(name, arguments, timeout=timeout)
    except Exception as exc:  # e.g. StateError: the connection is gone
        return failed(like, exc)


def undo_on_failure(executor: Executor, step: Future[Any], undo: str,
                    undo_args: Mapping[str, Any], timeout: float | None) -> Future[None]:
    """``step``'s outcome; if it fails, send ``undo`` first, then fail with its error."""

    def _roll_back(error: BaseException) -> Future[None]:
        cleanup = attempt(executor, undo, undo_args, timeout, step)
        return fail_after([cleanup], error, f"{undo} {dict(undo_args)}")

    return step.then(discard).recover(_roll_back)


def with_named_fds(executor: Executor, op: str, named: Sequence[tuple[str, int]],
                   name: str, arguments: Mapping[str, Any],
                   timeout: float | None) -> Future[None]:
    """Send ``getfd`` for each ``(fdname, fd)``, then command ``name``, all at once.

    They are submitted back to back, so they reach QEMU in this order with no other
    command of this client in between: the fixed names (``fd0`` ...) cannot be
    taken over by a concurrent operation before the command consumes them. When
    anything fails, the names registered are released with ``closefd`` and the
    operation fails with the first error (a ``getfd``'s before the command's).
    """
    getfds = [executor.execute("getfd", {"fdname": fdname}, fds=[fd], timeout=timeout)
              for fdname, fd in named]
    main = executor.execute(name, arguments, timeout=timeout)

    def _conclude(_: list[Any]) -> Future[None]:
        error = first_error(getfds) or first_error([main])
        if error is None:
            return done(main, None)
        registered = [fdname for (fdname, _), f in zip(named, getfds, strict=True)
                      if f.exception() is None]
        if not registered:
            return failed(main, error)
        closes = [attempt(executor, "closefd", {"fdname": fdname}, timeout, main)
                  for fdname in registered]
        # QEMU takes a name off its list as soon as a command uses it, even when the
        # command then fails: "not found" is the usual answer here, so log quietly.
        return fail_after(closes, error, f"{op}: closefd", logging.DEBUG)

    return settle([*getfds, main]).chain(_conclude)
