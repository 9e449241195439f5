"""The supported Nova range, its check, and the differences inside it."""

import os
import re
import threading

from oslo_config import cfg
import testtools

from nova_livemig_ext import novacompat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

SUPPORTED = '31 (2025.1) to 34 (2026.2)'

# (version string, major)
MAJORS = [
    ('31.0.0', 31), ('31.3.1', 31), ('34.0.0', 34), ('35.0.0.0rc1', 35),
    ('34.1.0.dev12', 34), ('34.0.0-1ubuntu1', 34), ('30', 30),
    (' 33.0.2', 33), ('v32.2.1', 32), ('2025.1', 2025),
    ('', None), ('nova', None), ('.34', None), (None, None), (34, None),
]

# (version, words the refusal must have); None: accepted
CHECKS = [
    ('31.0.0', None), ('31.3.1', None), ('32.0.0', None), ('32.1.0', None),
    ('32.2.1', None), ('33.0.2', None),
    ('34.0.0', None), ('34.1.0.dev12', None),
    ('30.3.0', ['supports Nova ' + SUPPORTED, 'this is Nova 30.3.0',
                'upgrade Nova']),
    ('29.0.0', ['this is Nova 29.0.0', 'upgrade Nova']),
    ('35.0.0', ['supports Nova ' + SUPPORTED, 'this is Nova 35.0.0',
                'not been tested',
                'install a nova-livemig-ext release that supports it']),
    ('35.0.0.0rc1', ['this is Nova 35.0.0.0rc1', 'not been tested']),
    ('2025.1', ['this is Nova 2025.1']),
    ('', ["cannot tell which Nova this is (version '')", SUPPORTED]),
    ('unknown', ["(version 'unknown')"]),
    (None, ['(version None)']),
]


class CheckSupportedTest(testtools.TestCase):

    def test_parse_major(self):
        for version, major in MAJORS:
            self.assertEqual(major, novacompat.parse_major(version), version)

    def test_supported_and_refused_versions(self):
        for version, words in CHECKS:
            problem = novacompat.check_supported(version)
            if words is None:
                self.assertIsNone(problem, version)
                continue
            self.assertIsNotNone(problem, version)
            self.assertNotIn('\n', problem)
            self.assertTrue(problem.startswith('nova-livemig-ext '), problem)
            for word in words:
                self.assertIn(word, problem)

    def test_every_supported_major_has_a_release_name(self):
        for major in range(novacompat.MIN_SUPPORTED_MAJOR,
                           novacompat.MAX_SUPPORTED_MAJOR + 1):
            self.assertIn(major, novacompat.RELEASES)
            self.assertEqual('%d (%s)' % (major, novacompat.RELEASES[major]),
                             novacompat.release_name(major))
        self.assertEqual('36', novacompat.release_name(36))

    def test_tested_releases_lie_in_the_range(self):
        self.assertEqual(novacompat.MAX_SUPPORTED_MAJOR,
                         max(novacompat.TESTED_MAJORS))
        self.assertEqual(novacompat.MIN_SUPPORTED_MAJOR,
                         min(novacompat.TESTED_MAJORS))


class DeclaredRangeTest(testtools.TestCase):
    """requirements.txt, the CI matrix and the check say the same."""

    def test_requirements_pin_the_supported_range(self):
        with open(os.path.join(ROOT, 'requirements.txt')) as f:
            lines = [line for line in f if re.match(r'nova\W', line)]
        self.assertEqual(1, len(lines), lines)
        self.assertIn('nova>=%d.0.0,<%d ' % (
            novacompat.MIN_SUPPORTED_MAJOR,
            novacompat.MAX_SUPPORTED_MAJOR + 1), lines[0])

    def test_ci_builds_an_environment_for_each_older_tested_release(self):
        with open(os.path.join(ROOT, 'tools', 'setup-venv.sh')) as f:
            setup = f.read()
        with open(os.path.join(ROOT, 'tools', 'run-tests.sh')) as f:
            run_tests = f.read()
        for major in novacompat.TESTED_MAJORS:
            if major == novacompat.MAX_SUPPORTED_MAJOR:
                continue  # .venv, from requirements.txt
            release = novacompat.RELEASES[major]
            self.assertIn("    %s)\n" % release, setup)
            self.assertIn("'nova>=%d.0.0,<%d'" % (major, major + 1), setup)
            self.assertTrue(os.path.isfile(os.path.join(
                ROOT, 'tools', 'constraints',
                'upper-constraints-%s.txt' % release)), release)
            self.assertIn(release, run_tests)


