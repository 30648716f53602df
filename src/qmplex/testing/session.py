"""One client connection of the fake server, served the way QEMU's monitor serves it.

A :class:`Session` owns one non-blocking socket on the server's reactor: it sends the
greeting, cuts the input into lines, checks each command object as QEMU's
``qmp_dispatch`` does, keeps capability negotiation's state, runs commands in order
(a script of :mod:`.script`, else a built-in handler) and writes replies and events.

Theory of operation:

* Input is cut into lines (clients send a newline after each object, and the search
  resumes where it stopped, so a partial line is never rescanned); each line holds one
  JSON value (several objects on one line are accepted too). An invalid line gets
  QEMU's ``GenericError`` "JSON parse error, ..." without an id. Unlike QEMU's
  streaming parser, an object without a newline after it waits for the newline.
* Every decoded object is recorded in the server's ``received``. Then ``exec-oob``
  commands run at once; in-band commands join a queue that is served in order, one at a
  time, so a scripted ``delay`` holds the commands behind it (replies stay in order, as
  in QEMU). Like QEMU, the session stops reading while its queue is full: 8 commands
  with OOB negotiated, else 1. Input that arrives before the greeting or while the
  server is stalled is held, and replayed in order.
* A command's outcome comes from its script or else from the built-in handler; the
  script's ``events`` go out before the reply, its ``events_after`` later. Events go to
  every negotiated session (through the server), as in QEMU.
* Output is appended to the session's buffer and written with ``send``; what the
  socket does not take waits for EVENT_WRITE. Replies to a batch of input are written
  with one ``send``. While the server is stalled nothing is written or executed.

A session belongs to its server: it reads the server's switches (its public
attributes, when they matter), records what it receives in the server's lists, takes
scripts and built-in handlers from the server, and runs only on the server's reactor
thread, with no lock.
"""

from __future__ import annotations

import array
import collections
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..reactor import Reactor, TimerHandle
from . import wire
from .model import Call
from .script import FakeCommandError, Script, generic_error

if TYPE_CHECKING:
    from .server import FakeQMPServer

__all__ = ["Request", "Session", "Timers", "negotiate"]

logger = logging.getLogger(__name__)

# QEMU's QMP_REQ_QUEUE_LEN_MAX: with OOB on, reading stops while 8 commands are queued.
_QUEUE_LEN_MAX: Final = 8
_RECV_BYTES: Final = 256 * 1024
# SCM_MAX_FD on Linux: the most descriptors one sendmsg() can carry.
_MAX_FDS_PER_MSG: Final = 253
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(_MAX_FDS_PER_MSG * array.array("i").itemsize)


class Timers:
    """Timers that are cancelled together: a session's, or the server's."""

    __slots__ = ("_handles",)

    def __init__(self) -> None:
        self._handles: set[TimerHandle] = set()

    def later(self, reactor: Reactor, delay: float, fn: Callable[..., object],
              *args: Any) -> None:
        """Call ``fn(*args)`` on ``reactor`` after ``delay`` seconds, unless cancelled."""
        handles: list[TimerHandle] = []

        def fire() -> None:
            self._handles.discard(handles[0])
            fn(*args)

        handles.append(reactor.call_later(delay, fire))
        self._handles.add(handles[0])

    def cancel(self) -> None:
        """Cancel every pending timer."""
        for timer in self._handles:
            timer.cancel()
        self._handles.clear()


def negotiate(call: Call, offered: Sequence[str]) -> Any:
    """The ``qmp_capabilities`` command: check ``enable`` against the capabilities
    ``offered`` in the greeting (the session applies them once the reply is out)."""
    enable = call.args.get("enable", [])
    if not isinstance(enable, list):
        raise generic_error("Invalid parameter type for 'enable', expected: array")
    for cap in enable:
        if cap != "oob":
            raise generic_error(f"Parameter 'null' does not accept value '{cap}'")
        if cap not in offered:
            raise generic_error(f"Capability '{cap}' not available")
    return {}


@dataclass(slots=True)
class Request:
    """A command object that passed qmp_dispatch's checks."""

    name: str
    args: dict[str, Any]
    has_id: bool
    id: Any
    oob: bool


