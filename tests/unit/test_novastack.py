"""tools/novastack/novastack.py: compute configuration and stopping services.

The module is loaded from its file with ``NOVASTACK_DIR`` and the lab's
directory pointed at a temporary directory, so nothing here can reach the
shared stack or lab.  Stopping is tried on real processes: a stand-in for
nova-compute whose graceful shutdown needs the helper in its process group,
as nova-compute's needs its privsep daemons.
"""

import configparser
import importlib.util
import os
import pathlib
import sys
import textwrap
import time

import fixtures
import testtools

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOVASTACK = ROOT / 'tools' / 'novastack' / 'novastack.py'

# A service like nova-compute: it starts a helper in its own process group
# (as oslo.privsep starts its daemons) and, on SIGTERM, ignores further
# SIGTERMs (as oslo.service does) and shuts down through the helper.  With
# the helper gone it prints a traceback and hangs until killed.
SERVICE = textwrap.dedent('''
    import os, signal, subprocess, sys, time, traceback
    helper = subprocess.Popen(
        [sys.executable, '-c',
         'import sys\\n'
         'for line in sys.stdin:\\n'
         '    print("done " + line.strip(), flush=True)\\n'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def graceful(signo, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            helper.stdin.write('cleanup\\n')
            helper.stdin.flush()
            answer = helper.stdout.readline()
            if answer != 'done cleanup\\n':
                raise RuntimeError('helper gone: %r' % answer)
        except Exception:
            traceback.print_exc()
            sys.stdout.flush()
            while True:
                time.sleep(1)
        print('stopped cleanly', flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, graceful)
    with open(sys.argv[1], 'w') as ready:
        ready.write('%d\\n' % helper.pid)
    while True:
        time.sleep(1)
''')

# A main process that ignores SIGTERM, with a child that does too.
STUBBORN = textwrap.dedent('''
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, '-c',
        'import signal, time\\n'
        'signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n'
        'time.sleep(600)\\n'])
    with open(sys.argv[1], 'w') as ready:
        ready.write('%d\\n' % child.pid)
    time.sleep(600)
''')


