"""The shape every measured implementation takes, so one runner drives them all."""

from __future__ import annotations


class Workload:
    """One implementation (qmplex, the raw floor, qemu.qmp, ...) of one benchmark row.

    The runner calls :meth:`open` once, then for each round :meth:`before`,
    :meth:`run` (which times only the measured part itself and returns the row's value,
    e.g. commands per second) and :meth:`after`, then :meth:`close`.
    """

    #: Implementation key: "qmplex", "floor", "qemu.qmp", or a variant.
    impl = "?"
    #: Units done by one round (commands, events, disks), for the table.
    count = 0

    def open(self) -> None:
        pass

    def before(self) -> None:
        pass

    def run(self) -> float:
        raise NotImplementedError

    def after(self) -> None:
        pass

    def close(self) -> None:
        pass


class Skip(Exception):
    """Raised by :meth:`Workload.open` when an implementation cannot run here."""
