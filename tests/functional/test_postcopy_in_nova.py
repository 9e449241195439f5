"""Failures after the switch to post-copy, inside Nova's live-migration path.

After the switch the newest memory is on the destination: Nova's rollback
would destroy it. These tests break the migration after the switch (and the
monitor's side effects, and libvirt's statistics) and check through the API
that the guest is never rolled back: it completes on the destination, or the
migration ends in ``error`` with both halves kept and the recovery command
in the instance fault.
"""

import re
import threading
import time

import fixtures
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt

from nova_livemig_ext import driver as livemig_driver
from nova_livemig_ext import novacompat
from nova_livemig_ext import postcopy
from tests.functional import test_monitor_in_nova as base

POSTCOPY_OPTS = dict(permit_post_copy=True,
                     ladder=['downtime', 'postcopy', 'abort'],
                     **base.FAST)
POSTCOPY_PHASE_FAILED = ("operation failed: job 'migration out' failed in "
                         "post-copy phase")


class PostcopyTestBase(base.MonitorTestBase):

    LIVEMIG_OPTS = POSTCOPY_OPTS

    def setUp(self):
        super().setUp()
        self.resume_calls = []

    def _migrate_stub(self, domain, destination, params, flags):
        if flags & postcopy.VIR_MIGRATE_POSTCOPY_RESUME:
            self.resume_calls.append((destination, dict(params), flags))
            return self.resume_script(domain, params)
        return super()._migrate_stub(domain, destination, params, flags)

    def switch_then_fail(self, domain, params, dest_failed=False,
                         dest_stuck=False):
        """Pre-copy, the switch, then the stream breaks (as libvirt says).

        ``dest_failed``: the destination failed to load the guest at the
        switch, and libvirt shut it off as failed. ``dest_stuck``: its QEMU
        stuck loading the guest, libvirt still shows it paused for
        migration.
        """
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.arrive_on_dest(params)
        if dest_failed or dest_stuck:
            dest = self.dest.driver._host.get_connection().lookupByUUIDString(
                self.server_uuid(params))
        if dest_failed:
            dest._state = fakelibvirt.VIR_DOMAIN_SHUTOFF
            dest.livemig_reason = postcopy.VIR_DOMAIN_SHUTOFF_FAILED
        if dest_stuck:
            dest._state = fakelibvirt.VIR_DOMAIN_PAUSED
            dest.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_MIGRATION
        domain._state = fakelibvirt.VIR_DOMAIN_PAUSED
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_NONE}
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError, POSTCOPY_PHASE_FAILED,
            error_code=fakelibvirt.VIR_ERR_OPERATION_FAILED)

    def resume_completes(self, domain, params):
        domain.livemig_gone = True
        domain.complete_job()

    def force_post_copy(self, server):
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.api.force_complete_migration(server['id'], migration['id'])

    def dest_domain(self, server):
        conn = self.dest.driver._host.get_connection()
        return conn.lookupByUUIDString(server['id'])


class BrokenPostcopyIsResumedTest(PostcopyTestBase):

    def migrate_script(self, domain, params):
        self.switch_then_fail(domain, params)

    def resume_script(self, domain, params):
        if len(self.resume_calls) < 2:
            # QEMU's stream still alive: libvirt refuses the resume.
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError,
                'operation failed: QEMU reports migration is still running',
                error_code=fakelibvirt.VIR_ERR_OPERATION_FAILED)
        self.resume_completes(domain, params)

    def test_no_rollback_after_the_switch_the_resume_completes(self):
        server = self.start_migration()
        self.force_post_copy(server)
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual(2, len(self.resume_calls))
        dest_uri, params, flags = self.resume_calls[-1]
        first_uri, first_params, first_flags = self.migrate_calls[0]
        # The original call again, with POSTCOPY_RESUME added.
        self.assertEqual(first_uri, dest_uri)
        self.assertEqual(first_params, params)
        self.assertEqual(first_flags | postcopy.VIR_MIGRATE_POSTCOPY_RESUME,
                         flags)
        self.assertTrue(self.dest_domain(server).isActive())
        log = self.stdlog.logger.output
        self.assertIn('nothing is rolled back', log)
        self.assertIn('post-copy resumed (attempt 2)', log)
        self.assertNotIn('Rolling back', log)


