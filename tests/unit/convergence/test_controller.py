"""The controller end to end: scenarios, and what acknowledgements change."""

import dataclasses
import re

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples

MIB = model.MIB
GIB = model.GIB
A = c.Action

LINK = 15 * MIB
# The lab's memory-busy guest: 320 MiB, a 200 MB working set written at
# 40 MB/s over a 15 MiB/s link: never converges by itself.
BUSY = model.Workload(320 * MIB, LINK, 40e6, 200_000_000)
# The same guest with a small working set: fits a 1 s downtime.
SMALL_WS = model.Workload(320 * MIB, LINK, 40e6, 10 * MIB)
# A working set that fits neither the ceiling nor the switchover timeout.
MEDIUM_WS = model.Workload(320 * MIB, LINK, 40e6, 60 * MIB)
CONVERGING = model.Workload(320 * MIB, LINK, 0.3 * LINK, 320 * MIB)

ARMED_ALL = dict(postcopy_armed=True, postcopy_allowed=True,
                 pause_allowed=True, auto_converge_armed=True)


def run(workload, config, settings=model.QemuSettings(), poll_s=0.5,
        max_s=None, on_poll=None):
    sim = model.PrecopySimulation(workload, settings)
    max_s = max_s if max_s is not None else config.deadline_s + 120
    return model.simulate(sim, c.Controller(config), poll_s, max_s, on_poll)


def effects(result):
    """Decisions that change the job, after the initial downtime."""
    return [d for d in result.decisions[1:] if d.has_effect]


