"""The stand-in destination that gives a post-copy source its guest back."""

import json
import os
import socket
import struct
import tempfile
import threading

import testtools

from nova_livemig_ext import standin as s

# HMP "info ramblock" as the lab's QEMU 10.0.2 printed it.
INFO_RAMBLOCK = (
    '              Block Name    PSize              Offset               Used'
    '              Total                HVA  RO\r\n'
    '                  pc.ram    4 KiB  0x0000000000000000 0x0000000014000000'
    ' 0x0000000014000000 0x00007f2a57e00000  rw\r\n'
    '                 pc.bios    4 KiB  0x0000000014000000 0x0000000000040000'
    ' 0x0000000000040000 0x00007f2ab0400000  ro\r\n'
    '                  pc.rom    4 KiB  0x0000000014040000 0x0000000000020000'
    ' 0x0000000000020000 0x00007f2ab0200000  ro\r\n')

PAUSED_MIGRATION = {'status': 'postcopy-paused',
                    'ram': {'postcopy-requests': 0}}
DEST_FAILED = (s.VIR_DOMAIN_SHUTOFF, s.VIR_DOMAIN_SHUTOFF_FAILED)


def command(cmd, data=b''):
    return struct.pack('>BHH', s.QEMU_VM_COMMAND, cmd, len(data)) + data


def read_exact(conn, count):
    data = b''
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError(len(data))
        data += chunk
    return data


def read_rp(conn):
    kind, length = struct.unpack('>HH', read_exact(conn, 4))
    return kind, read_exact(conn, length)


class FakeSource:
    """QEMU's source side of a post-copy resume, as far as the stand-in sees.

    Asks for the received bitmap of each block, checks what comes back as
    ram_dirty_bitmap_reload() does, sends POSTCOPY_RESUME, waits for the
    acknowledgement, sends the end of its sections and reads the SHUT.
    """

    def __init__(self, conn, blocks, tail=b'\x03\x00\x00\x00\x02' + b'\x00' * 14):
        self.conn, self.blocks, self.tail = conn, blocks, tail
        self.bitmaps, self.ack, self.shut, self.error = {}, None, None, None

    def run(self):
        try:
            for name in self.blocks:
                self.conn.sendall(command(s.MIG_CMD_RECV_BITMAP,
                                          bytes([len(name)]) + name.encode()))
            for _ in self.blocks:
                kind, data = read_rp(self.conn)
                assert kind == s.MIG_RP_MSG_RECV_BITMAP, kind
                name = data[1:1 + data[0]].decode()
                size = struct.unpack('>Q', read_exact(self.conn, 8))[0]
                bitmap = read_exact(self.conn, size)
                end = struct.unpack('>Q', read_exact(self.conn, 8))[0]
                assert end == s.RECV_BITMAP_ENDING, hex(end)
                self.bitmaps[name] = bitmap
            self.conn.sendall(command(s.MIG_CMD_POSTCOPY_RESUME))
            kind, data = read_rp(self.conn)
            assert kind == s.MIG_RP_MSG_RESUME_ACK, kind
            self.ack = struct.unpack('>I', data)[0]
            self.conn.sendall(self.tail)
            kind, data = read_rp(self.conn)
            assert kind == s.MIG_RP_MSG_SHUT, kind
            self.shut = struct.unpack('>I', data)[0]
        except Exception as exc:
            self.error = exc


class RefusalTest(testtools.TestCase):

    def test_destination_failed_before_it_ran_may_give_back(self):
        self.assertIsNone(s.refusal(DEST_FAILED, PAUSED_MIGRATION))

    def test_a_page_request_means_the_destination_ran(self):
        reason = s.refusal(DEST_FAILED, {'status': 'postcopy-paused',
                                         'ram': {'postcopy-requests': 3}})
        self.assertIn('asked the source for 3 page(s)', reason)

    def test_requests_not_reported_is_refused(self):
        self.assertIsNotNone(s.refusal(DEST_FAILED,
                                       {'status': 'postcopy-paused'}))

    def test_a_live_migration_is_not_given_back(self):
        for status in ('postcopy-active', 'active', 'completed', None):
            reason = s.refusal(DEST_FAILED, {'status': status,
                                             'ram': {'postcopy-requests': 0}})
            self.assertIn('not postcopy-paused', reason)

    def test_destination_that_may_have_run_is_refused(self):
        for state in ((5, 3), (5, 2), (3, 13), (1, 11), (5, 1)):
            reason = s.refusal(state, PAUSED_MIGRATION)
            self.assertIn('may have run the guest', reason, state)

    def test_operator_vouches_for_a_destination_that_runs_no_qemu(self):
        for state in ((5, 3), (5, 2), None):
            self.assertIsNone(s.refusal(state, PAUSED_MIGRATION, True), state)
        self.assertIn('still runs a QEMU',
                      s.refusal((1, 11), PAUSED_MIGRATION, True))
        # The source's own evidence still counts.
        self.assertIn('asked the source', s.refusal(
            (5, 3), {'status': 'postcopy-paused',
                     'ram': {'postcopy-requests': 1}}, True))

    def test_no_destination_domain_is_refused(self):
        self.assertIn('no domain', s.refusal(None, PAUSED_MIGRATION))


