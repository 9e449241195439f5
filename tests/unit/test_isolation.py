"""Unit-test workers neither import the functional tests nor run eventlet."""

import os
import subprocess
import sys
import tempfile

import testtools

import tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tests.__file__)))

# Discovers as a stestr worker does, then reports what the process holds.
PROBE = '''
import sys, unittest
suite = unittest.defaultTestLoader.discover('./tests', top_level_dir='./')
print(suite.countTestCases())
print('tests.functional' in sys.modules)
print('eventlet' in sys.modules and __import__('eventlet.patcher').patcher
      .is_monkey_patched('thread'))
'''


class LoadTestsTest(testtools.TestCase):

    def test_packages_from_the_load_list(self):
        packages = {'unit', 'functional', 'e2e'}
        with tempfile.NamedTemporaryFile('w', suffix='.txt') as f:
            f.write('tests.unit.test_a.T.test_x\ntests.e2e.test_b.T.test_y\n')
            f.flush()
            self.assertEqual(['e2e', 'unit'], tests.packages_to_load(
                ['run', 'discover', '--load-list', f.name], packages))
            self.assertEqual(['e2e', 'unit'], tests.packages_to_load(
                ['run', '--load-list=%s' % f.name], packages))
        self.assertEqual(['e2e', 'functional', 'unit'],
                         tests.packages_to_load(['run', 'discover'], packages))

    def test_unknown_ids_load_everything(self):
        with tempfile.NamedTemporaryFile('w', suffix='.txt') as f:
            f.write('tests.unit.test_a.T.test_x\n'
                    'unittest.loader._FailedTest.tests.functional\n')
            f.flush()
            self.assertEqual(['functional', 'unit'], tests.packages_to_load(
                ['--load-list', f.name], {'unit', 'functional'}))

    def probe(self, ids):
        with tempfile.NamedTemporaryFile('w', suffix='.txt') as f:
            f.write('\n'.join(ids) + '\n')
            f.flush()
            env = dict(os.environ)
            env.pop('OS_NOVA_DISABLE_EVENTLET_PATCHING', None)
            out = subprocess.run(
                [sys.executable, '-c', PROBE, '--load-list', f.name],
                cwd=ROOT, env=env, capture_output=True, text=True,
                check=True).stdout.split()
        return int(out[0]), out[1] == 'True', out[2] == 'True'

    def test_a_unit_worker_stays_free_of_eventlet(self):
        count, functional, patched = self.probe([self.id()])
        self.assertFalse(functional)
        self.assertFalse(patched)
        self.assertGreater(count, 100)

    def test_a_functional_worker_still_gets_nova_functional_base(self):
        count, functional, patched = self.probe(
            ['tests.functional.test_live_migration.X.test_y'])
        self.assertTrue(functional)
        self.assertTrue(patched)
        self.assertGreater(count, 0)
