"""nova-compute restarts around a live migration, inside Nova's start-up.

The source nova-compute dies (nothing in Nova or the driver catches it)
while libvirt's job goes on; then it starts again, and Nova's own start-up
(``_init_instance``, ``resume_guests_state_on_host_boot``) runs beside the
driver's recovery. Each test checks, through the API and both hosts'
libvirt, that the guest ends up running exactly once, where Nova says it is,
with its volume attachments where the guest uses them.
"""

import threading
import time

import fixtures
from nova import context as nova_context
from nova import objects
from nova.tests import fixtures as nova_fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt.libvirt import driver as libvirt_driver

from nova_livemig_ext import driver as livemig_driver
from nova_livemig_ext import postcopy
from tests.functional import test_monitor_in_nova as base
from tests.functional import test_postcopy_in_nova as pc

RECOVERY_MESSAGE = 'Live migration needs operator recovery'


class SimulatedCrash(BaseException):
    """nova-compute dying: nothing in Nova or in our driver catches it."""


class RestartTestBase(base.MonitorTestBase):
    """The source's nova-compute dies in the middle of a migration."""

    LIVEMIG_OPTS = base.FAST

    def setUp(self):
        super().setUp()
        self.crash = threading.Event()
        self.crashed = threading.Event()
        self.may_go_on = threading.Event()
        self.script_done = threading.Event()
        # A script still waiting when the test ends must not hold Nova's
        # migration thread past it.
        self.addCleanup(self.may_go_on.set)
        test = self
        real_each_poll = livemig_driver.NovaMigrationMonitor._each_poll

        def each_poll(monitor, now_s):
            if test.crash.is_set():
                test.crashed.set()
                raise SimulatedCrash()
            real_each_poll(monitor, now_s)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.driver.NovaMigrationMonitor._each_poll',
            each_poll))
        self.hard_reboots = []
        real_hard_reboot = libvirt_driver.LibvirtDriver._hard_reboot

        def hard_reboot(drvr, context, instance, *args, **kwargs):
            self.hard_reboots.append((drvr._host.get_connection(),
                                      instance.uuid))
            return real_hard_reboot(drvr, context, instance, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._hard_reboot',
            hard_reboot))
        self.rollbacks = []
        real_rollback = self.src.manager.__class__._rollback_live_migration

        def rollback(manager, context, instance, *args, **kwargs):
            self.rollbacks.append(instance.uuid)
            return real_rollback(manager, context, instance, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.compute.manager.ComputeManager._rollback_live_migration',
            rollback))

    # --- what the dead nova-compute leaves behind --------------------------

    def die_in_precopy(self):
        """From the migration thread: pre-copy, then nova-compute dies."""
        self.job.precopy(400, 112, 1)
        time.sleep(0.3)
        self.crash.set()
        if not self.crashed.wait(30):
            raise AssertionError('the monitor never died')

    def finish_on_dest(self, domain, params):
        """libvirt completes the job: the guest runs on the destination,
        the source domain is undefined (VIR_MIGRATE_UNDEFINE_SOURCE)."""
        self.arrive_on_dest(params)
        domain.livemig_gone = True
        conn = domain._connection
        conn._mark_not_running(domain)
        conn._undefine(domain)
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_NONE}
        domain.complete_job()

    def wait_until_dead(self, server):
        if not self.crashed.wait(30):
            self.fail('nova-compute never died')
        # The record the next start works from.
        self.assertIsNotNone(self.src.driver.livemig_records.read(
            server['id']))

    def restart_src(self):
        self.src = self.restart_compute_service('src')
        return self.src

    def wait_until_finished(self, server, text='is complete in Nova'):
        """Nova's part is done, the lock lifted, the record gone."""
        self.wait_for_log(text)
        deadline = time.monotonic() + 30
        while self.src.driver.livemig_records.read(server['id']) is not None:
            if time.monotonic() > deadline:
                self.fail('the record was never removed')
            time.sleep(0.1)

    # --- where the guest is ------------------------------------------------

    def domain_on(self, compute, server):
        conn = compute.driver._host.get_connection()
        try:
            return conn.lookupByUUIDString(server['id'])
        except fakelibvirt.libvirtError:
            return None

    def assert_runs_only_on_dest(self, server):
        self.assertIsNone(self.domain_on(self.src, server),
                          'the guest was started again on the source')
        dest_dom = self.domain_on(self.dest, server)
        self.assertIsNotNone(dest_dom, 'the destination domain is gone')
        self.assertTrue(dest_dom.isActive())
        self.assertEqual([], self.hard_reboots)

    def assert_unlocked(self, server):
        shown = self.api.get_server(server['id'])
        self.assertFalse(shown['locked'])
        self.assertIsNone(shown['locked_reason'])

    # --- what a tenant and an admin see -----------------------------------

    def user_api(self):
        api = self.api_fixture.api
        api.microversion = 'latest'
        return api

    def assert_left_to_operator(self, server):
        """ERROR, locked, a fault a tenant may read, details for admins."""
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(RECOVERY_MESSAGE, server['fault']['message'])
        self.assertIn('nova-livemig-ext recover', server['fault']['details'])
        self.assertTrue(server['locked'])
        self.assertIn('nova-livemig-ext', server['locked_reason'])
        shown = self.user_api().get_server(server['id'])
        self.assertEqual({'code', 'created', 'message'},
                         set(shown['fault']))
        self.assertEqual(RECOVERY_MESSAGE, shown['fault']['message'])
        self.assertTrue(shown['locked'])
        # The tenant cannot destroy the half that holds the guest's pages.
        for action in ({'reboot': {'type': 'HARD'}},
                       {'rebuild': {'imageRef': server['image']['id']
                                    if server['image'] else ''}}):
            refused = self.user_api().api_post(
                '/servers/%s/action' % server['id'], action,
                check_response_status=[409])
            self.assertEqual(409, refused.status)
            self.assertIn('is locked', str(refused.body))
        refused = self.user_api().api_delete(
            '/servers/%s' % server['id'], check_response_status=[409])
        self.assertEqual(409, refused.status)
        self.assertIn('is locked', str(refused.body))
        return server


