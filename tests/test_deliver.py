"""The routed-event loop: ``qmplex._deliver.deliver`` (C, ``csrc/deliver.c``) and the
pure-Python loop of ``Protocol._handle_lines`` it stands in for.

Every scenario runs twice through the ``loop`` fixture: with the C loop (skipped when
the extension is not built) and with ``qmplex.protocol._deliver`` set to None, so the
Python loop does all the work. Each scenario records what a user sees (the callbacks'
events, ``on_reply``'s and ``on_message``'s arguments, the ``qmplex.events`` log) in one
list, in the order it happened, and the tests check it against the same expected
values for both loops; ``test_c_and_python_loops_agree`` also runs every scenario
under both loops in one test and compares the recordings whole.
"""

from __future__ import annotations

import gc
import importlib
import logging
import operator
import random
import re
import sys
import weakref
from collections.abc import Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any

import orjson
import pytest

import qmplex.protocol as protocol_mod
from qmplex.errors import DecodeError, ProtocolError
from qmplex.events import DispatchTable, Event, EventFilter, Subscription, callback_failed
from qmplex.framing import ROUTE_BASE, RouteTable, Splitter
from qmplex.protocol import Protocol, State

C_EXT: ModuleType | None
try:
    C_EXT = importlib.import_module("qmplex._deliver")
except ImportError:  # a build without the extension: only the Python loop runs
    C_EXT = None

NO_C = "qmplex._deliver is not built (no C loop to test)"

Outcome = list[tuple[Any, ...]]

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, '
            b'"package": ""}, "capabilities": ["oob"]}}\n')

#: The first command id after negotiation (qmp_capabilities takes 1).
FIRST_ID = 2


