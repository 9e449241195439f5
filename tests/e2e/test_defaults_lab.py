"""The shipped defaults finish a guest that pre-copy alone cannot move.

The lab's busy guest writes its 120 MB working set at 40 MB/s over a
14.4 MB/s link. It is moved once under each way there is to finish it (the
shipped defaults, a bounded pause, post-copy, throttling alone). The
defaults must complete with the guest intact, and the guest's longest
unavailability (from its own heartbeats) must be below what the bounded
pause costs it. Every figure is attached to the result; the
comparison with throttling alone is reported, not asserted: in the lab the
defaults beat it on a steady writer (1.0 s against 1.2 s) and lost to it on
this guest (3.3 s against 2.1 s).
"""
from __future__ import annotations

import dataclasses

import testtools.content

from nova_livemig_ext import monitor
from nova_livemig_lab import controlled, demo
from tests.e2e import base

WORKING_SET_MB = demo.WORKING_SET_MB
DIRTY_RATE_MB_S = demo.DIRTY_RATE_MB_S


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    outcome: str
    total_s: float
    longest_unavailable_s: float
    intact_on: str | None


class TestShippedDefaults(base.LabTestCase):

    def move(self, scenario: demo.Scenario) -> Run:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        done = controlled.migrate_with_policy(self.cfg, guest, scenario.policy)
        integrity = done.result.integrity
        return Run(scenario.name, done.report.outcome.value, round(done.report.total_s, 1),
                   done.result.max_heartbeat_gap_s,
                   integrity.host if integrity.ok else None)

    def test_defaults_finish_below_a_bounded_pause(self) -> None:
        # Ours with each remedy alone; the unsteered baselines are for
        # `lab compare`, not for this test's time.
        ours = ("shipped defaults", "bounded pause", "post-copy", "throttle")
        runs = [self.move(s) for s in demo.alternatives() if s.name in ours]
        self.addDetail("runs", testtools.content.json_content(
            [dataclasses.asdict(r) for r in runs]))
        defaults = runs[0]
        self.assertEqual("shipped defaults", defaults.name)
        self.assertEqual(monitor.Outcome.COMPLETED.value, defaults.outcome, str(runs))
        self.assertEqual("b", defaults.intact_on, str(runs))
        for run in runs:
            # Whatever the policy, the guest is whole on one side.
            self.assertIn(run.intact_on, ("a", "b"), str(run))
        remedies = {r.name: r for r in runs[1:]}
        for name in ("bounded pause", "post-copy"):
            self.assertEqual(monitor.Outcome.COMPLETED.value, remedies[name].outcome, str(runs))
        # A bounded pause stops the guest for its whole working set over the
        # link; the defaults never cost it that much. (Against post-copy it
        # goes either way: 3.3 s against 4.4 s in one run, while a 99 %
        # throttle cost 6.0 s of heartbeats in another.)
        self.assertLess(defaults.longest_unavailable_s,
                        remedies["bounded pause"].longest_unavailable_s, str(runs))
        least = min(r.longest_unavailable_s for r in runs
                    if r.outcome == monitor.Outcome.COMPLETED.value)
        self.addDetail("defaults_vs_least", testtools.content.text_content(
            f"{defaults.longest_unavailable_s:.2f} s vs {least:.2f} s: "
            f"x{defaults.longest_unavailable_s / least:.2f}"))