class BitmapTest(testtools.TestCase):

    def test_ramblocks_takes_the_used_column(self):
        self.assertEqual({'pc.ram': 0x14000000, 'pc.bios': 0x40000,
                          'pc.rom': 0x20000}, s.ramblocks(INFO_RAMBLOCK))

    def test_ramblocks_without_a_block_is_an_error(self):
        self.assertRaises(s.StandInError, s.ramblocks, 'no blocks here')

    def test_bitmap_sized_as_qemu_sizes_it(self):
        # 320 MiB of 4 KiB pages: 81920 bits, 10240 bytes (QEMU: 0x2800).
        bitmap = s.received_bitmap(0x14000000)
        self.assertEqual(0x2800, len(bitmap))
        self.assertEqual(b'\xff' * 0x2800, bitmap)

    def test_bitmap_rounds_to_words_and_leaves_the_tail_clear(self):
        bitmap = s.received_bitmap(13 * 4096)
        self.assertEqual(8, len(bitmap))
        self.assertEqual(b'\xff\x1f' + b'\x00' * 6, bitmap)

    def test_bitmap_of_a_partial_page_is_an_error(self):
        self.assertRaises(s.StandInError, s.received_bitmap, 4096 + 1)


class ServeTest(testtools.TestCase):

    def exchange(self, blocks, tail=None, **kw):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        source = FakeSource(theirs, list(blocks), **({} if tail is None
                                                     else {'tail': tail}))
        thread = threading.Thread(target=source.run)
        thread.start()
        try:
            steps = s.serve(ours, blocks, timeout_s=5, quiet_s=0.2, **kw)
        finally:
            thread.join(10)
        return source, steps

    def test_every_page_received_resume_acked_and_the_end_refused(self):
        blocks = s.ramblocks(INFO_RAMBLOCK)
        source, steps = self.exchange(blocks)
        self.assertIsNone(source.error)
        self.assertEqual(set(blocks), set(source.bitmaps))
        for name, length in blocks.items():
            self.assertEqual(s.received_bitmap(length), source.bitmaps[name])
        self.assertEqual(s.RESUME_ACK_VALUE, source.ack)
        # Non-zero: the source fails the migration and runs its guest.
        self.assertEqual(1, source.shut)
        self.assertEqual('19 bytes after the resume', steps[-2])

    def test_unknown_block_is_an_error(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.sendall(command(s.MIG_CMD_RECV_BITMAP, b'\x05other'))
        self.assertRaisesRegex(s.StandInError, "RAM block 'other'",
                               s.serve, ours, {'pc.ram': 4096}, 5)

    def test_page_data_before_the_resume_is_an_error(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.sendall(b'\x02\x00\x00\x00\x01')
        self.assertRaisesRegex(s.StandInError, 'section type 0x2',
                               s.serve, ours, {'pc.ram': 4096}, 5)

    def test_source_gone_mid_exchange_is_an_error(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        theirs.sendall(command(s.MIG_CMD_RECV_BITMAP)[:3])
        theirs.close()
        self.assertRaisesRegex(s.StandInError, 'closed the stream',
                               s.serve, ours, {'pc.ram': 4096}, 5)


class ListenerTest(testtools.TestCase):

    def test_bad_address_is_refused(self):
        for address in ('127.0.0.1', 'tcp:', 'fd:rescue', 'unix:'):
            self.assertRaises(s.StandInError, s.Listener, address)

    def test_tcp_picks_a_port(self):
        listener = s.Listener('tcp:127.0.0.1')
        self.addCleanup(listener.close)
        self.assertRegex(listener.uri, r'^tcp:127\.0\.0\.1:\d+$')
        self.assertNotEqual(':0', listener.uri[-2:])

    def test_unix_socket_is_made_in_the_directory_and_removed(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        listener = s.Listener('unix:' + directory)
        path = listener.uri[len('unix:'):]
        self.assertEqual(directory, os.path.dirname(path))
        self.assertTrue(os.path.exists(path))
        listener.close()
        self.assertFalse(os.path.exists(path))

    def test_unix_directory_must_exist(self):
        self.assertRaisesRegex(s.StandInError, 'does not exist', s.Listener,
                               'unix:/nonexistent/livemig')


class FakeMonitor:
    """The source QEMU's monitor: replies, and a source that dials the URI."""

    def __init__(self, migration=PAUSED_MIGRATION, migrate_error=None,
                 capabilities=(('postcopy-ram', True), ('release-ram', False))):
        self.migration = dict(migration)
        self.capabilities = [{'capability': name, 'state': on}
                             for name, on in capabilities]
        self.migrate_error = migrate_error
        self.running = False
        self.sent = []
        self.source = None

    def qmp(self, text):
        cmd = json.loads(text)
        self.sent.append(cmd['execute'])
        if cmd['execute'] == 'query-migrate':
            return json.dumps({'return': self.migration})
        if cmd['execute'] == 'query-migrate-capabilities':
            return json.dumps({'return': self.capabilities})
        if cmd['execute'] == 'query-status':
            return json.dumps({'return': {
                'running': self.running,
                'status': 'running' if self.running else 'finish-migrate'}})
        if cmd['execute'] == 'migrate':
            if self.migrate_error:
                return json.dumps({'error': {'desc': self.migrate_error}})
            assert cmd['arguments']['resume'] is True
            uri = cmd['arguments']['uri']
            threading.Thread(target=self._dial, args=(uri,)).start()
            return json.dumps({'return': {}})
        raise AssertionError(cmd)

    def _dial(self, uri):
        host, port = uri[len('tcp:'):].rsplit(':', 1)
        conn = socket.create_connection((host, int(port)))
        # With postcopy-preempt the source opens a second channel too.
        extra = socket.create_connection((host, int(port)))
        self.source = FakeSource(conn, list(s.ramblocks(INFO_RAMBLOCK)))
        self.source.run()
        if self.source.shut:
            self.migration = {'status': 'failed'}
            self.running = True
        conn.close()
        extra.close()

    def hmp(self, text):
        assert text == 'info ramblock'
        return INFO_RAMBLOCK


class GiveBackTest(testtools.TestCase):

    def test_the_source_runs_its_guest_again(self):
        mon = FakeMonitor()
        steps = s.give_back(mon.qmp, mon.hmp, DEST_FAILED, timeout_s=5)
        self.assertTrue(mon.running)
        self.assertIsNone(mon.source.error)
        self.assertEqual('source migration failed, guest running', steps[-1])

    def test_refused_before_touching_the_source(self):
        mon = FakeMonitor()
        self.assertRaises(s.Refused, s.give_back, mon.qmp, mon.hmp, (5, 3),
                          timeout_s=5)
        self.assertEqual(['query-migrate'], mon.sent)

    def test_a_source_that_released_its_pages_is_refused(self):
        mon = FakeMonitor(capabilities=(('release-ram', True),))
        self.assertRaisesRegex(s.Refused, 'release-ram', s.give_back,
                               mon.qmp, mon.hmp, DEST_FAILED, timeout_s=5)
        self.assertNotIn('migrate', mon.sent)

    def test_released_pages_reading(self):
        self.assertFalse(s.released_pages([]))
        self.assertFalse(s.released_pages(
            [{'capability': 'release-ram', 'state': False}]))
        self.assertTrue(s.released_pages(
            [{'capability': 'release-ram', 'state': True}]))
        # Unreadable counts as released: never guess in the guest's favour.
        for odd in (None, {}, ['release-ram'],
                    [{'capability': 'release-ram'}]):
            self.assertTrue(s.released_pages(odd), odd)

    def test_source_refusing_the_resume_is_an_error(self):
        mon = FakeMonitor(migrate_error='There is a migration in progress')
        self.assertRaisesRegex(s.StandInError, 'refused to resume',
                               s.give_back, mon.qmp, mon.hmp, DEST_FAILED,
                               timeout_s=1)
        self.assertFalse(mon.running)


class SourceRefusalTest(testtools.TestCase):
    """The source's side alone: read before a stuck destination is stopped."""

    PAUSED = {'status': 'postcopy-paused', 'ram': {'postcopy-requests': 0}}

    def test_a_broken_stream_with_no_request_may_take_the_guest_back(self):
        self.assertIsNone(s.source_refusal(
            self.PAUSED, [{'capability': 'release-ram', 'state': False}]))

    def test_a_live_stream_may_yet_deliver_the_switch(self):
        reason = s.source_refusal(
            {'status': 'postcopy-active', 'ram': {'postcopy-requests': 0}})
        self.assertIn('postcopy-active, not postcopy-paused', reason)

    def test_pages_asked_for_or_released(self):
        self.assertIn('asked the source for 3 page(s)', s.source_refusal(
            {'status': 'postcopy-paused', 'ram': {'postcopy-requests': 3}}))
        self.assertIn('release-ram', s.source_refusal(
            self.PAUSED, [{'capability': 'release-ram', 'state': True}]))

    def test_a_monitor_that_cannot_be_read_refuses(self):
        class Domain:
            pass

        reason = s.source_refusal_domain(Domain())
        self.assertIn('the source QEMU could not be read', reason)
