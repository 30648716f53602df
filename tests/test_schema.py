"""Schema introspection, validation, name mapping and ``client.call``, without QEMU.

The schema is the ``query-qmp-schema`` return value captured from QEMU 7.2
(``tests/data/qmp-schema-7.2.json``); clients are fakes that record ``execute`` calls.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import qmplex
from qmplex import (
    Client,
    ClientState,
    CommandError,
    ConnectionLost,
    EventFilter,
    ProtocolError,
    QMPVersion,
    ValidationError,
)
from qmplex.futures import Future
from qmplex.reactor import Reactor
from qmplex.schema import (
    SCHEMA_CACHE_ENTRIES,
    UNDERSCORE_ARGUMENTS,
    UNDERSCORE_COMMANDS,
    Argument,
    Call,
    CallNamespace,
    Schema,
    clear_schema_cache,
    load_schema,
    loaded_schema,
    python_name,
    wire_command,
    wire_name,
)
from qmplex.testing import fake_server

from .peer import ScriptedPeer

DATA = Path(__file__).parent / "data" / "qmp-schema-7.2.json"
V72 = QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7+deb12u7", ("oob",))


def _info() -> list[dict[str, Any]]:
    info: list[dict[str, Any]] = json.loads(DATA.read_text())
    return info


@pytest.fixture(scope="module")
def info() -> list[dict[str, Any]]:
    return _info()


@pytest.fixture(scope="module")
def schema(info: list[dict[str, Any]]) -> Schema:
    return Schema.from_introspection(info, version=V72)


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    clear_schema_cache()
    yield
    clear_schema_cache()


def _error(schema: Schema, command: str, arguments: Mapping[str, Any] | None) -> str:
    with pytest.raises(ValidationError) as exc_info:
        schema.validate(command, arguments)
    return str(exc_info.value)


# ------------------------------------------------------------------ queries
def test_counts_and_repr(schema: Schema) -> None:
    assert len(schema.commands()) == 216
    assert len(schema.events()) == 52
    assert schema.commands() == sorted(schema.command_names)
    assert repr(schema) == "<Schema 7.2.22: 216 commands, 52 events>"
    assert schema.version == V72


def test_has_command_and_event(schema: Schema) -> None:
    for name in ("blockdev-add", "device_add", "device_del", "query-status",
                 "human-monitor-command", "qmp_capabilities", "x-blockdev-change",
                 "query-qmp-schema", "migrate-set-capabilities", "qom-list"):
        assert schema.has_command(name), name
    for name in ("blockdev_add", "device-add", "query_status", "query-cpus", "x-blockdev-del",
                 "DEVICE_DELETED"):
        assert not schema.has_command(name), name
    for name in ("DEVICE_DELETED", "SHUTDOWN", "MIGRATION", "BLOCK_JOB_COMPLETED"):
        assert schema.has_event(name), name
    assert not schema.has_event("device_deleted")
    assert not schema.has_event("blockdev-add")


def test_has_argument(schema: Schema) -> None:
    assert schema.has_argument("blockdev-add", "node-name")
    assert schema.has_argument("blockdev-add", "driver")
    # members of a union variant (file driver) count, at top level and nested
    assert schema.has_argument("blockdev-add", "filename")
    assert schema.has_argument("blockdev-add", "file.filename")
    assert schema.has_argument("blockdev-add", "file.file.driver")
    assert schema.has_argument("migrate-set-capabilities", "capabilities")
    assert schema.has_argument("migrate-set-capabilities", "capabilities.state")
    assert schema.has_argument("device_del", "id")
    assert schema.has_argument("block_set_io_throttle", "bps_rd")
    assert not schema.has_argument("block_set_io_throttle", "bps-rd")
    assert not schema.has_argument("blockdev-add", "node_name")
    assert not schema.has_argument("blockdev-add", "file.nope")
    assert not schema.has_argument("query-status", "id")
    assert not schema.has_argument("no-such-command", "id")


def test_has_enum_value(schema: Schema) -> None:
    assert schema.has_enum_value(("blockdev-add", "driver"), "null-co")
    assert schema.has_enum_value(("blockdev-add", "driver"), "host_device")
    assert not schema.has_enum_value(("blockdev-add", "driver"), "null_co")
    assert schema.has_enum_value(("blockdev-add", "file.driver"), "file")
    assert schema.has_enum_value(("migrate-set-capabilities", "capabilities.capability"),
                                 "events")
    assert not schema.has_enum_value(("migrate-set-capabilities",
                                      "capabilities.capability"), "event")
    assert schema.has_enum_value(("blockdev-add", "detect-zeroes"), "unmap")
    assert not schema.has_enum_value(("blockdev-add", "node-name"), "b0")  # a str
    assert not schema.has_enum_value(("nope", "driver"), "file")
    # by type name (masked in 7.2): find the one behind blockdev-add's driver
    driver_type = next(
        m["type"] for e in _info() if e["meta-type"] == "object"
        for m in e["members"] if m["name"] == "driver" and e.get("tag") == "driver"
        and any(v["case"] == "null-co" for v in e.get("variants", ())))
    assert schema.has_enum_value(driver_type, "null-co")
    assert not schema.has_enum_value(driver_type, "bogus")
    assert not schema.has_enum_value("str", "x")
    assert not schema.has_enum_value("no-such-type", "x")


def test_arguments(schema: Schema) -> None:
    assert schema.arguments("query-status") == []
    assert schema.arguments("device_del") == [Argument("id", "str", True)]
    (caps,) = schema.arguments("migrate-set-capabilities")
    assert caps == Argument("capabilities", "array of object", True)
    args = {a.name: a for a in schema.arguments("blockdev-add")}
    assert list(args)[:2] == ["driver", "node-name"]
    assert args["driver"].required
    assert args["driver"].type.startswith("enum (") and "|null-co|" in args["driver"].type
    assert args["node-name"] == Argument("node-name", "str", False)
    assert args["read-only"] == Argument("read-only", "bool", False)
    assert args["detect-zeroes"] == Argument("detect-zeroes", "enum (off|on|unmap)", False)
    assert "filename" not in args  # a member of the file variant only
    file_args = {a.name: a for a in schema.arguments("blockdev-add", variant="file")}
    assert file_args["filename"] == Argument("filename", "str", True)
    assert file_args["aio-max-batch"] == Argument("aio-max-batch", "int", False)
    raw = {a.name: a for a in schema.arguments("blockdev-add", variant="raw")}
    assert raw["file"] == Argument("file", "object or str", True)
    assert {a.name for a in schema.arguments("device_add")} == {"driver", "bus", "id"}
    hmp = {a.name: a for a in schema.arguments("human-monitor-command")}
    assert hmp["command-line"] == Argument("command-line", "str", True)
    with pytest.raises(ValidationError, match=r"blockdev-ad: unknown command"):
        schema.arguments("blockdev-ad")
    with pytest.raises(ValidationError, match=r"blockdev-add: 'nope' is not a variant"):
        schema.arguments("blockdev-add", variant="nope")


def test_describe_types(schema: Schema) -> None:
    assert schema.describe("str") == "str"
    assert schema.describe("any") == "any"
    assert schema.describe("number") == "number"
    assert schema.describe("null") == "null"
    assert schema.describe("no-such-type") == "any"
    qom_set = {a.name: a.type for a in schema.arguments("qom-set")}
    assert qom_set == {"path": "str", "property": "str", "value": "any"}


# --------------------------------------------------------------- validation
# Each valid case comes with a near miss that differs from it in one place and must be
# rejected there, so this test fails if validate() accepts everything.
@pytest.mark.parametrize(("command", "valid", "near_miss", "message"), [
    ("query-status", None, {"verbose": True},
     "query-status: verbose: unknown argument; expected one of: (none)"),
    ("query-status", {}, [],
     "query-status: arguments must be an object (a mapping), got array"),
    ("device_del", {"id": "d0"}, {"id": 0}, "device_del: id: expected str, got int 0"),
    ("qom-list", {"path": "/machine/peripheral"}, {"path": ["/machine/peripheral"]},
     "qom-list: path: expected str, got array"),
    ("blockdev-add", {"driver": "null-co", "node-name": "b0"},
     {"driver": "null_co", "node-name": "b0"},
     "blockdev-add: driver: 'null_co' is not a valid value (did you mean 'null-co'"),
    ("blockdev-add", {"driver": "null-co", "node-name": "b0", "size": 1 << 30,
                      "read-zeroes": True, "cache": {"direct": False}},
     {"driver": "null-co", "node-name": "b0", "size": 1 << 30,
      "read-zeroes": True, "cache": {"direct": "false"}},
     "blockdev-add: cache.direct: expected bool, got str 'false'"),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]},
     {"capabilities": [{"capability": "events", "state": "true"}]},
     "migrate-set-capabilities: capabilities[0].state: expected bool, got str 'true'"),
    # tuples are arrays, and their items are checked too
    ("migrate-set-capabilities", {"capabilities": ()},
     {"capabilities": ({"capability": "events"},)},
     "migrate-set-capabilities: capabilities[0].state: missing required argument "
     "(expected bool)"),
    ("qmp_capabilities", {"enable": ["oob"]}, {"enable": ["OOB"]},
     "qmp_capabilities: enable[0]: 'OOB' is not a valid value"),
], ids=["none", "empty", "str", "path", "enum", "nested", "array", "tuple", "enum-array"])
def test_valid_arguments_pass(schema: Schema, command: str, valid: Any, near_miss: Any,
                              message: str) -> None:
    schema.validate(command, valid)
    assert _error(schema, command, near_miss).startswith(message)


def test_nested_flat_union(schema: Schema) -> None:
    raw_over_file = {"driver": "raw", "node-name": "r0",
                     "file": {"driver": "file", "filename": "/tmp/img"}}
    schema.validate("blockdev-add", raw_over_file)
    # the alternate BlockdevRef: a node name instead of an object
    schema.validate("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"})
    # qcow2 over file, two levels of nesting
    schema.validate("blockdev-add", {
        "driver": "qcow2", "node-name": "q0",
        "file": {"driver": "file", "filename": "/tmp/q.qcow2", "aio": "threads"},
        "backing": None})
    bad_member = {"driver": "raw", "node-name": "r0",
                  "file": {"driver": "file", "filenam": "/tmp/img"}}
    msg = _error(schema, "blockdev-add", bad_member)
    assert msg.startswith("blockdev-add: file.filenam: unknown argument")
    assert "did you mean 'filename'?" in msg
    assert "(with driver 'file')" in msg
    msg = _error(schema, "blockdev-add", {"driver": "raw", "file": {"driver": "file"}})
    assert msg == "blockdev-add: file.filename: missing required argument (expected str)"
    msg = _error(schema, "blockdev-add",
                 {"driver": "raw", "file": {"driver": "file", "filename": "/x", "aio": "fast"}})
    assert msg.startswith("blockdev-add: file.aio: 'fast' is not a valid value")
    assert msg.endswith("expected one of: threads, native, io_uring")
    msg = _error(schema, "blockdev-add", {"driver": "raw", "file": 5})
    assert msg == "blockdev-add: file: expected object or str, got int 5"
    msg = _error(schema, "blockdev-add",
                 {"driver": "raw", "file": {"driver": "nope", "filename": "/x"}})
    assert msg.startswith("blockdev-add: file.driver: 'nope' is not a valid value")
    # a member of another variant is unknown for this one
    msg = _error(schema, "blockdev-add", {"driver": "null-co", "filename": "/x"})
    assert msg.startswith("blockdev-add: filename: unknown argument")
    assert "(with driver 'null-co')" in msg


def test_unknown_command(schema: Schema) -> None:
    msg = _error(schema, "blockdev-ad", {})
    assert msg.startswith("blockdev-ad: unknown command (did you mean 'blockdev-add'")
    msg = _error(schema, "blockdev_add", {})
    assert "did you mean 'blockdev-add'" in msg
    msg = _error(schema, "query_status", None)
    assert "'query-status'" in msg
    assert _error(schema, "zzzzzzzzzzzz", None) == "zzzzzzzzzzzz: unknown command"


def test_unknown_argument(schema: Schema) -> None:
    msg = _error(schema, "blockdev-add", {"driver": "null-co", "node_name": "b0"})
    assert msg.startswith("blockdev-add: node_name: unknown argument (did you mean "
                          "'node-name'?)")
    assert "node-name" in msg.split("expected one of")[1]
    assert _error(schema, "query-status", {"verbose": True}) == (
        "query-status: verbose: unknown argument; expected one of: (none)")
    msg = _error(schema, "device_del", {"id": "d0", "force": True})
    assert msg == "device_del: force: unknown argument; expected one of: id"
    nested = {"capabilities": [{"capability": "events", "state": True, "extra": 1}]}
    msg = _error(schema, "migrate-set-capabilities", nested)
    assert msg.startswith("migrate-set-capabilities: capabilities[0].extra: unknown argument")
    assert "expected one of: capability, state" in msg


def test_missing_required_argument(schema: Schema) -> None:
    assert _error(schema, "device_del", {}) == (
        "device_del: id: missing required argument (expected str)")
    assert _error(schema, "device_del", None) == (
        "device_del: id: missing required argument (expected str)")
    msg = _error(schema, "blockdev-add", {"node-name": "b0"})
    assert msg.startswith("blockdev-add: driver: missing required argument (expected enum (")
    msg = _error(schema, "migrate-set-capabilities", {"capabilities": [{"state": True}]})
    assert msg.startswith("migrate-set-capabilities: capabilities[0].capability: missing "
                          "required argument (expected enum (xbzrle|")


@pytest.mark.parametrize(("command", "arguments", "message"), [
    ("device_del", {"id": 5}, "device_del: id: expected str, got int 5"),
    ("device_del", {"id": None}, "device_del: id: expected str, got null"),
    ("device_del", {"id": ["d0"]}, "device_del: id: expected str, got array"),
    ("blockdev-add", {"driver": "null-co", "size": "1G"},
     "blockdev-add: size: expected int, got str '1G'"),
    ("blockdev-add", {"driver": "null-co", "size": 1.5},
     "blockdev-add: size: expected int, got number 1.5"),
    ("blockdev-add", {"driver": "null-co", "size": True},
     "blockdev-add: size: expected int, got bool True"),
    ("blockdev-add", {"driver": "null-co", "read-only": 1},
     "blockdev-add: read-only: expected bool, got int 1"),
    ("blockdev-add", {"driver": "null-co", "read-only": "yes"},
     "blockdev-add: read-only: expected bool, got str 'yes'"),
    ("blockdev-add", {"driver": "null-co", "cache": []},
     "blockdev-add: cache: expected object, got array"),
    ("blockdev-add", {"driver": "null-co", "cache": {"direct": "no"}},
     "blockdev-add: cache.direct: expected bool, got str 'no'"),
    ("migrate-set-capabilities", {"capabilities": {"capability": "events"}},
     "migrate-set-capabilities: capabilities: expected array of object, got object"),
    ("migrate-set-capabilities", {"capabilities": ["events"]},
     "migrate-set-capabilities: capabilities[0]: expected object, got str 'events'"),
    ("migrate-set-capabilities",
     {"capabilities": [{"capability": "events", "state": True},
                       {"capability": "events", "state": "on"}]},
     "migrate-set-capabilities: capabilities[1].state: expected bool, got str 'on'"),
    ("blockdev-add", {"driver": 7}, "blockdev-add: driver: expected enum (blkdebug|"),
])
def test_wrong_type(schema: Schema, command: str, arguments: dict[str, Any],
                    message: str) -> None:
    assert _error(schema, command, arguments).startswith(message)


def test_bad_enum_value_lists_allowed_values(schema: Schema) -> None:
    msg = _error(schema, "blockdev-add", {"driver": "nul-co"})
    assert msg.startswith("blockdev-add: driver: 'nul-co' is not a valid value "
                          "(did you mean 'null-co'")
    allowed = msg.split("expected one of: ")[1].split(", ")
    assert len(allowed) == 42 and "null-co" in allowed and "file" in allowed
    msg = _error(schema, "blockdev-add", {"driver": "null-co", "detect-zeroes": "yes"})
    assert msg == ("blockdev-add: detect-zeroes: 'yes' is not a valid value; expected one "
                   "of: off, on, unmap")
    msg = _error(schema, "migrate-set-capabilities",
                 {"capabilities": [{"capability": "event", "state": True}]})
    assert "capabilities[0].capability: 'event' is not a valid value (did you mean " \
           "'events'?)" in msg


def test_number_any_and_alternates(schema: Schema) -> None:
    limits = {"device": "", "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0,
              "iops_wr": 0}
    schema.validate("block_set_io_throttle", limits)  # ints for int members
    # 'any' takes every JSON value
    values: list[Any] = [1, 1.5, "s", True, None, [1, "a"], {"a": {"b": []}}]
    for value in values:
        schema.validate("qom-set", {"path": "/machine", "property": "p", "value": value})
    # an alternate takes any member type (str or null for the backing of qcow2)
    for backing in ("b0", None, {"driver": "null-co"}):
        schema.validate("blockdev-add", {"driver": "qcow2", "file": "f0", "backing": backing})
    msg = _error(schema, "blockdev-add", {"driver": "qcow2", "file": "f0", "backing": 3})
    assert msg == "blockdev-add: backing: expected object or str or null, got int 3"


def test_small_schema() -> None:
    # A small schema exercises number, alternates of int/str and unknown meta-types.
    tiny = Schema.from_introspection([
        {"name": "set", "meta-type": "command", "arg-type": "a", "ret-type": "0"},
        {"name": "free", "meta-type": "command", "arg-type": "any", "ret-type": "0"},
        {"name": "a", "meta-type": "object", "members": [
            {"name": "ratio", "type": "number"},
            {"name": "size", "type": "alt", "default": None},
            {"name": "mode", "type": "e", "default": None},
            {"name": "later", "type": "undefined-type", "default": None}]},
        {"name": "alt", "meta-type": "alternate", "members": [{"type": "int"},
                                                               {"type": "str"}]},
        {"name": "e", "meta-type": "enum", "values": ["fast", "slow"]},  # pre-6.2 style
        {"name": "number", "meta-type": "builtin", "json-type": "number"},
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {"name": "any", "meta-type": "builtin", "json-type": "value"},
        {"name": "0", "meta-type": "object", "members": []},
        {"name": "fancy", "meta-type": "something-new"},
    ])
    tiny.validate("set", {"ratio": 1})
    tiny.validate("set", {"ratio": 0.25, "size": 5, "mode": "fast", "later": object()})
    tiny.validate("set", {"ratio": 2, "size": "5G"})
    tiny.validate("free", {"anything": [1, 2]})
    assert _error(tiny, "set", {"ratio": True}) == "set: ratio: expected number, got bool True"
    assert _error(tiny, "set", {"ratio": "1"}) == "set: ratio: expected number, got str '1'"
    assert _error(tiny, "set", {"ratio": 1, "size": 1.5}) == (
        "set: size: expected int or str, got number 1.5")
    assert _error(tiny, "set", {"ratio": 1, "mode": "medium"}) == (
        "set: mode: 'medium' is not a valid value; expected one of: fast, slow")
    assert tiny.has_enum_value("e", "slow")
    assert [a.type for a in tiny.arguments("set")] == [
        "number", "int or str", "enum (fast|slow)", "any"]


def test_open_device_add(schema: Schema) -> None:
    # device_add is 'gen': false in QEMU: any property passes, the declared ones are checked
    schema.validate("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0",
                                   "bus": "scsi0.0", "scsi-id": 3, "lun": 0})
    assert _error(schema, "device_add", {"id": "d0"}) == (
        "device_add: driver: missing required argument (expected str)")
    assert _error(schema, "device_add", {"driver": 5}) == (
        "device_add: driver: expected str, got int 5")
    # netdev_add and object-add are full unions in 7.2, so they are checked
    schema.validate("netdev_add", {"type": "user", "id": "n0"})
    assert _error(schema, "netdev_add", {"type": "user", "id": "n0", "bogus": 1}).startswith(
        "netdev_add: bogus: unknown argument")
    schema.validate("object-add", {"qom-type": "iothread", "id": "io0", "poll-max-ns": 0})
    assert _error(schema, "object-add", {"qom-type": "iothread", "id": "io0",
                                         "poll-max-ns": "0"}) == (
        "object-add: poll-max-ns: expected int, got str '0'")


def test_arguments_must_be_a_mapping(schema: Schema) -> None:
    bad: Any = [("id", "d0")]
    assert _error(schema, "device_del", bad) == (
        "device_del: arguments must be an object (a mapping), got array")
    assert _error(schema, "device_del", {1: "x"}).startswith(  # type: ignore[dict-item]
        "device_del: argument names must be strings")


def test_malformed_introspection() -> None:
    with pytest.raises(ProtocolError, match="query-qmp-schema: the schema is not a list"):
        Schema.from_introspection({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="query-qmp-schema: malformed SchemaInfo"):
        Schema.from_introspection([{"name": "x"}])
    with pytest.raises(ProtocolError, match="query-qmp-schema: malformed SchemaInfo"):
        Schema.from_introspection([{"name": "o", "meta-type": "object"}])
    with pytest.raises(ProtocolError, match="name and meta-type must be strings"):
        Schema.from_introspection([{"name": 1, "meta-type": "enum"}])


# ---------------------------------------------------------------------- names
def test_python_name() -> None:
    assert python_name("blockdev-add") == "blockdev_add"
    assert python_name("device_add") == "device_add"
    assert python_name("x-blockdev-del") == "x_blockdev_del"
    assert python_name("node-name") == "node_name"
    assert python_name("if") == "if_"
    assert python_name("in") == "in_"
    assert python_name("match") == "match"  # a soft keyword is a valid identifier


def test_wire_name_rules() -> None:
    assert wire_name("blockdev_add") == "blockdev-add"
    assert wire_name("query_status") == "query-status"
    assert wire_name("x_blockdev_del") == "x-blockdev-del"
    assert wire_name("human_monitor_command") == "human-monitor-command"
    for name in ("device_add", "device_del", "qmp_capabilities", "netdev_add", "netdev_del",
                 "system_reset", "system_powerdown", "migrate_set_speed"):
        assert wire_name(name) == name
    assert wire_name("node_name", underscored=UNDERSCORE_ARGUMENTS) == "node-name"
    assert wire_name("bps_rd", underscored=UNDERSCORE_ARGUMENTS) == "bps_rd"
    assert wire_name("if_") == "if"
    # candidates decide over the rules, also for names the rules get wrong
    assert wire_name("my_cmd", {"my_cmd"}) == "my_cmd"
    assert wire_name("my_cmd", {"my-cmd"}) == "my-cmd"
    assert wire_name("x_mixed_name", {"x-mixed_name"}) == "x-mixed_name"
    assert wire_name("device_add", {"device-add"}) == "device-add"
    assert wire_name("not_there", {"other"}) == "not-there"
    # a downstream extension keeps its __RFQDN_ prefix
    assert wire_name("__com.redhat_drive_mirror") == "__com.redhat_drive-mirror"


def test_round_trip_every_command_and_argument(schema: Schema) -> None:
    for command in schema.commands():
        py = python_name(command)
        assert py.isidentifier() and not keyword.iskeyword(py), command
        assert wire_name(py) == command, command
        assert wire_name(py, schema.command_names) == command, command
        names = schema.argument_names(command)
        for arg in names:
            py_arg = python_name(arg)
            assert py_arg.isidentifier() and not keyword.iskeyword(py_arg), (command, arg)
            assert wire_name(py_arg, underscored=UNDERSCORE_ARGUMENTS) == arg, (command, arg)
            assert wire_name(py_arg, names, underscored=UNDERSCORE_ARGUMENTS) == arg


def test_underscore_constants_match_the_schema(schema: Schema) -> None:
    underscored = {c for c in schema.commands() if "_" in c}
    assert underscored <= UNDERSCORE_COMMANDS
    assert UNDERSCORE_COMMANDS - underscored == {"block_passwd", "migrate_set_downtime",
                                                 "migrate_set_speed"}
    assert all("-" not in c for c in UNDERSCORE_COMMANDS)
    arguments = {a for c in schema.commands() for a in schema.argument_names(c) if "_" in a}
    assert arguments == UNDERSCORE_ARGUMENTS
    # wire_name keeps both lists by default: no command or top-level argument is
    # spelled like the dashed form of a listed name, so one set serves both
    top_level = set(schema.commands()).union(
        *(schema.argument_names(c) for c in schema.commands()))
    for name in UNDERSCORE_COMMANDS | UNDERSCORE_ARGUMENTS:
        assert name.replace("_", "-") not in top_level, name
        assert wire_name(name) == name


def test_wire_command(schema: Schema) -> None:
    assert wire_command(schema, V72, ("blockdev-del", "x-blockdev-del")) == "blockdev-del"
    assert wire_command(schema, V72, ("query-cpus-fast", "query-cpus")) == "query-cpus-fast"
    assert wire_command(schema, None, ("query-cpus", "query-cpus-fast")) == "query-cpus-fast"
    with pytest.raises(ValidationError, match="query-cpus: unknown command: this QEMU has "
                                              "none of query-cpus, x-query-cpus"):
        wire_command(schema, V72, ("query-cpus", "x-query-cpus"))
    with pytest.raises(ValueError):
        wire_command(schema, V72, ())
    # without a schema: the version decides by what is known of each command
    old = QMPVersion(2, 8, 0)
    assert wire_command(None, old, ("blockdev-del", "x-blockdev-del")) == "x-blockdev-del"
    assert wire_command(None, V72, ("blockdev-del", "x-blockdev-del")) == "blockdev-del"
    assert wire_command(None, QMPVersion(2, 11, 0),
                        ("query-cpus-fast", "query-cpus")) == "query-cpus"
    assert wire_command(None, QMPVersion(5, 2, 0),
                        ("blockdev-reopen", "x-blockdev-reopen")) == "x-blockdev-reopen"
    assert wire_command(None, None, ("blockdev-del", "x-blockdev-del")) == "blockdev-del"
    assert wire_command(None, old, ("unrecorded", "x")) == "unrecorded"


# ------------------------------------------------------------------- clients
class FakeClient:
    """Records execute() calls and answers from a table, with detached futures.

    It has only what :class:`~qmplex.schema.SchemaClient` asks for: ``version`` and
    ``execute``.
    """

    def __init__(self, version: QMPVersion | None = V72,
                 replies: dict[str, Any] | None = None) -> None:
        self.version = version
        self.replies: dict[str, Any] = replies if replies is not None else {}
        self.calls: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
        self.hold: dict[str, Future[Any]] = {}  # futures left pending, by command

    def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        until: EventFilter | None = None,
        oob: bool = False,
        fds: Sequence[int] = (),
    ) -> Future[Any]:
        options = {"timeout": timeout, "until": until, "oob": oob, "fds": fds}
        self.calls.append((name, None if arguments is None else dict(arguments), options))
        fut: Future[Any] = Future()
        if name in self.hold:
            self.hold[name] = fut
            return fut
        reply = self.replies.get(name, {})
        if isinstance(reply, BaseException):
            fut.set_exception(reply)
        else:
            fut.set_result(reply)
        return fut

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


DEFAULTS = {"timeout": None, "until": None, "oob": False, "fds": ()}


def test_call_maps_names_and_validates(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, schema)
    fut = call.blockdev_add(driver="null-co", node_name="b0", read_only=True)
    assert fut.result() == {}
    assert client.calls == [("blockdev-add",
                             {"driver": "null-co", "node-name": "b0", "read-only": True},
                             DEFAULTS)]
    call.device_del(id="d0")
    call.query_status()
    call.x_blockdev_change(parent="p0", child="c0")
    call.block_set_io_throttle(id="d0", bps=0, bps_rd=1, bps_wr=0, iops=0, iops_rd=0,
                               iops_wr=0)
    assert client.calls[1:] == [
        ("device_del", {"id": "d0"}, DEFAULTS),
        ("query-status", None, DEFAULTS),
        ("x-blockdev-change", {"parent": "p0", "child": "c0"}, DEFAULTS),
        ("block_set_io_throttle", {"id": "d0", "bps": 0, "bps_rd": 1, "bps_wr": 0,
                                   "iops": 0, "iops_rd": 0, "iops_wr": 0}, DEFAULTS),
    ]


def test_call_nested_keys_are_not_renamed(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, schema)
    call.blockdev_add(driver="raw", node_name="r0",
                      file={"driver": "file", "filename": "/tmp/img", "aio-max-batch": 4})
    assert client.calls[0][1] == {"driver": "raw", "node-name": "r0",
                                  "file": {"driver": "file", "filename": "/tmp/img",
                                           "aio-max-batch": 4}}
    # a nested key in Python spelling is sent as given, so validation catches it
    with pytest.raises(ValidationError, match=r"blockdev-add: file\.aio_max_batch: unknown "
                                              r"argument \(did you mean 'aio-max-batch'\?\)"):
        call.blockdev_add(driver="raw", file={"driver": "file", "filename": "/x",
                                              "aio_max_batch": 4})
    assert len(client.calls) == 1


def test_call_rejects_before_sending(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, schema)
    with pytest.raises(ValidationError, match="blockdev-add: bogus: unknown argument"):
        call.blockdev_add(driver="null-co", node_name="b0", bogus=1)  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="device_del: id: missing required argument"):
        call.device_del()  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="blockdev-ad: unknown command"):
        call.blockdev_ad(driver="null-co")  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=r"query-status: cannot be sent out of band"):
        call.query_status(_oob=True)
    assert client.calls == []


def test_call_options_and_positional_mapping(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, schema)
    until = EventFilter("DEVICE_DELETED", {"device": "d0"})
    call.device_del(id="d0", _timeout=2.5, _until=until)
    call.yank({"instances": []}, _oob=True)
    call.getfd(fdname="f0", _fds=[5])
    # timeout is a real argument of blockdev-add (http driver): no collision
    call.blockdev_add({"node-name": "h0"}, driver="http", url="http://x/", timeout=10)
    assert client.calls == [
        ("device_del", {"id": "d0"}, {**DEFAULTS, "timeout": 2.5, "until": until}),
        ("yank", {"instances": []}, {**DEFAULTS, "oob": True}),
        ("getfd", {"fdname": "f0"}, {**DEFAULTS, "fds": [5]}),
        ("blockdev-add", {"node-name": "h0", "driver": "http", "url": "http://x/",
                          "timeout": 10}, DEFAULTS),
    ]
    with pytest.raises(ValidationError, match="blockdev-add: node-name: argument given twice"):
        call.blockdev_add({"node-name": "a"}, driver="null-co", node_name="b")
    with pytest.raises(TypeError, match="unknown option '_timout'"):
        call.query_status(_timout=1)  # type: ignore[call-arg]
    bad: Any = ["not", "a", "mapping"]
    with pytest.raises(ValidationError, match="positional argument must be a mapping"):
        call.query_status(bad)
    assert len(client.calls) == 4


def test_call_keyword_escape(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, None)
    call.some_command(if_="eth0", in_="x", match="m")  # type: ignore[attr-defined]
    assert client.calls[0][:2] == ("some-command", {"if": "eth0", "in": "x", "match": "m"})


def test_call_item_access_is_exact(schema: Schema) -> None:
    client = FakeClient()
    call = CallNamespace(client, schema)
    assert isinstance(call["query-status"], Call)
    assert call["query-status"].name == "query-status"
    call["query-status"]()
    call["device_del"]({"id": "d0"})
    with pytest.raises(ValidationError, match="query_status: unknown command"):
        call["query_status"]()
    assert client.names() == ["query-status", "device_del"]
    assert call.blockdev_add.name == "blockdev-add"
    assert repr(call.blockdev_add) == "<qmplex call 'blockdev-add'>"
    assert call.device_del.arguments == [Argument("id", "str", True)]


def test_call_without_schema_uses_the_rules() -> None:
    client = FakeClient()
    call = CallNamespace(client, None)
    assert call.schema is None
    call.blockdev_add(driver="null-co", node_name="b0", bogus=1)  # type: ignore[call-overload]  # not validated
    dashed: dict[str, Any] = {"scsi-id": 1}
    call.device_add(driver="scsi-hd", id="d0", drive="b0", logical_block_size=4096, **dashed)
    call.netdev_add(type="tap", id="n0", vnet_hdr=True)
    call.human_monitor_command(command_line="info status")
    call.system_reset()
    assert client.calls == [
        ("blockdev-add", {"driver": "null-co", "node-name": "b0", "bogus": 1}, DEFAULTS),
        ("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "b0",
                        "logical_block_size": 4096, "scsi-id": 1}, DEFAULTS),
        ("netdev_add", {"type": "tap", "id": "n0", "vnet_hdr": True}, DEFAULTS),
        ("human-monitor-command", {"command-line": "info status"}, DEFAULTS),
        ("system_reset", None, DEFAULTS),
    ]
    assert call.device_del.arguments == []


def test_call_device_add_properties_keep_their_names(schema: Schema) -> None:
    # Device properties are spelled both ways (host_mtu, scsi-id): sent as given.
    client = FakeClient()
    call = CallNamespace(client, schema)
    call.device_add({"scsi-id": 1}, driver="scsi-hd", id="d0", drive="b0", bus="scsi0.0",
                    lun=0, physical_block_size=4096)
    dashed: dict[str, Any] = {"disable-modern": True}
    call.device_add(driver="virtio-net-pci", id="n0", host_mtu=9000, class_=2, **dashed)
    assert [args for _, args, _ in client.calls] == [
        {"scsi-id": 1, "driver": "scsi-hd", "id": "d0", "drive": "b0", "bus": "scsi0.0",
         "lun": 0, "physical_block_size": 4096},
        {"driver": "virtio-net-pci", "id": "n0", "host_mtu": 9000, "class": 2,
         "disable-modern": True},
    ]
    assert schema.is_free_form("device_add")
    assert not schema.is_free_form("object-add") and not schema.is_free_form("netdev_add")
    assert not schema.is_free_form("blockdev-add") and not schema.is_free_form("nope")


def test_call_object_add_free_form_before_qemu_6() -> None:
    from qmplex.testing import captured_release

    # 5.2: object-add is free-form (QOM properties as given); 6.0: a union (members).
    old = captured_release("5.2.0")
    new = captured_release("6.0.0")
    for release, client, mem_path in ((old, FakeClient(old.schema.version), "mem_path"),
                                      (new, FakeClient(new.schema.version), "mem-path")):
        for schema in (release.schema, None):
            client.calls.clear()
            CallNamespace(client, schema).object_add(
                qom_type="memory-backend-file", id="m0", mem_path="/dev/shm/m", size=1 << 20)
            assert client.calls[0][1] == {"qom-type": "memory-backend-file", "id": "m0",
                                          mem_path: "/dev/shm/m", "size": 1 << 20}


def test_call_dir_and_private_names(schema: Schema) -> None:
    call = CallNamespace(FakeClient(), schema)
    names = dir(call)
    for name in ("blockdev_add", "device_del", "query_status", "qom_list",
                 "human_monitor_command", "x_blockdev_change"):
        assert name in names
    assert "blockdev-add" not in names
    with pytest.raises(AttributeError):
        call._private  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        call.__wrapped__  # type: ignore[attr-defined]  # noqa: B018
    assert "blockdev_add" not in dir(CallNamespace(FakeClient(), None))


# -------------------------------------------------------------------- loading
def _replies(info: list[dict[str, Any]]) -> dict[str, Any]:
    return {"query-qmp-schema": info, "query-target": {"arch": "x86_64"}}


def test_load_schema_sets_nothing_on_the_client(info: list[dict[str, Any]]) -> None:
    client = FakeClient(replies=_replies(info))
    before = dict(vars(client))
    first = load_schema(client).result()
    assert isinstance(first, Schema) and first.has_command("blockdev-add")
    assert first.version == V72
    assert client.names() == ["query-target", "query-qmp-schema"]
    # every call is a new load (the client keeps the per-connection memo, not us)
    second = load_schema(client)
    assert second.result() is first  # from the process-wide cache
    assert client.names() == ["query-target", "query-qmp-schema", "query-target"]
    third = load_schema(client, cache=False).result()
    assert third is not first and third.has_command("blockdev-add")
    CallNamespace(client, first).query_status()
    assert vars(client).keys() == before.keys()
    assert all(vars(client)[name] is value for name, value in before.items())


def test_load_schema_version_is_the_clients_when_built(info: list[dict[str, Any]]) -> None:
    client = FakeClient(replies=_replies(info))
    assert load_schema(client).result().version == V72
    client.version = QMPVersion(8, 0, 0, "Debian 1:8.0")  # another QEMU
    other = load_schema(client).result()
    assert other.version == client.version
    assert client.names()[-2:] == ["query-target", "query-qmp-schema"]  # not cached


def test_load_schema_process_cache(info: list[dict[str, Any]]) -> None:
    one = FakeClient(replies=_replies(info))
    two = FakeClient(replies=_replies(info))
    s1 = load_schema(one).result()
    s2 = load_schema(two).result()
    assert s1 is s2
    assert two.names() == ["query-target"]  # no second 207 KB schema
    # another target architecture with the same package string is another schema
    arm = FakeClient(replies={**_replies(info), "query-target": {"arch": "aarch64"}})
    assert load_schema(arm).result() is not s1
    assert arm.names() == ["query-target", "query-qmp-schema"]
    # cache=False neither reads nor fills the cache
    three = FakeClient(replies=_replies(info))
    assert load_schema(three, cache=False).result() is not s1
    assert three.names() == ["query-qmp-schema"]
    clear_schema_cache()
    four = FakeClient(replies=_replies(info))
    assert load_schema(four).result() is not s1


def test_load_schema_does_not_cache_local_builds(info: list[dict[str, Any]]) -> None:
    local = QMPVersion(7, 2, 0, "")
    one = FakeClient(local, _replies(info))
    two = FakeClient(local, _replies(info))
    assert load_schema(one).result() is not load_schema(two).result()
    assert two.names() == ["query-target", "query-qmp-schema"]


def test_load_schema_without_query_target(info: list[dict[str, Any]]) -> None:
    replies = {"query-qmp-schema": info,
               "query-target": CommandError("query-target", "CommandNotFound", "nope")}
    one = FakeClient(replies=replies)
    two = FakeClient(replies=replies)
    assert load_schema(one).result() is not load_schema(two).result()
    assert two.names() == ["query-target", "query-qmp-schema"]


def test_load_schema_failures(info: list[dict[str, Any]]) -> None:
    lost = ConnectionLost("gone")
    client = FakeClient(replies={"query-target": lost})
    with pytest.raises(ConnectionLost):
        load_schema(client).result()
    assert client.names() == ["query-target"]
    client.replies = {"query-qmp-schema": CommandError("query-qmp-schema", "GenericError",
                                                       "no")}
    with pytest.raises(CommandError):
        load_schema(client, cache=False).result()
    client.replies = {"query-qmp-schema": "not a schema"}
    with pytest.raises(ProtocolError, match="the schema is not a list"):
        load_schema(client, cache=False).result()
    client.replies = _replies(info)
    assert load_schema(client).result().has_command("qom-list")


def test_load_schema_cancel(info: list[dict[str, Any]]) -> None:
    client = FakeClient(replies=_replies(info))
    client.hold["query-target"] = Future()
    fut = load_schema(client)
    assert fut.cancel()
    assert client.hold["query-target"].cancelled()
    client.hold.clear()
    assert load_schema(client).result().has_command("device_add")


def test_load_schema_cancel_while_fetching(info: list[dict[str, Any]]) -> None:
    client = FakeClient(replies=_replies(info))
    client.hold["query-qmp-schema"] = Future()
    fut = load_schema(client)
    assert client.names() == ["query-target", "query-qmp-schema"]
    assert fut.cancel()
    assert client.hold["query-qmp-schema"].cancelled()


def test_load_schema_started_while_connecting(info: list[dict[str, Any]]) -> None:
    client = FakeClient(version=None, replies=_replies(info))
    client.hold["query-target"] = Future()
    fut = load_schema(client)
    client.version = V72  # the greeting arrives before any reply
    client.hold.pop("query-target").set_result({"arch": "x86_64"})
    schema = fut.result()
    assert schema.version == V72


def test_load_schema_cache_is_bounded(info: list[dict[str, Any]]) -> None:
    first = None
    for i in range(SCHEMA_CACHE_ENTRIES + 1):
        c = FakeClient(QMPVersion(7, 2, 22, f"build {i}"), _replies(info))
        loaded = load_schema(c).result()
        first = first or loaded
    again = FakeClient(QMPVersion(7, 2, 22, "build 0"), _replies(info))
    assert load_schema(again).result() is not first  # the oldest entry was evicted
    last = FakeClient(QMPVersion(7, 2, 22, f"build {SCHEMA_CACHE_ENTRIES}"), _replies(info))
    load_schema(last).result()
    assert last.names() == ["query-target"]


def test_with_a_real_client_over_the_fake_server(info: list[dict[str, Any]]) -> None:
    with fake_server(version=(7, 2, 22), package="Debian 1:7.2+dfsg-7") as srv:
        srv.on("query-qmp-schema", returns=info)
        srv.on("query-target", returns={"arch": "x86_64", "cpu": "qemu64"})
        client = qmplex.connect(srv.path, timeout=5)
        try:
            schema = client.load_schema().result(timeout=5)
            assert schema.has_command("blockdev-add")
            assert client.load_schema().result(timeout=5) is schema
            assert client.schema is schema
            call = client.call
            assert call.schema is schema
            assert call.query_status().result(timeout=5)["status"] == "prelaunch"
            with pytest.raises(ValidationError, match="query-status: verbose: unknown"):
                call.query_status(verbose=True)  # type: ignore[call-arg]
            assert call.blockdev_add(driver="null-co", node_name="b0").result(timeout=5) == {}
            names = [m.get("execute") for m in srv.received]
            assert names == ["qmp_capabilities", "query-target", "query-qmp-schema",
                             "query-status", "blockdev-add"]
            assert srv.received[-1]["arguments"] == {"driver": "null-co", "node-name": "b0"}
        finally:
            client.close()


# ------------------------------------------------- the client's per-connection memo
# A small schema: a 200 KB reply would not fit in the socketpair's buffer twice.
TINY = [{"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        {"name": "0", "meta-type": "object", "members": []}]


def _answer(peer: ScriptedPeer) -> list[str]:
    """Answer the schema commands the client sends; return their names in order."""
    names: list[str] = []
    for _ in range(3):  # query-target, then query-qmp-schema once the first is answered
        for msg in peer.read():
            names.append(msg["execute"])
            peer.reply(msg, {"arch": "x86_64"} if msg["execute"] == "query-target" else TINY)
    return names


def test_client_loads_the_schema_once_per_connection(peer: ScriptedPeer) -> None:
    client = peer.client
    attributes = set(vars(client))
    assert client.schema is None and client.call.schema is None
    fut = client.load_schema()
    assert client.load_schema() is fut and not fut.done()  # a pending load is shared
    assert client.schema is None
    assert _answer(peer) == ["query-target", "query-qmp-schema"]
    peer.until(fut.done)
    schema = fut.result()
    assert schema.has_command("query-status") and schema.version == client.version
    assert client.schema is schema and client.call.schema is schema
    assert client.load_schema() is fut
    assert client.load_schema(cache=False) is fut  # same connection
    assert peer.read() == []  # nothing more was sent
    assert set(vars(client)) == attributes  # the client's own memo, no new attribute


def test_client_schema_memo_resets_on_reconnect(reactor: Reactor) -> None:
    client = Client(reactor)
    first = ScriptedPeer(reactor, client)
    second: ScriptedPeer | None = None
    try:
        first.handshake()
        fut = client.load_schema()
        assert _answer(first) == ["query-target", "query-qmp-schema"]
        first.until(fut.done)
        schema = fut.result()
        first.close()  # "QEMU restarted"
        first.until(lambda: client.state is ClientState.DISCONNECTED)
        second = ScriptedPeer(reactor, client)
        second.handshake()
        assert client.schema is None and client.call.schema is None
        again = client.load_schema()
        assert again is not fut
        # the memo started afresh (query-target again); the build's cache answered
        assert _answer(second) == ["query-target"]
        second.until(again.done)
        assert again.result() is schema and client.schema is schema
        assert client.load_schema(cache=False) is again
    finally:
        client.close()
        first.close()
        if second is not None:
            second.close()


def test_client_retries_a_failed_or_cancelled_load(peer: ScriptedPeer) -> None:
    client = peer.client
    failed = client.load_schema(cache=False)
    (cmd,) = peer.read()
    peer.reply(cmd, error=("GenericError", "no schema today"))
    peer.until(failed.done)
    with pytest.raises(CommandError):
        failed.result()
    assert client.schema is None
    cancelled = client.load_schema(cache=False)
    assert cancelled is not failed
    (cmd,) = peer.read()
    assert cancelled.cancel()
    peer.reply(cmd, TINY)  # a late reply is discarded
    peer.pump()
    assert client.schema is None
    loaded = client.load_schema(cache=False)
    assert loaded is not cancelled
    assert _answer(peer) == ["query-qmp-schema"]
    peer.until(loaded.done)
    assert client.schema is loaded.result()


def test_client_load_started_while_connecting(reactor: Reactor) -> None:
    client = Client(reactor)
    peer = ScriptedPeer(reactor, client)  # connecting: no greeting yet
    try:
        fut = client.load_schema()
        peer.handshake()  # query-target was held until negotiation completed
        assert _answer(peer) == ["query-target", "query-qmp-schema"]
        peer.until(fut.done)
        schema = fut.result()
        assert schema.version == client.version
        assert client.load_schema() is fut and client.schema is schema
    finally:
        client.close()
        peer.close()


def test_loaded_schema_is_a_deprecated_alias(peer: ScriptedPeer) -> None:
    with pytest.deprecated_call():
        assert loaded_schema(peer.client) is None
    fut = peer.client.load_schema()
    _answer(peer)
    peer.until(fut.done)
    with pytest.deprecated_call():
        assert loaded_schema(peer.client) is fut.result()
