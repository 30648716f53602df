"""pytest fixtures for code that talks to QEMU: a fake QMP server and a real QEMU.

Installed with qmplex as a ``pytest11`` entry point, so the fixtures are available in
every test session without any import (or load it explicitly with
``pytest -p qmplex.pytest_plugin``, or ``pytest_plugins = ["qmplex.pytest_plugin"]`` in
a top-level ``conftest.py`` when plugin autoloading is disabled).

Fixtures (function scope):

``qmp_fake_server``
    A started :class:`~qmplex.testing.FakeQMPServer` in threaded mode (its own reactor
    in a daemon thread, listening on ``server.path``), closed after the test. It acts
    like an idle, paused QEMU 7.2; script it with ``server.on(...)``.

``qemu_process``
    A started :class:`~qmplex.qemu.QemuProcess` (a paused, display-less x86 machine with
    a connected ``.client``), stopped after the test. The test is skipped when QEMU is
    not installed, unless the environment sets ``QMPLEX_REQUIRE_QEMU=1`` (then it
    fails). ``QMPLEX_QEMU`` names another binary.

Per-test options go through a marker with the constructor's keyword arguments, or by
overriding the ``*_options`` fixture (a dict) in a ``conftest.py``::

    @pytest.mark.qmp_fake_server(unplug_delay=None)
    def test_unplug_never_completes(qmp_fake_server): ...

    @pytest.mark.qemu_process(extra_args=["-device", "virtio-scsi-pci,id=scsi0"])
    def test_scsi(qemu_process): ...

Example::

    import qmplex

    def test_reports_status(qmp_fake_server):
        qmp_fake_server.on("query-name", returns={"name": "vm1"})
        with qmplex.connect(qmp_fake_server.path, timeout=5) as client:
            assert client.execute("query-name").result(timeout=5) == {"name": "vm1"}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .testing import FakeQMPServer, fake_server

if TYPE_CHECKING:
    from .qemu import QemuProcess

__all__ = [
    "pytest_configure",
    "qemu_process",
    "qemu_process_options",
    "qmp_fake_server",
    "qmp_fake_server_options",
]


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin's markers (so ``--strict-markers`` accepts them)."""
    config.addinivalue_line(
        "markers", "qmp_fake_server(**kwargs): FakeQMPServer arguments for the "
        "qmp_fake_server fixture")
    config.addinivalue_line(
        "markers", "qemu_process(**kwargs): QemuProcess arguments for the qemu_process "
        "fixture")
    config.addinivalue_line("markers", "qemu: needs a real qemu-system-x86_64")


def _marker_kwargs(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    # Closest last: a test's marker overrides its class's and module's.
    for marker in reversed(list(request.node.iter_markers(name))):
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{name} takes keyword arguments only")
        kwargs.update(marker.kwargs)
    return kwargs


@pytest.fixture
def qmp_fake_server_options() -> dict[str, Any]:
    """Keyword arguments for :class:`~qmplex.testing.FakeQMPServer` (default none).

    Override this fixture to configure every ``qmp_fake_server`` in a scope; a
    ``@pytest.mark.qmp_fake_server(...)`` marker adds to (and wins over) it.
    """
    return {}


@pytest.fixture
def qmp_fake_server(
    request: pytest.FixtureRequest, qmp_fake_server_options: dict[str, Any]
) -> Iterator[FakeQMPServer]:
    """A started fake QMP server (threaded mode), closed after the test.

    Connect to ``qmp_fake_server.path``; assert on ``qmp_fake_server.commands()`` or
    ``.received``.
    """
    kwargs = {**qmp_fake_server_options, **_marker_kwargs(request, "qmp_fake_server")}
    kwargs.pop("reactor", None)  # threaded mode: the server runs its own reactor
    with fake_server(**kwargs) as server:
        yield server


@pytest.fixture
def qemu_process_options() -> dict[str, Any]:
    """Keyword arguments for :class:`~qmplex.qemu.QemuProcess` (default none).

    Override this fixture to configure every ``qemu_process`` in a scope; a
    ``@pytest.mark.qemu_process(...)`` marker adds to (and wins over) it. A
    ``binary`` given here replaces the one found on ``PATH``.
    """
    return {}


@pytest.fixture
def qemu_process(
    request: pytest.FixtureRequest, qemu_process_options: dict[str, Any]
) -> Iterator[QemuProcess]:
    """A started QEMU (paused, no display, connected ``.client``), stopped after the test.

    Skipped when QEMU is not installed, unless ``QMPLEX_REQUIRE_QEMU=1`` (then an
    error).
    """
    from .qemu import QemuProcess, qemu_or_skip

    kwargs = {**qemu_process_options, **_marker_kwargs(request, "qemu_process")}
    binary = kwargs.pop("binary", None) or qemu_or_skip()
    with QemuProcess(binary, **kwargs) as vm:
        yield vm
