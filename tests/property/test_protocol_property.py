"""Property tests: the push path (``Protocol.receive_into``, events routed straight to
the dispatch table's handlers) delivers exactly what the list path
(``receive_data``) returns, in the same order, for any stream and any chunking; and
what nobody subscribed to is dropped and counted."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmplex.events import DispatchTable, Event, EventFilter
from qmplex.protocol import Protocol, Reply, State

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": []}}\n')
NAMES = ["STOP", "RESUME", "DEVICE_DELETED", "BLOCK_JOB_COMPLETED"]


def event_line(name: str, n: int, order: int) -> bytes:
    ts = {"seconds": 1700000000 + n, "microseconds": n % 1000000}
    data = {"device": f"d{n}", "n": n}
    if order == 0:  # QEMU's own order: the splitter classifies it
        msg: dict[str, Any] = {"timestamp": ts, "event": name, "data": data}
    elif order == 1:  # name first: classified too
        msg = {"event": name, "data": data, "timestamp": ts}
    else:  # data first: the splitter cannot tell, the protocol decodes and filters
        msg = {"data": data, "event": name, "timestamp": ts}
    return orjson.dumps(msg) + (b"\r\n" if n % 3 == 0 else b"\n")


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[str], int, bytes, list[int]]:
    """(subscribed names, number of commands, the bytes after the greeting, chunk cuts)."""
    subscribed = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
    items = draw(st.lists(st.one_of(
        st.tuples(st.just("event"), st.sampled_from(NAMES), st.integers(0, 2)),
        st.tuples(st.just("reply"), st.booleans(), st.just(0)),
    ), max_size=40))
    lines: list[bytes] = []
    replies = 0
    for i, (kind, arg, order) in enumerate(items):
        if kind == "event":
            assert isinstance(arg, str)
            lines.append(event_line(arg, i, order))
        else:
            replies += 1
            body = {"return": {"n": i}} if arg else {"error": {"class": "GenericError",
                                                               "desc": f"no {i}"}}
            lines.append(orjson.dumps({**body, "id": replies + 1}) + b"\n")
    data = b"".join(lines)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return subscribed, replies, data, cuts


def negotiated(table: DispatchTable, commands: int) -> Protocol:
    proto = Protocol(router=table)
    proto.receive_data(GREETING)
    neg = orjson.loads(proto.negotiate(False))
    assert neg["id"] == 1
    proto.receive_data(b'{"return": {}, "id": 1}\n')
    assert proto.state is State.READY
    for i in range(commands):
        cid, _ = proto.encode("query-status")
        proto.expect(cid, f"cmd{i}")
    return proto


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]  # noqa: B905


@SETTINGS
@given(streams())
def test_push_path_delivers_what_the_list_path_returns(
        stream: tuple[list[str], int, bytes, list[int]]) -> None:
    subscribed, commands, data, cuts = stream

    # The list path: everything returned, in order.
    listed: list[Any] = []
    list_table = DispatchTable()
    for name in subscribed:
        list_table.subscribe(EventFilter(name), lambda e: None)
    proto = negotiated(list_table, commands)
    for chunk in chunks(data, cuts):
        listed.extend(proto.receive_data(chunk))
    expected = [("reply", m.token, m.ok, m.value) if isinstance(m, Reply)
                else ("event", m) for m in listed]
    dropped_listed = proto.dropped_events

    # The push path: replies to on_reply, events to the subscriptions' callbacks.
    pushed: list[Any] = []
    table = DispatchTable()
    for name in subscribed:
        table.subscribe(EventFilter(name), lambda e: pushed.append(("event", e)))
    proto = negotiated(table, commands)
    others: list[Any] = []

    def on_message(msg: Any) -> None:
        if isinstance(msg, Event):
            table.dispatch(msg)
        else:
            others.append(msg)

    for chunk in chunks(data, cuts):
        proto.receive_into(chunk, lambda t, ok, v: pushed.append(("reply", t, ok, v)),
                           on_message)

    assert pushed == expected
    assert others == []
    assert proto.dropped_events == dropped_listed
    # Every event of a subscribed name arrived, with its data and timestamp; the
    # others were all dropped.
    events = [e for kind, *rest in expected if kind == "event" for e in rest]
    assert all(e.name in subscribed for e in events)
    total = sum(1 for line in data.splitlines() if b'"event"' in line)
    assert len(events) + proto.dropped_events == total
    for e in events:
        n = e.data["n"]
        assert e.timestamp == 1700000000 + n + (n % 1000000) / 1e6
    # Every command got its reply exactly once, in order.
    assert [p[1] for p in pushed if p[0] == "reply"] == [f"cmd{i}" for i in range(commands)]