# --------------------------------------------------------------------------- fixture
class Loop:
    """Which loop delivers routed events in this test, and how often C was entered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.c_calls = 0


def _use_loop(kind: str, monkeypatch: pytest.MonkeyPatch) -> Loop:
    current = Loop(kind)
    if kind == "python":
        monkeypatch.setattr(protocol_mod, "_deliver", None)
        return current
    real = protocol_mod._deliver
    if real is None:
        pytest.skip(NO_C)

    def counting(*args: Any) -> tuple[int, int, int, int]:
        # Only counts, so the tests know the C loop really ran.
        current.c_calls += 1
        return real(*args)

    monkeypatch.setattr(protocol_mod, "_deliver", counting)
    return current


@pytest.fixture(params=["c", "python"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    """Run the test with the C loop ("c") or the pure-Python loop ("python")."""
    current = _use_loop(request.param, monkeypatch)
    yield current
    if current.kind == "c":
        assert current.c_calls > 0, "the C loop was never entered"


# --------------------------------------------------------------------------- helpers
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Recorder(logging.Handler):
    """Records, in order, what the callbacks, on_reply, on_message and the
    ``qmplex.events`` logger were given (as plain values, comparable across runs)."""

    def __init__(self, *, isolate: bool = False) -> None:
        super().__init__(logging.DEBUG)
        self.seen: Outcome = []
        self.records: list[logging.LogRecord] = []
        # isolate: the records reach this handler only (not pytest's, which keep them).
        self.isolate = isolate
        self._propagate = True

    # Callbacks never assert: an AssertionError is an Exception, which the loops log.
    def callback(self, label: str) -> Callable[[Event], None]:
        def record(event: Event) -> None:
            self.seen.append((label, type(event).__name__, event.name, event.data,
                              event.timestamp, event[2]))
        return record

    def on_reply(self, token: Any, ok: bool, value: Any) -> None:
        self.seen.append(("reply", token, ok, value))

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, ProtocolError):
            self.seen.append(("message", type(msg).__name__, msg.excerpt))
        elif isinstance(msg, Event):
            self.seen.append(("message", "Event", msg.name, msg.data, msg.timestamp))
        else:
            self.seen.append(("message", msg))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        exc = record.exc_info[1] if record.exc_info else None
        self.seen.append(("log", record.levelname, _ADDRESS.sub("", record.getMessage()),
                          type(exc).__name__, str(exc)))

    def __enter__(self) -> Recorder:
        logger = logging.getLogger("qmplex.events")
        logger.addHandler(self)
        self._propagate = logger.propagate
        if self.isolate:
            logger.propagate = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        logger = logging.getLogger("qmplex.events")
        logger.removeHandler(self)
        logger.propagate = self._propagate

    def feed(self, proto: Protocol, data: bytes) -> None:
        proto.receive_into(data, self.on_reply, self.on_message)


def ready(table: DispatchTable, commands: int = 0) -> Protocol:
    """A READY protocol routing through ``table``, with commands cmd0.. in flight
    (ids FIRST_ID, FIRST_ID + 1, ...)."""
    proto = Protocol(router=table)
    proto.receive_data(GREETING)
    neg = orjson.loads(proto.negotiate())
    assert neg["id"] == FIRST_ID - 1
    assert proto.receive_data(b'{"return": {}, "id": %d}\n' % neg["id"]) == []
    assert proto.state is State.READY
    for i in range(commands):
        cid, _ = proto.encode("query-status")
        assert cid == FIRST_ID + i
        proto.expect(cid, f"cmd{i}")
    return proto


def ev(name: str, data: Any, sec: int = 1, usec: int = 2) -> bytes:
    """An event line as QEMU writes it: timestamp, event, data."""
    return orjson.dumps({"timestamp": {"seconds": sec, "microseconds": usec},
                         "event": name, "data": data}) + b"\n"


def ts(sec: int = 1, usec: int = 2) -> tuple[float, dict[str, int]]:
    """(Event.timestamp, raw timestamp) of ``ev(..., sec, usec)``."""
    return sec + usec / 1e6, {"seconds": sec, "microseconds": usec}


def reply(i: int, value: Any = None) -> bytes:
    """The reply to cmd``i``: a return (value) or, with value None, an error."""
    if value is None:
        return orjson.dumps({"error": {"class": "GenericError", "desc": f"no {i}"},
                             "id": FIRST_ID + i}) + b"\n"
    return orjson.dumps({"return": value, "id": FIRST_ID + i}) + b"\n"


def got(label: str, name: str, data: Any, sec: int = 1, usec: int = 2) -> tuple[Any, ...]:
    """What Recorder.callback(label) records for ``ev(name, data, sec, usec)``."""
    return (label, "Event", name, data, *ts(sec, usec))


def bad(name: str, sec: int = 1, usec: int = 2) -> bytes:
    """An event line the splitter routes by its name, which is not valid JSON."""
    return (b'{"timestamp": {"seconds": %d, "microseconds": %d}, "event": "%s", '
            b'"data": {]}\n' % (sec, usec, name.encode()))


def decode_error(line: bytes) -> tuple[Any, ...]:
    return ("message", "DecodeError", line.rstrip(b"\n"))


def routed_tags(data: bytes, names: tuple[str, ...]) -> list[int]:
    """The tags the splitter (both implementations, which must agree) gives the lines of
    ``data`` with ``names`` routed."""
    tags: list[list[int]] = []
    for impl in ("c", "python"):
        try:
            splitter = Splitter(1 << 20, impl=impl)
        except ImportError:  # no C splitter in this build
            continue
        buf, spans, error, _ = splitter.feed_routed(data, RouteTable(names))
        assert error is None and buf == data
        tags.append(spans[0::3])
    assert tags and all(t == tags[0] for t in tags)
    return tags[0]


def feed_chunked(rec: Recorder, proto: Protocol, data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(data)]
    for a, b in zip(bounds, bounds[1:]):  # noqa: B905
        rec.feed(proto, data[a:b])


# ------------------------------------------------------------------ 1. interleaving
def interleaved_stream() -> tuple[bytes, int, Outcome]:
    """(stream, commands in flight, expected) for scenario 1: events A (one plain
    callback: its own handler), B (two subscriptions: the table's dispatch), C (nobody:
    dropped undecoded) and replies, plus odd data and timestamps."""
    lines: list[bytes] = []
    expected: Outcome = []
    k = 0
    # The odd ones first, in one run of routed lines.
    lines.append(b'{"timestamp": {"seconds": 5, "microseconds": 250000}, "event": "A"}\n')
    expected.append(("a", "Event", "A", {}, 5.25, {"seconds": 5, "microseconds": 250000}))
    lines.append(ev("A", [1, 2], 6, 0))
    expected.append(got("a", "A", {}, 6, 0))
    lines.append(ev("A", "text", 7, 1))
    expected.append(got("a", "A", {}, 7, 1))
    lines.append(ev("A", None, 8, 2))
    expected.append(got("a", "A", {}, 8, 2))
    lines.append(b'{"event": "B", "data": {"dev": "d1", "n": -1}}\n')
    expected.append(("b", "Event", "B", {"dev": "d1", "n": -1}, 0.0, None))
    expected.append(("b-d1", "Event", "B", {"dev": "d1", "n": -1}, 0.0, None))
    lines.append(b'{"event": "A", "data": {"n": -2}, "timestamp": {"seconds": "x"}}\n')
    expected.append(("a", "Event", "A", {"n": -2}, 0.0, {"seconds": "x"}))
    # Data before the name: the splitter cannot route it, so the protocol decodes it
    # and hands it to on_message (in its place in the stream).
    lines.append(b'{"data": {"n": -3}, "event": "A", "timestamp": {"seconds": 9, '
                 b'"microseconds": 0}}\n')
    expected.append(("message", "Event", "A", {"n": -3}, 9.0))
    for i in range(120):
        sec, usec = 1_700_000_000 + i, (i * 12_345) % 1_000_000
        step = i % 9
        if step in (0, 3, 6, 7):
            lines.append(ev("A", {"n": i}, sec, usec))
            expected.append(got("a", "A", {"n": i}, sec, usec))
        elif step in (1, 4):
            data = {"n": i, "dev": f"d{i % 3}"}
            lines.append(ev("B", data, sec, usec))
            expected.append(got("b", "B", data, sec, usec))
            if i % 3 == 1:
                expected.append(got("b-d1", "B", data, sec, usec))
        elif step == 2:
            lines.append(ev("C", {"n": i}, sec, usec))
        else:
            value = {"k": k} if k % 2 == 0 else None
            lines.append(reply(k, value))
            if value is None:
                expected.append(("reply", f"cmd{k}", False,
                                 {"class": "GenericError", "desc": f"no {k}"}))
            else:
                expected.append(("reply", f"cmd{k}", True, value))
            k += 1
    return b"".join(lines), k, expected


def scenario_interleaved(cuts: list[int] | None = None) -> Outcome:
    data, commands, _ = interleaved_stream()
    with Recorder() as rec:
        table = DispatchTable()
        table.subscribe(EventFilter("A"), rec.callback("a"))
        table.subscribe(EventFilter("B"), rec.callback("b"))
        table.subscribe(EventFilter("B", match={"dev": "d1"}), rec.callback("b-d1"))
        proto = ready(table, commands)
        feed_chunked(rec, proto, data, cuts or [])
        rec.seen.append(("end", proto.state.value, proto.in_flight, proto.dropped_events))
    return rec.seen


def test_routed_events_reach_their_handlers_in_stream_order_between_replies(
        loop: Loop) -> None:
    data, commands, expected = interleaved_stream()
    # The routed names are tagged >= ROUTE_BASE, C is dropped (not reported).
    tags = routed_tags(data, ("A", "B"))
    assert sum(t >= ROUTE_BASE for t in tags) == 86
    seen = scenario_interleaved()
    assert seen[:-1] == expected
    dropped = data.count(b'"event":"C"')
    assert dropped > 0
    assert seen[-1] == ("end", "ready", 0, dropped)


def test_events_are_event_instances_with_the_documented_attributes(loop: Loop) -> None:
    events: list[Event] = []
    table = DispatchTable()
    table.subscribe(EventFilter("A"), events.append)
    proto = ready(table)
    proto.receive_into(ev("A", {"x": [1, {"y": None}]}, 1_700_000_000, 500_000)
                       + b'{"event": "A"}\n', lambda *a: None, lambda m: None)
    first, second = events
    assert type(first) is Event and type(second) is Event
    assert first == Event("A", {"x": [1, {"y": None}]}, 1_700_000_000.5)
    assert (first.name, first.data, first.timestamp) == ("A", {"x": [1, {"y": None}]},
                                                         1_700_000_000.5)
    assert first[2] == {"seconds": 1_700_000_000, "microseconds": 500_000}
    assert (second.name, second.data, second.timestamp) == ("A", {}, 0.0)
    assert second.data is not events[0].data  # a fresh {} per event
    second.data["mutable"] = True
    assert events[0].data == {"x": [1, {"y": None}]}


def test_a_catch_all_subscription_sees_routed_and_unrouted_events(loop: Loop) -> None:
    with Recorder() as rec:
        table = DispatchTable()
        table.subscribe(EventFilter("A"), rec.callback("a"))
        table.subscribe(EventFilter(None), rec.callback("any"))
        proto = ready(table, 1)
        rec.feed(proto, ev("A", {"n": 0}) + ev("Z", {"n": 1}) + reply(0, {})
                 + ev("A", {"n": 2}))
    # Routed A lines go to the table's dispatch (both subscriptions); Z is reported
    # to on_message, undispatched.
    assert rec.seen == [got("a", "A", {"n": 0}), got("any", "A", {"n": 0}),
                        ("message", "Event", "Z", {"n": 1}, ts()[0]),
                        ("reply", "cmd0", True, {}),
                        got("a", "A", {"n": 2}), got("any", "A", {"n": 2})]


def test_route_false_hands_routed_events_to_on_message(loop: Loop) -> None:
    with Recorder() as rec:
        table = DispatchTable()
        table.subscribe(EventFilter("A"), rec.callback("a"))
        proto = ready(table)
        # Once routed (and so through the C loop when there is one), then not.
        rec.feed(proto, ev("A", {"n": 0}))
        proto.receive_into(ev("A", {"n": 1}), rec.on_reply, rec.on_message, route=False)
    assert rec.seen == [got("a", "A", {"n": 0}),
                        ("message", "Event", "A", {"n": 1}, ts()[0])]


# --------------------------------------------------------------- 2. Exception raised
def scenario_raising(outer: bool = False) -> Outcome:
    """A (plain callback) raises ValueError on odd n; B's first subscription raises
    TypeError (B is dispatched by the table); handlers record sys.exc_info()."""
    with Recorder() as rec:
        raised: list[BaseException] = []

        def boom(event: Event) -> None:
            rec.seen.append(("a", event.data["n"], repr(sys.exc_info()[1])))
            if event.data["n"] % 2:
                exc = ValueError(f"bad {event.data['n']}")
                raised.append(exc)
                raise exc

        def b_boom(event: Event) -> None:
            raise TypeError(f"b {event.data['n']}")

        table = DispatchTable()
        table.subscribe(EventFilter("A"), boom)
        table.subscribe(EventFilter("B"), b_boom)
        table.subscribe(EventFilter("B"), lambda e: rec.seen.append(
            ("b", e.data["n"], repr(sys.exc_info()[1]))))
        proto = ready(table, 1)
        data = (ev("A", {"n": 0}) + ev("A", {"n": 1}) + ev("B", {"n": 2}) + ev("A", {"n": 3})
                + reply(0, {}) + ev("A", {"n": 5}) + ev("A", {"n": 6}))
        if outer:
            try:
                raise LookupError("outer")
            except LookupError:
                rec.feed(proto, data)
                rec.seen.append(("after", repr(sys.exc_info()[1])))
        else:
            rec.feed(proto, data)
            rec.seen.append(("after", repr(sys.exc_info()[1])))
        # Each logged exception is the very one the callback raised.
        for record in rec.records:
            assert record.exc_info is not None
            exc = record.exc_info[1]
            if isinstance(exc, ValueError):
                rec.seen.append(("same-exception", any(exc is r for r in raised)))
    return rec.seen


@pytest.mark.parametrize("outer", [False, True], ids=["plain", "inside-except"])
def test_a_handler_raising_an_exception_is_logged_and_the_run_goes_on(
        loop: Loop, outer: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="qmplex.events")
    seen = scenario_raising(outer)
    handled = repr(LookupError("outer")) if outer else "None"
    log_a = "event callback <function scenario_raising.<locals>.boom> raised"
    log_b = "event callback <function scenario_raising.<locals>.b_boom> raised"
    assert seen == [
        ("a", 0, handled),
        ("a", 1, handled), ("log", "ERROR", log_a, "ValueError", "bad 1"),
        ("log", "ERROR", log_b, "TypeError", "b 2"), ("b", 2, handled),
        ("a", 3, handled), ("log", "ERROR", log_a, "ValueError", "bad 3"),
        ("reply", "cmd0", True, {}),
        ("a", 5, handled), ("log", "ERROR", log_a, "ValueError", "bad 5"),
        ("a", 6, handled),
        ("after", handled),
        ("same-exception", True), ("same-exception", True), ("same-exception", True),
    ]
    # What caplog saw: the qmplex.events logger, with the exception info.
    records = [r for r in caplog.records if r.name == "qmplex.events"]
    assert [r.levelno for r in records] == [logging.ERROR] * 4
    for record, (kind, text) in zip(records, [(ValueError, "bad 1"), (TypeError, "b 2"),
                                              (ValueError, "bad 3"), (ValueError, "bad 5")],
                                    strict=True):
        assert record.exc_info is not None
        exc_type, exc, tb = record.exc_info
        assert exc_type is kind and isinstance(exc, kind) and str(exc) == text
        assert tb is not None and exc is not None and exc.__traceback__ is tb
        # The traceback ends in the callback that raised.
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert tb.tb_frame.f_code.co_name == ("boom" if kind is ValueError else "b_boom")
        assert record.exc_text is None or text in record.exc_text
    assert "ValueError: bad 3" in caplog.text


def scenario_builtin_raising() -> Outcome:
    """A's only callback is a builtin that raises (no Python frame of its own)."""
    with Recorder() as rec:
        table = DispatchTable()
        table.subscribe(EventFilter("A"), operator.itemgetter("x"))  # an Event is a tuple
        table.subscribe(EventFilter("B"), rec.callback("b"))
        proto = ready(table)
        rec.feed(proto, ev("A", {"n": 0}) + ev("B", {"n": 1}) + ev("A", {"n": 2}))
        for record in rec.records:
            assert record.exc_info is not None
            rec.seen.append(("exc_info", record.exc_info[0], type(record.exc_info[1])))
    return rec.seen


