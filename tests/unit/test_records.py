"""The live migration records that survive a nova-compute restart."""

import errno
import json
import logging
import os
import stat
import threading
from unittest import mock

import fixtures
import testtools

from nova_livemig_ext import records

U1 = '0f1e2d3c-4b5a-4697-8877-66554433221a'
U2 = '1a2b3c4d-5e6f-4a0b-9c1d-2e3f4a5b6c7d'
U3 = '2b3c4d5e-6f7a-4b1c-8d2e-3f4a5b6c7d8e'
OTHER_UID = 4242


def call_with_timeout(test, func, unblock=None, timeout_s=5.0):
    """``func()``, failing the test (not hanging it) past ``timeout_s``."""
    outcome = {}

    def run():
        try:
            outcome['value'] = func()
        except BaseException as e:  # reported below
            outcome['error'] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        thread.join(timeout_s)
        test.fail('blocked for more than %s s' % timeout_s)
    if 'error' in outcome:
        raise outcome['error']
    return outcome['value']


class StoreTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.dir = os.path.join(self.root, records.DIR_NAME)
        self.fresh_log()

    def fresh_log(self):
        self.log = self.useFixture(fixtures.FakeLogger(
            name=records.__name__, level=logging.DEBUG,
            format='%(levelname)s %(message)s'))

    def errors(self):
        return [line for line in self.log.output.splitlines()
                if line.startswith('ERROR ')]

    def aside(self, uuid):
        """The names ``uuid``'s record was set aside under."""
        return sorted(n for n in os.listdir(self.dir)
                      if n.startswith(uuid + records.SUFFIX
                                      + records.CORRUPT_MARK))


class RecordStoreTest(StoreTestCase):

    def setUp(self):
        super().setUp()
        self.store = records.RecordStore(self.dir)

    def test_write_update_read_remove(self):
        self.assertEqual([], self.store.instance_uuids())
        self.store.update(U1, dest='dest', migrate_data={'a': 1})
        self.store.update(U1, call=['qemu+tcp://dest/system', {}, 3])
        self.assertEqual({'dest': 'dest', 'migrate_data': {'a': 1},
                          'call': ['qemu+tcp://dest/system', {}, 3]},
                         self.store.read(U1))
        self.assertEqual([U1], self.store.instance_uuids())
        # Only the owner may read what a migration keeps.
        self.assertEqual(0o700, os.stat(self.dir).st_mode & 0o777)
        self.assertEqual(0o600, os.stat(self.store.path(U1)).st_mode & 0o777)
        self.store.remove(U1)
        self.store.remove(U1)
        self.assertIsNone(self.store.read(U1))
        self.assertEqual([], self.store.instance_uuids())
        self.assertEqual([], self.errors())

    def test_modes_do_not_depend_on_the_umask(self):
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        self.store.write(U1, {'x': 1})
        self.assertEqual(0o700, stat.S_IMODE(os.stat(self.dir).st_mode))
        self.assertEqual(0o600, stat.S_IMODE(
            os.stat(self.store.path(U1)).st_mode))

    def test_no_temporary_files_left_and_none_listed(self):
        self.store.write(U2, {'x': 1})
        self.assertEqual([U2 + '.json'], os.listdir(self.dir))
        with open(os.path.join(self.dir, '.tmp-crashed'), 'w') as f:
            f.write('{')
        self.assertEqual([U2], self.store.instance_uuids())

    def test_only_instance_uuid_records_are_listed_oldest_first(self):
        self.store.write(U1, {'n': 1})
        self.store.write(U2, {'n': 2})
        self.store.write(U3, {'n': 3})
        os.utime(self.store.path(U1), (3000, 3000))
        os.utime(self.store.path(U2), (1000, 1000))
        os.utime(self.store.path(U3), (2000, 2000))
        for name in ('u1.json', 'README', U1, U1 + '.json.corrupt-x',
                     '.' + U1 + '.json', U1 + '.jsonx', 'x' + U1 + '.json',
                     U1[:-1] + '.json'):
            with open(os.path.join(self.dir, name), 'w') as f:
                f.write('{}')
        os.mkdir(os.path.join(self.dir, 'corrupt'))
        self.assertEqual([U2, U3, U1], self.store.instance_uuids())

    def test_names_that_are_not_uuids_are_refused(self):
        for bad in ('', '../etc/passwd', '.hidden', 'a/b', 'u1',
                    U1 + '/../x', U1 + '\n', None):
            self.assertRaises(ValueError, self.store.path, bad)
            self.assertRaises(ValueError, self.store.write, bad, {})
            self.assertRaises(ValueError, self.store.remove, bad)
            self.assertIsNone(self.store.read(bad))
        self.assertFalse(os.path.exists(self.dir))

    def test_a_failed_write_keeps_the_old_record_and_no_temporary(self):
        self.store.write(U1, {'old': True})
        self.assertRaises(TypeError, self.store.write, U1, {'x': object()})
        with mock.patch.object(records.os, 'fsync',
                               side_effect=OSError(errno.EIO, 'I/O error')):
            self.assertRaises(OSError, self.store.write, U1, {'new': True})
        self.assertEqual({'old': True}, self.store.read(U1))
        self.assertEqual([U1 + '.json'], os.listdir(self.dir))

    def test_a_record_too_big_to_read_back_is_not_written(self):
        self.store.write(U1, {'old': True})
        e = self.assertRaises(ValueError, self.store.write, U1,
                              {'x': 'y' * records.MAX_RECORD_BYTES})
        self.assertIn('more than %d' % records.MAX_RECORD_BYTES, str(e))
        self.assertEqual({'old': True}, self.store.read(U1))

    def test_temporary_file_is_created_exclusively_never_through_a_link(self):
        os.makedirs(self.dir, mode=0o700)
        target = os.path.join(self.root, 'target')
        with open(target, 'w') as f:
            f.write('untouched')
        os.symlink(target, os.path.join(self.dir, '.tmp-%s-feed' % U1))
        with mock.patch.object(records.secrets, 'token_hex',
                               return_value='feed'):
            self.assertRaises(FileExistsError, self.store.write, U1, {})
        with open(target) as f:
            self.assertEqual('untouched', f.read())
        self.assertFalse(os.path.lexists(self.store.path(U1)))

    def test_a_record_replaces_a_link_without_writing_through_it(self):
        os.makedirs(self.dir, mode=0o700)
        target = os.path.join(self.root, 'target')
        with open(target, 'w') as f:
            f.write('untouched')
        os.symlink(target, self.store.path(U1))
        self.store.write(U1, {'x': 1})
        with open(target) as f:
            self.assertEqual('untouched', f.read())
        self.assertTrue(stat.S_ISREG(os.lstat(self.store.path(U1)).st_mode))
        self.assertEqual({'x': 1}, self.store.read(U1))


