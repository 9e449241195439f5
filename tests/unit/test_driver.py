"""The driver inside Nova: loading, start-up checks, Nova's flag fields."""

import inspect

from nova import exception
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.virt import driver as virt_driver
from nova.virt import fake
from nova.virt.libvirt import driver as libvirt_driver

from nova_livemig_ext import driver as livemig_driver
from nova_livemig_ext import flags as lf
from nova_livemig_ext import policy as lp
from tests import fixtures as lm_fixtures

DRIVER = 'livemig_ext.LibvirtLiveMigExtDriver'
DOMAIN_XML = """<domain type='kvm'>
  <name>planned</name><uuid>6c0b1f2e-4e8a-4f0e-9d7e-1b2c3d4e5f60</uuid>
  <memory>524288</memory><vcpu>1</vcpu>
  <os><type>hvm</type></os>
</domain>"""


class DriverTestBase(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(lm_fixtures.ModernFakeLibvirt())
        if not hasattr(libvirt_driver.LibvirtDriver,
                       'process_instances_at_startup'):
            # Nova 31's init_host reads the host's instances from the
            # database (later releases do it after init_host): none here.
            self.useFixture(test.fixtures.MockPatchObject(
                libvirt_driver.LibvirtDriver,
                '_register_all_undefined_instance_details'))

    def load(self):
        return virt_driver.load_compute_driver(fake.FakeVirtAPI(), DRIVER)


class UnsupportedNovaTest(DriverTestBase):

    def test_init_host_refuses_an_unsupported_nova_first(self):
        nova_start = self.useFixture(test.fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, 'init_host')).mock
        running = self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.novacompat.installed_nova_version')).mock
        for version, words in (
                ('35.0.0', 'this is Nova 35.0.0, whose private live '
                 'migration methods it has not been tested against'),
                ('30.3.0', 'this is Nova 30.3.0: upgrade Nova')):
            running.return_value = version
            drvr = self.load()
            e = self.assertRaises(exception.InvalidConfiguration,
                                  drvr.init_host, 'dummyhost')
            self.assertIn('nova-livemig-ext supports Nova 31 (2025.1) to '
                          '34 (2026.2); ' + words, str(e))
            self.assertNotIn('\n', str(e))
            self.assertIn(words, self.stdlog.logger.output)
            # Refused before Nova's own start touched libvirt or a guest.
            nova_start.assert_not_called()
            self.assertIsNone(drvr.livemig_policy)

    def test_the_running_nova_is_accepted(self):
        drvr = self.load()
        drvr.init_host('dummyhost')
        self.assertIsNotNone(drvr.livemig_policy)


class LoadDriverTest(DriverTestBase):

    def test_compute_driver_line_loads_our_driver(self):
        self.flags(compute_driver=DRIVER)
        drvr = virt_driver.load_compute_driver(fake.FakeVirtAPI())
        self.assertIsInstance(drvr, livemig_driver.LibvirtLiveMigExtDriver)
        self.assertIsInstance(drvr, libvirt_driver.LibvirtDriver)

    def test_init_host_sets_nova_flag_fields_from_policy(self):
        self.flags(group='livemig_ext', bandwidth_mib_s=64,
                   permit_post_copy=True,
                   ladder=['downtime', 'postcopy', 'abort'])
        drvr = self.load()
        drvr.init_host('dummyhost')
        self.assertEqual(
            ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_PEER2PEER',
             'VIR_MIGRATE_PERSIST_DEST', 'VIR_MIGRATE_UNDEFINE_SOURCE',
             'VIR_MIGRATE_POSTCOPY'),
            lf.flag_names(drvr._live_migration_flags))
        self.assertEqual(
            drvr._live_migration_flags | lf.FLAG_VALUES[
                'VIR_MIGRATE_NON_SHARED_INC'],
            drvr._block_migration_flags)
        self.assertEqual(64, drvr.livemig_policy.bandwidth_mib_s)


