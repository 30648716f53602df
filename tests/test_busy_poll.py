"""Adaptive busy-polling in the reactor: the window opens after quick waits, widens
when polling catches I/O late in it, narrows and shuts (for longer each time) when it
finds nothing, never outlasts a due timer, is off with busy_poll=0, and only
``Future.result()`` polls (``run``/``run_once`` sleep at once).

The passes are run as ``Future.result()`` runs them (``_run_once(timeout, busy=True)``)
so that each test controls exactly how many there are. The reactor polls only while its
thread is the process's only Python thread; the rig makes that so (whatever threads
other tests left behind), except where a test starts one of its own.

The window is timed by the reactor's spin clock: a fake one here, stepping on each
read, so every wait's length (as the reactor sees it) is exact and the tests decide no
race. The selector records the timeout of each poll it is asked for, and makes a byte
arrive when the test says: on the n-th non-blocking poll, or once the reactor sleeps.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator

import pytest

from qmplex import Future, Reactor
from qmplex import reactor as reactor_module
from qmplex.reactor import DEFAULT_BUSY_POLL

MAX = 0.001  # busy_poll of these reactors: 1 ms
STEP = 0.0001  # what each read of the fake spin clock advances it by


class RecordingSelector(selectors.DefaultSelector):
    """The default selector, recording the timeout of every select(); with ``sender``
    set, it sends a byte from there just before the ``arrive_on_poll``-th
    non-blocking select of a pass, or (``arrive_when_asleep``) before a select that
    may sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.sender: socket.socket | None = None
        self.arrive_on_poll = 0
        self.arrive_when_asleep = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        if self.sender is not None:
            polls = sum(1 for t in self.timeouts if t == 0)
            if (timeout == 0 and polls == self.arrive_on_poll) or \
                    (timeout != 0 and self.arrive_when_asleep):
                self.sender.send(b"x")
                self.sender = None
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

    @property
    def window(self) -> float:
        return self.reactor.busy_poll_window

    def _pass(self, *, on_poll: int = 0, asleep: bool = False) -> None:
        self.selector.timeouts.clear()
        self.selector.sender = self.peer
        self.selector.arrive_on_poll = on_poll
        self.selector.arrive_when_asleep = asleep
        before = self.received
        self.reactor._run_once(None, True)
        assert self.received == before + 1
        self.selector.sender = None

    def quick_wait(self) -> None:
        """A pass whose byte comes once it sleeps: it slept 2 steps, within MAX."""
        self._pass(asleep=True)

    def caught_on_poll(self, n: int) -> None:
        """A pass with a window whose byte comes just before its n-th poll."""
        self._pass(on_poll=n)
        assert self.selector.timeouts == [0] * n  # caught polling: it never slept

    def nothing_comes(self) -> None:
        """A pass of at most 20 ms in which no I/O comes."""
        self.selector.timeouts.clear()
        self.reactor._run_once(0.02, True)

    def close(self) -> None:
        self.reactor.close()
        self.ours.close()
        self.peer.close()


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(reactor_module, "_active_threads", lambda: 1)
    r = Rig()
    yield r
    r.close()


def test_default_reactor_busy_polls_and_starts_with_the_window_shut() -> None:
    with Reactor() as r:
        assert r.busy_poll == DEFAULT_BUSY_POLL > 0
        assert r.busy_poll_window == 0.0


def test_a_quick_wait_opens_the_window_at_half_of_busy_poll(rig: Rig) -> None:
    rig.quick_wait()
    assert rig.selector.timeouts == [None]  # no window yet: it slept at once
    assert rig.window == MAX / 2


def test_io_caught_late_in_the_window_widens_it_and_early_keeps_it(rig: Rig) -> None:
    rig.quick_wait()
    rig.caught_on_poll(1)  # after 1 step of a 5-step window: early
    assert rig.window == MAX / 2
    rig.caught_on_poll(4)  # after 4 steps: late
    assert rig.window == MAX
    rig.caught_on_poll(9)  # late again, but the window is at busy_poll already
    assert rig.window == MAX


