"""Loading a peer's schema: ``query-qmp-schema`` through a client, or the cache.

:func:`load_schema` returns a future for the :class:`Schema` of a client's peer. It
has no side effect on the client: it only calls its ``execute`` and reads its
``version``, and every call starts a new load. Remembering the load of a connection is
the client's business (:meth:`qmplex.Client.load_schema` keeps one per connection and
forgets it on each connect); sharing schemas between connections is the cache's
(:mod:`qmplex.schema.cache`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CommandError
from ..futures import Future
from .cache import CacheKey, cache_get, cache_key, cache_put
from .model import Schema

if TYPE_CHECKING:
    from .executor import SchemaClient

__all__ = ["load_schema", "loaded_schema"]


def load_schema(client: SchemaClient, *, cache: bool = True) -> Future[Schema]:
    """Load the schema of the client's peer with ``query-qmp-schema``.

    Each call starts a new load and sets nothing on ``client``; use
    :meth:`qmplex.Client.load_schema` (once per connection) unless you keep the future
    yourself. Cancelling the returned future cancels the command under way.

    With ``cache=True`` schemas are shared across connections in this process, keyed
    by QEMU version, package string and target architecture (``query-target``, one
    short round trip, comes first): the package string alone does not tell apart the
    qemu-system-* binaries of one distribution package, and their schemas differ. A
    peer with an empty package string (a local build, whose configuration the version
    does not pin down) is never cached; pass ``cache=False`` for other builds that
    share a version and package string but not a configuration.

    Args:
        client: a connected (or connecting) client, or anything with its ``execute``
            and ``version`` (see :class:`~qmplex.schema.SchemaClient`).
        cache: use and fill the process-wide cache.

    Returns:
        A future for the :class:`Schema` (whose ``version`` is the client's when the
        schema was built); it fails like :meth:`Client.execute`, or with
        :class:`~qmplex.errors.ProtocolError` if the reply is not a schema.
    """
    return _load_cached(client) if cache else _fetch(client, None)


def _fetch(client: SchemaClient, key: CacheKey | None) -> Future[Schema]:
    def build(info: Any) -> Schema:
        schema = Schema.from_introspection(info, version=client.version)
        if key is not None:
            cache_put(key, schema)
        return schema

    return client.execute("query-qmp-schema").then(build)


def _load_cached(client: SchemaClient) -> Future[Schema]:
    target = client.execute("query-target")
    out: Future[Schema] = Future(target.reactor)

    def forward(f: Future[Schema]) -> None:
        if out.done():
            return
        exc = f.exception()
        if f.cancelled():
            out.cancel()
        elif exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    def on_target(f: Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
            return
        exc = f.exception()
        key: CacheKey | None = None
        if exc is None:
            reply = f.result()
            arch = reply.get("arch") if isinstance(reply, Mapping) else None
            key = cache_key(client.version, arch)
            if key is not None:
                hit = cache_get(key)
                if hit is not None:
                    out.set_result(hit)
                    return
        elif not isinstance(exc, CommandError):
            out.set_exception(exc)  # connection lost, timeout ...: no schema either
            return
        # A peer without query-target (a CommandError) is loaded but not cached.
        nxt = _fetch(client, key)
        out._on_cancel = nxt.cancel
        nxt.add_done_callback(forward)

    out._on_cancel = target.cancel
    target.add_done_callback(on_target)
    return out


class _HasSchema(Protocol):
    @property
    def schema(self) -> Schema | None: ...


def loaded_schema(client: _HasSchema) -> Schema | None:
    """Deprecated: read ``client.schema`` instead (this alias goes in the next release).

    Returns:
        ``client.schema``: the schema :meth:`qmplex.Client.load_schema` loaded on the
        current connection, or None.
    """
    warnings.warn("qmplex.schema.loaded_schema(client) is deprecated: use client.schema",
                  DeprecationWarning, stacklevel=2)
    return client.schema
