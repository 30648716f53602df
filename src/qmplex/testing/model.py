"""The simulated QEMU 7.2 behind the fake server: its state and its built-in commands.

:class:`QemuModel` is an idle, paused QEMU 7.2 (``-S``) as QMP sees it: the run state
(``stop``, ``cont``, ``system_reset``, ``quit``...), block nodes, netdevs, chardevs
and user-created objects (one table each), devices with ``DEVICE_DELETED`` after
``device_del``, hot-pluggable CPUs, file descriptors and fd sets, the human monitor's
few commands, QOM, and migration with its events. The error classes and descriptions
are the ones a real QEMU 7.2 returns (``tests/test_testing.py`` compares the two when
QEMU is installed); input validation is limited to required arguments.

A built-in handler takes a :class:`Call` and returns the ``"return"`` value or raises
:class:`~qmplex.testing.script.FakeCommandError`. The model never sees sockets,
sessions or threads: it sends events, schedules its later steps (``DEVICE_DELETED``,
migration) and ends every connection on ``quit`` through the callbacks the server
gives it, and runs only on the server's reactor thread.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .script import FakeCommandError, generic_error

__all__ = [
    "DEFAULT_UNPLUG_DELAY",
    "QEMU_OOB_COMMANDS",
    "Call",
    "QemuModel",
    "required",
]

#: Commands that QEMU 7.2 allows with ``exec-oob`` (QMP-NOTES.md).
QEMU_OOB_COMMANDS: Final = frozenset({"migrate-pause", "migrate-recover", "query-yank", "yank"})

#: Seconds between a ``device_del`` reply and its ``DEVICE_DELETED`` event.
DEFAULT_UNPLUG_DELAY: Final = 0.001

_CPU_TYPE: Final = "qemu64-x86_64-cpu"
_MIGRATION_CAPABILITIES: Final = (
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
)  # fmt: skip
_HMP_COMMANDS: Final = frozenset(
    {"info", "help", "?", "stop", "cont", "c", "system_reset", "system_powerdown", "quit", "q"}
)

#: ``emit(name, data)``: send an event to every negotiated client (data None: no member).
Emit = Callable[[str, Mapping[str, Any] | None], None]
#: ``later(delay, fn, *args)``: call ``fn(*args)`` on the reactor after ``delay`` seconds
#: (cancelled when the server closes).
Later = Callable[..., None]


def required(args: Mapping[str, Any], name: str) -> Any:
    """Return a required argument, or fail like QEMU's argument visitor."""
    try:
        return args[name]
    except KeyError:
        raise generic_error(f"Parameter '{name}' is missing") from None


@dataclass(slots=True)
class Call:
    """A command being executed by a built-in handler."""

    args: dict[str, Any]
    fds: collections.deque[int]  # the connection's received descriptors, not yet claimed
    after: list[Callable[[], None]] = field(default_factory=list)  # run after the reply


class _Device:
    __slots__ = ("key", "driver", "path", "args", "cpu_slot")

    def __init__(self, key: str, args: dict[str, Any], cpu_slot: int | None) -> None:
        self.key = key  # the id, or the QOM path of a device added without one
        self.driver: str = args["driver"]
        self.path = key if key.startswith("/") else f"/machine/peripheral/{key}"
        self.args = args
        self.cpu_slot = cpu_slot

@dataclass(frozen=True, slots=True)
class _Table:
    """A named-object table (block nodes, netdevs, ...): its commands and QEMU's errors."""

    kind: str
    add: str
    remove: str
    key: str
    required: tuple[str, ...]  # arguments checked before the key, in order
    duplicate: str
    not_found: tuple[str, str]
    busy: str | None  # None: QEMU removes it even while a device uses it


