"""Instance keys and device facts through Nova's API, with our driver.

* A bad ``livemig_ext:*`` flavor extra spec is refused by Nova's API (HTTP
  400) through the ``nova.api.extra_spec_validators`` entry point.
* Bad or loosening ``livemig_ext:*`` image properties never veto a
  migration: they are logged and ignored.
* Post-copy is not armed for a guest with a PCI device or a vGPU: the fact
  comes from the guest's libvirt XML as Nova built it (from the flavor's PCI
  alias, or its VGPU resource) and from Nova's migration data, not from
  ``instance.pci_devices`` (which Nova does not load on this path).
"""

from importlib import metadata

import fixtures
from nova.objects import fields
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client
from nova.tests.functional.libvirt import test_pci_sriov_servers
from nova.tests.functional.libvirt import test_vgpu
from oslo_serialization import jsonutils

from nova_livemig_ext import devices
from nova_livemig_ext import flags as lf
from tests import fixtures as lm_fixtures
from tests.functional import base

POSTCOPY_OPTS = dict(permit_post_copy=True,
                     ladder=['downtime', 'postcopy', 'abort'])
ENTRY_POINT_GROUP = 'nova.api.extra_spec_validators'


class FlavorExtraSpecsTest(base.LiveMigExtTestBase):

    def setUp(self):
        super().setUp()
        names = {ep.name: ep.value
                 for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        # Without it Nova's API accepts any livemig_ext:* value: the
        # package metadata is stale (bash tools/setup-venv.sh refreshes it).
        self.assertEqual('nova_livemig_ext.extra_specs',
                         names.get('livemig_ext'),
                         'entry point %s livemig_ext is not installed'
                         % ENTRY_POINT_GROUP)

    def post_spec(self, flavor_id, key, value):
        return self.api_fixture.admin_api.post_extra_spec(
            flavor_id, {'extra_specs': {key: value}})

    def test_bad_values_are_refused_with_400(self):
        flavor_id = self._create_flavor()
        for key, value, text in [
                ('livemig_ext:max_downtime_ms', 'soon', 'soon'),
                ('livemig_ext:max_downtime_ms', '99999', '100 to 60000'),
                ('livemig_ext:completion_timeout_s_per_gib', '0',
                 '1 to 86400'),
                ('livemig_ext:ladder', 'abort,downtime', "'abort' must be"),
                ('livemig_ext:ladder', 'downtime,teleport', 'teleport'),
                ('livemig_ext:permit_post_copy', 'maybe', 'maybe'),
                ('livemig_ext:permit_post_copy', 'y', 'true or false'),
                ('livemig_ext:warp_speed', '9', 'livemig_ext:warp_speed')]:
            e = self.assertRaises(client.OpenStackApiException,
                                  self.post_spec, flavor_id, key, value)
            self.assertEqual(400, e.response.status_code, (key, value))
            self.assertIn(text, str(e), (key, value))
        self.assertEqual(
            {}, self.api_fixture.admin_api.get_extra_specs(flavor_id))

    def test_good_values_are_stored_and_used(self):
        flavor_id = self._create_flavor(extra_spec={
            'livemig_ext:max_downtime_ms': '400',
            'livemig_ext:ladder': 'downtime, abort',
            'livemig_ext:permit_post_copy': 'false',
            'livemig_ext:completion_timeout_s_per_gib': '60'})
        server = self._create_server(host='src', flavor_id=flavor_id,
                                     networks='none')
        self._live_migrate(server, 'completed')
        self.assertIn('ladder downtime,abort', self.stdlog.logger.output)


class ImagePropertiesNeverVetoTest(base.LiveMigExtTestBase):

    LIVEMIG_OPTS = POSTCOPY_OPTS

    def test_bad_image_properties_are_logged_and_ignored(self):
        image_id = self._create_image({
            'livemig_ext:max_downtime_ms': '5000',
            'livemig_ext:ladder': 'sideways',
            'livemig_ext:completion_timeout_s_per_gib': '1',
            'livemig_ext:permit_post_copy': 'false'})['id']
        server = self._create_server(host='src', image_uuid=image_id,
                                     networks='none')
        self._live_migrate(server, 'completed')
        server = self.api.get_server(server['id'])
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        log = self.stdlog.logger.output
        self.assertIn('WARNING [nova_livemig_ext.driver] nova-livemig-ext: '
                      "image property livemig_ext:max_downtime_ms = '5000' "
                      'ignored: above the 500 ms ceiling', log)
        self.assertIn("image property livemig_ext:ladder = 'sideways' "
                      'ignored: unknown rung(s) sideways', log)
        # Post-copy is a rung of the operator's ladder, which may be all
        # that completes the guest: an image cannot take it away.
        self.assertIn("image property livemig_ext:permit_post_copy = 'false' "
                      "ignored: post-copy is a rung of the ladder", log)
        [(_, _, flags)] = self.migrate_calls
        self.assertIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))


class ImagePropertiesIgnoredTest(base.LiveMigExtTestBase):

    LIVEMIG_OPTS = dict(POSTCOPY_OPTS, ignore_image_properties=True)

    def test_operator_ignores_image_properties(self):
        image_id = self._create_image({
            'livemig_ext:permit_post_copy': 'false'})['id']
        server = self._create_server(host='src', image_uuid=image_id,
                                     networks='none')
        self._live_migrate(server, 'completed')
        self.assertIn('ignore_image_properties is set',
                      self.stdlog.logger.output)
        [(_, _, flags)] = self.migrate_calls
        self.assertIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))


