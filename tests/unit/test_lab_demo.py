"""The lab demo's table: the guest's view, and how far from the least."""

import testtools

from nova_livemig_lab import demo


def row(name, outcome, gap_s, lost_s):
    return demo.Row(name, outcome, 60.0, None, gap_s, True, 'b', (), (), (),
                    guest_work_lost_s=lost_s)


class TestTable(testtools.TestCase):

    def test_each_run_against_the_least(self):
        text = demo.table([row('pause', 'completed', 4.0, 4.0),
                           row('post-copy', 'completed', 8.0, 8.0),
                           row('throttle', 'completed', 0.4, 30.0),
                           row('aborted', 'aborted', 0.1, 12.0)])
        lines = {line.split()[0]: line for line in text.splitlines()[2:]}
        # Unavailability against 0.4 s, work lost against 4.0 s; the aborted
        # run does not set the least.
        self.assertIn('x10.0/x1.0', lines['pause'])
        self.assertIn('x20.0/x2.0', lines['post-copy'])
        self.assertIn('x1.0/x7.5', lines['throttle'])
        self.assertIn('x0.2/x3.0', lines['aborted'])

    def test_alternatives_follow_the_link(self):
        names = [s.name for s in demo.alternatives()]
        self.assertEqual(['shipped defaults', 'bounded pause', 'post-copy',
                          'throttle'], names)
        for scenario in demo.alternatives():
            self.assertEqual(0, scenario.policy.completion_timeout_s_per_gib)