def test_a_window_that_finds_nothing_narrows_then_shuts(rig: Rig) -> None:
    rig.quick_wait()
    rig.caught_on_poll(4)
    assert rig.window == MAX
    windows = []
    for _ in range(3):
        rig.nothing_comes()
        timeouts = rig.selector.timeouts
        # Non-blocking polls for the window, then one sleep for the rest of the 20 ms.
        assert len(timeouts) > 1 and all(t == 0 for t in timeouts[:-1])
        assert timeouts[-1] is not None and 0.015 < timeouts[-1] < 0.02
        windows.append(rig.window)
    assert windows == [MAX / 2, MAX / 4, 0.0]
    rig.nothing_comes()  # shut: the pass sleeps at once
    assert rig.selector.timeouts == [0.02]


def test_each_shutting_in_a_row_skips_more_quick_waits_until_polling_pays(rig: Rig) -> None:
    def shut() -> None:
        while rig.window:
            rig.nothing_comes()

    def quick_waits_until_open() -> int:
        n = 0
        while not rig.window:
            rig.quick_wait()
            n += 1
            assert n < 100
        return n

    assert quick_waits_until_open() == 1
    skipped = []
    for _ in range(4):
        shut()
        skipped.append(quick_waits_until_open() - 1)
    assert skipped == [1, 2, 4, 8]
    rig.caught_on_poll(1)  # polling paid: the next shutting skips one wait again
    shut()
    assert quick_waits_until_open() - 1 == 1


def test_a_timer_due_within_the_window_ends_the_polling_without_a_sleep(rig: Rig) -> None:
    rig.quick_wait()
    rig.caught_on_poll(4)
    assert rig.window == MAX
    fired: list[str] = []
    rig.reactor.call_later(MAX / 2, fired.append, "timer")
    rig.selector.timeouts.clear()
    rig.reactor._run_once(None, True)
    # Polled for at most the timer's delay (the spin clock steps STEP per read), never
    # asked to block, and learnt nothing from it.
    assert rig.selector.timeouts and all(t == 0 for t in rig.selector.timeouts)
    assert len(rig.selector.timeouts) <= (MAX / 2) / STEP + 1
    assert rig.window == MAX
    while not fired:
        rig.reactor._run_once(None, True)
    assert fired == ["timer"]


def test_only_future_result_polls_run_once_sleeps_at_once(rig: Rig) -> None:
    rig.quick_wait()
    assert rig.window == MAX / 2
    rig.selector.timeouts.clear()
    rig.reactor.run_once(0.02)  # a reactor driven by run_once/run never polls
    assert rig.selector.timeouts == [0.02]
    assert rig.window == MAX / 2
    # Future.result() driving the reactor does: the byte comes on its first poll.
    done: Future[None] = Future(rig.reactor)
    rig.selector.timeouts.clear()
    rig.selector.sender, rig.selector.arrive_on_poll = rig.peer, 1
    rig.reactor.remove_reader(rig.ours.fileno())

    def read_and_finish() -> None:
        rig._on_readable()
        done.set_result(None)

    rig.reactor.add_reader(rig.ours.fileno(), read_and_finish)
    done.result(timeout=5)
    assert rig.selector.timeouts[0] == 0
    assert rig.received == 2


def test_no_polling_while_another_python_thread_exists(rig: Rig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rig.quick_wait()
    assert rig.window == MAX / 2
    monkeypatch.undo()  # the real thread count from here on
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="another Python thread")
    other.start()
    try:
        for _ in range(3):
            rig.quick_wait()
            assert rig.selector.timeouts == [None]  # slept at once: no polling
            rig.nothing_comes()
            assert rig.selector.timeouts == [0.02]
        assert rig.window == MAX / 2  # and nothing learnt meanwhile
    finally:
        release.set()
        other.join()


def test_busy_poll_zero_never_polls_before_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor_module, "_active_threads", lambda: 1)
    rig = Rig(busy_poll=0)
    try:
        for _ in range(3):
            rig.quick_wait()
            assert rig.selector.timeouts == [None]
        assert rig.window == 0.0
        rig.nothing_comes()
        assert rig.selector.timeouts == [0.02]
    finally:
        rig.close()


@pytest.mark.parametrize("bad", [-1e-6, float("nan"), float("inf")])
def test_bad_busy_poll_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        Reactor(busy_poll=bad)
