"""The seed's two failures, and the case that works, with real migrations.

(a) a copy without VIR_MIGRATE_LIVE pauses the guest for memory / bandwidth;
(b) VIR_MIGRATE_LIVE with a dirty rate above the link's bandwidth never
    converges, and abortJob leaves the source guest running and intact;
(c) the same working set dirtied below the link's bandwidth converges with
    a short pause.
Every test fails if the guest's memory arrives corrupted.
"""
from __future__ import annotations

import testtools.content

from nova_livemig_lab import measure
from tests.e2e import base

WORKING_SET_MB = 120
# Above / below the 14.4 MB/s link.
FAST_DIRTY_RATE_MB_S = 40
SLOW_DIRTY_RATE_MB_S = 4
NON_CONVERGING_WAIT_S = 45.0
PAUSE_TOLERANCE = 0.25
SHORT_PAUSE_S = 2.0

# Flag names, not libvirt constants: the module must import (and skip) without libvirt.
PAUSED_FLAGS = ("PEER2PEER",)
LIVE_FLAGS = ("LIVE", "PEER2PEER")


class TestSeedFailures(base.LabTestCase):

    def test_paused_copy_pauses_for_memory_over_bandwidth(self) -> None:
        guest = self.boot(WORKING_SET_MB, SLOW_DIRTY_RATE_MB_S)
        result = measure.migrate_and_measure(
            self.cfg, guest, measure.flags_from_names(PAUSED_FLAGS))

        self.assertIsNone(result.run.error)
        self.assertIntact(result, "b")
        completed = result.completed_stats
        self.assertIsNotNone(completed)
        assert completed is not None
        # What the copy had to move: the non-zero pages (zero pages cost nothing).
        expected_s = completed["memory_normal_bytes"] / (self.link_mb_s() * 1e6)
        self.addDetail("expected_pause_s", testtools.content.text_content(
            f"{expected_s:.2f}"))
        self.assertGreater(result.max_heartbeat_gap_s, expected_s * (1 - PAUSE_TOLERANCE))
        self.assertLess(result.max_heartbeat_gap_s, expected_s * (1 + PAUSE_TOLERANCE))
        self.assertNoQemu(self.cfg.host_a, within_s=15)

    def test_live_above_bandwidth_never_converges_and_abort_is_safe(self) -> None:
        guest = self.boot(WORKING_SET_MB, FAST_DIRTY_RATE_MB_S)
        result = measure.migrate_and_measure(
            self.cfg, guest, measure.flags_from_names(LIVE_FLAGS),
            on_poll=measure.abort_after(NON_CONVERGING_WAIT_S))

        self.assertIsNotNone(result.run.error, "the migration completed: it should not converge")
        self.assertGreaterEqual(result.run.duration_s, NON_CONVERGING_WAIT_S)
        self.assertFalse(result.run.timed_out)
        iterations = [p.stats.get("memory_iteration", 0) for p in result.run.polls]
        self.assertGreaterEqual(max(iterations), 3, "pre-copy never got past pass 2")
        self.assertIntact(result, "a")
        # The guest never stopped: no pause beyond a heartbeat or two.
        self.assertLess(result.max_heartbeat_gap_s, SHORT_PAUSE_S)
        self.assertNoQemu(self.cfg.host_b, within_s=15)

    def test_live_below_bandwidth_converges_with_short_pause(self) -> None:
        guest = self.boot(WORKING_SET_MB, SLOW_DIRTY_RATE_MB_S)
        result = measure.migrate_and_measure(
            self.cfg, guest, measure.flags_from_names(LIVE_FLAGS), timeout_s=120)

        self.assertIsNone(result.run.error)
        self.assertIntact(result, "b")
        self.assertLess(result.max_heartbeat_gap_s, SHORT_PAUSE_S)
        self.assertNoQemu(self.cfg.host_a, within_s=15)