class RecoveryTimeoutTest(PostcopyTestBase):

    LIVEMIG_OPTS = dict(POSTCOPY_OPTS, postcopy_recovery_timeout_s=10)

    def migrate_script(self, domain, params):
        self.switch_then_fail(domain, params)

    def resume_script(self, domain, params):
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            "unable to connect to server at 'dest:16509': No route to host",
            error_code=fakelibvirt.VIR_ERR_SYSTEM_ERROR)

    def test_both_halves_kept_error_names_the_recovery_command(self):
        server = self.start_migration()
        self.force_post_copy(server)
        self.wait_for_migration(server, 'error', timeout_s=60)
        server = self._wait_for_state_change(server, 'ERROR')
        # A tenant reads the message: no host, URI or command in it.
        self.assertEqual('Live migration needs operator recovery',
                         server['fault']['message'])
        # Admins get the command in the details.
        self.assertIn("nova-livemig-ext recover instance-00000001 --from "
                      "qemu:///system --to qemu+tcp://dest/system",
                      server['fault']['details'])
        self.assertTrue(server['locked'])
        # Nova still has it on the source: nothing was moved or cleaned.
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        # Both halves are still there, neither destroyed nor resumed.
        src_dom = self.src.driver._host.get_connection().lookupByUUIDString(
            server['id'])
        self.assertEqual(fakelibvirt.VIR_DOMAIN_PAUSED, src_dom._state)
        self.assertTrue(self.dest_domain(server).isActive())
        self.assertEqual([], self.job.called('resume'))
        self.assertGreaterEqual(len(self.resume_calls), 2)
        log = self.stdlog.logger.output
        self.assertIn('could not be completed within 10 s', log)
        self.assertIn('No route to host', log)


def nova_surfaces_errors():
    """Whether this Nova ends a failed live migration in error (32.2 on)."""
    major, minor = (int(n) for n in re.findall(
        r'\d+', novacompat.installed_nova_version())[:2])
    return (major, minor) >= (32, 2)


class DestinationFailedAtTheSwitchTest(PostcopyTestBase):
    """The destination failed to load the guest at the switch (seen in the
    lab for a stream reset within 0.05 s of it): libvirt shut it off as
    failed and the source holds the whole guest, post-copy paused. The
    source's nova-compute reads that from the destination's libvirt, gives
    the guest back to the source and Nova rolls the migration back."""

    LIVEMIG_OPTS = dict(POSTCOPY_OPTS, postcopy_recovery_timeout_s=30)
    # Where the source's nova-compute reads the destination's libvirt.
    DEST_READ_URI = 'qemu+tcp://dest/system'

    def setUp(self):
        super().setUp()
        test = self
        real_connect = livemig_driver.libvirt_driver.host.Host._connect
        self.dest_opens = []
        self.given = []
        self.never_ran = []

        def connect(host, uri, read_only):
            if uri == self.DEST_READ_URI:
                test.dest_opens.append(read_only)
                return test.dest.driver._host.get_connection()
            return real_connect(host, uri, read_only)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host._connect', connect))

        def give_back_domain(domain, dest_state, address,
                             operator_says_never_ran=False):
            # What QEMU does once the stand-in ended the resumed migration:
            # libvirt shows the source running again.
            self.given.append((domain.UUIDString(), dest_state, address))
            self.never_ran.append(operator_says_never_ran)
            domain._state = fakelibvirt.VIR_DOMAIN_RUNNING
            domain.livemig_reason = postcopy.VIR_DOMAIN_RUNNING_POSTCOPY
            return ['resume acknowledged', 'source QEMU: failed']

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.standin.give_back_domain', give_back_domain))
        # The source QEMU (none here) post-copy paused, no page asked for.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.standin.source_refusal_domain',
            lambda domain: None))

    def migrate_script(self, domain, params):
        self.switch_then_fail(domain, params, dest_failed=True)

    def resume_script(self, domain, params):
        raise AssertionError('nothing can be resumed into a destination '
                             'that is shut off')

    def migrate_until_rolled_back(self):
        """Force post-copy; wait for Nova's end of a failed migration."""
        server = self.start_migration()
        self.force_post_copy(server)
        surfaces_errors = nova_surfaces_errors()
        # As any failed migration under Nova's own driver of that release:
        # from 32.2 the migration and the instance end in error, with a
        # fault; before, the migration ends failed and the instance ACTIVE.
        self.wait_for_migration(server, 'error' if surfaces_errors
                                else 'failed', timeout_s=60)
        return self._wait_for_state_change(
            server, 'ERROR' if surfaces_errors else 'ACTIVE'), surfaces_errors

    def test_given_back_and_rolled_back_in_nova(self):
        server, surfaces_errors = self.migrate_until_rolled_back()
        self.assertEqual([(server['id'], (5, 6), 'tcp:127.0.0.1')],
                         self.given)
        # Read-only, and only the destination's libvirt.
        self.assertTrue(self.dest_opens)
        self.assertTrue(all(self.dest_opens))
        self.assertEqual([], self.resume_calls)
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        if surfaces_errors:
            self.assertEqual('Live migration failed',
                             server['fault']['message'])
            details = server['fault']['details']
            self.assertIn('given back to src', details)
            self.assertIn('openstack server reboot --hard', details)
        # On every release the log says what happened and what to do.
        self.wait_for_log('openstack server reboot --hard')
        # Not left to an operator: nothing to recover, nothing locked.
        self.assertFalse(server['locked'])
        src_dom = self.src.driver._host.get_connection().lookupByUUIDString(
            server['id'])
        self.assertEqual(fakelibvirt.VIR_DOMAIN_RUNNING, src_dom._state)
        log = self.stdlog.logger.output
        self.assertIn('giving the guest back to the source', log)
        self.assertIn('give-back: resume acknowledged', log)
        self.assertNotIn('needs operator recovery', log)