class Session:
    """One client connection (see the module's theory of operation)."""

    __slots__ = (
        "server", "reactor", "sock", "fd", "rbuf", "wbuf", "greeted", "negotiated", "oob",
        "queue", "busy", "held", "fds", "timers", "reading", "writing", "batch", "closing",
        "closed",
    )  # fmt: skip

    def __init__(self, server: FakeQMPServer, reactor: Reactor, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.server = server
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.greeted = False
        self.negotiated = False
        self.oob = False
        self.queue: collections.deque[Request] = collections.deque()
        self.busy = False  # an in-band command is being executed (delayed reply)
        self.held: collections.deque[Any] = collections.deque()  # input not yet dispatched
        self.fds: collections.deque[int] = collections.deque()  # received, not yet claimed
        self.timers = Timers()  # cancelled when the session closes
        self.reading = False
        self.writing = False
        self.batch = False  # writes are flushed once, at the end of the current batch
        self.closing = False  # close once the write buffer is empty; write nothing more
        self.closed = False

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start reading, and greet (subject to the server's greeting switches)."""
        self.reactor.add_reader(self.fd, self._on_readable)
        self.reading = True
        server = self.server
        if server.no_greeting:
            pass
        elif server.greeting_delay > 0:
            self.timers.later(self.reactor, server.greeting_delay, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        server = self.server
        greeting = server.greeting
        if greeting is None:
            greeting = wire.greeting_line(server.version, server.package, server.capabilities)
        self.write(greeting)
        self.greeted = True
        if server.close_after_greeting:
            self.close_after_output()
        else:
            self.replay()

    def close_after_output(self) -> None:
        """Write nothing more, and close once what is buffered is written."""
        self.closing = True
        if not self.batch:
            self.flush()

    def close(self) -> None:
        """Close now; buffered output, queued commands and timers are dropped."""
        if self.closed:
            return
        self.closed = True
        self.server._forget(self)
        if not self.reactor.closed:
            if self.reading:
                self.reactor.remove_reader(self.fd)
            if self.writing:
                self.reactor.remove_writer(self.fd)
        self.reading = self.writing = False
        self.timers.cancel()
        self.queue.clear()
        self.held.clear()
        self.sock.close()
        self.server._notify()

    def update_reading(self) -> None:
        """Read while the in-band queue has room and the server is not stalled."""
        # QEMU suspends its monitor while the in-band queue is full: 8 requests with
        # OOB on, else 1 (monitor/qmp.c, handle_qmp_command).
        server = self.server
        queued = len(self.queue) + self.busy
        want = (
            not self.closed
            and not (server._stalled and server._stall_reading)
            and queued < (_QUEUE_LEN_MAX if self.oob else 1)
        )
        if want != self.reading:
            if want:
                self.reactor.add_reader(self.fd, self._on_readable)
            else:
                self.reactor.remove_reader(self.fd)
            self.reading = want

    # ----------------------------------------------------------------- output
    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client (nothing once closing)."""
        if self.closed or self.closing:
            return
        self.wbuf += data
        if not self.batch:
            self.flush()

    def flush(self) -> None:
        """Send what the socket takes; wait for EVENT_WRITE for the rest."""
        if self.closed:
            return
        if self.server._stalled:  # hold the output; resume() flushes it
            if self.writing:
                self.reactor.remove_writer(self.fd)
                self.writing = False
            return
        wbuf = self.wbuf
        if wbuf:
            try:
                sent = self.sock.send(wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the client went away (EPIPE, ECONNRESET)
                self.close()
                return
            del wbuf[:sent]
        if wbuf:
            if not self.writing:
                self.reactor.add_writer(self.fd, self.flush)
                self.writing = True
            return
        if self.writing:
            self.reactor.remove_writer(self.fd)
            self.writing = False
        if self.closing:
            self.close()

    # ------------------------------------------------------------------ input
    def _on_readable(self) -> None:
        server = self.server
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(
                _RECV_BYTES, _ANCILLARY_BYTES, socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                self.fds.extend(fds)
                server.received_fds.extend(fds)
        if not data:
            self.close()
            return
        self.batch = True
        try:
            self._feed(data)
        finally:
            self.batch = False
        self.flush()
        server._notify()

    def _feed(self, data: bytes) -> None:
        buf = self.rbuf
        scanned = len(buf)  # the partial line already held has no newline
        buf += data
        newline = buf.find(b"\n", scanned)
        start = 0
        while newline >= 0:
            line = bytes(buf[start:newline])
            start = newline + 1
            self._on_line(line)
            if self.closed:
                return
            newline = buf.find(b"\n", start)
        del buf[:start]

    def _on_line(self, line: bytes) -> None:
        server = self.server
        for value in wire.decode_line(line):
            if isinstance(value, dict):
                server.received.append(value)
                name = value.get("execute", value.get("exec-oob"))
                if isinstance(name, str):
                    server._commands.append(name)
            elif isinstance(value, wire.BadLine):
                server.bad_lines.append(line)
            if self.closing:
                continue
            if self.greeted and not server._stalled:
                self._dispatch(value)
            else:
                self.held.append(value)

    def replay(self) -> None:
        """Dispatch the input held before the greeting or during a stall."""
        batch, self.batch = self.batch, True
        try:
            while self.held and not self.server._stalled and not self.closed:
                self._dispatch(self.held.popleft())
            self._pump()
        finally:
            self.batch = batch
        if not batch:
            self.flush()

    def _dispatch(self, value: Any) -> None:
        if self.closing or self.closed:
            return
        if isinstance(value, wire.BadLine):
            self.write(wire.error_line(False, None, "GenericError", value.desc))
            return
        if not isinstance(value, dict):
            self.write(wire.error_line(False, None, "GenericError",
                                       "QMP input must be a JSON object"))
            return
        has_id = "id" in value
        cid = value.get("id")
        try:
            request = self._parse(value, has_id, cid)
        except FakeCommandError as exc:
            self.write(wire.error_line(has_id, cid, exc.error_class, exc.desc))
            return
        if request.oob:
            self._execute(request)
        else:
            self.queue.append(request)
            self._pump()

    def _parse(self, msg: dict[str, Any], has_id: bool, cid: Any) -> Request:
        """Check a command object's members as QEMU's qmp_dispatch does."""
        exec_key: str | None = None
        for key, value in msg.items():
            if key == "execute" or (key == "exec-oob" and self.oob):
                if not isinstance(value, str):
                    raise generic_error(f"QMP input member '{key}' must be a string")
                if exec_key is not None:
                    raise generic_error("QMP input member 'execute' clashes with 'exec-oob'")
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise generic_error("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise generic_error(f"QMP input member '{key}' is unexpected")
        if exec_key is None:
            raise generic_error("QMP input lacks member 'execute'")
        return Request(msg[exec_key], msg.get("arguments", {}), has_id, cid,
                       exec_key == "exec-oob")

    # -------------------------------------------------------------- execution
    def _pump(self) -> None:
        """Execute queued in-band commands, in order, until one is delayed."""
        queue = self.queue
        while queue and not self.busy and not self.closing and not self.server._stalled:
            self._execute(queue.popleft())
        self.update_reading()

    def _execute(self, req: Request) -> None:
        server = self.server
        name = req.name
        script: Script | None = None
        try:
            if not self.negotiated:
                if name != "qmp_capabilities":
                    raise FakeCommandError(
                        "CommandNotFound",
                        "Expecting capabilities negotiation with 'qmp_capabilities'")
            elif name == "qmp_capabilities":
                raise FakeCommandError(
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored")
            script = server._scripts.get(name)
            if script is None and not server._emulates(name):
                raise FakeCommandError("CommandNotFound",
                                       f"The command {name} has not been found")
            oob_commands = server.oob_commands
            if req.oob and oob_commands is not None and name not in oob_commands:
                raise generic_error(f"The command {name} does not support OOB")
        except FakeCommandError as exc:
            has_id = req.has_id and server.echo_ids
            self.write(wire.error_line(has_id, req.id, exc.error_class, exc.desc))
            return
        if script is not None:
            server._scripts.used(name, script)
        if script is not None and script.delay > 0:
            if not req.oob:
                self.busy = True
            self.timers.later(self.reactor, script.delay, self._complete_delayed, req, script)
        else:
            self._complete(req, script)

    def _complete_delayed(self, req: Request, script: Script) -> None:
        if not req.oob:
            self.busy = False
        self.batch = True
        try:
            self._complete(req, script)
            self._pump()
        finally:
            self.batch = False
        self.flush()

    def _complete(self, req: Request, script: Script | None) -> None:
        """Execute a command: effects, events before, the reply, what comes after."""
        if self.closed or self.closing:
            return
        server = self.server
        call = Call(req.args, self.fds)
        ok = False
        value: Any = None
        refusal = server._refusal(req.name, req.args)
        try:
            if refusal is not None:  # refused as the captured release would refuse it
                raise refusal
            if script is not None and script.decides:
                value = script.answer(req.args)
            else:
                handler = server._handlers.get(req.name)
                if handler is None:
                    raise FakeCommandError("CommandNotFound",
                                           f"The command {req.name} has not been found")
                value = handler(call)
            ok = True
        except FakeCommandError as exc:
            value = exc
        except Exception as exc:  # a bug in a test's handler: report it, keep serving
            logger.exception("fake QMP server: handler for %r raised", req.name)
            server.handler_errors.append(exc)
            value = generic_error(f"fake handler for {req.name} raised {exc!r}")
        if script is not None and refusal is None:
            for name, data in script.events:
                server._broadcast_event(name, data)
        if script is None or not script.never:
            has_id = req.has_id and server.echo_ids
            if script is not None and script.reply_without_id:
                has_id = False
            if ok:
                try:
                    line = wire.return_line(has_id, req.id, value)
                except TypeError as exc:  # orjson.JSONEncodeError
                    server.handler_errors.append(exc)
                    line = wire.error_line(has_id, req.id, "GenericError",
                                           f"fake reply to {req.name} is not JSON: {exc}")
            else:
                line = wire.error_line(has_id, req.id, value.error_class, value.desc)
            if script is not None and script.close_mid_line:
                self.write(line[: len(line) // 2])
                self.close_after_output()
            else:
                self.write(line)
        if ok and req.name == "qmp_capabilities":
            self.negotiated = True
            self.oob = "oob" in (req.args.get("enable") or ())
            self.update_reading()
        for fn in call.after:
            fn()
        if script is not None and refusal is None:
            for name, data, after in script.events_after:
                server._later(after, server._broadcast_event, name, data)