def test_a_builtin_handler_raising_is_logged_too(loop: Loop) -> None:
    log = ("log", "ERROR", "event callback operator.itemgetter('x') raised", "TypeError",
           "tuple indices must be integers or slices, not str")
    assert scenario_builtin_raising() == [
        log, got("b", "B", {"n": 1}), log,
        ("exc_info", TypeError, TypeError), ("exc_info", TypeError, TypeError)]


# ----------------------------------------------------------- 3. BaseException raised
class Stop(BaseException):
    """A BaseException of our own."""


def scenario_base_exception(kind: type[BaseException], dispatched: bool) -> Outcome:
    with Recorder() as rec:
        seen = rec.seen

        def handler(event: Event) -> None:
            seen.append(("a", event.data["n"]))
            if event.data["n"] == 2:
                raise kind("stop here")

        table = DispatchTable()
        table.subscribe(EventFilter("A"), handler)
        if dispatched:  # a second subscription: the table's dispatch is the handler
            table.subscribe(EventFilter("A"), lambda e: seen.append(("a2", e.data["n"])))
        proto = ready(table, 2)
        with pytest.raises(kind) as info:
            rec.feed(proto, ev("A", {"n": 0}) + reply(0, {}) + ev("A", {"n": 1})
                     + ev("A", {"n": 2}) + ev("A", {"n": 3}) + reply(1, {}) + ev("A", {"n": 4}))
        seen.append(("raised", type(info.value).__name__, str(info.value),
                     proto.state.value, proto.in_flight, repr(sys.exc_info()[1])))
        tb = info.value.__traceback__
        names = []
        while tb is not None:
            names.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        seen.append(("traceback-ends-in", names[-1], "receive_into" in names))
        # The connection goes on with the next data (what was cut off is lost).
        rec.feed(proto, ev("A", {"n": 5}) + reply(1, {"late": True}))
        seen.append(("end", proto.state.value, proto.in_flight))
    return seen


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, Stop])
@pytest.mark.parametrize("dispatched", [False, True], ids=["own-handler", "dispatch"])
def test_a_handler_raising_a_base_exception_propagates(
        loop: Loop, kind: type[BaseException], dispatched: bool) -> None:
    seen = scenario_base_exception(kind, dispatched)
    twice = dispatched
    expected: Outcome = [("a", 0)] + ([("a2", 0)] if twice else [])
    expected += [("reply", "cmd0", True, {}), ("a", 1)] + ([("a2", 1)] if twice else [])
    expected += [("a", 2),  # raised: nothing after it in that data is delivered
                 ("raised", kind.__name__, "stop here", "ready", 1, "None"),
                 ("traceback-ends-in", "handler", True),
                 ("a", 5)] + ([("a2", 5)] if twice else [])
    expected += [("reply", "cmd1", True, {"late": True}), ("end", "ready", 0)]
    assert seen == expected  # and nothing was logged