class DestinationReadThroughItsOwnUriTest(DestinationFailedAtTheSwitchTest):
    """``destination_libvirt_uri``: nova-compute cannot reach the
    migration's URI (another network namespace); it reads the destination
    where the operator says."""

    LIVEMIG_OPTS = dict(
        POSTCOPY_OPTS, postcopy_recovery_timeout_s=30,
        destination_libvirt_uri='qemu+unix:///system?socket=/run/peer/%s.sock')
    DEST_READ_URI = 'qemu+unix:///system?socket=/run/peer/dest.sock'


class DestinationFailedGiveBackOffTest(DestinationFailedAtTheSwitchTest):
    """``postcopy_give_back_address = off``: both halves kept for the operator."""

    LIVEMIG_OPTS = dict(POSTCOPY_OPTS, postcopy_recovery_timeout_s=10,
                        postcopy_give_back_address='off')

    test_given_back_and_rolled_back_in_nova = None

    def test_left_to_the_operator(self):
        server = self.start_migration()
        self.force_post_copy(server)
        self.wait_for_migration(server, 'error', timeout_s=60)
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual([], self.given)
        self.assertEqual('Live migration needs operator recovery',
                         server['fault']['message'])
        self.assertIn('destination shut off/failed',
                      server['fault']['details'])
        self.assertTrue(server['locked'])


class DestinationStuckAtTheSwitchTest(DestinationFailedAtTheSwitchTest):
    """The destination's QEMU stuck loading the guest at the switch (seen
    on the real stack): libvirt there still shows it paused for migration.
    The source's nova-compute stops it over a writable connection to the
    destination's libvirt, then gives the guest back."""

    def setUp(self):
        super().setUp()
        # Seconds, not the 10 s the product waits: the same path, sooner.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.postcopy.STUCK_LOADING_S', 1.0))

    def migrate_script(self, domain, params):
        self.switch_then_fail(domain, params, dest_stuck=True)

    test_given_back_and_rolled_back_in_nova = None

    def test_stopped_then_given_back(self):
        server, _ = self.migrate_until_rolled_back()
        # Given back only once the destination ran no QEMU for the guest,
        # on the monitor's word that it never ran it.
        self.assertEqual(1, len(self.given))
        uuid, dest_state, address = self.given[0]
        self.assertEqual((server['id'], 'tcp:127.0.0.1'), (uuid, address))
        self.assertNotEqual(fakelibvirt.VIR_DOMAIN_PAUSED,
                            (dest_state or (None,))[0])
        self.assertEqual([True], self.never_ran)
        # Reads read-only; one writable connection, for the destroy.
        self.assertEqual(1, self.dest_opens.count(False))
        self.assertEqual([], self.resume_calls)
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        self.assertFalse(server['locked'])
        log = self.stdlog.logger.output
        self.assertIn('its QEMU is stuck loading the guest and never ran it',
                      log)
        self.assertIn('give-back: resume acknowledged', log)
        self.assertNotIn('needs operator recovery', log)


