"""Tests for benchmarks.metrics: guest costs, lower bounds, unfinished runs."""

import math

import testtools

from benchmarks import metrics
from benchmarks import simulator as sim

GIB = sim.GIB
B = 100 * sim.MIB


def workload(**kw):
    return sim.Workload(memory_bytes=GIB, bandwidth_bytes_s=B,
                        dirty_rate_bytes_s=0.0, working_set_bytes=0,
                        touched_fraction=0.5, **kw)


def result(outcome='completed', total_s=10.0, downtime_ms=300.0, **kw):
    fields = dict(outcome=outcome, total_s=total_s, downtime_ms=downtime_ms,
                  iterations=3, data_sent_bytes=GIB / 2, throttle_s=0.0,
                  max_throttle_pct=0, postcopy_s=0.0, actions=())
    fields.update(kw)
    return sim.RunResult(**fields)


class TestRunMetrics(testtools.TestCase):

    def test_lower_bound_counts_only_non_zero_pages(self):
        self.assertAlmostEqual(GIB / 2 / B, metrics.lower_bound_s(workload()))
        self.assertAlmostEqual(2 * GIB / 2 / B + 60,
                               metrics.slo_s(workload()))

    def test_work_lost_adds_downtime_stall_and_throttle(self):
        r = result(downtime_ms=500.0, throttle_lost_s=2.0,
                   postcopy_stall_s=1.5)
        self.assertAlmostEqual(4.0, metrics.work_lost_s(r))
        row = metrics.run_metrics(workload(), r)
        self.assertAlmostEqual(4.0, row['work_lost_s'])
        self.assertAlmostEqual(10.0 / (GIB / 2 / B), row['time_ratio'],
                               places=3)
        self.assertAlmostEqual(1.0, row['sent_ratio'])

    def test_runs_that_did_not_complete_have_no_ratio_nor_slo(self):
        for outcome in ('aborted', 'unfinished'):
            row = metrics.run_metrics(workload(),
                                      result(outcome, 5.0, None))
            self.assertEqual(outcome, row['outcome'])
            self.assertFalse(row['completed'])
            self.assertIsNone(row['time_ratio'])
            self.assertFalse(row['within_slo'])
            self.assertEqual(math.inf, metrics.ratio_value(row))
        slow = metrics.run_metrics(workload(), result(total_s=1000.0))
        self.assertTrue(slow['completed'])
        self.assertFalse(slow['within_slo'])


class TestSummaries(testtools.TestCase):

    def rows(self, ratios, outcome='aborted'):
        out = []
        for i, ratio in enumerate(ratios):
            done = ratio is not None
            out.append({'completed': done, 'within_slo': done,
                        'outcome': 'completed' if done else outcome,
                        'time_ratio': ratio, 'work_lost_s': float(i),
                        'longest_pause_s': 0.1, 'postcopy_s': 0.0,
                        'sent_ratio': 1.0})
        return out

    def test_unfinished_runs_stay_in_the_median(self):
        # Dropping the unfinished runs would give a median of 1.5.
        s = metrics.summarise(self.rows([1.0, 2.0, None, None, None]))
        self.assertEqual(math.inf, s['median_time_ratio'])
        self.assertEqual(2, s['completed'])
        s = metrics.summarise(self.rows([1.0, 2.0, 3.0, None]))
        self.assertEqual(2.0, s['median_time_ratio'])
        self.assertEqual(math.inf, s['p90_time_ratio'])

    def test_aborted_and_unfinished_are_counted_apart(self):
        rows = (self.rows([1.0, None]) + self.rows([None, None],
                                                   outcome='unfinished'))
        s = metrics.summarise(rows)
        self.assertEqual((1, 1, 2), (s['completed'], s['aborted'],
                                     s['unfinished']))
        self.assertEqual(1.0, s['max_work_lost_s'])
        self.assertEqual(0.0, s['max_work_lost_completed_s'])

    def test_quantile(self):
        self.assertIsNone(metrics.quantile([], 0.5))
        self.assertEqual(90, metrics.quantile(range(1, 101), 0.9))
        self.assertEqual(3, metrics.median([5, 1, 3]))

    def test_head_to_head_explains_each_loss(self):
        def row(lost, downtime_ms, throttle, stall=0.0, done=True,
                total=10.0, outcome='aborted'):
            return {'completed': done, 'work_lost_s': lost,
                    'outcome': 'completed' if done else outcome,
                    'downtime_ms': downtime_ms, 'throttle_lost_s': throttle,
                    'postcopy_stall_s': stall, 'total_s': total}
        mine = {'a': row(5.0, 300, 4.7), 'b': row(0.2, 200, 0.0),
                'c': row(1.0, 300, 0.7), 'd': row(1.0, 300, 0.7)}
        theirs = {'a': row(0.3, 300, 0.0), 'b': row(0.5, 500, 0.0),
                  'c': row(1.0, 300, 0.7, done=False),
                  'd': row(1.0, 300, 0.7, total=20.0)}
        h = metrics.head_to_head(mine, theirs)
        self.assertEqual(3, h['both_completed'])
        self.assertEqual(['a'], [w['case'] for w in h['worse']])
        self.assertAlmostEqual(4.7, h['worse'][0]['throttle_s'])
        self.assertEqual(['b'], [b['case'] for b in h['better']])
        self.assertEqual(1, h['only_ours_completed'])
        self.assertEqual(1, h['only_ours_theirs_aborted'])
        self.assertEqual(0, h['only_ours_theirs_unfinished'])
        self.assertEqual(1, h['faster_5pct'])
        theirs['c'] = row(1.0, 300, 0.7, done=False, outcome='unfinished')
        h = metrics.head_to_head(mine, theirs)
        self.assertEqual((1, 0, 1), (h['only_ours_completed'],
                                     h['only_ours_theirs_aborted'],
                                     h['only_ours_theirs_unfinished']))
        self.assertAlmostEqual(4.7, h['max_extra_s'])