# ------------------------------------------------------ 4. (un)subscribing mid-run
NAMES_4 = ("A", "B", "C", "D")


def subscription_script(rec: Recorder) -> DispatchTable:
    """A table whose A callback changes the subscriptions as the events come."""
    table = DispatchTable()
    subs: dict[str, Subscription] = {}

    def on_a(event: Event) -> None:
        rec.callback("a")(event)
        n = event.data["n"]
        if n == 2:
            subs["b"].cancel()  # B's only subscription: B is no longer wanted
        elif n == 4:
            subs["b-again"] = table.subscribe(EventFilter("B"), rec.callback("b-again"))
        elif n == 6:
            subs["a-k1"] = table.subscribe(EventFilter("A", match={"k": 1}),
                                           rec.callback("a-k1"))
        elif n == 8:
            subs["d"] = table.subscribe(EventFilter("D"), rec.callback("d"))
        elif n == 10:
            subs["a-k1"].cancel()
            subs["c-more"] = table.subscribe(EventFilter("C"), rec.callback("c-more"))
        elif n == 11:
            subs["b-again"].cancel()
            subs["b-third"] = table.subscribe(EventFilter("B"), rec.callback("b-third"))

    subs["a"] = table.subscribe(EventFilter("A"), on_a)
    subs["b"] = table.subscribe(EventFilter("B"), rec.callback("b"))
    subs["c"] = table.subscribe(EventFilter("C"), rec.callback("c-once"), once=True)
    return table


def subscription_stream() -> tuple[list[bytes], int]:
    lines: list[bytes] = []
    k = 0
    for n in range(14):
        for name in NAMES_4:
            lines.append(ev(name, {"n": n, "k": n % 2}, 100 + n, n))
        if n % 3 == 2:
            lines.append(reply(k, {"k": k}))
            k += 1
    return lines, k


def scenario_subscriptions() -> Outcome:
    lines, commands = subscription_stream()
    with Recorder() as rec:
        proto = ready(subscription_script(rec), commands)
        rec.feed(proto, b"".join(lines))
        rec.seen.append(("batch-end", proto.dropped_events))
        # D became wanted mid-batch: its lines of that batch were dropped before
        # decoding (routing is worked out once per receive_into), the next are routed.
        rec.feed(proto, ev("D", {"n": 99}) + ev("B", {"n": 99}) + ev("C", {"n": 99}))
    return rec.seen


