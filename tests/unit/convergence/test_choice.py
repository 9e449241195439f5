"""Choosing what the guest pays least for: when to pause, when to stop
trusting the throttle."""

import dataclasses

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model

MIB = model.MIB
A = c.Action
LINK = 15 * MIB
MEMORY = 320 * MIB
SLOW_CONVERGING = model.Workload(MEMORY, LINK, 0.96 * LINK, MEMORY)
BUSY = model.Workload(MEMORY, LINK, 40e6, 200_000_000)


class PacedWriter(model.PrecopySimulation):
    """A writer that needs only 15 % of a vCPU for its rate: QEMU's
    throttle slows it only once it takes more than 85 %."""

    NEEDS = 0.15

    def _throttled(self, rate, running):
        return rate if running >= self.NEEDS else rate * running / self.NEEDS


def run(sim, config, max_s):
    controller = c.Controller(config)
    return controller, model.simulate(sim, controller, 0.5, max_s)


def notes(result, fragment):
    return [d for d in result.decisions
            if d.action is A.NOTE and fragment in d.reason]


class TestPauseAtTheRightMoment(testtools.TestCase):

    def test_a_shrinking_working_set_is_paused_late(self):
        # Converging (λ = 0.9) but needing 187 s against a 171 s deadline.
        # Pausing at the first pass would stop the guest for 19 s; each
        # pass shrinks what a pause must send.
        config = c.ControllerConfig(
            ladder=('downtime', 'pause', 'abort'), pause_allowed=True,
            deadline_s=3600.0, deadline_link_multiple=8.0,
            deadline_floor_s=120.0)
        workload = dataclasses.replace(SLOW_CONVERGING,
                                       dirty_rate_bytes_s=0.9 * LINK)
        sim = model.PrecopySimulation(workload, model.QemuSettings())
        controller, result = run(sim, config, 400)
        self.assertEqual('completed', result.outcome)
        [held] = notes(result, 'pausing, but not yet')
        self.assertIn('the working set still shrinks', held.reason)
        self.assertIn('but the deadline is in', held.reason)
        now_s = held.measures_dict()['guest_now_unavailable_s']
        self.assertGreater(now_s, 15.0)
        [pause] = [d for d in result.decisions if d.action is A.PAUSE]
        self.assertGreater(pause.at_s, held.at_s + 60)
        self.assertIn('the moment for the pause came', pause.reason)
        # Paused late enough to cost under a third of the early pause,
        # early enough to end by the deadline.
        self.assertLess(result.downtime_ms / 1000, now_s / 3)
        self.assertLessEqual(result.total_s, controller.deadline_s)
        self.assertAlmostEqual(
            pause.measures_dict()['expected_downtime_ms'],
            result.downtime_ms, delta=0.3 * result.downtime_ms)

    def test_a_plateau_is_paused_at_once(self):
        # A working set rewritten every pass is all dirty again by the end
        # of the pass: waiting saves nothing.
        config = c.ControllerConfig(ladder=('pause', 'abort'),
                                    pause_allowed=True, deadline_s=300.0)
        sim = model.PrecopySimulation(
            model.Workload(MEMORY, LINK, 40e6, 60 * MIB),
            model.QemuSettings())
        _, result = run(sim, config, 400)
        self.assertFalse(notes(result, 'pausing, but not yet'))
        self.assertEqual([A.PAUSE], result.actions()[1:])

    def test_a_working_set_that_stopped_shrinking_is_not_waited_for(self):
        # The dirty rate says λ = 0.9, but the passes say the working set
        # has not shrunk for the plateau's patience: pausing later saves
        # nothing.
        config = c.ControllerConfig(ladder=('pause', 'abort'),
                                    pause_allowed=True, deadline_s=300.0)
        est = c.estimator.Estimate(
            at_s=30.0, remaining_bytes=100 * MIB, bandwidth_bytes_s=LINK,
            dirty_rate_bytes_s=0.9 * LINK, pass_started_s=28.0)
        state = c.ControllerState(started_s=0.0, downtime_ms=300,
                                  confirmed_downtime_ms=300, estimate=est)
        self.assertIn('still shrinks', c.pause_should_wait(config, state, 30.0))
        stopped = dataclasses.replace(state, stall=dataclasses.replace(
            state.stall,
            passes_without_progress=config.stall_patience_passes))
        self.assertIsNone(c.pause_should_wait(config, stopped, 30.0))

    def test_a_pause_that_no_longer_fits_is_dropped(self):
        config = c.ControllerConfig(ladder=('pause', 'abort'),
                                    pause_allowed=True)
        state = c.ControllerState(
            started_s=0.0, downtime_ms=300, confirmed_downtime_ms=300,
            pause_wait_since_s=10.0, network_stalled=True,
            estimate=c.estimator.Estimate(at_s=20.0, remaining_bytes=MIB,
                                          bandwidth_bytes_s=LINK))
        state, decisions = c.maybe_pause(config, state, 20.0)
        self.assertIsNone(state.pause_wait_since_s)
        self.assertIn(c.RUNG_PAUSE, state.exhausted)
        self.assertEqual([A.NOTE], [d.action for d in decisions])
        self.assertIn('not pausing after all', decisions[0].reason)


