"""An operator's force-complete, for our controller and for upstream's."""

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence import upstream

MIB = 1024 * 1024
A = c.Action


def running(remaining_mib, processed_mib, iteration, elapsed_ms):
    return samples.JobSample(
        job_type=samples.JobType.UNBOUNDED, memory_total_bytes=320 * MIB,
        memory_remaining_bytes=remaining_mib * MIB,
        memory_processed_bytes=processed_mib * MIB, iteration=iteration,
        elapsed_s=elapsed_ms / 1000.0,
        memory_bandwidth_bytes_s=15.0 * MIB)


def started(config):
    ctl = c.Controller(config)
    ctl.start(0.0)
    for i, (rem, done, it) in enumerate([(300, 20, 1), (200, 120, 1),
                                         (180, 330, 2)]):
        for d in ctl.observe(running(rem, done, it, (i + 1) * 7000),
                             (i + 1) * 7.0):
            ctl.acknowledge(d, True, (i + 1) * 7.0)
    return ctl


class ForceCompleteTest(testtools.TestCase):

    def test_post_copy_when_armed_and_allowed(self):
        ctl = started(c.ControllerConfig(
            ladder=('downtime', 'postcopy', 'abort'), postcopy_armed=True,
            postcopy_allowed=True, postcopy_bandwidth_mib_s=50))
        decisions = ctl.force_complete(22.0)
        self.assertEqual([A.SET_SPEED, A.START_POSTCOPY],
                         [d.action for d in decisions])
        self.assertTrue(decisions[0].postcopy_speed)
        self.assertIn('force-complete requested by the operator',
                      decisions[-1].reason)
        self.assertEqual(c.Phase.POSTCOPY, ctl.state.phase)

    def test_pause_otherwise_with_expected_downtime(self):
        # Not in the ladder and pause not allowed: the operator's explicit
        # request still pauses, as Nova does.
        ctl = started(c.ControllerConfig(ladder=('downtime', 'abort'),
                                         postcopy_armed=False))
        decisions = ctl.force_complete(22.0)
        self.assertEqual([A.PAUSE], [d.action for d in decisions])
        self.assertIn('expected downtime', decisions[0].reason)
        self.assertEqual(c.Phase.PAUSED, ctl.state.phase)

    def test_armed_but_not_allowed_pauses(self):
        ctl = started(c.ControllerConfig(
            ladder=('downtime', 'abort'), postcopy_armed=True,
            postcopy_allowed=False))
        self.assertEqual([A.PAUSE],
                         [d.action for d in ctl.force_complete(22.0)])

    def test_post_copy_only_when_the_ladder_has_it(self):
        # Permitted and armed, but the operator left it off the ladder:
        # force-complete pauses instead.
        ctl = started(c.ControllerConfig(
            ladder=('downtime', 'auto_converge', 'abort'), postcopy_armed=True,
            postcopy_allowed=True))
        self.assertEqual([A.PAUSE],
                         [d.action for d in ctl.force_complete(22.0)])

    def test_second_request_does_nothing(self):
        ctl = started(c.ControllerConfig(ladder=('downtime', 'abort')))
        ctl.force_complete(22.0)
        again = ctl.force_complete(23.0)
        self.assertEqual([A.NOTE], [d.action for d in again])
        self.assertEqual([], [d for d in again if d.has_effect])


class UpstreamForceCompleteTest(testtools.TestCase):

    def test_queued_until_the_next_poll_like_nova(self):
        for postcopy, action in [(True, A.START_POSTCOPY), (False, A.PAUSE)]:
            ctl = upstream.UpstreamController(upstream.UpstreamConfig(
                data_gib=1.0, postcopy_enabled=postcopy))
            ctl.start(0.0)
            ctl.observe(running(300, 20, 1, 1000), 1.0)
            self.assertEqual((), ctl.force_complete(1.2))
            decisions = ctl.observe(running(290, 30, 1, 1500), 1.5)
            self.assertEqual([action],
                             [d.action for d in decisions if d.has_effect])
