"""When the link counts as slow."""

import testtools

from nova_livemig_ext.convergence import controller as c


class TestLinkIsSlow(testtools.TestCase):

    def test_link_is_slow(self):
        config = c.ControllerConfig(poll_interval_s=0.5)
        # (interval rate, best rate, remaining bytes, slow?)
        for rate, peak, remaining, expected in [
                (None, 10.0, 100, False), (5.0, 0.0, 100, False),
                (0.5, 10.0, 100, True), (1.0, 10.0, 100, False),
                (2.0, 10.0, 100, False),
                # Little left to send: quiet is normal near the end.
                (0.5, 10.0, 10, False)]:
            est = c.estimator.Estimate(interval_bandwidth_bytes_s=rate,
                                       peak_bandwidth_bytes_s=peak,
                                       remaining_bytes=remaining)
            self.assertEqual(expected, c.link_is_slow(config, est),
                             (rate, peak, remaining))
