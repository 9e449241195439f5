"""Live migrations through Nova's API with our driver on both computes."""

from nova_livemig_ext import flags as lf
from tests.functional import base


class LiveMigrationTest(base.LiveMigExtTestBase):

    LIVEMIG_OPTS = dict(bandwidth_mib_s=80, permit_post_copy=True,
                        postcopy_bandwidth_mib_s=200,
                        ladder=['downtime', 'auto_converge', 'postcopy',
                                'abort'])

    def test_migration_completes_with_our_flags_and_params(self):
        server = self._create_server(host='src', networks='none')
        self._live_migrate(server, 'completed')
        server = self.api.get_server(server['id'])
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('ACTIVE', server['status'])
        [(uri, params, flags)] = self.migrate_calls
        self.assertEqual(
            ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_PEER2PEER',
             'VIR_MIGRATE_PERSIST_DEST', 'VIR_MIGRATE_UNDEFINE_SOURCE',
             'VIR_MIGRATE_AUTO_CONVERGE', 'VIR_MIGRATE_POSTCOPY'),
            lf.flag_names(flags))
        self.assertEqual(80, params['bandwidth'])
        self.assertEqual(200, params['bandwidth.postcopy'])
        self.assertEqual(20, params['auto_converge.initial'])
        self.assertEqual(10, params['auto_converge.increment'])
        self.assertIn('destination_xml', params)


class InstanceKeysRefusedTest(base.LiveMigExtTestBase):

    def test_bad_flavor_extra_spec_refuses_before_the_job(self):
        flavor_id = self._create_flavor(extra_spec={
            'livemig_ext:max_downtime_ms': 'soon'})
        server = self._create_server(host='src', flavor_id=flavor_id,
                                     networks='none')
        # CastAsCallFixture makes the conductor's pre-check failure surface
        # as a 500 here; in a deployment the call returns 202 and the
        # migration record goes to 'error'. Either way nothing started.
        self.api.api_post(
            '/servers/%s/action' % server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}},
            check_response_status=[500])
        self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_migration_status(server, ['error'])
        server = self.api.get_server(server['id'])
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual([], self.migrate_calls)
        self.assertIn('livemig_ext:max_downtime_ms',
                      self.stdlog.logger.output)