# (options to set, options the message must name)
REFUSED_AT_START = [
    (dict(tunnelled=True, native_tls=True),
     ['[livemig_ext] tunnelled', '[livemig_ext] native_tls']),
    (dict(tunnelled=True, parallel_connections=4),
     ['[livemig_ext] tunnelled', '[livemig_ext] parallel_connections']),
    (dict(tunnelled=True, permit_post_copy=True),
     ['[livemig_ext] tunnelled', '[livemig_ext] permit_post_copy']),
    (dict(parallel_connections=4, permit_post_copy=True),
     ['[livemig_ext] permit_post_copy',
      '[livemig_ext] parallel_connections', 'QEMU 10.0.2 (needs 10.1.0)']),
    (dict(zero_copy=True),
     ['[livemig_ext] zero_copy', '[livemig_ext] parallel_connections']),
    (dict(compression='zstd'),
     ['[livemig_ext] compression', '[livemig_ext] parallel_connections']),
    (dict(compression='xbzrle', parallel_connections=2),
     ['[livemig_ext] compression', '[livemig_ext] parallel_connections']),
    (dict(ladder=['downtime', 'postcopy', 'abort']),
     ['[livemig_ext] ladder', '[livemig_ext] permit_post_copy']),
    (dict(ladder=['downtime', 'sideways']), ['[livemig_ext] ladder',
                                             'sideways']),
    (dict(ladder=['pause', 'pause', 'abort']), ['[livemig_ext] ladder',
                                                'more than once']),
    (dict(initial_downtime_ms=2000, max_downtime_ms=1000),
     ['[livemig_ext] initial_downtime_ms', '[livemig_ext] max_downtime_ms']),
    (dict(require_tls=True),
     ['[livemig_ext] require_tls', '[livemig_ext] native_tls']),
    (dict(compression='zlib', parallel_connections=2, compression_level=15),
     ['[livemig_ext] compression_level']),
]


class InitHostRefusesTest(DriverTestBase):

    def assert_refused(self, names):
        drvr = self.load()
        e = self.assertRaises(exception.InvalidConfiguration,
                              drvr.init_host, 'dummyhost')
        for name in names:
            self.assertIn(name, str(e))
        self.assertIn('refuses this configuration', str(e))
        self.assertIsNone(drvr.livemig_policy)

    def test_each_refused_combination(self):
        for options, names in REFUSED_AT_START:
            self.flags(group='livemig_ext', **options)
            self.assert_refused(names)
            for name in options:
                livemig_driver.CONF.clear_override(name, 'livemig_ext')

    def test_invalid_values_in_the_files_are_refused_typos_warned(self):
        self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.conf.unknown_options',
            return_value=['unknown option [livemig_ext] requires_tls in '
                          '/etc/nova/nova.conf is ignored (did you mean '
                          'require_tls?)']))
        self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.conf.invalid_values',
            side_effect=lambda conf, groups=('livemig_ext',), prefix='': (
                ['[livemig_ext] poll_interval_s = nan in /etc/nova/nova.conf'
                 ' is not a finite number'] if groups == ('livemig_ext',)
                else [])))
        self.assert_refused(['poll_interval_s = nan'])
        self.assertIn('did you mean require_tls?', self.stdlog.logger.output)

    def test_post_copy_without_userfaultfd(self):
        self.flags(group='livemig_ext', permit_post_copy=True)
        self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.hostfacts.userfaultfd_available',
            return_value=False))
        self.assert_refused(['[livemig_ext] permit_post_copy',
                             'userfaultfd'])

    def test_feature_the_running_libvirt_lacks(self):
        self.useFixture(lm_fixtures.ModernFakeLibvirt(
            libvirt_version=lf.version_int(9, 0)))
        self.flags(group='livemig_ext', compression='zstd',
                   parallel_connections=2)
        self.assert_refused(['[livemig_ext] compression',
                             'libvirt 9.0.0 (needs 9.4.0)'])

    def test_disagreeing_nova_option(self):
        self.flags(group='libvirt', live_migration_with_native_tls=True)
        self.flags(group='livemig_ext', native_tls=False)
        self.assert_refused(['[livemig_ext] native_tls',
                             '[libvirt] live_migration_with_native_tls'])


