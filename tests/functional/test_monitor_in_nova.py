"""Our monitor inside Nova's live-migration path, driven through the API.

Each test scripts the libvirt job (statistics, how it ends) from Nova's
migration thread and checks what Nova and the operator see.
"""

import re
import time

from nova.tests.fixtures import libvirt as fakelibvirt

from nova_livemig_ext import novacompat
from tests.functional import base

FAST = dict(poll_interval_s=0.1)


class MonitorTestBase(base.LiveMigExtTestBase):

    def start_migration(self):
        server = self._create_server(host='src', networks='none')
        self.api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}})
        self._wait_for_migration_status(server, ['running'])
        return server

    def wait_for_migration(self, server, status, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while self.migration_of(server)['status'] != status:
            if time.monotonic() > deadline:
                self.fail('migration never reached %s: %s' % (
                    status, self.migration_of(server)))
            time.sleep(0.1)

    def wait_for_log(self, text, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while text not in self.stdlog.logger.output:
            if time.monotonic() > deadline:
                self.fail('%r never logged' % text)
            time.sleep(0.05)

    def assert_stayed_on_src(self, server):
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])

    def assert_moved_to_dest(self, server):
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])


class ForceCompletePostCopyTest(MonitorTestBase):

    LIVEMIG_OPTS = dict(permit_post_copy=True, ladder=[
        'downtime', 'postcopy', 'abort'], **FAST)

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['migrateStartPostCopy'])
        self.complete(domain, params)

    def test_force_complete_switches_to_post_copy(self):
        server = self.start_migration()
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.api.force_complete_migration(server['id'], migration['id'])
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual(1, len(self.job.called('migrateStartPostCopy')))
        self.assertEqual([], self.job.called('suspend'))
        log = self.stdlog.logger.output
        self.assertIn('force-complete requested by the operator', log)
        self.assertIn('nova-livemig-ext: live migration completed', log)
        # One summary line per migration: the monitor's own stays silent.
        self.assertEqual(1, log.count('live migration completed'), log)
        self.assertNotIn('Live migration completed after', log)
        # The summary gives what the guest paid, not libvirt's figure alone.
        self.assertRegex(log, r'nova-livemig-ext: live migration completed '
                         r'in [\d.]+ s, guest longest unavailability at most '
                         r'[\d.]+ s, work lost at most [\d.]+ s \(.*post-copy '
                         r'fault stall at most')


class ForceCompletePauseTest(MonitorTestBase):

    LIVEMIG_OPTS = FAST

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['suspend'])
        self.complete(domain, params)

    def test_force_complete_pauses_without_post_copy(self):
        server = self.start_migration()
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        # Progress is on the migration record, as server-migrations shows,
        # from the first save after the job has figures (libvirt's first
        # statistics of a job can be all zero: saved as "none").
        deadline_s = time.monotonic() + 30.0
        while True:
            shown = self.api.api_get('/servers/%s/migrations/%s' % (
                server['id'], migration['id'])).body['migration']
            if (shown['memory_total_bytes'] is not None
                    or time.monotonic() > deadline_s):
                break
            time.sleep(0.2)
        self.assertEqual(512 * base.MIB, shown['memory_total_bytes'])
        self.assertEqual(400 * base.MIB, shown['memory_remaining_bytes'])
        self.assertEqual(112 * base.MIB, shown['memory_processed_bytes'])
        self.api.force_complete_migration(server['id'], migration['id'])
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertEqual([], self.job.called('migrateStartPostCopy'))
        self.assertIn('expected downtime', self.stdlog.logger.output)


class AbortTest(MonitorTestBase):

    LIVEMIG_OPTS = FAST

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['abortJob'])
        self.cancelled(domain)

    def test_operator_abort_leaves_the_server_on_src(self):
        server = self.start_migration()
        migration = self.migration_of(server)
        self.wait_for_log('Live migration set_downtime(300 ms)')
        self.api.api_delete('/servers/%s/migrations/%s' % (
            server['id'], migration['id']))
        self._wait_for_migration_status(server, ['cancelled'])
        self.assert_stayed_on_src(server)
        self.assertEqual(fakelibvirt.VIR_DOMAIN_RUNNING,
                         self._src_domain(server)._state)

    def _src_domain(self, server):
        conn = self.src.driver._host.get_connection()
        return conn.lookupByUUIDString(server['id'])


