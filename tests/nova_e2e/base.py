"""Live migrations through a real OpenStack, as an operator drives them.

The stack (tools/novastack: MariaDB, RabbitMQ, placement, nova-api, glance,
neutron API, conductor, scheduler) is started once; each test class starts
the two nova-compute services with the driver it tests against the lab's two
libvirtd hosts.  A class holds the lab lock from its first test to its last,
so nobody else boots guests or restarts libvirtd meanwhile.  Everything goes
through the REST APIs (compute, placement, image) with plain HTTP, as
openstacksdk or the CLI would send it; libvirt is only read (console file,
max downtime) or hit with a fault (a destination QEMU killed).

The guest is the lab guest: its console prints a heartbeat 10 times a second
with a count of pages whose contents changed behind its back.  Nova puts the
console in ``<instances_path>/<uuid>/console.log`` on storage both hosts
share; the destination QEMU truncates it when the migration starts and the
source QEMU keeps writing at its own offset, so :class:`ConsoleWatch` reads
the whole file each time and keeps every heartbeat line it has not seen yet.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import testtools
import testtools.content

from nova_livemig_lab import config as lab_config
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab import hosts, image, network
from nova_livemig_lab.lock import LabLock
from tests.e2e import base as lab_base

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "tools" / "novastack" / "stack.sh"
sys.path.insert(0, str(STACK_SH.parent))
import novastack  # noqa: E402

USERS_NAME = "novastack.users"
STACK_UP_TIMEOUT_S = 900
BOOT_TIMEOUT_S = 180.0
MIGRATION_TIMEOUT_S = 300.0
STEADY_HEARTBEATS = 10
# After the job ended: this long of heartbeats is judged for integrity.
SETTLE_S = 6.0
MIN_HEARTBEATS_PER_S = 3.0
FINAL_MIGRATION_STATES = ("completed", "error", "cancelled", "failed", "done")
SKIP_ENV = "NOVASTACK_E2E_SKIP"
DOMAIN_CLEANUP_S = 30.0
# One JSON line per test with its measurements, in the stack's log directory.
RESULTS_NAME = "nova-e2e-results.jsonl"


def skip_reason() -> str | None:
    reason = lab_base.skip_reason()
    if reason is not None:
        return reason
    if os.environ.get(SKIP_ENV):
        return f"{SKIP_ENV} is set"
    return None


@dataclasses.dataclass(frozen=True)
class Beat:
    """One heartbeat line and the host's monotonic time it first appeared."""

    seen_s: float
    seq: int
    bad_pages: int
    text: str


