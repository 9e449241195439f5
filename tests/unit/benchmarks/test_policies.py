"""Tests for benchmarks.policies and the grid runner's bookkeeping."""

import testtools

from benchmarks import policies
from benchmarks import run
from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import upstream

GIB = sim.GIB
MIB = sim.MIB
B = 1e9 / 8 * 0.92


def workload(memory_gib=1, ratio=0.0, ws=1.0):
    memory = memory_gib * GIB
    return sim.Workload(memory_bytes=memory, bandwidth_bytes_s=B,
                        dirty_rate_bytes_s=ratio * B,
                        working_set_bytes=int(ws * memory))


def run_policy(name, w, max_s=run.HORIZON_S):
    policy = policies.by_name(name)
    migration = sim.Migration(w, policy.settings(w))
    decider = policy.decider(w, policy.poll_s)
    return sim.drive(migration, decider, policy.poll_s, max_s), decider


class TestEveryPolicy(testtools.TestCase):

    def test_an_idle_guest_moves_in_one_pass_under_every_policy(self):
        w = workload()
        for policy in policies.POLICIES:
            result, _ = run_policy(policy.name, w)
            self.assertEqual('completed', result.outcome, policy.name)
            self.assertLess(result.total_s, 1.2 * GIB / B + 2, policy.name)

    def test_names(self):
        self.assertEqual(('nova34', 'nova34-postcopy', 'kubevirt',
                          'ovirt-minimal-downtime', 'ovirt-postcopy',
                          'proxmox', 'ours'), policies.POLICY_NAMES)
        self.assertRaises(KeyError, policies.by_name, 'vmware')


class TestNova(testtools.TestCase):

    def test_upstream_controller_is_nova(self):
        d = policies.by_name('nova34').decider(workload(4), 0.5)
        self.assertIsInstance(d, upstream.UpstreamController)
        self.assertEqual(4, d.config.data_gib)
        self.assertFalse(d.config.postcopy_enabled)

    def test_nova_aborts_after_800_s_per_gib(self):
        result, _ = run_policy('nova34', workload(1, ratio=2.0))
        self.assertEqual('aborted', result.outcome)
        # 2 GiB minimum data size
        self.assertAlmostEqual(1600, result.total_s, delta=2)

    def test_nova_postcopy_force_completes(self):
        result, _ = run_policy('nova34-postcopy', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertGreater(result.total_s, 1600)
        self.assertGreater(result.postcopy_s, 0)


class TestKubeVirt(testtools.TestCase):

    def test_no_progress_for_150_s_aborts(self):
        result, _ = run_policy('kubevirt', workload(4, ratio=2.0))
        self.assertEqual('aborted', result.outcome)
        # A poll landing nearer the end of a pass than any before counts
        # as progress, so the watermark moves now and then; it still gives
        # up well before the completion timeout (150 s/GiB).
        self.assertLess(result.total_s, 600)
        self.assertGreater(result.total_s, 4 * GIB / B + 150)

    def test_completion_timeout(self):
        k = policies.KubeVirt(2 * GIB)
        self.assertEqual(300, k.acceptable_s)


class TestOVirt(testtools.TestCase):

    def test_minimal_downtime_steps_then_abort(self):
        result, _ = run_policy('ovirt-minimal-downtime',
                               workload(1, ratio=2.0))
        self.assertEqual('aborted', result.outcome)
        downtimes = [a.split()[-1] for a in result.actions
                     if 'set_downtime' in a]
        self.assertEqual(['100ms', '150ms', '200ms', '300ms', '400ms',
                          '500ms'], downtimes)

    def test_postcopy_policy_switches(self):
        result, _ = run_policy('ovirt-postcopy', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertTrue(any('start_postcopy' in a for a in result.actions))

    def test_max_time_per_gib(self):
        o = policies.OVirt(4 * GIB, policies.OVIRT_MINIMAL_DOWNTIME)
        self.assertEqual(256, o.max_time_s)


class TestProxmox(testtools.TestCase):

    def test_downtime_doubles_until_it_fits(self):
        result, _ = run_policy('proxmox', workload(1, ratio=2.0, ws=0.5))
        self.assertEqual('completed', result.outcome)
        downtimes = [int(a.split()[-1][:-2]) for a in result.actions
                     if 'set_downtime' in a]
        self.assertEqual(100, downtimes[0])
        for a, b in zip(downtimes, downtimes[1:]):
            self.assertEqual(2 * a, b)
        self.assertGreater(result.downtime_ms, 1000)


class TestOurs(testtools.TestCase):

    def test_runs_the_real_controller(self):
        d = policies.by_name('ours').decider(workload(4), 0.5)
        self.assertIsInstance(d, ctl.Controller)
        self.assertEqual(('downtime', 'auto_converge', 'postcopy', 'abort'),
                         d.config.ladder)
        self.assertTrue(d.config.postcopy_armed)
        self.assertTrue(d.config.auto_converge_armed)
        self.assertEqual(480, d.config.deadline_s)

    def test_a_guest_above_the_link_completes_in_postcopy(self):
        result, _ = run_policy('ours', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertTrue(any('start_postcopy' in a for a in result.actions))
        self.assertLessEqual(result.downtime_ms, 500)


class TestGrid(testtools.TestCase):

    def test_cases_drop_redundant_idle_guests(self):
        cases = run.cases(run.QUICK_GRID)
        idle = [c for c in cases if c.dirty_ratio == 0]
        self.assertEqual(4, len(idle))
        self.assertEqual(4 + 4 * 2 * 2 * 2, len(cases))

    def test_poll_interval_scales_with_the_bulk_pass(self):
        small = run.Case(1, 10, 0.5, 25, 'steady')
        big = run.Case(256, 1, 0.5, 25, 'steady')
        ours = policies.by_name('ours')
        self.assertEqual(0.5, run.poll_s_for(ours, small))
        self.assertEqual(run.MAX_POLL_S, run.poll_s_for(ours, big))

    def test_targets(self):
        def row(policy, case, outcome, total, downtime=100.0):
            return {'policy': policy, 'case': case, 'outcome': outcome,
                    'total_s': total, 'ideal_s': 10.0,
                    'downtime_ms': downtime, 'throttle_s': 0.0,
                    'postcopy_s': 0.0, 'actions': []}
        rows = []
        for name in policies.POLICY_NAMES:
            rows.append(row(name, 'a', 'completed', 20.0))
            rows.append(row(name, 'b', 'aborted', 30.0))
        rows = [r for r in rows if not (r['policy'] == 'ours'
                                        and r['case'] == 'a')]
        rows.append(row('ours', 'a', 'completed', 21.5))
        summary = run.summarise(rows)
        goals = run.targets(rows, summary)
        self.assertTrue(goals['completes_what_any_completes']['met'])
        self.assertFalse(goals['never_slower_than_nova']['met'])
        self.assertEqual('a', goals['never_slower_than_nova'][
            'violations'][0]['case'])
        self.assertFalse(goals['median_time_ratio']['met'])
        self.assertTrue(goals['p95_downtime_ms']['met'])

    def test_percentile(self):
        self.assertIsNone(run.percentile([], 95))
        self.assertEqual(95, run.percentile(list(range(101)), 95))
