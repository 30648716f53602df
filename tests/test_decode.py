"""The C decoder (``qmplex._decode``, ``csrc/decode.c``) against its reference, the Python
loop of ``Protocol._handle_lines``.

The decoder takes runs of routed event lines and in-flight replies off the Python loop
and leaves every other line to it. Whatever the bytes, the protocol must therefore give
the same values, in the same order, and end in the same state (in-flight commands,
counters, fatal error) with the C decoder as without it: checked on hand-written
sessions and on generated ones, fed whole, in chunks and byte by byte. ``decode()``
and ``configure()`` are also called directly, for their contract.

With ``QMPLEX_ALLOW_PY_DECODE=1`` (or the project-wide ``QMPLEX_ALLOW_PURE_PYTHON=1``)
a missing C module skips the check that it is in use instead of failing it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from itertools import pairwise
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmplex.core import protocol as protocol_module
from qmplex.core.framing import KIND_RETURN, ROUTE_BASE, RouteTable
from qmplex.core.messages import Event, Greeting, Reply, StaleReply
from qmplex.core.protocol import Protocol, State
from qmplex.errors import ProtocolError

C_AVAILABLE = protocol_module.C_AVAILABLE
needs_c = pytest.mark.skipif(not C_AVAILABLE, reason="qmplex._decode not built")
#: The real C decode(), kept before any test swaps protocol_module._decode.
C_DECODE = protocol_module._decode

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": ["oob"]}}\n')
NEG_ID = "neg"
NEG_REPLY = b'{"return": {}, "id": "neg"}\n'
NAMES = ["STOP", "RESUME", "DEVICE_DELETED", "BLOCK_JOB_COMPLETED"]


# --- Running a session both ways -----------------------------------------------------------


def typed(x: Any) -> Any:
    """``x`` with every scalar paired with its type: ``1``, ``1.0`` and ``True`` differ,
    and so does the order of a dict's keys."""
    if type(x) is dict:
        return ("dict", tuple((k, typed(v)) for k, v in x.items()))
    if type(x) is list:
        return ("list", tuple(typed(v) for v in x))
    return (type(x).__name__, x)


def canon(value: Any) -> Any:
    """A value of receive_data(), comparable exactly (exact types, raw timestamps)."""
    kind = type(value)
    if kind is Event or kind is Reply:
        return (kind.__name__, tuple(typed(item) for item in value))
    if kind is StaleReply:
        return ("StaleReply", typed(value.id), value.excerpt)
    if kind is Greeting:
        return ("Greeting", value)
    if isinstance(value, ProtocolError):
        return (kind.__name__, str(value), value.excerpt)
    raise AssertionError(f"unexpected value {value!r}")


def snapshot(proto: Protocol) -> Any:
    """What the protocol holds after a receive: state, the in-flight ids and tokens in
    order, the counters, the fatal error."""
    return (proto.state,
            [(typed(cid), typed(token)) for cid, token in proto._in_flight.items()],
            proto.dropped_events, proto.stale_replies, proto.events_before_greeting,
            None if proto.error is None else canon(proto.error))


@contextlib.contextmanager
def decoder(use_c: bool) -> Iterator[list[int]]:
    """Run the protocol with the C decoder (recording how many lines each call took) or
    without it (the pure-Python reference); yield the list of counts."""
    taken: list[int] = []
    saved = protocol_module._decode
    if use_c:
        assert C_DECODE is not None
        real = C_DECODE

        def recording(buf: Any, spans: list[int], index: int, names: Any, in_flight: Any,
                      out: list[Any]) -> int:
            stop = real(buf, spans, index, names, in_flight, out)
            taken.append(stop - index)
            return stop

        protocol_module._decode = recording
    else:
        protocol_module._decode = None
    try:
        yield taken
    finally:
        protocol_module._decode = saved


def start(routes: RouteTable | None, sent: list[tuple[Any, Any]], state: str) -> Protocol:
    """A protocol in ``state`` ("negotiating": qmp_capabilities sent, its reply not read;
    "ready"), with ``sent`` commands in flight."""
    proto = Protocol(routes=routes)
    assert proto.receive_data(GREETING) != []
    proto.negotiate(NEG_ID)
    if state == "ready":
        assert proto.receive_data(NEG_REPLY) == []
        assert proto.state is State.READY
    for cid, token in sent:
        proto.sent(cid, token)
    return proto


Outcome = list[tuple[list[Any], Any]]


