"""Typed views: a QMP object with typed attributes, over the dict QEMU sent.

A :class:`View` holds the decoded JSON object it was made from (:attr:`View.raw`, the
same dict, never copied) and reads each member when its attribute is asked for:
``QueryStatusResult(reply).status`` is ``reply["status"]``. Making a view is one small
allocation, whatever the size of the object; an attribute costs one dict lookup, plus
the making of a view when the member is an object itself. Nothing is validated: the
schema's validation of arguments (:meth:`qmplex.Schema.validate`) is the run-time check,
and a view only reads what QEMU sent.

The classes for QEMU's commands and events are generated from QEMU's schema
(:mod:`qmplex.typed._generated_types`); this module holds what they are built on:

- :class:`View`: the base class (``raw``, equality, ``repr``);
- :class:`EventData`: the base class of the data of events (:meth:`qmplex.Event.typed`);
- :class:`Empty`: an object without members (the ``{}`` most commands return);
- :class:`ListView`: a JSON array of objects, seen as a sequence of views (each made
  when its item is read).

It imports nothing from qmplex: views never talk to QEMU and never raise a
:class:`~qmplex.errors.QMPError` (only :class:`TypeError` for something that is not a
JSON object, and :class:`AttributeError` for a missing member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast, overload

__all__ = ["Empty", "EventData", "ListView", "View"]

V = TypeVar("V", covariant=True)
_Self = TypeVar("_Self", bound="View")


class View:
    """A JSON object from QEMU with typed attributes: the base of every generated class.

    ``View(raw)`` wraps ``raw`` (not copied). Each generated subclass has one read-only
    property per member of the QMP type, in Python spelling (``"vcpus-count"`` ->
    ``vcpus_count``; a Python keyword or a name of this class gets a trailing ``_``):

    - a member the schema marks optional reads as None when QEMU left it out;
    - a member the schema marks required but that the object lacks (an older QEMU than
      the schema the classes were generated from) raises :class:`AttributeError`, which
      names the member, so ``getattr(view, name, None)`` works;
    - an object member reads as a view, an array of objects as a :class:`ListView`,
      anything else as QEMU sent it (enums are strings).

    Views compare equal when they are of the same class and their ``raw`` objects are
    equal; they are not hashable (dicts are not).

    Attributes:
        raw: the object as QEMU sent it (the dict itself, not a copy).
    """

    __slots__ = ("raw",)

    raw: Mapping[str, Any]

    #: For a union (an object whose ``_TAG`` member selects variant members): the
    #: class of each tag value that adds members. None for other objects.
    _CASES: ClassVar[dict[str, type[View]] | None] = None
    #: The tag member of a union ("" for other objects).
    _TAG: ClassVar[str] = ""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise TypeError(f"{type(self).__name__} views a JSON object (a mapping), "
                            f"not {type(raw).__name__}")
        self.raw = raw

    @classmethod
    def _of(cls: type[_Self], raw: Mapping[str, Any]) -> _Self:
        """The view of ``raw``: for a union, of the class its tag selects (a subclass
        of ``cls``)."""
        cases = cls._CASES
        if cases is not None and isinstance(raw, Mapping):
            case = cases.get(raw.get(cls._TAG, ""))
            if case is not None:
                return cast(_Self, case._of(raw))
        return cls(raw)

    def _missing(self, key: str) -> AttributeError:
        """The error for a required member ``key`` that the object lacks."""
        return AttributeError(
            f"{type(self).__name__}: QEMU sent no {key!r} member (the schema the class "
            "was generated from requires it; an older QEMU may not send it)")

    def __eq__(self, other: object) -> bool:
        """Views are equal when they are of the same class over equal objects."""
        if not isinstance(other, View):
            return NotImplemented
        return type(self) is type(other) and self.raw == other.raw

    def __repr__(self) -> str:
        """The class name and the object (not a stable format)."""
        return f"{type(self).__name__}({self.raw!r})"


class Empty(View):
    """A JSON object without members: the ``{}`` that most commands return."""

    __slots__ = ()


class EventData(View):
    """The data of one event: the base class of the generated ``<Name>Data`` classes.

    :meth:`qmplex.Event.typed` returns the class of the event's name, or this class for
    an event the schema does not know (its ``raw`` is the data all the same).

    Attributes:
        EVENT: the event's name (``"DEVICE_DELETED"``); "" on this base class.
    """

    __slots__ = ()

    EVENT: ClassVar[str] = ""


class ListView(Sequence[V], Generic[V]):
    """A JSON array of objects as a read-only sequence of views.

    Each item's view is made when the item is read (``views[3]``, iteration), so a long
    array costs nothing until used. ``raw`` is the list QEMU sent.

    Args:
        wrap: makes the view of one item (a generated class, or its ``_of``).
        raw: the list.

    Attributes:
        raw: the list as QEMU sent it (not a copy).
    """

    __slots__ = ("raw", "_wrap")

    def __init__(self, wrap: Callable[[Any], V], raw: Sequence[Any]) -> None:
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
            raise TypeError(f"ListView views a JSON array, not {type(raw).__name__}")
        self._wrap = wrap
        self.raw = raw

    def __len__(self) -> int:
        """The number of items."""
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> V: ...

    @overload
    def __getitem__(self, index: slice) -> ListView[V]: ...

    def __getitem__(self, index: int | slice) -> V | ListView[V]:
        """The view of one item, or a :class:`ListView` of a slice."""
        if isinstance(index, slice):
            return ListView(self._wrap, self.raw[index])
        return self._wrap(self.raw[index])

    def __iter__(self) -> Iterator[V]:
        """The items' views, made one by one."""
        return map(self._wrap, self.raw)

    def __eq__(self, other: object) -> bool:
        """Equal to another :class:`ListView` over an equal list."""
        if not isinstance(other, ListView):
            return NotImplemented
        return bool(self.raw == other.raw)

    def __repr__(self) -> str:
        """The list (not a stable format)."""
        return f"ListView({self.raw!r})"
