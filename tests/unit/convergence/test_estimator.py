"""Bandwidth, dirty rate, working set and predictions from samples."""

import testtools

from nova_livemig_ext.convergence import estimator as e
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples

MIB = model.MIB
GIB = model.GIB


def sample(iteration, remaining, processed, dirty_pages_s=0, total=GIB):
    return samples.sample_from_job_stats({
        'type': 2, 'memory_iteration': iteration,
        'memory_remaining': remaining, 'memory_processed': processed,
        'memory_total': total, 'memory_dirty_rate': dirty_pages_s})


def estimate_until(workload, poll_s, until, settings=model.QemuSettings()):
    """Run the model without a controller; stop when ``until`` says so."""
    sim = model.PrecopySimulation(workload, settings)
    est = e.Estimate()
    while sim.running:
        stats = samples.sample_from_job_stats(sim.job_stats())
        est = e.update_estimate(est, stats, sim.now_s)
        if until(est):
            return sim, est
        sim.advance(poll_s)
    raise AssertionError('the job ended before the condition was met')


class TestRules(testtools.TestCase):

    def test_smoothing_weight(self):
        for interval_s, half_life_s, expected in [
                (0.0, 3.0, 0.0), (3.0, 3.0, 0.5), (6.0, 3.0, 0.75),
                (1.0, 1.0, 0.5)]:
            self.assertAlmostEqual(
                expected, e.smoothing_weight(interval_s, half_life_s))

    def test_passes_to_fit(self):
        # (start bytes, λ, threshold bytes, passes)
        for start, ratio, threshold, expected in [
                (100, 0.5, 100, 0),
                (100, 0.5, 50, 1),
                (100, 0.5, 49, 2),
                (1000, 0.5, 1, 10),
                (100, 0.0, 1, 1),
                (100, 1.0, 50, None),
                (100, 2.0, 50, None),
                (100, 0.5, 0, None)]:
            self.assertEqual(expected,
                             e.passes_to_fit(start, ratio, threshold),
                             (start, ratio, threshold))

    def test_pass_duration_is_geometric(self):
        # 64 GiB over 1 Gbit/s (about 117 MiB/s), λ = 0.5.
        bandwidth = 117 * MIB
        first = e.precopy_pass_duration_s(64 * GIB, bandwidth, 0.5, 0)
        self.assertAlmostEqual(560.1, first, places=1)
        for index in range(1, 6):
            self.assertAlmostEqual(
                first / 2 ** index,
                e.precopy_pass_duration_s(64 * GIB, bandwidth, 0.5, index))

    def test_geometric_finish(self):
        # 100 MiB at 10 MiB/s, λ = 0.5, 1 s limit (10 MiB fits): passes of
        # 100, 50, 25, 12.5 MiB, then 6.25 MiB stop-and-copy.
        finish = e.geometric_finish_s(100 * MIB, 10 * MIB, 0.5, 1000)
        self.assertAlmostEqual(19.375, finish)
        self.assertIsNone(
            e.geometric_finish_s(100 * MIB, 10 * MIB, 1.2, 1000))
        self.assertAlmostEqual(
            0.5, e.geometric_finish_s(5 * MIB, 10 * MIB, 1.2, 1000))

    def test_transfer_time_and_downtime(self):
        self.assertEqual(2.0, e.transfer_time_s(20 * MIB, 10 * MIB))
        self.assertEqual(2000.0, e.downtime_ms_for(20 * MIB, 10 * MIB))
        self.assertIsNone(e.transfer_time_s(20 * MIB, 0))
        self.assertIsNone(e.downtime_ms_for(20 * MIB, None))

    def test_first_pass_dirty_rate_is_not_a_measurement(self):
        est = e.update_estimate(e.Estimate(), sample(1, GIB, 0, 500), 0.0)
        self.assertIsNone(est.dirty_rate_bytes_s)
        est = e.update_estimate(est, sample(2, 100 * MIB, GIB, 500), 1.0)
        self.assertEqual(500 * 4096, est.dirty_rate_bytes_s)

    def test_boundary_adds_what_the_new_pass_already_sent(self):
        est = e.update_estimate(e.Estimate(), sample(1, 10 * MIB, 0), 0.0)
        # 30 MiB sent in 1 s: 10 MiB finished pass 1, 20 MiB of pass 2.
        est = e.update_estimate(est, sample(2, 80 * MIB, 30 * MIB), 1.0)
        self.assertEqual(100 * MIB, e.latest_working_set_bytes(est))
        self.assertAlmostEqual(30 * MIB, est.bandwidth_bytes_s)
        # The sync is dated back by the 20 MiB already sent.
        self.assertAlmostEqual(1.0 - 20 / 30, est.pass_started_s)

    def test_backwards_counters_are_not_a_rate(self):
        est = e.update_estimate(e.Estimate(), sample(1, GIB, 500), 0.0)
        est = e.update_estimate(est, sample(1, GIB, 100), 1.0)
        self.assertIsNone(est.interval_bandwidth_bytes_s)

    def test_fallback_dirty_rate_from_the_last_pass(self):
        est = e.Estimate(boundaries=(
            e.PassBoundary(iteration=3, at_s=10.0,
                           working_set_bytes=50 * MIB, previous_pass_s=5.0),))
        self.assertEqual(10 * MIB, e.fallback_dirty_rate_bytes_s(est))

    def test_can_converge(self):
        def est(ratio, working_set):
            return e.Estimate(
                bandwidth_bytes_s=10 * MIB,
                dirty_rate_bytes_s=ratio * 10 * MIB,
                boundaries=(e.PassBoundary(2, 1.0, working_set, 1.0),))
        # (λ, working set, ceiling ms, expected)
        for ratio, working_set, ceiling_ms, expected in [
                (0.5, GIB, 500, True),
                (1.5, GIB, 500, False),
                (1.5, 5 * MIB, 500, True),
                (1.0, 6 * MIB, 500, False)]:
            self.assertEqual(expected,
                             e.can_converge(est(ratio, working_set),
                                            ceiling_ms),
                             (ratio, working_set, ceiling_ms))
        self.assertIsNone(e.can_converge(e.Estimate(), 500))


