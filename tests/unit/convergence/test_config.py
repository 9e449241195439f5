"""The controller's config: what it refuses and what it accepts."""

import testtools

from nova_livemig_ext.convergence import controller as c


class TestConfig(testtools.TestCase):

    # (name, changes, fragment of the error)
    BAD = [
        ('unknown rung', dict(ladder=('downtime', 'teleport')),
         'unknown rungs'),
        ('repeated rung', dict(ladder=('downtime', 'downtime')), 'repeat'),
        ('abort not last', dict(ladder=('abort', 'pause')),
         'abort must be the last'),
        ('ceiling below start', dict(initial_downtime_ms=500,
                                     max_downtime_ms=400), 'at least'),
        ('no steps', dict(downtime_steps=0), 'downtime_steps'),
        ('no deadline', dict(deadline_s=0), 'deadline_s'),
        ('no patience', dict(stall_patience_passes=0),
         'stall_patience_passes'),
        ('collapse fraction', dict(bandwidth_collapse_fraction=1.5),
         'bandwidth_collapse_fraction'),
        ('zero bandwidth', dict(max_bandwidth_mib_s=0),
         'max_bandwidth_mib_s'),
    ]

    def test_rejects(self):
        for name, changes, fragment in self.BAD:
            error = self.assertRaises(ValueError, c.ControllerConfig,
                                      **changes)
            self.assertIn(fragment, str(error), name)

    def test_accepts_any_order_and_empty_ladder(self):
        c.ControllerConfig(ladder=('pause', 'postcopy', 'downtime'))
        c.ControllerConfig(ladder=())