class TestScenarios(testtools.TestCase):

    def test_converging_is_never_escalated(self):
        result = run(CONVERGING, c.ControllerConfig(**ARMED_ALL))
        self.assertEqual('completed', result.outcome)
        self.assertEqual([A.SET_DOWNTIME], result.actions(with_notes=True))

    def test_slow_but_converging_64_gib_is_never_escalated(self):
        # 64 GiB over 1 Gbit/s at λ = 0.5: the first pass alone takes over
        # nine minutes and the next ones minutes each.
        workload = model.Workload(64 * GIB, 117 * MIB, 58.5 * MIB, 64 * GIB)
        config = c.ControllerConfig(
            deadline_s=c.migration_deadline_s(64, 120, 7200),
            poll_interval_s=5.0, **ARMED_ALL)
        result = run(workload, config, poll_s=5.0)
        self.assertEqual('completed', result.outcome)
        self.assertEqual([A.SET_DOWNTIME], result.actions(with_notes=True))
        self.assertGreater(result.total_s, 1000)

    def test_oscillating_dirty_rate_is_no_stall(self):
        # Bursts take the dirty rate between 0.06 and 1.14 of the link;
        # remaining bytes saw-tooth through every pass.
        for period_s, fraction in [(3, 0.5), (5, 0.9), (17, 0.9)]:
            workload = model.Workload(1 * GIB, LINK, 0.6 * LINK, 1 * GIB,
                                      dirty_wave_fraction=fraction,
                                      dirty_wave_period_s=period_s)
            result = run(workload, c.ControllerConfig(deadline_s=900,
                                                      **ARMED_ALL))
            self.assertEqual('completed', result.outcome, period_s)
            self.assertEqual([A.SET_DOWNTIME],
                             result.actions(with_notes=True), period_s)
            remaining = [s.memory_remaining_bytes for _, s in result.samples]
            rises = sum(1 for a, b in zip(remaining, remaining[1:]) if b > a)
            self.assertGreater(rises, 5, period_s)

    # (name, workload, qemu settings, config changes, effects expected in
    #  order, outcome)
    LADDERS = [
        ('downtime fits the ceiling', SMALL_WS, model.QemuSettings(),
         dict(ladder=('downtime', 'abort')), [A.SET_DOWNTIME], 'completed'),
        ('auto-converge', BUSY,
         model.QemuSettings(auto_converge=True, throttle_initial_pct=50,
                            throttle_increment_pct=20),
         dict(ladder=('downtime', 'auto_converge', 'abort'),
              auto_converge_armed=True), [], 'completed'),
        ('post-copy', BUSY, model.QemuSettings(postcopy=True),
         dict(ladder=('downtime', 'auto_converge', 'postcopy', 'abort'),
              postcopy_armed=True, postcopy_allowed=True),
         [A.START_POSTCOPY], 'completed'),
        ('pause', MEDIUM_WS, model.QemuSettings(),
         dict(ladder=('downtime', 'postcopy', 'pause', 'abort'),
              pause_allowed=True), [A.PAUSE], 'completed'),
        ('abort only', BUSY, model.QemuSettings(),
         dict(ladder=('downtime', 'abort')), [A.ABORT], 'aborted'),
        ('nothing permitted', BUSY, model.QemuSettings(),
         dict(ladder=('downtime', 'auto_converge', 'postcopy', 'pause')),
         [A.ABORT], 'aborted'),
        ('post-copy before pause', BUSY, model.QemuSettings(postcopy=True),
         dict(ladder=('postcopy', 'pause', 'abort'), postcopy_armed=True,
              postcopy_allowed=True, pause_allowed=True),
         [A.START_POSTCOPY], 'completed'),
        ('post-copy not armed in QEMU: falls through to pause', MEDIUM_WS,
         model.QemuSettings(postcopy=False),
         dict(ladder=('postcopy', 'pause', 'abort'), postcopy_armed=True,
              postcopy_allowed=True, pause_allowed=True),
         [A.START_POSTCOPY, A.PAUSE], 'completed'),
    ]

    def test_non_converging_escalates_in_ladder_order(self):
        for name, workload, settings, changes, expected, outcome in (
                self.LADDERS):
            config = c.ControllerConfig(deadline_s=300, **changes)
            result = run(workload, config, settings)
            self.assertEqual(outcome, result.outcome, name)
            actions = [d.action for d in effects(result)]
            distinct = [a for i, a in enumerate(actions)
                        if i == 0 or actions[i - 1] is not a]
            self.assertEqual(expected, distinct, name)
            positions = [config.ladder.index(r) for r in result.rungs()
                         if r in config.ladder]
            self.assertEqual(sorted(positions), positions, name)

    def test_plateau_found_two_passes_after_the_first(self):
        config = c.ControllerConfig(deadline_s=300,
                                    ladder=('downtime', 'abort'))
        result = run(BUSY, config)
        first_note = next(d for d in result.decisions[1:])
        # Pass 1 ends after 320 MiB / 15 MiB/s ≈ 21 s, passes of the
        # working set take 200 MB / 15 MiB/s ≈ 12.7 s.
        self.assertLess(first_note.at_s, 21.3 + 2 * 12.7 + 2)
        self.assertIn('stopped shrinking',
                      ' '.join(d.reason for d in result.decisions))

    def test_auto_converge_is_given_its_passes(self):
        config = c.ControllerConfig(
            deadline_s=600, auto_converge_armed=True,
            ladder=('downtime', 'auto_converge', 'abort'))
        # A throttle too gentle to matter: 5 % steps.
        settings = model.QemuSettings(auto_converge=True,
                                      throttle_initial_pct=5,
                                      throttle_increment_pct=5)
        result = run(BUSY, config, settings)
        notes = [d for d in result.decisions if d.rung == 'auto_converge']
        abort_note = [d for d in result.decisions if d.rung == 'abort'
                      and d.action is A.NOTE]
        self.assertEqual(1, len(notes))
        self.assertIn('giving it 4 passes', notes[0].reason)
        self.assertEqual(1, len(abort_note))
        # Four passes of QEMU's throttling, counted from its first one.
        throttled_from = next(s.iteration for _, s in result.samples
                              if s.auto_converge_throttle_pct)
        given_up_at = abort_note[0].measures_dict()['iteration']
        self.assertEqual(4, given_up_at - throttled_from)

    def test_network_stall_never_escalates_into_post_copy(self):
        workload = dataclasses.replace(BUSY, link_changes=((30.0, 0.0),))
        config = c.ControllerConfig(deadline_s=200, **ARMED_ALL)
        result = run(workload, config,
                     model.QemuSettings(postcopy=True, auto_converge=True))
        self.assertEqual('aborted', result.outcome)
        self.assertEqual([A.ABORT], [d.action for d in effects(result)])
        self.assertGreaterEqual(effects(result)[0].at_s, 200)
        self.assertTrue(any('network stall' in d.reason
                            for d in result.decisions))

    def test_network_stall_after_post_copy_choice_cancels_it(self):
        workload = dataclasses.replace(BUSY, link_changes=((50.0, 0.0),))
        config = c.ControllerConfig(deadline_s=200, **ARMED_ALL)
        result = run(workload, config, model.QemuSettings(postcopy=True))
        self.assertNotIn(A.START_POSTCOPY, result.actions())

    def test_deadline_aborts(self):
        # Converging, but far too slowly for a 40 s deadline.
        workload = model.Workload(320 * MIB, LINK, 0.7 * LINK, 320 * MIB)
        config = c.ControllerConfig(deadline_s=40)
        result = run(workload, config)
        self.assertEqual('aborted', result.outcome)
        abort = effects(result)[-1]
        self.assertIs(A.ABORT, abort.action)
        self.assertGreaterEqual(abort.at_s, 40)
        self.assertIn('deadline of 40 s passed', abort.reason)

    def test_deadline_pauses_when_allowed_and_short(self):
        # The deadline passes in the first pass (1 GiB at 15 MiB/s takes
        # 68 s); the allowed pause, about 28 s here, is the last try.
        workload = model.Workload(GIB, LINK, 0.5 * LINK, GIB)
        config = c.ControllerConfig(deadline_s=40, pause_allowed=True,
                                    ladder=('downtime', 'pause', 'abort'))
        result = run(workload, config)
        self.assertEqual('completed', result.outcome)
        self.assertEqual([A.PAUSE], [d.action for d in effects(result)])
        self.assertGreaterEqual(effects(result)[0].at_s, 40)
        self.assertIn('deadline of 40 s passed', effects(result)[0].reason)

    def test_downtime_never_above_the_ceiling(self):
        for workload in (BUSY, SMALL_WS, MEDIUM_WS, CONVERGING):
            for ceiling in (300, 500, 1000, 5000):
                config = c.ControllerConfig(deadline_s=200,
                                            max_downtime_ms=ceiling)
                result = run(workload, config)
                limits = [d.downtime_ms for d in result.decisions
                          if d.action is A.SET_DOWNTIME]
                self.assertLessEqual(max(limits), ceiling)
                if result.outcome == 'completed' and not result.actions() \
                        .count(A.PAUSE):
                    self.assertLessEqual(
                        result.downtime_ms,
                        ceiling + model.SWITCHOVER_OVERHEAD_MS)

    def test_pause_reason_gives_the_expected_downtime(self):
        config = c.ControllerConfig(deadline_s=300, pause_allowed=True,
                                    ladder=('downtime', 'pause', 'abort'))
        result = run(MEDIUM_WS, config)
        pause = next(d for d in result.decisions if d.action is A.PAUSE)
        match = re.search(r'expected downtime (\d+) ms', pause.reason)
        self.assertIsNotNone(match)
        expected_ms = int(match.group(1))
        self.assertEqual(expected_ms,
                         pause.measures_dict()['expected_downtime_ms'])
        self.assertLess(abs(result.downtime_ms - expected_ms),
                        0.3 * result.downtime_ms)

    def test_pause_lifts_the_bandwidth_cap_first(self):
        config = c.ControllerConfig(deadline_s=300, pause_allowed=True,
                                    max_bandwidth_mib_s=100,
                                    ladder=('pause', 'abort'))
        result = run(MEDIUM_WS, config)
        self.assertEqual([A.SET_SPEED, A.PAUSE], result.actions()[1:3])

    def test_pause_not_used_when_longer_than_the_switchover_timeout(self):
        config = c.ControllerConfig(deadline_s=120, pause_allowed=True,
                                    switchover_timeout_s=5,
                                    ladder=('pause', 'abort'))
        result = run(BUSY, config)
        self.assertNotIn(A.PAUSE, result.actions())
        self.assertTrue(any('over the switchover timeout' in d.reason
                            for d in result.decisions))

    def test_post_copy_switches_near_the_trough(self):
        # 4 GiB over 1 Gbit/s at λ = 0.6 misses an 80 s deadline; post-copy
        # right after pass 1 would pull 2.4 GiB, at the trough 1.4 GiB.
        workload = model.Workload(4 * GIB, 117 * MIB, 0.6 * 117 * MIB,
                                  4 * GIB)
        config = c.ControllerConfig(deadline_s=80, postcopy_armed=True,
                                    postcopy_allowed=True,
                                    ladder=('postcopy', 'abort'))
        result = run(workload, config, model.QemuSettings(postcopy=True))
        self.assertEqual('completed', result.outcome)
        self.assertLessEqual(result.total_s, 80)
        switch = next(d for d in result.decisions
                      if d.action is A.START_POSTCOPY)
        measures = switch.measures_dict()
        self.assertLess(measures['remaining_mib'],
                        0.2 * measures['working_set_mib'])

    def test_post_copy_does_not_wait_for_a_trough_that_saves_nothing(self):
        config = c.ControllerConfig(deadline_s=300, postcopy_armed=True,
                                    postcopy_allowed=True,
                                    ladder=('postcopy', 'abort'))
        result = run(BUSY, config, model.QemuSettings(postcopy=True))
        note, switch = [d for d in result.decisions if d.rung == 'postcopy']
        self.assertIs(A.START_POSTCOPY, switch.action)
        self.assertEqual(note.at_s, switch.at_s)
        # Total within 3 × memory / bandwidth.
        self.assertLess(result.total_s, 3 * 320 / 15)

    def test_post_copy_must_fit_the_deadline(self):
        # 4 GiB over 15 MiB/s: post-copy alone would take minutes.
        workload = model.Workload(4 * GIB, LINK, 40e6, 2 * GIB)
        config = c.ControllerConfig(deadline_s=400, postcopy_armed=True,
                                    postcopy_allowed=True,
                                    ladder=('postcopy', 'abort'))
        result = run(workload, config, model.QemuSettings(postcopy=True))
        self.assertNotIn(A.START_POSTCOPY, result.actions())
        self.assertEqual('aborted', result.outcome)

    def test_post_copy_needs_the_instance_to_allow_it(self):
        config = c.ControllerConfig(deadline_s=200, postcopy_armed=True,
                                    postcopy_allowed=False,
                                    ladder=('postcopy', 'abort'))
        result = run(BUSY, config, model.QemuSettings(postcopy=True))
        self.assertNotIn(A.START_POSTCOPY, result.actions())
        self.assertTrue(any('not allowed for this instance' in d.reason
                            for d in result.decisions))

    def test_switchover_timeout_after_a_pause_aborts(self):
        config = c.ControllerConfig(deadline_s=300, pause_allowed=True,
                                    switchover_timeout_s=20,
                                    ladder=('pause', 'abort'))

        def cut_link_once_paused(sim):
            if sim.paused_at_s is not None and not sim.workload.link_changes:
                sim.workload = dataclasses.replace(
                    sim.workload, link_changes=((sim.now_s, 0.0),))

        result = run(MEDIUM_WS, config, on_poll=cut_link_once_paused)
        self.assertEqual([A.PAUSE, A.ABORT], result.actions()[1:])
        pause, abort = effects(result)
        self.assertGreaterEqual(abort.at_s - pause.at_s, 20)
        self.assertIn('source guest is resumed', abort.reason)

    def test_post_copy_is_never_aborted(self):
        config = c.ControllerConfig(deadline_s=80, postcopy_armed=True,
                                    postcopy_allowed=True,
                                    switchover_timeout_s=10,
                                    ladder=('postcopy', 'abort'))

        def cut_link_in_post_copy(sim):
            if sim.phase == 'postcopy' and not sim.workload.link_changes:
                sim.workload = dataclasses.replace(
                    sim.workload, link_changes=((sim.now_s, 0.0),))

        result = run(BUSY, config, model.QemuSettings(postcopy=True),
                     max_s=200, on_poll=cut_link_in_post_copy)
        self.assertNotIn(A.ABORT, result.actions())
        self.assertTrue(any('not aborting' in d.reason
                            for d in result.decisions))

    def test_every_decision_carries_its_numbers(self):
        config = c.ControllerConfig(deadline_s=300, **ARMED_ALL)
        result = run(BUSY, config, model.QemuSettings(postcopy=True,
                                                      auto_converge=True))
        for decision in result.decisions[1:]:
            measures = decision.measures_dict()
            for key in ('elapsed_s', 'remaining_mib', 'bandwidth_mib_s',
                        'dirty_ratio', 'downtime_limit_ms'):
                self.assertIn(key, measures, decision.reason)
            self.assertTrue(decision.reason)


