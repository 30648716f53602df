"""Sans-I/O protocol tests (qmplex.core.protocol): scripted bytes in, values out, fed
whole and byte by byte; no sockets, no callbacks."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import orjson
import pytest

from qmplex.core import protocol as protocol_module
from qmplex.core.framing import C_AVAILABLE, RouteTable
from qmplex.core.messages import Event, Greeting, QMPVersion, Reply, StaleReply
from qmplex.core.protocol import Protocol, State, encode_command
from qmplex.errors import (
    DecodeError,
    GreetingError,
    LineTooLong,
    NegotiationError,
    ProtocolError,
    StateError,
    ValidationError,
)

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\r\n'
)
NO_OOB_GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 2}, "package": ""},'
    b' "capabilities": []}}\n'
)
#: The id our tests give qmp_capabilities.
NEG_ID = "neg"


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


def feed(proto: Protocol, data: bytes, bytewise: bool = False) -> list[Any]:
    """Feed data in one call, or one byte per call; return every value, in order."""
    if not bytewise:
        return proto.receive_data(data)
    out: list[Any] = []
    for i in range(len(data)):
        out.extend(proto.receive_data(data[i : i + 1]))
    return out


def negotiating(**kw: Any) -> Protocol:
    """A protocol that has read GREETING and sent qmp_capabilities (id NEG_ID)."""
    proto = Protocol(**kw)
    (greeting,) = proto.receive_data(GREETING)
    assert isinstance(greeting, Greeting)
    neg = orjson.loads(proto.negotiate(NEG_ID))
    assert (neg["execute"], neg["id"]) == ("qmp_capabilities", NEG_ID)
    return proto


def ready(**kw: Any) -> Protocol:
    """A protocol in the READY state."""
    proto = negotiating(**kw)
    assert proto.receive_data(b'{"return": {}, "id": "%s"}\r\n' % NEG_ID.encode()) == []
    assert proto.state is State.READY
    assert proto.in_flight == 0
    return proto


def send(proto: Protocol, cid: Any, token: Any, name: str = "query-status") -> bytes:
    """Encode a command and record it as sent, as a client does."""
    data = encode_command(name, None, cid)
    proto.sent(cid, token)
    return data


def event_line(name: str, seconds: int = 1, **data: Any) -> bytes:
    return orjson.dumps({"timestamp": {"seconds": seconds, "microseconds": 500000},
                         "event": name, "data": data}) + b"\n"


def reply_line(cid: Any, value: Any = None) -> bytes:
    return orjson.dumps({"return": {} if value is None else value, "id": cid}) + b"\n"


def assert_fatal(proto: Protocol, values: list[Any], kind: type[ProtocolError]) -> Any:
    """The last value is the fatal error, also in .error; the state is CLOSED and
    nothing more comes out. Returns the error."""
    err = values[-1]
    assert type(err) is kind
    assert proto.error is err
    assert proto.state is State.CLOSED
    assert proto.receive_data(reply_line(1) + GREETING) == []
    return err


# --- Greeting and negotiation --------------------------------------------------------------


def test_greeting_and_negotiation(bytewise: bool) -> None:
    proto = Protocol()
    states = [proto.state]
    values = feed(proto, GREETING, bytewise)
    assert values == [Greeting(QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7", ("oob",)))]
    states.append(proto.state)
    data = proto.negotiate(1)
    assert data == encode_command("qmp_capabilities", {"enable": ["oob"]}, 1)
    assert orjson.loads(data) == {"execute": "qmp_capabilities", "id": 1,
                                  "arguments": {"enable": ["oob"]}}
    assert proto.oob_enabled
    assert proto.in_flight == 1
    assert feed(proto, b'{"return": {}, "id": 1}\r\n', bytewise) == []
    states.append(proto.state)
    assert states == [State.GREETING, State.NEGOTIATING, State.READY]
    assert proto.in_flight == 0
    assert proto.version is not None and proto.version.at_least(7, 2)
    assert not proto.version.at_least(7, 3)
    assert proto.error is None


def test_negotiation_without_oob() -> None:
    proto = Protocol()
    proto.receive_data(NO_OOB_GREETING)
    assert "arguments" not in orjson.loads(proto.negotiate(1))
    assert not proto.oob_enabled
    # Offered, but not asked for.
    proto = Protocol()
    proto.receive_data(GREETING)
    assert "arguments" not in orjson.loads(proto.negotiate(1, enable_oob=False))
    assert not proto.oob_enabled


def test_negotiation_reply_without_id_is_ours() -> None:
    proto = negotiating()
    assert proto.receive_data(b'{"return": {}}\n') == []
    assert proto.state is State.READY


def test_negotiate_in_wrong_state() -> None:
    with pytest.raises(StateError, match="greeting"):
        Protocol().negotiate(1)
    with pytest.raises(StateError, match="ready"):
        ready().negotiate(1)
    proto = Protocol()
    proto.close()
    with pytest.raises(StateError, match="closed"):
        proto.negotiate(1)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"hello": {}}', GreetingError),
        (b"[1, 2]", GreetingError),
        (b'"QMP"', GreetingError),
        (b'{"QMP": {"version": 3}}', GreetingError),
        (b'{"QMP": {"version": {"qemu": {"major": 1, "minor": 2, "micro": "x"}}}}', GreetingError),
        (b'{"QMP": {"version": {"qemu": {"major": 1, "minor": 2, "micro": 3}}, '
         b'"capabilities": "oob"}}', GreetingError),
        (b"not json", DecodeError),
        (b'{"QMP": {"version"', DecodeError),
    ],
)
def test_bad_greeting_is_fatal(bytewise: bool, line: bytes, kind: type[ProtocolError]) -> None:
    proto = Protocol()
    values = feed(proto, line + b"\r\n", bytewise)
    assert len(values) == 1
    err = assert_fatal(proto, values, kind)
    assert err.excerpt
    assert proto.version is None


@pytest.mark.parametrize("reply", [b'{"return": {}}', b'{"return": {}, "id": 7}',
                                   b'{"error": {"class": "X", "desc": "y"}, "id": "a"}'])
def test_a_reply_before_the_greeting_is_stale(bytewise: bool, reply: bytes) -> None:
    """QEMU can write a previous client's reply before it greets the next client."""
    proto = Protocol()
    values = feed(proto, reply + b"\r\n" + GREETING, bytewise)
    assert [type(v) for v in values] == [StaleReply, Greeting]
    assert proto.stale_replies == 1 and proto.state is State.NEGOTIATING


