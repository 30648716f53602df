"""A scriptable fake QMP server, for testing code that talks to QEMU.

:class:`FakeQMPServer` speaks QMP the way QEMU 7.2 does on the wire (the greeting, CRLF
line endings, capability negotiation, ``"id"`` echo, in-order in-band replies,
``exec-oob``, events with timestamps, file descriptors passed with SCM_RIGHTS) and, by
default, behaves like an idle, paused QEMU 7.2 (``-S``): block nodes, devices with
``DEVICE_DELETED`` after ``device_del``, netdevs, chardevs, objects, CPUs, run states,
migration, QOM. The error classes and descriptions of the built-in commands are the ones
a real QEMU 7.2 returns (``tests/test_testing.py`` compares the two when QEMU is
installed). Every command can be scripted (:meth:`FakeQMPServer.on`), and faults can be
injected: no greeting, a slow greeting, garbage, half a line then EOF, a peer that stops
reading, dropped connections.

Two ways to run it:

* Deterministic (what qmplex's own tests do): the test's client and the server share one
  reactor and one thread; :meth:`FakeQMPServer.connect_pair` returns the client end of
  a socket pair (no file system, no thread)::

      reactor = Reactor()
      server = FakeQMPServer(reactor=reactor)
      client = Client(reactor)
      client.connect_socket(server.connect_pair())
      ...
      server.close()

* Threaded, for blocking client code: without a reactor, :meth:`FakeQMPServer.start`
  runs the server on its own reactor in a daemon thread and listens on a Unix socket
  (by default inside a fresh private directory, removed by :meth:`~FakeQMPServer.close`)::

      import qmplex
      from qmplex.testing import fake_server

      with fake_server() as server:
          server.on("query-name", returns={"name": "vm1"})
          with qmplex.connect(server.path, timeout=5) as client:
              assert client.execute("query-name").result(timeout=5) == {"name": "vm1"}
          assert server.commands() == ["qmp_capabilities", "query-name"]

How it serves (the details are in ``session.py``'s theory of operation): every object
received is recorded in :attr:`FakeQMPServer.received`, in arrival order; on each
connection ``exec-oob`` commands run at once and in-band commands one at a time, in
order, so a scripted ``delay`` holds the ones behind it; like QEMU, it stops reading a
connection while 8 commands are queued (1 without OOB). Events go to every negotiated
connection. The server runs on a qmplex :class:`~qmplex.reactor.Reactor`, never blocks
it and uses no lock on the data path. Its public methods may be called from any thread:
they run on the server's reactor thread and return when done, so a scripted reply is in
place before the test's next command can arrive.

Other QEMU releases: ``FakeQMPServer(qemu_version="9.2.0")`` is one of the 17 releases
whose real introspection is captured in the package (:data:`CAPTURED_QEMU_VERSIONS`,
5.0.0 to 11.1.3): it greets as that release, serves its ``query-qmp-schema`` (so
``client.load_schema()`` and ``client.call`` see that QEMU), and refuses commands,
arguments and device properties that release does not have. What it emulates is still
the idle QEMU 7.2 below.

Known differences from QEMU 7.2: several clients are served at once (QEMU serves one at
a time); after ``quit`` the server closes every connection but keeps listening; unplug
completes (``DEVICE_DELETED`` after ``unplug_delay``) for every device, CPUs and DIMMs
included, which a QEMU without a guest never does (set ``unplug_delay=None`` to imitate
that); input validation is limited to required arguments.

Where things live (import the names above from ``qmplex.testing``; the modules are
its rooms, not separate APIs):

* ``server.py``: :class:`FakeQMPServer` and :func:`fake_server`: the listening socket,
  the reactor or the server's own thread, calls from other threads, the public API.
* ``session.py``: one client connection: greeting, negotiation, line framing, the
  in-band queue and OOB, replies and events written, delayed replies.
* ``model.py``: the simulated QEMU 7.2: run state, block nodes, devices, CPUs, fds,
  QOM, migration, and the events they emit; the built-in commands.
* ``script.py``: what :meth:`FakeQMPServer.on` records, and :class:`FakeCommandError`.
* ``wire.py``: how messages are encoded and received lines decoded.
* ``captured.py`` and ``data/``: the captured releases, and the checks a release makes.
"""

from .captured import CAPTURED_QEMU_VERSIONS, CapturedRelease, captured_release
from .model import DEFAULT_UNPLUG_DELAY, QEMU_OOB_COMMANDS
from .script import MISSING, FakeCommandError
from .server import FakeQMPServer, fake_server

__all__ = [
    "CAPTURED_QEMU_VERSIONS",
    "CapturedRelease",
    "FakeQMPServer",
    "FakeCommandError",
    "MISSING",
    "QEMU_OOB_COMMANDS",
    "DEFAULT_UNPLUG_DELAY",
    "captured_release",
    "fake_server",
]
