"""Faults after the switch to post-copy, with real migrations.

After the switch the guest runs on the destination while part of its
memory is still on the source. Whatever breaks then, the migration must end
with the guest complete on the destination, or with both halves kept for
``nova-livemig-ext recover``, which then completes it. Never a rollback, and
every page checked by the guest itself.

Faults: the link cut for a while (QEMU's stream survives it, libvirt's
connection does not); the link cut and QEMU's stream paused for real
(``abortJobFlags(VIR_DOMAIN_ABORT_JOB_POSTCOPY)``, QEMU's migrate-pause)
for longer than the recovery timeout; the process running the monitor
killed in pre-copy and in post-copy.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import testtools.content

from nova_livemig_ext import monitor, native, postcopy
from nova_livemig_ext.cmd import main as cmd_main
from nova_livemig_ext.cmd import recover
from nova_livemig_lab import chaos, controlled, demo, hosts, measure, network
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab.config import HostSpec, LabConfig
from tests.e2e import base

WORKING_SET_MB = demo.WORKING_SET_MB
DIRTY_RATE_MB_S = demo.DIRTY_RATE_MB_S
# Post-copy as the first rung: the busy guest reaches it after a few passes.
POLICY = demo.ours_policy().replace(ladder=("postcopy", "abort"))
FAULT_AFTER_SWITCH_S = 1.0
# Longer than libvirt's keepalive (2 s x 3) so that libvirt gives up on its
# peer, far shorter than TCP's retransmission limit so QEMU's stream lives.
SHORT_CUT_S = 15.0
# Past libvirt's keepalive too; QEMU's stream is reset, so it cannot heal.
LONG_CUT_S = 20.0
RECOVERY_TIMEOUT_S = 20
SETTLE_S = 6.0


# (state, reason) of a domain on a lab host, None when absent or unreachable.
source_state = chaos.domain_state


def libvirt_version(host: HostSpec) -> int:
    import libvirt
    conn = libvirt.open(host.uri)
    try:
        return int(conn.getLibVersion())
    finally:
        conn.close()


def run_recover(cfg: LabConfig, guest: lab_guest.Guest,
                timeout_s: int = 120) -> tuple[int, str]:
    """``nova-livemig-ext recover`` for a lab guest moving from A to B."""
    b = cfg.host_b
    argv = ["recover", guest.name, "--from", cfg.host_a.uri, "--to",
            measure.destination_uri(b, measure.flags_from_names(["PEER2PEER"])),
            "--dest-connect", b.uri, "--migrate-uri", b.migration_uri,
            "--listen-address", b.link_address, "--timeout", str(timeout_s)]
    if cfg.libvirt.resume_fixed:
        # The operator's nova.conf on a host whose libvirt carries the fix.
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
            conf.write("[livemig_ext]\npostcopy_resume = patched\n")
        argv += ["--config-file", conf.name]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = cmd_main.main(argv)
    finally:
        if "--config-file" in argv:
            os.unlink(argv[-1])
    return rc, out.getvalue()


class AfterSwitch:
    """Runs ``fault`` once, ``delay_s`` after the source enters post-copy.

    In a real OS thread: the test process may have been patched by eventlet
    (Nova's functional tests run in the same worker), and a green thread
    would never run while libvirt calls block the process.
    """

    def __init__(self, host: HostSpec, name: str, delay_s: float,
                 fault: Callable[[], None], give_up_s: float = 240.0) -> None:
        self._thread = native.threading_module().Thread(
            target=self.run, name="fault-after-switch", daemon=True)
        self.host, self.guest_name = host, name
        self.delay_s, self.fault, self.give_up_s = delay_s, fault, give_up_s
        self.switched_at: float | None = None
        self.injected_at: float | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def run(self) -> None:
        sleep = native.time_module().sleep
        deadline = time.monotonic() + self.give_up_s
        try:
            while time.monotonic() < deadline:
                state = source_state(self.host, self.guest_name)
                if state == (postcopy.VIR_DOMAIN_PAUSED, postcopy.VIR_DOMAIN_PAUSED_POSTCOPY):
                    self.switched_at = time.monotonic()
                    sleep(self.delay_s)
                    self.injected_at = time.monotonic()
                    self.fault()
                    return
                sleep(0.05)
        except BaseException as exc:  # reported by the test
            self.error = exc


def pause_postcopy(host: HostSpec, name: str) -> None:
    """QEMU's migrate-pause through libvirt: the stream is really broken."""
    import libvirt
    conn = libvirt.open(host.uri)
    try:
        conn.lookupByName(name).abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
    finally:
        conn.close()


class PostcopyFaultCase(base.LabTestCase):
    """Migrations of a busy guest with a fault injected after the switch."""

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(network.set_link_up, self.cfg, True)

    def migrate_with_fault(self, fault: Callable[[lab_guest.Guest], None],
                           policy: Any = POLICY
                           ) -> tuple[controlled.ControlledMigration, AfterSwitch,
                                      lab_guest.Guest]:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        injector = AfterSwitch(self.cfg.host_a, guest.name, FAULT_AFTER_SWITCH_S,
                               lambda: fault(guest))
        injector.start()
        done = controlled.migrate_with_policy(self.cfg, guest, policy, settle_s=SETTLE_S)
        injector.join(5)
        self.addDetail("summary", testtools.content.json_content(measure.summary(done.result)))
        self.addDetail("recovery", testtools.content.text_content(repr(done.report.recovery)))
        self.addDetail("decisions", testtools.content.text_content("\n".join(
            f"{a.decision.at_s:7.1f}s {a.decision.action.value} {a.decision.reason}"
            for a in done.report.decisions)))
        self.assertIsNone(injector.error)
        self.assertIsNotNone(injector.injected_at, "the migration never switched to post-copy")
        return done, injector, guest

    def assertCompletedIntact(self, done: controlled.ControlledMigration) -> None:
        self.assertIs(monitor.Outcome.COMPLETED, done.report.outcome, done.report.error)
        self.assertFalse(done.report.source_resumed)
        self.assertIntact(done.result, "b")
        self.assertNoQemu(self.cfg.host_a, within_s=20)

    def check_recovery_timeout(self) -> None:
        """The stream broken for longer than the recovery timeout.

        Both halves are kept with one clear error; then, on a libvirt whose
        resume works, ``recover`` completes the migration once the link is
        back; on one whose resume would crash the destination daemon,
        nothing ever sends a resume to it and both halves stay.
        """
        policy = POLICY.replace(postcopy_recovery_timeout_s=RECOVERY_TIMEOUT_S)

        def cut_and_pause(guest: lab_guest.Guest) -> None:
            network.set_link_up(self.cfg, False)
            pause_postcopy(self.cfg.host_a, guest.name)

        dest_daemon = hosts.daemon_pid(self.cfg.host_b)
        self.addDetail("libvirt", testtools.content.text_content(self.cfg.libvirt.name))
        done, injector, guest = self.migrate_with_fault(cut_and_pause, policy)
        self.assertIs(monitor.Outcome.NEEDS_RECOVERY, done.report.outcome, done.report.error)
        recovery = done.report.recovery
        assert recovery is not None
        self.assertGreaterEqual(recovery.waited_s, RECOVERY_TIMEOUT_S)
        # Both halves are still there: the source paused with the missing
        # pages, the destination running what arrived.
        self.assertEqual((postcopy.VIR_DOMAIN_PAUSED, postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),
                         source_state(self.cfg.host_a, guest.name))
        dest_state = source_state(self.cfg.host_b, guest.name)
        assert dest_state is not None, "the destination half is gone"
        self.assertEqual(postcopy.VIR_DOMAIN_RUNNING, dest_state[0])
        # The guest is stranded, not lost: both QEMUs still run.
        self.assertTrue(hosts.qemu_pids(self.cfg.host_a), "the source half is gone")
        self.assertTrue(hosts.qemu_pids(self.cfg.host_b), "the destination half is gone")
        self.assertEqual(dest_daemon, hosts.daemon_pid(self.cfg.host_b),
                         "the destination libvirtd was restarted or crashed")

        hazard = postcopy.resume_hazard(libvirt_version(self.cfg.host_b))
        if self.cfg.libvirt.resume_fixed:
            # The lab declared the fix (postcopy_resume = patched): the
            # monitor tried, and failed only because the link was down.
            self.assertGreater(recovery.resume_attempts, 0)
            self.assertIsNone(recovery.resume_withheld)
            network.set_link_up(self.cfg, True)
            restored_at = time.monotonic()
            rc, out = run_recover(self.cfg, guest)
            self.addDetail("recover", testtools.content.text_content(out))
            self.assertEqual(0, rc, out)
            self.assertIn("recovered: the guest runs on the destination", out)
            recovered_at = time.monotonic()
            time.sleep(SETTLE_S)
            integrity = measure.assess_integrity(guest.lines(), guest.heartbeats(), "b",
                                                 recovered_at, SETTLE_S)
            self.assertTrue(integrity.ok, integrity.reasons)
            self.assertEqual(0, integrity.bad_pages)
            self.assertNoQemu(self.cfg.host_a, within_s=30)
            assert injector.injected_at is not None
            gap_s, _ = measure.max_gap(guest.heartbeats(), injector.injected_at,
                                       recovered_at + SETTLE_S)
            self.report(case="3b: link down past the recovery timeout, then recover",
                        outage_s=round(restored_at - injector.injected_at, 1),
                        monitor_resume_attempts=recovery.resume_attempts,
                        recover_after_link_back_s=round(recovered_at - restored_at, 1),
                        longest_guest_pause_s=round(gap_s, 2),
                        bad_pages=integrity.bad_pages)
            return
        # Debian's 11.3.0: neither the monitor nor recover sends a resume,
        # and the destination daemon still runs.
        assert hazard is not None
        self.assertEqual(0, recovery.resume_attempts)
        self.assertEqual(hazard, recovery.resume_withheld)
        rc, out = run_recover(self.cfg, guest, timeout_s=10)
        self.addDetail("recover", testtools.content.text_content(out))
        self.assertEqual(recover.EXIT_NOT_RECOVERED, rc, out)
        self.assertIn("no resume was tried because libvirt 11.3.0", out)
        self.assertNotIn("resuming: migrateToURI3", out)
        self.assertEqual(dest_daemon, hosts.daemon_pid(self.cfg.host_b),
                         "the destination libvirtd was restarted or crashed")
        self.assertTrue(hosts.qemu_pids(self.cfg.host_b), "the destination half is gone")
        self.report(case="3b on a libvirt whose resume crashes: nothing sent",
                    waited_s=round(recovery.waited_s, 1), resume_attempts=0,
                    destination_daemon_pid_kept=True, recover_exit=rc)

    def recover(self, guest: lab_guest.Guest) -> tuple[int, str]:
        return run_recover(self.cfg, guest)


class TestPostcopyFaults(PostcopyFaultCase):
    """On the lab's default libvirt (the patched build when it is built)."""

    def test_stream_reset_then_link_back_resumes(self) -> None:
        """QEMU's stream reset and the link down past libvirt's keepalive:
        the monitor resumes once the link is back; the guest completes."""
        if not self.cfg.libvirt.resume_fixed:
            self.skipTest(f"{self.cfg.libvirt.name}: resume crashes the destination; "
                          "run tools/libvirt/build-libvirt.sh")
        reset: list[int] = []

        def reset_and_cut(guest: lab_guest.Guest) -> None:
            network.set_link_up(self.cfg, False)
            reset.append(network.reset_migration_streams(
                self.cfg, self.cfg.host_a, self.cfg.host_b))
            native.time_module().sleep(LONG_CUT_S)
            network.set_link_up(self.cfg, True)

        done, injector, guest = self.migrate_with_fault(reset_and_cut)
        self.addDetail("libvirt", testtools.content.text_content(self.cfg.libvirt.name))
        self.assertGreater(reset[0], 0, "no QEMU migration socket was found to reset")
        self.assertCompletedIntact(done)
        recovery = done.report.recovery
        assert recovery is not None and injector.injected_at is not None
        self.assertTrue(recovery.resumed, recovery)
        self.assertGreater(recovery.resume_attempts, 0)
        gap_s, _ = measure.max_gap(guest.heartbeats(), injector.injected_at,
                                   done.result.run.ended_s + SETTLE_S)
        self.report(case="3a: stream reset and link down, resumed by the monitor",
                    sockets_reset=reset[0], outage_s=LONG_CUT_S,
                    fault_to_end_s=round(done.result.run.ended_s - injector.injected_at, 1),
                    link_back_to_end_s=round(
                        done.result.run.ended_s - injector.injected_at - LONG_CUT_S, 1),
                    resume_attempts=recovery.resume_attempts,
                    longest_guest_pause_s=round(gap_s, 2),
                    bad_pages=done.result.integrity.bad_pages)

    def test_short_link_cut_after_switch_completes(self) -> None:
        def cut(guest: lab_guest.Guest) -> None:
            network.set_link_up(self.cfg, False)
            native.time_module().sleep(SHORT_CUT_S)
            network.set_link_up(self.cfg, True)

        done, injector, _ = self.migrate_with_fault(cut)
        self.assertCompletedIntact(done)
        assert injector.injected_at is not None
        self.addDetail("outage", testtools.content.text_content(
            f"link down {SHORT_CUT_S:.0f} s, job ended "
            f"{done.result.run.ended_s - injector.injected_at:.1f} s after the cut, "
            f"longest guest pause {done.result.max_heartbeat_gap_s:.2f} s"))

    def test_recovery_timeout_keeps_both_halves(self) -> None:
        self.check_recovery_timeout()

    def test_destination_stuck_before_running_is_stopped_and_given_back(self) -> None:
        """The destination's QEMU alive but stuck before it ran the guest.

        Seen on the real stack after a stream reset at the switch: the
        destination's loader failed while its main thread waited for a page
        inside the device state, its QEMU stayed alive and silent, libvirt
        kept the incoming guest *paused (migrating)*. That hang cannot be
        had on demand, so the destination's QEMU is frozen here (SIGSTOP)
        as the source shows the switch, before it can have loaded the
        device state, and QEMU's stream is reset: libvirt and both QEMUs
        then look as they did there. The monitor must stop the destination
        and give the guest back to the source, intact.
        """
        frozen: list[int] = []
        reset: list[int] = []

        def freeze_and_reset(guest: lab_guest.Guest) -> None:
            for pid in hosts.qemu_pids(self.cfg.host_b):
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
            reset.append(network.reset_migration_streams(
                self.cfg, self.cfg.host_a, self.cfg.host_b))

        def thaw() -> None:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        self.addCleanup(thaw)
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        injector = AfterSwitch(self.cfg.host_a, guest.name, 0.0,
                               lambda: freeze_and_reset(guest))
        injector.start()
        done = controlled.migrate_with_policy(
            self.cfg, guest, POLICY, settle_s=SETTLE_S,
            give_back_address="unix:" + str(chaos.standin_dir(self.cfg)))
        injector.join(5)
        self.addDetail("recovery", testtools.content.text_content(repr(done.report.recovery)))
        self.assertIsNone(injector.error)
        self.assertIsNotNone(injector.injected_at, "the migration never switched to post-copy")
        self.assertTrue(frozen, "no destination QEMU to freeze")
        self.assertGreater(reset[0], 0, "no QEMU migration socket was found to reset")
        recovery = done.report.recovery
        assert recovery is not None and injector.injected_at is not None
        self.assertEqual(postcopy.Where.NOT_SWITCHED, recovery.where, recovery)
        self.assertTrue(recovery.given_back, recovery)
        self.assertIs(monitor.Outcome.FAILED, done.report.outcome, done.report.error)
        self.assertIn("given back to the source", done.report.error or "")
        self.assertEqual(0, recovery.resume_attempts)
        # The frozen QEMU was stopped by the monitor, not left behind.
        self.assertNoQemu(self.cfg.host_b, within_s=20)
        self.assertIntact(done.result, "a")
        # The source paused at the switch, before the fault: the whole
        # migration is the window.
        gap_s, _ = measure.max_gap(guest.heartbeats(), done.result.run.started_s,
                                   done.result.run.ended_s + SETTLE_S)
        guest_cost = done.report.guest
        assert guest_cost is not None and guest_cost.longest_unavailable_s is not None
        # The report does not hide the stop (heartbeats come every 0.1 s).
        self.assertGreaterEqual(guest_cost.longest_unavailable_s, gap_s - 1.0)
        self.report(case="destination stuck before running: stopped, guest given back",
                    sockets_reset=reset[0],
                    fault_to_end_s=round(done.result.run.ended_s - injector.injected_at, 1),
                    settle_waited_s=round(recovery.waited_s, 1),
                    longest_guest_pause_s=round(gap_s, 2),
                    reported_unavailable_s=round(guest_cost.longest_unavailable_s, 2),
                    bad_pages=done.result.integrity.bad_pages)


class TestPostcopyFaultsOnDebianLibvirt(PostcopyFaultCase):
    """Debian's own libvirt 11.3.0, whose resume crashes the destination."""

    LIBVIRT = "debian"

    def test_recovery_timeout_never_resumes(self) -> None:
        self.check_recovery_timeout()


class TestMonitorProcessKilled(base.LabTestCase):
    """The process running the monitor dies (kill -9), then recover runs.

    ``nova-livemig-ext migrate`` is killed mid-migration; the peer-to-peer
    job goes on inside the source libvirtd with nobody steering it.
    ``recover`` then brings it to its true end: in pre-copy the job is
    aborted and the guest keeps running on the source; in post-copy the
    migration completes on the destination.
    """

    def start_cli(self, guest: lab_guest.Guest, conf: str) -> subprocess.Popen[bytes]:
        b = self.cfg.host_b
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(conf)
        self.addCleanup(os.unlink, f.name)
        argv = [sys.executable, "-m", "nova_livemig_ext.cmd.main", "migrate", guest.name,
                "--from", self.cfg.host_a.uri,
                "--to", measure.destination_uri(b, measure.flags_from_names(["PEER2PEER"])),
                "--dest-connect", b.uri, "--migrate-uri", b.migration_uri,
                "--listen-address", b.link_address, "--config-file", f.name, "--quiet"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"never saw {what}")
            time.sleep(0.2)

    def sent_bytes(self, guest: lab_guest.Guest) -> int:
        import libvirt
        conn = libvirt.open(self.cfg.host_a.uri)
        try:
            return int(conn.lookupByName(guest.name).jobStats().get("memory_processed", 0))
        except libvirt.libvirtError:
            return 0
        finally:
            conn.close()

    def test_killed_in_precopy_then_recover_aborts(self) -> None:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        guest.watch(self.cfg.host_b)
        proc = self.start_cli(guest, "[livemig_ext]\n")
        self.wait_for(lambda: self.sent_bytes(guest) > 40 * 10**6, "40 MB sent")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        time.sleep(3)
        # Nobody watches, but libvirt's job goes on.
        self.assertGreater(self.sent_bytes(guest), 0, "the job ended with its client")
        rc, out = run_recover(self.cfg, guest)
        self.addDetail("recover", testtools.content.text_content(out))
        self.assertEqual(0, rc, out)
        self.assertIn("aborting it", out)
        self.assertIn("unwatched pre-copy migration was aborted", out)
        time.sleep(SETTLE_S)
        integrity = measure.assess_integrity(guest.lines(), guest.heartbeats(), "a",
                                             killed_at, SETTLE_S)
        self.assertTrue(integrity.ok, integrity.reasons)
        self.assertEqual(0, integrity.bad_pages)
        self.assertNoQemu(self.cfg.host_b, within_s=30)

    def test_killed_in_postcopy_then_recover_completes(self) -> None:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        guest.watch(self.cfg.host_b)
        proc = self.start_cli(guest, "[livemig_ext]\npermit_post_copy = True\n"
                                     "ladder = postcopy,abort\n")
        self.wait_for(lambda: source_state(self.cfg.host_a, guest.name) == (
            postcopy.VIR_DOMAIN_PAUSED, postcopy.VIR_DOMAIN_PAUSED_POSTCOPY),
            "the switch to post-copy")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        rc, out = run_recover(self.cfg, guest)
        self.addDetail("recover", testtools.content.text_content(out))
        self.assertEqual(0, rc, out)
        self.assertRegex(out, "recovered: the guest runs on the destination|"
                              "nothing to recover: the migration completed")
        time.sleep(SETTLE_S)
        integrity = measure.assess_integrity(guest.lines(), guest.heartbeats(), "b",
                                             killed_at, SETTLE_S)
        self.assertTrue(integrity.ok, integrity.reasons)
        self.assertEqual(0, integrity.bad_pages)
        self.assertNoQemu(self.cfg.host_a, within_s=30)
