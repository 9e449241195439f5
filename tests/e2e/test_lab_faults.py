"""Faults in the middle of pre-copy, with real migrations.

Each time the job must end with an error within a bounded time, the source
guest must keep running with zero bad pages, and nothing may be left behind
on the destination.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from nova_livemig_lab import hosts, measure, network
from tests.e2e import base

WORKING_SET_MB = 120
# Below the link's bandwidth: without the fault this migration would converge.
DIRTY_RATE_MB_S = 4
# Inject the fault a few seconds into pass 1 (about 14 MB/s on the link).
FAULT_AFTER_BYTES = 40 * 10**6
# libvirt keepalive (2 s x 3) plus QEMU's cancel: the job must end well within this.
JOB_END_BOUND_S = 45.0
LIVE_FLAGS = ("LIVE", "PEER2PEER")


class TestFaultsDuringPrecopy(base.LabTestCase):

    def _migrate_with_fault(self, fault: Callable[[], None]
                            ) -> tuple[measure.MigrationResult, float]:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        injected_at: list[float] = []

        def inject() -> None:
            injected_at.append(time.monotonic())
            fault()

        result = measure.migrate_and_measure(
            self.cfg, guest, measure.flags_from_names(LIVE_FLAGS),
            on_poll=measure.once_into_precopy(inject, FAULT_AFTER_BYTES), timeout_s=120)
        self.assertEqual(1, len(injected_at), "the fault was never injected")
        return result, result.run.ended_s - injected_at[0]

    def assertFailedSafely(self, result: measure.MigrationResult, job_end_s: float) -> None:
        self.assertIsNotNone(result.run.error, "the migration completed despite the fault")
        self.assertFalse(result.run.timed_out, "the job had to be aborted by the test")
        self.assertLess(job_end_s, JOB_END_BOUND_S)
        self.assertIntact(result, "a")

    def test_destination_qemu_killed(self) -> None:
        def kill_destination_qemu() -> None:
            pids = hosts.qemu_pids(self.cfg.host_b)
            self.assertEqual(1, len(pids), f"expected one QEMU on host b, found {pids}")
            os.kill(pids[0], signal.SIGKILL)

        result, job_end_s = self._migrate_with_fault(kill_destination_qemu)
        self.assertFailedSafely(result, job_end_s)
        self.assertNoQemu(self.cfg.host_b, within_s=15)

    def test_link_cut(self) -> None:
        self.addCleanup(network.set_link_up, self.cfg, True)
        result, job_end_s = self._migrate_with_fault(lambda: network.set_link_up(self.cfg, False))
        self.assertFailedSafely(result, job_end_s)
        # The destination drops the half-done incoming domain once its peer is gone.
        self.assertNoQemu(self.cfg.host_b, within_s=30)

    def test_destination_libvirtd_stopped(self) -> None:
        result, job_end_s = self._migrate_with_fault(lambda: hosts.stop_daemon(self.cfg.host_b))
        self.assertFailedSafely(result, job_end_s)
        # Back up, the destination's libvirtd finds the failed incoming
        # domain and removes it: no stray QEMU is left.
        hosts.start_daemon(self.cfg.host_b)
        self.assertNoQemu(self.cfg.host_b, within_s=30)
        self.assertEqual([], hosts.domain_names(self.cfg.host_b))
