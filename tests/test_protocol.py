"""Sans-I/O protocol tests: bytes in, messages and bytes out; no sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from qmplex.errors import (
    DecodeError,
    GreetingError,
    LineTooLong,
    NegotiationError,
    ProtocolError,
    StateError,
    UnexpectedReply,
    ValidationError,
)
from qmplex.events import DispatchTable, Event, EventFilter
from qmplex.protocol import Greeting, Protocol, QMPVersion, Reply, State

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\r\n'
)


def feed_all(proto: Protocol, data: bytes, *, bytewise: bool = False) -> list[Any]:
    out: list[Any] = []
    if bytewise:
        for i in range(len(data)):
            out.extend(proto.receive_data(data[i : i + 1]))
    else:
        out.extend(proto.receive_data(data))
    return out


def ready(**kw: Any) -> Protocol:
    proto = Protocol(**kw)
    (greeting,) = proto.receive_data(GREETING)
    assert isinstance(greeting, Greeting)
    neg = orjson.loads(proto.negotiate())
    assert neg["execute"] == "qmp_capabilities"
    assert proto.receive_data(b'{"return": {}, "id": %d}\r\n' % neg["id"]) == []
    assert proto.state is State.READY
    return proto


@pytest.mark.parametrize("bytewise", [False, True])
def test_greeting_and_negotiation(bytewise: bool) -> None:
    proto = Protocol()
    states = [proto.state]
    msgs = feed_all(proto, GREETING, bytewise=bytewise)
    assert msgs == [Greeting(QMPVersion(7, 2, 22, "Debian 1:7.2+dfsg-7", ("oob",)))]
    states.append(proto.state)
    neg = orjson.loads(proto.negotiate())
    assert neg == {"execute": "qmp_capabilities", "id": neg["id"], "arguments": {"enable": ["oob"]}}
    assert proto.oob_enabled
    assert feed_all(proto, b'{"return": {}, "id": %d}\r\n' % neg["id"], bytewise=bytewise) == []
    states.append(proto.state)
    assert states == [State.GREETING, State.NEGOTIATING, State.READY]
    assert proto.version is not None and proto.version.at_least(7, 2)
    assert not proto.version.at_least(7, 3)


def test_negotiation_without_oob_offer() -> None:
    proto = Protocol()
    proto.receive_data(
        b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 2}, "package": ""},'
        b' "capabilities": []}}\n'
    )
    neg = orjson.loads(proto.negotiate())
    assert "arguments" not in neg
    assert not proto.oob_enabled


def test_negotiate_in_wrong_state() -> None:
    with pytest.raises(StateError, match="greeting"):
        Protocol().negotiate()


@pytest.mark.parametrize(
    "line",
    [b'{"return": {}}\r\n', b"[1, 2]\r\n", b'{"QMP": {"version": 3}}\r\n', b"not json\r\n"],
)
def test_bad_greeting_is_fatal(line: bytes) -> None:
    proto = Protocol()
    with pytest.raises(ProtocolError) as info:
        proto.receive_data(line)
    assert isinstance(info.value, (GreetingError, DecodeError))
    assert info.value.excerpt
    assert proto.state is State.CLOSED


def test_negotiation_refused() -> None:
    proto = Protocol()
    proto.receive_data(GREETING)
    neg = orjson.loads(proto.negotiate())
    with pytest.raises(NegotiationError, match="nope"):
        proto.receive_data(
            b'{"error": {"class": "GenericError", "desc": "nope"}, "id": %d}\n' % neg["id"]
        )
    assert proto.state is State.CLOSED


def test_commands_get_increasing_ids_and_replies_match_by_id() -> None:
    proto = ready()
    a = proto.encode_command("query-status", None, "A")
    b = proto.encode_command("device_del", {"id": "d0"}, "B")
    ma, mb = orjson.loads(a), orjson.loads(b)
    assert ma["execute"] == "query-status" and "arguments" not in ma
    assert mb == {"execute": "device_del", "id": mb["id"], "arguments": {"id": "d0"}}
    assert mb["id"] == ma["id"] + 1
    assert a.endswith(b"\n") and b.endswith(b"\n")
    assert proto.in_flight == 2
    # Replies out of order (as OOB replies can be) still match by id.
    msgs = proto.receive_data(
        b'{"return": {}, "id": %d}\r\n{"error": {"class": "DeviceNotFound", "desc": "x"}, '
        b'"id": %d}\r\n' % (mb["id"], ma["id"])
    )
    assert [(m.token, m.ok) for m in msgs] == [("B", True), ("A", False)]
    assert msgs[1].value == {"class": "DeviceNotFound", "desc": "x"}
    assert proto.in_flight == 0


def test_oob_encoding() -> None:
    proto = ready()
    msg = orjson.loads(proto.encode_command("yank", {"instances": []}, "Y", oob=True))
    assert msg["exec-oob"] == "yank" and "execute" not in msg


def test_reply_without_id_matches_oldest() -> None:
    proto = ready()
    proto.encode_command("a", None, "A")
    proto.encode_command("b", None, "B")
    msgs = proto.receive_data(b'{"return": 1}\n{"return": 2}\n')
    assert [(m.token, m.value) for m in msgs] == [("A", 1), ("B", 2)]


def test_unexpected_and_duplicate_replies_are_reported_not_fatal() -> None:
    proto = ready()
    data = proto.encode_command("a", None, "A")
    cid = orjson.loads(data)["id"]
    line = b'{"return": {}, "id": %d}\n' % cid
    msgs = proto.receive_data(line + line + b'{"return": {}, "id": "zzz"}\n')
    assert isinstance(msgs[0], Reply)
    assert isinstance(msgs[1], UnexpectedReply) and isinstance(msgs[2], UnexpectedReply)
    assert proto.state is State.READY
    assert proto.receive_data(b'{"return": {}}\n')[0].__class__ is UnexpectedReply


def test_events_decoded_with_timestamp() -> None:
    proto = ready()
    (ev,) = proto.receive_data(
        b'{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, '
        b'"event": "DEVICE_DELETED", "data": {"device": "d1", "path": "/machine/peripheral/d1"}}'
        b"\r\n"
    )
    assert ev == Event(
        "DEVICE_DELETED", {"device": "d1", "path": "/machine/peripheral/d1"}, 1700000000.25
    )


def router_for(*names: str) -> DispatchTable:
    table = DispatchTable()
    for name in names:
        table.subscribe(EventFilter(name), lambda e: None)
    return table


def test_unwanted_events_dropped_undecoded() -> None:
    proto = ready(router=router_for("STOP"))
    # The RESUME line is not even valid JSON: it is dropped before decoding.
    msgs = proto.receive_data(
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME", BROKEN\r\n'
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n'
        b'{"event": "RESET", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n'
    )
    assert [m.name for m in msgs] == ["STOP"]
    assert proto.dropped_events == 2


def test_unwanted_event_in_unusual_key_order_still_filtered() -> None:
    proto = ready(router=router_for("STOP"))
    msgs = proto.receive_data(b'{"data": {}, "event": "RESET"}\n{"data": {}, "event": "STOP"}\n')
    assert [m.name for m in msgs] == ["STOP"]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"timestamp": {"seconds": 1}, "event": "X", "data": ', DecodeError),
        (b"[1, 2, 3]", DecodeError),
        (b"42", DecodeError),
        (b'{"event": "A\x00B"}', DecodeError),
        (b'{"event": "\xff\xfe"}', DecodeError),
        (b"[" * 2000 + b"]" * 2000, DecodeError),
        (b'{"event": 5, "data": {}}', ProtocolError),
        (b'{"hello": "world"}', ProtocolError),
    ],
)
def test_malformed_non_reply_lines_are_reported_and_the_stream_continues(
    line: bytes, kind: type[ProtocolError]
) -> None:
    proto = ready()
    data = proto.encode_command("query-status", None, "A")
    cid = orjson.loads(data)["id"]
    msgs = proto.receive_data(line + b"\r\n" + b'{"return": {"ok": 1}, "id": %d}\r\n' % cid)
    assert isinstance(msgs[0], kind)
    assert msgs[0].excerpt and len(msgs[0].excerpt) <= 203
    assert isinstance(msgs[1], Reply) and msgs[1].value == {"ok": 1}
    assert proto.state is State.READY


def test_invalid_reply_line_is_fatal_after_earlier_messages() -> None:
    proto = ready()
    proto.encode_command("a", None, "A")
    with pytest.raises(DecodeError):
        proto.receive_data(b'{"event": "STOP"}\r\n{"return": {oops\r\n')
    assert [m.name for m in proto.pending_messages] == ["STOP"]
    assert proto.state is State.CLOSED
    assert proto.receive_data(b'{"return": {}}\n') == []


def test_line_too_long_is_fatal_and_names_the_limit() -> None:
    proto = ready(max_line_bytes=300)
    with pytest.raises(LineTooLong) as info:
        proto.receive_data(b'{"event": "STOP"}\n' + b'{"return": "' + b"x" * 400)
    assert info.value.limit == 300 and info.value.received > 300
    assert [m.name for m in proto.pending_messages] == ["STOP"]
    assert proto.state is State.CLOSED


def test_non_serialisable_arguments_raise_before_anything_is_recorded() -> None:
    proto = ready()
    with pytest.raises(ValidationError, match="blockdev-add"):
        proto.encode_command("blockdev-add", {"x": object()}, "A")
    with pytest.raises(ValidationError):
        proto.encode_command("x", {1: 2}, "A")  # type: ignore[dict-item]
    assert proto.in_flight == 0
    # The id sequence stays dense: the next command gets the next id.
    data = proto.encode_command("query-status", None, "B")
    assert orjson.loads(data)["id"] == proto.last_id


def test_take_in_flight_and_closed_state() -> None:
    proto = ready()
    proto.encode_command("a", None, "A")
    proto.encode_command("b", None, "B")
    assert proto.take_in_flight() == ["A", "B"]
    proto.receive_eof()
    assert proto.state is State.CLOSED
    with pytest.raises(StateError):
        proto.encode_command("c", None, "C")


def test_blank_lines_and_crlf_lf_mix() -> None:
    proto = ready()
    proto.encode_command("a", None, "A")
    proto.encode_command("b", None, "B")
    msgs = proto.receive_data(b'\r\n  \n{"return": 1, "id": 2}\n{"return": 2, "id": 3}\r\n')
    assert [m.value for m in msgs] == [1, 2]


def _event_line(name: str, seconds: int = 1, **data: Any) -> bytes:
    return orjson.dumps({"timestamp": {"seconds": seconds, "microseconds": 500000},
                         "event": name, "data": data}) + b"\n"


def test_receive_into_hands_replies_and_events_over_in_stream_order() -> None:
    table = DispatchTable()
    seen: list[Any] = []
    table.subscribe(EventFilter("STOP"), lambda e: seen.append(("event", e)))
    proto = ready(router=table)
    a, b = proto.encode("stop")[0], proto.encode("cont")[0]
    proto.expect(a, "tok-a")
    proto.expect(b, "tok-b")
    others: list[Any] = []
    proto.receive_into(
        b'{"return": {}, "id": %d}\n' % a + _event_line("STOP", 7, x=1)
        + _event_line("RESUME") + b'{"error": {"class": "GenericError", "desc": "no"}, '
        b'"id": %d}\n' % b,
        lambda token, ok, value: seen.append(("reply", token, ok, value)), others.append)
    assert seen == [("reply", "tok-a", True, {}),
                    ("event", Event("STOP", {"x": 1}, 7.5)),
                    ("reply", "tok-b", False, {"class": "GenericError", "desc": "no"})]
    assert others == []  # RESUME: nobody subscribed, dropped undecoded
    assert proto.dropped_events == 1
    (_, ev), = [s for s in seen if s[0] == "event"]
    assert type(ev) is Event and ev.timestamp == 7.5 and ev.data == {"x": 1}


def test_receive_into_without_routing_hands_events_to_on_message() -> None:
    table = DispatchTable()
    called: list[Event] = []
    table.subscribe(EventFilter("STOP"), called.append)
    proto = ready(router=table)
    others: list[Any] = []
    proto.receive_into(_event_line("STOP") + _event_line("RESUME"),
                       lambda *a: None, others.append, route=False)
    assert called == [] and [e.name for e in others] == ["STOP"]


def test_callback_that_cancels_its_subscription_gets_no_later_event_of_the_batch() -> None:
    table = DispatchTable()
    got: list[int] = []

    def once(event: Event) -> None:
        got.append(event.data["n"])
        sub.cancel()

    sub = table.subscribe(EventFilter("STOP"), once)
    others: list[int] = []
    table.subscribe(EventFilter("RESUME"), lambda e: others.append(e.data["n"]))
    proto = ready(router=table)
    proto.receive_into(b"".join(_event_line(name, n=i) for i, name in
                                enumerate(["STOP", "STOP", "RESUME", "STOP"])),
                       lambda *a: None, lambda m: None)
    assert got == [0] and others == [2]


def test_callback_subscribing_mid_batch_sees_later_events_of_routed_names() -> None:
    table = DispatchTable()
    late: list[int] = []

    def first(event: Event) -> None:
        if event.data["n"] == 0:
            table.subscribe(EventFilter("STOP"), lambda e: late.append(e.data["n"]))

    table.subscribe(EventFilter("STOP"), first)
    proto = ready(router=table)
    proto.receive_into(b"".join(_event_line("STOP", n=i) for i in range(3)),
                       lambda *a: None, lambda m: None)
    assert late == [1, 2]


def test_raising_callback_is_logged_and_the_stream_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    table = DispatchTable()
    got: list[int] = []

    def boom(event: Event) -> None:
        got.append(event.data["n"])
        raise RuntimeError("callback bug")

    table.subscribe(EventFilter("STOP"), boom)
    proto = ready(router=table)
    cid = proto.encode("stop")[0]
    proto.expect(cid, "tok")
    replies: list[Any] = []
    proto.receive_into(_event_line("STOP", n=1) + _event_line("STOP", n=2)
                       + b'{"return": {}, "id": %d}\n' % cid,
                       lambda *a: replies.append(a), lambda m: None)
    assert got == [1, 2] and replies == [("tok", True, {})]
    assert [r.message for r in caplog.records].count(f"event callback {boom!r} raised") == 2


def test_callback_ending_the_connection_stops_the_batch() -> None:
    table = DispatchTable()
    proto_box: list[Protocol] = []
    got: list[int] = []

    def close(event: Event) -> None:
        got.append(event.data["n"])
        proto_box[0].receive_eof()

    table.subscribe(EventFilter("STOP"), close)
    proto = ready(router=table)
    proto_box.append(proto)
    cid = proto.encode("stop")[0]
    proto.expect(cid, "tok")
    replies: list[Any] = []
    proto.receive_into(_event_line("STOP", n=1) + b'{"return": {}, "id": %d}\n' % cid
                       + _event_line("STOP", n=2), lambda *a: replies.append(a),
                       lambda m: None)
    assert got == [1] and replies == []
    assert proto.take_in_flight() == ["tok"]  # its reply was never handled


def test_wire_timestamp_is_read_lazily_and_tolerates_garbage() -> None:
    proto = ready()
    msgs = proto.receive_data(
        b'{"event": "A", "timestamp": {"seconds": "x"}}\n'
        b'{"event": "B", "timestamp": 5}\n{"event": "C", "data": [1]}\n'
        b'{"timestamp": {"seconds": 2, "microseconds": 250000}, "event": "D"}\n')
    assert [(e.name, e.data, e.timestamp) for e in msgs] == [
        ("A", {}, 0.0), ("B", {}, 0.0), ("C", {}, 0.0), ("D", {}, 2.25)]
