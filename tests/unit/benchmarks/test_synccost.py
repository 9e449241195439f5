"""Tests for benchmarks.synccost: the per-GiB sync cost from lab polls."""

import math

import testtools

from benchmarks import synccost

GIB = synccost.GIB
LINK = 14.4e6


def polls(memory_gib, base_s=0.004, per_gib_s=0.002, bytes_per_it=20000,
          bulk_s=10.0, duration_s=40.0, poll_s=0.5, wobble=0.0, setup_ms=1):
    """jobStats polls of a loop whose iteration lasts base + per GiB + send."""
    period = base_s + per_gib_s * memory_gib + bytes_per_it / LINK
    out = []
    t = 0.0
    k = 0
    while t <= duration_s:
        if t < bulk_s:
            it, processed = 1, int(t * LINK)
        else:
            # A slow poll now and then (wobble) shifts time, not iterations.
            shifted = t - bulk_s + wobble * ((k * 7) % 5 - 2)
            done = int(shifted / period)
            it, processed = 2 + done, int(bulk_s * LINK) + done * bytes_per_it
        out.append([round(t, 3), {'memory_iteration': it,
                                  'memory_processed': processed,
                                  'setup_time': setup_ms}])
        t += poll_s
        k += 1
    return out


def run(memory_gib, role, **kw):
    return {'polls': polls(memory_gib, **kw), 'memory_bytes': int(memory_gib * GIB),
            'role': role, 'abort_s': 39.0}


