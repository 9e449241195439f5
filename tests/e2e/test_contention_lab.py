"""Traffic the hosts do not own crosses the link mid-migration.

Bulk TCP flows from A to B (``network.BulkFlow``: a backup job, another
tenant) take most of the shaped link a few seconds into a migration and
stop half a minute later. Nobody tells the controller: it must read the
collapse of its rate as a link shared with others, not as a dead link
(which would hold every remedy until the deadline), say so, and see the
link freed again. The guest converges on its own once it has the link:
the migration completes, intact, on B.
"""
from __future__ import annotations

import testtools.content

from nova_livemig_ext import monitor
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_lab import controlled, network
from tests.e2e import base

WORKING_SET_MB = 120
DIRTY_RATE_MB_S = 4
# The shipped policy with the deadline following the link.
POLICY = MigrationPolicy().replace(completion_timeout_s_per_gib=0)
# Sixteen flows beside the migration's one stream: it gets about 1/17 of
# the link (6 %), under the 10 % at which the link counts as slow, and far
# above what a dead link moves (1 %).
STREAMS = 16
FLOW_FROM_S = 4.0
FLOW_FOR_S = 30.0


class TestContentionInTheLab(base.LabTestCase):

    def test_a_link_shared_with_others_is_not_a_dead_one(self) -> None:
        guest = self.boot(WORKING_SET_MB, DIRTY_RATE_MB_S)
        flow: list[network.BulkFlow] = []
        delivered: list[int] = []

        def traffic(update: monitor.Progress) -> None:
            if not flow and update.elapsed_s >= FLOW_FROM_S:
                flow.append(network.BulkFlow(self.cfg, STREAMS, max_s=FLOW_FOR_S + 60))
            elif (flow and not delivered
                  and update.elapsed_s >= FLOW_FROM_S + FLOW_FOR_S):
                delivered.append(flow[0].stop())

        try:
            done = controlled.migrate_with_policy(self.cfg, guest, POLICY,
                                                  on_progress=traffic)
        finally:
            if flow and not delivered:
                delivered.append(flow[0].stop())
        decisions = [a.decision for a in done.report.decisions]
        self.addDetail("decisions", testtools.content.text_content("\n".join(
            f"{d.at_s:7.1f}s {d.action.value} {d.reason}" for d in decisions)))
        self.assertTrue(flow, "the migration ended before the flows started")
        self.assertIs(monitor.Outcome.COMPLETED, done.report.outcome, done.report.error)
        self.assertIntact(done.result, "b")
        reasons = [d.reason for d in decisions]
        self.assertFalse([r for r in reasons if "network stall" in r], reasons)
        shared = [d for d in decisions
                  if "link shared with traffic this host does not own" in d.reason]
        self.assertEqual(1, len(shared), reasons)
        measures = shared[0].measures_dict()
        # What the migration still moved: more than a dead link, less than
        # the tenth of the link at which it counts as slow.
        link_mib_s = self.link_mb_s() * 1e6 / 2**20
        self.assertGreater(measures["moved_mib_s"], 0.01 * link_mib_s)
        self.assertLess(measures["moved_mib_s"], 0.1 * link_mib_s)
        self.assertGreater(shared[0].at_s, FLOW_FROM_S)
        freed = [d for d in decisions if "no longer shared" in d.reason]
        self.assertEqual(1, len(freed), reasons)
        self.assertGreater(freed[0].at_s, FLOW_FROM_S + FLOW_FOR_S)
        # The flows themselves had most of the link while they ran.
        self.assertGreater(delivered[0], 0.5 * FLOW_FOR_S * self.link_mb_s() * 1e6)
        self.report(contention_streams=STREAMS, moved_mib_s=measures["moved_mib_s"],
                    shared_at_s=shared[0].at_s, freed_at_s=freed[0].at_s,
                    total_s=done.report.total_s,
                    bulk_mb=round(delivered[0] / 1e6, 1))
