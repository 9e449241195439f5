"""Reading the guest on another host's libvirt, each call bounded."""

import threading

import testtools

from nova_livemig_ext import peer
from nova_livemig_ext import postcopy

UUID = '6f1c1a52-3d0e-4c53-9b1e-2a7f4b0c9d11'
NO_DOMAIN = 42


class Error(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def is_error(exc):
    return isinstance(exc, Error)


def gone(exc):
    return getattr(exc, 'code', None) == NO_DOMAIN


def start_thread(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


class Domain:
    def __init__(self, state=(5, 6), error=None, block=None):
        self._state, self.error, self.block = state, error, block
        self.reads = 0

    def state(self):
        self.reads += 1
        if self.block is not None:
            self.block.wait()
        if self.error is not None:
            raise self.error
        return list(self._state)


class Conn:
    def __init__(self, domain=None, lookup_error=None, version=11003000):
        self.domain, self.lookup_error, self.version = (domain, lookup_error,
                                                        version)
        self.closed = threading.Event()
        self.lookups = []

    def lookupByUUIDString(self, uuid):
        self.lookups.append(uuid)
        if self.lookup_error is not None:
            raise self.lookup_error
        return self.domain

    def getLibVersion(self):
        return self.version

    def close(self):
        self.closed.set()


class BoundedPeerTest(testtools.TestCase):

    def peer(self, open_connection, timeout_s=5.0):
        return peer.BoundedPeer(open_connection, UUID, is_error, gone,
                                start_thread, timeout_s=timeout_s)

    def test_the_destination_shut_off_as_failed(self):
        conn = Conn(Domain((postcopy.VIR_DOMAIN_SHUTOFF,
                            postcopy.VIR_DOMAIN_SHUTOFF_FAILED)))
        p = self.peer(lambda: conn)
        self.assertEqual(postcopy.HostView(True, True, 5, 6), p.view())
        self.assertEqual([UUID], conn.lookups)
        # The connection and the domain are kept between reads.
        p.view()
        self.assertEqual([UUID], conn.lookups)
        self.assertEqual(11003000, p.libvirt_version())
        p.close()
        self.assertTrue(conn.closed.wait(5))

    def test_no_domain_on_the_peer(self):
        conn = Conn(lookup_error=Error('Domain not found', NO_DOMAIN))
        p = self.peer(lambda: conn)
        self.assertEqual(postcopy.ABSENT, p.view())
        self.assertIn('Domain not found', p.last_error)

    def test_a_peer_that_cannot_be_reached(self):
        def refuse():
            raise Error('unable to connect: No route to host', 38)

        p = self.peer(refuse)
        self.assertEqual(postcopy.UNREACHABLE, p.view())
        self.assertIn('No route to host', p.last_error)
        self.assertIsNone(p.libvirt_version())

    def test_a_fault_that_is_not_libvirt_is_only_unreachable(self):
        def broken():
            raise RuntimeError('unexpected')

        p = self.peer(broken)
        self.assertEqual(postcopy.UNREACHABLE, p.view())
        self.assertEqual('unexpected', p.last_error)

    def test_a_blocked_read_is_given_up_and_not_repeated(self):
        release = threading.Event()
        self.addCleanup(release.set)
        domain = Domain(block=release)
        conn = Conn(domain)
        opened = []

        def open_connection():
            opened.append(conn)
            return conn

        p = self.peer(open_connection, timeout_s=0.2)
        self.assertEqual(postcopy.UNREACHABLE, p.view())
        self.assertIn('no answer within', p.last_error)
        # The connection that blocked is dropped (closed in the background).
        self.assertTrue(conn.closed.wait(5))
        # While the first read is still blocked, nothing else is sent.
        self.assertEqual(postcopy.UNREACHABLE, p.view())
        self.assertIn('still blocked', p.last_error)
        self.assertEqual(1, domain.reads)
        self.assertEqual(1, len(opened))
        # Once it returns, the peer is read again on a new connection.
        release.set()
        domain.block = None
        for _ in range(50):
            view = p.view()
            if view.reachable:
                break
            threading.Event().wait(0.05)
        self.assertEqual(postcopy.HostView(True, True, 5, 6), view)
        self.assertEqual(2, len(opened))

    def test_an_error_reading_the_state_reconnects(self):
        domain = Domain(error=Error('End of file while reading data', 38))
        conn = Conn(domain)
        opened = []

        def open_connection():
            opened.append(conn)
            return conn

        p = self.peer(open_connection)
        self.assertEqual(postcopy.UNREACHABLE, p.view())
        domain.error = None
        self.assertEqual(postcopy.HostView(True, True, 5, 6), p.view())
        self.assertEqual(2, len(opened))


class StoppableDomain(Domain):
    def __init__(self, state=(3, 2), destroy_error=None, block=None):
        super().__init__(state)
        self.destroy_error, self.destroy_block = destroy_error, block
        self.destroyed = 0

    def destroy(self):
        self.destroyed += 1
        if self.destroy_block is not None:
            self.destroy_block.wait()
        if self.destroy_error is not None:
            raise self.destroy_error
        self._state = (postcopy.VIR_DOMAIN_SHUTOFF, 2)


class DestroyTest(testtools.TestCase):
    """Stopping a destination QEMU stuck before it ran the guest."""

    def peer(self, read_conn, writable_conn=None, timeout_s=5.0):
        return peer.BoundedPeer(
            lambda: read_conn, UUID, is_error, gone, start_thread,
            timeout_s=timeout_s,
            open_writable=None if writable_conn is None
            else (lambda: writable_conn))

    def test_destroys_over_its_own_writable_connection(self):
        domain = StoppableDomain()
        read, writable = Conn(domain), Conn(domain)
        p = self.peer(read, writable)
        self.assertEqual(postcopy.HostView(True, True, 5, 2), p.destroy())
        self.assertEqual(1, domain.destroyed)
        self.assertEqual([UUID], writable.lookups)
        # The writable connection is not kept.
        self.assertTrue(writable.closed.wait(5))
        self.assertFalse(read.closed.is_set())

    def test_without_a_writable_connection_it_refuses(self):
        domain = StoppableDomain()
        p = self.peer(Conn(domain))
        e = self.assertRaises(RuntimeError, p.destroy)
        self.assertIn('no writable connection', str(e))
        self.assertEqual(0, domain.destroyed)

    def test_a_guest_already_gone_counts_as_stopped(self):
        read = Conn(lookup_error=Error('no domain', NO_DOMAIN))
        writable = Conn(lookup_error=Error('no domain', NO_DOMAIN))
        self.assertEqual(postcopy.ABSENT, self.peer(read, writable).destroy())

    def test_a_refused_destroy_leaves_the_view_to_judge(self):
        # The caller sees the domain still paused for migration.
        domain = StoppableDomain(destroy_error=Error('access denied'))
        p = self.peer(Conn(domain), Conn(domain))
        self.assertEqual(postcopy.HostView(True, True, 3, 2), p.destroy())
        self.assertEqual('access denied', p.destroy_error)

    def test_a_destroy_that_errs_after_the_qemu_went_away(self):
        # libvirt removed the incoming domain itself as its QEMU died, and
        # the destroy then failed: the view says it is gone.
        class Vanishing(StoppableDomain):
            def destroy(self):
                super().destroy()
                read.lookup_error = Error('no domain', NO_DOMAIN)
                self.error = Error('no domain', NO_DOMAIN)
                raise Error('Domain not found', NO_DOMAIN)

        domain = Vanishing()
        read = Conn(domain)
        self.assertEqual(postcopy.ABSENT,
                         self.peer(read, Conn(domain)).destroy())

    def test_a_bug_in_destroy_is_not_hidden(self):
        domain = StoppableDomain(destroy_error=TypeError('bad call'))
        p = self.peer(Conn(domain), Conn(domain))
        e = self.assertRaises(RuntimeError, p.destroy)
        self.assertIn('bad call', str(e))

    def test_a_destroy_that_blocks_is_given_up_on(self):
        release = threading.Event()
        self.addCleanup(release.set)
        domain = StoppableDomain(block=release)
        p = self.peer(Conn(domain), Conn(domain), timeout_s=0.2)
        original = peer.DESTROY_TIMEOUT_S
        peer.DESTROY_TIMEOUT_S = 0.3
        self.addCleanup(setattr, peer, 'DESTROY_TIMEOUT_S', original)
        e = self.assertRaises(RuntimeError, p.destroy)
        self.assertIn('no answer within', str(e))
        # While it is still blocked the peer is not read either.
        self.assertEqual(postcopy.UNREACHABLE, p.view())