def run(use_c: bool, routes: RouteTable | None, sent: list[tuple[Any, Any]],
        chunks: list[bytes], state: str = "ready") -> tuple[Outcome, int]:
    """Feed ``chunks``; return (values and snapshot after each chunk, lines the C
    decoder took)."""
    with decoder(use_c) as taken:
        proto = start(routes, sent, state)
        outcome = [([canon(v) for v in proto.receive_data(chunk)], snapshot(proto))
                   for chunk in chunks]
        proto.close()
    return outcome, sum(taken)


def flat(outcome: Outcome) -> tuple[list[Any], Any]:
    """All the values of a run, and its final snapshot (chunking may move values from
    one receive to the next, never change them)."""
    return [v for values, _ in outcome for v in values], outcome[-1][1]


def same_both_ways(routes: RouteTable | None, sent: list[tuple[Any, Any]], data: bytes,
                   state: str = "ready") -> tuple[Outcome, int]:
    """Assert that C and Python give the same for ``data`` fed whole, byte by byte and
    line by line; return the whole run's outcome and the lines C took in it."""
    lines = data.splitlines(keepends=True)
    ways = {"whole": [data], "bytewise": [data[i:i + 1] for i in range(len(data))],
            "lines": lines or [b""]}
    result: tuple[Outcome, int] | None = None
    reference_flat = None
    for way, chunks in ways.items():
        expected, _ = run(False, routes, sent, chunks, state)
        if not C_AVAILABLE:
            got, taken = expected, 0
        else:
            got, taken = run(True, routes, sent, chunks, state)
            assert got == expected, way
        if reference_flat is None:
            reference_flat = flat(expected)
            result = (got, taken)
        else:
            assert flat(expected) == reference_flat, way
    assert result is not None
    return result


def in_c(lines: int) -> int:
    """How many lines the C decoder takes where it takes ``lines`` (none without it)."""
    return lines if C_AVAILABLE else 0


def event(name: str, n: int = 1, **fields: Any) -> bytes:
    msg: dict[str, Any] = {"timestamp": {"seconds": 1700000000 + n, "microseconds": n},
                           "event": name, "data": {"n": n}}
    msg.update(fields)
    return orjson.dumps(msg) + b"\n"


def reply(cid: Any, value: Any = None, *, key: str = "return") -> bytes:
    return orjson.dumps({key: {"ok": 1} if value is None else value, "id": cid}) + b"\n"


# --- The module is in use ------------------------------------------------------------------


