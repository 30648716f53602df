"""Adaptive busy-polling in the reactor: the window grows while waits end quickly,
narrows when they do not, never outlasts a due timer, and is off with busy_poll=0.

The window is timed by the reactor's spin clock: a fake one here, stepping on each
read, so every wait's length (as the reactor sees it) is exact and the tests decide no
race. The selector records the timeout of each poll it is asked for.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from qmplex import Reactor
from qmplex.reactor import DEFAULT_BUSY_POLL

MAX = 0.001  # busy_poll of these reactors: 1 ms
STEP = 0.0001  # what each read of the fake spin clock advances it by


class RecordingSelector(selectors.DefaultSelector):
    """The default selector, recording the timeout of every select(). With ``arrive``
    set, a select that may sleep first sends a byte from there: I/O that comes while
    the reactor sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.arrive: socket.socket | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        if self.arrive is not None and timeout != 0:
            self.arrive.send(b"x")
        return super().select(timeout)


class SteppingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += STEP
        return self.now


class Rig:
    """A reactor polling a socket pair through a recording selector."""

    def __init__(self, busy_poll: float = MAX) -> None:
        self.selector = RecordingSelector()
        self.reactor = Reactor(selector=self.selector, busy_poll=busy_poll)
        self.reactor._spin_clock = SteppingClock()
        self.ours, self.peer = socket.socketpair()
        self.ours.setblocking(False)
        self.received = 0
        self.reactor.add_reader(self.ours.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        self.received += len(self.ours.recv(4096))

    def pass_with_input(self) -> None:
        """One pass that would sleep, with a byte already waiting to be read."""
        self.peer.send(b"x")
        self.selector.timeouts.clear()
        before = self.received
        self.reactor.run_once(None)
        assert self.received == before + 1

    def pass_with_input_while_asleep(self) -> None:
        """One pass that would sleep, where a byte comes only once it sleeps."""
        self.selector.arrive = self.peer
        try:
            self.selector.timeouts.clear()
            before = self.received
            self.reactor.run_once(None)
            assert self.received == before + 1
        finally:
            self.selector.arrive = None

    def widen(self) -> None:
        """Bring the window to busy_poll (see test_quick_waits_widen_the_window)."""
        for _ in range(3):
            self.pass_with_input_while_asleep()
        assert self.reactor.busy_poll_window == MAX

    def close(self) -> None:
        self.reactor.close()
        self.ours.close()
        self.peer.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_default_reactor_busy_polls_and_starts_with_no_window() -> None:
    with Reactor() as r:
        assert r.busy_poll == DEFAULT_BUSY_POLL > 0
        assert r.busy_poll_window == 0.0


def test_quick_waits_widen_the_window_up_to_busy_poll(rig: Rig) -> None:
    # Each pass polls for its window (one spin-clock step per poll), then sleeps, and
    # its byte comes then: the wait took (window + a few steps), within 1 ms until the
    # window is the whole 1 ms.
    windows = []
    for _ in range(4):
        rig.pass_with_input_while_asleep()
        windows.append(rig.reactor.busy_poll_window)
    assert windows == [MAX / 4, MAX / 2, MAX, MAX / 2]


def test_with_a_window_io_is_caught_by_polling_without_sleeping(rig: Rig) -> None:
    rig.pass_with_input_while_asleep()
    assert rig.reactor.busy_poll_window == MAX / 4
    rig.pass_with_input()
    # Only non-blocking polls: the byte was found before the pass would have slept.
    assert rig.selector.timeouts == [0]
    assert rig.reactor.busy_poll_window == MAX / 4  # polling paid: kept as it is


def test_waits_longer_than_busy_poll_narrow_the_window_to_none(rig: Rig) -> None:
    rig.widen()
    windows = []
    for _ in range(3):
        rig.selector.timeouts.clear()
        rig.reactor.run_once(0.02)  # nothing arrives: the pass polls, then sleeps
        timeouts = rig.selector.timeouts
        # Non-blocking polls for the window, then one sleep for the rest of the 20 ms.
        assert len(timeouts) > 1 and all(t == 0 for t in timeouts[:-1])
        assert timeouts[-1] is not None and 0.015 < timeouts[-1] < 0.02
        windows.append(rig.reactor.busy_poll_window)
    assert windows == [MAX / 2, MAX / 4, 0.0]
    # With no window left, a pass sleeps at once.
    rig.selector.timeouts.clear()
    rig.reactor.run_once(0.02)
    assert rig.selector.timeouts == [0.02]
    assert rig.reactor.busy_poll_window == 0.0


def test_a_timer_due_within_the_window_ends_the_polling_without_a_sleep(rig: Rig) -> None:
    rig.widen()
    fired: list[str] = []
    rig.reactor.call_later(MAX / 2, fired.append, "timer")
    rig.selector.timeouts.clear()
    rig.reactor.run_once(None)
    # Polled for at most the timer's delay (the spin clock steps STEP per read), never
    # asked to block.
    assert rig.selector.timeouts and all(t == 0 for t in rig.selector.timeouts)
    assert len(rig.selector.timeouts) <= (MAX / 2) / STEP + 1
    assert rig.reactor.busy_poll_window == MAX  # a short timer wait teaches nothing
    while not fired:
        rig.reactor.run_once(None)
    assert fired == ["timer"]


def test_busy_poll_zero_never_polls_before_sleeping() -> None:
    rig = Rig(busy_poll=0)
    try:
        for _ in range(3):
            rig.pass_with_input()
            assert rig.selector.timeouts == [None]
            rig.pass_with_input_while_asleep()
            assert rig.selector.timeouts == [None]
        assert rig.reactor.busy_poll_window == 0.0
        rig.selector.timeouts.clear()
        rig.reactor.run_once(0.001)
        assert rig.selector.timeouts == [0.001]
    finally:
        rig.close()


@pytest.mark.parametrize("bad", [-1e-6, float("nan"), float("inf")])
def test_bad_busy_poll_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        Reactor(busy_poll=bad)