class PlannedDomainTest(DriverTestBase):
    """What Nova's Guest.migrate hands libvirt, for each class of policy."""

    HOST = lf.HostFacts(libvirt_version=lf.version_int(11, 3),
                        qemu_version=lf.version_int(10, 1),
                        userfaultfd=True)
    # (policy changes, instance, flags that must be set, params expected)
    CASES = [
        ({}, {}, ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_AUTO_CONVERGE'),
         {'bandwidth': 0, 'auto_converge.initial': 50,
          'auto_converge.increment': 20}),
        (dict(permit_post_copy=True, postcopy_bandwidth_mib_s=30,
              bandwidth_mib_s=100, ladder=('downtime', 'postcopy', 'abort')),
         {}, ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_POSTCOPY'),
         {'bandwidth': 100, 'bandwidth.postcopy': 30}),
        (dict(parallel_connections=4, compression='zstd',
              compression_level=5, ladder=('downtime', 'abort')), {},
         ('VIR_MIGRATE_PARALLEL', 'VIR_MIGRATE_COMPRESSED'),
         {'bandwidth': 0, 'parallel.connections': 4,
          'compression': 'zstd', 'compression.zstd.level': 5}),
        (dict(copy_mode='paused', ladder=('abort',)), {}, (),
         {'bandwidth': 0}),
        (dict(permit_post_copy=True, ladder=('downtime', 'postcopy',
                                             'abort')),
         dict(has_pci_passthrough=True), ('VIR_MIGRATE_LIVE',),
         {'bandwidth': 0}),
    ]

    def test_flags_and_params_reach_migrateToURI3(self):
        from nova.tests.fixtures import libvirt as fakelibvirt
        from nova.virt.libvirt import guest as libvirt_guest

        calls = []
        self.useFixture(test.fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            lambda dom, uri, params, flags: calls.append(
                (uri, params, flags))))
        conn = fakelibvirt.Connection('qemu:///system')
        dom = conn.createXML(DOMAIN_XML, 0)
        nova_flags = (lf.FLAG_VALUES['VIR_MIGRATE_LIVE']
                      | lf.FLAG_VALUES['VIR_MIGRATE_PEER2PEER']
                      | lf.FLAG_VALUES['VIR_MIGRATE_NON_SHARED_INC'])
        nova_parallel = {}
        if 'parallel' in inspect.signature(
                libvirt_guest.Guest.migrate).parameters:
            nova_parallel = {'parallel': 8}
        for changes, instance, must, params in self.CASES:
            plan = lf.plan_migration(
                lp.MigrationPolicy().replace(**changes), self.HOST,
                lf.InstanceFacts(**instance))
            guest = libvirt_guest.Guest(
                livemig_driver.PlannedDomain(dom, plan))
            # Nova's own call, as _live_migration_operation makes it
            # (Nova 33 and later pass [libvirt]'s parallel connections).
            guest.migrate('qemu+tcp://dest/system', flags=nova_flags,
                          migrate_uri='tcp://dest', bandwidth=0,
                          destination_xml='<domain/>', **nova_parallel)
            uri, sent, flags = calls.pop()
            self.assertEqual('qemu+tcp://dest/system', uri)
            for name in must:
                self.assertTrue(flags & lf.FLAG_VALUES[name], (changes, name))
            self.assertEqual(plan.flags, flags, changes)
            # Nova's own parameters stay; ours replace bandwidth/parallel.
            self.assertEqual('tcp://dest', sent['migrate_uri'])
            self.assertEqual('<domain/>', sent['destination_xml'])
            ours = {k: v for k, v in sent.items()
                    if k not in ('migrate_uri', 'destination_xml',
                                 'persistent_xml')}
            self.assertEqual(params, ours, changes)


class NovaOptionsAtStartTest(DriverTestBase):

    def test_nova_bandwidth_is_kept(self):
        # The case: [libvirt] live_migration_bandwidth = 100 was
        # replaced by our default of 0 (unlimited).
        self.flags(group='libvirt', live_migration_bandwidth=100)
        drvr = self.load()
        drvr.init_host('dummyhost')
        self.assertEqual(100, drvr.livemig_policy.bandwidth_mib_s)
        plan = drvr._livemig_plan(lf.InstanceFacts())
        self.assertEqual(100, plan.params['bandwidth'])

    def test_refusals_are_one_line(self):
        for group, options, names in [
                ('livemig_ext', dict(peer_to_peer=False),
                 ['[livemig_ext] peer_to_peer', "libvirt's QEMU driver"]),
                ('libvirt', dict(live_migration_downtime_delay=30),
                 ['[libvirt] live_migration_downtime_delay']),
                ('libvirt', dict(live_migration_permit_auto_converge=True),
                 None)]:
            self.flags(group=group, **options)
            if names is None:
                # Agrees with the default ladder: accepted.
                drvr = self.load()
                drvr.init_host('dummyhost')
                self.assertIn('auto_converge', drvr.livemig_policy.ladder)
            else:
                drvr = self.load()
                e = self.assertRaises(exception.InvalidConfiguration,
                                      drvr.init_host, 'dummyhost')
                self.assertNotIn('\n', str(e))
                for name in names:
                    self.assertIn(name, str(e))
            for name in options:
                livemig_driver.CONF.clear_override(name, group)


