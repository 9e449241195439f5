"""``nova-livemig-ext recover``: what it says when there is nothing to do.

libvirt's test driver (real libvirt, in-process) stands in for the two
hosts; a real broken post-copy is recovered in the lab by the e2e tests.
"""

import contextlib
import io
import os

import fixtures
import testtools

from nova_livemig_ext.cmd import main as cmd
from nova_livemig_ext.cmd import recover

SOURCE = """<node>
  <domain type='test'>
    <name>stayed</name><memory>65536</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""
DEST = """<node>
  <domain type='test'>
    <name>moved</name><memory>65536</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


class RecoverTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.uris = {}
        for name, xml in (('source', SOURCE), ('dest', DEST)):
            path = os.path.join(tmp, name + '.xml')
            with open(path, 'w') as f:
                f.write(xml)
            self.uris[name] = 'test://' + path

    def run_cmd(self, domain, *extra, source=None, dest=None):
        argv = ['recover', domain, '--from', source or self.uris['source'],
                '--to', dest or self.uris['dest'], *extra]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cmd.main(argv)
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_completed_migration_is_nothing_to_recover(self):
        rc, out, _ = self.run_cmd('moved')
        self.assertEqual(recover.EXIT_COMPLETED, rc)
        self.assertIn('nothing to recover: the migration completed', out)

    def test_never_switched_is_nothing_to_recover(self):
        rc, out, _ = self.run_cmd('stayed')
        self.assertEqual(recover.EXIT_COMPLETED, rc)
        self.assertIn('never switched to post-copy', out)
        self.assertIn('running', out)

    def test_unknown_domain(self):
        rc, _, err = self.run_cmd('nope')
        self.assertEqual(recover.EXIT_BAD_TARGET, rc)
        self.assertIn("no domain 'nope' on the source or the destination",
                      err)

    def test_source_unreachable(self):
        rc, _, err = self.run_cmd('moved',
                                  source='qemu+tcp://127.0.0.1:1/system')
        self.assertEqual(recover.EXIT_BAD_TARGET, rc)
        self.assertIn('cannot connect to the source libvirt', err)
        self.assertNotIn('Traceback', err)

    def test_bad_timeout(self):
        for bad in ('nan', 'inf', '-5', '0', 'soon', '\u0666\u0660\u0660',
                    '6_00'):
            rc, _, err = self.run_cmd('moved', '--timeout', bad)
            self.assertEqual(2, rc, bad)
            self.assertIn('--timeout', err)

    def test_bad_config_file_is_one_line(self):
        rc, _, err = self.run_cmd('moved', '--config-file', '/')
        self.assertEqual(recover.EXIT_REFUSED, rc)
        self.assertEqual(1, len(err.strip().splitlines()), err)
        self.assertIn('is a directory', err)

    def test_the_config_file_says_whether_a_resume_may_be_sent(self):
        import libvirt
        conn = libvirt.open(self.uris['source'])
        self.addCleanup(conn.close)
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'n.conf')
        for text, expected in (('', 'auto'),
                               ('[livemig_ext]\npostcopy_resume = patched\n',
                                'patched'),
                               ('[livemig_ext]\npostcopy_resume = never\n',
                                'never')):
            with open(path, 'w') as f:
                f.write(text)
            flags, resume = recover.resume_flags(libvirt, conn, [path])
            self.assertEqual(expected, resume, text)
            self.assertTrue(flags & recover.livemig_flags.FLAG_VALUES[
                'VIR_MIGRATE_POSTCOPY'])


class GiveBackTest(testtools.TestCase):
    """recover when the destination failed before it ran the guest."""

    class LibvirtError(Exception):
        pass

    def setUp(self):
        super().setUp()
        self.libvirt = type('libvirt', (), {'libvirtError': self.LibvirtError})
        self.dom = object()
        self.src = type('Conn', (), {'lookupByName': lambda _, name: self.dom})()
        self.dest = recover.postcopy.HostView(True, True, 5, 6)
        self.calls = []

    def run_give_back(self, address='tcp:127.0.0.1', result=None,
                      never_ran=False):
        def fake(dom, dest_state, addr, operator_says_never_ran):
            self.calls.append((dom, dest_state, addr, operator_says_never_ran))
            if isinstance(result, Exception):
                raise result
            return result or ['resume acknowledged']
        self.useFixture(fixtures.MockPatchObject(
            recover.standin, 'give_back_domain', fake))
        args = type('Args', (), {'domain': 'g', 'give_back_address': address,
                                 'destination_never_ran': never_ran})
        out, err = io.StringIO(), io.StringIO()
        rc = recover.give_back(self.libvirt, self.src, args, self.dest, out,
                               err)
        return rc, out.getvalue(), err.getvalue()

    def test_given_back(self):
        rc, out, err = self.run_give_back()
        self.assertEqual(recover.EXIT_COMPLETED, rc)
        self.assertEqual([(self.dom, (5, 6), 'tcp:127.0.0.1', False)],
                         self.calls)
        self.assertIn('give-back: resume acknowledged', out)
        self.assertIn('the source runs the guest again', out)
        self.assertEqual('', err)

    def test_the_operators_word_is_passed_on(self):
        self.dest = recover.postcopy.HostView(True, True, 5, 3)
        rc, _, _ = self.run_give_back(never_ran=True)
        self.assertEqual(recover.EXIT_COMPLETED, rc)
        self.assertEqual([(self.dom, (5, 3), 'tcp:127.0.0.1', True)],
                         self.calls)

    def test_off_leaves_both_halves(self):
        rc, _, err = self.run_give_back(address=None)
        self.assertEqual(recover.EXIT_NOT_RECOVERED, rc)
        self.assertEqual([], self.calls)
        self.assertIn('--give-back-address off', err)

    def test_refused_says_why(self):
        rc, _, err = self.run_give_back(result=recover.standin.Refused(
            'the destination asked the source for 2 page(s)'))
        self.assertEqual(recover.EXIT_NOT_RECOVERED, rc)
        self.assertIn('not given back: the destination asked', err)

    def test_failed_exchange_leaves_the_source_paused(self):
        rc, _, err = self.run_give_back(result=recover.standin.StandInError(
            'the source did not connect within 60 s'))
        self.assertEqual(recover.EXIT_NOT_RECOVERED, rc)
        self.assertIn('left post-copy paused', err)

    def test_bad_address_is_refused_by_the_parser(self):
        for bad in ('127.0.0.1', 'unix:relative/dir', 'fd:3', ''):
            self.assertRaises(Exception, recover.standin.address_arg, bad)
        self.assertIsNone(recover.standin.address_arg('off'))