def test_subscription_changes_mid_run_apply_to_the_rest_of_the_run(loop: Loop) -> None:
    seen = scenario_subscriptions()

    # The reference: the same script, each event of a name routed when the batch
    # began handed to DispatchTable.dispatch, each reply to on_reply.
    lines, commands = subscription_stream()
    with Recorder() as ref:
        table = subscription_script(ref)
        for line in lines:
            msg = orjson.loads(line)
            if "event" not in msg:
                ref.on_reply(f"cmd{msg['id'] - FIRST_ID}", True, msg["return"])
            elif msg["event"] in ("A", "B", "C"):
                table.dispatch(Event.from_message(msg))
    assert ref.seen  # sanity
    batch_end = seen.index(("batch-end", 14))  # the 14 D lines of the batch: dropped
    assert seen[:batch_end] == ref.seen
    assert seen[batch_end + 1:] == [got("d", "D", {"n": 99}), got("b-third", "B", {"n": 99}),
                                    got("c-more", "C", {"n": 99})]

    # Spelled out: who got which n.
    def ns(label: str) -> list[int]:
        return [s[3]["n"] for s in seen[:batch_end] if s[0] == label]

    assert ns("a") == list(range(14))
    assert ns("b") == [0, 1]  # cancelled by A 2, which comes before B 2
    assert ns("b-again") == [4, 5, 6, 7, 8, 9, 10]
    assert ns("b-third") == [11, 12, 13]
    assert ns("a-k1") == [7, 9]
    assert ns("c-once") == [0]
    assert ns("c-more") == [10, 11, 12, 13]
    assert ns("d") == []
    assert [s[1] for s in seen if s[0] == "reply"] == [f"cmd{i}" for i in range(commands)]


def test_a_handler_cancelling_another_names_only_subscription(loop: Loop) -> None:
    with Recorder() as rec:
        table = DispatchTable()
        sub_b = table.subscribe(EventFilter("B"), rec.callback("b"))
        table.subscribe(EventFilter("A"), lambda e: sub_b.cancel())
        proto = ready(table)
        rec.feed(proto, ev("B", {"n": 0}) + ev("A", {"n": 1}) + ev("B", {"n": 2})
                 + bad("B") + ev("B", {"n": 3}))
        # B's invalid line was routed (B was wanted when the batch began): reported.
        rec.feed(proto, ev("B", {"n": 4}) + bad("B"))  # not wanted: dropped undecoded
    assert rec.seen == [got("b", "B", {"n": 0}), decode_error(bad("B"))]
    assert proto.dropped_events == 2


# ------------------------------------------------------------ 5. closed by a handler
CLOSE_TRIGGERS = ["handler", "dispatch", "cancel-then-close", "on_reply", "on_message"]


def scenario_close(trigger: str) -> Outcome:
    with Recorder() as rec:
        table = DispatchTable()
        box: list[Protocol] = []

        def on_a(event: Event) -> None:
            rec.callback("a")(event)
            if event.data["n"] == 2:
                if trigger == "cancel-then-close":
                    sub_b.cancel()
                if trigger != "dispatch":
                    box[0].receive_eof()

        def on_a2(event: Event) -> None:
            rec.callback("a2")(event)
            if event.data["n"] == 2:
                box[0].receive_eof()

        def on_reply(token: Any, ok: bool, value: Any) -> None:
            rec.on_reply(token, ok, value)
            box[0].receive_eof()

        def on_message(msg: Any) -> None:
            rec.on_message(msg)
            box[0].receive_eof()

        table.subscribe(EventFilter("A"), on_a)
        if trigger == "dispatch":
            table.subscribe(EventFilter("A"), on_a2)
        sub_b = table.subscribe(EventFilter("B"), rec.callback("b"))
        proto = ready(table, 3)
        box.append(proto)
        data = (ev("A", {"n": 0}) + ev("B", {"n": 0}) + reply(0, {}) + ev("A", {"n": 1})
                + bad("A") + ev("A", {"n": 2}) + ev("B", {"n": 2}) + reply(1, {})
                + ev("A", {"n": 3}) + bad("B") + ev("B", {"n": 4}))
        proto.receive_into(data, on_reply if trigger == "on_reply" else rec.on_reply,
                           on_message if trigger == "on_message" else rec.on_message)
        rec.seen.append(("state", proto.state.value))
        rec.feed(proto, ev("A", {"n": 9}) + reply(2, {}))  # closed: ignored
        rec.seen.append(("in-flight", tuple(proto.take_in_flight())))
    return rec.seen


@pytest.mark.parametrize("trigger", CLOSE_TRIGGERS)
def test_a_callback_closing_the_protocol_stops_the_run(loop: Loop, trigger: str) -> None:
    seen = scenario_close(trigger)
    start: Outcome = [got("a", "A", {"n": 0})]
    if trigger == "dispatch":
        start.append(got("a2", "A", {"n": 0}))
    start.append(got("b", "B", {"n": 0}))
    start.append(("reply", "cmd0", True, {}))
    end: Outcome = [("state", "closed")]
    if trigger == "on_reply":
        assert seen == start + end + [("in-flight", ("cmd1", "cmd2"))]
        return
    start.append(got("a", "A", {"n": 1}))
    if trigger == "dispatch":
        start.append(got("a2", "A", {"n": 1}))
    start.append(decode_error(bad("A")))
    if trigger == "on_message":
        assert seen == start + end + [("in-flight", ("cmd1", "cmd2"))]
        return
    start.append(got("a", "A", {"n": 2}))
    if trigger == "dispatch":
        start.append(got("a2", "A", {"n": 2}))
    assert seen == start + end + [("in-flight", ("cmd1", "cmd2"))]


# -------------------------------------------------------------- 6. invalid JSON lines
def invalid_json_stream() -> tuple[bytes, Outcome]:
    parts: list[tuple[bytes, tuple[Any, ...] | None]] = [
        (bad("A", 1, 0), decode_error(bad("A", 1, 0))),  # first line of the run
        (ev("A", {"n": 0}), got("a", "A", {"n": 0})),
        (ev("B", {"n": 1}), got("b", "B", {"n": 1})),
        (bad("B", 2, 0), decode_error(bad("B", 2, 0))),
        (bad("A", 3, 0), decode_error(bad("A", 3, 0))),  # two in a row
        (ev("A", {"n": 2}), got("a", "A", {"n": 2})),
        (reply(0, {}), ("reply", "cmd0", True, {})),
        (bad("B", 4, 0), decode_error(bad("B", 4, 0))),  # first after a reply
        # Routed, valid JSON, but nothing like an event body: still decodes to an object.
        (b'{"event": "A", "data": {"n": 3}, "extra": [1, {"x": null}]}\n',
         ("a", "Event", "A", {"n": 3}, 0.0, None)),
        (b'{"event": "A", "data": {"n": 4}} trailing\n',
         decode_error(b'{"event": "A", "data": {"n": 4}} trailing')),
        (ev("A", {"n": 5}), got("a", "A", {"n": 5})),
        (bad("A", 5, 0), decode_error(bad("A", 5, 0))),  # last line
    ]
    data = b"".join(line for line, _ in parts)
    return data, [want for _, want in parts if want is not None]


