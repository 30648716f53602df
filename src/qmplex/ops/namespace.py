"""How a domain of operations is reached: ``client.vm``, ``client.block`` ...

Each domain is a :class:`Namespace` subclass (``VMOps``, ``BlockOps`` ...) made over
one :class:`~qmplex.ops.executor.Executor`; it holds nothing else. A class that wants
``obj.vm`` declares ``vm = LazyNamespace(VMOps)``: the namespace is created the first
time it is read and kept in the instance's ``__dict__``, so an object that never
uses it pays nothing, and later reads are plain attribute reads.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

from .executor import Executor

__all__ = ["LazyNamespace", "Namespace"]


class Namespace:
    """Base of the operation namespaces: the operations of one domain over an executor.

    Args:
        executor: what the operations submit their commands to (a
            :class:`~qmplex.Client`, usually through ``client.vm`` ...).
    """

    __slots__ = ("_executor",)

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<{type(self).__name__} of {self._executor!r}>"


N = TypeVar("N", bound=Namespace)


class LazyNamespace(Generic[N]):
    """A class attribute giving each instance its own namespace, made on first use.

    ``vm = LazyNamespace(VMOps)`` in a class body makes ``obj.vm`` a ``VMOps(obj)``,
    created on the first read and stored in ``obj.__dict__`` under the attribute's
    name (this is a non-data descriptor, so the stored one is found first from then
    on). On an instance without a ``__dict__`` each read makes a new namespace, which
    is correct but not cached. On the class, the descriptor itself is returned.

    Two threads reading it first at once may each make one; one is kept, and both
    work the same. The stored namespace refers to ``obj`` (strongly: a namespace kept
    by the caller keeps its client usable), so once one was used, a dropped client is
    freed by the cyclic garbage collector rather than at once.

    Args:
        cls: the namespace class; it is called with the instance.
    """

    def __init__(self, cls: type[N]) -> None:
        self.cls = cls
        self.name = ""
        self.__doc__ = cls.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        """Remember the attribute's name: the instance key the namespace is cached under."""
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> LazyNamespace[N]: ...

    @overload
    def __get__(self, instance: Executor, owner: type[Any] | None = None) -> N: ...

    def __get__(self, instance: Executor | None,
                owner: type[Any] | None = None) -> N | LazyNamespace[N]:
        """On the class, this descriptor; on an instance, its namespace (made, and cached
        in the instance's ``__dict__`` when it has one, on first use).
        """
        if instance is None:
            return self
        namespace = self.cls(instance)
        try:
            vars(instance)[self.name] = namespace
        except TypeError:  # no __dict__ (a class with __slots__): not cached
            pass
        return namespace
