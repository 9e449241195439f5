"""Tests for benchmarks.variants and the sensitivity tables of the run."""

import testtools

from benchmarks import policies
from benchmarks import run
from benchmarks import simulator as sim
from benchmarks import variants
from benchmarks import workloads


def case(link_gbit_s, memory_gib=4, family='steady'):
    w = sim.Workload(memory_bytes=memory_gib * sim.GIB,
                     bandwidth_bytes_s=workloads.link_bytes_s(link_gbit_s),
                     dirty_rate_bytes_s=1e6, working_set_bytes=sim.GIB,
                     stream_limit_bytes_s=workloads.STREAM_LIMIT_BYTES_S)
    return workloads.Case(f'{family}#{link_gbit_s}', family, link_gbit_s, w)


def row(policy, key, outcome='completed', total_s=10.0, lost=0.3,
        variant=None):
    r = {'policy': policy, 'case': key, 'family': 'steady',
         'outcome': outcome, 'completed': outcome == 'completed',
         'within_slo': outcome == 'completed', 'total_s': total_s,
         'time_ratio': 1.0 if outcome == 'completed' else None,
         'work_lost_s': lost, 'longest_pause_s': 0.3, 'postcopy_s': 0.0,
         'sent_ratio': 1.0, 'downtime_ms': 300.0, 'throttle_lost_s': 0.0,
         'postcopy_stall_s': 0.0}
    if variant is not None:
        r['variant'] = variant
    return r


class TestVariants(testtools.TestCase):

    def test_every_variant_has_a_unique_key(self):
        keys = [v.key for v in variants.all_variants()]
        self.assertEqual(len(keys), len(set(keys)))
        for v in variants.all_variants():
            self.assertEqual(v, variants.by_key(v.key))
        self.assertRaises(KeyError, variants.by_key, 'stream=1')

    def test_the_stream_sweep(self):
        values = [v.value for v in variants.all_variants()
                  if v.group == variants.STREAM]
        self.assertEqual([0.3e9, 0.6e9, 2.5e9], values)
        v = variants.by_key('stream=3e+08')
        self.assertEqual(0.3e9, v.workload(case(10).workload)
                         .stream_limit_bytes_s)
        self.assertIn('kubevirt', v.policy_names)

    def test_a_slow_link_keeps_its_run(self):
        slow, fast = variants.by_key('stream=3e+08'), variants.by_key(
            'stream=2.5e+09')
        # 1 Gbit/s never fills one stream at either rate.
        self.assertFalse(slow.changes(case(1), 'kubevirt'))
        # 10 Gbit/s fills 0.3 GB/s, not 1.25 or 2.5 GB/s.
        self.assertTrue(slow.changes(case(10), 'ours'))
        self.assertFalse(fast.changes(case(10), 'ours'))
        self.assertTrue(fast.changes(case(25), 'ours'))
        # Only its own policies.
        self.assertFalse(slow.changes(case(25), 'nova34'))

    def test_the_timeout_variant_changes_ours_only(self):
        v = variants.by_key('timeout=3600')
        p = v.policy('ours')
        self.assertEqual(3600, p.decider(case(1).workload, 0.5)
                         .config.deadline_s)
        self.assertTrue(v.changes(case(1, 200), 'ours'))
        self.assertFalse(v.changes(case(1, 200), 'kubevirt'))
        self.assertEqual(14400,
                         policies.shipped_policy().completion_timeout_max_s)

    def test_the_vdsm_variant_counts_growing_remainders(self):
        v = [v for v in variants.all_variants()
             if v.group == variants.VDSM_COUNT][0]
        d = v.policy('ovirt-minimal-downtime').decider(case(1).workload, 10)
        self.assertEqual(policies.OVIRT_STALL_REMAINING_GREW, d.stall_count)

    def test_the_ceiling_variant_sets_it_and_adds_a_pause(self):
        v = variants.by_key('stop-ceiling=10')
        self.assertEqual(('ours', 'ours-postcopy'), v.policy_names)
        config = v.policy('ours').decider(case(1).workload, 0.5).config
        self.assertEqual(10.0, config.max_guest_stop_s)
        self.assertEqual(('downtime', 'auto_converge', 'pause', 'abort'),
                         config.ladder)
        self.assertEqual(
            ('downtime', 'auto_converge', 'postcopy', 'pause', 'abort'),
            variants.with_pause('ours-postcopy'))
        # Every workload is run again; the shipped policy keeps none.
        self.assertTrue(v.changes(case(1), 'ours'))
        self.assertFalse(v.changes(case(1), 'nova34'))
        self.assertIsNone(policies.shipped_policy().max_guest_stop_s)

    def test_sync_variants_only_for_their_families(self):
        v = [v for v in variants.all_variants()
             if v.group == variants.SYNC][0]
        self.assertTrue(v.changes(case(10, family='huge'), 'ours'))
        self.assertFalse(v.changes(case(10, family='bursty'), 'ours'))


class TestSensitivityTables(testtools.TestCase):

    def test_unchanged_runs_come_from_the_grid(self):
        cases = [case(1), case(25)]
        rows = [row(p.name, c.key) for c in cases
                for p in policies.POLICIES]
        changed = [row('ours', case(25).key, 'aborted',
                       variant='stream=3e+08')]
        table = run.sensitivity(rows, changed, cases)
        ours = [t for t in table if t['group'] == variants.STREAM
                and t['policy'] == 'ours']
        base, slow = ours[0], ours[1]
        self.assertIsNone(base['value'])
        self.assertEqual((2, 0, 0), (base['completed'], base['aborted'],
                                     base['changed_runs']))
        self.assertEqual(3e8, slow['value'])
        self.assertEqual((1, 1, 1), (slow['completed'], slow['aborted'],
                                     slow['changed_runs']))
        self.assertEqual(1, slow['vs_kubevirt']['only_theirs_completed'])
        lines = run.sensitivity_table(table, variants.STREAM)
        self.assertIn('vs KubeVirt', lines[0])

    def test_timeout_changes_lists_what_moved(self):
        rows = [row('ours', 'a', total_s=5000.0, lost=2593.0),
                row('ours', 'b')]
        changed = [row('ours', 'a', 'aborted', 3600.0, 554.0,
                       variant='timeout=3600'),
                   row('ours', 'b', variant='timeout=3600')]
        changes = run.timeout_changes(rows, changed)
        self.assertEqual(['a'], [c['case'] for c in changes])
        self.assertEqual(('completed', 'aborted'), changes[0]['outcome'])
        self.assertEqual((2593.0, 554.0), changes[0]['work_lost_s'])
