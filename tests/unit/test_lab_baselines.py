"""The lab's unsteered baselines: QEMU's knobs alone, post-copy after pass 1."""

import testtools

from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_lab import baselines

MIB = 1024 * 1024


def sample(iteration, remaining, processed, job_type=2):
    return samples.sample_from_job_stats({
        'type': job_type, 'memory_iteration': iteration,
        'memory_remaining': remaining, 'memory_processed': processed,
        'memory_total': 320 * MIB, 'memory_dirty_rate': 0})


class UnwatchedTest(testtools.TestCase):

    def feed(self, decider, polls):
        """(at_s, sample) pairs; every decision with its time."""
        decider.start(100.0)
        out = []
        for at_s, one in polls:
            out += [(at_s, d) for d in decider.observe(one, 100.0 + at_s)]
        return out

    def test_knobs_alone_decide_nothing_until_the_cap(self):
        decider = baselines.Unwatched(cap_s=60.0)
        polls = [(t, sample(1 + t // 20, 200 * MIB, int(t) * 14 * MIB))
                 for t in range(1, 60)]
        self.assertEqual([], self.feed(decider, polls))
        # The estimate still follows the samples, for the report.
        self.assertEqual(3, decider.estimate.iteration)
        self.assertIsNone(decider.predicted_downtime_ms)
        decisions = decider.observe(sample(4, 200 * MIB, 900 * MIB), 160.0)
        self.assertEqual([Action.ABORT], [d.action for d in decisions])
        self.assertEqual('abort', decisions[0].rung)
        self.assertEqual(60.0, decisions[0].at_s)
        # Once: an applied abort is not asked again.
        decider.acknowledge(decisions[0], True, 160.0)
        self.assertEqual((), decider.observe(sample(4, 200 * MIB, 910 * MIB), 161.0))

    def test_an_abort_that_failed_is_asked_again(self):
        decider = baselines.Unwatched(cap_s=10.0)
        decider.start(0.0)
        first = decider.observe(sample(1, 200 * MIB, 10 * MIB), 11.0)
        decider.acknowledge(first[0], False, 11.0)
        again = decider.observe(sample(1, 190 * MIB, 20 * MIB), 12.0)
        self.assertEqual([Action.ABORT], [d.action for d in again])

    def test_postcopy_starts_once_the_first_pass_ended(self):
        decider = baselines.Unwatched(postcopy_after_first_pass=True)
        # QEMU's setup sync counts as iteration 1: the bulk pass is that one.
        polls = [(0.5, sample(0, 320 * MIB, 0)),
                 (1.0, sample(1, 300 * MIB, 20 * MIB)),
                 (10.0, sample(1, 100 * MIB, 220 * MIB)),
                 (20.0, sample(2, 80 * MIB, 330 * MIB)),
                 (21.0, sample(2, 70 * MIB, 344 * MIB))]
        decisions = self.feed(decider, polls)
        self.assertEqual([(20.0, Action.START_POSTCOPY)],
                         [(at, d.action) for at, d in decisions])
        self.assertEqual('postcopy', decisions[0][1].rung)

    def test_a_switch_that_failed_is_asked_again(self):
        decider = baselines.Unwatched(postcopy_after_first_pass=True)
        decider.start(0.0)
        decider.observe(sample(1, 300 * MIB, 20 * MIB), 1.0)
        decider.observe(sample(1, 100 * MIB, 220 * MIB), 10.0)
        first = decider.observe(sample(2, 80 * MIB, 330 * MIB), 20.0)
        self.assertEqual([Action.START_POSTCOPY], [d.action for d in first])
        decider.acknowledge(first[0], False, 20.0)
        again = decider.observe(sample(2, 70 * MIB, 344 * MIB), 21.0)
        self.assertEqual([Action.START_POSTCOPY], [d.action for d in again])

    def test_samples_of_no_job_are_ignored(self):
        decider = baselines.Unwatched(cap_s=1.0)
        decider.start(0.0)
        self.assertEqual((), decider.observe(sample(1, 0, 0, job_type=0), 5.0))

    def test_the_cap_must_be_positive(self):
        self.assertRaises(ValueError, baselines.Unwatched, cap_s=0)
