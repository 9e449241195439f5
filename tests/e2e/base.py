"""Shared lab for the end-to-end tests.

The lab (two libvirt hosts and the shaped link) is started once and shared:
stestr may run these tests in several worker processes, so every test holds
an exclusive file lock on the lab while it runs, and the lab is stopped when
the last test class that registered itself has finished.  Tests skip, with
the reason, when not root or when the lab's packages are missing.
"""
from __future__ import annotations

import json
import os
import time
import typing
from pathlib import Path

import testtools
import testtools.content

from nova_livemig_lab import config as lab_config
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab import hosts, image, measure, network, system
from nova_livemig_lab.errors import LabError
from nova_livemig_lab.lock import LabLock, open_state_log

USERS_NAME = "e2e.users"
RESULTS_NAME = "e2e-results.jsonl"


def skip_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "e2e lab tests need root (namespaces, tc, libvirtd)"
    missing = system.missing_programs()
    if missing:
        return (f"lab packages missing ({', '.join(missing)}): run "
                "'python -m nova_livemig_lab setup'")
    try:
        system.require_libvirt_python()
    except LabError as exc:
        return str(exc)
    return None


def _users(path: Path) -> list[str]:
    try:
        entries = path.read_text().split()
    except OSError:
        return []
    return [entry for entry in entries if Path(f"/proc/{entry.split(':')[0]}").exists()]


class LabTestCase(testtools.TestCase):
    """Base class: the lab is up for every test; each test owns it exclusively."""

    cfg: typing.ClassVar[lab_config.LabConfig]
    _user_id: typing.ClassVar[str]
    # The libvirt daemons this class runs on (libvirt_build: None follows
    # NOVA_LIVEMIG_LAB_LIBVIRT); each test restarts the lab's daemons when
    # the previous test ran another build.
    LIBVIRT: typing.ClassVar[str | None] = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if skip_reason() is not None:
            return
        cls.cfg = lab_config.load_config(libvirt=cls.LIBVIRT)
        cls._user_id = f"{os.getpid()}:{cls.__name__}"
        with LabLock(cls.cfg):
            users_file = cls.cfg.state_dir / USERS_NAME
            users_file.write_text(" ".join(_users(users_file) + [cls._user_id]) + "\n")
            image.fetch_kernel(cls.cfg)
            image.build_initramfs(cls.cfg)
            image.ensure_mount_targets()
            hosts.start(cls.cfg)

    @classmethod
    def tearDownClass(cls) -> None:
        if skip_reason() is None and hasattr(cls, "_user_id"):
            with LabLock(cls.cfg):
                users_file = cls.cfg.state_dir / USERS_NAME
                remaining = [u for u in _users(users_file) if u != cls._user_id]
                users_file.write_text(" ".join(remaining) + "\n")
                if not remaining:
                    report = hosts.stop(cls.cfg)
                    if report["leftovers"]:
                        raise AssertionError(f"lab stop left behind: {report['leftovers']}")
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        reason = skip_reason()
        if reason is not None:
            self.skipTest(reason)
        lock = LabLock(self.cfg)
        lock.__enter__()
        self.addCleanup(lock.__exit__)
        # Another worker may have stopped the lab in between; start is idempotent.
        hosts.start(self.cfg)
        self.guests: list[lab_guest.Guest] = []
        self.addCleanup(self._destroy_guests)

    def _destroy_guests(self) -> None:
        for booted in self.guests:
            lab_guest.destroy(booted, self.cfg)

    def boot(self, dirty_mb: int, dirty_rate_mb_s: int,
             pattern: lab_guest.Pattern = lab_guest.STEADY) -> lab_guest.Guest:
        """Boot a fresh guest on host A (unique name: console files are per name)."""
        name = f"e2e-{self.id().rsplit('.', 1)[-1][5:]}-{int(time.time() * 1000) % 10**8}"
        booted = lab_guest.boot(self.cfg, self.cfg.host_a, name, dirty_mb, dirty_rate_mb_s,
                                pattern=pattern)
        self.guests.append(booted)
        return booted

    def report(self, **numbers: object) -> None:
        """Attach what the test measured, and append it to the lab's results log
        (``<state dir>/e2e-results.jsonl``): passing tests keep no details."""
        self.addDetail("measured", testtools.content.json_content(numbers))
        record = {"test": self.id(), "libvirt_build": self.cfg.libvirt.name,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **numbers}
        with open_state_log(self.cfg.state_dir / RESULTS_NAME) as out:
            out.write((json.dumps(record, default=str) + "\n").encode())

    def link_mb_s(self) -> float:
        return float(network.load_link_state(self.cfg)["measured_mb_s"])

    def assertIntact(self, result: measure.MigrationResult, host: str) -> None:
        """The guest runs on ``host``, zero bad pages, no panic; else the test fails."""
        report = result.integrity
        self.addDetail("summary", testtools.content.json_content(measure.summary(result)))
        self.assertEqual(host, report.host, f"guest runs on {report.host}, expected {host}")
        self.assertTrue(report.ok, f"guest integrity: {'; '.join(report.reasons)}")
        self.assertEqual(0, report.bad_pages)

    def assertNoQemu(self, host: lab_config.HostSpec, within_s: float) -> None:
        """No QEMU process left on ``host`` after at most ``within_s`` seconds."""
        deadline = time.monotonic() + within_s
        while hosts.qemu_pids(host) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.assertEqual([], hosts.qemu_pids(host),
                         f"stray QEMU left on host {host.name} after {within_s:.0f} s")
