"""Installing the package adds the driver alias and changes nothing of Nova's.
"""

import base64
import hashlib
import importlib.metadata
import os
import subprocess
import sys

import testtools

from nova_livemig_ext import nova_virt_alias


def _record_paths(dist_name):
    dist = importlib.metadata.distribution(dist_name)
    return dist, [f for f in dist.files]


class PackagingTest(testtools.TestCase):

    def test_fresh_interpreter_resolves_the_alias_via_pth(self):
        # A new process proves the .pth in site-packages does the work, not
        # an import this test run made earlier.
        code = ('import sys, importlib.util\n'
                'assert any(type(f).__name__ == "AliasFinder" '
                'for f in sys.meta_path)\n'
                'spec = importlib.util.find_spec("nova.virt.livemig_ext")\n'
                'print(spec.name)\n')
        out = subprocess.run([sys.executable, '-c', code], check=True,
                             capture_output=True, text=True,
                             cwd='/').stdout
        self.assertEqual('nova.virt.livemig_ext', out.strip())

    def test_alias_never_shadows_other_names(self):
        finder = nova_virt_alias.AliasFinder()
        self.assertIsNone(finder.find_spec('nova.virt.libvirt'))
        self.assertIsNone(finder.find_spec('nova.virt.livemig_ext.x'))
        meta_path = []
        nova_virt_alias.install(meta_path)
        nova_virt_alias.install(meta_path)
        self.assertEqual(1, len(meta_path))

    def test_our_files_stay_out_of_novas_tree(self):
        _, files = _record_paths('nova-livemig-ext')
        for f in files:
            self.assertFalse(str(f).startswith('nova/'), f)
        self.assertIn('nova_livemig_ext.pth', [str(f) for f in files])

    def test_novas_installed_files_match_its_record(self):
        dist, files = _record_paths('nova')
        recorded = set()
        checked = 0
        for f in files:
            recorded.add(str(f))
            if not f.hash or not str(f).startswith('nova/'):
                continue
            with open(f.locate(), 'rb') as fh:
                digest = base64.urlsafe_b64encode(
                    hashlib.new(f.hash.mode, fh.read()).digest()
                ).rstrip(b'=').decode()
            self.assertEqual(f.hash.value, digest, 'changed: %s' % f)
            checked += 1
        self.assertGreater(checked, 1000)
        root = os.path.dirname(str(dist.locate_file('nova/__init__.py')))
        site = os.path.dirname(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for name in filenames:
                rel = os.path.relpath(os.path.join(dirpath, name), site)
                self.assertIn(rel, recorded, 'file not from Nova: %s' % rel)
