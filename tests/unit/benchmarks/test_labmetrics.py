"""Tests for benchmarks.labmetrics: the simulator's metrics from lab records."""

import math

import testtools

from benchmarks import labmetrics
from benchmarks import metrics

MIB = 1024 * 1024
MEMORY = 320 * MIB
PAGE = 4096


def poll(t, iteration=1, processed=0, throttle=None, constant=0):
    stats = {'memory_total': MEMORY, 'memory_iteration': iteration,
             'memory_processed': processed, 'memory_constant': constant,
             'memory_page_size': PAGE}
    if throttle is not None:
        stats['auto_converge_throttle'] = throttle
    return [t, stats]


def beats(times, rate_mb_s=4, start_written=0):
    pace = labmetrics.pace_bytes_s(rate_mb_s)
    out, written, last = [], start_written, None
    for i, t in enumerate(times):
        if last is not None:
            # The writer keeps its pace only while it runs: a gap costs it.
            written += int(pace * min(t - last, labmetrics.HEARTBEAT_INTERVAL_S))
        out.append([t, i, written, 'a'])
        last = t
    return out


def steady_times(start, end, step=0.1):
    n = int(round((end - start) / step))
    return [round(start + i * step, 3) for i in range(n + 1)]


def raw(**kw):
    record = {
        'policy': 'ours', 'workload': 'below', 'dirty_rate_mb_s': 4,
        'link_mb_s': 10.0, 'memory_bytes': MEMORY, 'outcome': 'completed',
        'total_s': 20.0, 'downtime_ms': 300.0, 'iterations': 5,
        'switched_to_postcopy': False, 'decisions': [], 'guest_intact': True,
        'guest_on': 'b', 'completed_stats': {'memory_processed': 200 * 10**6},
        'polls': [poll(0.5), poll(10.0, 2, 100 * 10**6, constant=40000)],
        'heartbeats': beats(steady_times(-1.0, 26.0)),
    }
    record.update(kw)
    return record


