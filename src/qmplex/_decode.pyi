"""Types of the C extension ``qmplex._decode`` (``csrc/decode.c``)."""

from collections.abc import Callable
from typing import Any

#: ``framing.KIND_RETURN``, as the module was compiled (``QMPLEX_KIND_RETURN``).
KIND_RETURN: int
#: The ``Py_LIMITED_API`` it was built against (``0x030A0000``), 0 for the full API.
LIMITED_API: int

def configure(
    loads: Callable[[bytes], Any],
    event_type: type[tuple[Any, ...]],
    reply_type: type[tuple[Any, ...]],
    decode_error: type[BaseException],
    route_base: int,
    /,
) -> None: ...
def decode(
    buf: bytes | bytearray,
    spans: list[int],
    index: int,
    names: tuple[str, ...],
    in_flight: dict[Any, Any],
    out: list[Any],
    /,
) -> int: ...