class TestThrottleTrust(testtools.TestCase):
    """The lab's throttle steps (50 %, then + 20 %), six passes of chance."""

    CONFIG = c.ControllerConfig(
        ladder=('auto_converge', 'pause', 'abort'), auto_converge_armed=True,
        auto_converge_initial_pct=50, auto_converge_increment_pct=20,
        auto_converge_chance_passes=6, pause_allowed=True,
        switchover_timeout_s=60.0, deadline_s=600.0)
    SETTINGS = model.QemuSettings(auto_converge=True, throttle_initial_pct=50,
                                  throttle_increment_pct=20)

    def test_a_throttle_that_does_not_bite_is_given_up(self):
        sim = PacedWriter(BUSY, self.SETTINGS)
        controller, result = run(sim, self.CONFIG, 700)
        [verdict] = notes(result, 'throttling does not bite')
        self.assertEqual(0.0, verdict.measures_dict()['throttle_effect'])
        self.assertIn('from 50% to 90%', verdict.reason)
        [pause] = [d for d in result.decisions if d.action is A.PAUSE]
        self.assertEqual(verdict.at_s, pause.at_s)
        # Given up before its six passes of chance (counted from the first
        # throttled pass).
        first = controller.state.estimate.throttle_started_passes
        self.assertLess(pause.measures_dict()['iteration'] - 1 - first, 6)
        self.assertEqual('completed', result.outcome)

    def test_a_throttle_that_bites_keeps_its_chance(self):
        sim = model.PrecopySimulation(BUSY, self.SETTINGS)
        controller, result = run(sim, self.CONFIG, 700)
        self.assertFalse(notes(result, 'throttling does not bite'))
        self.assertGreater(controller.state.throttle_best_effect, 0.5)
        self.assertEqual('completed', result.outcome)
        self.assertNotIn(A.PAUSE, result.actions())

    def test_effect_rule(self):
        # (first %, first MiB/s, in force %, MiB/s, effect)
        cases = [
            (50, 40.0, 75, 20.0, 1.0),  # CPU-bound: halves with its time
            (50, 40.0, 90, 38.0, 0.0625),  # paced: barely moves
            (50, 40.0, 90, 45.0, 0.0),  # rose meanwhile
            (50, 40.0, 50, 10.0, None),  # the throttle has not risen
        ]
        for first, before, pct, now, effect in cases:
            state = c.ControllerState(
                started_s=0.0, downtime_ms=300, confirmed_downtime_ms=300,
                throttle_first_pct=first, throttled_dirty_bytes_s=before * MIB,
                pass_throttle_pct=pct, pass_dirty_bytes_s=now * MIB)
            if effect is None:
                self.assertIsNone(c.throttle_effect(state))
            else:
                self.assertAlmostEqual(effect, c.throttle_effect(state), 3)

    def test_judged_only_high_and_on_the_best_effect(self):
        config = self.CONFIG
        base = dict(started_s=0.0, downtime_ms=300, confirmed_downtime_ms=300,
                    throttle_first_pct=50)
        # (in force %, best effect, hopeless)
        for pct, best, hopeless in [(70, 0.0, False), (90, 0.0, True),
                                    (90, 0.2, True), (90, 0.3, False),
                                    (90, None, False)]:
            state = c.ControllerState(pass_throttle_pct=pct,
                                      throttle_best_effect=best, **base)
            self.assertEqual(hopeless, c.throttle_hopeless(config, state),
                             (pct, best))