class InstanceFactsTest(test.NoDBTestCase):
    """Device facts from what Nova passes on the live-migration path."""

    def instance(self, **kw):
        from nova import context
        from nova import objects
        from nova.tests.unit import fake_instance

        flavor = objects.Flavor(memory_mb=2048, root_gb=10, ephemeral_gb=0,
                                extra_specs={})
        inst = fake_instance.fake_instance_obj(
            context.get_admin_context(), flavor=flavor, vm_state='active',
            **kw)
        inst.numa_topology = None
        return inst

    def test_guest_xml_and_migrate_data(self):
        from nova.network import model as network_model
        from nova import objects

        from tests.unit import test_devices as td

        inst = self.instance()
        self.assertFalse(inst.obj_attr_is_set('pci_devices'))
        cases = [
            (td.domain(), None, {}),
            (td.domain(td.PCI), None, dict(has_pci_passthrough=True)),
            (td.domain(td.MDEV), None, dict(has_mdev=True)),
            (td.domain(td.SRIOV), None, dict(has_sriov_port=True)),
            (td.domain(td.NVDIMM), None, dict(has_vpmem=True)),
            (None, None, dict(devices_unknown=True)),
            ('<not xml', None, dict(devices_unknown=True)),
            (td.domain(), objects.LibvirtLiveMigrateData(
                target_mdevs={'a': 'b'}), dict(has_mdev=True)),
            (td.domain(), objects.LibvirtLiveMigrateData(
                pci_dev_map_src_dst={'0000:81:00.1': '0000:82:00.1'}),
             dict(has_pci_passthrough=True)),
            (td.domain(), objects.LibvirtLiveMigrateData(vifs=[
                objects.VIFMigrateData(
                    port_id='p1', source_vif=network_model.VIF(
                        id='p1', vnic_type='direct'))]),
             dict(has_sriov_port=True)),
            (td.domain(), objects.LibvirtLiveMigrateData(vifs=[
                objects.VIFMigrateData(
                    port_id='p2', source_vif=network_model.VIF(
                        id='p2', vnic_type='normal'))]), {}),
        ]
        for xml, migrate_data, want in cases:
            facts = livemig_driver.instance_facts(
                inst, False, False, guest_xml=xml, migrate_data=migrate_data)
            expected = lf.InstanceFacts(memory_mib=2048, **want)
            self.assertEqual(expected, facts, (xml, migrate_data))


class DestinationCheckTest(DriverTestBase):

    def setUp(self):
        super().setUp()
        self.useFixture(test.fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver.'
            'check_can_live_migrate_destination', return_value='checked'))

    def instance(self):
        from nova import context
        from nova import objects
        from nova.tests.unit import fake_instance

        inst = fake_instance.fake_instance_obj(
            context.get_admin_context(), flavor=objects.Flavor(
                memory_mb=1024, root_gb=1, ephemeral_gb=0, extra_specs={}))
        inst.system_metadata = {}
        return inst

    def test_userfaultfd_gone_since_start_refuses_this_destination(self):
        self.flags(group='livemig_ext', permit_post_copy=True,
                   ladder=['downtime', 'postcopy', 'abort'])
        drvr = self.load()
        drvr.init_host('dest')
        self.assertEqual('checked', drvr.check_can_live_migrate_destination(
            None, self.instance(), {}, {}))
        self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.hostfacts.userfaultfd_available',
            return_value=False))
        e = self.assertRaises(exception.MigrationPreCheckError,
                              drvr.check_can_live_migrate_destination,
                              None, self.instance(), {}, {})
        self.assertIn('destination dest cannot receive', str(e))
        self.assertIn('userfaultfd', str(e))
        self.assertIn('userfaultfd became unavailable since nova-compute '
                      'started', self.stdlog.logger.output)

    def test_an_instance_without_post_copy_still_goes(self):
        self.flags(group='livemig_ext', permit_post_copy=True,
                   ladder=['downtime', 'postcopy', 'abort'])
        drvr = self.load()
        drvr.init_host('dest')
        self.useFixture(test.fixtures.MockPatch(
            'nova_livemig_ext.hostfacts.userfaultfd_available',
            return_value=False))
        instance = self.instance()
        instance.flavor.extra_specs = {
            'livemig_ext:permit_post_copy': 'false'}
        self.assertEqual('checked', drvr.check_can_live_migrate_destination(
            None, instance, {}, {}))

    def test_libvirt_downgraded_under_a_running_compute(self):
        self.flags(group='livemig_ext', parallel_connections=4,
                   compression='zstd')
        drvr = self.load()
        drvr.init_host('dest')
        self.useFixture(lm_fixtures.ModernFakeLibvirt(
            libvirt_version=lf.version_int(9, 0)))
        e = self.assertRaises(exception.MigrationPreCheckError,
                              drvr.check_can_live_migrate_destination,
                              None, self.instance(), {}, {})
        self.assertIn('libvirt 9.0.0 (needs 9.4.0)', str(e))
        self.assertIn('libvirt changed from 11.3.0 to 9.0.0',
                      self.stdlog.logger.output)


