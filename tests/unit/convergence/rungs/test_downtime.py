"""The downtime rung: the limits it may set."""

import testtools

from nova_livemig_ext.convergence import controller as c


class TestDowntimeSteps(testtools.TestCase):

    def test_downtime_steps(self):
        for initial, ceiling, steps, expected in [
                (300, 1000, 4, (300, 475, 650, 825, 1000)),
                (300, 500, 3, (300, 367, 433, 500)),
                (500, 500, 3, (500,)),
                (100, 102, 4, (100, 101, 102))]:
            config = c.ControllerConfig(initial_downtime_ms=initial,
                                        max_downtime_ms=ceiling,
                                        downtime_steps=steps)
            self.assertEqual(expected, c.downtime_steps_ms(config))