def load_novastack(test):
    """novastack.py with every path of its own under a temporary directory."""
    tmp = pathlib.Path(test.useFixture(fixtures.TempDir()).path)
    test.useFixture(fixtures.EnvironmentVariable('NOVASTACK_DIR',
                                                 str(tmp / 'stack')))
    test.useFixture(fixtures.EnvironmentVariable('NOVA_LIVEMIG_LAB_DIR',
                                                 str(tmp / 'lab')))
    spec = importlib.util.spec_from_file_location('novastack_under_test',
                                                  NOVASTACK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert str(module.STATE).startswith(str(tmp))
    assert str(module.INSTANCES_PATH).startswith(str(tmp))
    module.STATE.mkdir(parents=True)
    return module


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


class TestStop(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.ns = load_novastack(self)
        self.lines = []
        self.useFixture(fixtures.MockPatchObject(
            self.ns, 'log',
            lambda message, *args: self.lines.append(message % args)))

    def start(self, name, program):
        script = self.ns.STATE / (name + '.py')
        script.write_text(program)
        ready = self.ns.STATE / (name + '.ready')
        pid = self.ns.spawn(name, [sys.executable, str(script), str(ready)])
        self.addCleanup(self.kill_group, pid)
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text().endswith('\n')):
            self.assertLess(time.monotonic(), deadline, 'never ready')
            time.sleep(0.05)
        return pid, int(ready.read_text())

    def kill_group(self, pgid):
        try:
            os.killpg(pgid, 9)
        except ProcessLookupError:
            pass

    def output(self, name):
        return (self.ns.LOG_DIR / (name + '.out')).read_text()

    def test_the_main_process_stops_first_and_gracefully(self):
        pid, helper = self.start('nova-compute-a', SERVICE)
        started = time.monotonic()
        self.ns.stop('nova-compute-a', timeout_s=20)
        took = time.monotonic() - started
        self.assertFalse(alive(pid))
        self.assertFalse(alive(helper))
        out = self.output('nova-compute-a')
        self.assertIn('stopped cleanly', out)
        self.assertNotIn('Traceback', out)
        self.assertEqual([], self.lines)
        self.assertLess(took, 10)
        self.assertIsNone(self.ns.service_pid('nova-compute-a'))

    def test_what_ignores_sigterm_is_killed_with_its_group(self):
        pid, child = self.start('stubborn', STUBBORN)
        started = time.monotonic()
        self.ns.stop('stubborn', timeout_s=1)
        took = time.monotonic() - started
        self.assertFalse(alive(pid))
        self.assertFalse(alive(child))
        self.assertEqual(2, len(self.lines), self.lines)
        self.assertIn('still running 1 s after SIGTERM: SIGKILL',
                      self.lines[0])
        self.assertIn('ignored SIGTERM', self.lines[1])
        self.assertLess(took, 1 + self.ns.GROUP_STOP_TIMEOUT_S + 5)

    def test_each_service_its_own_timeout(self):
        pid, _child = self.start('stubborn', STUBBORN)
        self.ns.stop('stubborn', timeout_s=30, timeouts={'stubborn': 0.5})
        self.assertFalse(alive(pid))


class TestComputeConfiguration(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.ns = load_novastack(self)
        self.ns.BIN.mkdir(parents=True)
        self.phases = []
        self.useFixture(fixtures.MockPatchObject(self.ns, '_devstack',
                                                 self.fake_devstack))
        self.useFixture(fixtures.MockPatchObject(
            self.ns, 'log', lambda message, *args: None))
        self.a, self.b = self.ns.LAB.hosts

    def fake_devstack(self, phase, conf, enable_driver=True, log_file=None,
                      plugin_vars=None):
        """What the plugin's post-config phase writes."""
        self.phases.append(phase)
        self.ns.iniset(conf, 'DEFAULT', 'compute_driver',
                       'livemig_ext.LibvirtLiveMigExtDriver')
        self.ns.iniset(conf, 'livemig_ext', 'mode', 'controller')

    def read(self, path):
        parser = configparser.RawConfigParser(interpolation=None)
        parser.read(path)
        return parser

    def write(self, *overrides):
        return [self.ns.write_compute_conf(host, 'ext', list(overrides), {})
                for host in (self.a, self.b)]

    def test_set_for_every_compute_and_for_one(self):
        conf_a, conf_b = self.write('a:livemig_ext.max_downtime_ms=300',
                                    'livemig_ext.ladder=downtime,abort',
                                    'b:libvirt.live_migration_uri=x:1=2')
        a, b = self.read(conf_a), self.read(conf_b)
        self.assertEqual('300', a.get('livemig_ext', 'max_downtime_ms'))
        self.assertFalse(b.has_option('livemig_ext', 'max_downtime_ms'))
        self.assertEqual('downtime,abort', a.get('livemig_ext', 'ladder'))
        self.assertEqual('downtime,abort', b.get('livemig_ext', 'ladder'))
        self.assertEqual('x:1=2', b.get('libvirt', 'live_migration_uri'))
        self.assertNotEqual('x:1=2', a.get('libvirt', 'live_migration_uri'))

    def test_a_set_for_no_such_host_is_refused(self):
        for item in ('c:livemig_ext.max_downtime_ms=300', 'a:nodot=1',
                     'a:livemig_ext.x', ':livemig_ext.x=1'):
            self.assertRaises(self.ns.StackError, self.ns.parse_overrides,
                              [item], self.ns.LAB.hosts)

    def test_a_bad_set_leaves_running_computes_alone(self):
        stopped = []
        self.useFixture(fixtures.MockPatchObject(
            self.ns, 'stop_computes', lambda: stopped.append(True)))
        code = self.ns.main(['computes', 'restart', '--set',
                             'c:livemig_ext.max_downtime_ms=300'])
        self.assertEqual(1, code)
        self.assertEqual([], stopped)

    def test_the_local_file_is_read_last_and_never_written(self):
        local = self.ns.compute_local_conf_path(self.a)
        self.assertEqual(self.ns.compute_conf_path(self.a).name + '.local',
                         local.name)
        self.write()
        self.assertEqual([self.ns.nova_conf_path(),
                          self.ns.compute_conf_path(self.a)],
                         self.ns.compute_conf_files(self.a))
        text = '[livemig_ext]\nmax_downtime_ms = 250\n# mine\n'
        local.write_text(text)
        os.utime(local, (1000, 1000))
        conf_a, conf_b = self.write('livemig_ext.max_downtime_ms=400')
        self.assertEqual(text, local.read_text())
        self.assertEqual(1000, local.stat().st_mtime)
        self.assertEqual([self.ns.nova_conf_path(), conf_a, local],
                         self.ns.compute_conf_files(self.a))
        self.assertEqual([self.ns.nova_conf_path(), conf_b],
                         self.ns.compute_conf_files(self.b))
        # privsep-helper reads what nova-compute reads.
        helper = self.read(conf_a).get('nova_sys_admin', 'helper_command')
        self.assertTrue(helper.endswith('--config-file %s' % local), helper)
        self.assertIn('.local', conf_a.read_text().splitlines()[1])

    def test_hand_edits_to_the_generated_file_are_lost(self):
        conf_a, _ = self.write()
        self.ns.iniset(conf_a, 'livemig_ext', 'max_downtime_ms', '999')
        conf_a, _ = self.write()
        self.assertFalse(self.read(conf_a).has_option('livemig_ext',
                                                      'max_downtime_ms'))

    def test_nova_computes_graceful_shutdown_fits_the_stacks_wait(self):
        conf_a, _ = self.write()
        parser = self.read(conf_a)
        graceful = parser.getint('DEFAULT', 'graceful_shutdown_timeout')
        manager = parser.getint('DEFAULT', 'manager_shutdown_timeout')
        self.assertLess(manager, graceful)
        self.assertGreater(self.ns.compute_stop_timeout_s(self.a), graceful)
        # The operator's own value is waited for too.
        self.ns.compute_local_conf_path(self.a).write_text(
            '[DEFAULT]\ngraceful_shutdown_timeout = 90\n')
        self.assertEqual(90 + self.ns.COMPUTE_STOP_MARGIN_S,
                         self.ns.compute_stop_timeout_s(self.a))
        self.assertEqual(graceful + self.ns.COMPUTE_STOP_MARGIN_S,
                         self.ns.compute_stop_timeout_s(self.b))

    def test_reset_keeps_the_local_files(self):
        self.write()
        local = self.ns.compute_local_conf_path(self.a)
        local.write_text('[DEFAULT]\ndebug = true\n')
        self.useFixture(fixtures.MockPatchObject(
            self.ns, 'down', lambda: {'still_running': []}))
        self.ns.reset()
        self.assertTrue(local.exists())
        self.assertFalse(self.ns.compute_conf_path(self.a).exists())
        self.assertFalse(self.ns.compute_conf_path(self.b).exists())
        self.assertEqual([local], [p for p in self.ns.ETC.rglob('*')
                                   if p.is_file()])
