"""``nova-livemig-ext flags``: what this host would do, without libvirt."""

import contextlib
import io
import os
import tempfile

import testtools

from nova_livemig_ext.cmd import main as cmd


def run(text, *extra):
    with tempfile.NamedTemporaryFile('w', suffix='.conf',
                                     delete=False) as f:
        f.write(text)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cmd.main(['flags', '--config-file', f.name,
                           '--libvirt-version', '11.3.0',
                           '--qemu-version', '10.0.2', *extra])
    finally:
        os.unlink(f.name)
    return rc, out.getvalue(), err.getvalue()


class FlagsCommandTest(testtools.TestCase):

    def test_prints_flags_params_and_ladder(self):
        rc, out, _ = run('[livemig_ext]\nbandwidth_mib_s = 100\n'
                         'permit_post_copy = true\n'
                         'ladder = downtime,postcopy,abort\n')
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertEqual(
            'VIR_MIGRATE_LIVE|VIR_MIGRATE_PEER2PEER|VIR_MIGRATE_PERSIST_DEST'
            '|VIR_MIGRATE_UNDEFINE_SOURCE|VIR_MIGRATE_POSTCOPY', lines[0])
        self.assertIn('param bandwidth = 100', lines)
        self.assertIn('ladder: downtime,postcopy,abort', lines)
        self.assertIn('host: libvirt 11.3.0, QEMU 10.0.2, userfaultfd yes'
                      if os.path.exists('/dev/userfaultfd') else
                      'host: libvirt 11.3.0', out)

    def test_paused_instance_note(self):
        rc, out, _ = run('[livemig_ext]\npermit_post_copy = true\n',
                         '--paused')
        self.assertEqual(0, rc)
        self.assertNotIn('POSTCOPY', out.splitlines()[0])
        self.assertIn('note: post-copy removed: the instance is paused', out)

    def test_refusal_exits_non_zero_with_the_reason(self):
        rc, out, err = run('[livemig_ext]\ntunnelled = true\n'
                           'native_tls = true\n'
                           '[libvirt]\nlive_migration_tunnelled = true\n'
                           'live_migration_with_native_tls = true\n')
        self.assertEqual(cmd.EXIT_REFUSED, rc)
        self.assertEqual('', out)
        self.assertIn('[livemig_ext] tunnelled, [livemig_ext] native_tls',
                      err)

    def test_host_refusal(self):
        rc, _, err = run('[livemig_ext]\nparallel_connections = 2\n'
                         'compression = zstd\n', '--libvirt-version', '9.0')
        self.assertEqual(cmd.EXIT_REFUSED, rc)
        self.assertIn('libvirt 9.0.0 (needs 9.4.0)', err)

    def test_bad_value_is_a_clear_error(self):
        rc, _, err = run('[livemig_ext]\nmax_downtime_ms = lots\n')
        self.assertEqual(cmd.EXIT_REFUSED, rc)
        self.assertIn('max_downtime_ms', err)


class FlagsShowWhatTheModeAppliesTest(testtools.TestCase):

    def test_controller_mode_shows_our_limits(self):
        rc, out, _ = run('[livemig_ext]\ninitial_downtime_ms = 200\n'
                         'max_downtime_ms = 900\n')
        self.assertEqual(0, rc)
        self.assertIn('downtime: 200 ms initial, 900 ms ceiling',
                      out.splitlines())

    def test_upstream_mode_shows_novas_steps_not_our_ceiling(self):
        # Upstream never applies [livemig_ext] limits: Nova's steps go from
        # live_migration_downtime / steps to live_migration_downtime.
        rc, out, _ = run('[livemig_ext]\nmode = upstream\n'
                         'initial_downtime_ms = 900\n'
                         'max_downtime_ms = 1000\n')
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertNotIn('ceiling', out)
        self.assertNotIn('900', out)
        self.assertIn("downtime: Nova's 11 steps from 50 ms to 500 ms, one "
                      'every 75 s per GiB of data ([libvirt] '
                      'live_migration_downtime, _downtime_steps, '
                      '_downtime_delay)', lines)
        self.assertIn('completion timeout: 800 s per GiB of data, then '
                      'abort', lines)
        self.assertIn('ladder: (none)', lines)

    def test_upstream_mode_with_novas_options(self):
        rc, out, _ = run('[livemig_ext]\nmode = upstream\n'
                         '[libvirt]\nlive_migration_downtime = 1000\n'
                         'live_migration_downtime_steps = 4\n'
                         'live_migration_downtime_delay = 30\n'
                         'live_migration_completion_timeout = 0\n')
        self.assertEqual(0, rc)
        lines = out.splitlines()
        self.assertIn("downtime: Nova's 5 steps from 250 ms to 1000 ms, one "
                      'every 30 s per GiB of data ([libvirt] '
                      'live_migration_downtime, _downtime_steps, '
                      '_downtime_delay)', lines)
        self.assertIn('completion timeout: none', lines)
        rc, out, _ = run('[livemig_ext]\nmode = upstream\n'
                         '[libvirt]\nlive_migration_timeout_action = '
                         'force_complete\n'
                         'live_migration_permit_post_copy = true\n')
        self.assertEqual(0, rc)
        self.assertIn('completion timeout: 800 s per GiB of data, then '
                      'force_complete (post-copy)', out.splitlines())
        self.assertIn('VIR_MIGRATE_POSTCOPY', out.splitlines()[0])


class FlagsAsciiTest(testtools.TestCase):

    def test_versions_in_ascii_digits_only(self):
        for version in ('١١.٣.٠', '１１.３', '11.٣'):
            self.assertRaises(cmd.VersionError, cmd.parse_version, version)
            rc, out, err = run('', '--qemu-version', version)
            self.assertEqual(cmd.EXIT_REFUSED, rc)
            self.assertIn('--qemu-version', err)
        self.assertIsNone(cmd.version_in_text('QEMU emulator version ١٠.١'))

    def test_lookalike_section_asking_for_tls_is_refused(self):
        rc, out, err = run('[livemig-ext]\nrequire_tls = True\n')
        self.assertEqual(cmd.EXIT_REFUSED, rc)
        self.assertEqual('', out)
        self.assertEqual(1, len(err.splitlines()))
        self.assertIn("require_tls = 'True' in [livemig-ext]", err)

    def test_lookalike_section_and_misplaced_option_are_warned(self):
        rc, out, err = run('[livemig_ext ]\nladder = abort\n'
                           '[DEFAULT]\nmax_downtime_ms = 400\n')
        self.assertEqual(0, rc)
        lines = err.splitlines()
        self.assertEqual(2, len(lines), err)
        self.assertIn('option max_downtime_ms in [DEFAULT]', lines[0])
        self.assertIn('section [livemig_ext ]', lines[1])
        self.assertIn('ladder: downtime,auto_converge,abort', out)
