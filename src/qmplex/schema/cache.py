"""The process-wide schema cache: one :class:`Schema` per QEMU build, behind a lock.

A schema is about 200 KB of JSON and identical for every QEMU started from one
binary, so :func:`~qmplex.schema.load_schema` keeps the schemas it built here, keyed
by the build: version, package string and target architecture (the package string
alone does not tell apart the qemu-system-* binaries of one distribution package, and
their schemas differ). :func:`cache_key` says which peers may be cached at all.

The cache is the only state the schema layer shares between reactors, which may run on
different threads: the lock guards every access (and the eviction's read-then-delete).
It holds at most :data:`SCHEMA_CACHE_ENTRIES` schemas, dropping the oldest first.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.messages import QMPVersion
    from .model import Schema

__all__ = ["SCHEMA_CACHE_ENTRIES", "clear_schema_cache"]

#: The most schemas :func:`~qmplex.schema.load_schema` keeps in its process-wide cache.
SCHEMA_CACHE_ENTRIES = 16

#: (major, minor, micro, package, target architecture)
CacheKey = tuple[int, int, int, str, str]

_cache: dict[CacheKey, Schema] = {}
_cache_lock = threading.Lock()


def clear_schema_cache() -> None:
    """Forget every schema in :func:`~qmplex.schema.load_schema`'s process-wide cache."""
    with _cache_lock:
        _cache.clear()


def cache_key(version: QMPVersion | None, arch: object) -> CacheKey | None:
    """Return the cache key of a peer's build, or None if it must not be cached.

    A peer with an empty package string (a local build, whose configuration the version
    does not pin down), an unknown version or an unknown architecture is not cached.

    Args:
        version: the peer's version from its greeting.
        arch: the ``arch`` member of its ``query-target`` reply (anything else than a
            string counts as unknown).
    """
    if version is None or not version.package or not isinstance(arch, str):
        return None
    return (version.major, version.minor, version.micro, version.package, arch)


def cache_get(key: CacheKey) -> Schema | None:
    """Return the cached schema of ``key``, or None."""
    with _cache_lock:
        return _cache.get(key)


def cache_put(key: CacheKey, schema: Schema) -> None:
    """Cache ``schema`` under ``key``, evicting the oldest entries beyond the bound."""
    with _cache_lock:
        while len(_cache) >= SCHEMA_CACHE_ENTRIES:
            del _cache[next(iter(_cache))]
        _cache[key] = schema
