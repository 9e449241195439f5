"""The lab's state directory: this user's alone from / down, or refused.

The lab runs libvirtd and QEMU as root from it (hosts/*/etc becomes their
/etc/libvirt), so each case plants the hostile directory for real: another
owner (chown, which needs root, as the lab and CI run these tests), a
world-writable directory or parent, symlinks to root's own directories.
"""

import os
import stat
import unittest

import fixtures
import testtools

from nova_livemig_lab import config as lab_config
from nova_livemig_lab import lock
from nova_livemig_lab.errors import LabError

OTHER_UID = 65534
ROOT_ONLY = unittest.skipUnless(os.geteuid() == 0,
                                'planting another owner needs root')


class PrivateStateDirTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = lock.Path(self.useFixture(fixtures.TempDir()).path)

    def refused(self, path, *words, create=True):
        e = self.assertRaises(LabError, lock.private_state_dir, path,
                              create=create)
        text = str(e)
        self.assertEqual(1, len(text.splitlines()), text)
        self.assertIn(f'lab state directory {path} refused', text)
        self.assertIn('NOVA_LIVEMIG_LAB_DIR', text)
        for word in words:
            self.assertIn(word, text)
        return text

    def test_created_not_writable_by_others(self):
        old = os.umask(0o002)
        self.addCleanup(os.umask, old)
        path = lock.private_state_dir(self.tmp / 'a' / 'lab')
        for sub in (self.tmp / 'a', path):
            mode = os.stat(sub).st_mode & 0o777
            self.assertEqual(0o755, mode, oct(mode))
        # Twice is fine: the second call only checks.
        self.assertEqual(path, lock.private_state_dir(path))

    def test_writable_by_others_is_refused(self):
        path = self.tmp / 'lab'
        path.mkdir()
        os.chmod(path, 0o777)
        self.refused(path, 'writable by group or others (mode 777)')

    def test_sticky_and_writable_by_others_is_refused(self):
        path = self.tmp / 'lab'
        path.mkdir()
        os.chmod(path, 0o1777)
        self.refused(path, 'writable by group or others (mode 1777)')

    def test_symlink_to_a_root_directory_is_refused(self):
        link = self.tmp / 'lab'
        link.symlink_to('/etc')
        self.refused(link, 'is a symlink, not a directory')
        self.assertTrue(link.is_symlink())

    @ROOT_ONLY
    def test_another_owner_is_refused(self):
        path = self.tmp / 'lab'
        path.mkdir(mode=0o755)
        os.chown(path, OTHER_UID, OTHER_UID)
        self.refused(path, f'belongs to uid {OTHER_UID}, not to uid 0')

    @ROOT_ONLY
    def test_another_owner_in_a_sticky_directory_is_refused(self):
        # /var/tmp/nova-livemig-ext-lab, created first by somebody else,
        # with a hooks directory planted for libvirtd.
        vartmp = self.tmp / 'vartmp'
        vartmp.mkdir()
        os.chmod(vartmp, 0o1777)
        theirs = vartmp / 'nova-livemig-ext-lab'
        (theirs / 'hosts' / 'a' / 'etc' / 'hooks').mkdir(parents=True)
        for root, dirs, _files in os.walk(theirs):
            os.chown(root, OTHER_UID, OTHER_UID)
        self.refused(theirs, f'belongs to uid {OTHER_UID}')
        cfg = lab_config.load_config(theirs)
        e = self.assertRaises(LabError, lock.trusted_lab_dirs, cfg)
        self.assertIn(f'belongs to uid {OTHER_UID}', str(e))
        e = self.assertRaises(LabError, lock.LabLock, cfg)
        self.assertIn(f'belongs to uid {OTHER_UID}', str(e))
        self.assertFalse((theirs / lock.LOCK_NAME).exists())

    @ROOT_ONLY
    def test_a_parent_of_another_owner_is_refused(self):
        parent = self.tmp / 'home-of-someone'
        parent.mkdir(mode=0o755)
        os.chown(parent, OTHER_UID, OTHER_UID)
        self.refused(parent / 'lab', str(parent), f'belongs to uid {OTHER_UID}')
        self.assertFalse((parent / 'lab').exists())

    def test_a_world_writable_parent_without_sticky_bit_is_refused(self):
        parent = self.tmp / 'open'
        parent.mkdir()
        os.chmod(parent, 0o777)
        (parent / 'lab').mkdir(mode=0o755)
        self.refused(parent / 'lab', str(parent), 'without the sticky bit')
        self.refused(parent / 'new', 'without the sticky bit')
        self.assertFalse((parent / 'new').exists())

    def test_a_file_is_refused(self):
        path = self.tmp / 'lab'
        path.write_text('')
        self.refused(path, 'not a directory')