class PciPassthroughNoPostcopyTest(base.LiveMigExtTestBase):
    """A VF passed through by a flavor's PCI alias, live-migratable as Nova
    34 allows (``live_migratable`` in the device spec and the alias)."""

    LIVEMIG_OPTS = POSTCOPY_OPTS
    ADDITIONAL_FILTERS = ['NUMATopologyFilter', 'PciPassthroughFilter']
    ALIAS = 'vfs'

    def setUp(self):
        self.flags(group='pci', device_spec=[jsonutils.dumps({
            'vendor_id': fakelibvirt.PCI_VEND_ID,
            'product_id': fakelibvirt.VF_PROD_ID,
            'live_migratable': 'yes'})], alias=[jsonutils.dumps({
                'name': self.ALIAS,
                'vendor_id': fakelibvirt.PCI_VEND_ID,
                'product_id': fakelibvirt.VF_PROD_ID,
                'device_type': fields.PciDeviceType.SRIOV_VF,
                'live_migratable': 'yes'})])
        super().setUp()

    def start_compute(self, hostname='compute1', **kwargs):
        kwargs.setdefault('pci_info', fakelibvirt.HostPCIDevicesInfo(
            num_pfs=1, num_vfs=1, numa_node=0,
            bus=0x81 if hostname == 'src' else 0x82))
        return super().start_compute(hostname=hostname, **kwargs)

    def guest_xml(self, hostname, server):
        conn = self.computes[hostname].driver._host.get_connection()
        return conn.lookupByUUIDString(server['id']).XMLDesc(0)

    def test_no_postcopy_with_a_pci_device(self):
        flavor_id = self._create_flavor(vcpu=4, extra_spec={
            'pci_passthrough:alias': '%s:1' % self.ALIAS})
        server = self._create_server(host='src', flavor_id=flavor_id,
                                     networks='none')
        self.assertIn("<hostdev mode='subsystem' type='pci'",
                      self.guest_xml('src', server))
        self._live_migrate(server, 'completed')
        server = self.api.get_server(server['id'])
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        [(_, params, flags)] = self.migrate_calls
        self.assertNotIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))
        self.assertNotIn('bandwidth.postcopy', params)
        log = self.stdlog.logger.output
        self.assertIn('post-copy removed: the instance has PCI passthrough '
                      '(VFIO) devices', log)
        self.assertIn('ladder downtime,abort', log)

    def test_postcopy_armed_without_one_on_the_same_hosts(self):
        # The control: same hosts, same options, no device.
        server = self._create_server(host='src', networks='none')
        self._live_migrate(server, 'completed')
        [(_, _, flags)] = self.migrate_calls
        self.assertIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))
        self.assertNotIn('post-copy removed', self.stdlog.logger.output)


class OurDriverOnNovasTest(object):
    """Runs one of Nova's own libvirt functional tests with our driver on
    every compute and post-copy permitted, recording the migrate calls."""

    def setUp(self):
        self.flags(api_paste_config=base.API_PASTE, group='wsgi')
        self.livemig_ready = False
        self.migrate_calls = []
        super().setUp()

    def _setup_compute_service(self):
        self.flags(compute_driver=base.DRIVER)

    def start_compute(self, *args, **kwargs):
        if not self.livemig_ready:
            # After Nova's LibvirtFixture, before the first compute starts.
            self.livemig_ready = True
            self.flags(state_path=self.useFixture(fixtures.TempDir()).path)
            self.useFixture(lm_fixtures.ModernFakeLibvirt())
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.libvirt.Domain.state', base.fake_state))
            self.flags(group='livemig_ext', **POSTCOPY_OPTS)
        return super().start_compute(*args, **kwargs)

    def _migrate_stub(self, domain, destination, params, flags):
        self.migrate_calls.append((destination, dict(params), flags))
        return super()._migrate_stub(domain, destination, params, flags)

    def assert_no_postcopy(self, reason):
        [(_, _, flags)] = self.migrate_calls
        self.assertNotIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))
        self.assertIn('post-copy removed: %s' % reason,
                      self.stdlog.logger.output)


def only(cls, keep):
    """Hide every test ``cls`` inherits from Nova except ``keep``."""
    for name in dir(cls):
        if name.startswith('test_') and name not in keep:
            setattr(cls, name, None)
    return cls


class VgpuNoPostcopyTest(OurDriverOnNovasTest,
                         test_vgpu.VGPULiveMigrationTests):
    """Nova's own vGPU live-migration test, with our driver on both hosts.

    Nova moves the guest's mediated device to one reserved on the
    destination (``migrate_data.target_mdevs``); the guest's XML on the
    source has ``<hostdev type='mdev'>``. Either way post-copy stays off.
    """

    def test_live_migrate_server(self):
        super().test_live_migrate_server()
        [(_, params, _)] = self.migrate_calls
        self.assertEqual(1, devices.from_domain_xml(
            params['destination_xml']).mdevs)
        self.assert_no_postcopy('the instance has mediated devices (vGPU)')


only(VgpuNoPostcopyTest, ['test_live_migrate_server'])


class SriovPortNoPostcopyTest(OurDriverOnNovasTest,
                              test_pci_sriov_servers.SRIOVServersTest):
    """Nova's own SR-IOV port live migration (a VF and a PF port, detached
    before the migration and attached again on the destination), with our
    driver on both hosts."""

    def test_live_migrate_server_with_neutron(self):
        super().test_live_migrate_server_with_neutron()
        self.assert_no_postcopy('the instance has PCI passthrough')
        self.assertIn('SR-IOV or vDPA ports', self.stdlog.logger.output)


only(SriovPortNoPostcopyTest, ['test_live_migrate_server_with_neutron'])