def test_c_decoder_is_in_use() -> None:
    """CI must never pass on a silent fallback to the pure-Python decoding: a failed
    build fails here."""
    for switch in ("QMPLEX_ALLOW_PY_DECODE", "QMPLEX_ALLOW_PURE_PYTHON"):
        if os.environ.get(switch) == "1":
            pytest.skip(f"{switch}=1")
    assert protocol_module.C_AVAILABLE, protocol_module.C_IMPORT_ERROR
    assert protocol_module.C_IMPORT_ERROR is None
    from qmplex import _decode

    assert protocol_module._decode is _decode.decode
    assert _decode.KIND_RETURN == KIND_RETURN
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        # One binary for every CPython the package supports.
        assert _decode.LIMITED_API == 0x030A0000
        assert _decode.__file__ is not None and _decode.__file__.endswith(".abi3.so")


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "built"])
def test_python_fallback_warns_once_naming_the_import_error(missing: bool) -> None:
    if not missing and not C_AVAILABLE:
        pytest.skip("qmplex._decode not built")
    block = "sys.modules['qmplex._decode'] = None\n" if missing else ""
    code = (
        "import sys, warnings\n"
        + block +  # what a build without the module gives
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import qmplex.core.protocol as p\n"
        "    import qmplex.core.protocol\n"
        f"assert p.C_AVAILABLE is {not missing}, p.C_IMPORT_ERROR\n"
        "mine = [w for w in caught if 'qmplex._decode' in str(w.message)]\n"
        f"expected = 1 if {missing} and p._FRAMING_C else 0\n"
        "assert len(mine) == expected, [str(w.message) for w in caught]\n"
        "for w in mine:\n"
        "    assert w.category is RuntimeWarning\n"
        "    assert str(w.message).startswith('qmplex is running without its C speed-ups')\n"
        "    assert p.C_IMPORT_ERROR in str(w.message)\n"
        "from qmplex.core.protocol import Protocol\n"
        "proto = Protocol()\n"
        "assert proto.receive_data(" + repr(GREETING) + ")\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


# --- The same values and state, both ways: hand-written sessions -------------------------------


ROUTES = RouteTable(["STOP", "RESUME", "DEVICE_DELETED"])


def test_a_run_of_routed_events_and_replies_is_taken_by_c_whole() -> None:
    sent = [(i, f"t{i}") for i in range(5)]
    data = b"".join([event("STOP", 1), reply(0), event("RESUME", 2), reply(3),
                     event("DEVICE_DELETED", 3, data={"device": "d1"}), reply(1),
                     reply(4), reply(2), event("STOP", 4)])
    outcome, taken = same_both_ways(ROUTES, sent, data)
    assert taken == in_c(9)  # every line, in one call when fed whole
    values, (state, in_flight, *_) = flat(outcome)
    assert [v[0] for v in values] == ["Event", "Reply"] * 2 + ["Event"] + ["Reply"] * 3 + [
        "Event"]
    assert in_flight == []
    assert state is State.READY


def test_mixed_stream_every_line_kind() -> None:
    sent = [(1, "A"), (2, "B"), (3, "C"), ("s", "D"), (5, "E")]
    data = b"".join([
        event("STOP", 1), reply(1),
        b'{"error": {"class": "GenericError", "desc": "no"}, "id": 2}\n',  # C leaves
        event("RESUME", 2),
        event("RESET", 3),  # not wanted: dropped undecoded
        reply(99),  # stale
        b'{"id": 3, "return": 7}\n',  # KIND_OTHER (id first)
        b"garbage\n",
        b'{"event": "STOP", BROKEN\n',  # routed, invalid JSON: reported, not fatal
        b"[1, 2]\n", b"42\n",
        b'{"data": {}, "event": "STOP"}\n',  # an event the splitter cannot route
        b'{"hello": 1}\n',
        reply("s", [1, 2]),
        b'{"return": 5}\n',  # no id: the oldest command in flight
        event("DEVICE_DELETED", 4),
        b'{"QMP": {"version": {}}}\n',
    ])
    outcome, taken = same_both_ways(ROUTES, sent, data)
    values, (state, in_flight, dropped, stale, *_) = flat(outcome)
    assert (dropped, stale, in_flight) == (1, 1, [])
    assert state is State.READY
    # C took the routed events and the replies by id; Python the rest.
    assert taken == in_c(5)


@pytest.mark.parametrize("routes", [None, RouteTable(["STOP"], catch_all=True),
                                    RouteTable(["STOP", "RESUME"])],
                         ids=["no routes", "catch-all", "routed"])
def test_routed_names_and_catch_all(routes: RouteTable | None) -> None:
    data = b"".join([event("STOP", 1), event("RESUME", 2), event("OTHER", 3),
                     b'{"event": "ST\\u004fP", "data": {}}\n', event("STOP", 5)])
    outcome, taken = same_both_ways(routes, [], data)
    values, _ = flat(outcome)
    names = [v[1][0][1] for v in values]
    if routes is None:
        assert names == ["STOP", "RESUME", "OTHER", "STOP", "STOP"]
        assert taken == 0  # nothing routed: the Python loop decodes every event
    elif routes.catch_all:
        assert names == ["STOP", "RESUME", "OTHER", "STOP", "STOP"]
        assert taken == in_c(2)
    else:
        assert names == ["STOP", "RESUME", "STOP", "STOP"]
        assert taken == in_c(3)


def test_a_name_too_long_for_the_c_table_is_still_decoded() -> None:
    long_name = "X" * 300
    routes = RouteTable(["STOP", long_name])
    data = event("STOP") + event(long_name) + event("OTHER") + event("STOP", 2)
    outcome, taken = same_both_ways(routes, [], data)
    values, (_, _, dropped, *_) = flat(outcome)
    assert [v[1][0][1] for v in values] == ["STOP", long_name, "STOP"]
    assert (taken, dropped) == (in_c(2), 1)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"data": [1, 2]},
        {"data": None},
        {"data": "x"},
        {"data": {}},
        {"data": {"nested": {"a": [1, {"b": None}]}}},
        {"timestamp": 5},
        {"timestamp": None},
        {"timestamp": {"seconds": "x"}},
    ],
)
def test_event_members_of_every_shape(fields: dict[str, Any]) -> None:
    msg: dict[str, Any] = {"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2},
                           "data": {"a": 1}}
    msg.update(fields)
    absent = orjson.dumps({"event": "STOP", **fields}) + b"\n"
    data = orjson.dumps(msg) + b"\n" + absent
    outcome, taken = same_both_ways(ROUTES, [], data)
    assert taken == in_c(2)
    values, _ = flat(outcome)
    assert len(values) == 2


def test_duplicate_members_and_return_with_error() -> None:
    sent = [(1, "A"), (2, "B")]
    data = (b'{"event": "STOP", "data": {"a": 1}, "data": 7}\n'
            b'{"return": 1, "return": 2, "id": 1}\n'
            b'{"return": 3, "error": {"class": "X"}, "id": 2}\n')
    outcome, taken = same_both_ways(ROUTES, sent, data)
    assert taken == in_c(3)


