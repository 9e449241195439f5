"""Nova's own functional base, with two computes running our driver."""

import os
import sys
import threading
import time

import fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from lxml import etree
from nova.tests.functional import integrated_helpers
from nova.tests.functional.libvirt import base as libvirt_base

from nova_livemig_ext import driver  # noqa: F401 (registers options)
from tests import fixtures as lm_fixtures

DRIVER = 'livemig_ext.LibvirtLiveMigExtDriver'
# Nova's wheel installs its api-paste.ini under <prefix>/etc/nova.
API_PASTE = os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')


MIB = 1024 * 1024
VIR_ERR_OPERATION_ABORTED = 78


class ScriptedJob(object):
    """A migration job whose statistics and ending the test script.

    The fake ``jobStats``, ``abortJob``, ``suspend`` and
    ``migrateStartPostCopy`` of the migrating domain report to it, so a
    script running in Nova's migration thread can wait for the driver's
    decisions and answer them as libvirt would.
    """

    def __init__(self):
        self.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_NONE}
        self.calls = []
        self.cond = threading.Condition()

    def record(self, name, *args):
        with self.cond:
            self.calls.append((name,) + args)
            self.cond.notify_all()

    def called(self, name):
        return [c for c in self.calls if c[0] == name]

    def wait_for(self, names, timeout_s=60.0):
        """Wait until one of ``names`` was called; return its name."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for c in self.calls:
                    if c[0] in names:
                        return c[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError('none of %s was called; calls: %s'
                                         % (names, self.calls))
                self.cond.wait(left)

    def precopy(self, remaining_mib, processed_mib, iteration,
                total_mib=512, bandwidth_mib_s=100):
        self.stats = {
            'type': fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED,
            'memory_total': total_mib * MIB,
            'memory_remaining': remaining_mib * MIB,
            'memory_processed': processed_mib * MIB,
            'memory_iteration': iteration,
            'memory_bps': bandwidth_mib_s * MIB,
            'memory_dirty_rate': 200 * MIB // 4096,
            'memory_page_size': 4096,
        }


def fake_state(dom, flags=0):
    """libvirt's ``virDomainGetState``, which Nova's fake lacks.

    A test sets ``livemig_reason`` for the state's reason (post-copy) and
    ``livemig_gone`` once the domain has left the host.
    """
    if getattr(dom, 'livemig_gone', False):
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            'Domain not found: no domain with matching uuid',
            error_code=fakelibvirt.VIR_ERR_NO_DOMAIN)
    return [dom._state, getattr(dom, 'livemig_reason', 0)]


class LiveMigExtTestBase(libvirt_base.ServersTestBase,
                         integrated_helpers.InstanceHelperMixin):
    """Two computes, ``src`` and ``dest``, on our driver and fake libvirt.

    ``migrate_script`` is called from the fake ``migrateToURI3`` (in Nova's
    migration thread) with the source domain; it decides how the job goes.
    The default completes it at once.
    """

    microversion = 'latest'
    ADMIN_API = True
    LIVEMIG_OPTS = {}

    def setUp(self):
        self.flags(api_paste_config=API_PASTE, group='wsgi')
        super().setUp()
        # Our own: each compute keeps its live migration records under
        # state_path, and parallel workers must not share them.
        self.flags(state_path=self.useFixture(fixtures.TempDir()).path)
        self.fake_libvirt = self.useFixture(lm_fixtures.ModernFakeLibvirt())
        self.migrate_calls = []
        self.job = ScriptedJob()
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_stub))
        job = self.job

        def job_stats(dom, flags=0):
            if job.stats['type'] == fakelibvirt.VIR_DOMAIN_JOB_NONE:
                return {'type': dom._job_type}
            return dict(job.stats)

        def recorder(name, effect=None):
            def call(dom, *args):
                job.record(name, *args)
                if effect is not None:
                    effect(dom)
                return 0
            return call

        def pause(dom):
            dom._state = fakelibvirt.VIR_DOMAIN_PAUSED

        def resume(dom):
            dom._state = fakelibvirt.VIR_DOMAIN_RUNNING

        for name, fake in [
                ('jobStats', job_stats),
                ('abortJob', recorder('abortJob')),
                ('suspend', recorder('suspend', pause)),
                ('resume', recorder('resume', resume)),
                ('migrateStartPostCopy', recorder('migrateStartPostCopy')),
                ('migrateSetMaxDowntime',
                 recorder('migrateSetMaxDowntime')),
                ('migrateSetMaxSpeed', recorder('migrateSetMaxSpeed')),
                ('state', fake_state)]:
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.libvirt.Domain.%s' % name, fake))
        if self.LIVEMIG_OPTS:
            self.flags(group='livemig_ext', **self.LIVEMIG_OPTS)
        self.src_hostname = self.start_compute(hostname='src')
        self.dest_hostname = self.start_compute(hostname='dest')
        self.src = self.computes[self.src_hostname]
        self.dest = self.computes[self.dest_hostname]

    def _setup_compute_service(self):
        self.flags(compute_driver=DRIVER)

    def _migrate_stub(self, domain, destination, params, flags):
        self.migrate_calls.append((destination, dict(params), flags))
        self.migrate_script(domain, params)

    def migrate_script(self, domain, params):
        self.arrive_on_dest(params)
        domain.complete_job()

    def complete(self, domain, params):
        """End the job as a successful switchover does."""
        self.arrive_on_dest(params)
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_NONE}
        domain.complete_job()

    def cancelled(self, domain):
        """End the job as libvirt does after abortJob."""
        self.job.stats = {'type': fakelibvirt.VIR_DOMAIN_JOB_CANCELLED}
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            'operation aborted: migration out job: canceled by client',
            error_code=VIR_ERR_OPERATION_ABORTED)

    def migration_of(self, server):
        return self.api.api_get(
            '/os-migrations?instance_uuid=%s' % server['id']
        ).body['migrations'][-1]

    def arrive_on_dest(self, params):
        self.dest.driver._host.get_connection().createXML(
            params['destination_xml'],
            'fake-createXML-doesnt-care-about-flags')

    @staticmethod
    def server_uuid(params):
        return etree.fromstring(params['destination_xml']).find(
            './uuid').text
