"""The lab's state directory: this user's alone, or refused."""

import os

import fixtures
import testtools

from nova_livemig_lab import lock
from nova_livemig_lab.errors import LabError


class PrivateStateDirTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_created_not_writable_by_others(self):
        path = lock.private_state_dir(lock.Path(self.tmp) / 'a' / 'lab')
        mode = os.stat(path).st_mode & 0o777
        self.assertEqual(0, mode & 0o022, oct(mode))
        # Twice is fine: the second call only checks.
        self.assertEqual(path, lock.private_state_dir(path))

    def test_writable_by_others_is_refused(self):
        path = lock.Path(self.tmp) / 'lab'
        path.mkdir()
        os.chmod(path, 0o777)
        e = self.assertRaises(LabError, lock.private_state_dir, path)
        self.assertIn('writable by group or others (mode 777)', str(e))
        self.assertEqual(1, len(str(e).splitlines()))

    def test_symlink_is_refused(self):
        target = lock.Path(self.tmp) / 'elsewhere'
        target.mkdir()
        link = lock.Path(self.tmp) / 'lab'
        link.symlink_to(target)
        e = self.assertRaises(LabError, lock.private_state_dir, link)
        self.assertIn('not a directory', str(e))

    def test_another_owner_is_refused(self):
        path = lock.Path(self.tmp) / 'lab'
        path.mkdir(mode=0o755)
        real = os.geteuid()
        self.useFixture(fixtures.MonkeyPatch('os.geteuid', lambda: real + 1))
        e = self.assertRaises(LabError, lock.private_state_dir, path)
        self.assertIn(f'belongs to uid {real}, not to uid {real + 1}', str(e))