# Ids of every JSON type, as the peer sends them, against what is in flight.
IN_FLIGHT = [(7, "int"), (-3, "negative"), (0, "zero"), (2**64 - 1, "u64"),
             (-(2**63), "i64 min"), (1.5, "float"), (2, "two"), ("a", "str"), ("é", "utf8"),
             ("", "empty"), (None, "none"), (1, "one")]
REPLY_IDS = [b"7", b"-3", b"0", b"-0", b"18446744073709551615", b"18446744073709551616",
             b"-9223372036854775808", b"1.5", b"2.0", b"-0.0", b"1E0", b"1e300", b'"a"',
             b'"\\u0061"', '"é"'.encode(), b'""', b'"7"', b'"zzz"', b"null", b"true",
             b"false", b"8", b"[1]", b'{"a": 1}', b"[]", b"{}"]


@pytest.mark.parametrize("text", REPLY_IDS, ids=lambda t: t.decode())
def test_reply_ids_of_every_json_type(text: bytes) -> None:
    line = b'{"return": {"ok": 1}, "id": ' + text + b"}\n"
    outcome, taken = same_both_ways(ROUTES, IN_FLIGHT, line + line + event("STOP"))
    values, _ = flat(outcome)
    first = values[0]
    cid = orjson.loads(text)
    hashable = not isinstance(cid, (list, dict))
    if hashable and any(k == cid for k, _ in IN_FLIGHT):
        # Matched as a dict matches: 2.0 is 2, True is 1, False is 0, -0.0 is 0.
        assert first[0] == "Reply"
        assert values[1][0] == "StaleReply"  # the second is a duplicate
        assert taken == in_c(2)  # the reply and the event
    else:
        assert first[0] == "StaleReply"
        assert taken == in_c(1)  # only the event


def test_unhashable_and_stale_ids_leave_in_flight_alone() -> None:
    sent = [(1, "A"), ((1,), "tuple"), (3, "C")]
    data = reply([1]) + reply({"x": 1}) + reply(4) + reply(3) + reply("1") + reply(1)
    outcome, taken = same_both_ways(ROUTES, sent, data)
    values, (_, in_flight, _, stale, *_) = flat(outcome)
    assert [v[0] for v in values] == ["StaleReply"] * 3 + ["Reply", "StaleReply", "Reply"]
    assert stale == 4
    assert in_flight == [(("tuple", (1,)), ("str", "tuple"))]
    assert taken == in_c(2)


def test_tokens_that_are_falsy_or_none() -> None:
    sent = [(1, None), (2, 0), (3, ""), (4, False)]
    outcome, taken = same_both_ways(ROUTES, sent, reply(1) + reply(2) + reply(3) + reply(4))
    values, _ = flat(outcome)
    assert [v[1][0] for v in values] == [("NoneType", None), ("int", 0), ("str", ""),
                                          ("bool", False)]
    assert taken == in_c(4)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"return": {oops',  # invalid JSON on a reply line: fatal
        b'{"return": 1, "id": 18446744073709551616E999}',  # a number orjson refuses
        b'{"return": ' + b"[" * 1100 + b"]" * 1100 + b', "id": 1}',  # too deep
        b'{"error": {"class": "GenericError"',
    ],
)
def test_invalid_reply_json_is_fatal_both_ways(bad: bytes) -> None:
    sent = [(1, "A"), (2, "B")]
    data = event("STOP") + reply(2) + bad + b"\n" + reply(1) + event("STOP", 2)
    outcome, taken = same_both_ways(ROUTES, sent, data)
    values, (state, in_flight, *_rest, error) = flat(outcome)
    assert state is State.CLOSED and error is not None and error[0] == "DecodeError"
    assert in_flight == [(("int", 1), ("str", "A"))]  # nothing after the fatal line
    assert taken == in_c(2)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"event": "STOP", BROKEN',
        b'{"event": "STOP", "data": ' + b"[" * 1100 + b"]" * 1100 + b"}",
        b'{"event": "STOP", "data": {"x": 1e400}}',
        b'{"event": "STOP"} trailing',
        b'{"event": "STOP", "data": "\xff"}',
    ],
)
def test_invalid_routed_event_json_is_reported_both_ways(bad: bytes) -> None:
    sent = [(1, "A")]
    data = event("STOP") + bad + b"\n" + reply(1) + event("RESUME")
    outcome, taken = same_both_ways(ROUTES, sent, data)
    values, (state, *_) = flat(outcome)
    assert [v[0] for v in values] == ["Event", "DecodeError", "Reply", "Event"]
    assert state is State.READY
    assert taken == in_c(3)