_TABLES: Final = (
    _Table("block", "blockdev-add", "blockdev-del", "node-name", ("driver",),
           "Duplicate nodes with node-name='{}'",
           ("GenericError", "Failed to find node with node-name='{}'"), "Node {} is in use"),
    _Table("netdev", "netdev_add", "netdev_del", "id", ("type",),
           "Duplicate ID '{}'", ("DeviceNotFound", "Device '{}' not found"), None),
    _Table("chardev", "chardev-add", "chardev-remove", "id", (),
           "Chardev with id '{}' already exists",
           ("GenericError", "Chardev '{}' not found"), "Chardev '{}' is busy"),
    _Table("object", "object-add", "object-del", "id", ("qom-type",),
           "attempt to add duplicate property '{}' to object (type 'container')",
           ("GenericError", "object '{}' not found"), "object '{}' is in use, can not be deleted"),
)  # fmt: skip

# device_add properties that name a table entry, the table, and QEMU's error when the
# entry already serves another device ({driver}, {prop}, {value}, {holder}, {device}).
_DEVICE_REFS: Final = {
    "drive": ("block",
              "Permission conflict on node '{value}': permissions 'write' are both required "
              "by block device '{holder}' (uses node '{value}' as 'root' child) and unshared "
              "by block device '{device}' (uses node '{value}' as 'root' child)."),
    "netdev": ("netdev", "Property '{driver}.{prop}' can't take value '{value}', it's in use"),
    "chardev": ("chardev",
                "Property '{driver}.{prop}' can't take value '{value}': "
                "Device '{value}' is in use"),
    "memdev": ("object", "can't use already busy memdev: {value}"),
}  # fmt: skip


def _unplug_children(device: _Device) -> list[str]:
    """QOM paths of the child devices QEMU reports (children first) when unplugging."""
    name = device.path.rsplit("/", 1)[-1]
    if device.driver == "usb-storage":
        return [f"{device.path}/{name}.0/legacy[0]"]
    if device.driver.startswith("virtio-") and device.driver.endswith("-pci"):
        return [f"{device.path}/virtio-backend"]
    return []


