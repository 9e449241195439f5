"""The chaos harness's own bookkeeping (no lab needed)."""

from pathlib import Path

import fixtures
import testtools

from nova_livemig_lab import chaos
from nova_livemig_lab import config


class ChaosCommandsTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.state = Path(self.useFixture(fixtures.TempDir()).path)
        self.cfg = config.load_config(self.state, 100)

    def test_give_back_uses_a_socket_in_the_lab_state(self):
        # The lab's QEMU runs in host a's network namespace: a loopback
        # stand-in would be out of its reach.
        for argv in (chaos.migrate_argv(self.cfg, 'g', Path('c'), Path('r')),
                     chaos.recover_argv(self.cfg, 'g', Path('c'), False)):
            address = argv[argv.index('--give-back-address') + 1]
            self.assertEqual('unix:%s' % (self.state / 'standin'), address)
        self.assertTrue((self.state / 'standin').is_dir())

    def test_recover_giving_back_places_the_guest_on_a(self):
        text = ('recovered: the source runs the guest again (the migration '
                'failed; no memory was lost).')
        self.assertEqual('a', chaos.recover_claim(0, text))
        self.assertEqual('b', chaos.recover_claim(
            0, 'recovered: the guest runs on the destination'))
        self.assertIsNone(chaos.recover_claim(0, 'something else'))

    def test_pinned_moment_is_checked(self):
        rc = chaos.main(['--after-switch', 'nan', '--runs', '1', '--seed', '1'])
        self.assertEqual(2, rc)


class ClaimsTest(testtools.TestCase):

    def test_migrate_leaving_a_failed_destination_places_the_whole_guest_on_a(self):
        self.assertEqual('a-half', chaos.migrate_claim(
            'needs recovery', 1, 'destination failed before running'))
        self.assertEqual('both', chaos.migrate_claim('needs recovery', 1,
                                                     'broken'))
        self.assertEqual('both', chaos.migrate_claim('needs recovery', 1))
        # Given back: migrate reports a failure, the guest runs on a.
        self.assertEqual('a', chaos.migrate_claim('failed', 1,
                                                  'not switched'))