def test_the_batch_that_ends_negotiation() -> None:
    """Before READY nothing goes to C; after the negotiation reply, in the same batch,
    replies do (events are not routed in that batch: the splitter ran before READY)."""
    sent = [(1, "A"), (2, "B")]
    data = (event("STOP") + reply(1) + NEG_REPLY + event("STOP", 2) + reply(2)
            + event("RESUME", 3))
    outcome, taken = same_both_ways(ROUTES, sent, data, state="negotiating")
    values, (state, in_flight, *_) = flat(outcome)
    # Command 1's reply cannot come before READY (it is not sent before): stale, and the
    # command stays in flight.
    assert state is State.READY and in_flight == [(("int", 1), ("str", "A"))]
    assert [v[0] for v in values] == ["Event", "StaleReply", "Event", "Reply", "Event"]
    assert taken == in_c(1)


def test_crlf_blank_lines_and_bytearray_input() -> None:
    sent = [(1, "A"), (2, "B")]
    data = (b"\r\n \n" + event("STOP").replace(b"\n", b"\r\n") + b"\n"
            + reply(1).replace(b"\n", b"\r\n") + reply(2) + b"\t\r\n")
    same_both_ways(ROUTES, sent, data)
    for use_c in ([False, True] if C_AVAILABLE else [False]):
        # receive_data() takes a bytearray too (the splitter scans it in place).
        outcome, taken = run(use_c, ROUTES, sent, [bytearray(data)])  # type: ignore[list-item]
        assert [v[0] for v in flat(outcome)[0]] == ["Event", "Reply", "Reply"]
        assert taken == (3 if use_c else 0)


def test_a_line_too_long_after_a_run() -> None:
    outcomes = []
    for use_c in ([False, True] if C_AVAILABLE else [False]):
        with decoder(use_c) as taken:
            proto = Protocol(max_line_bytes=200, routes=ROUTES)
            proto.receive_data(GREETING)
            proto.negotiate(NEG_ID)
            proto.receive_data(NEG_REPLY)
            proto.sent(1, "A")
            values = proto.receive_data(event("STOP") + reply(1) + b'{"return": "' + b"x" * 300)
            outcomes.append(([canon(v) for v in values], snapshot(proto)))
        assert sum(taken) == (2 if use_c else 0)
    assert outcomes[0] == outcomes[-1]
    assert [v[0] for v in outcomes[0][0]] == ["Event", "Reply", "LineTooLong"]


# --- The same values and state, both ways: generated sessions --------------------------------

# Ids the peer may answer with (JSON), and the commands that may be in flight.
ID_POOL = [b"1", b"2", b"3", b'"a"', b'"b"', b"0", b"-1", b"2.0", b"true", b"null", b"[1]",
           b'{"k": 1}', b"100000000000000000000", '"é"'.encode()]
SENT_POOL: list[Any] = [1, 2, 3, "a", "b", 0, -1, None, "é", 4]


@st.composite
def stream_lines(draw: st.DrawFn) -> bytes:
    """One line of a QMP stream, usual or not."""
    kind = draw(st.sampled_from(["event", "event", "reply", "reply", "error", "other"]))
    if kind == "event":
        name = draw(st.sampled_from([*NAMES, "OTHER", "ST\\u004fP"]))
        ts: Any = draw(st.sampled_from([{"seconds": 5, "microseconds": 6}, None, 3, "x"]))
        data: Any = draw(st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "device"]),
                            st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()),
                            max_size=3),
            st.sampled_from([None, [1], "s", 0])))
        parts = [f'"event": "{name}"', f'"data": {orjson.dumps(data).decode()}']
        if ts is not None:  # first (QEMU's order), second or last
            parts.insert(draw(st.integers(0, 2)), f'"timestamp": {orjson.dumps(ts).decode()}')
        if draw(st.integers(0, 9)) == 0:
            parts = parts[::-1]  # "data" first: unroutable by the splitter
        return ("{" + ", ".join(parts) + "}").encode()
    if kind in ("reply", "error"):
        key = "return" if kind == "reply" else "error"
        value = draw(st.sampled_from([{}, 1, [1, 2], {"status": "running"}, None, "s"]))
        members = [b'"%s": %s' % (key.encode(), orjson.dumps(value))]
        if draw(st.integers(0, 7)):
            members.append(b'"id": ' + draw(st.sampled_from(ID_POOL)))
        if draw(st.integers(0, 9)) == 0:
            members.reverse()  # "id" first: KIND_OTHER
        line = b"{" + b", ".join(members) + b"}"
        if draw(st.integers(0, 30)) == 0:
            line = line[:-2]  # truncated: a fatal DecodeError on a reply line
        return line
    return draw(st.sampled_from([b"garbage", b"[1]", b"null", b'{"x": 1}', b"{}",
                                 b'{"event": "STOP", oops', b'{"event": 5}', b"",
                                 b'{"QMP": {}}', b'{"event": "STOP"} tail']))


