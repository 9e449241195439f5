"""Tests for benchmarks.policies: the peers as their sources run them."""

import testtools

from benchmarks import policies
from benchmarks import run
from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence import upstream

GIB = sim.GIB
MIB = sim.MIB
B = 1e9 / 8 * 0.92


def workload(memory_gib=1, ratio=0.0, ws=1.0, **kw):
    memory = memory_gib * GIB
    return sim.Workload(memory_bytes=memory, bandwidth_bytes_s=B,
                        dirty_rate_bytes_s=ratio * B,
                        working_set_bytes=int(ws * memory), **kw)


def run_policy(name, w, max_s=run.HORIZON_S):
    policy = policies.by_name(name)
    migration = sim.Migration(w, policy.settings(w))
    decider = policy.decider(w, policy.poll_s)
    return sim.drive(migration, decider, policy.poll_s, max_s), decider


def sample(remaining, iteration=2, processed=0):
    return samples.sample_from_job_stats({
        samples.KEY_TYPE: int(samples.JobType.UNBOUNDED),
        samples.KEY_DATA_REMAINING: remaining,
        samples.KEY_MEMORY_REMAINING: remaining,
        samples.KEY_DATA_TOTAL: GIB, samples.KEY_MEMORY_TOTAL: GIB,
        samples.KEY_DATA_PROCESSED: processed,
        samples.KEY_MEMORY_PROCESSED: processed,
        samples.KEY_MEMORY_ITERATION: iteration,
        samples.KEY_TIME_ELAPSED_MS: 0})


class TestEveryPolicy(testtools.TestCase):

    def test_an_idle_guest_moves_in_about_one_pass_under_every_policy(self):
        w = workload()
        for policy in policies.POLICIES:
            result, _ = run_policy(policy.name, w)
            self.assertEqual('completed', result.outcome, policy.name)
            # oVirt's engine gives one migration half the link.
            share = 2 if policy.name in ('ovirt-minimal-downtime',
                                         'ovirt-postcopy') else 1
            self.assertLess(result.total_s, share * 1.2 * GIB / B + 2,
                            policy.name)

    def test_tiers_and_sources(self):
        tiers = {p.tier for p in policies.POLICIES}
        self.assertEqual({policies.TIER_DEFAULT, policies.TIER_CAPABLE,
                          policies.TIER_BASELINE, policies.TIER_OURS}, tiers)
        for p in policies.POLICIES:
            self.assertTrue(p.source, p.name)
        self.assertRaises(KeyError, policies.by_name, 'vmware')

    def test_host_concurrency_defaults(self):
        expected = {'nova34': 1, 'kubevirt': 2, 'ovirt-minimal-downtime': 2,
                    'ovirt-suspend-workload': 1, 'proxmox': 4, 'ours': 1}
        for name, n in expected.items():
            self.assertEqual(n, policies.by_name(name).host_concurrency)


