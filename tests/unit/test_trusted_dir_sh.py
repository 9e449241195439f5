"""tools/lib/trusted-dir.sh and the root scripts that use it.

The shell check is run on planted directories (another owner, world-writable
ones, symlinks to root's directories, a parent writable by all without the
sticky bit) and must agree with the Python check. The scripts (stack.sh,
install.sh, demo.sh, run-tests.sh, setup-venv.sh) run from a copy of the
tree in a temporary directory, where every program they would go on to run
(the package installers, the virtualenv, the lab, the stack's Python) is a
stub that leaves a marker: a refused directory must leave none.
"""

import os
import shutil
import stat
import subprocess
import unittest

import fixtures
import testtools

from nova_livemig_ext import safefile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
LIB = os.path.join(REPO, 'tools', 'lib', 'trusted-dir.sh')
OTHER_UID = 65534
ROOT_ONLY = unittest.skipUnless(os.geteuid() == 0,
                                'planting another owner needs root')
HAVE_BASH = shutil.which('bash') is not None


def _bash(script, *args, env=None, cwd=None):
    return subprocess.run(['bash', '-c', script, 'test', *args],
                          capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


def shell_check(path, create=False):
    flag = '-c ' if create else ''
    return _bash('source "$1"; trusted_dir %sprog "$2" "the hint"' % flag,
                 LIB, path)


def shell_exec_check(path):
    return _bash('source "$1"; trusted_exec prog "$2"', LIB, path)


def _marker_script(path, marker):
    with open(path, 'w') as f:
        f.write('#!/bin/sh\necho "$0 $*" >> %s\n' % marker)
    os.chmod(path, 0o755)


@unittest.skipUnless(HAVE_BASH, 'bash is not installed')
class TrustedDirShellTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def mkdir(self, *parts, mode=0o755, uid=None):
        path = os.path.join(self.tmp, *parts)
        os.mkdir(path)
        os.chmod(path, mode)
        if uid is not None:
            os.chown(path, uid, uid)
        return path

    def refused(self, path, *words, create=False):
        proc = shell_check(path, create=create)
        self.assertEqual(1, proc.returncode, proc.stderr)
        self.assertEqual('', proc.stdout)
        lines = proc.stderr.splitlines()
        self.assertEqual(1, len(lines), proc.stderr)
        self.assertTrue(lines[0].startswith('prog: directory %s refused: '
                                            % path), lines[0])
        self.assertTrue(lines[0].endswith(': the hint'), lines[0])
        for word in words:
            self.assertIn(word, lines[0])
        # The Python check refuses it too.
        self.assertRaises(safefile.UnsafePath, safefile.check_trusted_dir,
                          path, create=create)
        return lines[0]

    def accepted(self, path, create=False):
        proc = shell_check(path, create=create)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))
        safefile.check_trusted_dir(path, create=create)

    def test_own_directory(self):
        self.accepted(self.mkdir('lab'))

    def test_own_entry_of_a_sticky_directory(self):
        self.mkdir('vartmp', mode=0o1777)
        self.accepted(self.mkdir('vartmp', 'lab'))
        self.refused(os.path.join(self.tmp, 'vartmp'),
                     'writable by group or others (mode 1777)')

    def test_relative_path_and_dot_dot(self):
        self.mkdir('lab')
        proc = _bash('source "$1"; trusted_dir prog lab && '
                     'trusted_dir prog ../%s/lab'
                     % os.path.basename(self.tmp), LIB, cwd=self.tmp)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))

    def test_create_makes_755_directories_whatever_the_umask(self):
        path = os.path.join(self.tmp, 'a', 'b')
        proc = _bash('umask 002; source "$1"; trusted_dir -c prog "$2"',
                     LIB, path)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))
        for sub in ('a', 'a/b'):
            self.assertEqual(0o755, stat.S_IMODE(os.lstat(
                os.path.join(self.tmp, sub)).st_mode))

    def test_missing(self):
        self.refused(os.path.join(self.tmp, 'nope'), 'does not exist')

    def test_empty(self):
        self.refused('', 'empty path')

    def test_file(self):
        path = os.path.join(self.tmp, 'file')
        open(path, 'w').close()
        self.refused(path, 'not a directory')

    @ROOT_ONLY
    def test_owned_by_another_user(self):
        path = self.mkdir('lab', uid=OTHER_UID)
        self.refused(path, 'belongs to uid %d, not to uid 0' % OTHER_UID)
        self.refused(path, 'belongs to uid %d' % OTHER_UID, create=True)

    @ROOT_ONLY
    def test_created_first_by_another_user_in_a_sticky_directory(self):
        self.mkdir('vartmp', mode=0o1777)
        theirs = self.mkdir('vartmp', 'lab', uid=OTHER_UID)
        self.refused(theirs, 'belongs to uid %d' % OTHER_UID, create=True)
        self.refused(os.path.join(theirs, 'venv'), theirs,
                     'belongs to uid %d' % OTHER_UID, create=True)
        self.assertEqual([], os.listdir(theirs))

    @ROOT_ONLY
    def test_parent_owned_by_another_user(self):
        parent = self.mkdir('home', uid=OTHER_UID)
        lab = os.path.join(parent, 'lab')
        os.mkdir(lab, 0o755)
        self.refused(lab, parent, 'belongs to uid %d' % OTHER_UID)

    def test_world_writable(self):
        self.refused(self.mkdir('lab', mode=0o777),
                     'writable by group or others (mode 777)')
        self.refused(self.mkdir('lab2', mode=0o770),
                     'writable by group or others (mode 770)')

    def test_world_writable_parent_without_sticky_bit(self):
        parent = self.mkdir('open', mode=0o777)
        lab = self.mkdir('open', 'lab')
        self.refused(lab, parent, 'without the sticky bit')
        self.refused(os.path.join(parent, 'new'), 'without the sticky bit',
                     create=True)
        self.assertEqual(['lab'], os.listdir(parent))

    def test_symlink_to_a_root_directory(self):
        link = os.path.join(self.tmp, 'lab')
        os.symlink('/etc', link)
        self.refused(link, 'is a symlink, not a directory')
        self.refused(link, 'is a symlink', create=True)

    def test_symlink_on_the_way(self):
        real = self.mkdir('real')
        self.mkdir('real', 'lab')
        os.symlink(real, os.path.join(self.tmp, 'abs'))
        os.symlink('real', os.path.join(self.tmp, 'rel'))
        self.accepted(os.path.join(self.tmp, 'abs', 'lab'))
        self.accepted(os.path.join(self.tmp, 'rel', 'lab'))
        # Not in a directory others can write to, sticky or not.
        self.mkdir('vartmp', mode=0o1777)
        os.symlink(real, os.path.join(self.tmp, 'vartmp', 'link'))
        self.refused(os.path.join(self.tmp, 'vartmp', 'link', 'lab'),
                     'symlink in')
        # And its target is checked too.
        os.chmod(real, 0o777)
        self.refused(os.path.join(self.tmp, 'abs', 'lab'), real,
                     'without the sticky bit')

    def test_symlink_loop(self):
        os.symlink('loop', os.path.join(self.tmp, 'loop'))
        self.refused(os.path.join(self.tmp, 'loop', 'x'), 'too many')

    def test_exec(self):
        python = os.path.join(self.tmp, 'python')
        _marker_script(python, '/dev/null')
        link = os.path.join(self.tmp, 'link')
        os.symlink(python, link)
        for path in (python, link, shutil.which('bash')):
            proc = shell_exec_check(path)
            self.assertEqual((0, ''), (proc.returncode, proc.stderr), path)
        os.chmod(python, 0o777)
        proc = shell_exec_check(link)
        self.assertEqual(1, proc.returncode)
        self.assertIn('writable by group or others (mode 777)', proc.stderr)
        proc = shell_exec_check(self.tmp)
        self.assertEqual(1, proc.returncode)
        self.assertIn('not a regular file', proc.stderr)

    @ROOT_ONLY
    def test_exec_of_another_user(self):
        python = os.path.join(self.tmp, 'python')
        _marker_script(python, '/dev/null')
        os.chown(python, OTHER_UID, OTHER_UID)
        proc = shell_exec_check(python)
        self.assertEqual(1, proc.returncode)
        self.assertIn('belongs to uid %d' % OTHER_UID, proc.stderr)


