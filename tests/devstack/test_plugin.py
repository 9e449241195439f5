"""devstack/plugin.sh against a real Nova installed editable, as devstack does.

``tests/devstack/harness.sh`` sources the plugin with stand-ins for devstack's
functions. The environment it works on is built once and cached in
``.devstack-harness/`` at the top of the checkout:

* ``nova-<version>/``: Nova's sdist, unpacked: "Nova's tree";
* ``venv/``: a virtualenv with that tree installed with ``pip install -e``
  (so nothing of Nova's is in site-packages) and libvirt-python, pinned to
  the versions of the environment that built it;
* ``src/``: a fresh copy of this project, which the plugin installs.

Building it needs network access to PyPI (one to three minutes) and is done
again only for another Python or Nova version. When PyPI or the libvirt
headers are missing, the tests that need the environment are skipped and say
why.
"""

import configparser
import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import testtools

from nova_livemig_ext import conf as livemig_conf

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HARNESS = os.path.join(TOP, 'tests', 'devstack', 'harness.sh')
CACHE = os.environ.get('LIVEMIG_DEVSTACK_HARNESS_DIR',
                       os.path.join(TOP, '.devstack-harness'))
VENV = os.path.join(CACHE, 'venv')
CONSTRAINTS = os.path.join(CACHE, 'constraints.txt')
DRIVER = 'livemig_ext.LibvirtLiveMigExtDriver'
# What the project copy needs to build and what the plugin runs from it.
PROJECT_FILES = ('setup.cfg', 'setup.py', 'pyproject.toml', 'README.rst',
                 'requirements.txt', 'nova_livemig_ext.pth',
                 'nova_livemig_ext', 'devstack', 'tools/build_hook.py')
STARTED = ('2026-11-26 01:02:03.456 12345 INFO nova_livemig_ext.driver '
           '[None req-1] nova-livemig-ext: mode controller, flags '
           'VIR_MIGRATE_LIVE|VIR_MIGRATE_PEER2PEER, ladder '
           'downtime,auto_converge,abort, downtime 300..500 ms, bandwidth '
           'unlimited MiB/s\n')
REFUSED = ('2026-11-26 01:02:03.456 12345 ERROR nova_livemig_ext.driver '
           '[None req-1] nova-livemig-ext refuses this configuration:\n'
           '  - [livemig_ext] ladder: postcopy needs permit_post_copy.\n')
# A nova-cpu.conf as devstack leaves it before the post-config phase.
DEVSTACK_CPU_CONF = """[DEFAULT]
compute_driver = libvirt.LibvirtDriver
my_ip = 192.0.2.10

[libvirt]
virt_type = qemu
live_migration_uri = qemu+ssh://stack@%s/system
"""


class HarnessUnavailable(Exception):
    """Something outside the project is missing; the reason says what."""


_UNAVAILABLE = []


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, check=False,
                          **kwargs)


def _clean_env():
    """The caller's environment without any local.conf-like variable."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith('LIVEMIG_EXT_')}


def _tail(text, lines=15):
    kept = [line for line in text.strip().splitlines()
            if not line.startswith('WARNING: Location')]
    return '\n'.join(kept[-lines:])


@contextlib.contextmanager
def _locked():
    """One harness user at a time: stestr runs tests in parallel."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, 'lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_CONSTRAINTS_TEXT = []


def _constraints():
    """The versions of the running environment, minus Nova and ourselves."""
    if not _CONSTRAINTS_TEXT:
        _CONSTRAINTS_TEXT.append(_freeze())
    return _CONSTRAINTS_TEXT[0]


def _freeze():
    out = _run([sys.executable, '-m', 'pip', 'freeze', '--all'])
    if out.returncode:
        raise HarnessUnavailable('pip freeze failed: %s' % _tail(out.stderr))
    keep = []
    for line in out.stdout.splitlines():
        name = line.split('==')[0].strip().lower()
        if (line.startswith(('-e', '#')) or '==' not in line
                or name in ('nova', 'nova-livemig-ext', 'pip', 'setuptools',
                            'wheel')):
            continue
        keep.append(line)
    return '\n'.join(sorted(keep)) + '\n'


