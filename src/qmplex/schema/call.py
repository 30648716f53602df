"""``client.call``: every QMP command as a Python method, validated before sending.

:class:`CallNamespace` turns an attribute (``call.blockdev_add``) into a :class:`Call`
for the command's wire name, and a :class:`Call` turns Python keyword arguments into
QMP arguments, validates them when it has a :class:`~qmplex.schema.Schema`, and submits
the command through the client's ``execute``. Names are mapped by
:func:`~qmplex.names.wire_name` and :func:`~qmplex.names.python_name` only. Both classes
are built from a client and an optional schema (``CallNamespace(client, schema)``) and
keep no other state: they never load a schema nor set anything on the client.
"""

from __future__ import annotations

import keyword
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..names import python_name, wire_name
from .validate import kind_name

if TYPE_CHECKING:
    from ..events import EventFilter
    from ..futures import Future
    from ._generated_call import Commands
    from .executor import SchemaClient
    from .model import Argument, Schema
else:
    Commands = object  # the typed attributes exist for type checkers only

__all__ = ["Call", "CallNamespace"]

# Free-form commands without a schema to ask: their declared arguments, and the QEMU
# version from which their arguments are a union (schema members) instead.
_FREE_FORM: dict[str, tuple[frozenset[str], tuple[int, int] | None]] = {
    "device_add": (frozenset({"driver", "bus", "id"}), None),
    "object-add": (frozenset({"qom-type", "id", "props"}), (6, 0)),
    "netdev_add": (frozenset({"type", "id"}), (5, 0)),
}


def _unkeyword(key: str) -> str:
    """A keyword argument's name with the trailing ``_`` of a Python keyword dropped
    (``class_`` -> ``class``, a virtio device property)."""
    if key.endswith("_") and keyword.iskeyword(key[:-1]):
        return key[:-1]
    return key


class Call:
    """One command of :class:`CallNamespace`, ready to be called.

    Calling it validates (when a schema is loaded) and submits the command::

        client.call.blockdev_add(driver="null-co", node_name="b0", _timeout=5)
        client.call["query-status"]()
        client.call.object_add({"qom-type": "iothread", "id": "io0"})

    Arguments:

    - keyword arguments are top-level QMP arguments in Python spelling:
      ``node_name`` is sent as ``node-name``, unless the command spells it with ``_``
      (e.g. ``block_set_io_throttle``'s ``bps_rd``); a keyword gets a trailing ``_``
      (``if_``). Values, nested objects included, are sent as given: their keys are
      never renamed.
    - free-form arguments keep their names: ``device_add`` passes every argument but
      ``driver``, ``bus`` and ``id`` to the device as a property, and device
      properties are spelled both ways (``host_mtu``, ``logical_block_size``,
      ``scsi-id``, ``disable-modern``), so their names are sent exactly as given:
      ``device_add(driver="virtio-net-pci", host_mtu=9000)`` sends ``host_mtu``, and
      a dashed name goes in the mapping or as ``**{"scsi-id": 3}``. The same holds
      for ``object-add`` before QEMU 6.0 and ``netdev_add`` before 5.0, whose
      arguments were free-form too (:meth:`Schema.is_free_form`); from then on their
      properties are schema members and are spelled as the schema spells them.
    - one optional positional mapping holds arguments in exact wire spelling (merged
      with the keywords; a name given both ways is an error).
    - options of :meth:`Client.execute` take a leading underscore, because no QMP
      name can start with one (QAPI names start with a letter) while plain names
      collide: ``blockdev-add`` has a ``timeout`` argument (http driver) and
      ``netdev_add`` has ``fds`` (tap). They are ``_timeout``, ``_until``, ``_oob`` and
      ``_fds``.

    Attributes:
        name: the command's wire name.
    """

    __slots__ = ("_client", "_schema", "name")

    def __init__(self, client: SchemaClient, schema: Schema | None, name: str) -> None:
        self._client = client
        self._schema = schema
        self.name = name

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<qmplex call {self.name!r}>"

    @property
    def arguments(self) -> list[Argument]:
        """The command's arguments per the schema (empty without a schema).

        Raises:
            ValidationError: the schema does not have this command.
        """
        return [] if self._schema is None else self._schema.arguments(self.name)

    def __call__(
        self,
        arguments: Mapping[str, Any] | None = None,
        /,
        *,
        _timeout: float | None = None,
        _until: EventFilter | None = None,
        _oob: bool = False,
        _fds: Sequence[int] = (),
        **kwargs: Any,
    ) -> Future[Any]:
        """Validate and submit the command; see the class docstring.

        Returns:
            The future of :meth:`Client.execute`.

        Raises:
            ValidationError: the schema rejects the command or its arguments (nothing
                is sent), or an argument is given twice, or ``_oob`` is set for a
                command the schema does not allow out of band.
            TypeError: an unknown ``_``-prefixed option.
            StateError: as :meth:`Client.execute`.
        """
        name = self.name
        schema = self._schema
        args: dict[str, Any] = {}
        if arguments is not None:
            if not isinstance(arguments, Mapping):
                # The kind only: a value in the wrong place may be anything, a secret too.
                raise ValidationError(f"{name}: the positional argument must be a mapping "
                                      f"of wire names to values, got {kind_name(arguments)}")
            args.update(arguments)
        if kwargs:
            known: Collection[str] | None = None
            if schema is not None and schema.has_command(name):
                known = schema.argument_names(name)
            free = self._free_form()
            for key, value in kwargs.items():
                if key.startswith("_"):
                    raise TypeError(f"{python_name(name)}() got an unknown option {key!r} "
                                    "(options: _timeout, _until, _oob, _fds)")
                if free is not None and wire_name(key, free) not in free:
                    wire = _unkeyword(key)  # a property: QEMU's spelling, as given
                else:
                    wire = wire_name(key, known)
                if wire in args:
                    raise ValidationError(f"{name}: {wire}: argument given twice")
                args[wire] = value
        if schema is not None:
            schema.validate(name, args)
            if _oob and not schema.allows_oob(name):
                raise ValidationError(f"{name}: cannot be sent out of band "
                                      "(the schema does not allow OOB for it)")
        return self._client.execute(name, args or None, timeout=_timeout, until=_until,
                                    oob=_oob, fds=_fds)

    def _free_form(self) -> frozenset[str] | None:
        """The declared arguments of a free-form command (the others are properties
        whose names are sent as given); None for any other command."""
        name = self.name
        schema = self._schema
        if schema is not None and schema.has_command(name):
            return schema.argument_names(name) if schema.is_free_form(name) else None
        declared = _FREE_FORM.get(name)
        if declared is None:
            return None
        arguments, until = declared
        version = self._client.version
        if until is not None and version is not None and version.at_least(*until):
            return None
        return arguments