class _Sandbox(testtools.TestCase):
    """A copy of the scripts, with markers for whatever they would run."""

    def setUp(self):
        super().setUp()
        if not HAVE_BASH:
            self.skipTest('bash is not installed')
        if os.geteuid() != 0:
            self.skipTest('the root scripts check directories as root')
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.repo = os.path.join(self.tmp, 'repo')
        self.marker = os.path.join(self.tmp, 'ran')
        for sub in ('tools/lib', 'tools/novastack'):
            os.makedirs(os.path.join(self.repo, sub))
        self.copy('tools/lib/trusted-dir.sh')
        self.bin = os.path.join(self.tmp, 'bin')
        os.mkdir(self.bin)
        # A lab directory nobody has made yet, unless a test plants one.
        self.lab = os.path.join(self.tmp, 'lab')

    def copy(self, relative):
        shutil.copy(os.path.join(REPO, relative),
                    os.path.join(self.repo, relative))

    def stub(self, relative):
        path = os.path.join(self.repo, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _marker_script(path, self.marker)

    def ran(self):
        if not os.path.exists(self.marker):
            return []
        with open(self.marker) as f:
            return [line.split()[0].replace(self.tmp, '') for line in f]

    def env(self, **extra):
        env = {'PATH': self.bin + ':' + os.environ['PATH'],
               'HOME': self.tmp, 'NOVA_LIVEMIG_LAB_DIR': self.lab}
        env.update(extra)
        return env

    def run_script(self, relative, *args, **env):
        return subprocess.run(
            ['bash', os.path.join(self.repo, relative), *args],
            capture_output=True, text=True, timeout=60, env=self.env(**env))

    def plant(self, kind):
        """A directory of the given hostility, with a venv whose Python
        leaves a marker."""
        base = os.path.join(self.tmp, kind)
        os.mkdir(base, 0o755)
        target = os.path.join(base, 'dir')
        if kind == 'open-parent':
            os.chmod(base, 0o777)
        if kind == 'sticky-parent':
            os.chmod(base, 0o1777)
        if kind == 'symlink':
            real = os.path.join(base, 'real')
            os.mkdir(real, 0o755)
            os.symlink(real, target)
            venv_root = real
        else:
            os.mkdir(target, 0o755)
            venv_root = target
        os.makedirs(os.path.join(venv_root, 'venv', 'bin'))
        _marker_script(os.path.join(venv_root, 'venv', 'bin', 'python'),
                       self.marker)
        if kind == 'world-writable':
            os.chmod(target, 0o777)
        if kind in ('other-owner', 'sticky-parent'):
            for root, dirs, files in os.walk(target):
                for name in [root] + [os.path.join(root, f) for f in files]:
                    os.chown(name, OTHER_UID, OTHER_UID)
        return target

    HOSTILE = ('other-owner', 'world-writable', 'symlink', 'open-parent',
               'sticky-parent')

    def assertRefused(self, proc, prog, path):
        self.assertEqual(1, proc.returncode, proc.stdout + proc.stderr)
        lines = proc.stderr.splitlines()
        self.assertEqual(1, len(lines), proc.stderr)
        self.assertTrue(lines[0].startswith('%s: directory %s refused: '
                                            % (prog, path)), lines[0])
        self.assertEqual([], self.ran())


class StackShTest(_Sandbox):
    """Every verb of tools/novastack/stack.sh checks NOVASTACK_DIR first."""

    VERBS = (['status'], ['install'], ['up'], ['down'], ['reset'],
             ['images'], ['computes', 'up'], ['iniset', 'f', 's', 'o', 'v'])

    def setUp(self):
        super().setUp()
        self.copy('tools/novastack/stack.sh')
        self.stub('tools/novastack/install.sh')

    def test_every_verb_refuses_a_hostile_state_directory(self):
        for kind in self.HOSTILE:
            state = self.plant(kind)
            for verb in self.VERBS:
                proc = self.run_script('tools/novastack/stack.sh', *verb,
                                       NOVASTACK_DIR=state)
                self.assertRefused(proc, 'novastack', state)
                self.assertIn('NOVASTACK_DIR', proc.stderr)
            self.assertFalse(os.path.lexists(os.path.join(state,
                                                          'stack.lock')))

    def test_every_verb_refuses_a_hostile_lab_directory(self):
        state = os.path.join(self.tmp, 'state')
        os.mkdir(state, 0o755)
        for kind in ('other-owner', 'world-writable', 'symlink'):
            lab = self.plant(kind)
            for verb in self.VERBS:
                proc = self.run_script('tools/novastack/stack.sh', *verb,
                                       NOVASTACK_DIR=state,
                                       NOVA_LIVEMIG_LAB_DIR=lab)
                self.assertRefused(proc, 'novastack', lab)

    def test_a_trusted_directory_is_used(self):
        state = os.path.join(self.tmp, 'state')
        proc = self.run_script('tools/novastack/stack.sh', 'status',
                               NOVASTACK_DIR=state)
        self.assertEqual(1, proc.returncode)
        self.assertIn('no virtualenv', proc.stderr)
        self.assertFalse(os.path.exists(state))
        proc = self.run_script('tools/novastack/stack.sh', 'install',
                               NOVASTACK_DIR=state)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))
        self.assertEqual(['/repo/tools/novastack/install.sh'], self.ran())
        self.assertEqual(0o755, stat.S_IMODE(os.stat(state).st_mode))
        os.makedirs(os.path.join(state, 'venv', 'bin'))
        _marker_script(os.path.join(state, 'venv', 'bin', 'python'),
                       self.marker)
        os.remove(self.marker)
        proc = self.run_script('tools/novastack/stack.sh', 'status',
                               NOVASTACK_DIR=state)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))
        self.assertEqual(['/state/venv/bin/python'], self.ran())

    def test_a_hostile_python_in_a_trusted_directory_is_refused(self):
        state = os.path.join(self.tmp, 'state')
        os.makedirs(os.path.join(state, 'venv', 'bin'))
        python = os.path.join(state, 'venv', 'bin', 'python')
        _marker_script(python, self.marker)
        os.chown(python, OTHER_UID, OTHER_UID)
        proc = self.run_script('tools/novastack/stack.sh', 'status',
                               NOVASTACK_DIR=state)
        self.assertEqual(1, proc.returncode)
        self.assertIn('belongs to uid %d' % OTHER_UID, proc.stderr)
        self.assertEqual([], self.ran())