@st.composite
def sessions(draw: st.DrawFn) -> tuple[Any, list[tuple[Any, Any]], bytes, str]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    routes = draw(st.sampled_from([None, RouteTable(names), RouteTable(names, catch_all=True)]))
    sent_ids = draw(st.lists(st.sampled_from(SENT_POOL), unique=True, max_size=8))
    sent = [(cid, f"t{i}") for i, cid in enumerate(sent_ids)]
    lines = draw(st.lists(stream_lines(), max_size=25))
    state = draw(st.sampled_from(["ready", "ready", "negotiating"]))
    if state == "negotiating":
        lines.insert(draw(st.integers(0, len(lines))), NEG_REPLY.rstrip(b"\n"))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines),
                         max_size=len(lines)))
    return routes, sent, b"".join(a + b for a, b in zip(lines, ends, strict=True)), state


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(session=sessions(), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_generated_streams_give_the_same_both_ways(
        session: tuple[Any, list[tuple[Any, Any]], bytes, str], cuts: list[int]) -> None:
    routes, sent, data, state = session
    for chunks in ([data], chunked(data, [c % (len(data) + 1) for c in cuts])):
        expected, _ = run(False, routes, sent, chunks, state)
        if C_AVAILABLE:
            got, _ = run(True, routes, sent, chunks, state)
            assert got == expected


PIECES = [b"{", b"}", b"[", b"]", b'"', b":", b",", b" ", b"\\", b"\xff", b"1", b"null",
          b'"event"', b'"return"', b'"error"', b'"id"', b'"STOP"', b'"data"', b'"timestamp"']


@SETTINGS
@given(
    pieces=st.lists(st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join), max_size=15),
    routes=st.sampled_from([None, RouteTable(["STOP"]), RouteTable(["STOP"], catch_all=True)]),
)
def test_arbitrary_lines_give_the_same_both_ways(pieces: list[bytes],
                                                 routes: RouteTable | None) -> None:
    data = b"".join(p + b"\n" for p in pieces)
    sent = [(1, "A"), (None, "N"), ("STOP", "S")]
    expected, _ = run(False, routes, sent, [data])
    if C_AVAILABLE:
        got, _ = run(True, routes, sent, [data])
        assert got == expected


# --- decode() and configure() called directly -----------------------------------------------


def fresh_module() -> ModuleType:
    """A new, unconfigured instance of qmplex._decode (multi-phase init: its own state)."""
    from qmplex import _decode

    spec = importlib.util.find_spec("qmplex._decode")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module is not _decode
    return module


def configured(loads: Callable[[bytes], Any] = orjson.loads) -> ModuleType:
    module = fresh_module()
    module.configure(loads, Event, Reply, orjson.JSONDecodeError, ROUTE_BASE)
    return module


def spans_of(lines: list[tuple[int, bytes]]) -> tuple[bytes, list[int]]:
    """A buffer and its span list for (tag, line) pairs, as the splitter gives them."""
    buf = b""
    spans: list[int] = []
    for tag, line in lines:
        spans += (tag, len(buf), len(buf) + len(line))
        buf += line + b"\n"
    return buf, spans


R0, R1 = ROUTE_BASE, ROUTE_BASE + 1
LINES = [
    (R0, b'{"event": "A", "data": {"x": 1}, "timestamp": {"seconds": 1}}'),
    (KIND_RETURN, b'{"return": {"v": 1}, "id": 1}'),
    (R1, b'{"event": "B"}'),
    (KIND_RETURN, b'{"return": 2, "id": 9}'),  # not in flight
    (R0, b'{"event": "A", "data": 3}'),
]


