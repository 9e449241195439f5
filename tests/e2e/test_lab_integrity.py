"""The integrity witness itself: it must fail when the guest's memory is wrong.

The rule tests need no lab; the self-test flips bits in a running guest's
working set from the host and checks that the guest and the report see it.
"""
from __future__ import annotations

import time

import testtools

from nova_livemig_lab import corrupt, guest, hosts, measure
from tests.e2e import base

HB_INTERVAL_S = 0.1


def _beats(host: str, start_s: float, count: int, bad_pages: int = 0,
           first_seq: int = 0) -> list[guest.Heartbeat]:
    return [guest.Heartbeat(start_s + i * HB_INTERVAL_S, host, first_seq + i, bad_pages,
                            4096 * i, 100 * i) for i in range(count)]


def _lines(beats: list[guest.Heartbeat], extra: tuple[str, ...] = ()) -> list[guest.ConsoleLine]:
    lines = [guest.ConsoleLine(hb.host_time_s, hb.host, f"HB seq={hb.seq} bad={hb.bad_pages}")
             for hb in beats]
    return lines + [guest.ConsoleLine(0.0, "b", text) for text in extra]


class TestIntegrityRules(testtools.TestCase):
    """assess_integrity and max_gap on synthetic heartbeats (no lab needed)."""

    def test_steady_clean_heartbeats_are_intact(self) -> None:
        beats = _beats("a", 0.0, 50) + _beats("b", 10.0, 80, first_seq=50)
        report = measure.assess_integrity(_lines(beats), beats, "b", 10.0, 6.0)
        self.assertTrue(report.ok, report.reasons)

    def test_bad_pages_fail(self) -> None:
        beats = _beats("a", 0.0, 50) + _beats("b", 10.0, 80, bad_pages=1, first_seq=50)
        report = measure.assess_integrity(_lines(beats), beats, "b", 10.0, 6.0)
        self.assertFalse(report.ok)
        self.assertEqual(1, report.bad_pages)

    def test_panic_on_console_fails(self) -> None:
        beats = _beats("a", 0.0, 50) + _beats("b", 10.0, 80, first_seq=50)
        lines = _lines(beats, ("[   21.4] BUG: kernel NULL pointer dereference",))
        report = measure.assess_integrity(lines, beats, "b", 10.0, 6.0)
        self.assertFalse(report.ok)
        self.assertIn("BUG:", report.fatal_lines[0])

    def test_a_soft_lockup_report_is_a_stall_not_damage(self) -> None:
        # Seen in CI after a 35 s post-copy outage: the guest kernel's
        # watchdog complains that the vCPU did not run; pages were intact.
        beats = _beats("a", 0.0, 50) + _beats("b", 10.0, 80, first_seq=50)
        lines = _lines(beats, ("[   68.1] watchdog: BUG: soft lockup - CPU#0 stuck for "
                               "33s! [dirtier:83]",))
        report = measure.assess_integrity(lines, beats, "b", 10.0, 6.0)
        self.assertTrue(report.ok, report.reasons)
        lines = _lines(beats, ("[   68.1] watchdog: BUG: soft lockup - CPU#0 stuck for "
                               "33s! [dirtier:83]", "[   69.0] Kernel panic - not syncing"))
        self.assertFalse(measure.assess_integrity(lines, beats, "b", 10.0, 6.0).ok)

    def test_silent_destination_fails(self) -> None:
        beats = _beats("a", 0.0, 50)
        report = measure.assess_integrity(_lines(beats), beats, "b", 10.0, 6.0)
        self.assertFalse(report.ok)
        self.assertEqual(0, report.heartbeats_after)

    def test_restarted_guest_fails(self) -> None:
        beats = _beats("b", 10.0, 40, first_seq=500) + _beats("b", 14.0, 40, first_seq=0)
        report = measure.assess_integrity(_lines(beats), beats, "b", 10.0, 6.0)
        self.assertFalse(report.ok)

    def test_max_gap_is_the_longest_silence(self) -> None:
        beats = _beats("a", 0.0, 10) + _beats("b", 5.0, 10, first_seq=10)
        gap_s, began_s = measure.max_gap(beats, 0.0, 10.0)
        self.assertAlmostEqual(4.1, gap_s, places=3)
        self.assertAlmostEqual(0.9, began_s, places=3)


class TestIntegrityWitness(base.LabTestCase):
    """Real guest, real corruption injected from the host."""

    CORRUPT_PAGES = 3
    # The guest's check sweep covers 120 MB at 20 MB/s in 6 s.
    DETECT_WITHIN_S = 12.0

    def test_corrupted_pages_are_reported(self) -> None:
        booted = self.boot(dirty_mb=120, dirty_rate_mb_s=4)
        pids = hosts.qemu_pids(self.cfg.host_a)
        self.assertEqual(1, len(pids))
        corrupted_at_s = time.monotonic()
        corrupt.corrupt_pages(pids[0], guest.GUEST_MEMORY_MIB << 20, self.CORRUPT_PAGES)

        deadline = time.monotonic() + self.DETECT_WITHIN_S
        while time.monotonic() < deadline:
            beats = booted.heartbeats()
            if beats and beats[-1].bad_pages >= self.CORRUPT_PAGES:
                break
            time.sleep(0.5)
        report = measure.assess_integrity(booted.lines(), booted.heartbeats(), "a",
                                          corrupted_at_s, settle_s=1.0)
        self.assertEqual(self.CORRUPT_PAGES, report.bad_pages)
        self.assertFalse(report.ok)
        self.assertTrue(any("BAD page" in line for line in report.fatal_lines))