def test_deeply_nested_greeting_is_a_greeting_error() -> None:
    proto = Protocol()
    values = proto.receive_data(b'{"QMP": ' + b"[" * 300 + b"]" * 300 + b"}\n")
    assert_fatal(proto, values, GreetingError)


def test_events_before_the_greeting_are_skipped_and_counted(bytewise: bool) -> None:
    proto = Protocol(routes=RouteTable(["STOP"]))
    data = (event_line("STOP") + b'{"event": "RESUME"}\r\n\n'
            + b'{"data": {}, "event": "STOP"}\n' + GREETING)
    values = feed(proto, data, bytewise)
    assert values == [Greeting(QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7", ("oob",)))]
    assert proto.events_before_greeting == 3
    assert (proto.dropped_events, proto.stale_replies) == (0, 0)
    assert proto.state is State.NEGOTIATING


def test_greeting_and_a_fatal_error_in_one_batch() -> None:
    """The caller must look at the state before it negotiates."""
    proto = Protocol()
    values = proto.receive_data(GREETING + b"\x00\n")
    assert values[0] == Greeting(QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7", ("oob",)))
    assert_fatal(proto, values, DecodeError)
    assert proto.version is not None
    with pytest.raises(StateError, match="closed"):
        proto.negotiate(1)


def test_negotiation_refused(bytewise: bool) -> None:
    proto = negotiating()
    values = feed(proto, b'{"error": {"class": "GenericError", "desc": "nope"}, "id": "neg"}\n',
                  bytewise)
    err = assert_fatal(proto, values, NegotiationError)
    assert values == [err]
    assert "nope" in str(err)


def test_a_previous_clients_reply_during_negotiation_is_stale(bytewise: bool) -> None:
    proto = negotiating()
    line = b'{"return": {"status": "done"}, "id": 5}'
    values = feed(proto, line + b"\n" + b'{"return": {}, "id": "neg"}\n', bytewise)
    assert values == [StaleReply(5, line)]
    assert proto.stale_replies == 1
    assert proto.state is State.READY


def test_reply_before_negotiate_was_sent_is_stale() -> None:
    proto = Protocol()
    line = b'{"return": {}}'
    assert proto.receive_data(GREETING + line + b"\n")[1:] == [StaleReply(None, line)]
    assert proto.state is State.NEGOTIATING


def test_messages_during_negotiation(bytewise: bool) -> None:
    proto = negotiating()
    data = (event_line("STOP", x=1) + b'{"event": 5}\n' + b'{"hello": 1}\n' + b"[1]\n"
            + b'{"return": {}, "id": "neg"}\n' + event_line("RESUME"))
    values = feed(proto, data, bytewise)
    assert values[0] == Event("STOP", {"x": 1}, 1.5)
    assert [type(v) for v in values[1:4]] == [ProtocolError, ProtocolError, DecodeError]
    assert values[4] == Event("RESUME", {}, 1.5)
    assert proto.state is State.READY and proto.error is None


def test_invalid_json_during_negotiation_is_fatal() -> None:
    # It may be the reply to qmp_capabilities: nothing can be trusted after it.
    proto = negotiating()
    values = proto.receive_data(event_line("STOP") + b'{"return": {oops\n')
    assert values[0] == Event("STOP", {}, 1.5)
    assert_fatal(proto, values, DecodeError)


# --- Commands and replies ------------------------------------------------------------------


def test_encode_command() -> None:
    assert encode_command("query-status", None, "A") == b'{"execute":"query-status","id":"A"}\n'
    data = encode_command("device_del", {"id": "d0"}, 7)
    assert orjson.loads(data) == {"execute": "device_del", "id": 7, "arguments": {"id": "d0"}}
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    msg = orjson.loads(encode_command("yank", {"instances": []}, "Y", oob=True))
    assert msg["exec-oob"] == "yank" and "execute" not in msg
    # Empty arguments are sent; None leaves them out.
    assert orjson.loads(encode_command("stop", {}, 1))["arguments"] == {}


@pytest.mark.parametrize(
    ("arguments", "cid"),
    [({"x": object()}, 1), ({1: 2}, 1), ({"n": 2**70}, 1), (None, object())],
)
def test_encode_command_errors_record_nothing(arguments: Any, cid: Any) -> None:
    proto = ready()
    with pytest.raises(ValidationError, match="blockdev-add"):
        encode_command("blockdev-add", arguments, cid)
    assert proto.in_flight == 0
    # Nothing was recorded: the connection goes on.
    send(proto, 1, "A")
    assert proto.receive_data(reply_line(1)) == [Reply("A", True, {})]


def test_replies_match_by_id_out_of_order(bytewise: bool) -> None:
    proto = ready()
    send(proto, "a-1", "A")
    send(proto, 2, "B")
    assert proto.in_flight == 2
    # Replies out of order (as OOB replies can be) still match by id.
    values = feed(proto, b'{"return": {}, "id": 2}\r\n{"error": {"class": "DeviceNotFound", '
                         b'"desc": "x"}, "id": "a-1"}\r\n', bytewise)
    assert values == [Reply("B", True, {}),
                      Reply("A", False, {"class": "DeviceNotFound", "desc": "x"})]
    assert all(type(v) is Reply for v in values)
    assert (values[1].token, values[1].ok, values[1].value["class"]) == ("A", False,
                                                                         "DeviceNotFound")
    assert proto.in_flight == 0


def test_reply_without_id_matches_oldest(bytewise: bool) -> None:
    proto = ready()
    send(proto, 1, "A")
    send(proto, 2, "B")
    values = feed(proto, b'{"return": 1}\n{"return": 2}\n', bytewise)
    assert values == [Reply("A", True, 1), Reply("B", True, 2)]


def test_stale_and_duplicate_replies_are_noted_not_fatal(bytewise: bool) -> None:
    proto = ready()
    send(proto, 1, "A")
    line = b'{"return": {}, "id": 1}'
    zzz = b'{"return": {}, "id": "zzz"}'
    unhashable = b'{"return": {}, "id": [1]}'
    no_id = b'{"error": {"class": "GenericError", "desc": "JSON parse error"}}'
    data = b"\n".join([line, line, zzz, unhashable, no_id]) + b"\n"
    values = feed(proto, data, bytewise)
    assert values == [Reply("A", True, {}), StaleReply(1, line), StaleReply("zzz", zzz),
                      StaleReply([1], unhashable), StaleReply(None, no_id)]
    assert proto.stale_replies == 4
    assert proto.state is State.READY and proto.error is None


def test_a_reply_left_by_a_previous_client_is_stale(bytewise: bool) -> None:
    """QEMU hands a command's reply to the monitor's next client: its id is not in
    flight on the new connection."""
    old = ready()
    send(old, 7, "old")
    assert old.close() == ["old"]
    new = ready()
    send(new, 8, "new")
    stale = b'{"return": {"status": "completed"}, "id": 7}'
    values = feed(new, stale + b"\r\n" + reply_line(8, 2), bytewise)
    assert values == [StaleReply(7, stale), Reply("new", True, 2)]
    assert new.stale_replies == 1
    assert new.state is State.READY
    # The id is not burnt: once in flight here, it matches (QMP ids are the caller's;
    # the client keeps them unique per process so this cannot mix up two replies).
    send(new, 7, "again")
    assert new.receive_data(reply_line(7, 3)) == [Reply("again", True, 3)]
    assert new.stale_replies == 1


def test_stale_reply_excerpt_is_bounded() -> None:
    proto = ready()
    (value,) = proto.receive_data(reply_line(9, "x" * 1000))
    assert type(value) is StaleReply and value.id == 9
    assert len(value.excerpt) <= 203 and value.excerpt.startswith(b'{"return":"xxx')


def test_sent_after_close_raises() -> None:
    proto = ready()
    proto.close()
    with pytest.raises(StateError, match="closed"):
        proto.sent(1, "A")


def test_close_returns_the_tokens_in_flight_oldest_first() -> None:
    proto = ready()
    for cid, token in ((1, "A"), (2, "B"), (3, "C")):
        send(proto, cid, token)
    assert proto.receive_data(reply_line(2)) == [Reply("B", True, {})]
    assert proto.close() == ["A", "C"]
    assert proto.state is State.CLOSED
    assert proto.in_flight == 0
    assert proto.error is None  # closing is not an error
    assert proto.receive_data(reply_line(1)) == []
    assert proto.close() == []


def test_close_during_negotiation_hides_our_own_command() -> None:
    proto = negotiating()
    assert proto.in_flight == 1
    assert proto.close() == []
    assert proto.state is State.CLOSED


def test_close_after_a_fatal_error_returns_the_tokens() -> None:
    proto = ready()
    send(proto, 1, "A")
    assert_fatal(proto, proto.receive_data(b'{"return": {oops\n'), DecodeError)
    assert proto.close() == ["A"]


def test_blank_lines_and_crlf_lf_mix(bytewise: bool) -> None:
    proto = ready()
    send(proto, 2, "A")
    send(proto, 3, "B")
    values = feed(proto, b'\r\n  \n{"return": 1, "id": 2}\n{"return": 2, "id": 3}\r\n', bytewise)
    assert [v.value for v in values] == [1, 2]


# --- Events --------------------------------------------------------------------------------


def test_events_decoded_with_timestamp(bytewise: bool) -> None:
    proto = ready()
    values = feed(proto, (
        b'{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, '
        b'"event": "DEVICE_DELETED", "data": {"device": "d1", "path": "/machine/peripheral/d1"}}'
        b"\r\n"), bytewise)
    assert values == [Event(
        "DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"}, 1700000000.25
    )]
    assert type(values[0]) is Event


def test_unwanted_events_dropped_undecoded(bytewise: bool) -> None:
    proto = ready(routes=RouteTable(["STOP"]))
    # The RESUME line is not even valid JSON: it is dropped before decoding.
    values = feed(proto, (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME", BROKEN\r\n'
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n'
        b'{"event": "RESET", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n'
    ), bytewise)
    assert values == [Event("STOP", {}, 1.000002)]
    assert proto.dropped_events == 2


def test_unwanted_event_in_unusual_key_order_still_filtered(bytewise: bool) -> None:
    proto = ready(routes=RouteTable(["STOP", "A\\B"]))
    values = feed(proto, b'{"data": {}, "event": "RESET"}\n{"data": {}, "event": "STOP"}\n'
                         b'{"event": "A\\\\B"}\n{"event": "RE\\u0053ET"}\n', bytewise)
    assert [v.name for v in values] == ["STOP", "A\\B"]
    assert proto.dropped_events == 2


def test_without_routes_every_event_is_returned() -> None:
    proto = ready()
    values = proto.receive_data(event_line("STOP") + event_line("RESUME")
                                + b'{"data": {"a": 1}, "event": "X"}\n')
    assert [v.name for v in values] == ["STOP", "RESUME", "X"]
    assert values[2].data == {"a": 1}
    assert proto.dropped_events == 0


def test_catch_all_routes_return_every_event() -> None:
    proto = ready(routes=RouteTable(["STOP"], catch_all=True))
    values = proto.receive_data(event_line("RESUME", n=1) + event_line("STOP", n=2))
    assert values == [Event("RESUME", {"n": 1}, 1.5), Event("STOP", {"n": 2}, 1.5)]
    assert proto.dropped_events == 0


def test_routes_replaced_between_calls_apply_to_the_next_call() -> None:
    proto = ready(routes=RouteTable(["STOP"]))
    assert proto.receive_data(event_line("RESUME") + event_line("STOP", n=1)) == [
        Event("STOP", {"n": 1}, 1.5)]
    proto.routes = RouteTable(["RESUME"])
    # A partial STOP line completed under the new table is dropped.
    assert proto.receive_data(event_line("STOP")[:10]) == []
    assert proto.receive_data(event_line("STOP")[10:] + event_line("RESUME", n=2)) == [
        Event("RESUME", {"n": 2}, 1.5)]
    assert proto.dropped_events == 2
    proto.routes = None
    assert len(proto.receive_data(event_line("STOP") + event_line("X"))) == 2


def test_events_in_the_batch_that_ends_negotiation_are_routed() -> None:
    proto = negotiating(routes=RouteTable(["STOP"]))
    values = proto.receive_data(b'{"return": {}, "id": "neg"}\n' + event_line("RESUME")
                                + event_line("STOP", n=1) + b'{"data": {}, "event": "X"}\n')
    assert values == [Event("STOP", {"n": 1}, 1.5)]
    assert proto.dropped_events == 2
    assert proto.state is State.READY


def test_replies_and_events_come_out_in_stream_order(bytewise: bool) -> None:
    proto = ready(routes=RouteTable(["STOP"]))
    send(proto, 1, "tok-a", "stop")
    send(proto, 2, "tok-b", "cont")
    data = (reply_line(1) + event_line("STOP", 7, x=1) + event_line("RESUME")
            + b'{"error": {"class": "GenericError", "desc": "no"}, "id": 2}\n')
    values = feed(proto, data, bytewise)
    assert values == [Reply("tok-a", True, {}), Event("STOP", {"x": 1}, 7.5),
                      Reply("tok-b", False, {"class": "GenericError", "desc": "no"})]
    ev = values[1]
    assert type(ev) is Event and ev.timestamp == 7.5 and ev.data == {"x": 1}
    assert proto.dropped_events == 1  # RESUME: nobody wants it


def test_wire_timestamp_is_read_lazily_and_tolerates_garbage() -> None:
    for routes in (None, RouteTable(["A", "B", "C", "D"])):
        proto = ready(routes=routes)
        values = proto.receive_data(
            b'{"event": "A", "timestamp": {"seconds": "x"}}\n'
            b'{"event": "B", "timestamp": 5}\n{"event": "C", "data": [1]}\n'
            b'{"timestamp": {"seconds": 2, "microseconds": 250000}, "event": "D"}\n')
        assert [(e.name, e.data, e.timestamp) for e in values] == [
            ("A", {}, 0.0), ("B", {}, 0.0), ("C", {}, 0.0), ("D", {}, 2.25)]


# --- Malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"timestamp": {"seconds": 1}, "event": "X", "data": ', DecodeError),
        (b'{"timestamp": {"seconds": 1}, "event": "STOP", BROKEN', DecodeError),
        (b"[1, 2, 3]", DecodeError),
        (b"42", DecodeError),
        (b'{"event": "A\x00B"}', DecodeError),
        (b'{"event": "\xff\xfe"}', DecodeError),
        (b"[" * 2000 + b"]" * 2000, DecodeError),
        (b'{"event": 5, "data": {}}', ProtocolError),
        (b'{"event": "", "data": {}}', ProtocolError),
        (b'{"hello": "world"}', ProtocolError),
        (b'{"QMP": {"version": {}}}', ProtocolError),  # a second greeting
    ],
)
@pytest.mark.parametrize("routes", [None, RouteTable(["STOP", "X"])], ids=["all", "routed"])
def test_malformed_non_reply_lines_are_reported_and_the_stream_continues(
    line: bytes, kind: type[ProtocolError], routes: RouteTable | None
) -> None:
    proto = ready(routes=routes)
    send(proto, 1, "A")
    values = proto.receive_data(line + b"\r\n" + b'{"return": {"ok": 1}, "id": 1}\r\n')
    if routes is not None and line == b'{"event": "\xff\xfe"}':
        # It reads as an event nobody wants: dropped before anyone decodes it.
        assert (values, proto.dropped_events) == ([Reply("A", True, {"ok": 1})], 1)
        return
    assert type(values[0]) is kind
    assert values[0].excerpt and len(values[0].excerpt) <= 203
    assert values[1:] == [Reply("A", True, {"ok": 1})]
    assert proto.state is State.READY and proto.error is None
    assert proto.dropped_events == 0


