"""The shipped defaults on guests other than the demo's.

Each workload of :mod:`nova_livemig_lab.workloads` that pre-copy alone
cannot move over the lab's link (a bursty writer, a growing working set, a
steady writer just under the link's speed) is migrated once with nothing
configured: it must complete within the controller's deadline with the
guest intact on the destination. A slow random writer that converges on its
own must complete without the controller climbing a single rung. A ladder
listing post-copy first must still throttle first the guest post-copy would
stall for seconds, since the rung taken is the one the guest is predicted
to pay least for. The
guest's longest unavailability (its heartbeats) and work lost are attached;
how they compare with each remedy alone is measured by
``nova-livemig-ext lab compare`` (README, "Lab").
"""
from __future__ import annotations

import testtools.content

from nova_livemig_ext import monitor
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_lab import controlled, workloads
from tests.e2e import base

# The deadline is judged by the controller; the monitor needs a few polls
# after it to act and libvirt a moment to end the job.
DEADLINE_SLACK_S = 10.0


class TestShippedDefaultsOnWorkloads(base.LabTestCase):

    def move(self, name: str, policy: MigrationPolicy | None = None
             ) -> controlled.ControlledMigration:
        workload = workloads.named(name)
        guest = self.boot(workload.dirty_mb, workload.dirty_rate_mb_s, workload.pattern)
        done = controlled.migrate_with_policy(self.cfg, guest, policy or MigrationPolicy())
        report = done.report
        self.addDetail(f"{name}", testtools.content.json_content({
            "workload": workload.describe(),
            "outcome": report.outcome.value,
            "total_s": round(report.total_s, 1),
            "deadline_s": None if done.deadline_s is None else round(done.deadline_s, 1),
            "longest_unavailable_s": done.result.max_heartbeat_gap_s,
            "monitor_guest": None if done.guest is None else done.guest.as_dict(),
            "rungs": [rung for rung, _ in report.rungs_used],
            "intact_on": done.result.integrity.host if done.result.integrity.ok else None,
            "decisions": [f"{a.decision.at_s:.1f} s {a.decision.action.value}: "
                          f"{a.decision.reason}" for a in report.decisions],
        }))
        return done

    def assertCompletedIntact(self, done: controlled.ControlledMigration) -> None:
        self.assertEqual(monitor.Outcome.COMPLETED, done.report.outcome, done.report.error)
        self.assertIntact(done.result, "b")

    def test_defaults_finish_what_precopy_cannot(self) -> None:
        for name in ("bursty", "growing", "near-link"):
            self.assertFalse(workloads.named(name).converges)
            done = self.move(name)
            self.assertCompletedIntact(done)
            self.assertIsNotNone(done.deadline_s)
            self.assertLessEqual(done.report.total_s, done.deadline_s + DEADLINE_SLACK_S,
                                 f"{name} finished after the controller's deadline")

    def test_a_converging_writer_is_never_escalated(self) -> None:
        workload = workloads.named("slow-random")
        self.assertTrue(workload.converges)
        done = self.move(workload.name)
        self.assertCompletedIntact(done)
        self.assertEqual((), done.report.rungs_used,
                         "the controller climbed the ladder for a guest that converges")
        self.assertFalse(done.report.paused_by_monitor)
        self.assertFalse(done.report.switched_to_postcopy)
        # Not throttled either: auto-converge is armed at the start but QEMU
        # only throttles a guest whose passes do not shrink.
        assert done.guest is not None
        self.assertEqual(0.0, done.guest.throttle_lost_s)

    def test_the_cheaper_rung_goes_before_the_one_listed_first(self) -> None:
        # Post-copy would leave the steady writer waiting for its 120 MB
        # working set at the link's 14 MB/s; a throttle that works costs it
        # the downtime limit.
        policy = MigrationPolicy().replace(
            ladder=("postcopy", "auto_converge", "abort"), permit_post_copy=True)
        done = self.move("steady", policy)
        self.assertCompletedIntact(done)
        decisions = [a.decision for a in done.report.decisions]
        entered = [d for d in decisions if d.rung in ("postcopy", "auto_converge")]
        self.assertTrue(entered, "no rung was entered")
        first = entered[0]
        self.assertEqual("auto_converge", first.rung, first.reason)
        self.assertEqual("postcopy", first.measures_dict().get("passed_over"), first.reason)
        self.assertIn("auto_converge costs the guest least", first.reason)
        self.assertIn("against postcopy", first.reason)
        switches = [d for d in decisions if d.action.value == "start_postcopy"]
        if switches:
            # Post-copy stays a candidate, taken only once the throttle had
            # its chance (or was seen not to bite).
            self.assertGreater(switches[0].at_s, first.at_s)