class RunningNovaTest(testtools.TestCase):
    """The edge, against the Nova these tests run on."""

    def test_the_running_nova_is_supported(self):
        from importlib import metadata

        version = novacompat.installed_nova_version()
        self.assertEqual(
            novacompat.parse_major(metadata.version('nova')),
            novacompat.parse_major(version))
        self.assertEqual(novacompat.parse_major(version),
                         novacompat.installed_nova_major())
        self.assertIsNone(novacompat.check_supported(version))

    def test_spawn_runs_the_function_in_novas_kind_of_thread(self):
        ran = threading.Event()
        handle = novacompat.spawn(lambda value: ran.set() or value * 2, 21)
        if hasattr(handle, 'result'):
            self.assertEqual(42, handle.result(timeout=10))  # a future
        else:
            self.assertEqual(42, handle.wait())  # Nova 31: a green thread
        self.assertTrue(ran.is_set())

    def test_libvirt_options_present_or_as_older_nova_behaves(self):
        import nova.conf.libvirt

        conf = cfg.ConfigOpts()
        nova.conf.libvirt.register_opts(conf)
        conf([], project='nova', default_config_files=[])
        for name, (since, older) in (
                novacompat.LIBVIRT_OPTIONS_SINCE.items()):
            if name in conf.libvirt:
                self.assertGreaterEqual(novacompat.installed_nova_major(),
                                        since, name)
                conf.set_override(name, 7, 'libvirt')
                self.addCleanup(conf.clear_override, name, 'libvirt')
                self.assertEqual(7, novacompat.libvirt_option(
                    conf.libvirt, name))
            else:
                self.assertLess(novacompat.installed_nova_major(), since)
                self.assertEqual(older, novacompat.libvirt_option(
                    conf.libvirt, name))
        self.assertEqual(0, novacompat.libvirt_option(
            conf.libvirt, 'live_migration_bandwidth'))
        self.assertRaises(cfg.NoSuchOptError, novacompat.libvirt_option,
                          conf.libvirt, 'live_migration_no_such_option')


class _Group(object):
    """A config group with only the options given."""

    def __init__(self, **values):
        self.values = values

    def __getattr__(self, name):
        try:
            return self.__dict__['values'][name]
        except KeyError:
            raise AttributeError(name)


class LibvirtOptionTest(testtools.TestCase):

    def test_older_nova_defaults(self):
        older = _Group(live_migration_bandwidth=0)
        self.assertEqual(1, novacompat.libvirt_option(
            older, 'live_migration_parallel_connections'))
        self.assertEqual(5, novacompat.libvirt_option(
            older, 'live_migration_monitor_interval'))
        newer = _Group(live_migration_parallel_connections=4,
                       live_migration_monitor_interval=2)
        self.assertEqual(4, novacompat.libvirt_option(
            newer, 'live_migration_parallel_connections'))
        self.assertEqual(2, novacompat.libvirt_option(
            newer, 'live_migration_monitor_interval'))

    def test_other_missing_options_are_errors(self):
        self.assertRaises(AttributeError, novacompat.libvirt_option,
                          _Group(), 'live_migration_bandwidth')


class _Event(object):
    """An eventlet event's interface: ``ready()`` once sent."""

    def __init__(self):
        self.sent = False

    def ready(self):
        return self.sent


class _Future(object):

    def done(self):
        return True


class AsFutureTest(testtools.TestCase):

    def test_a_future_is_kept(self):
        future = _Future()
        self.assertIs(future, novacompat.as_future(future))

    def test_an_event_is_done_once_sent(self):
        event = _Event()
        future = novacompat.as_future(event)
        self.assertFalse(future.done())
        event.sent = True
        self.assertTrue(future.done())

    def test_anything_else_is_refused(self):
        e = self.assertRaises(TypeError, novacompat.as_future, object())
        self.assertIn('neither a future nor an event', str(e))

    def test_a_threading_event_is_done_once_set(self):
        event = threading.Event()
        future = novacompat.as_future(event)
        self.assertFalse(future.done())
        event.set()
        self.assertTrue(future.done())
        event.clear()
        self.assertFalse(future.done())

    def test_nova_32_0_event_follows_the_migrate_call(self):
        # Nova 32.0.0 and 32.1.0 (LibvirtDriver._live_migration): the
        # migrate call runs in a future whose done-callback sets a
        # threading.Event, and the monitor is handed that event.
        import concurrent.futures

        release = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(release.wait, 10)
            finish_event = threading.Event()
            call.add_done_callback(lambda _: finish_event.set())
            try:
                future = novacompat.as_future(finish_event)
                self.assertFalse(future.done())
            finally:
                release.set()
            self.assertTrue(finish_event.wait(10))
            self.assertTrue(future.done())

    def test_every_admitted_release_hands_over_something_taken(self):
        # What LibvirtDriver._live_migration passes its monitor, as read
        # from each release's nova/virt/libvirt/driver.py.
        import concurrent.futures

        handed_over = [
            ('31.0.0', _Event), ('31.3.1', _Event),
            ('32.0.0', threading.Event), ('32.1.0', threading.Event),
            ('32.2.0', concurrent.futures.Future),
            ('32.2.1', concurrent.futures.Future),
            ('33.0.0', concurrent.futures.Future),
            ('34.0.0', concurrent.futures.Future),
        ]
        for version, kind in handed_over:
            self.assertIsNone(novacompat.check_supported(version), version)
            future = novacompat.as_future(kind())
            self.assertFalse(future.done(), version)

    def test_novas_own_handles(self):
        import concurrent.futures

        future = concurrent.futures.Future()
        self.assertFalse(novacompat.as_future(future).done())
        future.set_result(None)
        self.assertTrue(novacompat.as_future(future).done())