class TestSyncCost(testtools.TestCase):

    def test_steady_window_skips_the_bulk_pass_and_the_abort(self):
        points = synccost.steady(polls(1.0), until_s=30.0)
        self.assertTrue(all(it >= synccost.STEADY_FROM_ITERATION
                            for _, it, _ in points))
        self.assertLess(points[-1][0], 30.0)

    def test_overhead_is_what_the_bytes_do_not_explain(self):
        e = synccost.estimate(polls(2.0), LINK, 2 * GIB, 'fit', until_s=39.0)
        self.assertAlmostEqual(0.004 + 0.004, e.overhead_s, delta=2e-4)
        self.assertAlmostEqual(20000, e.bytes_per_iteration, delta=200)
        self.assertGreater(e.iterations, 1000)

    def test_loop_fit_recovers_the_per_gib_cost(self):
        data = synccost.loop_analysis([run(0.3125, 'fit'), run(4.0, 'fit'),
                                       run(2.0, 'check')], LINK)
        self.assertAlmostEqual(0.002, data['fit']['per_gib_s'], delta=1e-4)
        self.assertAlmostEqual(0.004, data['fit']['base_s'], delta=2e-4)
        self.assertLess(abs(data['check'][0]['miss_ms']), 0.1)
        self.assertEqual([], data['unusable'])

    def test_held_out_loop_runs_do_not_move_the_fit(self):
        fit_only = synccost.loop_analysis(
            [run(0.3125, 'fit'), run(4.0, 'fit')], LINK)
        with_held = synccost.loop_analysis(
            [run(0.3125, 'fit'), run(4.0, 'fit'),
             run(2.0, 'check', per_gib_s=0.02)], LINK)
        self.assertEqual(fit_only['fit'], with_held['fit'])
        # The held-out run that disagrees shows as a miss.
        self.assertGreater(with_held['check'][0]['miss_ms'], 30)

    def test_a_run_that_converged_is_named_not_used(self):
        short = run(1.0, 'fit', duration_s=11.0)
        data = synccost.loop_analysis([short, run(4.0, 'fit')], LINK)
        self.assertEqual(1, len(data['estimates']))
        self.assertNotIn('fit', data)
        self.assertIn('1024 MiB', data['unusable'][0])

    def test_setup_time_fit_on_the_fit_runs_checked_on_the_rest(self):
        runs = [run(0.3125, 'fit', setup_ms=2), run(4.0, 'fit', setup_ms=6),
                run(2.0, 'check', setup_ms=9)]
        data = synccost.analyse(runs, LINK)
        self.assertEqual('setup_time', data['method'])
        self.assertAlmostEqual(4 / 3.6875 / 1000, data['fit']['per_gib_s'])
        fit_only = synccost.analyse(runs[:2], LINK)
        self.assertEqual(fit_only['fit'], data['fit'])
        check = data['check'][0]
        self.assertEqual(9.0, check['measured_ms'])
        self.assertGreater(check['miss_ms'], 4)
        self.assertGreater(check['z'], 10)
        self.assertIsNotNone(data['all_runs_fit']['per_gib_residual_se_s'])

    def test_upper_bound_is_the_largest_setup_over_its_memory(self):
        runs = [run(0.3125, 'fit', setup_ms=2), run(4.0, 'fit', setup_ms=1),
                run(4.0, 'check', setup_ms=2)]
        data = synccost.analyse(runs, LINK)
        self.assertAlmostEqual(0.0025 / 4, data['upper_bound_per_gib_s'])

    def test_setup_time_missing_is_refused(self):
        self.assertRaises(ValueError, synccost.setup_estimate,
                          {'polls': [[0.5, {}]], 'memory_bytes': GIB,
                           'role': 'fit'})

    def test_noisy_runs_give_a_standard_error(self):
        noisy = synccost.estimate(polls(1.0, wobble=0.2), LINK, GIB,
                                  until_s=39.0)
        quiet = synccost.estimate(polls(1.0), LINK, GIB, until_s=39.0)
        self.assertGreater(noisy.overhead_se_s, quiet.overhead_se_s)
        fit = synccost.fit_line([
            synccost.Estimate(0.5, 'fit', 20, 100, 0.01, 0, 0.010, 0.001),
            synccost.Estimate(4.5, 'fit', 20, 100, 0.01, 0, 0.014, 0.001)])
        self.assertAlmostEqual(0.001, fit.per_gib_s)
        self.assertAlmostEqual(math.sqrt(2) * 0.001 / 4, fit.per_gib_se_s)

    def test_one_size_cannot_give_a_slope(self):
        e = synccost.estimate(polls(1.0), LINK, GIB, until_s=39.0)
        self.assertRaises(ValueError, synccost.fit_line, [e, e])

    def test_too_short_a_window_is_refused(self):
        self.assertRaises(ValueError, synccost.estimate,
                          polls(1.0, duration_s=11.0), LINK, GIB)

    def test_sensitivity_values_are_measured_half_double(self):
        values = dict((label, v) for label, v in synccost.sensitivity_values(
            {'fit': {'per_gib_s': 0.0006}, 'upper_bound_per_gib_s': 0.0008}))
        self.assertEqual(0.0003, values['half the measured'])
        self.assertEqual(0.0006, values['measured'])
        self.assertEqual(0.0012, values['double the measured'])
        self.assertEqual(0.0004, values['half the upper bound'])
        self.assertEqual(0.0008, values['upper bound'])
        self.assertEqual(0.0016, values['double the upper bound'])
        self.assertEqual(0.001, values["the grid's assumption (KVM)"])

    def test_a_negative_slope_counts_as_zero(self):
        values = synccost.sensitivity_values(
            {'fit': {'per_gib_s': -0.001}, 'upper_bound_per_gib_s': 0.0006})
        self.assertEqual(('half the measured = measured = double the '
                          'measured', 0.0), values[0])
        self.assertEqual([0.0, 0.0003, 0.0006, 0.0012, 0.001],
                         [v for _, v in values])


class TestRecordedMeasurement(testtools.TestCase):
    """The recorded lab measurement and the value calibration uses."""

    def setUp(self):
        super().setUp()
        self.data = synccost.load()
        if self.data is None:
            self.skipTest('no sync-cost.json recorded')

    def test_the_analysis_is_reproducible_from_the_polls(self):
        again = synccost.analyse(self.data['runs'],
                                 self.data['link_mb_s'] * synccost.MB)
        self.assertEqual(self.data['analysis'], again)

    def test_fit_and_check_runs_are_apart_and_sizes_differ(self):
        roles = [r['role'] for r in self.data['runs']]
        self.assertEqual(2, roles.count('fit'))
        self.assertGreaterEqual(roles.count('check'), 2)
        fit_sizes = {r['memory_bytes'] for r in self.data['runs']
                     if r['role'] == 'fit'}
        self.assertEqual(2, len(fit_sizes))

    def test_calibration_uses_a_value_the_measurement_allows(self):
        from benchmarks import calibration
        a = self.data['analysis']
        value = calibration.LAB_SYNC_PER_GIB_S
        self.assertGreaterEqual(value, 0.0)
        self.assertLessEqual(value, a['upper_bound_per_gib_s'])
        every = a['all_runs_fit']
        self.assertLessEqual(abs(value - max(0.0, every['per_gib_s'])),
                             2 * every['per_gib_residual_se_s'])
