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
from qmplex.events import Event
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


def test_unwanted_events_dropped_undecoded() -> None:
    wanted = {b"STOP"}
    proto = ready(wants=wanted.__contains__)
    # The RESUME line is not even valid JSON: it is dropped before decoding.
    msgs = proto.receive_data(
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME", BROKEN\r\n'
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n'
        b'{"event": "RESET", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n'
    )
    assert [m.name for m in msgs] == ["STOP"]
    assert proto.dropped_events == 2


def test_unwanted_event_in_unusual_key_order_still_filtered() -> None:
    proto = ready(wants={b"STOP"}.__contains__)
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
