"""Event filters and the dispatch table."""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Callable

import orjson
import pytest

from qmplex.events import DispatchTable, Event, EventFilter


def ev(name: str, **data: object) -> Event:
    return Event(name, dict(data), 1.5)


def test_filter_matches_name_nested_data_and_predicate() -> None:
    e = ev("BLOCK_JOB_COMPLETED", device="j1", info={"type": "mirror", "len": 5})
    assert EventFilter("BLOCK_JOB_COMPLETED").matches(e)
    assert not EventFilter("STOP").matches(e)
    assert EventFilter(None, {"device": "j1"}).matches(e)
    assert EventFilter(None, {"info": {"type": "mirror"}}).matches(e)
    assert not EventFilter(None, {"info": {"type": "commit"}}).matches(e)
    assert not EventFilter(None, {"missing": None}).matches(e)
    assert EventFilter(predicate=lambda x: x.data["info"]["len"] == 5).matches(e)
    assert not EventFilter(predicate=lambda x: False).matches(e)


def test_from_message() -> None:
    e = Event.from_message({"event": "STOP", "timestamp": {"seconds": 3, "microseconds": 500000}})
    assert e == Event("STOP", {}, 3.5)
    with pytest.raises(ValueError):
        Event.from_message({"event": 3})


def test_dispatch_by_name_and_index() -> None:
    t = DispatchTable()
    got: list[str] = []
    def record(name: str) -> Callable[[Event], None]:
        return lambda e: got.append(name)

    subs = [
        t.subscribe(EventFilter("DEVICE_DELETED", {"device": f"d{i}"}), record(f"d{i}"))
        for i in range(1000)
    ]
    t.subscribe(EventFilter("STOP"), lambda e: got.append("stop"))
    routes = t.routes()
    assert routes.wants("DEVICE_DELETED") and routes.wants("STOP")
    assert not routes.wants("RESUME")
    assert t.dispatch(ev("DEVICE_DELETED", device="d500", path="/x")) == 1
    # A child event without "device" reaches none of the indexed subscriptions.
    assert t.dispatch(ev("DEVICE_DELETED", path="/machine/peripheral/d1/virtio-backend")) == 0
    assert t.dispatch(ev("STOP")) == 1
    assert got == ["d500", "stop"]
    # Indexed lookup: candidates for one event are just the matching ones.
    bucket = t._by_name["DEVICE_DELETED"]
    assert len(bucket.candidates({"device": "d7"})) == 1
    for s in subs:
        s.cancel()
    assert not t.routes().wants("DEVICE_DELETED")
    assert len(t) == 1


def test_once_subscription_and_catch_all() -> None:
    t = DispatchTable()
    got: list[str] = []
    t.subscribe(EventFilter("RESET"), lambda e: got.append("once"), once=True)
    t.subscribe(EventFilter(), lambda e: got.append("any:" + e.name))
    assert t.routes().wants("ANYTHING")
    t.dispatch(ev("RESET"))
    t.dispatch(ev("RESET"))
    assert got == ["once", "any:RESET", "any:RESET"]


def test_cancel_during_dispatch_and_raising_callback(caplog: pytest.LogCaptureFixture) -> None:
    t = DispatchTable()
    got: list[str] = []
    holder: list[object] = []

    def first(e: Event) -> None:
        got.append("first")
        holder[0].cancel()  # type: ignore[attr-defined]
        raise RuntimeError("callback bug")

    t.subscribe(EventFilter("X"), first)
    holder.append(t.subscribe(EventFilter("X"), lambda e: got.append("second")))
    t.subscribe(EventFilter("X"), lambda e: got.append("third"))
    with caplog.at_level(logging.ERROR, logger="qmplex.events"):
        t.dispatch(ev("X"))
    assert got == ["first", "third"]
    assert "callback bug" in caplog.text


def test_non_scalar_match_falls_back_to_plain_list() -> None:
    t = DispatchTable()
    got: list[int] = []
    t.subscribe(EventFilter("X", {"v": [1, 2]}), lambda e: got.append(1))
    t.subscribe(EventFilter("X", {"a": {"b": 1}}), lambda e: got.append(2))
    t.dispatch(ev("X", v=[1, 2], a={"b": 1}))
    t.dispatch(ev("X", v=[1], a={"b": 2}))
    assert got == [1, 2]


def test_event_is_an_immutable_value() -> None:
    wire = Event.from_message({"event": "STOP", "data": {"a": 1},
                               "timestamp": {"seconds": 2, "microseconds": 500000}})
    made = Event("STOP", {"a": 1}, 2.5)
    assert wire == made and not (wire != made) and hash(wire) == hash(made)
    assert wire != Event("STOP", {"a": 2}, 2.5) and wire != Event("STOP", {"a": 1}, 2.0)
    assert repr(wire) == "Event(name='STOP', data={'a': 1}, timestamp=2.5)"
    with pytest.raises(AttributeError):
        wire.name = "RESUME"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        wire.timestamp = 1.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(wire)) == made
    assert copy.deepcopy(wire) == made
    assert Event("X") == Event("X", {}, 0.0) and Event("X").data == {}
    match wire:
        case Event(name="STOP", data={"a": n}):
            assert n == 1
        case _:
            pytest.fail("Event does not match by attributes")


def test_routes_names_and_catch_all() -> None:
    t = DispatchTable()
    assert t.routes().names == () and not t.routes().catch_all
    plain = t.subscribe(EventFilter("STOP"), print)
    t.subscribe(EventFilter("DEVICE_DELETED", {"device": "d1"}), print)
    routes = t.routes()
    assert routes.names == ("STOP", "DEVICE_DELETED") and not routes.catch_all
    assert t.routes() is routes  # cached until something changes
    anything = t.subscribe(EventFilter(), print)
    assert t.routes() is not routes and t.routes().catch_all
    anything.cancel()
    plain.cancel()
    routes = t.routes()
    assert routes.names == ("DEVICE_DELETED",) and not routes.catch_all


def test_dispatch_in_order_and_a_new_subscription_misses_the_current_event() -> None:
    t = DispatchTable()
    got: list[str] = []

    def first(e: Event) -> None:
        got.append("first:" + e.data["n"])
        if e.data["n"] == "1":
            # Made while "1" is handed out: it sees the events after it, not "1".
            t.subscribe(EventFilter("X"), lambda e: got.append("late:" + e.data["n"]))

    t.subscribe(EventFilter("X"), first)
    for e in [ev("X", n="1"), ev("X", n="2")]:
        t.dispatch(e)
    assert got == ["first:1", "first:2", "late:2"]


def test_to_message_gives_back_the_qmp_message() -> None:
    msg = {"timestamp": {"seconds": 1700000000, "microseconds": 250001},
           "event": "DEVICE_DELETED", "data": {"device": "d1"}}
    wire = Event.from_message(msg)
    assert wire.to_message() == msg
    assert orjson.loads(orjson.dumps(wire.to_message())) == msg
    assert Event("STOP").to_message() == {
        "timestamp": {"seconds": 0, "microseconds": 0}, "event": "STOP", "data": {}}