class TestAcknowledge(testtools.TestCase):

    def _state(self, config, phase):
        state, _ = c.initial_state(config, 0.0)
        return dataclasses.replace(state, phase=phase,
                                   switchover_started_s=5.0)

    # (action, phase before, applied, phase after, rung marked as tried)
    CASES = [
        (A.START_POSTCOPY, c.Phase.POSTCOPY, True, c.Phase.POSTCOPY, None),
        (A.START_POSTCOPY, c.Phase.POSTCOPY, False, c.Phase.PRECOPY,
         'postcopy'),
        (A.PAUSE, c.Phase.PAUSED, False, c.Phase.PRECOPY, 'pause'),
        (A.ABORT, c.Phase.ABORTING, False, c.Phase.PAUSED, None),
    ]

    def test_failed_effects(self):
        config = c.ControllerConfig()
        for action, before, applied, after, tried in self.CASES:
            state = self._state(config, before)
            decision = c.Decision(action=action, reason='test')
            state = c.acknowledge(config, state, decision, applied)
            self.assertEqual(after, state.phase, (action, applied))
            if tried:
                self.assertIn(tried, state.exhausted)

    def test_failed_downtime_returns_to_the_confirmed_limit(self):
        config = c.ControllerConfig()
        state, _ = c.initial_state(config, 0.0)
        state = dataclasses.replace(state, downtime_ms=650)
        decision = c.Decision(action=A.SET_DOWNTIME, reason='t',
                              rung='downtime', downtime_ms=650)
        self.assertEqual(300, c.acknowledge(config, state, decision,
                                            False).downtime_ms)
        confirmed = c.acknowledge(config, state, decision, True)
        self.assertEqual(650, confirmed.confirmed_downtime_ms)

    def test_initial_downtime_waits_for_the_job_and_is_retried(self):
        controller = c.Controller(c.ControllerConfig())
        self.assertRaises(RuntimeError, lambda: controller.state)
        self.assertIsNone(controller.predicted_downtime_ms)
        self.assertEqual((), controller.start(100.0))
        self.assertEqual((), controller.observe(
            samples.JobSample(job_type=samples.JobType.NONE), 101.0))
        running = samples.JobSample(job_type=samples.JobType.UNBOUNDED,
                                    memory_remaining_bytes=GIB, iteration=1)
        tries = []
        for now_s in range(102, 110):
            for decision in controller.observe(running, now_s):
                tries.append(decision)
                controller.acknowledge(decision, False, now_s)
        self.assertEqual([A.SET_DOWNTIME] * c.INITIAL_DOWNTIME_ATTEMPTS,
                         [d.action for d in tries])
        self.assertEqual(300, tries[0].downtime_ms)
        self.assertEqual(2.0, tries[0].at_s)