class UnusableRecordTest(StoreTestCase):
    """A record that cannot be used is kept aside, never deleted or read."""

    def setUp(self):
        super().setUp()
        self.store = records.RecordStore(self.dir)
        os.makedirs(self.dir, mode=0o700)
        self.path = self.store.path(U1)

    def write_raw(self, data):
        with open(self.path, 'wb') as f:
            f.write(data)

    def assert_set_aside(self, *words):
        """``U1``'s record is gone, kept under one name, and reported."""
        self.assertFalse(os.path.lexists(self.path))
        aside = self.aside(U1)
        self.assertEqual(1, len(aside), os.listdir(self.dir))
        errors = self.errors()
        self.assertEqual(1, len(errors), self.log.output)
        self.assertIn(self.path, errors[0])
        self.assertIn(os.path.join(self.dir, aside[0]), errors[0])
        for word in words:
            self.assertIn(word, errors[0])
        # The driver removes a record read() did not return: the one kept
        # aside survives that, and is never listed.
        self.store.remove(U1)
        self.assertEqual(aside, self.aside(U1))
        self.assertEqual([], self.store.instance_uuids())
        return os.path.join(self.dir, aside[0])

    def test_corrupt_json_is_kept_aside(self):
        self.write_raw(b'{not json')
        self.assertEqual([U1], self.store.instance_uuids())
        self.assertIsNone(self.store.read(U1))
        aside = self.assert_set_aside('not valid JSON')
        with open(aside, 'rb') as f:
            self.assertEqual(b'{not json', f.read())
        self.assertRegex(aside, r'\.json\.corrupt-\d{8}T\d{6}Z$')

    def test_json_that_is_not_an_object_is_kept_aside(self):
        self.write_raw(b'[1, 2]')
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('a JSON array, not an object')

    def test_bytes_that_are_not_text_are_kept_aside(self):
        self.write_raw(b'{"a": "\xff\xfe"}')
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('not valid JSON')

    def test_deeply_nested_json_is_kept_aside_not_a_crash(self):
        self.write_raw(b'[' * 200000)
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('not valid JSON')

    def test_update_of_a_corrupt_record_keeps_it_aside(self):
        self.write_raw(b'{not json')
        self.store.update(U1, dest='d')
        self.assertEqual({'dest': 'd'}, self.store.read(U1))
        self.assertEqual(1, len(self.aside(U1)))

    def test_a_second_corrupt_record_does_not_replace_the_first(self):
        with mock.patch.object(records.time, 'gmtime',
                               return_value=records.time.gmtime(0)):
            self.write_raw(b'first')
            self.assertIsNone(self.store.read(U1))
            self.write_raw(b'second')
            self.assertIsNone(self.store.read(U1))
        kept = []
        for name in self.aside(U1):
            with open(os.path.join(self.dir, name), 'rb') as f:
                kept.append(f.read())
        self.assertEqual([b'first', b'second'], kept)

    def test_a_record_at_the_bound_is_read(self):
        head, tail = b'{"a": "', b'"}'
        self.write_raw(head + b'x' * (records.MAX_RECORD_BYTES - len(head)
                                      - len(tail)) + tail)
        self.assertEqual(records.MAX_RECORD_BYTES, os.stat(self.path).st_size)
        self.assertEqual(records.MAX_RECORD_BYTES - len(head) - len(tail),
                         len(self.store.read(U1)['a']))
        self.assertEqual([], self.errors())

    def test_a_huge_record_is_kept_aside_after_a_bounded_read(self):
        self.write_raw(b'{"a": "' + b'x' * (8 * records.MAX_RECORD_BYTES)
                       + b'"}')
        read = []
        real_read = os.read

        def counting_read(fd, n):
            data = real_read(fd, n)
            read.append(len(data))
            return data

        with mock.patch.object(records.os, 'read', counting_read):
            self.assertIsNone(self.store.read(U1))
        self.assertEqual(records.MAX_RECORD_BYTES + 1, sum(read))
        self.assert_set_aside('larger than %d bytes'
                              % records.MAX_RECORD_BYTES)

    def test_a_fifo_is_never_opened_nor_waited_on(self):
        os.mkfifo(self.path, 0o600)
        opened = []
        real_open = os.open

        def spying_open(path, *args, **kwargs):
            opened.append(path)
            return real_open(path, *args, **kwargs)

        def unblock():
            # A reader blocked in open() gets through once a writer opens.
            fd = real_open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

        self.assertEqual([U1], self.store.instance_uuids())
        with mock.patch.object(records.os, 'open', spying_open):
            self.assertIsNone(call_with_timeout(
                self, lambda: self.store.read(U1), unblock))
        self.assertNotIn(U1 + records.SUFFIX, opened)
        aside = self.assert_set_aside('a FIFO, not a regular file')
        self.assertTrue(stat.S_ISFIFO(os.lstat(aside).st_mode))

    def test_a_fifo_swapped_in_after_the_look_is_not_waited_on(self):
        os.mkfifo(self.path, 0o600)
        regular = os.stat(__file__)
        real_stat = os.stat

        def lying_stat(path, *args, **kwargs):
            if path == U1 + records.SUFFIX:
                return regular  # as if the FIFO came after this look
            return real_stat(path, *args, **kwargs)

        def unblock():
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

        with mock.patch.object(records.os, 'stat', lying_stat):
            self.assertIsNone(call_with_timeout(
                self, lambda: self.store.read(U1), unblock))
        self.assert_set_aside('a FIFO, not a regular file')

    def test_a_link_to_a_device_is_never_followed(self):
        os.symlink('/dev/zero', self.path)
        self.assertEqual([U1], self.store.instance_uuids())
        self.assertIsNone(call_with_timeout(
            self, lambda: self.store.read(U1)))
        aside = self.assert_set_aside('symbolic link (to /dev/zero)',
                                      'not followed')
        self.assertEqual('/dev/zero', os.readlink(aside))

    def test_a_link_to_a_valid_record_is_not_followed(self):
        elsewhere = os.path.join(self.root, 'planted.json')
        with open(elsewhere, 'w') as f:
            json.dump({'migrate_data': {'planted': True}}, f)
        os.symlink(elsewhere, self.path)
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('symbolic link')
        self.assertTrue(os.path.isfile(elsewhere))

    def test_a_directory_in_place_of_a_record_is_kept_aside(self):
        os.mkdir(self.path)
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('a directory, not a regular file')

    def test_a_record_of_another_user_is_not_trusted(self):
        self.store.write(U1, {'migrate_data': {'a': 1}})
        os.chown(self.path, OTHER_UID, -1)
        self.assertIsNone(self.store.read(U1))
        aside = self.assert_set_aside('belongs to uid %d' % OTHER_UID)
        self.assertEqual(OTHER_UID, os.lstat(aside).st_uid)

    def test_a_record_others_may_write_is_not_trusted(self):
        self.store.write(U1, {'migrate_data': {'a': 1}})
        os.chmod(self.path, 0o666)
        self.assertIsNone(self.store.read(U1))
        self.assert_set_aside('writable by group or others (mode 0666)')

    def test_a_record_that_cannot_be_set_aside_is_reported_and_left(self):
        self.write_raw(b'{not json')
        with mock.patch.object(records.os, 'rename',
                               side_effect=OSError(errno.EROFS,
                                                   'Read-only file system')):
            self.assertIsNone(self.store.read(U1))
        self.assertTrue(os.path.isfile(self.path))
        errors = self.errors()
        self.assertEqual(1, len(errors))
        self.assertIn('could not be set aside (Read-only file system)',
                      errors[0])


