"""Loading a peer's schema: ``query-qmp-schema`` through a client, or the cache.

:func:`load_schema` returns a future for the :class:`Schema` of a client's peer,
once per connection (the future is kept on the client), and shares schemas between
connections through :mod:`qmplex.schema.cache`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import CommandError
from ..futures import Future
from .cache import CacheKey, cache_get, cache_key, cache_put
from .model import Schema

if TYPE_CHECKING:
    from ..protocol import QMPVersion
    from .executor import SchemaClient

__all__ = ["load_schema", "loaded_schema"]

_MEMO_ATTR = "_schema_load"  # per-connection memo on the client (see load_schema)


def _version_key(version: QMPVersion | None) -> tuple[int, int, int, str] | None:
    if version is None:
        return None
    return (version.major, version.minor, version.micro, version.package)


def _memo(client: SchemaClient) -> Future[Schema] | None:
    """The client's schema load, if it still applies to the current connection."""
    fut: Future[Schema] | None = getattr(client, _MEMO_ATTR, None)
    if fut is None or not fut.done():
        return fut  # a load still running belongs to this connection
    if fut.cancelled() or fut.exception() is not None:
        return None  # retry
    if _version_key(fut.result().version) != _version_key(client.version):
        return None  # a new connection to another QEMU, and Client did not reset us
    return fut


def loaded_schema(client: SchemaClient) -> Schema | None:
    """Return the schema :func:`load_schema` loaded on this connection, if done.

    Returns:
        The schema, or None while it loads, if loading failed, or if it was never
        requested.
    """
    fut = _memo(client)
    if fut is None or not fut.done():
        return None
    return fut.result()


def load_schema(client: SchemaClient, *, cache: bool = True) -> Future[Schema]:
    """Load the schema of the client's peer with ``query-qmp-schema``.

    Runs once per connection: calls while it loads, or after it loaded, return the
    same future. The client keeps it in its ``_schema_load`` attribute, which
    ``Client`` resets to None on each connect; a loaded schema whose version is not
    the peer's is ignored as well. A failed or cancelled load is retried by the next
    call. Cancelling the returned future cancels the load for every caller sharing it.

    With ``cache=True`` schemas are also shared across connections in this process,
    keyed by QEMU version, package string and target architecture (``query-target``,
    one short round trip): the package string alone does not tell apart the
    qemu-system-* binaries of one distribution package, and their schemas differ. A
    peer with an empty package string (a local build, whose configuration the version
    does not pin down) is never cached; pass ``cache=False`` for other builds that
    share a version and package string but not a configuration.

    Args:
        client: a connected (or connecting) client.
        cache: use and fill the process-wide cache.

    Returns:
        A future for the :class:`Schema`; it fails like :meth:`Client.execute`, or with
        :class:`~qmplex.errors.ProtocolError` if the reply is not a schema.
    """
    fut = _memo(client)
    if fut is None:
        fut = _load_cached(client) if cache else _fetch(client, None)
        setattr(client, _MEMO_ATTR, fut)
    return fut



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
        out._set_cancel_hook(nxt.cancel)
        nxt.add_done_callback(forward)

    out._set_cancel_hook(target.cancel)
    target.add_done_callback(on_target)
    return out