class CompletedWhileDownTest(RestartTestBase):
    """N1: the job completed while nova-compute was down; Nova's start
    would find no domain and, with ``resume_guests_state_on_host_boot``,
    hard-reboot the guest on the source while it runs on the destination."""

    def setUp(self):
        self.flags(resume_guests_state_on_host_boot=True)
        super().setUp()

    def migrate_script(self, domain, params):
        self.die_in_precopy()
        self.may_go_on.wait(60)
        self.finish_on_dest(domain, params)
        self.script_done.set()

    def test_never_started_on_the_source(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.may_go_on.set()
        self.assertTrue(self.script_done.wait(30))

        self.restart_src()
        self.wait_for_migration(server, 'completed', timeout_s=30)
        self.wait_until_finished(server)
        self.assert_moved_to_dest(server)
        self.assert_runs_only_on_dest(server)
        self.assert_unlocked(server)
        self.assert_startup_left_it_alone()

    def assert_startup_left_it_alone(self):
        log = self.stdlog.logger.output
        if hasattr(libvirt_driver.LibvirtDriver,
                   'process_instances_at_startup'):
            # Nova's _init_instance never saw it.
            self.assertIn('Nova\'s start-up leaves this instance alone', log)
            self.assertNotIn('Rebooting instance after nova-compute restart',
                             log)
        else:
            self.assertIn('not starting the guest on this host', log)


class CompletedWhileDownNoStartupHookTest(CompletedWhileDownTest):
    """The same on a Nova whose start-up has no
    ``process_instances_at_startup`` (Nova 31 to 33): ``_init_instance``
    runs, and the driver refuses to start the guest that left."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.driver.LibvirtLiveMigExtDriver.'
            'process_instances_at_startup',
            lambda drvr, context, instances: instances))

    def assert_startup_left_it_alone(self):
        # Nova's _init_instance ran and asked for the reboot: refused.
        self.assertIn('not starting the guest on this host',
                      self.stdlog.logger.output)


class CompletedDuringTheAbortTest(RestartTestBase):
    """N3: at start the job is still in pre-copy and is aborted, but it
    completes before the abort takes: rolling back would destroy the only
    running guest, on the destination."""

    def migrate_script(self, domain, params):
        self.die_in_precopy()
        # The new nova-compute's abort comes too late.
        self.job.wait_for(['abortJob'], timeout_s=60)
        self.finish_on_dest(domain, params)
        self.script_done.set()

    def test_completed_not_rolled_back(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.restart_src()
        self.wait_for_migration(server, 'completed', timeout_s=30)
        self.wait_until_finished(server)
        self.assert_moved_to_dest(server)
        self.assert_runs_only_on_dest(server)
        self.assertEqual([], self.rollbacks)
        log = self.stdlog.logger.output
        self.assertIn('aborting the unwatched pre-copy job', log)
        self.assertNotIn('was rolled back; the guest runs on this host', log)


class UnreadableAfterTheAbortTest(RestartTestBase):
    """N3: after the abort, neither host can say where the guest is: no
    rollback, the instance is left to an operator, locked."""

    def migrate_script(self, domain, params):
        self.die_in_precopy()
        self.job.wait_for(['abortJob'], timeout_s=60)
        domain.livemig_unreadable = True
        self.cancelled(domain)

    def setUp(self):
        super().setUp()
        real_state = base.base.fake_state

        def state(dom, flags=0):
            if getattr(dom, 'livemig_unreadable', False):
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    'Timed out during operation: cannot acquire state '
                    'change lock',
                    error_code=fakelibvirt.VIR_ERR_OPERATION_TIMEOUT)
            return real_state(dom, flags)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.state', state))

    def test_left_to_the_operator_nothing_rolled_back(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.restart_src()
        self.wait_for_log('was not finished at start')
        self.wait_for_migration(server, 'error', timeout_s=30)
        self.assert_left_to_operator(server)
        self.assertEqual([], self.rollbacks)
        self.assertIsNotNone(self.src.driver.livemig_records.read(
            server['id']))
        log = self.stdlog.logger.output
        self.assertNotIn('was rolled back; the guest runs on this host', log)
        self.assertIn('openstack server unlock %s' % server['id'], log)


class DestinationHoldsTheGuestTest(UnreadableAfterTheAbortTest):
    """N3: the source cannot be read after the abort, but the
    destination's libvirt can: it runs the guest, so Nova completes."""

    def migrate_script(self, domain, params):
        self.die_in_precopy()
        self.job.wait_for(['abortJob'], timeout_s=60)
        self.arrive_on_dest(params)
        domain.livemig_unreadable = True
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_NONE}
        domain.complete_job()

    def setUp(self):
        super().setUp()
        # The source's nova-compute opening the destination's libvirt.
        test = self
        real_connect = livemig_driver.libvirt_driver.host.Host._connect
        self.dest_opens = []

        def connect(host, uri, read_only):
            if uri == 'qemu+tcp://dest/system':
                test.dest_opens.append(read_only)
                return test.dest.driver._host.get_connection()
            return real_connect(host, uri, read_only)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host._connect', connect))

    test_left_to_the_operator_nothing_rolled_back = None

    def test_the_destination_says_completed(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.restart_src()
        self.wait_for_migration(server, 'completed', timeout_s=30)
        self.wait_until_finished(server)
        self.assert_moved_to_dest(server)
        self.assertEqual([], self.rollbacks)
        self.assertTrue(self.dest_opens)
        self.assertTrue(all(self.dest_opens))  # read-only
        self.assertTrue(self.domain_on(self.dest, server).isActive())


class VolumeTestMixin(object):
    """A server booted from a Cinder volume: the attachments must follow
    the guest (N2)."""

    VOLUME = nova_fixtures.CinderFixture.IMAGE_BACKED_VOL

    def setUp(self):
        super().setUp()
        for name in ('get_volume_connector', '_connect_volume',
                     '_disconnect_volume'):
            self.useFixture(fixtures.MockPatch(
                'nova.virt.libvirt.driver.LibvirtDriver.%s' % name))

    def start_migration(self):
        server = self.api.post_server({'server': {
            'name': 'from-volume', 'imageRef': '', 'flavorRef': 1,
            'networks': 'none', 'host': 'src',
            'block_device_mapping_v2': [{
                'source_type': 'volume', 'destination_type': 'volume',
                'boot_index': 0, 'uuid': self.VOLUME}]}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.source_attachment = self.attachment_in_bdm(server)
        self.api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}})
        self._wait_for_migration_status(server, ['running'])
        # pre_live_migration made the destination's attachment.
        self.dest_attachment = self.attachment_in_bdm(server)
        self.assertNotEqual(self.source_attachment, self.dest_attachment)
        return server

    def attachment_in_bdm(self, server):
        bdm = objects.BlockDeviceMapping.get_by_volume_id(
            nova_context.get_admin_context(), self.VOLUME,
            instance_uuid=server['id'])
        return bdm.attachment_id

    def cinder_attachments(self):
        return set(self.cinder.volume_to_attachment[self.VOLUME])


