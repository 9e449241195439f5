"""The simulator against the lab's recorded migrations: within 20%."""

import testtools

from benchmarks import calibration

TOLERANCE = 0.2


class TestCalibration(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.traces = calibration.load_traces()
        if not self.traces:
            self.skipTest('no recorded traces')

    def test_total_time_and_iterations_within_20_percent(self):
        for name, trace in self.traces.items():
            c = calibration.compare(trace)
            self.assertEqual(c.real_outcome, c.sim_outcome, name)
            self.assertLessEqual(c.total_error, TOLERANCE,
                                 f'{name}: real {c.real_total_s:.1f} s, '
                                 f'simulated {c.sim_total_s:.1f} s')
            self.assertLessEqual(c.iteration_error, TOLERANCE,
                                 f'{name}: real {c.real_iterations}, '
                                 f'simulated {c.sim_iterations}')

    def test_every_recorded_kind_is_covered(self):
        self.assertTrue({'converging', 'non-converging', 'auto-converge',
                         'post-copy', 'paused', 'downtime-raised'}
                        <= set(self.traces))

    def test_real_numbers_come_from_libvirt(self):
        trace = self.traces['converging']
        total, iterations, outcome = calibration.real_numbers(trace)
        completed = trace['completed_stats']
        self.assertEqual((completed['time_elapsed'] / 1000.0,
                          completed['memory_iteration'], 'completed'),
                         (total, iterations, outcome))
        total, _, outcome = calibration.real_numbers(
            self.traces['non-converging'])
        self.assertEqual('aborted', outcome)
        aborts = [a['t'] for a in self.traces['non-converging']['actions']
                  if a['action'] == 'abortJob']
        self.assertEqual(aborts[0], total)