class CallNamespace(Commands):
    """Every QMP command as an attribute: ``client.call.<python_name>(...)``.

    ``client.call.blockdev_add(driver="null-co", node_name="b0")`` runs
    ``execute("blockdev-add", {"driver": "null-co", "node-name": "b0"})`` after
    validating it against the schema; ``client.call["query-status"]()`` names a command
    exactly. See :class:`Call` for the argument rules and the ``_timeout`` option.

    Without a schema (none loaded yet) names are mapped by the rules of
    :func:`~qmplex.names.wire_name` and nothing is validated: QEMU then reports the
    errors.

    For type checkers, each command of QEMU 11.1.3's schema is an attribute with the
    command's signature (generated into ``qmplex/schema/_generated_call.pyi``): mypy
    checks keyword argument names, their types (an enum is a ``Literal`` of its
    values, a nested object any mapping) and which are required, with one overload per
    variant of a union such as ``blockdev-add``'s ``driver``. Positional wire-spelled
    mappings are not checked. A name that is not a command of that schema is an error
    for mypy (at run time it is sent all the same); reach such commands by their wire
    name, ``client.call["x-new-command"](...)``, which is not checked.

    Args:
        client: the client to execute on.
        schema: its peer's schema, or None.
    """

    __slots__ = ("_client", "_schema")

    def __init__(self, client: SchemaClient, schema: Schema | None) -> None:
        self._client = client
        self._schema = schema

    @property
    def schema(self) -> Schema | None:
        """The schema used for names and validation (None: none loaded)."""
        return self._schema

    def _command(self, name: str) -> Call:
        """``client.call.blockdev_add``: the command whose Python name this is (mapped by
        :func:`~qmplex.names.wire_name` against the schema's command names).

        Raises:
            AttributeError: for a name starting with ``_`` (never a command).
        """
        if name.startswith("_"):  # dunder probes (copy, pickle, IPython) are not commands
            raise AttributeError(name)
        schema = self._schema
        wire = wire_name(name, schema.command_names if schema is not None else None)
        return Call(self._client, schema, wire)

    # Hidden from type checkers, which see the typed attributes of Commands instead, so
    # that a misspelt command is an error for them.
    if not TYPE_CHECKING:
        __getattr__ = _command

    def __getitem__(self, name: str) -> Call:
        """``client.call["query-status"]``: the command by its exact wire name."""
        return Call(self._client, self._schema, name)

    def __dir__(self) -> list[str]:
        """The attributes and, with a schema, the Python name of every command (for
        completion).
        """
        names = set(object.__dir__(self))
        if self._schema is not None:
            names.update(python_name(c) for c in self._schema.command_names)
        return sorted(names)

    def __repr__(self) -> str:
        """A short description for logs and debugging (not a stable format)."""
        return f"<qmplex CallNamespace schema={self._schema!r}>"

