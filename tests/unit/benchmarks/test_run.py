"""Tests for benchmarks.run: polling, the report and the README section."""

import json
import os
import re

import testtools

from benchmarks import policies
from benchmarks import run
from benchmarks import simulator as sim
from benchmarks import workloads

README_FACTS = {
    '10',        # nice -n 10 in the commands; QEMU 10; a 10 ms slice
    '1', '100',  # iteration 1; p / (100 - p)
    '0.5',       # Nova's poll
    '34', '34.0.0', '4.40', '4.50',  # releases
    '32',        # the seed's guest, 32 GiB over 1 Gbit/s
}


def run_row(**kw):
    row = {'outcome': 'completed', 'completed': True, 'within_slo': True,
           'total_s': 300.0, 'lower_bound_s': 298.8, 'time_ratio': 1.004,
           'downtime_ms': 30.0, 'throttle_lost_s': 0.0,
           'postcopy_stall_s': 0.0, 'work_lost_s': 0.03,
           'longest_pause_s': 0.03, 'postcopy_s': 0.0, 'sent_ratio': 1.0,
           'iterations': 3, 'max_throttle_pct': 0}
    row.update(kw)
    return row


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

    def test_the_readme_copies_no_result(self):
        # Every figure lives in results.md, which the run writes; the
        # README links to it.  Numbers outside code blocks may only be
        # facts the benchmark starts from (releases, the seed's guest,
        # the sources' own constants), never results.
        with open(os.path.join(run.HERE, 'README.md')) as f:
            text = f.read()
        prose = re.sub(r'```.*?```', '', text, flags=re.S)
        numbers = set(re.findall(r'(?<![\w.])\d+(?:\.\d+)*', prose))
        self.assertLessEqual(numbers, README_FACTS)
        self.assertIn('(results.md)', text)
        self.assertNotIn('where-we-lose:start', text)

    def test_seed_table_has_every_policy_and_rate(self):
        rows = [dict(run_row(), policy=p.name, case=c.key,
                     family=c.family)
                for c in workloads.seed_cases() for p in policies.POLICIES]
        lines = run.seed_table(rows)
        self.assertEqual(2 + len(rows), len(lines))
        self.assertIn('| x0.25 (29) | nova34 | completed |', lines[2 + 13])
        rows[0]['outcome'] = 'unfinished'
        self.assertIn('unfinished at the horizon', run.seed_table(rows)[2])

    def test_novas_unfinished_runs_are_not_called_aborted(self):
        rows = [run_row(policy='nova34', case='a', outcome='aborted',
                        completed=False),
                run_row(policy='nova34', case='b', outcome='unfinished',
                        completed=False),
                run_row(policy='nova34', case='c', outcome='unfinished',
                        completed=False),
                run_row(policy='nova34', case='d')]
        memory = {'a': 4 * sim.GIB, 'b': 8 * sim.GIB, 'c': 64 * sim.GIB,
                  'd': 64 * sim.GIB}
        text = run._nova_not_completed(rows, memory)[0]
        self.assertIn('nova34 did not complete 3', text)
        self.assertIn('aborted 1', text)
        self.assertIn('unfinished at the horizon 2', text)
        # 800 s/GiB of 64 GiB falls after the 4 h horizon, of 8 GiB not.
        self.assertIn('For 1 of the unfinished', text)
        self.assertIn('then abort', text)
        self.assertIn('above 18 GiB', text)

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


class TestTheDocsQuoteTheResults(testtools.TestCase):
    """The simulated figures README.rst and tuning.rst quote are the ones
    results.json holds: a new run that changes them fails here until the
    text says the same."""

    def setUp(self):
        super().setUp()
        with open(os.path.join(run.HERE, 'results.json')) as f:
            self.results = json.load(f)

    @staticmethod
    def text(*parts):
        with open(os.path.join(run.HERE, '..', *parts)) as f:
            return ' '.join(f.read().split())

    def test_readme(self):
        summary = self.results['summary']
        ours, nova = summary['ours']['all'], summary['nova34']['all']
        both = self.results['head_to_head']['ours vs nova34']
        expected = (
            f"Ours as shipped completes {ours['completed']} of {ours['runs']} "
            f"(Nova 34: {nova['completed']}, with {nova['aborted']} aborted "
            f"and {nova['unfinished']} unfinished at the horizon) but, "
            f"counting the guest's lost work, loses more than Nova on "
            f"{len(both['worse'])} of the {both['both_completed']} both "
            f"complete")
        self.assertIn(expected, self.text('README.rst'))

    def test_tuning(self):
        s = self.results['summary']

        def done(name):
            return s[name]['all']['completed']

        def pct(name):
            return round(100 * done(name) / s[name]['all']['runs'])

        expected = (
            f"this controller completes all {done('ours-postcopy')} (Nova 34: "
            f"{done('nova34')} = {pct('nova34')} %, KubeVirt: "
            f"{done('kubevirt')} = {pct('kubevirt')} %, oVirt \"Post-copy\": "
            f"{done('ovirt-postcopy')}), with a median total time of "
            f"{s['ours-postcopy']['all']['median_time_ratio']:.2f} x the "
            f"non-zero memory over the link's payload rate; as shipped (no "
            f"post-copy) it completes {done('ours')}.")
        self.assertIn(expected, self.text('doc', 'source', 'tuning.rst'))