@needs_c
def test_decode_contract() -> None:
    decode = configured().decode
    buf, spans = spans_of(LINES)
    token = object()
    in_flight: dict[Any, Any] = {5: "five", 1: token, 2: "two"}
    out: list[Any] = []
    assert decode(buf, spans, 0, ("A", "B"), in_flight, out) == 3
    assert out == [Event("A", {"x": 1}, 1.0), Reply(token, True, {"v": 1}), Event("B")]
    assert [type(v) for v in out] == [Event, Reply, Event]
    assert out[0][2] == {"seconds": 1} and out[2][1:] == ({}, None)  # raw timestamps
    assert out[1].ok is True and out[1].token is token
    assert list(in_flight) == [5, 2]  # popped, the order of the others kept
    # Resuming after the line left to the caller, and at the end.
    assert decode(buf, spans, 4, ("A", "B"), in_flight, out) == 5
    assert out[-1] == Event("A", {}, 0.0)
    assert decode(buf, spans, 5, ("A", "B"), in_flight, out) == 5
    assert decode(buf, spans, 3, ("A", "B"), in_flight, out) == 3  # refused again
    assert len(out) == 4
    # A bytearray buffer gives the same.
    again: list[Any] = []
    assert decode(bytearray(buf), spans, 0, ("A", "B"), {1: token}, again) == 3
    assert again == out[:3]


@needs_c
def test_decode_leaves_what_it_does_not_handle() -> None:
    decode = configured().decode
    cases = [
        (KIND_RETURN - 1, b'{"return": 1, "id": 1}'),  # another kind
        (ROUTE_BASE - 1, b'{"event": "A"}'),
        (R1 + 5, b'{"event": "A"}'),  # a route past the names
        (R0, b'{"event": "A", oops'),
        (KIND_RETURN, b'{"return": 1}'),  # no id
        (KIND_RETURN, b'{"error": 1, "id": 1}'),  # no return
        (KIND_RETURN, b'{"return": 1, "id": [1]}'),  # unhashable
        (KIND_RETURN, b'{"return": 1, "id": 2}'),  # not in flight
        (KIND_RETURN, b"[1]"),  # not a dict
        (KIND_RETURN, b""),
    ]
    for tag, line in cases:
        buf, spans = spans_of([(tag, line)])
        in_flight = {1: "one"}
        out: list[Any] = []
        assert decode(buf, spans, 0, ("A", "B"), in_flight, out) == 0, line
        assert out == [] and in_flight == {1: "one"}, line


@needs_c
def test_decode_values_are_real_tuples_of_their_type() -> None:
    """Built by tuple's own constructor: the hash (cached from 3.14 on) and equality
    are those of a tuple made in Python."""
    decode = configured().decode
    buf, spans = spans_of(LINES[:3])
    out: list[Any] = []
    decode(buf, spans, 0, ("A", "B"), {1: "tok"}, out)
    made = Reply("tok", True, 5)
    buf2, spans2 = spans_of([(KIND_RETURN, b'{"return": 5, "id": 1}')])
    out2: list[Any] = []
    decode(buf2, spans2, 0, (), {1: "tok"}, out2)
    assert out2 == [made] and hash(out2[0]) == hash(made) == hash(("tok", True, 5))
    assert out2[0] is not made and len(out2[0]) == 3
    assert hash(out[0]) == hash(Event("A", {"x": 1}, 1.0))
    assert gc.is_tracked(out2[0])


@needs_c
def test_decode_argument_errors() -> None:
    decode = configured().decode
    buf, spans = spans_of(LINES)
    ok: tuple[Any, ...] = (buf, spans, 0, ("A", "B"), {}, [])
    bad_args: list[tuple[int, Any, type[Exception]]] = [
        (0, "text", TypeError), (0, memoryview(buf), TypeError), (1, tuple(spans), TypeError),
        (2, "0", TypeError), (2, -1, ValueError), (2, 6, ValueError), (3, ["A", "B"], TypeError),
        (4, [], TypeError), (5, (), TypeError),
    ]
    for position, value, error in bad_args:
        args = list(ok)
        args[position] = value
        with pytest.raises(error):
            decode(*args)
    with pytest.raises(TypeError):
        decode(*ok[:5])
    # A span outside the buffer is refused, not read.
    for start, end in ((0, len(buf) + 1), (-1, 3), (5, 4)):
        with pytest.raises(ValueError, match="outside buf"):
            decode(buf, [R0, start, end], 0, ("A",), {}, [])
    # A span list that is not ints.
    with pytest.raises(TypeError):
        decode(buf, [R0, "0", 3], 0, ("A",), {}, [])


@needs_c
def test_decode_exceptions_the_reference_lets_through_propagate() -> None:
    buf, spans = spans_of([(R0, b'{"event": "A"}')])

    def loads_fails(line: bytes) -> Any:
        raise ValueError("not a decode error")

    def loads_no_memory(line: bytes) -> Any:
        raise MemoryError

    for loads, error in ((loads_fails, ValueError), (loads_no_memory, MemoryError)):
        out: list[Any] = []
        with pytest.raises(error):
            configured(loads).decode(buf, spans, 0, ("A",), {}, out)
        assert out == []

    class Key:
        def __hash__(self) -> int:
            return hash(1)

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing")

    rbuf, rspans = spans_of([(KIND_RETURN, b'{"return": 1, "id": 1}')])
    in_flight = {Key(): "tok"}
    with pytest.raises(RuntimeError, match="no comparing"):
        configured().decode(rbuf, rspans, 0, (), in_flight, [])
    assert len(in_flight) == 1


