"""A deadline that follows the link, and a link shared by several jobs."""

import dataclasses

import testtools

from nova_livemig_ext import job
from nova_livemig_ext import policy as livemig_policy
from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model

MIB = model.MIB
GIB = model.GIB
A = c.Action

LINK = 15 * MIB
MEMORY = 320 * MIB
BUSY = model.Workload(MEMORY, LINK, 40e6, 200_000_000)
# Converges by itself, slowly: λ = 0.96 shrinks each pass by only 4 %, so
# the working set looks like a plateau to a pass-counting rule.
SLOW_CONVERGING = model.Workload(MEMORY, LINK, 0.96 * LINK, MEMORY)
LINKED = c.ControllerConfig(deadline_s=3600.0, deadline_link_multiple=8.0,
                            deadline_floor_s=120.0)


def run(workload, config, max_s, link_shares=None, settings=None):
    sim = model.PrecopySimulation(workload, settings or model.QemuSettings())
    controller = c.Controller(config, link_shares)
    result = model.simulate(sim, controller, 0.5, max_s)
    return controller, result


def notes(result, fragment):
    return [d for d in result.decisions
            if d.action is A.NOTE and fragment in d.reason]


class TestLinkDeadline(testtools.TestCase):

    def test_rule(self):
        # (multiple, floor, cap, data, bandwidth, expected)
        cases = [
            (8.0, 120.0, 3600.0, MEMORY, LINK, 8 * 320 / 15),
            (8.0, 120.0, 3600.0, MEMORY, 1024 * MIB, 120.0),  # floor
            (8.0, 120.0, 60.0, MEMORY, LINK, 60.0),  # the operator's cap
            (8.0, 120.0, 14400.0, 256 * GIB, 119 * MIB, 14400.0),
        ]
        for multiple, floor, cap, data, bandwidth, expected in cases:
            config = c.ControllerConfig(deadline_s=cap,
                                        deadline_link_multiple=multiple,
                                        deadline_floor_s=floor)
            self.assertAlmostEqual(
                expected, c.link_deadline_s(config, data, bandwidth), 3)

    def test_rejects(self):
        for changes, fragment in [
                (dict(deadline_link_multiple=0.5), 'deadline_link_multiple'),
                (dict(deadline_link_multiple=float('nan')),
                 'deadline_link_multiple'),
                (dict(deadline_floor_s=0), 'deadline_floor_s'),
                (dict(transfer_bytes=0), 'transfer_bytes'),
                (dict(concurrent_migrations=0), 'concurrent_migrations')]:
            error = self.assertRaises(ValueError, c.ControllerConfig,
                                      **changes)
            self.assertIn(fragment, str(error))

    def test_deadline_follows_the_measured_link(self):
        config = dataclasses.replace(LINKED, ladder=('abort',))
        controller, result = run(BUSY, config, 400)
        expected_s = 8 * MEMORY / LINK  # 170.7 s
        self.assertAlmostEqual(expected_s, controller.deadline_s,
                               delta=0.05 * expected_s)
        [note] = notes(result, 'deadline ')[:1]
        self.assertIn('8 x 320.0 MiB', note.reason)
        self.assertEqual(('abort',), tuple(result.rungs()))
        [abort] = [d for d in result.decisions if d.action is A.ABORT]
        self.assertAlmostEqual(controller.deadline_s, abort.at_s, delta=1.0)
        self.assertEqual('aborted', result.outcome)

    def test_setup_readings_do_not_settle_it(self):
        # libvirt's first samples: iteration 0, then QEMU's setup sync
        # (iteration 1) while the job still crawls at 0.6 MiB/s.
        from nova_livemig_ext.convergence import samples as s
        config = dataclasses.replace(LINKED, ladder=('abort',))
        state, _ = c.initial_state(config, 0.0)
        sent = 0
        notes_seen = []
        for at_s, iteration, rate in [(0.5, 0, 0.6), (1.0, 1, 0.6),
                                      (1.5, 1, 14.0), (2.0, 1, 14.0)] + [
                (2.0 + 0.5 * i, 1, 14.0) for i in range(1, 40)]:
            sent += int(rate * MIB * 0.5)
            sample = s.JobSample(
                job_type=s.JobType.UNBOUNDED, memory_total_bytes=MEMORY,
                memory_processed_bytes=sent, iteration=iteration,
                memory_remaining_bytes=max(MEMORY - sent, 0))
            state, decisions = c.step(config, state, sample, at_s)
            notes_seen += [d.reason for d in decisions]
        self.assertFalse([n for n in notes_seen if n.startswith('deadline')])
        # Still following the measurement: 8 x 320 MiB / ~14 MiB/s.
        self.assertLess(c.current_deadline_s(config, state), 200)

    def test_a_first_burst_does_not_shorten_it(self):
        # Found in the lab: the first half second fills socket buffers
        # faster than the link; the smoothed peak read 21 MiB/s on a
        # 14 MiB/s link and the deadline came out at 121 s, not 186 s.
        burst = dataclasses.replace(
            BUSY, bandwidth_bytes_s=4 * LINK, link_changes=((0.6, LINK),))
        config = dataclasses.replace(LINKED, ladder=('abort',))
        controller, _ = run(burst, config, 60)
        expected_s = 8 * MEMORY / LINK
        self.assertGreater(controller.deadline_s, 0.85 * expected_s)
        self.assertLess(controller.deadline_s, 1.05 * expected_s)

    def test_fast_link_gets_the_floor(self):
        fast = dataclasses.replace(BUSY, bandwidth_bytes_s=1024 * MIB,
                                   dirty_rate_bytes_s=4000 * MIB,
                                   working_set_bytes=300 * MIB)
        controller, _ = run(fast, dataclasses.replace(
            LINKED, ladder=('abort',)), 200)
        self.assertEqual(120.0, controller.deadline_s)

    def test_without_a_multiple_the_fixed_deadline_applies(self):
        config = c.ControllerConfig(deadline_s=90.0, ladder=('abort',))
        controller, result = run(BUSY, config, 300)
        self.assertEqual(90.0, controller.deadline_s)
        [abort] = [d for d in result.decisions if d.action is A.ABORT]
        self.assertAlmostEqual(90.0, abort.at_s, delta=1.0)

    def test_slow_but_converging_in_time_is_never_escalated(self):
        # λ = 0.96 shrinks the working set 4 % a pass: the plateau rule
        # fires at 318 s, when the model predicts completion in 243 s with
        # 960 s left. Near the end the passes get short and the working
        # set really stops shrinking (ratio 1.0): only then may it help.
        config = dataclasses.replace(
            LINKED, ladder=('downtime', 'postcopy', 'pause', 'abort'),
            postcopy_armed=True, postcopy_allowed=True, pause_allowed=True,
            deadline_link_multiple=60.0, initial_downtime_ms=500,
            max_downtime_ms=1000)
        settings = model.QemuSettings(downtime_limit_ms=500, postcopy=True)
        controller, result = run(SLOW_CONVERGING, config, 2000,
                                 settings=settings)
        self.assertEqual('completed', result.outcome)
        self.assertLess(result.total_s, controller.deadline_s)
        [held] = notes(result, 'not escalating: predicted to complete in')
        self.assertIn('working set stopped shrinking', held.reason)
        measures = held.measures_dict()
        self.assertLess(measures['convergence_ratio'], 1)
        effects = [d for d in result.decisions[1:] if d.has_effect]
        self.assertTrue(all(d.at_s > held.at_s for d in effects))
        for decision in effects:
            self.assertGreaterEqual(
                decision.measures_dict()['convergence_ratio'], 1.0,
                decision.reason)

    def test_slow_converging_past_its_deadline_is_helped(self):
        # The same guest needs 533 s of pre-copy; its deadline is 171 s.
        config = dataclasses.replace(
            LINKED, ladder=('downtime', 'abort'), max_downtime_ms=1000)
        controller, result = run(SLOW_CONVERGING, config, 400)
        self.assertFalse(notes(result, 'not escalating'))
        [skip] = notes(result, 'skipping downtime')
        self.assertIn('predicted to finish before the deadline', skip.reason)
        [pending] = [d for d in result.decisions if d.rung == c.RUNG_ABORT
                     and d.action is A.NOTE]
        self.assertIn('but the deadline is in', pending.reason)
        self.assertLess(pending.at_s, 30)
        self.assertEqual('aborted', result.outcome)


