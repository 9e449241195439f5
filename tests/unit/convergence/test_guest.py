"""The guest's view: longest unavailability and work lost."""

import dataclasses

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import estimator as e
from nova_livemig_ext.convergence import guest as g
from nova_livemig_ext.convergence import model

MIB = model.MIB
LINK = 15 * MIB
BUSY = model.Workload(320 * MIB, LINK, 40e6, 200_000_000)
A = c.Action


def estimate(remaining_mib, dirty_mib_s=20.0, in_pass_s=2.0,
             largest_mib=200.0):
    return e.Estimate(
        at_s=10.0 + in_pass_s, remaining_bytes=int(remaining_mib * MIB),
        bandwidth_bytes_s=LINK, dirty_rate_bytes_s=dirty_mib_s * MIB,
        pass_started_s=10.0,
        largest_working_set_bytes=int(largest_mib * MIB))


class TestPredictions(testtools.TestCase):

    def test_pause_and_postcopy_wait_for_what_is_dirty(self):
        # 30 MiB left + 2 s x 20 MiB/s dirtied = 70 MiB at 15 MiB/s.
        est = estimate(30)
        pause = g.predicted_pause(est, lost_s=1.5)
        self.assertAlmostEqual(70 / 15, pause.longest_unavailable_s, 3)
        self.assertAlmostEqual(70 / 15 + 1.5, pause.work_lost_s, 3)
        post = g.predicted_postcopy(est)
        self.assertAlmostEqual(70 / 15, post.postcopy_stall_s, 3)
        self.assertAlmostEqual(70 / 15, post.longest_unavailable_s, 3)
        self.assertIsNone(post.downtime_s)
        self.assertIn('post-copy fault stall 4.67 s', post.text())

    def test_throttle_is_work_lost_not_a_pause(self):
        self.assertEqual(0.0, g.throttle_lost_s(None, 10))
        self.assertEqual(0.0, g.throttle_lost_s(50, -1))
        self.assertAlmostEqual(9.0, g.throttle_lost_s(90, 10))
        self.assertAlmostEqual(10.0, g.throttle_lost_s(150, 10))
        est = estimate(1)
        cost = g.predicted_throttle(est, 300, 50, 8.0, lost_s=1.0)
        self.assertAlmostEqual(5.0, cost.throttle_lost_s)
        self.assertLessEqual(cost.longest_unavailable_s, 0.3 + 1e-9)
        # At 50 % QEMU stops the vCPU 10 ms at a time: less than downtime.
        self.assertAlmostEqual(0.01, cost.throttle_stop_s)

    def test_a_high_throttle_stops_the_guest_for_longer(self):
        # QEMU: run 10 ms, sleep pct / (100 - pct) of that; 99 % at most.
        self.assertEqual(0.0, g.throttle_stop_s(None))
        self.assertEqual(0.0, g.throttle_stop_s(0))
        self.assertAlmostEqual(0.09, g.throttle_stop_s(90))
        self.assertAlmostEqual(0.99, g.throttle_stop_s(99))
        self.assertAlmostEqual(0.99, g.throttle_stop_s(100))
        cost = g.predicted_throttle(estimate(1), 300, 99, 8.0)
        self.assertAlmostEqual(0.99, cost.longest_unavailable_s)
        self.assertIn('stops for 0.99 s at a time', cost.text())
        ended = g.measured(completed=True, ended_at_s=60.0,
                           switchover_started_s=None, postcopy=False,
                           paused=False, libvirt_downtime_ms=250.0,
                           lost_s=20.0, max_throttle_pct=99)
        self.assertAlmostEqual(0.99, ended.longest_unavailable_s)
        self.assertEqual(0.25, ended.downtime_s)
        # Work lost is downtime + throttle x time: the stops are in it.
        self.assertAlmostEqual(20.25, ended.work_lost_s)
        # A stop shorter than the downtime changes nothing.
        low = g.measured(completed=True, ended_at_s=60.0,
                         switchover_started_s=None, postcopy=False,
                         paused=False, libvirt_downtime_ms=250.0,
                         lost_s=2.0, max_throttle_pct=70)
        self.assertEqual(0.25, low.longest_unavailable_s)


class TestMeasured(testtools.TestCase):

    def test_post_copy_is_never_libvirts_downtime_alone(self):
        cost = g.measured(completed=True, ended_at_s=30.0,
                          switchover_started_s=22.5, postcopy=True,
                          paused=False, libvirt_downtime_ms=None,
                          lost_s=2.0)
        self.assertEqual(7.5, cost.longest_unavailable_s)
        self.assertEqual(9.5, cost.work_lost_s)
        self.assertTrue(cost.upper_bound)
        self.assertIn('longest unavailability at most 7.50 s', cost.text())

    def test_endings(self):
        # (completed, switch at, postcopy, paused, libvirt ms, longest)
        cases = [
            (True, None, False, False, 250.0, 0.25),
            (True, 20.0, False, True, 120.0, 10.0),  # our pause: 20..30 s
            (False, None, False, False, None, 0.0),  # aborted, ran on
            (False, 25.0, False, True, None, 5.0),  # paused, then resumed
            (True, None, False, False, None, None),  # libvirt said nothing
        ]
        for completed, switch, post, paused, ms, longest in cases:
            cost = g.measured(completed=completed, ended_at_s=30.0,
                              switchover_started_s=switch, postcopy=post,
                              paused=paused, libvirt_downtime_ms=ms,
                              lost_s=0.0)
            self.assertEqual(longest, cost.longest_unavailable_s,
                             (completed, switch, post, paused, ms))