def scenario_invalid_json() -> Outcome:
    data, _ = invalid_json_stream()
    with Recorder() as rec:
        table = DispatchTable()
        table.subscribe(EventFilter("A"), rec.callback("a"))
        table.subscribe(EventFilter("B"), rec.callback("b"))
        proto = ready(table, 1)
        rec.feed(proto, data)
        rec.seen.append(("state", proto.state.value))
    return rec.seen


def test_an_invalid_routed_line_is_reported_and_the_run_goes_on(loop: Loop) -> None:
    data, expected = invalid_json_stream()
    # Every line but the reply is an event line of a routed name: tagged >= ROUTE_BASE,
    # so the invalid ones reach the loop (they are not dropped, not KIND_OTHER).
    tags = routed_tags(data, ("A", "B"))
    assert len(tags) == 12
    assert [t >= ROUTE_BASE for t in tags] == [True] * 6 + [False] + [True] * 5
    assert routed_tags(bad("X"), ("X",)) == [ROUTE_BASE]  # the brief's example line
    assert scenario_invalid_json() == expected + [("state", "ready")]


def test_decode_error_values(loop: Loop) -> None:
    errors: list[Any] = []
    table = DispatchTable()
    table.subscribe(EventFilter("A"), lambda e: None)
    proto = ready(table)
    proto.receive_into(ev("A", {}) + bad("A") + ev("A", {}), lambda *a: None, errors.append)
    (err,) = errors
    assert type(err) is DecodeError
    assert err.excerpt == bad("A").rstrip(b"\n")
    assert str(err).startswith("invalid JSON from the peer (")


# ---------------------------------------------------- 7. a handler dropping itself
def scenario_self_dropping(raising: bool) -> tuple[Outcome, Callable[[], object]]:
    """A's only callback is a closure only the table holds; on its first call it
    cancels itself (the table lets go of it), subscribes a replacement and, if
    ``raising``, raises. Returns the recording and a weak reference to it."""
    with Recorder(isolate=True) as rec:
        table = DispatchTable()

        def install() -> Callable[[], object]:
            box: dict[str, Subscription] = {}

            def only_once(event: Event) -> None:
                rec.callback("once")(event)
                box.pop("sub").cancel()
                table.subscribe(EventFilter("A"), rec.callback("after"))
                gc.collect()
                rec.seen.append(("still-alive", ref() is not None))
                if raising:
                    raise ValueError("raised after dropping myself")

            box["sub"] = table.subscribe(EventFilter("A"), only_once)
            ref = weakref.ref(only_once)
            return ref

        ref = install()
        proto = ready(table, 1)
        rec.feed(proto, ev("A", {"n": 0}) + ev("A", {"n": 1}) + reply(0, {}) + ev("A", {"n": 2}))
        rec.feed(proto, ev("A", {"n": 3}))
        rec.records.clear()  # they hold the callback (log arguments, traceback)
        table.subscribe(EventFilter("B"), lambda e: None)
        rec.feed(proto, ev("A", {"n": 4}))  # a new routing: the old handlers let go
    return rec.seen, ref


@pytest.mark.parametrize("raising", [False, True], ids=["returning", "raising"])
def test_a_handler_dropping_the_last_reference_to_itself(loop: Loop, raising: bool) -> None:
    seen, ref = scenario_self_dropping(raising)
    expected: Outcome = [got("once", "A", {"n": 0}), ("still-alive", True)]
    if raising:
        expected.append(("log", "ERROR", "event callback <function "
                         "scenario_self_dropping.<locals>.install.<locals>.only_once> raised",
                         "ValueError", "raised after dropping myself"))
    expected += [got("after", "A", {"n": 1}), ("reply", "cmd0", True, {}),
                 got("after", "A", {"n": 2}), got("after", "A", {"n": 3}),
                 got("after", "A", {"n": 4})]
    assert seen == expected
    gc.collect()
    assert ref() is None, "the handler is still referenced: a reference leaked"