class TestSharedLink(testtools.TestCase):
    """Twelve migrations share the link from 30 s on: 1/12 of it each."""

    SHARED = dataclasses.replace(BUSY, link_changes=((30.0, LINK / 12),))

    def run_shared(self, told):
        config = dataclasses.replace(LINKED, ladder=('abort',))
        sim = model.PrecopySimulation(self.SHARED, model.QemuSettings())
        shares = (lambda: 12 if sim.now_s >= 30.0 else 1) if told else None
        controller = c.Controller(config, shares)
        result = model.simulate(sim, controller, 0.5, 200)
        return controller, result

    def test_a_fair_share_is_not_a_stalled_link(self):
        controller, result = self.run_shared(told=True)
        self.assertFalse(notes(result, 'network stall'))
        self.assertFalse(controller.state.network_stalled)
        # The deadline makes room for the share: 8 x 320 MiB / (15 / 12).
        self.assertGreater(controller.deadline_s, 8 * MEMORY / LINK * 10)
        moved = notes(result, 'deadline moved')
        self.assertTrue(moved)
        self.assertIn('12 migrations share the link', moved[-1].reason)

    def test_counted_before_the_other_sends(self):
        # Found in the lab: two migrations counted from the start, the
        # other one still setting up; this one had the whole link until
        # 30 s (past its first pass), half of it after.
        workload = dataclasses.replace(BUSY, link_changes=((30.0, LINK / 2),))
        config = dataclasses.replace(LINKED, ladder=('abort',))
        sim = model.PrecopySimulation(workload, model.QemuSettings())
        controller = c.Controller(config, lambda: 2)
        result = model.simulate(sim, controller, 0.5, 120)
        # 8 x 320 MiB over half the link, not over all of it.
        self.assertAlmostEqual(8 * MEMORY / (LINK / 2), controller.deadline_s,
                               delta=0.1 * 8 * MEMORY / (LINK / 2))
        self.assertTrue(notes(result, 'deadline moved'))
        self.assertFalse(notes(result, 'network stall'))

    def test_a_link_dying_while_shared_stretches_it_at_most_twice(self):
        workload = dataclasses.replace(BUSY, link_changes=((30.0, LINK / 200),))
        config = dataclasses.replace(LINKED, ladder=('abort',))
        sim = model.PrecopySimulation(workload, model.QemuSettings())
        controller = c.Controller(config, lambda: 2)
        result = model.simulate(sim, controller, 0.5, 120)
        # The fair share was the whole link / 2 (capacity read as 2 x 15).
        self.assertLessEqual(controller.deadline_s,
                             8 * MEMORY / (LINK / 2) + 1)
        self.assertTrue(notes(result, 'network stall'))

    def test_untold_the_same_drop_reads_as_traffic_we_do_not_own(self):
        # Nobody counted the other eleven: what moved tells a shared link
        # from a dead one, and the rate this job gets becomes the one
        # expected of it.
        controller, result = self.run_shared(told=False)
        self.assertFalse(notes(result, 'network stall'))
        self.assertFalse(controller.state.network_stalled)
        shared = notes(result, 'link shared with traffic this host does not '
                               'own')
        self.assertEqual(1, len(shared))
        moved = shared[0].measures_dict()['moved_mib_s']
        self.assertAlmostEqual(15 / 12, moved, delta=0.2)
        self.assertAlmostEqual(LINK / 12, controller.state.contended_bytes_s,
                               delta=0.2 * LINK / 12)
        # The deadline was set by the whole link and does not stretch.
        self.assertLess(controller.deadline_s, 8 * MEMORY / (LINK / 2))

    def test_a_dead_link_is_still_a_stall(self):
        workload = dataclasses.replace(BUSY, link_changes=((30.0, 0.0),))
        controller, result = run(workload, dataclasses.replace(
            LINKED, ladder=('abort',)), 90)
        self.assertTrue(controller.state.network_stalled)
        self.assertTrue(notes(result, 'network stall'))
        self.assertFalse(notes(result, 'link shared'))

    def test_a_shared_link_escalates_where_a_dead_one_holds(self):
        config = dataclasses.replace(LINKED, ladder=('downtime', 'pause',
                                                     'abort'),
                                     pause_allowed=True,
                                     switchover_timeout_s=600.0)
        for rate, paused in ((LINK / 12, True), (0.0, False)):
            workload = dataclasses.replace(BUSY, link_changes=((30.0, rate),))
            _, result = run(workload, config, 400)
            self.assertEqual(paused, A.PAUSE in result.actions(), rate)

    def test_the_link_freed_again(self):
        workload = dataclasses.replace(BUSY, link_changes=(
            (30.0, LINK / 12), (70.0, LINK)))
        controller, result = run(workload, dataclasses.replace(
            LINKED, ladder=('abort',)), 120)
        self.assertTrue(notes(result, 'link shared'))
        freed = notes(result, 'no longer shared')
        self.assertEqual(1, len(freed))
        self.assertGreater(freed[0].at_s, 70.0)
        self.assertIsNone(controller.state.contended_bytes_s)

    def test_a_broken_count_is_ignored(self):
        def broken():
            raise RuntimeError('no count')
        controller, result = run(BUSY, dataclasses.replace(
            LINKED, ladder=('abort',)), 60, link_shares=broken)
        self.assertEqual(1, controller.state.link_shares)
        controller, _ = run(BUSY, dataclasses.replace(
            LINKED, ladder=('abort',)), 60, link_shares=lambda: 0)
        self.assertEqual(1, controller.state.link_shares)

    def test_starting_shared(self):
        config = dataclasses.replace(LINKED, ladder=('abort',),
                                     concurrent_migrations=3)
        slow = dataclasses.replace(BUSY, bandwidth_bytes_s=LINK / 3)
        controller, result = run(slow, config, 60, link_shares=lambda: 3)
        self.assertEqual(3, controller.state.max_link_shares)
        self.assertAlmostEqual(LINK, controller.state.peak_link_bytes_s,
                               delta=0.1 * LINK)