@needs_c
def test_decode_with_a_loads_that_returns_other_things() -> None:
    buf, spans = spans_of([(R0, b'{"event": "A"}'), (KIND_RETURN, b'{"return": 1, "id": 1}')])
    def returning(result: Any) -> Callable[[bytes], Any]:
        return lambda line: result

    for result in ([1], "s", None, 5):
        module = configured(returning(result))
        out: list[Any] = []
        assert module.decode(buf, spans, 0, ("A",), {1: "t"}, out) == 0
        assert out == []


@needs_c
def test_decode_survives_a_buffer_resized_by_loads() -> None:
    """A bytearray that loads (Python code) empties: the next span is outside it."""
    buf, spans = spans_of([(R0, b'{"event": "A"}'), (R0, b'{"event": "A", "data": {}}')])
    data = bytearray(buf)

    def loads(line: bytes) -> Any:
        del data[:]
        return orjson.loads(line)

    out: list[Any] = []
    with pytest.raises(ValueError, match="outside buf"):
        configured(loads).decode(data, spans, 0, ("A",), {}, out)
    assert out == [Event("A")]


@needs_c
def test_unconfigured_module_and_separate_state() -> None:
    module = fresh_module()
    buf, spans = spans_of(LINES)
    with pytest.raises(RuntimeError, match="configure"):
        module.decode(buf, spans, 0, ("A", "B"), {}, [])
    # Another route base in this instance leaves the protocol's instance alone.
    module.configure(orjson.loads, Event, Reply, orjson.JSONDecodeError, ROUTE_BASE + 1)
    out: list[Any] = []
    assert module.decode(buf, spans, 0, ("A", "B"), {1: "t"}, out) == 0  # R0 is a kind now
    assert module.decode(buf, spans, 1, ("A", "B"), {1: "t"}, out) == 3
    assert out == [Reply("t", True, {"v": 1}), Event("A")]  # R1 is its first route
    assert C_DECODE is not None
    out = []
    assert C_DECODE(buf, spans, 0, ("A", "B"), {1: "t"}, out) == 3
    assert out[2] == Event("B")


@needs_c
@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1, Event, Reply, orjson.JSONDecodeError, ROUTE_BASE), TypeError),  # loads
        ((orjson.loads, dict, Reply, orjson.JSONDecodeError, ROUTE_BASE), TypeError),
        ((orjson.loads, Event, list, orjson.JSONDecodeError, ROUTE_BASE), TypeError),
        ((orjson.loads, Event, "Reply", orjson.JSONDecodeError, ROUTE_BASE), TypeError),
        ((orjson.loads, Event, Reply, 5, ROUTE_BASE), TypeError),
        ((orjson.loads, Event, Reply, str, ROUTE_BASE), TypeError),
        ((orjson.loads, Event, Reply, orjson.JSONDecodeError, KIND_RETURN), ValueError),
        ((orjson.loads, Event, Reply, orjson.JSONDecodeError, "8"), TypeError),
        ((orjson.loads, Event, Reply, orjson.JSONDecodeError), TypeError),
    ],
)
def test_configure_refuses(args: tuple[Any, ...], error: type[Exception]) -> None:
    module = fresh_module()
    with pytest.raises(error):
        module.configure(*args)
    with pytest.raises(RuntimeError, match="configure"):
        module.decode(b"", [], 0, (), {}, [])


@needs_c
def test_no_references_leak() -> None:
    module = configured()
    buf, spans = spans_of(LINES)
    names = ("".join(["A", "-leak"]), "".join(["B", "-leak"]))  # objects only we hold
    token = object()
    counts = (sys.getrefcount(token), sys.getrefcount(names[0]), sys.getrefcount(buf),
              sys.getrefcount(spans))

    def once() -> None:
        out: list[Any] = []
        in_flight = {1: token, 9: "nine"}
        module.decode(buf, spans, 0, names, in_flight, out)
        module.decode(buf, spans, 3, names, in_flight, out)  # refused: no value
        module.decode(buf, spans, 4, names, in_flight, out)

    for _ in range(200):
        once()
    gc.collect()
    blocks = sys.getallocatedblocks()
    for _ in range(2000):
        once()
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 200
    assert (sys.getrefcount(token), sys.getrefcount(names[0]), sys.getrefcount(buf),
            sys.getrefcount(spans)) == counts