class ConsoleWatch:
    """Follow a Nova console.log that another QEMU may truncate or overwrite.

    Each poll reads the whole file (a few hundred KB at most) and records
    each line not seen before with the time it appeared; NUL bytes (the hole a
    writer leaves past a truncation) are dropped.  Heartbeats are told apart
    by their sequence number, so lines rewritten in place are not counted
    twice.
    """

    def __init__(self, path: Path, interval_s: float = 0.05) -> None:
        self.path = path
        self.interval_s = interval_s
        self._seen_lines: set[str] = set()
        self._beats: dict[int, Beat] = {}
        self._fatal: list[str] = []
        self._truncations = 0
        self._last_size = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"console-{path.parent.name}")

    def start(self) -> "ConsoleWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)

    def poll(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        now_s = time.monotonic()
        with self._lock:
            if len(data) < self._last_size:
                self._truncations += 1
            self._last_size = len(data)
            # The last piece may be a line still being written: not yet.
            for raw in data.replace(b"\0", b"\n").split(b"\n")[:-1]:
                text = raw.decode(errors="replace").strip("\r ")
                if not text or text in self._seen_lines:
                    continue
                self._seen_lines.add(text)
                match = lab_guest.HEARTBEAT_RE.match(text)
                if match is not None:
                    seq, bad = int(match.group(1)), int(match.group(2))
                    self._beats.setdefault(seq, Beat(now_s, seq, bad, text))
                elif lab_guest.is_fatal(text):
                    self._fatal.append(text)

    def beats(self) -> list[Beat]:
        with self._lock:
            return sorted(self._beats.values(), key=lambda beat: beat.seq)

    def fatal_lines(self) -> list[str]:
        with self._lock:
            return list(self._fatal)

    @property
    def truncations(self) -> int:
        return self._truncations

    def wait_steady(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.beats()) >= STEADY_HEARTBEATS:
                return
            time.sleep(0.2)
        raise AssertionError(f"no steady heartbeats in {self.path} within {timeout_s:.0f} s")

    def max_gap_s(self, start_s: float, end_s: float) -> float:
        """Longest time between heartbeats first seen inside [start_s, end_s]."""
        times = sorted(b.seen_s for b in self.beats() if start_s <= b.seen_s <= end_s)
        if len(times) < 2:
            return end_s - start_s
        return round(max(b - a for a, b in zip(times, times[1:])), 3)


@dataclasses.dataclass
class Server:
    id: str
    name: str
    console: ConsoleWatch


class NovaStackTestCase(testtools.TestCase):
    """The stack is up, both computes run ``DRIVER``, the lab lock is held."""

    DRIVER: typing.ClassVar[str] = "ext"
    COMPUTE_SETTINGS: typing.ClassVar[tuple[str, ...]] = ()
    # devstack variables for the plugin's post-config phase (LIVEMIG_EXT_*).
    PLUGIN_VARS: typing.ClassVar[tuple[str, ...]] = ()
    cfg: typing.ClassVar[lab_config.LabConfig]
    _lock: typing.ClassVar[LabLock | None] = None
    _user_id: typing.ClassVar[str]
    _class_skip: typing.ClassVar[str | None] = None
    timings: typing.ClassVar[dict[str, float]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._class_skip = skip_reason()
        if cls._class_skip is not None:
            return
        cls.cfg = lab_config.load_config()
        cls.timings = {}
        cls._user_id = f"{os.getpid()}:{cls.__name__}"
        # Installing (minutes on a fresh machine) needs no lab: before the lock.
        started = time.monotonic()
        proc = subprocess.run(["bash", str(STACK_SH), "install"], capture_output=True,
                              text=True, timeout=STACK_UP_TIMEOUT_S)
        cls.timings["stack_install_s"] = round(time.monotonic() - started, 1)
        if proc.returncode != 0:
            cls._class_skip = ("the OpenStack stack could not be installed: "
                               + (proc.stdout + proc.stderr)[-1500:])
            return
        cls._lock = LabLock(cls.cfg)
        cls._lock.__enter__()
        try:
            cls._register()
            started = time.monotonic()
            proc = subprocess.run(["bash", str(STACK_SH), "up", "--no-computes"],
                                  capture_output=True, text=True, timeout=STACK_UP_TIMEOUT_S)
            cls.timings["stack_up_s"] = round(time.monotonic() - started, 1)
            if proc.returncode != 0:
                raise AssertionError("the OpenStack control plane did not start:\n"
                                     + (proc.stdout + proc.stderr)[-3000:])
            image.fetch_kernel(cls.cfg)
            image.build_initramfs(cls.cfg)
            image.ensure_mount_targets()
            hosts.start(cls.cfg)
            cls.restart_computes(cls.DRIVER, cls.COMPUTE_SETTINGS, cls.PLUGIN_VARS)
        except BaseException:
            cls._cleanup_class()
            raise

    @classmethod
    def restart_computes(cls, driver: str, settings: typing.Sequence[str] = (),
                         plugin_vars: typing.Sequence[str] = ()) -> None:
        started = time.monotonic()
        cmd = ["bash", str(STACK_SH), "computes", "restart", "--driver", driver]
        for item in settings:
            cmd += ["--set", item]
        for item in plugin_vars:
            cmd += ["--var", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"computes did not start:\n{proc.stdout[-3000:]}"
                                 f"{proc.stderr[-3000:]}")
        cls.timings[f"computes_{driver}_s"] = round(time.monotonic() - started, 1)

    @classmethod
    def _register(cls) -> None:
        for name in (USERS_NAME, lab_base.USERS_NAME):
            users_file = cls.cfg.state_dir / name
            users = lab_base._users(users_file)
            users_file.write_text(" ".join(users + [cls._user_id]) + "\n")

    @classmethod
    def _release(cls) -> None:
        if cls._lock is not None:
            cls._lock.__exit__()
            cls._lock = None

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._cleanup_class()
        finally:
            super().tearDownClass()

    @classmethod
    def _cleanup_class(cls) -> None:
        """Computes down; the stack and the lab too if nobody else uses them."""
        if cls._lock is not None:
            try:
                subprocess.run(["bash", str(STACK_SH), "computes", "down"],
                               capture_output=True, text=True, timeout=120)
                leftovers = []
                remaining = {}
                for name in (USERS_NAME, lab_base.USERS_NAME):
                    users_file = cls.cfg.state_dir / name
                    remaining[name] = [u for u in lab_base._users(users_file)
                                       if u != cls._user_id]
                    users_file.write_text(" ".join(remaining[name]) + "\n")
                if not remaining[USERS_NAME]:
                    proc = subprocess.run(["bash", str(STACK_SH), "down"],
                                          capture_output=True, text=True, timeout=300)
                    if proc.returncode != 0:
                        leftovers.append(f"stack down: {proc.stdout[-2000:]}")
                if not remaining[lab_base.USERS_NAME]:
                    report = hosts.stop(cls.cfg)
                    leftovers += [str(x) for x in report["leftovers"]]  # type: ignore
                if leftovers:
                    raise AssertionError(f"stack/lab stop left behind: {leftovers}")
            finally:
                cls._release()

    def setUp(self) -> None:
        super().setUp()
        if self._class_skip is not None:
            self.skipTest(self._class_skip)
        self.addDetail("class_timings_s", testtools.content.json_content(dict(self.timings)))
        self.servers: list[Server] = []
        self.addCleanup(self._delete_servers)
        self.log_offsets = {host.name: self._log_size(host) for host in self.cfg.hosts}
        self.addCleanup(self._attach_logs)

    # --- REST ---------------------------------------------------------------------

    def api(self, method: str, service: str, path: str, body: object = None,
            expect: tuple[int, ...] = (200, 201, 202, 204)) -> typing.Any:
        return novastack.api(method, service, path, body, expect=expect)

    def server(self, server_id: str) -> dict[str, typing.Any]:
        return typing.cast(dict[str, typing.Any],
                           self.api("GET", "nova-api", f"/v2.1/servers/{server_id}")["server"])

    def wait_server(self, server_id: str, status: str, timeout_s: float = BOOT_TIMEOUT_S,
                    task_state_none: bool = True) -> dict[str, typing.Any]:
        deadline = time.monotonic() + timeout_s
        info: dict[str, typing.Any] = {}
        while time.monotonic() < deadline:
            info = self.server(server_id)
            if info["status"] == "ERROR" and status != "ERROR":
                raise AssertionError(f"server {server_id} went to ERROR: {info.get('fault')}")
            if info["status"] == status and (
                    not task_state_none or info.get("OS-EXT-STS:task_state") is None):
                return info
            time.sleep(1)
        raise AssertionError(f"server {server_id} not {status} within {timeout_s:.0f} s: "
                             f"{info.get('status')} / {info.get('OS-EXT-STS:task_state')}")

    def boot(self, dirty_mb: int, dirty_rate_mb_s: int, flavor_id: str | None = None,
             host: lab_config.HostSpec | None = None) -> Server:
        """Boot the lab guest on ``host`` (default A) and wait for steady heartbeats."""
        host = host or self.cfg.host_a
        image_id = novastack.lab_image(dirty_mb, dirty_rate_mb_s)
        flavor_id = flavor_id or novastack.lab_flavor()
        name = f"{self.id().rsplit('.', 1)[-1][5:25]}-{int(time.time()) % 100000}"
        started = time.monotonic()
        created = self.api("POST", "nova-api", "/v2.1/servers", {"server": {
            "name": name, "imageRef": image_id, "flavorRef": flavor_id, "networks": "none",
            "host": host.hostname}})
        server_id = created["server"]["id"]
        console = ConsoleWatch(novastack.INSTANCES_PATH / server_id / "console.log").start()
        server = Server(server_id, name, console)
        self.servers.append(server)
        info = self.wait_server(server_id, "ACTIVE")
        self.assertEqual(host.hostname, info["OS-EXT-SRV-ATTR:host"])
        console.wait_steady(90)
        self.timings_add("boot_to_steady_s", time.monotonic() - started)
        return server

    def timings_add(self, key: str, value: float) -> None:
        self.addDetail(key, testtools.content.text_content(f"{value:.1f}"))

    def _delete_servers(self) -> None:
        for server in self.servers:
            server.console.stop()
            try:
                self.api("DELETE", "nova-api", f"/v2.1/servers/{server.id}",
                         expect=(204, 404))
            except novastack.StackError:
                continue
        deadline = time.monotonic() + 60
        for server in self.servers:
            while time.monotonic() < deadline:
                try:
                    self.api("GET", "nova-api", f"/v2.1/servers/{server.id}", expect=(200,))
                except novastack.StackError:
                    break
                time.sleep(1)
            # The next test counts QEMU processes: this one's must be gone.
            while self.domain_hosts(server) and time.monotonic() < deadline:
                time.sleep(0.5)

    # --- migrations -----------------------------------------------------------------

    def live_migrate(self, server: Server, host: lab_config.HostSpec) -> float:
        """POST os-migrateLive; returns the host time it was accepted."""
        self.api("POST", "nova-api", f"/v2.1/servers/{server.id}/action",
                 {"os-migrateLive": {"host": host.hostname, "block_migration": "auto"}})
        return time.monotonic()

    def migration(self, server: Server) -> dict[str, typing.Any] | None:
        """The newest live-migration record of this server."""
        found = self.api("GET", "nova-api",
                         f"/v2.1/os-migrations?instance_uuid={server.id}"
                         "&migration_type=live-migration")["migrations"]
        return max(found, key=lambda m: m["id"]) if found else None

    def wait_migration_status(self, server: Server, statuses: typing.Container[str],
                              timeout_s: float = MIGRATION_TIMEOUT_S
                              ) -> dict[str, typing.Any]:
        deadline = time.monotonic() + timeout_s
        record: dict[str, typing.Any] | None = None
        while time.monotonic() < deadline:
            record = self.migration(server)
            if record is not None and record["status"] in statuses:
                return record
            time.sleep(0.5)
        raise AssertionError(f"migration of {server.id} not in {statuses} within "
                             f"{timeout_s:.0f} s: {record}")

    def wait_migration_end(self, server: Server,
                           timeout_s: float = MIGRATION_TIMEOUT_S
                           ) -> tuple[dict[str, typing.Any], float]:
        """The final migration record and when its end was seen."""
        record = self.wait_migration_status(server, FINAL_MIGRATION_STATES, timeout_s)
        return record, time.monotonic()

    def allocations_by_host(self, server: Server) -> dict[str, dict[str, int]]:
        """Placement allocations of the server, keyed by resource provider name."""
        allocations = self.api("GET", "placement-api",
                               f"/allocations/{server.id}")["allocations"]
        named = {}
        for rp_uuid, entry in allocations.items():
            provider = self.api("GET", "placement-api", f"/resource_providers/{rp_uuid}")
            named[provider["name"]] = entry["resources"]
        return named

    # --- checks ---------------------------------------------------------------------

    def assertGuestIntact(self, server: Server, since_s: float) -> None:
        """Heartbeats keep coming after ``since_s``, no bad page, no panic."""
        time.sleep(SETTLE_S)
        beats = server.console.beats()
        after = [b for b in beats if b.seen_s >= since_s]
        self.assertGreaterEqual(
            len(after), MIN_HEARTBEATS_PER_S * SETTLE_S,
            f"only {len(after)} heartbeats in the {SETTLE_S:.0f} s after the job ended")
        self.assertEqual(0, max((b.bad_pages for b in beats), default=0),
                         "the guest counted bad pages")
        self.assertEqual([], server.console.fatal_lines())

    def assertRunsOn(self, server: Server, host: lab_config.HostSpec,
                     status: str = "ACTIVE") -> None:
        """Nova, libvirt and placement all say the server is on ``host``."""
        info = self.server(server.id)
        self.assertEqual(status, info["status"], info.get("fault"))
        self.assertEqual(host.hostname, info["OS-EXT-SRV-ATTR:host"])
        self.assertEqual(host.hostname, info["OS-EXT-SRV-ATTR:hypervisor_hostname"])
        self.assertDomainOnlyOn(server, host)
        allocations = self.allocations_by_host(server)
        self.assertEqual([host.hostname], sorted(allocations), allocations)
        self.assertEqual(novastack.GUEST_RAM_MIB, allocations[host.hostname]["MEMORY_MB"])

    def assertDomainOnlyOn(self, server: Server, host: lab_config.HostSpec | None,
                           within_s: float = DOMAIN_CLEANUP_S) -> None:
        """The domain runs on ``host`` alone (None: nowhere), once the other
        side has cleaned up (Nova tears the destination down after it
        records the migration's end)."""
        expected = [] if host is None else [host.name]
        started = time.monotonic()
        found = self.domain_hosts(server)
        while found != expected and time.monotonic() - started < within_s:
            time.sleep(0.5)
            found = self.domain_hosts(server)
        self.assertEqual(expected, found, f"domain of {server.id} after {within_s:.0f} s")
        self.cleanup_s = round(time.monotonic() - started, 1)

    def domain_hosts(self, server: Server) -> list[str]:
        """Lab hosts where the server's domain is active."""
        import libvirt
        found = []
        for host in self.cfg.hosts:
            conn = libvirt.open(host.uri)
            try:
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    if dom.UUIDString() == server.id:
                        found.append(host.name)
            finally:
                conn.close()
        return found

    def compute_log(self, host: lab_config.HostSpec) -> str:
        """nova-compute's log of ``host`` since this test started."""
        path = novastack.LOG_DIR / f"nova-compute-{host.name}.log"
        with open(path, "rb") as handle:
            handle.seek(self.log_offsets[host.name])
            return handle.read().decode(errors="replace")

    def _log_size(self, host: lab_config.HostSpec) -> int:
        try:
            return (novastack.LOG_DIR / f"nova-compute-{host.name}.log").stat().st_size
        except OSError:
            return 0

    def _attach_logs(self) -> None:
        for host in self.cfg.hosts:
            try:
                text = self.compute_log(host)
            except OSError as exc:
                text = f"cannot read the log: {exc}"
            lines = [line for line in text.splitlines()
                     if "nova-livemig-ext" in line or "Live migration" in line
                     or "ERROR" in line or "Migration running" in line]
            summary = (f"{len(text)} bytes logged since byte {self.log_offsets[host.name]}; "
                       f"{len(lines)} lines about migrations, the last 60:\n")
            self.addDetail(f"nova-compute-{host.name}-log", testtools.content.text_content(
                summary + "\n".join(lines[-60:])))

    def link_mb_s(self) -> float:
        return float(network.load_link_state(self.cfg)["measured_mb_s"])

    def report(self, **numbers: object) -> None:
        """Attach the test's measurements and append them to the stack's results log."""
        self.addDetail("measured", testtools.content.json_content(numbers))
        record = {"test": self.id(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "class_timings_s": self.timings, **numbers}
        with open(novastack.LOG_DIR / RESULTS_NAME, "a") as out:
            out.write(json.dumps(record, default=str) + "\n")


def summary_line(log_text: str) -> str | None:
    """Our driver's one-line summary of a migration, if it logged one."""
    match = re.search(r"nova-livemig-ext: live migration (\w+) in .*", log_text)
    return match.group(0) if match else None
