"""Nova's own functional base, with two computes running our driver."""

import os
import sys

import fixtures
from lxml import etree
from nova.tests.functional import integrated_helpers
from nova.tests.functional.libvirt import base as libvirt_base

from nova_livemig_ext import driver  # noqa: F401 (registers options)
from tests import fixtures as lm_fixtures

DRIVER = 'livemig_ext.LibvirtLiveMigExtDriver'
# Nova's wheel installs its api-paste.ini under <prefix>/etc/nova.
API_PASTE = os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')


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
        self.fake_libvirt = self.useFixture(lm_fixtures.ModernFakeLibvirt())
        self.migrate_calls = []
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_stub))
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

    def arrive_on_dest(self, params):
        self.dest.driver._host.get_connection().createXML(
            params['destination_xml'],
            'fake-createXML-doesnt-care-about-flags')

    @staticmethod
    def server_uuid(params):
        return etree.fromstring(params['destination_xml']).find(
            './uuid').text
