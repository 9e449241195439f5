"""The live migration records that survive a nova-compute restart."""

import os

import fixtures
import testtools

from nova_livemig_ext import records


class RecordStoreTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                records.DIR_NAME)
        self.store = records.RecordStore(self.dir)

    def test_write_update_read_remove(self):
        self.assertEqual([], self.store.instance_uuids())
        self.store.update('u1', dest='dest', migrate_data={'a': 1})
        self.store.update('u1', call=['qemu+tcp://dest/system', {}, 3])
        self.assertEqual({'dest': 'dest', 'migrate_data': {'a': 1},
                          'call': ['qemu+tcp://dest/system', {}, 3]},
                         self.store.read('u1'))
        self.assertEqual(['u1'], self.store.instance_uuids())
        # Only the owner may read what a migration keeps.
        self.assertEqual(0o700, os.stat(self.dir).st_mode & 0o777)
        self.store.remove('u1')
        self.store.remove('u1')
        self.assertIsNone(self.store.read('u1'))
        self.assertEqual([], self.store.instance_uuids())

    def test_no_temporary_files_left_and_none_listed(self):
        self.store.write('u2', {'x': 1})
        self.assertEqual(['u2.json'], os.listdir(self.dir))
        with open(os.path.join(self.dir, '.tmp-crashed'), 'w') as f:
            f.write('{')
        self.assertEqual(['u2'], self.store.instance_uuids())

    def test_unreadable_record_is_none_not_a_crash(self):
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, 'u3.json'), 'w') as f:
            f.write('{not json')
        self.assertIsNone(self.store.read('u3'))
        with open(os.path.join(self.dir, 'u4.json'), 'w') as f:
            f.write('[1, 2]')
        self.assertIsNone(self.store.read('u4'))

    def test_names_that_are_not_uuids_are_refused(self):
        for bad in ('', '../etc/passwd', '.hidden', 'a/b'):
            self.assertRaises(ValueError, self.store.path, bad)