class VolumeCompletedWhileDownTest(VolumeTestMixin, CompletedWhileDownTest):
    """N2, completing: the source's attachment goes, the destination's
    (which the running guest uses) stays."""

    test_never_started_on_the_source = None

    def test_attachment_of_the_running_guest_is_kept(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.may_go_on.set()
        self.assertTrue(self.script_done.wait(30))
        self.restart_src()
        self.wait_for_migration(server, 'completed', timeout_s=30)
        self.wait_until_finished(server)
        self.assert_moved_to_dest(server)
        self.assertEqual(self.dest_attachment, self.attachment_in_bdm(server))
        self.assertEqual({self.dest_attachment}, self.cinder_attachments())


class VolumeRolledBackTest(VolumeTestMixin, RestartTestBase):
    """N2, rolling back: the mapping points at the source's attachment
    again and the destination's is deleted."""

    def migrate_script(self, domain, params):
        self.die_in_precopy()
        self.job.wait_for(['abortJob'], timeout_s=60)
        self.cancelled(domain)

    def test_source_attachment_restored(self):
        server = self.start_migration()
        self.wait_until_dead(server)
        self.restart_src()
        self.wait_for_migration(server, 'failed')
        self.wait_until_finished(
            server, 'was rolled back; the guest runs on this host')
        self.assert_stayed_on_src(server)
        self.assertEqual(self.source_attachment,
                         self.attachment_in_bdm(server))
        self.assertEqual({self.source_attachment}, self.cinder_attachments())


class RecoveredByTheOperatorTest(RestartTestBase):
    """N6: post-copy cannot be resumed at start: left to an operator,
    locked; after ``recover`` the next start completes it and unlocks."""

    LIVEMIG_OPTS = dict(pc.POSTCOPY_OPTS, postcopy_recovery_timeout_s=10)

    def setUp(self):
        super().setUp()
        self.resume_calls = []

    def _migrate_stub(self, domain, destination, params, flags):
        if flags & postcopy.VIR_MIGRATE_POSTCOPY_RESUME:
            self.resume_calls.append(flags)
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError,
                "unable to connect to server at 'dest:16509': No route to "
                "host", error_code=fakelibvirt.VIR_ERR_SYSTEM_ERROR)
        return super()._migrate_stub(domain, destination, params, flags)

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.arrive_on_dest(params)
        domain._state = fakelibvirt.VIR_DOMAIN_PAUSED
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY
        self.crash.set()
        time.sleep(1.0)
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
        self.may_go_on.wait(120)
        # What ``nova-livemig-ext recover`` achieved.
        domain.livemig_gone = True
        domain._connection._undefine(domain)
        self.script_done.set()

    def test_locked_until_the_restart_after_recover(self):
        server = self.start_migration()
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.api.force_complete_migration(server['id'], migration['id'])
        self.wait_until_dead(server)
        self.restart_src()
        self.wait_for_migration(server, 'error', timeout_s=60)
        server = self.assert_left_to_operator(server)
        self.assertTrue(self.resume_calls)
        log = self.stdlog.logger.output
        # The exact command, every argument quoted for a shell.
        self.assertIn("nova-livemig-ext recover instance-00000001 --from "
                      "qemu:///system --to qemu+tcp://dest/system", log)

        self.may_go_on.set()
        self.assertTrue(self.script_done.wait(30))
        self.restart_src()
        self.wait_for_migration(server, 'completed', timeout_s=30)
        self.wait_until_finished(server)
        self.assert_moved_to_dest(server)
        self.assert_unlocked(server)


