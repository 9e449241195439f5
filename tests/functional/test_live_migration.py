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
        self.assertEqual(50, params['auto_converge.initial'])
        self.assertEqual(20, params['auto_converge.increment'])
        self.assertIn('destination_xml', params)
