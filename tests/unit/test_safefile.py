"""nova_livemig_ext.safefile: trusted directories and atomic, no-follow writes.

Hostile directories are planted for real (another owner through chown,
world-writable modes, symlinks to root's directories), so the ownership
cases need root, as the lab and CI run these tests.
"""

import errno
import os
import stat
import unittest

import fixtures
import testtools

from nova_livemig_ext import safefile

# nobody on Debian: an owner that is neither root nor the test's user.
OTHER_UID = 65534
ROOT_ONLY = unittest.skipUnless(os.geteuid() == 0,
                                'planting another owner needs root')


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


class TrustedDirTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def refused(self, path, *words, create=False):
        e = self.assertRaises(safefile.UnsafePath, safefile.check_trusted_dir,
                              path, create=create)
        for word in words:
            self.assertIn(word, str(e))
        self.assertEqual(1, len(str(e).splitlines()))
        return str(e)

    def test_own_directory_passes_and_is_returned_absolute(self):
        path = os.path.join(self.tmp, 'lab')
        os.mkdir(path, 0o755)
        self.assertEqual(path, safefile.check_trusted_dir(path))
        self.useFixture(fixtures.MonkeyPatch('os.getcwd', lambda: self.tmp))
        self.assertEqual(path, safefile.check_trusted_dir('lab'))

    def test_sticky_world_writable_parent_is_fine_for_our_own_entry(self):
        # /var/tmp itself: 1777, owned by root.
        sticky = os.path.join(self.tmp, 'vartmp')
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        mine = os.path.join(sticky, 'lab')
        os.mkdir(mine, 0o755)
        safefile.check_trusted_dir(mine)
        # But the sticky directory itself is no state directory.
        self.refused(sticky, 'writable by group or others (mode 1777)')

    def test_create_makes_each_missing_directory_755_whatever_the_umask(self):
        old = os.umask(0o002)
        self.addCleanup(os.umask, old)
        path = os.path.join(self.tmp, 'a', 'b', 'lab')
        safefile.check_trusted_dir(path, create=True)
        for sub in ('a', 'a/b', 'a/b/lab'):
            info = os.lstat(os.path.join(self.tmp, sub))
            self.assertTrue(stat.S_ISDIR(info.st_mode))
            self.assertEqual(0o755, stat.S_IMODE(info.st_mode), sub)
        # Twice is fine: the second call only checks.
        safefile.check_trusted_dir(path, create=True)

    def test_missing_without_create(self):
        self.refused(os.path.join(self.tmp, 'nope', 'lab'), 'nope',
                     'does not exist')
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'nope')))

    def test_empty_path(self):
        self.refused('', 'empty path')

    def test_a_file_is_not_a_directory(self):
        path = os.path.join(self.tmp, 'file')
        _write(path, b'x')
        self.refused(path, 'not a directory')
        self.refused(os.path.join(path, 'lab'), path, 'not a directory',
                     create=True)

    @ROOT_ONLY
    def test_directory_of_another_user(self):
        path = os.path.join(self.tmp, 'lab')
        os.mkdir(path, 0o755)
        os.chown(path, OTHER_UID, OTHER_UID)
        self.refused(path, 'belongs to uid %d, not to uid %d'
                     % (OTHER_UID, os.geteuid()))
        self.refused(path, 'belongs to uid', create=True)

    @ROOT_ONLY
    def test_parent_of_another_user(self):
        parent = os.path.join(self.tmp, 'theirs')
        os.mkdir(parent, 0o755)
        os.chown(parent, OTHER_UID, OTHER_UID)
        mine = os.path.join(parent, 'lab')
        os.mkdir(mine, 0o755)
        self.refused(mine, parent, 'belongs to uid %d' % OTHER_UID)
        # And nothing is created below it either.
        self.refused(os.path.join(parent, 'new'), create=True)
        self.assertFalse(os.path.exists(os.path.join(parent, 'new')))

    @ROOT_ONLY
    def test_sticky_parent_with_an_entry_of_another_user(self):
        # Somebody created /var/tmp/nova-livemig-ext-lab first.
        sticky = os.path.join(self.tmp, 'vartmp')
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        theirs = os.path.join(sticky, 'lab')
        os.mkdir(theirs, 0o755)
        os.chown(theirs, OTHER_UID, OTHER_UID)
        self.refused(theirs, theirs, 'belongs to uid %d' % OTHER_UID,
                     create=True)
        self.refused(os.path.join(theirs, 'hosts'), theirs,
                     'belongs to uid %d' % OTHER_UID, create=True)
        self.assertEqual([], os.listdir(theirs))

    def test_world_writable_directory(self):
        path = os.path.join(self.tmp, 'lab')
        os.mkdir(path)
        os.chmod(path, 0o777)
        self.refused(path, 'writable by group or others (mode 777)')
        os.chmod(path, 0o775)
        self.refused(path, 'writable by group or others (mode 775)')

    def test_world_writable_parent_without_sticky_bit(self):
        parent = os.path.join(self.tmp, 'open')
        os.mkdir(parent)
        os.chmod(parent, 0o777)
        mine = os.path.join(parent, 'lab')
        os.mkdir(mine, 0o755)
        self.refused(mine, parent, 'without the sticky bit')
        self.refused(os.path.join(parent, 'new'), parent,
                     'without the sticky bit', create=True)
        self.assertFalse(os.path.exists(os.path.join(parent, 'new')))

    def test_symlink_to_a_root_directory(self):
        link = os.path.join(self.tmp, 'lab')
        os.symlink('/etc', link)
        self.refused(link, link, 'is a symlink')
        self.refused(link, link, 'is a symlink', create=True)
        self.refused(link + '/', link, 'is a symlink')
        self.assertTrue(os.path.islink(link))

    def test_symlink_on_the_way_in_a_sticky_directory(self):
        sticky = os.path.join(self.tmp, 'vartmp')
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        real = os.path.join(self.tmp, 'real')
        os.mkdir(real, 0o755)
        os.mkdir(os.path.join(real, 'lab'), 0o755)
        os.symlink(real, os.path.join(sticky, 'link'))
        self.refused(os.path.join(sticky, 'link', 'lab'),
                     'symlink in %s' % sticky)

    def test_symlink_on_the_way_that_root_made_in_its_own_directory(self):
        # /var/run -> /run: followed, and its target checked in turn.
        real = os.path.join(self.tmp, 'real')
        os.makedirs(os.path.join(real, 'lab'), 0o755)
        os.symlink(real, os.path.join(self.tmp, 'abs'))
        os.symlink('real', os.path.join(self.tmp, 'rel'))
        for link in ('abs', 'rel'):
            path = os.path.join(self.tmp, link, 'lab')
            self.assertEqual(path, safefile.check_trusted_dir(path))
        os.chmod(real, 0o777)
        self.refused(os.path.join(self.tmp, 'abs', 'lab'), real,
                     'without the sticky bit')

    def test_symlink_loop(self):
        os.symlink('loop', os.path.join(self.tmp, 'loop'))
        self.refused(os.path.join(self.tmp, 'loop', 'lab'), 'too many')

    def test_dot_dot_is_resolved_on_the_real_path(self):
        real = os.path.join(self.tmp, 'real')
        os.makedirs(os.path.join(real, 'lab'), 0o755)
        path = os.path.join(self.tmp, 'real', 'lab', '..', 'lab')
        safefile.check_trusted_dir(path)

    def test_private_dir_below_a_trusted_one(self):
        path = os.path.join(self.tmp, 'etc')
        self.assertFalse(safefile.check_private_dir(path))
        self.assertFalse(os.path.exists(path))
        self.assertTrue(safefile.check_private_dir(path, create=True))
        self.assertEqual(0o755, stat.S_IMODE(os.lstat(path).st_mode))
        os.rmdir(path)
        os.symlink('/etc', path)
        e = self.assertRaises(safefile.UnsafePath,
                              safefile.check_private_dir, path, create=True)
        self.assertIn('symlink', str(e))


class AtomicWriteTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.tmp, 'report.json')

    def leftovers(self):
        return sorted(n for n in os.listdir(self.tmp) if n.endswith('.tmp'))

    def test_new_file(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        safefile.atomic_write(self.path, b'{"a": 1}\n')
        self.assertEqual(b'{"a": 1}\n', _read(self.path))
        self.assertEqual(0o644, stat.S_IMODE(os.stat(self.path).st_mode))
        self.assertEqual([], self.leftovers())

    def test_replaces_the_file_and_keeps_its_mode(self):
        _write(self.path, b'old report, longer than the new one\n')
        os.chmod(self.path, 0o600)
        before = os.stat(self.path).st_ino
        safefile.atomic_write(self.path, b'new\n')
        self.assertEqual(b'new\n', _read(self.path))
        self.assertEqual(0o600, stat.S_IMODE(os.stat(self.path).st_mode))
        # A new file renamed over the old one, not the old one rewritten.
        self.assertNotEqual(before, os.stat(self.path).st_ino)

    def test_symlink_is_refused_and_its_target_untouched(self):
        target = os.path.join(self.tmp, 'shadow')
        _write(target, b'root:precious\n')
        os.symlink(target, self.path)
        e = self.assertRaises(safefile.UnsafePath, safefile.atomic_write,
                              self.path, b'owned')
        self.assertIn('is a symlink', str(e))
        self.assertEqual(b'root:precious\n', _read(target))
        self.assertTrue(os.path.islink(self.path))
        self.assertEqual([], self.leftovers())

    def test_dangling_symlink_is_refused_and_nothing_created(self):
        target = os.path.join(self.tmp, 'created-through-the-link')
        os.symlink(target, self.path)
        self.assertRaises(safefile.UnsafePath, safefile.atomic_write,
                          self.path, b'owned')
        self.assertFalse(os.path.lexists(target))

    def test_directory_fifo_and_device_are_refused(self):
        os.mkfifo(os.path.join(self.tmp, 'fifo'))
        os.mkdir(os.path.join(self.tmp, 'dir'))
        for path, words in [(os.path.join(self.tmp, 'dir'), 'a directory'),
                            (os.path.join(self.tmp, 'fifo'), 'not a regular'),
                            ('/dev/null', 'not a regular')]:
            e = self.assertRaises(safefile.UnsafePath, safefile.atomic_write,
                                  path, b'x')
            self.assertIn(words, str(e))
        self.assertTrue(stat.S_ISCHR(os.lstat('/dev/null').st_mode))
        self.assertEqual([], self.leftovers())

    def test_write_error_leaves_the_previous_file(self):
        _write(self.path, b'previous\n')
        real_write = os.write

        def disk_full(fd, data):
            # Half of it goes out, then the disk is full.
            real_write(fd, bytes(data[:3]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.safefile.os.write', disk_full))
        e = self.assertRaises(OSError, safefile.atomic_write, self.path,
                              b'the new report\n')
        self.assertEqual(errno.ENOSPC, e.errno)
        self.assertEqual(b'previous\n', _read(self.path))
        self.assertEqual([], self.leftovers())

    def test_fsync_error_leaves_the_previous_file(self):
        _write(self.path, b'previous\n')

        def failing(fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.safefile.os.fsync', failing))
        self.assertRaises(OSError, safefile.atomic_write, self.path, b'new')
        self.assertEqual(b'previous\n', _read(self.path))
        self.assertEqual([], self.leftovers())

    def test_read_only_directory(self):
        if os.geteuid() == 0:
            self.skipTest('root writes into a read-only directory')
        _write(self.path, b'previous\n')
        os.chmod(self.tmp, 0o555)
        self.addCleanup(os.chmod, self.tmp, 0o700)
        self.assertRaises(PermissionError, safefile.atomic_write, self.path,
                          b'new')
        self.assertEqual(b'previous\n', _read(self.path))

    def test_missing_directory(self):
        self.assertRaises(FileNotFoundError, safefile.atomic_write,
                          os.path.join(self.tmp, 'no', 'r.json'), b'x')


class CheckWritableTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_probe_leaves_nothing_behind(self):
        path = os.path.join(self.tmp, 'report.json')
        safefile.check_writable(path)
        self.assertEqual([], os.listdir(self.tmp))
        _write(path, b'previous')
        safefile.check_writable(path)
        self.assertEqual(['report.json'], os.listdir(self.tmp))
        self.assertEqual(b'previous', _read(path))

    def test_refusals(self):
        target = os.path.join(self.tmp, 'target')
        _write(target, b'keep')
        os.symlink(target, os.path.join(self.tmp, 'link'))
        self.assertRaises(safefile.UnsafePath, safefile.check_writable,
                          os.path.join(self.tmp, 'link'))
        self.assertRaises(safefile.UnsafePath, safefile.check_writable,
                          self.tmp)
        self.assertRaises(safefile.UnsafePath, safefile.check_writable,
                          '/dev/null')
        self.assertRaises(FileNotFoundError, safefile.check_writable,
                          os.path.join(self.tmp, 'no', 'report.json'))
        self.assertEqual(b'keep', _read(target))
        self.assertEqual(['link', 'target'], sorted(os.listdir(self.tmp)))


class OpenAppendTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_appends(self):
        path = os.path.join(self.tmp, 'libvirtd.out')
        for text in (b'one\n', b'two\n'):
            with safefile.open_append(path) as f:
                f.write(text)
        self.assertEqual(b'one\ntwo\n', _read(path))

    def test_symlink_is_refused_and_its_target_untouched(self):
        target = os.path.join(self.tmp, 'passwd')
        _write(target, b'root:x:0:0\n')
        path = os.path.join(self.tmp, 'libvirtd.out')
        os.symlink(target, path)
        e = self.assertRaises(safefile.UnsafePath, safefile.open_append, path)
        self.assertIn('symlink', str(e))
        self.assertEqual(b'root:x:0:0\n', _read(target))

    def test_fifo_is_refused_without_hanging(self):
        path = os.path.join(self.tmp, 'libvirtd.out')
        os.mkfifo(path)
        # No reader: a blocking open would wait forever, O_NONBLOCK fails
        # at once (ENXIO); with a reader it opens and is refused.
        self.assertRaises(OSError, safefile.open_append, path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        e = self.assertRaises(safefile.UnsafePath, safefile.open_append, path)
        self.assertIn('not a regular file', str(e))
