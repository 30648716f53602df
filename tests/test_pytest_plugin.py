"""qmplex.pytest_plugin, used the way a user would: pytester runs small test files
that ask for ``qmp_fake_server`` and ``qemu_process``."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import pytest
import qmplex
from qmplex.testing import FakeQMPServer


def test_fake_server_is_started(qmp_fake_server):
    assert isinstance(qmp_fake_server, FakeQMPServer)
    qmp_fake_server.on("query-name", returns={"name": "vm1"})
    with qmplex.connect(qmp_fake_server.path, timeout=5) as client:
        assert client.execute("query-name").result(timeout=5) == {"name": "vm1"}
    assert qmp_fake_server.commands() == ["qmp_capabilities", "query-name"]


def test_each_test_gets_a_fresh_server(qmp_fake_server):
    assert qmp_fake_server.commands() == []


@pytest.mark.qmp_fake_server(unplug_delay=None, version=(8, 0, 1))
def test_marker_passes_options(qmp_fake_server):
    assert qmp_fake_server.unplug_delay is None
    with qmplex.connect(qmp_fake_server.path, timeout=5) as client:
        assert str(client.version) == "8.0.1"


SERVERS = []


def test_remember(qmp_fake_server):
    SERVERS.append(qmp_fake_server)


def test_previous_server_was_closed():
    assert SERVERS and SERVERS[0].closed
'''

CONFTEST_OPTIONS = '''
import pytest

@pytest.fixture
def qmp_fake_server_options():
    return {"package": "from-conftest", "unplug_delay": 0.5}
'''

USER_TEST_OPTIONS = '''
import pytest
import qmplex

@pytest.mark.qmp_fake_server(unplug_delay=None)
def test_options(qmp_fake_server):
    assert qmp_fake_server.package == "from-conftest"
    assert qmp_fake_server.unplug_delay is None  # the marker wins
'''

USER_TEST_QEMU = '''
def test_qemu(qemu_process):
    status = qemu_process.client.execute("query-status").result(timeout=10)
    assert status["status"] == "prelaunch"
'''


@pytest.fixture
def plugin_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Load the plugin by name only, whether or not its entry point is installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("QMPLEX_REQUIRE_QEMU", raising=False)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "qmplex.pytest_plugin", "-p", "no:cacheprovider", *args)


def test_qmp_fake_server_fixture(plugin_run: pytest.Pytester) -> None:
    plugin_run.makepyfile(test_user=USER_TESTS)
    result = _run(plugin_run, "--strict-markers")
    result.assert_outcomes(passed=5)


def test_options_fixture_and_marker(plugin_run: pytest.Pytester) -> None:
    plugin_run.makeconftest(CONFTEST_OPTIONS)
    plugin_run.makepyfile(test_user=USER_TEST_OPTIONS)
    _run(plugin_run).assert_outcomes(passed=1)


def test_marker_with_positional_arguments_is_an_error(plugin_run: pytest.Pytester) -> None:
    plugin_run.makepyfile(test_user='''
import pytest

@pytest.mark.qmp_fake_server("oops")
def test_bad(qmp_fake_server):
    pass
''')
    result = _run(plugin_run)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*takes keyword arguments only*"])


def test_qemu_process_skips_without_qemu(plugin_run: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMPLEX_QEMU", "/nonexistent/qemu-system-x86_64")
    plugin_run.makepyfile(test_user=USER_TEST_QEMU)
    result = _run(plugin_run, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*qemu-system-x86_64 not found*"])


def test_qemu_process_fails_without_qemu_when_required(
        plugin_run: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMPLEX_QEMU", "/nonexistent/qemu-system-x86_64")
    monkeypatch.setenv("QMPLEX_REQUIRE_QEMU", "1")
    plugin_run.makepyfile(test_user=USER_TEST_QEMU)
    result = _run(plugin_run)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*QMPLEX_REQUIRE_QEMU=1 requires QEMU*"])


@pytest.mark.qemu
def test_qemu_process_fixture_runs_real_qemu(plugin_run: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from qmplex.qemu import qemu_or_skip

    qemu_or_skip()
    plugin_run.makepyfile(test_user=USER_TEST_QEMU + '''

import pytest

@pytest.mark.qemu_process(extra_args=["-device", "virtio-scsi-pci,id=scsi0"])
def test_qemu_with_scsi(qemu_process):
    client = qemu_process.client
    client.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"}).result(10)
    client.execute("device_add", {"driver": "scsi-hd", "id": "d0", "drive": "n0",
                                  "bus": "scsi0.0"}).result(10)
''')
    _run(plugin_run).assert_outcomes(passed=2)


def test_entry_point_points_at_the_plugin() -> None:
    try:
        dist = importlib.metadata.distribution("qmplex")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("qmplex is not installed (running from a source tree)")
    plugins = [ep for ep in dist.entry_points if ep.group == "pytest11"]
    if not plugins and dist.read_text("RECORD") is None:
        pytest.skip("qmplex metadata comes from a stale development egg-info")
    assert [(ep.name, ep.value) for ep in plugins] == [("qmplex", "qmplex.pytest_plugin")]