class TestJobDeadline(testtools.TestCase):

    def test_deadline(self):
        for memory_gib, per_gib_s, cap_s, expected in [
                (4, 120, 3600, 480), (64, 120, 3600, 3600),
                (0.5, 120, 3600, 60), (16, 800, 1e9, 12800)]:
            self.assertEqual(expected, c.migration_deadline_s(
                memory_gib, per_gib_s, cap_s))
        self.assertRaises(ValueError, c.migration_deadline_s, 0, 1, 1)

    def test_per_gib_is_a_cap_only_when_set(self):
        policy = livemig_policy.MigrationPolicy()
        unset = policy.replace(completion_timeout_s_per_gib=0)
        self.assertEqual(14400.0, job.deadline_s(unset, 0.3125))
        self.assertEqual(37.5, job.deadline_s(
            policy.replace(completion_timeout_s_per_gib=120), 0.3125))
        self.assertEqual(14400.0, job.deadline_s(
            policy.replace(completion_timeout_s_per_gib=120), 256))

    def test_controller_config_follows_the_link(self):
        policy = livemig_policy.MigrationPolicy().replace(
            completion_timeout_s_per_gib=0)
        from nova_livemig_ext import planner
        config = planner.controller_config_for(policy, 320 * MIB)
        self.assertEqual(job.DEFAULT_DEADLINE_LINK_MULTIPLE,
                         config.deadline_link_multiple)
        self.assertEqual(job.DEFAULT_DEADLINE_FLOOR_S,
                         config.deadline_floor_s)
        self.assertEqual(320 * MIB, config.transfer_bytes)
        self.assertEqual(14400.0, config.deadline_s)

    def test_link_shares_reach_the_controller(self):
        from nova_livemig_ext import planner
        policy = livemig_policy.MigrationPolicy()
        plan = planner.livemig_flags.plan_migration(
            policy, planner.ANY_HOST,
            planner.livemig_flags.InstanceFacts(memory_mib=320))
        decider = job.decision_maker(policy, plan, 320,
                                     link_shares=lambda: 4)
        self.assertIsInstance(decider, c.Controller)
        self.assertEqual(4, decider.config.concurrent_migrations)
        broken = job.decision_maker(policy, plan, 320,
                                    link_shares=lambda: 1 // 0)
        self.assertEqual(1, broken.config.concurrent_migrations)
