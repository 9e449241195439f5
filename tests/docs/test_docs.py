"""The documentation and release notes build, and cover what the code has.

Builds ``doc/source`` and ``releasenotes/source`` with warnings as errors
(what ``tox -e docs,releasenotes`` run) and checks that every ``[livemig_ext]``
option, every ``livemig_ext:`` instance key and every devstack variable is
documented. Needs the packages of ``doc/requirements.txt``; without them the
tests are skipped and say so.
"""

import glob
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

import testtools

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import instance_policy

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
NOTE_SECTIONS = ('prelude', 'features', 'issues', 'upgrade', 'deprecations',
                 'critical', 'security', 'fixes', 'other')


def _missing(*modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def sphinx_build(source, builder='html'):
    """Build ``source`` with -W into a temporary directory."""
    out = tempfile.mkdtemp(prefix='livemig-docs-')
    proc = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q',
         '-b', builder, '-d', os.path.join(out, '.doctrees'),
         os.path.join(TOP, source), out],
        capture_output=True, text=True, check=False, cwd=TOP,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'))
    return proc, out


def page_text(out, name):
    with open(os.path.join(out, name + '.html')) as f:
        return html.unescape(re.sub(r'<[^>]+>', '', f.read()))


class DocsTest(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.missing = _missing('sphinx', 'oslo_config.sphinxext')
        if not cls.missing:
            cls.proc, cls.out = sphinx_build('doc/source')

    @classmethod
    def tearDownClass(cls):
        if not cls.missing:
            shutil.rmtree(cls.out, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.missing:
            self.skipTest('%s not installed (pip install -r '
                          'doc/requirements.txt)' % ', '.join(self.missing))

    def test_builds_without_warnings(self):
        self.assertEqual(0, self.proc.returncode,
                         self.proc.stdout + self.proc.stderr)

    def test_every_option_is_in_the_reference(self):
        with open(os.path.join(self.out, 'config.html')) as f:
            page = f.read()
        for opt in livemig_conf.ALL_OPTS:
            self.assertIn('id="livemig_ext.%s"' % opt.name, page, opt.name)

    def test_every_instance_key_is_documented(self):
        text = page_text(self.out, 'instance-keys')
        for key in instance_policy.KEYS:
            self.assertIn(instance_policy.PREFIX + key.name, text)
            # The generated list carries the code's own help text.
            self.assertIn(key.help, text)

    def test_every_option_has_a_documented_devstack_variable(self):
        text = page_text(self.out, 'devstack')
        for opt in livemig_conf.ALL_OPTS:
            self.assertIn('LIVEMIG_EXT_' + opt.name.upper(), text)


class ReleaseNotesTest(testtools.TestCase):

    def test_notes_are_valid(self):
        if _missing('yaml'):
            self.skipTest('PyYAML is not installed')
        import yaml
        notes = glob.glob(os.path.join(TOP, 'releasenotes', 'notes',
                                       '*.yaml'))
        self.assertNotEqual([], notes)
        for path in notes:
            self.assertRegex(os.path.basename(path),
                             r'^[a-z0-9-]+-[0-9a-f]{16}\.yaml$')
            with open(path) as f:
                note = yaml.safe_load(f)
            self.assertIsInstance(note, dict, path)
            for section, value in note.items():
                self.assertIn(section, NOTE_SECTIONS, path)
                if section == 'prelude':
                    self.assertIsInstance(value, str, path)
                else:
                    self.assertIsInstance(value, list, path)
                    for item in value:
                        self.assertIsInstance(item, str, path)

    def test_release_notes_build(self):
        missing = _missing('sphinx', 'reno')
        if missing:
            self.skipTest('%s not installed (pip install -r '
                          'doc/requirements.txt)' % ', '.join(missing))
        if not os.path.isdir(os.path.join(TOP, '.git')):
            self.skipTest('reno reads the notes from git history; this '
                          'checkout has no .git')
        proc, out = sphinx_build('releasenotes/source')
        self.addCleanup(shutil.rmtree, out, True)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)

    def test_doc8(self):
        if _missing('doc8'):
            self.skipTest('doc8 is not installed')
        proc = subprocess.run(
            [sys.executable, '-m', 'doc8', 'doc/source',
             'releasenotes/source', 'devstack/README.rst'],
            capture_output=True, text=True, check=False, cwd=TOP)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