def test_no_reference_is_leaked(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing kept by the log (logging is off), nor by the callbacks: every reference
    # the loop takes (handler, name, Event and its data and timestamp) must be dropped.
    monkeypatch.setattr(logging.getLogger("qmplex.events"), "disabled", True)
    counts: list[int] = []

    def plain(event: Event) -> None:
        counts.append(1)

    def raising(event: Event) -> None:
        raise ValueError("x")

    table = DispatchTable()
    table.subscribe(EventFilter("A"), plain)
    table.subscribe(EventFilter("B"), raising)
    proto = ready(table)
    warm: list[Event] = []
    table.subscribe(EventFilter("W"), warm.append)
    proto.receive_into(ev("W", {"n": 0}), lambda *a: None, lambda m: None)
    # orjson caches short keys: a leaked data or timestamp dict keeps theirs.
    keys = [next(iter(warm[0].data)), *warm[0][2]]
    name_a = table.routing()[0].names[0]
    assert name_a == "A"
    del warm
    data = b"".join(ev("A" if i % 3 else "B", {"n": i}, i, i) for i in range(300))
    proto.receive_into(data, lambda *a: None, lambda m: None)  # warm up caches
    before = [sys.getrefcount(o) for o in (plain, raising, name_a, *keys)]
    for _ in range(3):
        proto.receive_into(data, lambda *a: None, lambda m: None)
    after = [sys.getrefcount(o) for o in (plain, raising, name_a, *keys)]
    assert after == before
    assert len(counts) == 4 * 200


# ------------------------------------------------------------------- 8. chunkings
def chunkings(size: int, line_ends: list[int]) -> list[list[int]]:
    rng = random.Random(20241125)
    cuts: list[list[int]] = [
        [],  # whole
        list(range(1, size)),  # byte by byte
        line_ends,  # line by line
        [e - 3 for e in line_ends if e > 3],  # each line cut short of its end
        [e + 1 for e in line_ends if e + 1 < size],  # each line's first byte with it
        list(range(7, size, 7)),
    ]
    for _ in range(12):
        cuts.append(sorted(rng.sample(range(1, size), rng.randint(1, min(40, size - 1)))))
    return cuts


def mixed_script(rec: Recorder) -> DispatchTable:
    """Subscriptions that change mid-stream without depending on chunk boundaries:
    only names that stay wanted get new subscriptions, and invalid lines are of names
    that stay wanted."""
    table = DispatchTable()
    subs: dict[str, Subscription] = {}

    def on_a(event: Event) -> None:
        rec.callback("a")(event)
        n = event.data["n"]
        if n == 10:
            subs["b2"] = table.subscribe(EventFilter("B"), rec.callback("b2"))
        if n == 20:
            subs["b2"].cancel()
        if n == 25:
            subs["c"].cancel()  # C: no longer wanted
        if n % 7 == 3:
            raise ValueError(f"a {n}")

    subs["a"] = table.subscribe(EventFilter("A"), on_a)
    subs["b"] = table.subscribe(EventFilter("B"), rec.callback("b"))
    subs["c"] = table.subscribe(EventFilter("C"), rec.callback("c"))
    return table


def mixed_stream() -> tuple[bytes, int]:
    lines: list[bytes] = []
    k = 0
    for n in range(36):
        lines.append(ev("A", {"n": n}, n, n))
        if n % 2:
            lines.append(ev("B", {"n": n}, n, n))
        if n % 3 == 0:
            lines.append(ev("C", {"n": n}, n, n))
        if n % 5 == 4:
            lines.append(bad("B", n))
        if n % 4 == 1:
            lines.append(reply(k, {"k": k}) if k % 2 else reply(k))
            k += 1
    return b"".join(lines), k


def scenario_chunked(cuts: list[int]) -> Outcome:
    data, commands = mixed_stream()
    with Recorder() as rec:
        proto = ready(mixed_script(rec), commands)
        feed_chunked(rec, proto, data, cuts)
        rec.seen.append(("end", proto.state.value, proto.in_flight))
    return rec.seen


def line_ends(data: bytes) -> list[int]:
    return [i + 1 for i, c in enumerate(data) if c == 0x0A][:-1]


def test_any_chunking_gives_the_same_deliveries(loop: Loop) -> None:
    data, commands = mixed_stream()
    whole = scenario_chunked([])
    assert whole[-1] == ("end", "ready", 0)
    labels = [s[0] for s in whole]
    assert labels.count("a") == 36 and labels.count("c") == 9  # C n=0..24 step 3
    assert labels.count("b2") == 5 and labels.count("log") == 5
    assert labels.count("message") == 7 and labels.count("reply") == commands
    for cuts in chunkings(len(data), line_ends(data)):
        assert scenario_chunked(cuts) == whole, cuts


def test_the_interleaved_stream_in_chunks(loop: Loop) -> None:
    data, _, expected = interleaved_stream()
    whole = scenario_interleaved()
    assert whole[:-1] == expected
    for cuts in chunkings(len(data), line_ends(data))[2:8]:
        assert scenario_interleaved(cuts) == whole


# ----------------------------------------------------------- both loops, one test
SCENARIOS: list[tuple[str, Callable[[], object]]] = [
    ("interleaved", scenario_interleaved),
    ("raising", scenario_raising),
    ("raising-inside-except", lambda: scenario_raising(True)),
    ("builtin-raising", scenario_builtin_raising),
    *[(f"base-{kind.__name__}-{d}", lambda kind=kind, d=d: scenario_base_exception(kind, d))
      for kind in (KeyboardInterrupt, Stop) for d in (False, True)],
    ("subscriptions", scenario_subscriptions),
    *[(f"close-{t}", lambda t=t: scenario_close(t)) for t in CLOSE_TRIGGERS],
    ("invalid-json", scenario_invalid_json),
    ("self-dropping", lambda: scenario_self_dropping(True)[0]),
    ("chunked", lambda: scenario_chunked(list(range(5, 3000, 37)))),
]


@pytest.mark.skipif(protocol_mod._deliver is None, reason=NO_C)
def test_c_and_python_loops_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    results: dict[str, list[object]] = {}
    for kind in ("c", "python"):
        with monkeypatch.context() as patch:
            current = _use_loop(kind, patch)
            results[kind] = [run() for _, run in SCENARIOS]
            if kind == "c":
                assert current.c_calls > 0
    for (name, _), c_result, py_result in zip(SCENARIOS, results["c"], results["python"],
                                              strict=True):
        assert c_result == py_result, name


# --------------------------------------------- the C function's argument checking
def c_ext() -> Any:
    if C_EXT is None:
        pytest.skip(NO_C)
    return C_EXT


class Direct:
    """A valid deliver() call on two routed A lines, delivered to ``self.events``."""

    def __init__(self, buf_type: type[bytes] | type[bytearray] = bytes) -> None:
        self.data = ev("A", {"n": 0}) + ev("A", {"n": 1})
        self.buf = buf_type(self.data)
        self.spans = [ROUTE_BASE, 0, len(ev("A", {"n": 0})) - 1,
                      ROUTE_BASE, len(ev("A", {"n": 0})), len(self.data) - 1]
        assert routed_tags(self.data, ("A",)) == [ROUTE_BASE, ROUTE_BASE]
        self.events: list[Event] = []
        self.table = DispatchTable()
        self.table.subscribe(EventFilter("A"), self.events.append)
        self.proto = ready(self.table)
        self.names_at: tuple[Any, ...] = (None,) * ROUTE_BASE + ("A",)
        self.handlers_at: tuple[Any, ...] = (None,) * ROUTE_BASE + (self.events.append,)

    def args(self, **change: Any) -> list[Any]:
        args: dict[str, Any] = {
            "buf": self.buf, "tag": self.spans[0], "start": self.spans[1],
            "end": self.spans[2], "fields": iter(self.spans[3:]), "names_at": self.names_at,
            "handlers_at": self.handlers_at, "router": self.table,
            "version": self.table.version, "proto": self.proto,
        }
        args.update(change)
        return list(args.values())


@pytest.mark.parametrize("buf_type", [bytes, bytearray])
def test_c_deliver_called_directly(buf_type: type[bytes] | type[bytearray]) -> None:
    ext = c_ext()
    call = Direct(buf_type)
    assert ext.deliver(*call.args()) == (ext.EXHAUSTED, 0, 0, 0)
    assert call.events == [Event("A", {"n": 0}, 1.000002), Event("A", {"n": 1}, 1.000002)]
    # A line that is not routed is handed back untouched, the iterator not advanced.
    fields = iter([ROUTE_BASE, 0, 5])
    assert ext.deliver(*call.args(tag=ROUTE_BASE - 1, start=3, end=4, fields=fields)) == (
        ext.LINE, ROUTE_BASE - 1, 3, 4)
    assert next(fields) == ROUTE_BASE and len(call.events) == 2


def test_c_deliver_rejects_a_wrong_number_of_arguments() -> None:
    ext = c_ext()
    call = Direct()
    with pytest.raises(TypeError, match="10 arguments"):
        ext.deliver(*call.args()[:9])
    with pytest.raises(TypeError, match="10 arguments"):
        ext.deliver(*call.args(), None)
    with pytest.raises(TypeError):
        ext.deliver()
    with pytest.raises(TypeError):
        ext.deliver(*call.args()[:5], names_at=call.names_at)
    assert call.events == []


@pytest.mark.parametrize("change", [
    {"buf": "text"}, {"buf": memoryview(b"x" * 200)}, {"buf": None},
    {"names_at": [None] * (ROUTE_BASE + 1)}, {"handlers_at": [None] * (ROUTE_BASE + 1)},
    {"names_at": None}, {"fields": [1, 2, 3]}, {"tag": "8"}, {"end": 1.5},
], ids=lambda change: ",".join(f"{k}={type(v).__name__}" for k, v in change.items()))
def test_c_deliver_rejects_arguments_of_the_wrong_type(change: dict[str, Any]) -> None:
    ext = c_ext()
    call = Direct()
    with pytest.raises(TypeError):
        ext.deliver(*call.args(**change))
    assert call.events == []


@pytest.mark.parametrize("change", [
    {"end": 10_000}, {"start": -1}, {"start": 5, "end": 4},
    {"tag": ROUTE_BASE + 1}, {"tag": 10_000},
], ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()))
def test_c_deliver_rejects_a_line_out_of_range(change: dict[str, Any]) -> None:
    ext = c_ext()
    call = Direct()
    with pytest.raises(ValueError, match="out of range"):
        ext.deliver(*call.args(**change))
    assert call.events == []


