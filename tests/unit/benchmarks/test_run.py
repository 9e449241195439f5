"""Tests for benchmarks.run: polling, the report and the README section."""

import os
import tempfile

import testtools

from benchmarks import policies
from benchmarks import run
from benchmarks import simulator as sim
from benchmarks import workloads


class TestRun(testtools.TestCase):

    def test_poll_interval_scales_with_the_bulk_pass(self):
        def guest(gib, gbit):
            return sim.Workload(memory_bytes=gib * sim.GIB,
                                bandwidth_bytes_s=workloads.link_bytes_s(gbit),
                                dirty_rate_bytes_s=0.0, working_set_bytes=0)
        ours = policies.by_name('ours')
        self.assertEqual(0.5, run.poll_s_for(ours, guest(1, 10)))
        # 1 TiB over 1 Gbit/s: a pass of 2.6 h, polled every 5 s.
        self.assertEqual(run.MAX_POLL_S, run.poll_s_for(ours, guest(1024, 1)))
        # oVirt's 10 s stays 10 s.
        self.assertEqual(10.0, run.poll_s_for(
            policies.by_name('ovirt-postcopy'), guest(1, 10)))

    def test_one_case_row(self):
        case = workloads.cases(1, families=('steady',))[0]
        row = run.run_case(policies.by_name('nova34'), case)
        for key in ('completed', 'within_slo', 'time_ratio', 'work_lost_s',
                    'longest_pause_s', 'postcopy_s', 'sent_ratio'):
            self.assertIn(key, row)
        self.assertEqual('steady', row['family'])

    def test_readme_section_is_replaced_not_appended(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'README.md')
            with open(path, 'w') as f:
                f.write(f'# x\n\n{run.LOSE_START}\nold\n{run.LOSE_END}\n'
                        'tail\n')
            run.update_readme('- first', path)
            run.update_readme('- second', path)
            with open(path) as f:
                text = f.read()
        self.assertIn('- second', text)
        self.assertNotIn('- first', text)
        self.assertNotIn('old', text)
        self.assertEqual(1, text.count(run.LOSE_START))
        self.assertTrue(text.endswith('tail\n'))

    def test_same_runs(self):
        a = {'x': {'outcome': 'completed', 'total_s': 100.0,
                   'work_lost_s': 1.0},
             'y': {'outcome': 'completed', 'total_s': 100.0,
                   'work_lost_s': 1.0}}
        b = {'x': {'outcome': 'completed', 'total_s': 100.5,
                   'work_lost_s': 1.0},
             'y': {'outcome': 'aborted', 'total_s': 100.0,
                   'work_lost_s': 1.0}}
        self.assertEqual({'runs': 2, 'same': 1}, run.same_runs(a, b))