class RefusedDirectoryTest(StoreTestCase):
    """A directory that cannot be trusted: no record, and nova-compute starts.

    What ``init_host`` does with the store (construct, list, read each)
    never raises; writing raises, and the driver logs that.
    """

    def assert_refused(self, *words):
        store = records.RecordStore(self.dir)
        self.assertEqual([], store.instance_uuids())
        self.assertIsNone(store.read(U1))
        store.remove(U1)
        e = self.assertRaises(records.StoreUnavailable, store.update, U1,
                              dest='d')
        self.assertIsInstance(e, Exception)
        self.assertRaises(records.StoreUnavailable, store.write, U1, {})
        self.assertIsNotNone(store.problem())
        # One line, once, whatever was asked of the store.
        errors = self.errors()
        self.assertEqual(1, len(errors), self.log.output)
        self.assertEqual('ERROR ' + str(e), errors[0])
        self.assertIn('refusing the live migration record directory %s: '
                      % self.dir, errors[0])
        for word in words:
            self.assertIn(word, errors[0])
        return store

    def test_a_dangling_link_in_place_of_the_directory(self):
        target = os.path.join(self.root, 'nowhere')
        os.symlink(target, self.dir)
        self.assert_refused('a symbolic link (to %s)' % target)
        self.assertFalse(os.path.lexists(target))

    def test_a_link_to_a_directory_is_not_followed(self):
        target = os.path.join(self.root, 'elsewhere')
        os.mkdir(target, 0o700)
        with open(os.path.join(target, U1 + '.json'), 'w') as f:
            f.write('{"migrate_data": {}}')
        os.symlink(target, self.dir)
        self.assert_refused('a symbolic link')
        self.assertEqual([U1 + '.json'], os.listdir(target))

    def test_a_file_in_place_of_the_directory(self):
        with open(self.dir, 'w') as f:
            f.write('not a directory')
        self.assert_refused('it is a regular file, not a directory')
        with open(self.dir) as f:
            self.assertEqual('not a directory', f.read())

    def test_a_fifo_in_place_of_the_directory(self):
        os.mkfifo(self.dir)
        call_with_timeout(self, lambda: self.assert_refused('a FIFO'))

    def test_an_unreadable_directory(self):
        # Permission bits stop no one as root: the error is simulated.
        os.mkdir(self.dir, 0o700)
        real_open = os.open

        def refusing_open(path, *args, **kwargs):
            if path == self.dir:
                raise PermissionError(errno.EACCES, 'Permission denied', path)
            return real_open(path, *args, **kwargs)

        with mock.patch.object(records.os, 'open', refusing_open):
            self.assert_refused('cannot be opened: Permission denied')

    def test_a_directory_that_cannot_be_listed(self):
        os.mkdir(self.dir, 0o700)
        with open(os.path.join(self.dir, U1 + '.json'), 'w') as f:
            f.write('{}')
        store = records.RecordStore(self.dir)
        with mock.patch.object(records.os, 'listdir',
                               side_effect=PermissionError(
                                   errno.EACCES, 'Permission denied')):
            self.assertEqual([], store.instance_uuids())
        self.assertEqual(1, len(self.errors()))
        self.assertIn('cannot be listed: Permission denied',
                      self.errors()[0])

    def test_a_directory_of_another_user(self):
        os.mkdir(self.dir, 0o700)
        os.chown(self.dir, OTHER_UID, -1)
        self.assert_refused('belongs to uid %d, not to uid %d'
                            % (OTHER_UID, os.geteuid()))

    def test_a_directory_others_may_write(self):
        for mode in (0o777, 0o770, 0o702):
            os.mkdir(self.dir)
            os.chmod(self.dir, mode)
            self.assert_refused('writable by group or others (mode %04o)'
                                % mode)
            os.rmdir(self.dir)
            self.fresh_log()

    def test_a_directory_made_safe_again_is_used(self):
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)
        store = self.assert_refused()
        os.chmod(self.dir, 0o700)
        self.assertIsNone(store.problem())
        store.write(U1, {'x': 1})
        self.assertEqual([U1], store.instance_uuids())
        self.assertEqual({'x': 1}, store.read(U1))

    def test_a_missing_directory_is_no_problem_until_written(self):
        store = records.RecordStore(self.dir)
        self.assertIsNone(store.problem())
        self.assertEqual([], store.instance_uuids())
        self.assertFalse(os.path.lexists(self.dir))
        self.assertEqual([], self.errors())