def test_c_deliver_checks_handlers_at_length_and_lines_pulled_later() -> None:
    ext = c_ext()
    call = Direct()
    # names_at longer than handlers_at: the tag is out of range of the latter.
    with pytest.raises(ValueError, match="out of range"):
        ext.deliver(*call.args(names_at=call.names_at + ("B",), tag=ROUTE_BASE + 1))
    # A bad line pulled from the iterator: the lines before it were delivered.
    with pytest.raises(ValueError, match="out of range"):
        ext.deliver(*call.args(fields=iter([ROUTE_BASE, 0, len(call.data) + 1])))
    assert [e.data for e in call.events] == [{"n": 0}]
    with pytest.raises(TypeError):
        ext.deliver(*call.args(fields=iter([ROUTE_BASE, "0", 5])))
    assert [e.data for e in call.events] == [{"n": 0}, {"n": 0}]


def _delivery_still_works() -> None:
    events: list[Event] = []
    table = DispatchTable()
    table.subscribe(EventFilter("A"), events.append)
    proto = ready(table)
    proto.receive_into(ev("A", {"n": 1}) + bad("A") + ev("A", {"n": 2}),
                       lambda *a: None, lambda m: None)
    assert [(type(e), e.data) for e in events] == [(Event, {"n": 1}), (Event, {"n": 2})]
    call = Direct()
    ext = c_ext()
    assert ext.deliver(*call.args()) == (ext.EXHAUSTED, 0, 0, 0)
    assert [type(e) for e in call.events] == [Event, Event]


@pytest.mark.parametrize("bad_args", [
    "not-a-tuple-subclass", "event-type-instance", "event-type-tuple-instance",
    "decode-error-not-a-type", "too-few", "too-many", "route-base-zero",
    "route-base-not-int", "route-base-huge",
])
def test_c_configure_rejects_bad_arguments_and_keeps_its_configuration(
        bad_args: str) -> None:
    ext = c_ext()
    ok = [protocol_mod._loads, Event, callback_failed, State.CLOSED,
          orjson.JSONDecodeError, ROUTE_BASE]
    args: list[Any] = list(ok)
    expected: type[Exception] = TypeError
    if bad_args == "not-a-tuple-subclass":
        args[1] = dict
    elif bad_args == "event-type-instance":
        args[1] = Event("A")
    elif bad_args == "event-type-tuple-instance":
        args[1] = (1, 2, 3)
    elif bad_args == "decode-error-not-a-type":
        args[4] = orjson.JSONDecodeError("x", "", 0)
    elif bad_args == "too-few":
        args = args[:5]
    elif bad_args == "too-many":
        args.append(None)
    elif bad_args == "route-base-zero":
        args[5], expected = 0, ValueError
    elif bad_args == "route-base-not-int":
        args[5] = "8"
    else:
        args[5], expected = 1 << 80, OverflowError
    # Every one is rejected before anything is stored: the configuration is intact.
    with pytest.raises(expected):
        ext.configure(*args)
    _delivery_still_works()
