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