class StuckDestinationWhileTheCallBlocksTest(DestinationStuckAtTheSwitchTest):
    """As on the real stack: libvirt's migration call does not return while
    the destination is stuck; the monitor settles beside it, and the call
    returns its error only once the destination's QEMU is stopped."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.monitor.POSTCOPY_BROKEN_GRACE_S', 1.0))

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.arrive_on_dest(params)
        dest = self.dest.driver._host.get_connection().lookupByUUIDString(
            self.server_uuid(params))
        dest._state = fakelibvirt.VIR_DOMAIN_PAUSED
        dest.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_MIGRATION
        domain._state = fakelibvirt.VIR_DOMAIN_PAUSED
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED}
        deadline = time.monotonic() + 60
        while dest._state != fakelibvirt.VIR_DOMAIN_SHUTOFF:
            if time.monotonic() > deadline:
                raise AssertionError('the destination was never stopped')
            time.sleep(0.1)
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError, 'internal error: QEMU unexpectedly '
            'closed the monitor', error_code=fakelibvirt.VIR_ERR_INTERNAL_ERROR)

    def test_stopped_then_given_back(self):
        started_s = time.monotonic()
        super().test_stopped_then_given_back()
        # Not held for libvirt's call once the monitor settled beside it.
        self.assertLess(time.monotonic() - started_s, 40)
        self.assertIn('recovering without waiting for it',
                      self.stdlog.logger.output)


class SaveFailsAfterTheSwitchTest(PostcopyTestBase):
    """A database error saving the post-copy status changes nothing."""

    def setUp(self):
        super().setUp()
        real_save = objects.Migration.save
        self.save_failures = []

        def save(migration, *args, **kwargs):
            if (migration.status == 'running (post-copy)'
                    and not self.save_failures):
                self.save_failures.append(migration.status)
                raise RuntimeError('database gone away')
            return real_save(migration, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.objects.Migration.save', save))

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        time.sleep(0.5)
        domain.livemig_gone = True
        self.complete(domain, params)

    def test_the_migration_still_completes_on_dest(self):
        server = self.start_migration()
        self.force_post_copy(server)
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual(['running (post-copy)'], self.save_failures)
        self.assertIn('saving the post-copy status failed',
                      self.stdlog.logger.output)


class JobStatsFailTest(PostcopyTestBase):
    """libvirt stops answering jobStats: the deadline still holds."""

    LIVEMIG_OPTS = dict(ladder=['abort'], completion_timeout_max_s=10,
                        completion_timeout_s_per_gib=10,
                        switchover_timeout_s=5, **base.FAST)

    def setUp(self):
        super().setUp()

        def stats(dom, flags=0):
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError,
                'Timed out during operation: cannot acquire state change '
                'lock', error_code=fakelibvirt.VIR_ERR_OPERATION_TIMEOUT)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.jobStats', stats))

    def migrate_script(self, domain, params):
        self.job.wait_for(['abortJob'], timeout_s=60)
        self.cancelled(domain)

    def test_deadline_by_the_wall_clock(self):
        server = self._create_server(host='src', networks='none')
        started_s = time.monotonic()
        self.api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}})
        self.wait_for_migration(server, 'failed')
        # 512 MiB at 10 s/GiB: 5 s.
        self.assertLess(time.monotonic() - started_s, 30)
        self.assert_stayed_on_src(server)
        self.assertIn('while job statistics were unreadable',
                      self.stdlog.logger.output)


class ForceCompleteWithoutStatsTest(PostcopyTestBase):

    def setUp(self):
        super().setUp()
        self.stats_broken = False
        job_stats = fakelibvirt.Domain.jobStats

        def stats(dom, flags=0):
            if self.stats_broken:
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    'Timed out during operation: cannot acquire state '
                    'change lock',
                    error_code=fakelibvirt.VIR_ERR_OPERATION_TIMEOUT)
            return job_stats(dom, flags)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.jobStats', stats))

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        domain.livemig_gone = True
        self.complete(domain, params)

    def test_force_complete_is_not_ignored(self):
        server = self.start_migration()
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.stats_broken = True
        migration = self.migration_of(server)
        self.api.force_complete_migration(server['id'], migration['id'])
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual(1, len(self.job.called('migrateStartPostCopy')))


class SimulatedCrash(BaseException):
    """nova-compute dying: nothing in Nova or in our driver catches it."""


class RestartDuringPostcopyTest(PostcopyTestBase):
    """nova-compute dies after the switch and starts again."""

    def setUp(self):
        super().setUp()
        self.crash = threading.Event()
        test = self
        from nova_livemig_ext import driver
        real_each_poll = driver.NovaMigrationMonitor._each_poll

        def each_poll(monitor, now_s):
            if test.crash.is_set():
                raise SimulatedCrash()
            real_each_poll(monitor, now_s)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.driver.NovaMigrationMonitor._each_poll',
            each_poll))

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.arrive_on_dest(params)
        domain._state = fakelibvirt.VIR_DOMAIN_PAUSED
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY
        self.crash.set()
        # The stream breaks while nobody watches.
        time.sleep(1.0)
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError, POSTCOPY_PHASE_FAILED,
            error_code=fakelibvirt.VIR_ERR_OPERATION_FAILED)

    def resume_script(self, domain, params):
        self.resume_completes(domain, params)

    def test_restart_resumes_and_completes_in_nova(self):
        server = self.start_migration()
        self.force_post_copy(server)
        self.wait_for_migration(server, 'running (post-copy)')
        records = self.src.driver.livemig_records
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                self.crash.is_set() and self.job.called(
                    'migrateStartPostCopy')):
            time.sleep(0.1)
        time.sleep(2.0)
        # What the dead nova-compute left: the record, the task state.
        self.assertIsNotNone(records.read(server['id']))
        self.assertEqual('running (post-copy)',
                         self.migration_of(server)['status'])
        self.assertEqual([], self.resume_calls)

        self.restart_compute_service('src')
        self.src = self.computes['src']
        self.wait_for_log('is complete in Nova')
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual(1, len(self.resume_calls))
        self.assertIsNone(records.read(server['id']))
        log = self.stdlog.logger.output
        self.assertIn('was interrupted (migration running (post-copy)', log)
        self.assertIn('completed; finishing it in Nova', log)


class RestartDuringPrecopyTest(RestartDuringPostcopyTest):
    """nova-compute dies in pre-copy: the unwatched job is aborted."""

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        time.sleep(0.5)
        self.crash.set()
        # libvirt's job goes on with nobody watching, until aborted.
        self.job.wait_for(['abortJob'], timeout_s=60)
        self.cancelled(domain)

    def test_restart_aborts_and_rolls_back(self):
        server = self.start_migration()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.crash.is_set():
            time.sleep(0.1)
        time.sleep(2.0)
        self.assertEqual([], self.job.called('abortJob'))
        self.assertIsNotNone(
            self.src.driver.livemig_records.read(server['id']))

        self.restart_compute_service('src')
        self.wait_for_log('was rolled back; the guest runs on this host')
        self.wait_for_migration(server, 'failed')
        self.assert_stayed_on_src(server)
        self.assertEqual(1, len(self.job.called('abortJob')))
        src = self.computes['src']
        self.assertIsNone(src.driver.livemig_records.read(server['id']))
        log = self.stdlog.logger.output
        self.assertIn('aborting the unwatched pre-copy job', log)
        self.assertIn('was rolled back; the guest runs on this host', log)

    test_restart_resumes_and_completes_in_nova = None