def _build_environment(nova_version, constraints, stamp):
    for name in os.listdir(CACHE):
        if name not in ('lock',):
            path = os.path.join(CACHE, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    with open(CONSTRAINTS, 'w') as f:
        f.write(constraints)
    sdist = os.path.join(CACHE, 'sdist')
    out = _run([sys.executable, '-m', 'pip', 'download', '--quiet',
                '--no-deps', '--no-binary', ':all:', '--dest', sdist,
                'nova==%s' % nova_version])
    if out.returncode:
        raise HarnessUnavailable(
            'cannot download the nova==%s sdist from PyPI: %s'
            % (nova_version, _tail(out.stderr, 5)))
    archive = os.path.join(sdist, 'nova-%s.tar.gz' % nova_version)
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(CACHE, filter='data')
        except TypeError:  # Python before 3.11.4 has no extraction filters
            tar.extractall(CACHE)
    base = getattr(sys, '_base_executable', sys.executable)
    out = _run([base, '-m', 'venv', VENV])
    if out.returncode:
        raise HarnessUnavailable('python -m venv failed: %s'
                                 % _tail(out.stderr))
    pip = [os.path.join(VENV, 'bin', 'pip'), 'install', '--quiet',
           '--disable-pip-version-check', '-c', CONSTRAINTS]
    # Nova editable, as devstack's setup_develop installs it.
    out = _run(pip + ['-e', _nova_tree(nova_version)])
    if out.returncode:
        raise HarnessUnavailable('pip install -e nova failed: %s'
                                 % _tail(out.stderr))
    # devstack installs the binding for the libvirt driver itself.
    out = _run(pip + ['libvirt-python'])
    if out.returncode:
        raise HarnessUnavailable(
            'libvirt-python does not install (it builds against the '
            'libvirt-dev and pkg-config packages): %s' % _tail(out.stderr))
    with open(stamp, 'w') as f:
        f.write('ready\n')


def _nova_tree(nova_version):
    return os.path.join(CACHE, 'nova-%s' % nova_version)


def prepare():
    """Build (once) or reuse the cached environment; return Nova's tree.

    Call with the lock held.
    """
    if shutil.which('bash') is None:
        raise HarnessUnavailable('bash is not installed')
    nova_version = importlib.metadata.version('nova')
    # Rebuilt for another Python or Nova only: the versions of the other
    # packages are pinned when it is built, and any set that installs is
    # as good a devstack (tox envs and .venv can share the cache).
    key = hashlib.sha256(('%s\n%s' % (
        sys.version, nova_version)).encode()).hexdigest()[:12]
    stamp = os.path.join(CACHE, 'ready-%s' % key)
    if not os.path.exists(stamp):
        _build_environment(nova_version, _constraints(), stamp)
    # A fresh copy of the project each run: the plugin installs the code
    # under test, and the checkout itself is never written to.
    src = os.path.join(CACHE, 'src', 'nova-livemig-ext')
    shutil.rmtree(os.path.dirname(src), ignore_errors=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for rel in PROJECT_FILES:
        origin = os.path.join(TOP, rel)
        target = os.path.join(src, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(origin):
            shutil.copytree(origin, target, ignore=ignore)
        else:
            shutil.copy2(origin, target)
    return _nova_tree(nova_version), src


def tree_listing(root):
    """{relative path: sha256} of every file and link under ``root``."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                listing[rel] = 'link:' + os.readlink(path)
                continue
            with open(path, 'rb') as f:
                listing[rel] = hashlib.sha256(f.read()).hexdigest()
    return listing


def site_packages():
    return os.path.join(VENV, 'lib', 'python%d.%d' % sys.version_info[:2],
                        'site-packages')


class PluginScriptTest(testtools.TestCase):
    """What needs no Nova environment."""

    def test_shellcheck_clean(self):
        if shutil.which('shellcheck') is None:
            self.skipTest('shellcheck is not installed (Debian package '
                          '"shellcheck")')
        out = _run(['shellcheck', '-x', 'devstack/plugin.sh',
                    'devstack/settings', 'tests/devstack/harness.sh'],
                   cwd=TOP)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)

    def test_settings_name_every_option(self):
        out = _run(['bash', '-c', 'source devstack/settings && '
                    'printf "%s\\n" "${LIVEMIG_EXT_OPTIONS[@]}" && '
                    'compgen -v LIVEMIG_EXT_'], cwd=TOP, env=_clean_env())
        self.assertEqual(0, out.returncode, out.stderr)
        words = out.stdout.split()
        names = [o.name for o in livemig_conf.ALL_OPTS]
        self.assertEqual(names, words[:len(names)])
        variables = set(words[len(names):])
        for name in names:
            self.assertIn('LIVEMIG_EXT_' + name.upper(), variables)

    def test_settings_defaults_are_the_code_defaults(self):
        out = _run(['bash', '-c', 'source devstack/settings && for o in '
                    '"${LIVEMIG_EXT_OPTIONS[@]}"; do v=LIVEMIG_EXT_${o^^}; '
                    'echo "$o=${!v}"; done'], cwd=TOP, env=_clean_env())
        self.assertEqual(0, out.returncode, out.stderr)
        opts = {o.name: o for o in livemig_conf.ALL_OPTS}
        written = dict(line.split('=', 1) for line in out.stdout.split())
        for name, value in written.items():
            if not value:
                continue
            default = opts[name].default
            if isinstance(default, list):
                default = ','.join(default)
            self.assertEqual(str(default).lower(), value.lower(), name)


class DevstackHarnessTest(testtools.TestCase):
    """The plugin's phases against a real, editable Nova."""

    def setUp(self):
        super().setUp()
        lock = _locked()
        lock.__enter__()
        self.addCleanup(lock.__exit__, None, None, None)
        if _UNAVAILABLE:
            self.skipTest(_UNAVAILABLE[0])
        try:
            self.nova_tree, self.src = prepare()
        except HarnessUnavailable as e:
            # Once per process: a missing network can be slow to fail.
            _UNAVAILABLE.append('devstack harness unavailable: %s' % e)
            self.skipTest(_UNAVAILABLE[0])
        self.etc = tempfile.mkdtemp(prefix='livemig-devstack-')
        self.addCleanup(shutil.rmtree, self.etc, True)
        self.nova_conf = os.path.join(self.etc, 'nova.conf')
        self.cpu_conf = os.path.join(self.etc, 'nova-cpu.conf')
        self.reset_confs()
        self.journal = os.path.join(self.etc, 'journal')
        self.write_journal(STARTED)
        # Start and leave the cached venv without our package, whatever an
        # interrupted run before or this test did.
        self.stack('clean')
        self.addCleanup(self.stack, 'clean')

    def reset_confs(self):
        for path in (self.nova_conf, self.cpu_conf):
            with open(path, 'w') as f:
                f.write(DEVSTACK_CPU_CONF % 'compute2')

    def write_journal(self, text):
        with open(self.journal, 'w') as f:
            f.write(text)

    def stack(self, *phases, **localrc):
        env = {k: v for k, v in _clean_env().items()
               if not k.startswith(('VIRTUAL_ENV', 'PYTHON'))}
        env.update({
            'HARNESS_VENV': VENV,
            'HARNESS_CONSTRAINTS': CONSTRAINTS,
            'HARNESS_JOURNAL': self.journal,
            'NOVA_CONF': self.nova_conf,
            'NOVA_CPU_CONF': self.cpu_conf,
            'LIVEMIG_EXT_DIR': self.src,
            'PBR_VERSION': '0.0.0',
            # Keep every tree free of byte-code written by these runs.
            'PYTHONDONTWRITEBYTECODE': '1',
            'PATH': os.path.join(VENV, 'bin') + os.pathsep + env['PATH'],
        })
        env.update(localrc)
        return _run(['bash', HARNESS] + list(phases), env=env, cwd=self.etc)

    def assertStacked(self, *phases, **localrc):
        out = self.stack(*phases, **localrc)
        self.assertEqual(0, out.returncode,
                         'stdout:\n%s\nstderr:\n%s' % (out.stdout, out.stderr))
        return out

    def read_conf(self, path):
        parser = configparser.RawConfigParser(default_section='__none__')
        parser.read(path)
        return {s: dict(parser.items(s)) for s in parser.sections()}

    def python(self, code):
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
        env.pop('VIRTUAL_ENV', None)
        return _run([os.path.join(VENV, 'bin', 'python3'), '-W', 'ignore',
                     '-c', code], env=env, cwd=self.etc)

    def load_driver(self, conf):
        """Nova's own loader, in the harness venv, on ``conf``."""
        return self.python(
            'import sys\n'
            'import nova.conf\n'
            'from nova.virt import driver\n'
            'CONF = nova.conf.CONF\n'
            'CONF(["--config-file", %r], project="nova",\n'
            '     default_config_files=[])\n'
            'd = driver.load_compute_driver(None)\n'
            'c = type(d)\n'
            'print(c.__module__ + "." + c.__name__)\n'
            'o = CONF.livemig_ext\n'
            'print(",".join(o.ladder), o.max_downtime_ms,\n'
            '      o.permit_post_copy, o.bandwidth_mib_s)\n' % conf)

    def test_nova_is_editable_in_the_harness(self):
        # The case devstack creates: Nova's package is not in site-packages,
        # so a file dropped into site-packages/nova would never be imported.
        self.assertFalse(os.path.exists(os.path.join(site_packages(),
                                                     'nova')))
        out = self.python('import nova; print(nova.__file__)')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(os.path.join(self.nova_tree, 'nova', '__init__.py'),
                         out.stdout.strip())

    def test_full_cycle_leaves_novas_tree_untouched(self):
        nova_before = tree_listing(self.nova_tree)
        site_before = tree_listing(site_packages())
        self.assertNotIn('nova_livemig_ext.pth', site_before)

        self.assertStacked('stack install')
        self.assertEqual(nova_before, tree_listing(self.nova_tree))
        self.assertIn('nova_livemig_ext.pth', tree_listing(site_packages()))

        self.assertStacked('stack post-config')
        self.assertEqual(nova_before, tree_listing(self.nova_tree))
        # With no LIVEMIG_EXT_* variable set: only the mode; every other
        # option keeps its default or takes Nova's [libvirt] value.
        self.assertEqual(
            {'mode': 'controller'},
            self.read_conf(self.cpu_conf)['livemig_ext'])

        out = self.assertStacked('stack test-config')
        self.assertIn('loads nova_livemig_ext.driver.LibvirtLiveMigExtDriver',
                      out.stdout)
        self.assertIn('nova-livemig-ext: mode controller', out.stdout)
        self.assertEqual(nova_before, tree_listing(self.nova_tree))

        self.assertStacked('unstack')
        self.assertEqual(nova_before, tree_listing(self.nova_tree))

        self.assertStacked('clean')
        self.assertEqual(nova_before, tree_listing(self.nova_tree))
        self.assertEqual(site_before, tree_listing(site_packages()))
        out = self.python('import importlib.util\n'
                          'print(importlib.util.find_spec('
                          '"nova.virt.livemig_ext"))')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual('None', out.stdout.strip())

    def test_post_config_writes_driver_and_local_conf_options(self):
        self.assertStacked(
            'stack install', 'stack post-config',
            LIVEMIG_EXT_LADDER='downtime,postcopy,abort',
            LIVEMIG_EXT_PERMIT_POST_COPY='True',
            LIVEMIG_EXT_MAX_DOWNTIME_MS='800',
            LIVEMIG_EXT_BANDWIDTH_MIB_S='100',
            LIVEMIG_EXT_COMPLETION_TIMEOUT_S_PER_GIB='')
        expected = {
            'mode': 'controller',
            'ladder': 'downtime,postcopy,abort',
            'permit_post_copy': 'True',
            'max_downtime_ms': '800',
            'bandwidth_mib_s': '100',
        }
        for path in (self.cpu_conf, self.nova_conf):
            conf = self.read_conf(path)
            self.assertEqual(DRIVER, conf['DEFAULT']['compute_driver'])
            self.assertEqual('192.0.2.10', conf['DEFAULT']['my_ip'])
            self.assertEqual('qemu', conf['libvirt']['virt_type'])
            self.assertEqual(expected, conf['livemig_ext'])

        # Nova's own loader, from the environment devstack installed into.
        out = self.load_driver(self.cpu_conf)
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(
            ['nova_livemig_ext.driver.LibvirtLiveMigExtDriver',
             'downtime,postcopy,abort 800 True 100'],
            out.stdout.strip().splitlines())

        # LIVEMIG_EXT_ENABLE_DRIVER=False: options only, Nova's driver kept.
        self.reset_confs()
        self.assertStacked('stack post-config',
                           LIVEMIG_EXT_ENABLE_DRIVER='False')
        conf = self.read_conf(self.cpu_conf)
        self.assertEqual('libvirt.LibvirtDriver',
                         conf['DEFAULT']['compute_driver'])
        self.assertEqual('controller', conf['livemig_ext']['mode'])
        # test-config then checks the options but not the driver.
        self.write_journal('')
        out = self.assertStacked('stack test-config',
                                 LIVEMIG_EXT_ENABLE_DRIVER='False')
        self.assertIn('options only; mode controller', out.stdout)

    def test_test_config_fails_unless_nova_compute_loaded_the_driver(self):
        self.assertStacked('stack install', 'stack post-config')

        # nova-compute has not logged the start line (yet).
        self.write_journal('INFO nova.compute.manager Starting compute\n')
        out = self.stack('stack test-config', LIVEMIG_EXT_CHECK_TIMEOUT_S='0')
        self.assertEqual(1, out.returncode, out.stdout)
        self.assertIn('did not log', out.stderr)

        # nova-compute refused the configuration: its reasons are shown.
        self.write_journal(REFUSED)
        out = self.stack('stack test-config')
        self.assertEqual(1, out.returncode, out.stdout)
        self.assertIn('postcopy needs permit_post_copy', out.stdout)
        self.assertIn('refused the [livemig_ext] configuration', out.stderr)

        # The configuration loads another driver.
        self.write_journal(STARTED)
        self.reset_confs()
        out = self.stack('stack test-config')
        self.assertEqual(1, out.returncode, out.stdout)
        self.assertIn('not LibvirtLiveMigExtDriver', out.stderr)

        # Options that nova-compute would refuse fail before the log is read.
        out = self.stack('stack post-config', 'stack test-config',
                         LIVEMIG_EXT_LADDER='downtime,postcopy,abort')
        self.assertEqual(1, out.returncode, out.stdout)
        self.assertIn('permit_post_copy', out.stderr)

    def test_other_services_are_left_alone(self):
        before = tree_listing(site_packages())
        self.assertStacked('stack install', 'stack post-config',
                           'stack test-config', 'unstack', 'clean',
                           ENABLED_SERVICES='n-api,n-cond,n-sch')
        self.assertEqual(before, tree_listing(site_packages()))
        conf = self.read_conf(self.cpu_conf)
        self.assertEqual('libvirt.LibvirtDriver',
                         conf['DEFAULT']['compute_driver'])
        self.assertNotIn('livemig_ext', conf)

    def test_other_virt_drivers_are_refused(self):
        out = self.stack('stack post-config', VIRT_DRIVER='fake')
        self.assertEqual(1, out.returncode, out.stdout)
        self.assertIn('VIRT_DRIVER is fake', out.stderr)