def measured_by(controller, completed, ended_at_s, libvirt_downtime_ms):
    """What the guest paid, from the controller's state (the monitor
    counts it from its report: monitor.guest_view)."""
    state = controller.state
    return g.measured(
        completed=completed, ended_at_s=ended_at_s,
        switchover_started_s=state.switchover_started_s,
        postcopy=state.phase is c.Phase.POSTCOPY,
        paused=state.phase is c.Phase.PAUSED,
        libvirt_downtime_ms=libvirt_downtime_ms,
        lost_s=state.throttle_lost_s)


class TestControllerSaysWhatTheGuestPays(testtools.TestCase):

    def run_busy(self, config, settings):
        sim = model.PrecopySimulation(BUSY, settings)
        controller = c.Controller(config)
        result = model.simulate(sim, controller, 0.5, config.deadline_s + 60)
        return controller, result, sim

    def test_post_copy_switch_predicts_the_stall(self):
        config = c.ControllerConfig(
            ladder=('postcopy', 'abort'), postcopy_armed=True,
            postcopy_allowed=True, deadline_s=200.0)
        controller, result, sim = self.run_busy(
            config, model.QemuSettings(postcopy=True))
        self.assertEqual('completed', result.outcome)
        [switch] = [d for d in result.decisions
                    if d.action is A.START_POSTCOPY]
        predicted = switch.measures_dict()['guest_unavailable_s']
        self.assertGreater(predicted, 1.0)
        self.assertIn('the guest is predicted to pay', switch.reason)
        measured = measured_by(controller, True, sim.ended_at_s, None)
        self.assertTrue(measured.upper_bound)
        self.assertAlmostEqual(sim.ended_at_s - switch.at_s,
                               measured.postcopy_stall_s, delta=0.01)
        # The phase bounds the stall; the prediction is within it.
        self.assertLessEqual(predicted, measured.postcopy_stall_s + 1.0)

    def test_throttle_time_is_counted(self):
        config = c.ControllerConfig(
            ladder=('auto_converge', 'abort'), auto_converge_armed=True,
            deadline_s=150.0)
        controller, result, sim = self.run_busy(
            config, model.QemuSettings(auto_converge=True))
        self.assertGreater(sim.max_throttle_pct, 0)
        lost = controller.state.throttle_lost_s
        # Integrated from the samples: between the throttle seen and the
        # time spent, within a poll's worth of the truth.
        pcts = [(t, s.auto_converge_throttle_pct or 0)
                for t, s in result.samples]
        truth = sum(p / 100 * (t1 - t0)
                    for (t0, p), (t1, _) in zip(pcts, pcts[1:]))
        self.assertAlmostEqual(truth, lost, delta=0.01)
        self.assertGreater(lost, 10.0)
        cost = measured_by(controller, result.outcome == 'completed',
                           sim.ended_at_s, None)
        self.assertEqual(lost, cost.throttle_lost_s)
        notes = [d for d in result.decisions
                 if d.rung == c.RUNG_AUTO_CONVERGE]
        self.assertTrue(notes)
        # Pre-copy does not converge at 300 ms (its downtime is unknown),
        # but the throttle's price over its chance is said.
        self.assertIn('guest_work_lost_s', notes[0].measures_dict())
        self.assertRegex(notes[0].reason, r'throttle [0-9.]+ s\)')
        # As things stand at the end, the throttle's stops are counted.
        pct = controller.state.estimate.throttle_pct
        self.assertGreater(pct or 0, 0)
        predicted = controller.predicted_guest_cost
        self.assertAlmostEqual(g.throttle_stop_s(pct), predicted.throttle_stop_s)
        # Pre-copy's downtime is unknown here: so is the longest, whatever
        # the stops (they only bound it from below).
        self.assertIsNone(predicted.longest_unavailable_s)
        self.assertRegex(predicted.text(), r'stops for [0-9.]+ s at a time')

    def test_pause_prediction_is_kept(self):
        config = dataclasses.replace(
            c.ControllerConfig(), ladder=('pause', 'abort'),
            pause_allowed=True, deadline_s=200.0)
        controller, result, sim = self.run_busy(config,
                                                model.QemuSettings())
        [pause] = [d for d in result.decisions if d.action is A.PAUSE]
        predicted = controller.predicted_guest_cost
        self.assertEqual(pause.measures_dict()['guest_unavailable_s'],
                         round(predicted.longest_unavailable_s, 2))
        measured = measured_by(controller, True, sim.ended_at_s,
                               sim.downtime_ms)
        self.assertAlmostEqual(predicted.longest_unavailable_s,
                               measured.longest_unavailable_s,
                               delta=0.3 * measured.longest_unavailable_s)