class FakeEventConnection:
    """Only what CompletedJobListener uses of a libvirt connection."""

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.registered = []
        self.deregistered = []

    def domainEventRegisterAny(self, dom, eventid, callback, opaque):
        if self.refuse:
            raise RuntimeError('no event loop')
        self.registered.append((dom, eventid, callback))
        return 7

    def domainEventDeregisterAny(self, callback_id):
        self.deregistered.append(callback_id)


class TestCompletedJobListener(test.NoDBTestCase):
    """The source's completed statistics arrive by event, not by lookup."""

    def test_statistics_from_the_event(self):
        import libvirt
        self.assertEqual(libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                         livemig_driver.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED)
        conn = FakeEventConnection()
        listener = livemig_driver.CompletedJobListener(lambda: conn, 'dom', None)
        [(dom, eventid, callback)] = conn.registered
        self.assertEqual(('dom', 21), (dom, eventid))
        callback(conn, 'dom', {'downtime': 412, 'memory_processed': 9}, None)
        self.assertEqual({'downtime': 412, 'memory_processed': 9},
                         listener.wait(0.0))
        listener.close()
        listener.close()
        self.assertEqual([7], conn.deregistered)

    def test_no_event_no_statistics(self):
        conn = FakeEventConnection()
        listener = livemig_driver.CompletedJobListener(lambda: conn, 'dom', None)
        self.assertIsNone(listener.wait(0.2))
        refused = livemig_driver.CompletedJobListener(
            lambda: FakeEventConnection(refuse=True), 'dom', None)
        self.assertIsNone(refused.wait(5.0))
        refused.close()

        def no_connection():
            raise RuntimeError('libvirtd restarting')

        unconnected = livemig_driver.CompletedJobListener(
            no_connection, 'dom', None)
        self.assertIsNone(unconnected.wait(5.0))
        unconnected.close()


