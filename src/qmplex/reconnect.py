"""The reconnect policy a client follows after its connection is lost.

A :class:`ReconnectPolicy` is a value (frozen): it says how long to wait before each
attempt (exponential backoff with jitter, capped), how long one attempt may take, and
when to give up. :class:`~qmplex.Client` applies it (``Client(..., reconnect=...)``);
this module only computes delays.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client reconnects after an established connection is lost.

    The client waits ``delay(n)`` seconds before attempt ``n`` (1, 2, ...): ``initial``
    times ``multiplier ** (n - 1)``, at most ``maximum``, each spread by ``jitter`` (a
    fraction: 0.2 picks uniformly within +-20%), so that a host full of managers does
    not reconnect in lockstep after QEMU restarts.

    What happens meanwhile (see the guide's "Reconnecting"):

    - commands that were in flight when the connection was lost fail with
      ``ConnectionLost``: QEMU may have run them, so they are never sent again;
    - commands submitted while disconnected, and those still queued (never written),
      wait and go out on the next connection, subject to their own timeouts; if the
      policy gives up, they fail with ``ConnectionLost``;
    - event subscriptions (``on_event``) carry over; ``wait_event`` futures fail with
      ``ConnectionLost`` when the connection is lost (events may be missed meanwhile).

    Args:
        initial: seconds before the first attempt.
        multiplier: growth of the delay per failed attempt (>= 1).
        maximum: the longest delay, in seconds.
        jitter: the random spread of each delay, a fraction in [0, 1).
        connect_timeout: seconds one attempt may take (connect, greeting, negotiation);
            None: no limit.
        max_attempts: give up after this many failed attempts in a row (None: never).
    """

    initial: float = 0.1
    multiplier: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2
    connect_timeout: float | None = 10.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ValueError: a field is out of its documented range (``initial`` < 0,
                ``multiplier`` < 1, ``maximum`` < ``initial``, ``jitter`` outside [0, 1),
                ``connect_timeout`` <= 0, ``max_attempts`` < 1, or a number not finite).
        """
        if not (math.isfinite(self.initial) and self.initial >= 0):
            raise ValueError(f"initial must be a finite number >= 0, not {self.initial!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"multiplier must be a finite number >= 1, not {self.multiplier!r}")
        if not (math.isfinite(self.maximum) and self.maximum >= self.initial):
            raise ValueError(f"maximum must be finite and >= initial, not {self.maximum!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter!r}")
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 or None, not {self.connect_timeout!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, not {self.max_attempts!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 for the first)."""
        steps = max(attempt - 1, 0)
        if self.initial == 0 or self.multiplier == 1:
            base = float(self.initial)
        elif steps >= math.log(self.maximum / self.initial, self.multiplier):
            base = self.maximum  # (and no float overflow, however many attempts)
        else:
            base = min(self.initial * self.multiplier ** steps, self.maximum)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            base *= 1 + spread
        return max(base, 0.0)

    def gives_up_after(self, failed: int) -> bool:
        """Return True when ``failed`` attempts in a row mean: stop trying."""
        return self.max_attempts is not None and failed >= self.max_attempts