class TestNova(testtools.TestCase):

    def test_upstream_controller_is_nova(self):
        p = policies.by_name('nova34')
        d = p.decider(workload(4), 0.5)
        self.assertIsInstance(d, upstream.UpstreamController)
        self.assertEqual(4, d.config.data_gib)
        self.assertFalse(d.config.postcopy_enabled)
        self.assertEqual(0.5, p.poll_s)

    def test_first_step_at_the_first_poll_whatever_the_size(self):
        # _live_migration_monitor polls every 0.5 s from the start and
        # update_downtime sets the first step (50 ms) at the first poll
        # that sees the job running, for a 2 GiB and a 1 TiB guest alike.
        for gib in (2, 1024):
            w = workload(gib, ratio=0.5, ws=0.01)
            for name in ('nova34', 'nova34-postcopy'):
                result, _ = run_policy(name, w, max_s=60)
                self.assertEqual('0.5s set_downtime 50ms', result.actions[0],
                                 f'{name} {gib} GiB')
                self.assertEqual(0.5, policies.by_name(name).poll_for(w))

    def test_skipping_idle_polls_decides_as_polling_every_half_second(self):
        # NovaMonitor skips the polls at which Nova would do nothing; the
        # decisions and their instants are those of a 0.5 s poll loop.
        for w in (workload(2, ratio=0.5, ws=0.5),
                  workload(3, ratio=2.0, ws=0.2),
                  workload(2, ratio=0.9, ws=1.0, burst_period_s=20.0)):
            for name in ('nova34', 'nova34-postcopy'):
                policy = policies.by_name(name)
                sparse = policy.decider(w, 0.5)
                dense = upstream.UpstreamController(sparse.config)
                runs = [sim.drive(sim.Migration(w, policy.settings(w)), d,
                                  0.5, 4000) for d in (sparse, dense)]
                self.assertEqual(runs[1].actions, runs[0].actions, name)
                self.assertEqual(runs[1].outcome, runs[0].outcome, name)
                self.assertAlmostEqual(runs[1].total_s, runs[0].total_s,
                                       delta=0.01 * runs[1].total_s)

    def test_next_poll_lands_on_the_half_second_grid(self):
        m = policies.NovaMonitor(upstream.UpstreamConfig(data_gib=4))
        m.start(0.0)
        self.assertEqual(0.5, m.next_poll_s(5.0))
        m.observe(sample(GIB), 0.5)
        # The next step starts after 300 s: Nova sets it at 300.5 s.
        self.assertAlmostEqual(300.0, m.next_poll_s(5.0))
        m.observe(sample(GIB), 300.0)
        self.assertAlmostEqual(0.5, m.next_poll_s(5.0))
        decisions = m.observe(sample(GIB), 300.5)
        self.assertEqual([95], [d.downtime_ms for d in decisions])

    def test_nova_aborts_after_800_s_per_gib(self):
        result, _ = run_policy('nova34', workload(1, ratio=2.0))
        self.assertEqual('aborted', result.outcome)
        # 2 GiB minimum data size
        self.assertAlmostEqual(1600, result.total_s, delta=2)

    def test_nova_postcopy_force_completes_without_auto_converge(self):
        w = workload(1, ratio=2.0)
        self.assertFalse(policies.by_name('nova34-postcopy')
                         .settings(w).auto_converge)
        result, _ = run_policy('nova34-postcopy', w)
        self.assertEqual('completed', result.outcome)
        self.assertGreater(result.total_s, 1600)
        self.assertGreater(result.postcopy_s, 0)


class TestKubeVirt(testtools.TestCase):

    def test_completion_timeout_per_started_gb(self):
        # 2 GiB is 2.147 GB: three started GB.
        self.assertEqual(450, policies.KubeVirt(2 * GIB).acceptable_s)
        self.assertEqual(150, policies.KubeVirt(10 ** 9).acceptable_s)

    def test_progress_is_a_fall_since_the_previous_poll(self):
        k = policies.KubeVirt(100 * GIB)
        k.start(0.0)
        # Remaining rises at every sync and falls in between: progress.
        t, remaining = 0.0, 1000
        for _ in range(1000):
            t += 0.4
            remaining += 50 if int(t / 0.4) % 10 == 0 else -5
            self.assertEqual((), k.observe(sample(remaining), t))
        # Stuck: the same remainder for more than 150 s aborts.
        for _ in range(400):
            t += 0.4
            decisions = k.observe(sample(remaining), t)
            if decisions:
                break
        self.assertEqual(ctl.Action.ABORT, decisions[0].action)
        self.assertEqual('no progress', decisions[0].reason)

    def test_converging_above_the_link_only_the_timeout_aborts(self):
        result, _ = run_policy('kubevirt', workload(4, ratio=2.0))
        self.assertEqual('aborted', result.outcome)
        self.assertAlmostEqual(150 * 5, result.total_s, delta=2)

    def test_multifd_by_default_not_with_postcopy(self):
        w = workload()
        self.assertEqual(8, policies.by_name('kubevirt').settings(w)
                         .channels)
        caps = policies.by_name('kubevirt-postcopy').settings(w)
        self.assertEqual(1, caps.channels)
        self.assertTrue(caps.postcopy and caps.auto_converge)

    def test_postcopy_at_the_completion_timeout(self):
        # Paced: auto-converge cannot slow it, only post-copy ends it.
        result, _ = run_policy('kubevirt-postcopy', workload(
            1, ratio=2.0, write_capacity_bytes_s=200 * B))
        self.assertEqual('completed', result.outcome)
        switch = [a for a in result.actions if 'start_postcopy' in a]
        self.assertEqual(1, len(switch))
        # Whole seconds elapsed must exceed 300: the first poll at 301 s.
        self.assertAlmostEqual(301.2, float(switch[0].split('s')[0]),
                               delta=0.5)