class InstallShTest(_Sandbox):
    """tools/novastack/install.sh run on its own checks NOVASTACK_DIR too."""

    def test_refuses_before_installing_anything(self):
        self.copy('tools/novastack/install.sh')
        # Whatever it would run next leaves a marker.
        for program in ('dpkg-query', 'apt-get', 'python3'):
            _marker_script(os.path.join(self.bin, program), self.marker)
        for kind in self.HOSTILE:
            state = self.plant(kind)
            proc = self.run_script('tools/novastack/install.sh',
                                   NOVASTACK_DIR=state)
            self.assertRefused(proc, 'novastack install', state)


class LabScriptsTest(_Sandbox):
    """demo.sh and run-tests.sh check the lab's directory before anything."""

    def setUp(self):
        super().setUp()
        for script in ('tools/demo.sh', 'tools/run-tests.sh'):
            self.copy(script)
        for stub in ('tools/install-lab-packages.sh', 'tools/setup-venv.sh',
                     'tools/novastack/stack.sh', 'tools/libvirt/build-libvirt.sh'):
            self.stub(stub)
        self.venv = os.path.join(self.tmp, 'venv')
        os.makedirs(os.path.join(self.venv, 'bin'))
        for program in ('nova-livemig-ext', 'stestr', 'python'):
            _marker_script(os.path.join(self.venv, 'bin', program),
                           self.marker)

    def test_hostile_lab_directory_is_refused_first(self):
        for kind in self.HOSTILE:
            lab = self.plant(kind)
            for script, prog in (('tools/demo.sh', 'demo'),
                                 ('tools/run-tests.sh', 'run-tests')):
                proc = self.run_script(script, NOVA_LIVEMIG_LAB_DIR=lab,
                                       NOVA_LIVEMIG_VENV=self.venv)
                self.assertRefused(proc, prog, lab)
                self.assertIn('NOVA_LIVEMIG_LAB_DIR', proc.stderr)

    def test_demo_goes_on_with_a_trusted_one(self):
        proc = self.run_script('tools/demo.sh', NOVA_LIVEMIG_VENV=self.venv)
        self.assertEqual((0, ''), (proc.returncode, proc.stderr))
        self.assertEqual(['tools/install-lab-packages.sh',
                          'tools/libvirt/build-libvirt.sh',
                          'tools/setup-venv.sh',
                          '/venv/bin/nova-livemig-ext',
                          '/venv/bin/nova-livemig-ext'], self.ran())
        self.assertEqual(0o755, stat.S_IMODE(os.stat(self.lab).st_mode))


class SetupVenvTest(_Sandbox):
    """A virtualenv outside the checkout is checked before root runs it."""

    def test_hostile_venv_is_refused(self):
        self.copy('tools/setup-venv.sh')
        _marker_script(os.path.join(self.bin, 'python3'), self.marker)
        _marker_script(os.path.join(self.bin, 'pkg-config'), self.marker)
        for kind in self.HOSTILE:
            venv = self.plant(kind)
            proc = self.run_script('tools/setup-venv.sh',
                                   NOVA_LIVEMIG_VENV=venv)
            self.assertRefused(proc, 'setup-venv', venv)