class QemuModel:
    """The state and the built-in commands of an idle, paused QEMU 7.2.

    Args:
        version: QEMU's (major, minor, micro), for ``query-version`` and HMP.
        package: the ``package`` string of ``query-version``.
        unplug_delay: seconds between a ``device_del`` reply and ``DEVICE_DELETED``;
            None: unplug never completes (like a PCI device without a guest).
        migrate_delay: seconds between the steps of a migration.
        max_cpus: CPU slots (sockets); slot 0 is present.
        emit: sends an event to every negotiated client.
        later: schedules a later step on the reactor.
        quit: ends every connection once its pending output is written.
        commands: the names of every command the server knows (``query-commands``).

    ``version``, ``package``, ``unplug_delay``, ``migrate_delay`` and ``run_state`` are
    attributes (the server's properties of the same names), read when a command or a
    step needs them.
    """

    def __init__(
        self,
        *,
        version: tuple[int, int, int],
        package: str,
        unplug_delay: float | None,
        migrate_delay: float,
        max_cpus: int,
        emit: Emit,
        later: Later,
        quit: Callable[[], None],
        commands: Callable[[], Collection[str]],
    ) -> None:
        self.version = version
        self.package = package
        self.unplug_delay = unplug_delay
        self.migrate_delay = migrate_delay
        self._emit = emit
        self._later = later
        self._quit = quit
        self._commands = commands
        self.run_state = "prelaunch"
        # Named objects by table ("block", "netdev", "chardev", "object"):
        # name -> the arguments that added it.
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t.kind: {} for t in _TABLES}
        self._users: dict[tuple[str, str], _Device] = {}  # (table, name) -> its device
        self._devices: dict[str, _Device] = {}
        self._anon_devices = 0
        self._cpus: dict[int, str] = {0: "/machine/unattached/device[0]"}  # slot -> path
        self._max_cpus = max_cpus
        self._fdnames: dict[str, int] = {}
        self._fdsets: dict[int, list[int]] = {}
        self._qom_props: dict[str, dict[str, Any]] = {}
        self._migration_caps: dict[str, bool] = dict.fromkeys(_MIGRATION_CAPABILITIES, False)
        self._migration_status: str | None = None

    def device_args(self) -> dict[str, dict[str, Any]]:
        """Devices: id (QOM path if added without one) -> ``device_add`` arguments."""
        return {key: dev.args for key, dev in self._devices.items()}

    # ------------------------------------------------------- built-in commands
    def handlers(self) -> dict[str, Callable[[Call], Any]]:
        """The built-in commands (``qmp_capabilities`` aside), by name."""
        handlers: dict[str, Callable[[Call], Any]] = {
            "query-status": self._cmd_query_status,
            "query-version": self._cmd_query_version,
            "query-commands": self._cmd_query_commands,
            "query-name": lambda call: {},
            "stop": self._cmd_stop,
            "cont": self._cmd_cont,
            "system_reset": self._cmd_system_reset,
            "system_powerdown": self._cmd_system_powerdown,
            "quit": self._cmd_quit,
            "device_add": self._cmd_device_add,
            "device_del": self._cmd_device_del,
            "query-named-block-nodes": self._cmd_query_named_block_nodes,
            "query-hotpluggable-cpus": self._cmd_query_hotpluggable_cpus,
            "query-cpus-fast": self._cmd_query_cpus_fast,
            "getfd": self._cmd_getfd,
            "closefd": self._cmd_closefd,
            "add-fd": self._cmd_add_fd,
            "remove-fd": self._cmd_remove_fd,
            "query-fdsets": self._cmd_query_fdsets,
            "human-monitor-command": self._cmd_human_monitor_command,
            "qom-list": self._cmd_qom_list,
            "qom-get": self._cmd_qom_get,
            "qom-set": self._cmd_qom_set,
            "migrate-set-capabilities": self._cmd_migrate_set_capabilities,
            "query-migrate-capabilities": self._cmd_query_migrate_capabilities,
            "migrate": self._cmd_migrate,
            "query-migrate": self._cmd_query_migrate,
            "yank": lambda call: {},
            "query-yank": lambda call: [{"type": "chardev", "id": "compat_monitor0"}],
        }
        for table in _TABLES:
            handlers[table.add] = functools.partial(self._cmd_table_add, table)
            handlers[table.remove] = functools.partial(self._cmd_table_remove, table)
        return handlers

    def _cmd_query_status(self, call: Call) -> Any:
        state = self.run_state
        return {"status": state, "singlestep": False, "running": state == "running"}

    def _cmd_query_version(self, call: Call) -> Any:
        major, minor, micro = self.version
        return {"qemu": {"micro": micro, "minor": minor, "major": major},
                "package": self.package}

    def _cmd_query_commands(self, call: Call) -> Any:
        return [{"name": name} for name in sorted(set(self._commands()))]

    def _cmd_stop(self, call: Call) -> Any:
        # QEMU sends STOP only when the guest was running; "prelaunch" stays as it is.
        if self.run_state == "running":
            self.run_state = "paused"
            self._emit("STOP", None)
        return {}

    def _cmd_cont(self, call: Call) -> Any:
        if self.run_state != "running":
            self.run_state = "running"
            self._emit("RESUME", None)
        return {}

    def _cmd_system_reset(self, call: Call) -> Any:
        self._emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        return {}

    def _cmd_system_powerdown(self, call: Call) -> Any:
        self._emit("POWERDOWN", None)
        return {}

    def _cmd_quit(self, call: Call) -> Any:
        self._emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        call.after.append(self._quit)  # QEMU exits once the reply is written
        return {}

    # Named-object tables: block nodes, netdevs, chardevs, objects.
    def _cmd_table_add(self, table: _Table, call: Call) -> Any:
        args = call.args
        for name in table.required:
            required(args, name)
        if table.key not in args:
            if table.kind == "block":
                raise generic_error("'node-name' must be specified for the root node")
            required(args, table.key)
        if table.kind == "chardev":
            required(args, "backend")
        key = args[table.key]
        entries = self.tables[table.kind]
        if key in entries:
            raise generic_error(table.duplicate.format(key))
        entries[key] = args
        return {}

    def _cmd_table_remove(self, table: _Table, call: Call) -> Any:
        key = required(call.args, table.key)
        entries = self.tables[table.kind]
        if key not in entries:
            raise FakeCommandError(table.not_found[0], table.not_found[1].format(key))
        if (table.kind, key) in self._users:
            if table.busy is not None:
                raise generic_error(table.busy.format(key))
            del self._users[table.kind, key]
        del entries[key]
        return {}

    def _cmd_query_named_block_nodes(self, call: Call) -> Any:
        return [{"node-name": name, "drv": args.get("driver"), "ro": bool(args.get("read-only")),
                 "encrypted": False, "file": args.get("filename", f"{args.get('driver')}://")}
                for name, args in self.tables["block"].items()]

    # Devices.
    def _cmd_device_add(self, call: Call) -> Any:
        args = call.args
        driver = required(args, "driver")
        dev_id = args.get("id")
        if dev_id is not None and dev_id in self._devices:
            raise generic_error(f"Duplicate device ID '{dev_id}'")
        key = dev_id if dev_id is not None else (
            f"/machine/peripheral-anon/device[{self._anon_devices}]")
        refs: list[tuple[str, str]] = []
        for prop, (kind, in_use) in _DEVICE_REFS.items():
            value = args.get(prop)
            if value is None:
                continue
            if value not in self.tables[kind]:
                raise generic_error(f"Property '{driver}.{prop}' can't find value '{value}'")
            holder = self._users.get((kind, value))
            if holder is not None:
                raise generic_error(in_use.format(driver=driver, prop=prop, value=value,
                                                  holder=holder.key, device=key))
            refs.append((kind, value))
        cpu_slot = self._check_cpu_slot(args) if driver == _CPU_TYPE else None
        device = _Device(key, dict(args), cpu_slot)
        if dev_id is None:
            self._anon_devices += 1
        self._devices[key] = device
        for ref in refs:
            self._users[ref] = device
        if cpu_slot is not None:
            self._cpus[cpu_slot] = device.path
        return {}

    def _check_cpu_slot(self, args: Mapping[str, Any]) -> int:
        socket_id = args.get("socket-id")
        if socket_id is None:
            raise generic_error("CPU socket-id is not set")
        for prop, value, top in (("socket-id", socket_id, self._max_cpus - 1),
                                 ("core-id", args.get("core-id", 0), 0),
                                 ("thread-id", args.get("thread-id", 0), 0)):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise generic_error(f"Invalid CPU {prop}: {value} must be in range 0:{top}")
        if socket_id in self._cpus:
            raise generic_error(f"CPU[{socket_id}] with APIC ID {socket_id} exists")
        return int(socket_id)

    def _cmd_device_del(self, call: Call) -> Any:
        dev_id = required(call.args, "id")
        key = dev_id
        if isinstance(dev_id, str) and dev_id.startswith("/machine/peripheral/"):
            key = dev_id[len("/machine/peripheral/"):]
        device = self._devices.get(key)
        if device is None:
            raise FakeCommandError("DeviceNotFound", f"Device '{dev_id}' not found")
        if self.unplug_delay is None:
            return {}  # the unplug request stays pending, as without a guest
        # QEMU frees the ID at once; the drive stays in use until DEVICE_DELETED.
        del self._devices[key]
        self._later(self.unplug_delay, self._unplugged, device)
        return {}

    def _unplugged(self, device: _Device) -> None:
        for ref, holder in list(self._users.items()):
            if holder is device:
                del self._users[ref]
        if device.cpu_slot is not None:
            self._cpus.pop(device.cpu_slot, None)
        for child in _unplug_children(device):
            self._emit("DEVICE_DELETED", {"path": child})
        if device.key.startswith("/"):
            self._emit("DEVICE_DELETED", {"path": device.path})
        else:
            self._emit("DEVICE_DELETED", {"device": device.key, "path": device.path})

    # CPUs.
    def _cmd_query_hotpluggable_cpus(self, call: Call) -> Any:
        cpus = []
        for slot in reversed(range(self._max_cpus)):
            cpu: dict[str, Any] = {
                "props": {"core-id": 0, "thread-id": 0, "socket-id": slot},
                "vcpus-count": 1,
            }
            if slot in self._cpus:
                cpu["qom-path"] = self._cpus[slot]
            cpu["type"] = _CPU_TYPE
            cpus.append(cpu)
        return cpus

    def _cmd_query_cpus_fast(self, call: Call) -> Any:
        return [{"thread-id": os.getpid() + slot,
                 "props": {"core-id": 0, "thread-id": 0, "socket-id": slot},
                 "qom-path": path, "cpu-index": slot, "target": "x86_64"}
                for slot, path in sorted(self._cpus.items())]

    # File descriptors.
    def _take_fd(self, call: Call) -> int:
        if not call.fds:
            raise generic_error("No file descriptor supplied via SCM_RIGHTS")
        return call.fds.popleft()

    def _cmd_getfd(self, call: Call) -> Any:
        name = required(call.args, "fdname")
        self._fdnames[name] = self._take_fd(call)
        return {}

    def _cmd_closefd(self, call: Call) -> Any:
        name = required(call.args, "fdname")
        if self._fdnames.pop(name, None) is None:
            raise generic_error(f"File descriptor named '{name}' not found")
        return {}  # the descriptor stays open in received_fds until close()

    def _cmd_add_fd(self, call: Call) -> Any:
        fdset_id = call.args.get("fdset-id")
        fd = self._take_fd(call)
        if fdset_id is None:
            fdset_id = next(i for i in range(len(self._fdsets) + 1) if i not in self._fdsets)
        self._fdsets.setdefault(fdset_id, []).append(fd)
        return {"fd": fd, "fdset-id": fdset_id}

    def _cmd_remove_fd(self, call: Call) -> Any:
        fdset_id = required(call.args, "fdset-id")
        fd = call.args.get("fd")
        fds = self._fdsets.get(fdset_id, [])
        if fd is None and fds:
            del self._fdsets[fdset_id]
            return {}
        if fd is not None and fd in fds:
            fds.remove(fd)
            if not fds:
                del self._fdsets[fdset_id]
            return {}
        where = f"fdset-id:{fdset_id}" + ("" if fd is None else f", fd:{fd}")
        raise generic_error(f"File descriptor named '{where}' not found")

    def _cmd_query_fdsets(self, call: Call) -> Any:
        return [{"fds": [{"fd": fd} for fd in fds], "fdset-id": fdset_id}
                for fdset_id, fds in sorted(self._fdsets.items())]

    # Human monitor.
    def _cmd_human_monitor_command(self, call: Call) -> Any:
        line = str(required(call.args, "command-line")).strip()
        words = line.split()
        if not words:
            return ""
        if words[0] not in _HMP_COMMANDS:
            return f"unknown command: '{words[0]}'\r\n"
        if words[:2] == ["info", "status"]:
            state = self.run_state
            if state in ("running", "paused"):
                return f"VM status: {state}\r\n"
            return f"VM status: paused ({state})\r\n"
        if words[:2] == ["info", "version"]:
            major, minor, micro = self.version
            return f"{major}.{minor}.{micro}{self.package}\r\n"
        simple = {"stop": self._cmd_stop, "cont": self._cmd_cont, "c": self._cmd_cont,
                  "system_reset": self._cmd_system_reset,
                  "system_powerdown": self._cmd_system_powerdown,
                  "quit": self._cmd_quit, "q": self._cmd_quit}
        if words[0] in simple:
            simple[words[0]](call)
        return ""

    # QOM.
    def _qom_type(self, path: str) -> str:
        """Return the QOM type at ``path``, or fail like QEMU."""
        path = path.rstrip("/") or "/"
        if path == "/machine":
            return "pc-i440fx-7.2-machine"
        if path in ("/", "/objects", "/machine/peripheral", "/machine/peripheral-anon",
                    "/machine/unattached"):
            return "container"
        for device in self._devices.values():
            if device.path == path:
                return device.driver
        if path.startswith("/objects/") and path[9:] in self.tables["object"]:
            return str(self.tables["object"][path[9:]]["qom-type"])
        raise FakeCommandError("DeviceNotFound", f"Device '{path}' not found")

    def _cmd_qom_list(self, call: Call) -> Any:
        path = str(required(call.args, "path")).rstrip("/") or "/"
        self._qom_type(path)
        props = [{"name": "type", "type": "string"}]
        if path == "/machine/peripheral":
            props += [{"name": d.key, "type": f"child<{d.driver}>"}
                      for d in self._devices.values() if not d.key.startswith("/")]
        elif path == "/machine/peripheral-anon":
            props += [{"name": d.key.rsplit("/", 1)[1], "type": f"child<{d.driver}>"}
                      for d in self._devices.values() if d.key.startswith("/")]
        elif path == "/objects":
            props += [{"name": key, "type": f"child<{args['qom-type']}>"}
                      for key, args in self.tables["object"].items()]
        elif path == "/machine":
            props += [{"name": name, "type": "child<container>"}
                      for name in ("peripheral", "peripheral-anon", "unattached")]
        elif path.startswith("/machine/"):
            props += [{"name": "realized", "type": "bool"},
                      {"name": "hotplugged", "type": "bool"},
                      {"name": "hotpluggable", "type": "bool"},
                      {"name": "parent_bus", "type": "link<bus>"}]
        props += [{"name": name, "type": type(value).__name__}
                  for name, value in self._qom_props.get(path, {}).items()
                  if name not in {p["name"] for p in props}]
        return props

    def _cmd_qom_get(self, call: Call) -> Any:
        path = str(required(call.args, "path")).rstrip("/") or "/"
        prop = required(call.args, "property")
        qom_type = self._qom_type(path)
        props = self._qom_props.get(path, {})
        if prop in props:
            return props[prop]
        if prop == "type":
            return qom_type
        device = next((d for d in self._devices.values() if d.path == path), None)
        if device is not None:
            if prop in ("realized", "hotplugged", "hotpluggable"):
                return True
            if prop in device.args and prop not in ("driver", "id"):
                return device.args[prop]
        raise generic_error(f"Property '{qom_type}.{prop}' not found")

    def _cmd_qom_set(self, call: Call) -> Any:
        path = str(required(call.args, "path")).rstrip("/") or "/"
        prop = required(call.args, "property")
        value = required(call.args, "value")
        self._qom_type(path)
        self._qom_props.setdefault(path, {})[prop] = value
        return {}

    # Migration.
    def _cmd_migrate_set_capabilities(self, call: Call) -> Any:
        caps = required(call.args, "capabilities")
        for cap in caps:
            name = required(cap, "capability")
            if name not in self._migration_caps:
                raise generic_error(f"Parameter 'capability' does not accept value '{name}'")
        for cap in caps:
            self._migration_caps[cap["capability"]] = bool(required(cap, "state"))
        return {}

    def _cmd_query_migrate_capabilities(self, call: Call) -> Any:
        return [{"state": state, "capability": name}
                for name, state in self._migration_caps.items()]

    def _migration_event(self, status: str) -> None:
        self._migration_status = status
        if self._migration_caps["events"]:
            self._emit("MIGRATION", {"status": status})

    def _migration_pass(self, n: int) -> None:
        if self._migration_caps["events"]:
            self._emit("MIGRATION_PASS", {"pass": n})

    def _cmd_migrate(self, call: Call) -> Any:
        required(call.args, "uri")
        if self._migration_status in ("setup", "active"):
            raise generic_error("There's a migration process in progress")
        self._migration_event("setup")  # before the return, as QEMU does
        self._later(self.migrate_delay, self._migration_active)
        return {}

    def _migration_active(self) -> None:
        self._migration_pass(1)
        self._migration_event("active")
        self._later(self.migrate_delay, self._migration_completed)

    def _migration_completed(self) -> None:
        self._migration_pass(2)
        if self.run_state == "running":
            self._emit("STOP", None)
        self.run_state = "postmigrate"
        self._migration_event("completed")

    def _cmd_query_migrate(self, call: Call) -> Any:
        status = self._migration_status
        if status is None:
            return {}
        info: dict[str, Any] = {"status": status}
        if status == "completed":
            info.update({"setup-time": 0, "downtime": 0, "total-time": 0,
                         "ram": {"total": 67108864, "transferred": 0, "remaining": 0,
                                 "duplicate": 0, "normal": 0, "mbps": 0}})
        elif status == "active":
            info.update({"setup-time": 0, "total-time": 0,
                         "ram": {"total": 67108864, "transferred": 0,
                                 "remaining": 67108864, "duplicate": 0, "normal": 0,
                                 "mbps": 0}})
        return info