class TestOVirt(testtools.TestCase):

    def test_minimal_downtime_steps_then_abort(self):
        # Short passes: VDSM sees a new iteration at every 10 s poll.
        result, _ = run_policy('ovirt-minimal-downtime', workload(
            4, ratio=2.0, ws=0.05, write_capacity_bytes_s=200 * B))
        self.assertEqual('aborted', result.outcome)
        downtimes = [a.split()[-1] for a in result.actions
                     if 'set_downtime' in a]
        self.assertEqual(['100ms', '150ms', '200ms', '300ms', '400ms',
                          '500ms'], downtimes)

    def test_engine_caps_the_bandwidth_by_max_migrations(self):
        w = workload()
        half = policies.by_name('ovirt-minimal-downtime').settings(w)
        whole = policies.by_name('ovirt-suspend-workload').settings(w)
        self.assertAlmostEqual(w.line_rate_bytes_s / 2,
                               half.max_speed_bytes_s)
        self.assertAlmostEqual(w.line_rate_bytes_s, whole.max_speed_bytes_s)

    def test_suspend_workload_ends_with_5_s(self):
        self.assertEqual((None, 'downtime', 5000),
                         policies.OVIRT_SUSPEND_WORKLOAD[-2])

    def test_postcopy_policy_switches(self):
        result, _ = run_policy('ovirt-postcopy', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertTrue(any('start_postcopy' in a for a in result.actions))

    def test_no_time_limit_of_its_own(self):
        # migration_max_time_per_gib_mem belonged to VDSM's legacy path,
        # removed in 4.40: while no new iteration moves the schedule on,
        # nothing aborts a schedule migration, however long it runs.
        o = policies.OVirt(4 * GIB, policies.OVIRT_MINIMAL_DOWNTIME)
        self.assertFalse(hasattr(o, 'max_time_s'))
        o.start(0.0)
        for t in range(10, 5000, 10):
            decisions = o.observe(sample(GIB, iteration=2), float(t))
            self.assertNotIn(ctl.Action.ABORT,
                             [d.action for d in decisions])

    def test_first_poll_after_one_interval_sets_the_initial_iteration(self):
        o = policies.OVirt(4 * GIB, policies.OVIRT_MINIMAL_DOWNTIME)
        o.start(0.0)
        # Nothing before the first 10 s wait is over.
        self.assertEqual((), o.observe(sample(GIB, iteration=1), 0.0))
        self.assertIsNone(o.initial_iteration)
        self.assertEqual((), o.observe(sample(GIB, iteration=6), 10.0))
        self.assertEqual(6, o.initial_iteration)
        # Seven iterations later: one item (150 ms) per poll, not three.
        decisions = o.observe(sample(GIB, iteration=13), 20.0)
        self.assertEqual([150], [d.downtime_ms for d in decisions])
        decisions = o.observe(sample(GIB, iteration=14), 30.0)
        self.assertEqual([200], [d.downtime_ms for d in decisions])

    def test_vdsm_up_to_4_30_13_counted_polls_whose_remaining_grew(self):
        o = policies.OVirt(4 * GIB, policies.OVIRT_MINIMAL_DOWNTIME,
                           stall_count=policies.OVIRT_STALL_REMAINING_GREW)
        o.start(0.0)
        seen = []
        for t, remaining in ((10, 900), (20, 800), (30, 850), (40, 700),
                             (50, 750), (60, 760)):
            seen += [d.downtime_ms for d in o.observe(
                sample(remaining, iteration=t), float(t))]
        # Grew at 30, 50 and 60 s: stalling 1, 2, 3.
        self.assertEqual([150, 200], seen)
        variant = policies.ovirt_counting(
            'ovirt-suspend-workload', policies.OVIRT_STALL_REMAINING_GREW)
        self.assertEqual(policies.OVIRT_STALL_REMAINING_GREW,
                         variant.decider(workload(), 10.0).stall_count)
        self.assertRaises(ValueError, policies.OVirt, GIB, (),
                          stall_count='lowmark')


class TestProxmox(testtools.TestCase):

    def test_downtime_doubles_until_it_fits(self):
        # A paced writer that the throttle cannot slow until 99 %.
        result, _ = run_policy('proxmox', workload(
            1, ratio=2.0, ws=0.5, write_capacity_bytes_s=200 * B))
        self.assertEqual('completed', result.outcome)
        downtimes = [int(a.split()[-1][:-2]) for a in result.actions
                     if 'set_downtime' in a]
        self.assertEqual(100, downtimes[0])
        for a, b in zip(downtimes, downtimes[1:]):
            self.assertEqual(2 * a, b)
        self.assertGreater(result.downtime_ms, 1000)

    def test_auto_converge_on(self):
        self.assertTrue(policies.by_name('proxmox').settings(workload())
                        .auto_converge)

    def test_fast_polls_from_the_end_of_a_pass_on(self):
        p = policies.Proxmox()
        p.start(0.0)
        self.assertEqual(1.0, p.next_poll_s(0.5))
        p.observe(sample(900, processed=100), 1.0)
        p.observe(sample(800, processed=200), 2.0)
        self.assertEqual(1.0, p.next_poll_s(0.5))
        # 50 left, less than the 100 per poll sent on average.
        p.observe(sample(50, processed=300), 3.0)
        self.assertEqual(0.1, p.next_poll_s(0.5))
        p.observe(sample(900, processed=400), 3.1)
        self.assertEqual(0.1, p.next_poll_s(0.5))

    def test_no_cap_of_its_own_but_qemus(self):
        p = policies.Proxmox()
        p.start(0.0)
        set_to = []
        remaining, processed = 1000, 0
        for i in range(400):
            remaining += 10
            processed += 100
            for d in p.observe(sample(remaining, processed=processed), i):
                set_to.append(d.downtime_ms)
        # 100 ms x 2^14 is the last value QEMU accepts (at most 2000 s);
        # Proxmox keeps doubling its own number, QEMU keeps refusing it.
        self.assertEqual(100 * 2 ** 14, max(set_to))
        self.assertEqual(14, len(set_to))
        self.assertGreater(p.downtime_ms, policies.QEMU_MAX_DOWNTIME_MS)


class TestBaselines(testtools.TestCase):

    def test_paused_copy_is_down_all_along(self):
        result, _ = run_policy('paused-copy', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertAlmostEqual(result.total_s * 1000, result.downtime_ms,
                               delta=200)

    def test_postcopy_after_the_first_pass(self):
        result, _ = run_policy('postcopy-after-first-pass',
                               workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        switch = float(result.actions[0].split('s')[0])
        self.assertAlmostEqual(GIB / B, switch, delta=1.0)

    def test_auto_converge_alone_never_gives_up(self):
        result, _ = run_policy('qemu-autoconverge',
                               workload(1, ratio=2.0), max_s=3000)
        self.assertNotEqual('aborted', result.outcome)
        self.assertGreater(result.max_throttle_pct, 0)


class TestOurs(testtools.TestCase):

    def test_ours_with_changes_only_what_it_is_told(self):
        p = policies.ours_with('ours', completion_timeout_max_s=3600)
        d = p.decider(workload(4), 0.5)
        shipped = policies.by_name('ours').decider(workload(4), 0.5)
        self.assertEqual(3600, d.config.deadline_s)
        self.assertEqual(shipped.config.ladder, d.config.ladder)
        self.assertEqual('ours', p.name)
        self.assertIn('completion_timeout_max_s = 3600', p.source)
        self.assertEqual(14400, policies.shipped_policy()
                         .completion_timeout_max_s)

    def test_as_shipped_runs_the_default_policy(self):
        d = policies.by_name('ours').decider(workload(4), 0.5)
        self.assertIsInstance(d, ctl.Controller)
        self.assertEqual(('downtime', 'auto_converge', 'abort'),
                         d.config.ladder)
        self.assertFalse(d.config.postcopy_armed)
        settings = policies.by_name('ours').settings(workload(4))
        self.assertTrue(settings.auto_converge)
        self.assertFalse(settings.postcopy)

    def test_with_postcopy(self):
        d = policies.by_name('ours-postcopy').decider(workload(4), 0.5)
        self.assertEqual(('downtime', 'auto_converge', 'postcopy', 'abort'),
                         d.config.ladder)
        self.assertTrue(d.config.postcopy_armed)
        result, _ = run_policy('ours-postcopy', workload(1, ratio=2.0))
        self.assertEqual('completed', result.outcome)
        self.assertLessEqual(result.downtime_ms, 500)
