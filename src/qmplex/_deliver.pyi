"""Types of the C extension ``qmplex._deliver`` (``csrc/deliver.c``)."""

from collections.abc import Callable, Iterator
from typing import Any

EXHAUSTED: int
LINE: int
CLOSED: int
CHANGED: int

def configure(
    loads: Callable[[bytes], Any],
    event_type: type[tuple[Any, ...]],
    failed: Callable[[Any], object],
    closed: object,
    decode_error: type[BaseException],
    route_base: int,
    /,
) -> None: ...
def deliver(
    buf: bytes | bytearray,
    tag: int,
    start: int,
    end: int,
    fields: Iterator[int],
    names_at: tuple[Any, ...],
    handlers_at: tuple[Any, ...],
    router: Any,
    version: int,
    proto: Any,
    /,
) -> tuple[int, int, int, int]: ...
