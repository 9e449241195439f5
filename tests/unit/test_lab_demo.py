"""The lab demo's table: the guest's view, and how far from the least."""

from pathlib import Path

import testtools

from nova_livemig_ext.policy import MigrationPolicy
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
        scenarios = {s.name: s for s in demo.alternatives()}
        self.assertEqual(['shipped defaults', 'bounded pause', 'post-copy',
                          'throttle', 'defaults, stop ceiling 10 s',
                          'QEMU 50/20 alone', 'QEMU 20/10 alone',
                          'post-copy after first pass', 'Nova 34',
                          'paused copy'], list(scenarios))
        # Ours, and the unsteered baselines' flags, follow the link.
        for name in ('shipped defaults', 'bounded pause', 'post-copy',
                     'throttle', 'defaults, stop ceiling 10 s',
                     'QEMU 50/20 alone', 'QEMU 20/10 alone',
                     'post-copy after first pass'):
            self.assertEqual(
                0, scenarios[name].policy.completion_timeout_s_per_gib, name)
        self.assertEqual(MigrationPolicy(), scenarios['shipped defaults'].policy.replace(
            completion_timeout_s_per_gib=MigrationPolicy().completion_timeout_s_per_gib))
        self.assertTrue(set(demo.COMPARED) <= set(scenarios))

    def test_the_ceiling_scenario_is_what_the_option_alone_gives(self):
        from nova_livemig_ext.policy import policy_from_conf
        from tests.unit.test_policy import make_conf
        conf, fixture = make_conf(self)
        fixture.config(group='livemig_ext', max_guest_stop_s=10.0)
        wanted = policy_from_conf(conf)
        [ceiling] = [s for s in demo.alternatives() if s.name == demo.CEILING]
        self.assertEqual((wanted.ladder, wanted.max_guest_stop_s),
                         (ceiling.policy.ladder, ceiling.policy.max_guest_stop_s))
        self.assertIsNone(ceiling.decider)

    def test_baselines_arm_their_knobs_and_nobody_steers(self):
        from nova_livemig_lab import baselines
        scenarios = {s.name: s for s in demo.alternatives()}
        for name, initial, increment in (('QEMU 50/20 alone', 50, 20),
                                         ('QEMU 20/10 alone', 20, 10)):
            policy = scenarios[name].policy
            self.assertEqual((initial, increment),
                             (policy.auto_converge_initial_pct,
                              policy.auto_converge_increment_pct))
            self.assertIn('auto_converge', policy.ladder)
            decider = scenarios[name].decider()
            self.assertIsInstance(decider, baselines.Unwatched)
            self.assertFalse(decider.postcopy_after_first_pass)
        after = scenarios['post-copy after first pass']
        self.assertTrue(after.policy.permit_post_copy)
        self.assertNotIn('auto_converge', after.policy.ladder)
        self.assertTrue(after.decider().postcopy_after_first_pass)
        # Ours, Nova 34 and the paused copy run their own decision makers.
        for name in ('shipped defaults', 'bounded pause', 'Nova 34',
                     'paused copy'):
            self.assertIsNone(scenarios[name].decider, name)
        self.assertEqual('upstream', scenarios['Nova 34'].policy.mode)
        self.assertEqual('paused', scenarios['paused copy'].policy.copy_mode)

    def test_summary_needs_both_of_ours_to_complete(self):
        rows = [row('paused copy', 'completed', 13.0, 13.0),
                row('upstream Nova 34', 'aborted', 0.1, 0.0),
                row(demo.DEFAULTS_NAME, 'completed', 3.0, 30.0),
                row(demo.POSTCOPY_NAME, 'completed', 8.0, 20.0)]
        self.assertTrue(demo.summary_ok(rows))
        rows[2] = row(demo.DEFAULTS_NAME, 'aborted', 0.1, 0.0)
        self.assertFalse(demo.summary_ok(rows))
        self.assertEqual([demo.DEFAULTS_NAME, demo.POSTCOPY_NAME],
                         [s.name for s in demo.scenarios()][2:])
        # The defaults row really is nothing configured.
        self.assertEqual(demo.MigrationPolicy(), demo.scenarios()[2].policy)


class TestWorkloads(testtools.TestCase):

    def test_patterns_reach_the_guest_command_line(self):
        from nova_livemig_lab import guest, workloads
        from nova_livemig_lab import config
        cfg = config.load_config(Path('/nonexistent-lab-state'), 100)
        bursty = workloads.named('bursty')
        self.assertEqual('PATTERN=bursty BURST_ON_MS=4000 BURST_OFF_MS=2000',
                         bursty.pattern.words())
        xml = guest.domain_xml(cfg, cfg.host_a, 'g', bursty.dirty_mb,
                               bursty.dirty_rate_mb_s, pattern=bursty.pattern)
        self.assertIn('DIRTY_RATE=40 CHECK_RATE=20 PATTERN=bursty '
                      'BURST_ON_MS=4000 BURST_OFF_MS=2000</cmdline>', xml)
        self.assertEqual('PATTERN=steady', guest.STEADY.words())

    def test_bad_patterns_and_names_are_refused(self):
        from nova_livemig_lab import guest, workloads
        from nova_livemig_lab.errors import LabError
        self.assertRaises(LabError, guest.Pattern, 'sawtooth')
        self.assertRaises(LabError, guest.Pattern, 'random', (('HOT', 5),))
        self.assertRaises(LabError, guest.Pattern, 'random', (('HOT_PCT', -1),))
        error = self.assertRaises(LabError, workloads.named, 'nope')
        self.assertIn('slow-random', str(error))

    def test_only_the_slow_writer_converges_on_its_own(self):
        from nova_livemig_lab import workloads
        link_mb_s = 14.4
        for workload in workloads.WORKLOADS.values():
            # Converging needs a dirty rate well below the link.
            self.assertEqual(workload.dirty_rate_mb_s < link_mb_s / 2,
                             workload.converges, workload.name)


class TestCompareFiles(testtools.TestCase):

    def test_a_policy_run_again_replaces_its_run_and_others_are_kept(self):
        import json
        import tempfile
        from nova_livemig_lab import workloads
        steady = workloads.named('steady')
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, 'compare-steady.json')
            self.assertEqual([{'name': 'a'}], demo.merged_runs(
                path, steady, [{'name': 'a'}]))
            path.write_text(json.dumps({'workload': steady.describe(), 'runs': [
                {'name': 'a', 'v': 1}, {'name': 'b', 'v': 1}]}))
            self.assertEqual(
                [{'name': 'a', 'v': 1}, {'name': 'b', 'v': 2},
                 {'name': 'c', 'v': 2}],
                demo.merged_runs(path, steady, [{'name': 'c', 'v': 2},
                                                {'name': 'b', 'v': 2}]))
            # Another workload's file, or a broken one, is not merged.
            self.assertEqual([{'name': 'c'}], demo.merged_runs(
                path, workloads.named('bursty'), [{'name': 'c'}]))
            path.write_text('{')
            self.assertEqual([{'name': 'c'}], demo.merged_runs(
                path, steady, [{'name': 'c'}]))