class AbortEndsInBrokenPipeTest(AbortTest):
    """libvirt may end an aborted job with another error (seen for real)."""

    def test_operator_abort_leaves_the_server_on_src(self):
        super().test_operator_abort_leaves_the_server_on_src()
        log = self.stdlog.logger.output
        # Logged as what it is: the operator's abort, libvirt's words beside.
        self.assertIn("cancelled at the operator's request (libvirt ended "
                      "the job with: operation failed: job 'migration out' "
                      "failed: Unable to write to socket: Broken pipe)", log)
        self.assertIn('nova-livemig-ext: live migration cancelled', log)
        self.assertNotIn('Live migration failed: ', log)

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        self.job.wait_for(['abortJob'])
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_FAILED}
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            "operation failed: job 'migration out' failed: Unable to write "
            "to socket: Broken pipe",
            error_code=fakelibvirt.VIR_ERR_OPERATION_FAILED)


class FailedJobTest(MonitorTestBase):

    LIVEMIG_OPTS = FAST

    def migrate_script(self, domain, params):
        self.job.precopy(400, 112, 1)
        time.sleep(0.5)
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_FAILED}
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            'operation failed: migration out job: unexpectedly failed',
            error_code=fakelibvirt.VIR_ERR_INTERNAL_ERROR)

    def test_failed_job_ends_as_novas_own_driver_ends_it(self):
        server = self._create_server(host='src', networks='none')
        major, minor = (int(n) for n in re.findall(
            r'\d+', novacompat.installed_nova_version())[:2])
        if (major, minor) >= (32, 2):
            # Nova's own driver raises the migrate call's error from 32.2
            # on: its compute manager puts the migration and the instance
            # in error, after the rollback.
            self._live_migrate(server, 'error', server_expected_state='ERROR')
            server = self.api.get_server(server['id'])
            self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
            self.assertEqual('Live migration failed',
                             server['fault']['message'])
            self.assertIn('unexpectedly failed', server['fault']['details'])
        else:
            self._live_migrate(server, 'failed',
                               server_expected_state='ACTIVE')
            self.assert_stayed_on_src(server)
        conn = self.src.driver._host.get_connection()
        self.assertTrue(conn.lookupByUUIDString(server['id']).isActive())
        self.assertIn('nova-livemig-ext: live migration failed',
                      self.stdlog.logger.output)


class DeadlineAbortTest(MonitorTestBase):

    # Non-converging and nothing to escalate to: abort at the deadline.
    LIVEMIG_OPTS = dict(ladder=['abort'], completion_timeout_max_s=10,
                        completion_timeout_s_per_gib=10,
                        switchover_timeout_s=5, stall_window_s=5, **FAST)

    def migrate_script(self, domain, params):
        iteration = 1
        while not self.job.called('abortJob'):
            self.job.precopy(200, 112 + 100 * iteration, iteration)
            iteration += 1
            time.sleep(0.2)
        self.cancelled(domain)

    def test_controller_aborts_at_the_deadline(self):
        server = self.start_migration()
        # Our abort is a failed migration; 'cancelled' is an operator's.
        self.wait_for_migration(server, 'failed')
        self.assert_stayed_on_src(server)
        log = self.stdlog.logger.output
        # 512 MiB at 10 s/GiB.
        self.assertIn('deadline of 5 s passed', log)
        self.assertIn('nova-livemig-ext: live migration aborted', log)
        self.assertIn('aborted by its controller, the guest keeps running '
                      'on this host: deadline of 5 s passed', log)


class SwitchoverErrorsTest(MonitorTestBase):

    LIVEMIG_OPTS = FAST

    def migrate_script(self, domain, params):
        self.job.precopy(100, 412, 2)
        time.sleep(0.5)
        # The source domain goes away during the switchover: jobStats
        # raises, which is the end of the job, not a failure.
        self.arrive_on_dest(params)
        self.gone = True
        domain._connection._mark_not_running(domain)
        domain.complete_job()
        # libvirt returns from migrateToURI3 only after the switchover the
        # monitor is watching: let it see the source domain gone first.
        deadline = time.monotonic() + 30
        while not self.gone_polls and time.monotonic() < deadline:
            time.sleep(0.05)

    def test_domain_gone_at_switchover_completes(self):
        self.gone = False
        self.gone_polls = 0
        job_stats = fakelibvirt.Domain.jobStats

        def stats(dom, flags=0):
            if self.gone:
                self.gone_polls += 1
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    'Domain not found: no domain with matching uuid',
                    error_code=fakelibvirt.VIR_ERR_NO_DOMAIN)
            return job_stats(dom, flags)

        self.useFixture(base.fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.jobStats', stats))
        server = self.start_migration()
        self._wait_for_migration_status(server, ['completed'])
        self.assert_moved_to_dest(server)
        self.assertIn('the domain left the source',
                      self.stdlog.logger.output)