class SourceDiedInPostcopyTest(RestartTestBase):
    """N5: the source host dies after the switch; the destination's
    nova-compute starts and says what is lost and what to do."""

    LIVEMIG_OPTS = pc.POSTCOPY_OPTS

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.arrive_on_dest(params)
        domain._state = fakelibvirt.VIR_DOMAIN_PAUSED
        domain.livemig_reason = postcopy.VIR_DOMAIN_PAUSED_POSTCOPY
        self.crash.set()
        # The source host is gone: its migrate call never returns.
        self.may_go_on.wait(120)

    def test_destination_logs_the_way_out(self):
        server = self.start_migration()
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.api.force_complete_migration(server['id'], migration['id'])
        self.wait_until_dead(server)
        dest_dom = self.domain_on(self.dest, server)
        dest_dom.livemig_reason = postcopy.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED
        self.dest = self.restart_compute_service('dest')
        self.wait_for_log('holds the destination half of the post-copy '
                          'live migration')
        log = self.stdlog.logger.output
        self.assertIn('ERROR [nova_livemig_ext.driver]', log)
        for words in ('cannot be completed', 'os-resetState',
                      'virsh destroy instance-00000001',
                      'openstack server unlock'):
            self.assertIn(words, log)
        # Nothing was touched: the half still runs, Nova still on src.
        self.assertTrue(self.domain_on(self.dest, server).isActive())
        shown = self.api.get_server(server['id'])
        self.assertEqual('src', shown['OS-EXT-SRV-ATTR:host'])