class TestLabMetrics(testtools.TestCase):

    def test_non_zero_memory_from_the_bulk_pass(self):
        polls = labmetrics.polls_of(raw())
        self.assertEqual(MEMORY - 40000 * PAGE,
                         labmetrics.nonzero_bytes(polls, MEMORY))

    def test_non_zero_memory_falls_back_without_a_second_pass(self):
        polls = [(0.5, {'memory_iteration': 1, 'memory_constant': 5})]
        self.assertEqual(round(MEMORY * labmetrics.DEFAULT_NONZERO_FRACTION),
                         labmetrics.nonzero_bytes(polls, MEMORY))

    def test_ratio_and_slo_use_non_zero_memory_over_the_link(self):
        row = labmetrics.run_row(raw(), settle_s=6.0)
        lower = (MEMORY - 40000 * PAGE) / 10e6
        self.assertAlmostEqual(lower, row['lower_bound_s'], places=3)
        self.assertAlmostEqual(20.0 / lower, row['time_ratio'], places=3)
        self.assertAlmostEqual(2 * lower + 60, row['slo_s'], places=1)
        self.assertTrue(row['within_slo'])
        self.assertEqual(200 * 10**6, row['sent_bytes'])

    def test_throttle_percent_times_time_until_the_end(self):
        polls = [(0.0, {}), (10.0, {'auto_converge_throttle': 20}),
                 (12.0, {'auto_converge_throttle': 50})]
        # 20 % for 2 s, then 50 % until the job ended at 15 s.
        self.assertAlmostEqual(0.4 + 1.5,
                               labmetrics.throttle_lost_s(polls, 15.0))
        self.assertAlmostEqual(0.2, labmetrics.throttle_lost_s(polls, 11.0))

    def test_stall_counts_long_gaps_after_the_switch_only(self):
        times = (steady_times(0.0, 5.0) + [5.9]       # 0.9 s gap before
                 + steady_times(10.0, 12.0) + [14.0]  # switch at 10 s
                 + steady_times(14.1, 15.0))
        stall = labmetrics.postcopy_stall_s(times, 10.0, 15.0)
        self.assertAlmostEqual(2.0 - 0.1, stall, places=6)

    def test_jitter_below_the_threshold_is_no_stall(self):
        times = [0.0, 0.2, 0.4, 0.6, 0.8]
        self.assertEqual(0.0, labmetrics.postcopy_stall_s(times, 0.0, 1.0))

    def test_post_copy_run_counts_stall_and_exposure_not_downtime(self):
        times = (steady_times(-1.0, 30.0) + [37.5]
                 + steady_times(37.6, 45.0))
        record = raw(total_s=40.0, downtime_ms=None,
                     switched_to_postcopy=True,
                     decisions=[[25.0, 'note', True, 'auto_converge'],
                                [30.0, 'start_postcopy', True, 'postcopy']],
                     completed_stats={},
                     polls=[poll(0.5), poll(10.0, 2, 10**8, constant=40000),
                            poll(20.0, 4, 2 * 10**8, throttle=50),
                            poll(39.5, 5, 3 * 10**8, throttle=70)],
                     heartbeats=beats(times))
        row = labmetrics.run_row(record, settle_s=6.0)
        self.assertAlmostEqual(10.0, row['postcopy_s'])
        self.assertAlmostEqual(7.5 - 0.1, row['postcopy_stall_s'], places=3)
        # The throttle ends at the switch: 50 % from 20 s to 30 s.
        self.assertAlmostEqual(5.0, row['throttle_lost_s'])
        self.assertAlmostEqual(7.4 + 5.0, row['work_lost_s'], places=3)
        self.assertAlmostEqual(7.5, row['longest_pause_s'], places=3)
        self.assertEqual(3 * 10**8, row['sent_bytes'])
        self.assertEqual(70, row['max_throttle_pct'])

    def test_a_switch_that_did_not_take_counts_no_post_copy(self):
        record = raw(decisions=[[5.0, 'start_postcopy', True, 'postcopy']],
                     switched_to_postcopy=False)
        row = labmetrics.run_row(record, settle_s=6.0)
        self.assertEqual(0.0, row['postcopy_s'])
        self.assertEqual(0.0, row['postcopy_stall_s'])

    def test_unfinished_runs_stay_in_the_medians(self):
        done = labmetrics.run_row(raw(), settle_s=6.0)
        aborted = labmetrics.run_row(raw(outcome='aborted', total_s=88.0,
                                         downtime_ms=None, guest_on='a'),
                                     settle_s=6.0)
        damaged = labmetrics.run_row(raw(guest_intact=False), settle_s=6.0)
        self.assertIsNone(aborted['time_ratio'])
        self.assertFalse(aborted['within_slo'])
        self.assertFalse(damaged['completed'])
        self.assertEqual('damaged', damaged['outcome'])
        summary = metrics.summarise([done, aborted, damaged])
        self.assertEqual(3, summary['runs'])
        self.assertEqual(1, summary['completed'])
        self.assertTrue(math.isinf(summary['median_time_ratio']))

    def test_paused_copy_pays_its_whole_downtime(self):
        times = [-1.0, -0.9, -0.8, 17.0, 17.1, 17.2]
        row = labmetrics.run_row(raw(total_s=17.5, downtime_ms=17200.0,
                                     heartbeats=beats(times)), settle_s=6.0)
        self.assertAlmostEqual(17.2, row['work_lost_s'])
        self.assertAlmostEqual(17.8, row['longest_pause_s'], places=3)

    def test_guest_shortfall_from_its_own_counter(self):
        times = steady_times(0.0, 5.0) + steady_times(8.0, 10.0)
        record = beats(times)
        # 10 s of pace, of which the 3 s gap wrote nothing but one tick.
        shortfall = labmetrics.guest_shortfall_s(
            record, 0.0, 10.0, labmetrics.pace_bytes_s(4))
        self.assertAlmostEqual(3.0 - 0.1, shortfall, places=2)
        self.assertIsNone(labmetrics.guest_shortfall_s(record, 50.0, 60.0,
                                                       1.0))

    def test_pace_is_whole_pages_per_tick(self):
        # 4 MB/s is 97 pages per 100 ms tick.
        self.assertEqual(97 * 4096 * 10, labmetrics.pace_bytes_s(4))


class TestLabReport(testtools.TestCase):
    """benchmarks.lab's tables from saved records (no lab needed)."""

    def setUp(self):
        super().setUp()
        from benchmarks import lab
        self.lab = lab
        self.raws = [
            raw(policy='ours', workload='below', monitor_cpu_s=0.02),
            raw(policy='ours', workload='above', outcome='aborted',
                total_s=38.0, downtime_ms=None, guest_on='a',
                monitor_cpu_s=0.03,
                polls=[poll(0.5), poll(10.0, 2, 10**8, constant=40000),
                       poll(30.0, 5, 3 * 10**8, throttle=30)]),
        ]

    def test_runs_that_did_not_complete_are_shown_and_counted(self):
        rows = self.lab.rows_of(self.raws)
        summary = self.lab.summary_rows(rows)
        self.assertEqual(1, len(summary))
        self.assertEqual(2, summary[0]['runs'])
        self.assertEqual(1, summary[0]['completed'])
        text = self.lab.markdown(rows, summary, 10.0, 60.0, 'cmd')
        self.assertIn('| ours | 1 of 2 | 1 of 2 |', text)
        # An aborted lab run is not "unfinished" (a simulated run still
        # copying at the horizon): it did not complete.
        self.assertIn('1.16 / not completed', text)
        self.assertNotIn('unfinished', text)
        self.assertIn('intact after 2 of 2 runs', text)
        # The aborted run keeps the throttle it cost the guest.
        self.assertAlmostEqual(0.3 * 8.0, rows[1]['throttle_lost_s'])
