"""flake8 and ``mypy --strict`` are part of the test run, not a separate step.

The same commands as ``tox -e pep8`` and ``tox -e mypy``, so a change that
breaks either fails CI.
"""

import os
import subprocess
import sys
import unittest

import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STRICT = ['nova_livemig_ext/convergence', 'nova_livemig_ext/policy.py',
          'nova_livemig_ext/flags.py', 'nova_livemig_ext/instance_policy.py',
          'nova_livemig_ext/job.py', 'nova_livemig_ext/planner.py',
          'nova_livemig_ext/monitor.py', 'nova_livemig_ext/native.py',
          'nova_livemig_ext/postcopy.py', 'nova_livemig_ext/records.py',
          'nova_livemig_ext/devices.py', 'nova_livemig_ext/hostfacts.py',
          'nova_livemig_ext/novacompat.py',
          'lab/nova_livemig_lab']


def _have(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class StyleTest(testtools.TestCase):

    def run_tool(self, *args):
        proc = subprocess.run([sys.executable, '-m', *args], cwd=ROOT,
                              capture_output=True, text=True)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)

    @unittest.skipUnless(_have('flake8'), 'flake8 is not installed')
    def test_flake8(self):
        self.run_tool('flake8', 'nova_livemig_ext', 'lab', 'tests', 'tools',
                      'benchmarks', 'devstack')

    @unittest.skipUnless(_have('mypy'), 'mypy is not installed')
    def test_mypy_strict(self):
        self.run_tool('mypy', '--strict', *STRICT)