class RestartRecoveryTest(DriverTestBase):
    """What the driver tells Nova's start-up and the operator."""

    def setUp(self):
        super().setUp()
        self.flags(state_path=self.useFixture(
            test.fixtures.TempDir()).path)
        self.drvr = self.load()
        self.drvr.init_host('src')

    def instance(self):
        from nova import context
        from nova.tests.unit import fake_instance
        return fake_instance.fake_instance_obj(
            context.get_admin_context(),
            uuid='6c0b1f2e-4e8a-4f0e-9d7e-1b2c3d4e5f60')

    def test_the_recover_command_is_quoted_for_a_shell(self):
        import shlex
        self.flags(config_file=['/etc/nova/nova.conf',
                                '/etc/nova/my conf.d/x.conf'])
        dest = 'qemu+ssh://dest/system?keyfile=/etc/k&no_tty=1'
        command = self.drvr._livemig_recover_command(
            self.instance(), 'dest',
            [dest, {'migrate_uri': 'tcp://192.0.2.9',
                    'listen_address': '192.0.2.9',
                    'destination_xml': '<domain/>'}, 1])
        self.assertEqual(
            ['nova-livemig-ext', 'recover', 'instance-00000001',
             '--from', 'qemu:///system', '--to', dest,
             '--migrate-uri', 'tcp://192.0.2.9',
             '--listen-address', '192.0.2.9',
             '--config-file', '/etc/nova/nova.conf',
             '--config-file', '/etc/nova/my conf.d/x.conf'],
            shlex.split(command))
        self.assertIn("'%s'" % dest, command)
        # Without the call: Nova's URI for the destination.
        self.flags(config_file=[])
        self.assertEqual(
            'nova-livemig-ext recover instance-00000001 --from '
            'qemu:///system --to qemu+tcp://dest/system',
            self.drvr._livemig_recover_command(self.instance(), 'dest',
                                               None))

    def test_the_fault_a_tenant_reads_names_no_host(self):
        needed = livemig_driver.PostcopyRecoveryNeeded(
            details='run on src-host: nova-livemig-ext recover ...')
        self.assertEqual('Live migration needs operator recovery',
                         needed.format_message())
        self.assertEqual('run on src-host: nova-livemig-ext recover ...',
                         needed.details)

    def test_a_guest_that_left_is_not_started_here(self):
        instance = self.instance()
        nova_resume = self.useFixture(test.fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, 'resume_state_on_host_boot')).mock
        self.drvr.livemig_moved[instance.uuid] = 'dest'
        self.assertIsNone(self.drvr.resume_state_on_host_boot(
            None, instance, [], None, None))
        nova_resume.assert_not_called()
        self.assertIn('not starting the guest on this host: its interrupted '
                      'live migration left it running on dest',
                      self.stdlog.logger.output)

        # Left by an earlier start that could not finish: the record, and
        # no domain here.
        self.drvr.livemig_moved.clear()
        self.drvr.livemig_records.write(instance.uuid, {'dest': 'dest2'})
        self.assertIsNone(self.drvr.resume_state_on_host_boot(
            None, instance, [], None, None))
        nova_resume.assert_not_called()
        self.assertIn('left it running on dest2', self.stdlog.logger.output)

        # No record: Nova's own behaviour.
        self.drvr.livemig_records.remove(instance.uuid)
        self.drvr.resume_state_on_host_boot(None, instance, [], None, None)
        nova_resume.assert_called_once_with(None, instance, [], None, None)

    def test_the_source_holds_the_guest_nova_decides(self):
        from unittest import mock
        from nova_livemig_ext import postcopy
        instance = self.instance()
        guest = mock.Mock()
        self.useFixture(test.fixtures.MockPatchObject(
            self.drvr._host, 'get_guest', return_value=guest))
        self.drvr.livemig_records.write(instance.uuid, {'dest': 'dest'})
        # Running here: Nova's start decides as usual.
        guest._domain.state.return_value = [postcopy.VIR_DOMAIN_RUNNING, 1]
        self.assertIsNone(self.drvr._livemig_guest_left(instance))
        # Shut off because it migrated, or half of a post-copy: the
        # destination may run it.
        for state in ([postcopy.VIR_DOMAIN_SHUTOFF,
                       postcopy.VIR_DOMAIN_SHUTOFF_MIGRATED],
                      [postcopy.VIR_DOMAIN_PAUSED,
                       postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED]):
            guest._domain.state.return_value = state
            self.assertEqual('dest', self.drvr._livemig_guest_left(instance))

    def test_startup_leaves_out_the_guests_that_left(self):
        from nova import context
        from nova import objects
        from nova.tests.unit import fake_instance
        ctxt = context.get_admin_context()
        stays, left = (fake_instance.fake_instance_obj(ctxt, uuid=u)
                       for u in ('11111111-2222-3333-4444-555555555555',
                                 '66666666-7777-8888-9999-000000000000'))
        self.drvr.livemig_moved[left.uuid] = 'dest'
        nova_hook = getattr(libvirt_driver.LibvirtDriver,
                            'process_instances_at_startup', None)
        if nova_hook is not None:
            self.useFixture(test.fixtures.MockPatchObject(
                libvirt_driver.LibvirtDriver, 'process_instances_at_startup',
                side_effect=lambda ctxt, instances: instances))
        seen = self.drvr.process_instances_at_startup(
            ctxt, objects.InstanceList(ctxt, objects=[stays, left]))
        self.assertEqual([stays.uuid], [i.uuid for i in seen])

    def test_nova_start_aborting_is_not_an_operator_abort(self):
        instance = self.instance()
        self.useFixture(test.fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, 'live_migration_abort'))
        self.drvr.live_migration_abort(instance)
        self.assertEqual(set(), self.drvr.livemig_operator_aborts)
        self.drvr.livemig_jobs[instance.uuid] = object()
        self.drvr.live_migration_abort(instance)
        self.assertEqual({instance.uuid}, self.drvr.livemig_operator_aborts)