class TestSyntheticTraces(testtools.TestCase):
    """Estimates within 10 % of the model's truth after two passes."""

    # (name, workload, poll interval s)
    SCENARIOS = [
        ('small guest, slow link',
         model.Workload(320 * MIB, 15 * MIB, 6 * MIB, 320 * MIB), 0.5),
        ('1 GiB, 100 MiB/s, λ=0.3',
         model.Workload(GIB, 100 * MIB, 30 * MIB, GIB), 0.5),
        ('4 GiB, 1 Gbit/s, λ=0.7',
         model.Workload(4 * GIB, 117 * MIB, 82 * MIB, 4 * GIB), 1.0),
        ('64 GiB, 1 Gbit/s, λ=0.5',
         model.Workload(64 * GIB, 117 * MIB, 58.5 * MIB, 64 * GIB), 5.0),
        ('saturated working set',
         model.Workload(2 * GIB, 100 * MIB, 300 * MIB, 512 * MIB), 0.5),
    ]

    def assertWithin(self, truth, value, fraction, message):
        self.assertIsNotNone(value, message)
        self.assertLessEqual(abs(value - truth), fraction * truth,
                             f'{message}: {value} vs truth {truth}')

    def test_estimates_after_two_passes(self):
        for name, workload, poll_s in self.SCENARIOS:
            sim, est = estimate_until(
                workload, poll_s, lambda est: est.passes_completed >= 2)
            self.assertWithin(workload.bandwidth_bytes_s,
                              est.bandwidth_bytes_s, 0.1,
                              name + ' bandwidth')
            truth_ws = sim.syncs[-1][2]
            self.assertWithin(truth_ws, e.latest_working_set_bytes(est),
                              0.1, name + ' working set')
            if workload.working_set_bytes == workload.memory_bytes:
                self.assertWithin(workload.dirty_rate_bytes_s,
                                  est.dirty_rate_bytes_s, 0.1,
                                  name + ' dirty rate')
                self.assertWithin(
                    workload.dirty_rate_bytes_s / workload.bandwidth_bytes_s,
                    e.dirty_ratio(est), 0.1, name + ' dirty ratio')

    def test_predicted_completion_after_two_passes(self):
        for name, workload, poll_s in self.SCENARIOS[:4]:
            sim, est = estimate_until(
                workload, poll_s, lambda est: est.passes_completed >= 2)
            at_s = sim.now_s
            predicted = e.predicted_completion_s(est, 300)
            sim.advance(10 * 3600)
            self.assertEqual('completed', sim.phase, name)
            self.assertWithin(sim.finished_at_s - at_s, predicted, 0.15,
                              name + ' time to completion')

    def test_saturated_working_set_cannot_converge(self):
        workload = model.Workload(320 * MIB, 15 * MIB, 40e6, 200e6)
        _, est = estimate_until(workload, 0.5,
                                lambda est: est.passes_completed >= 3)
        self.assertFalse(e.can_converge(est, 1000))
        self.assertTrue(e.can_converge(est, 20000))

    def test_pause_downtime_counts_what_was_dirtied_since_the_sync(self):
        workload = model.Workload(320 * MIB, 15 * MIB, 40e6, 60 * MIB)
        sim, est = estimate_until(workload, 0.5,
                                  lambda est: est.passes_completed >= 3)
        predicted = e.pause_downtime_ms(est)
        sim.suspend()
        sim.advance(60)
        self.assertEqual('completed', sim.phase)
        self.assertWithin(sim.downtime_ms, predicted, 0.25, 'pause downtime')
