"""Upstream mode: exactly Nova 34's decisions for a given config and size."""

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence import upstream as u

A = c.Action
MIB = model.MIB
GIB = model.GIB


def running(remaining=GIB, dirty_pages_s=0, iteration=1):
    return samples.JobSample(job_type=samples.JobType.UNBOUNDED,
                             memory_total_bytes=4 * GIB,
                             memory_remaining_bytes=remaining,
                             memory_processed_bytes=0, iteration=iteration,
                             dirty_rate_bytes_s=dirty_pages_s * 4096.0)


def poll(controller, until_s, interval_s=0.5, fail=(), sample=running):
    """Nova's loop: a decision list per poll, as (elapsed, decision)."""
    controller.start(0.0)
    out = []
    now_s = 0.0
    while now_s <= until_s:
        for decision in controller.observe(sample(), now_s):
            out.append((now_s, decision))
            controller.acknowledge(decision, decision.action not in fail,
                                   now_s)
        now_s = round(now_s + interval_s, 6)
    return out


class TestRules(testtools.TestCase):

    def test_downtime_steps_of_nova_docstring(self):
        # Nova's own example: 10 steps, 30 s delay, 3 GB, 400 ms.
        config = u.UpstreamConfig(data_gib=3, downtime_ms=400,
                                  downtime_steps=10, downtime_delay_s=30)
        self.assertEqual(
            ((0, 40), (90, 76), (180, 112), (270, 148), (360, 184),
             (450, 220), (540, 256), (630, 292), (720, 328), (810, 364),
             (900, 400)),
            u.downtime_steps(config))

    def test_downtime_steps_defaults(self):
        # 4 GiB with Nova's defaults: a step every 300 s from 50 to 500 ms.
        steps = u.downtime_steps(u.UpstreamConfig(data_gib=4))
        self.assertEqual((0, 50), steps[0])
        self.assertEqual((300, 95), steps[1])
        self.assertEqual((3000, 500), steps[-1])
        self.assertEqual(11, len(steps))

    def test_downtime_due(self):
        steps = ((0, 50), (300, 95), (600, 140))
        for elapsed_s, expected in [(0, None), (0.5, 50), (300, 50),
                                    (300.5, 95), (10000, 140)]:
            self.assertEqual(expected, u.downtime_due_ms(steps, elapsed_s),
                             elapsed_s)

    def test_data_gib(self):
        for memory_mib, disks, expected in [
                (512, (), 2.0), (4096, (), 4.0), (16384, (), 16.0),
                (4096, (GIB,), 6.0), (4096, (10 * GIB, 3 * GIB), 17.0)]:
            self.assertEqual(expected, u.nova_data_gib(memory_mib, disks))

    def test_completion_timeout(self):
        for data_gib, per_gib_s, expected in [(4, 800, 3200), (2.5, 800, 2000),
                                              (16, 0, 0)]:
            config = u.UpstreamConfig(data_gib=data_gib,
                                      completion_timeout_s=per_gib_s)
            self.assertEqual(expected, u.completion_timeout_s(config))

    def test_timeout_reached(self):
        config = u.UpstreamConfig(data_gib=2, completion_timeout_s=10)
        for elapsed_s, in_postcopy, expected in [
                (20, False, False), (20.5, False, True),
                (20.5, True, False)]:
            self.assertEqual(expected, u.timeout_reached(config, elapsed_s,
                                                         in_postcopy))
        disabled = u.UpstreamConfig(data_gib=2, completion_timeout_s=0)
        self.assertFalse(u.timeout_reached(disabled, 1e9, False))

    def test_rejects_what_nova_rejects(self):
        for changes in [dict(downtime_ms=99), dict(downtime_steps=2),
                        dict(downtime_delay_s=2),
                        dict(timeout_action='explode'),
                        dict(data_gib=0)]:
            self.assertRaises(ValueError, u.UpstreamConfig,
                              **dict(dict(data_gib=2), **changes))


class TestDecisions(testtools.TestCase):

    def test_abort_after_the_completion_timeout(self):
        # 2 GiB: steps every 150 s, timeout at 1600 s.
        config = u.UpstreamConfig(data_gib=2)
        decisions = poll(u.UpstreamController(config), 1700)
        self.assertEqual(
            [(0.5, A.SET_DOWNTIME, 50), (150.5, A.SET_DOWNTIME, 95),
             (300.5, A.SET_DOWNTIME, 140), (450.5, A.SET_DOWNTIME, 185),
             (600.5, A.SET_DOWNTIME, 230), (750.5, A.SET_DOWNTIME, 275),
             (900.5, A.SET_DOWNTIME, 320), (1050.5, A.SET_DOWNTIME, 365),
             (1200.5, A.SET_DOWNTIME, 410), (1350.5, A.SET_DOWNTIME, 455),
             (1500.5, A.SET_DOWNTIME, 500), (1600.5, A.ABORT, None)],
            [(t, d.action, d.downtime_ms) for t, d in decisions])

    def test_force_complete_with_post_copy(self):
        config = u.UpstreamConfig(data_gib=2, completion_timeout_s=5,
                                  timeout_action='force_complete',
                                  postcopy_enabled=True)
        decisions = poll(u.UpstreamController(config), 30)
        # Timeout after 10 s, queued, run on the next poll.
        self.assertEqual([(0.5, A.SET_DOWNTIME), (11.0, A.START_POSTCOPY)],
                         [(t, d.action) for t, d in decisions])

    def test_failed_post_copy_switch_is_retried(self):
        config = u.UpstreamConfig(data_gib=2, completion_timeout_s=5,
                                  timeout_action='force_complete',
                                  postcopy_enabled=True)
        decisions = poll(u.UpstreamController(config), 12,
                         fail={A.START_POSTCOPY})
        self.assertEqual([11.0, 11.5, 12.0],
                         [t for t, d in decisions
                          if d.action is A.START_POSTCOPY])

    def test_force_complete_without_post_copy_pauses_once(self):
        config = u.UpstreamConfig(data_gib=2, completion_timeout_s=5,
                                  timeout_action='force_complete')
        decisions = poll(u.UpstreamController(config), 60)
        self.assertEqual([(0.5, A.SET_DOWNTIME), (11.0, A.PAUSE)],
                         [(t, d.action) for t, d in decisions])

    def test_ignores_dirty_rate_and_iterations(self):
        config = u.UpstreamConfig(data_gib=3)
        calm = poll(u.UpstreamController(config), 2500,
                    sample=lambda: running(dirty_pages_s=0))
        busy = poll(u.UpstreamController(config), 2500,
                    sample=lambda: running(dirty_pages_s=10 ** 6,
                                           iteration=40))
        self.assertEqual([(t, d.action, d.downtime_ms) for t, d in calm],
                         [(t, d.action, d.downtime_ms) for t, d in busy])

    def test_nothing_before_the_job_runs(self):
        controller = u.UpstreamController(u.UpstreamConfig(data_gib=2))
        self.assertEqual((), controller.start(0.0))
        self.assertEqual((), controller.observe(
            samples.JobSample(job_type=samples.JobType.NONE), 5.0))

    def test_upstream_does_not_finish_what_the_controller_does(self):
        # The lab's busy guest: upstream grinds on until its timeout.
        workload = model.Workload(320 * MIB, 15 * MIB, 40e6, 200_000_000)
        config = u.UpstreamConfig(data_gib=2, completion_timeout_s=60)
        sim = model.PrecopySimulation(workload)
        result = model.simulate(sim, u.UpstreamController(config), 0.5, 300)
        self.assertEqual('aborted', result.outcome)
        self.assertGreater(result.total_s, 120)