@pytest.mark.parametrize("bad", [b'{"return": {oops', b'{"error": {"class": "GenericError"'])
def test_invalid_reply_line_is_fatal_after_earlier_values(bytewise: bool, bad: bytes) -> None:
    # Its command cannot be known: the connection cannot go on.
    proto = ready()
    send(proto, 1, "A")
    values = feed(proto, b'{"event": "STOP"}\r\n' + bad + b"\r\n" + reply_line(1), bytewise)
    assert values[:-1] == [Event("STOP")]
    assert_fatal(proto, values, DecodeError)
    # Nothing after the fatal line was looked at.
    assert proto.in_flight == 1


def test_line_too_long_is_fatal_and_names_the_limit(bytewise: bool) -> None:
    proto = ready(max_line_bytes=300)
    values = feed(proto, b'{"event": "STOP"}\n' + b'{"return": "' + b"x" * 400, bytewise)
    assert values[:-1] == [Event("STOP")]
    err = assert_fatal(proto, values, LineTooLong)
    assert err.limit == 300 and err.received > 300


def test_fed_whole_or_byte_by_byte_a_session_gives_the_same_values() -> None:
    script = (event_line("EARLY") + GREETING, b'{"return": {}, "id": "neg"}\n'
              + event_line("STOP", n=1) + b'{"return": {}, "id": 99}\n' + reply_line(1, 1)
              + b"garbage\n" + event_line("RESUME") + b'{"return": 2}\n'
              + b'{"return": {oops\n' + reply_line(3))

    def run(impl: str, bytewise: bool) -> list[Any]:
        proto = Protocol(routes=RouteTable(["STOP"]), splitter_impl=impl)
        out = feed(proto, script[0], bytewise)
        proto.negotiate(NEG_ID)
        send(proto, 1, "A")
        send(proto, 2, "B")
        send(proto, 3, "C")
        out += feed(proto, script[1], bytewise)
        assert proto.state is State.CLOSED
        summary = [(type(v).__name__, v.excerpt) if isinstance(v, ProtocolError) else v
                   for v in out]
        return [summary, proto.events_before_greeting, proto.dropped_events,
                proto.stale_replies, proto.close()]

    expected = run("python", False)
    assert expected == [
        [Greeting(QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7", ("oob",))),
         Event("STOP", {"n": 1}, 1.5), StaleReply(99, b'{"return": {}, "id": 99}'),
         Reply("A", True, 1), ("DecodeError", b"garbage"), Reply("B", True, 2),
         ("DecodeError", b'{"return": {oops')],
        1, 1, 1, ["C"],
    ]
    for impl in ["c", "python"] if C_AVAILABLE else ["python"]:
        for bytewise in (False, True):
            assert run(impl, bytewise) == expected, (impl, bytewise)


def test_deprecated_alias_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "qmplex.protocol", raising=False)
    with pytest.warns(DeprecationWarning, match="qmplex.core.protocol"):
        alias = importlib.import_module("qmplex.protocol")
    assert alias.Protocol is Protocol and alias.encode_command is encode_command
    assert alias.Greeting is Greeting and alias.Reply is Reply
    assert set(alias.__all__) == set(protocol_module.__all__)