class LabDirsTest(testtools.TestCase):
    """What the lab mounts, writes and runs from below the state directory."""

    def setUp(self):
        super().setUp()
        self.tmp = lock.Path(self.useFixture(fixtures.TempDir()).path)
        self.cfg = lab_config.load_config(self.tmp / 'lab')

    def test_creates_every_directory_private(self):
        lock.trusted_lab_dirs(self.cfg)
        for path in [self.cfg.state_dir] + lock.lab_dirs(self.cfg):
            info = os.lstat(path)
            self.assertTrue(stat.S_ISDIR(info.st_mode), path)
            self.assertEqual(0o755, stat.S_IMODE(info.st_mode), path)
        # The bind-mount sources of both hosts are among them.
        for host in self.cfg.hosts:
            for key, _target in lab_config.HOST_PRIVATE_DIRS:
                self.assertIn(host.private_dir(key), lock.lab_dirs(self.cfg))
        lock.trusted_lab_dirs(self.cfg)

    def test_without_create_nothing_is_made(self):
        lock.trusted_lab_dirs(self.cfg, create=False)
        self.assertFalse(self.cfg.state_dir.exists())
        self.cfg.state_dir.mkdir(mode=0o755)
        lock.trusted_lab_dirs(self.cfg, create=False)
        self.assertEqual([], os.listdir(self.cfg.state_dir))

    def test_planted_symlink_for_a_bind_mount_is_refused(self):
        # hosts/a/etc -> /etc would give the lab's libvirtd root's /etc.
        etc = self.cfg.host_a.private_dir('etc')
        etc.parent.mkdir(parents=True)
        etc.symlink_to('/etc')
        for create in (True, False):
            e = self.assertRaises(LabError, lock.trusted_lab_dirs, self.cfg,
                                  create=create)
            self.assertIn(f'{etc} is a symlink', str(e))
            self.assertEqual(1, len(str(e).splitlines()))

    def test_planted_symlink_for_a_parent_is_refused(self):
        self.cfg.state_dir.mkdir(mode=0o755)
        (self.cfg.state_dir / 'hosts').symlink_to(self.tmp)
        e = self.assertRaises(LabError, lock.trusted_lab_dirs, self.cfg)
        self.assertIn('hosts is a symlink', str(e))
        self.assertFalse((self.tmp / 'a').exists())

    def test_writable_shared_dir_is_refused(self):
        lock.trusted_lab_dirs(self.cfg)
        os.chmod(self.cfg.shared_dir, 0o777)
        e = self.assertRaises(LabError, lock.trusted_lab_dirs, self.cfg)
        self.assertIn('writable by group or others (mode 777)', str(e))

    @ROOT_ONLY
    def test_old_qemu_of_another_owner_is_refused(self):
        lock.trusted_lab_dirs(self.cfg)
        old_qemu = self.cfg.state_dir / lock.OLD_QEMU_DIR
        old_qemu.mkdir()
        os.chown(old_qemu, OTHER_UID, OTHER_UID)
        e = self.assertRaises(LabError, lock.trusted_lab_dirs, self.cfg)
        self.assertIn(f'{old_qemu} belongs to uid {OTHER_UID}', str(e))

    def test_paths_outside_the_state_directory_are_refused(self):
        self.assertRaises(LabError, lock.state_subdir, self.tmp, '../etc')
        self.assertRaises(LabError, lock.state_subdir, self.tmp, '/etc')


class StateFilesTest(testtools.TestCase):
    """Files the lab writes in its state directory never follow a symlink."""

    def setUp(self):
        super().setUp()
        self.tmp = lock.Path(self.useFixture(fixtures.TempDir()).path)
        self.cfg = lab_config.load_config(self.tmp / 'lab')
        lock.trusted_lab_dirs(self.cfg)
        self.victim = self.tmp / 'shadow'
        self.victim.write_text('root:precious\n')

    def test_write_state_file(self):
        path = self.cfg.host_a.daemon_conf
        lock.write_state_file(path, 'listen_tcp = 1\n')
        self.assertEqual('listen_tcp = 1\n', path.read_text())
        path.unlink()
        path.symlink_to(self.victim)
        e = self.assertRaises(LabError, lock.write_state_file, path, 'x')
        self.assertIn('symlink', str(e))
        self.assertEqual('root:precious\n', self.victim.read_text())

    def test_write_state_file_bytes_and_mode(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        wrapper = self.cfg.state_dir / 'qemu-system-x86_64'
        lock.write_state_file(wrapper, b'#!/bin/sh\n', mode=0o755)
        self.assertEqual(b'#!/bin/sh\n', wrapper.read_bytes())
        self.assertEqual(0o755, stat.S_IMODE(os.stat(wrapper).st_mode))

    def test_open_state_log(self):
        path = self.cfg.host_a.daemon_output
        path.symlink_to(self.victim)
        e = self.assertRaises(LabError, lock.open_state_log, path)
        self.assertIn('symlink', str(e))
        self.assertEqual('root:precious\n', self.victim.read_text())

    def test_lock_file_symlink_is_refused(self):
        (self.cfg.state_dir / lock.LOCK_NAME).symlink_to(self.victim)
        e = self.assertRaises(LabError, lock.LabLock(self.cfg).__enter__)
        self.assertIn('symlink', str(e))
        self.assertEqual('root:precious\n', self.victim.read_text())

    def test_lock_works(self):
        with lock.LabLock(self.cfg):
            self.assertTrue((self.cfg.state_dir / lock.LOCK_NAME).is_file())
