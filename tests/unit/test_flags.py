"""Flags and parameters for each class of policy, host and instance."""

import libvirt
import testtools

from nova_livemig_ext import flags as lf
from nova_livemig_ext import policy as lp

HOST = lf.HostFacts(libvirt_version=lf.version_int(11, 3),
                    qemu_version=lf.version_int(10, 0, 2), userfaultfd=True,
                    binding_names=frozenset(n for n in dir(libvirt)
                                            if n.startswith('VIR_MIGRATE_')))
BASE = ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_PEER2PEER',
        'VIR_MIGRATE_PERSIST_DEST', 'VIR_MIGRATE_UNDEFINE_SOURCE')
AC_PARAMS = {'auto_converge.initial': 50, 'auto_converge.increment': 20}
NO_AC = dict(ladder=('downtime', 'abort'))
PC = dict(permit_post_copy=True, ladder=('downtime', 'postcopy', 'abort'))

# (name, policy changes, instance facts, extra flag names, params)
PLANS = [
    ('defaults', {}, {}, ('VIR_MIGRATE_AUTO_CONVERGE',),
     dict(bandwidth=0, **AC_PARAMS)),
    ('no auto-converge rung', NO_AC, {}, (), dict(bandwidth=0)),
    ('paused copy drops LIVE', dict(copy_mode='paused', **NO_AC), {}, (),
     dict(bandwidth=0)),
    ('managed direct', dict(peer_to_peer=False, **NO_AC), {}, (),
     dict(bandwidth=0)),
    ('bandwidth', dict(bandwidth_mib_s=125, **NO_AC), {}, (),
     dict(bandwidth=125)),
    ('tunnelled', dict(tunnelled=True, **NO_AC), {},
     ('VIR_MIGRATE_TUNNELLED',), dict(bandwidth=0)),
    ('native TLS', dict(native_tls=True, **NO_AC), {}, ('VIR_MIGRATE_TLS',),
     dict(bandwidth=0)),
    ('block migration', NO_AC, dict(block_migration=True),
     ('VIR_MIGRATE_NON_SHARED_INC',), dict(bandwidth=0)),
    ('post-copy armed', dict(postcopy_bandwidth_mib_s=40, **PC), {},
     ('VIR_MIGRATE_POSTCOPY',),
     {'bandwidth': 0, 'bandwidth.postcopy': 40}),
    ('auto-converge settings', dict(auto_converge_initial_pct=5,
                                    auto_converge_increment_pct=5), {},
     ('VIR_MIGRATE_AUTO_CONVERGE',),
     {'bandwidth': 0, 'auto_converge.initial': 5,
      'auto_converge.increment': 5}),
    ('parallel', dict(parallel_connections=4, **NO_AC), {},
     ('VIR_MIGRATE_PARALLEL',),
     {'bandwidth': 0, 'parallel.connections': 4}),
    ('parallel zero-copy', dict(parallel_connections=2, zero_copy=True,
                                **NO_AC), {},
     ('VIR_MIGRATE_PARALLEL', 'VIR_MIGRATE_ZEROCOPY'),
     {'bandwidth': 0, 'parallel.connections': 2}),
    ('zstd', dict(parallel_connections=2, compression='zstd',
                  compression_level=7, **NO_AC), {},
     ('VIR_MIGRATE_PARALLEL', 'VIR_MIGRATE_COMPRESSED'),
     {'bandwidth': 0, 'parallel.connections': 2, 'compression': 'zstd',
      'compression.zstd.level': 7}),
    ('zlib', dict(parallel_connections=2, compression='zlib',
                  compression_level=1, **NO_AC), {},
     ('VIR_MIGRATE_PARALLEL', 'VIR_MIGRATE_COMPRESSED'),
     {'bandwidth': 0, 'parallel.connections': 2, 'compression': 'zlib',
      'compression.zlib.level': 1}),
    ('xbzrle', dict(compression='xbzrle', **NO_AC), {},
     ('VIR_MIGRATE_COMPRESSED',), {'bandwidth': 0, 'compression': 'xbzrle'}),
    ('paused instance loses post-copy', PC, dict(paused=True), (),
     dict(bandwidth=0)),
    ('vPMEM loses post-copy', PC, dict(has_vpmem=True), (),
     dict(bandwidth=0)),
    ('VFIO loses post-copy', PC, dict(has_pci_passthrough=True), (),
     dict(bandwidth=0)),
    ('1G huge pages lose post-copy', PC,
     dict(hugepage_size_kib=1048576), (), dict(bandwidth=0)),
    ('2M huge pages keep post-copy', PC, dict(hugepage_size_kib=2048),
     ('VIR_MIGRATE_POSTCOPY',), dict(bandwidth=0)),
    ('upstream: post-copy wins over auto-converge',
     dict(mode='upstream', ladder=(), permit_post_copy=True,
          upstream=lp.UpstreamSettings(permit_post_copy=True,
                                       permit_auto_converge=True)), {},
     ('VIR_MIGRATE_POSTCOPY',), dict(bandwidth=0)),
    ('upstream: auto-converge without settings',
     dict(mode='upstream', ladder=(),
          upstream=lp.UpstreamSettings(permit_auto_converge=True)), {},
     ('VIR_MIGRATE_AUTO_CONVERGE',), dict(bandwidth=0)),
]


class PlanMigrationTest(testtools.TestCase):

    def test_plans(self):
        for name, changes, instance, extra, params in PLANS:
            policy = lp.MigrationPolicy().replace(**changes)
            plan = lf.plan_migration(policy, HOST,
                                     lf.InstanceFacts(**instance))
            want = set(extra) | set(BASE)
            if policy.copy_mode == 'paused':
                want.discard('VIR_MIGRATE_LIVE')
            if not policy.peer_to_peer:
                want.discard('VIR_MIGRATE_PEER2PEER')
            self.assertEqual(sorted(want), sorted(plan.flag_names), name)
            self.assertEqual(params, dict(plan.params), name)
            # The integer is what libvirt gets: check it against the binding.
            self.assertEqual(
                sum(getattr(libvirt, n) for n in plan.flag_names),
                plan.flags, name)

    def test_live_is_never_dropped_unless_paused_by_name(self):
        for _, changes, instance, _, _ in PLANS:
            policy = lp.MigrationPolicy().replace(**changes)
            plan = lf.plan_migration(policy, HOST,
                                     lf.InstanceFacts(**instance))
            self.assertEqual(policy.copy_mode == 'live',
                             bool(plan.flags & libvirt.VIR_MIGRATE_LIVE))

    def test_flag_values_match_libvirt(self):
        for name, value in lf.FLAG_VALUES.items():
            self.assertEqual(getattr(libvirt, name), value, name)

    def test_param_names_match_libvirt(self):
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY,
                         lf.PARAM_BANDWIDTH_POSTCOPY)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL,
                         lf.PARAM_AUTO_CONVERGE_INITIAL)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT,
                         lf.PARAM_AUTO_CONVERGE_INCREMENT)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
                         lf.PARAM_PARALLEL_CONNECTIONS)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_COMPRESSION,
                         lf.PARAM_COMPRESSION)
        self.assertEqual(
            {'zlib': libvirt.VIR_MIGRATE_PARAM_COMPRESSION_ZLIB_LEVEL,
             'zstd': libvirt.VIR_MIGRATE_PARAM_COMPRESSION_ZSTD_LEVEL},
            lf.PARAM_COMPRESSION_LEVEL)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_URI, lf.PARAM_URI)
        self.assertEqual(libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS,
                         lf.PARAM_LISTEN_ADDRESS)

    def test_instance_facts_leave_notes_and_shorten_the_ladder(self):
        policy = lp.MigrationPolicy().replace(
            permit_post_copy=True, ladder=('downtime', 'postcopy', 'pause',
                                           'abort'))
        plan = lf.plan_migration(policy, HOST, lf.InstanceFacts(
            paused=True, has_pci_passthrough=True))
        self.assertEqual(('downtime', 'abort'), plan.ladder)
        self.assertFalse(plan.postcopy_armed)
        self.assertEqual(2, len(plan.notes))
        self.assertIn('paused', plan.notes[0])
        self.assertIn('VFIO', plan.notes[0])

    def test_every_device_fact_keeps_post_copy_off(self):
        policy = lp.MigrationPolicy().replace(
            permit_post_copy=True, ladder=('downtime', 'postcopy', 'abort'))
        for fact, text in [('has_pci_passthrough', 'PCI passthrough'),
                           ('has_sriov_port', 'SR-IOV'),
                           ('has_mdev', 'vGPU'),
                           ('has_vpmem', 'vPMEM'),
                           ('devices_unknown', 'could not be read')]:
            plan = lf.plan_migration(policy, HOST,
                                     lf.InstanceFacts(**{fact: True}))
            self.assertFalse(plan.postcopy_armed, fact)
            self.assertFalse(plan.flags & lf.FLAG_VALUES[
                'VIR_MIGRATE_POSTCOPY'], fact)
            self.assertEqual(('downtime', 'abort'), plan.ladder, fact)
            [note] = plan.notes
            self.assertIn(text, note, fact)
        plan = lf.plan_migration(policy, HOST, lf.InstanceFacts())
        self.assertTrue(plan.postcopy_armed)

    def test_paused_copy_keeps_only_abort(self):
        plan = lf.plan_migration(
            lp.MigrationPolicy().replace(copy_mode='paused'), HOST,
            lf.InstanceFacts())
        self.assertEqual(('abort',), plan.ladder)
        self.assertFalse(plan.auto_converge_armed)


OLD = lf.version_int(8, 0)


class HostRefusalsTest(testtools.TestCase):

    # (policy changes, host changes, options named, text)
    CASES = [
        (dict(parallel_connections=2, compression='zstd'),
         dict(libvirt_version=lf.version_int(9, 0)),
         ('[livemig_ext] compression',), 'libvirt 9.0.0 (needs 9.4.0)'),
        (dict(parallel_connections=2, zero_copy=True),
         dict(qemu_version=lf.version_int(7, 0)),
         ('[livemig_ext] zero_copy',), 'QEMU 7.0.0 (needs 7.1.0)'),
        (dict(parallel_connections=2, permit_post_copy=True),
         dict(), ('[livemig_ext] permit_post_copy',
                  '[livemig_ext] parallel_connections'),
         'QEMU 10.0.2 (needs 10.1.0)'),
        (dict(permit_post_copy=True), dict(userfaultfd=False),
         ('[livemig_ext] permit_post_copy',), 'userfaultfd'),
        (dict(parallel_connections=2, **NO_AC),
         dict(binding_names=frozenset({'VIR_MIGRATE_LIVE'})),
         ('[livemig_ext] parallel_connections',),
         'libvirt-python lacks VIR_MIGRATE_PARALLEL'),
    ]

    def test_refusals(self):
        for changes, host_changes, options, text in self.CASES:
            policy = lp.MigrationPolicy().replace(**changes)
            host = HOST.__class__(**{**HOST.__dict__, **host_changes})
            refusals = lf.host_refusals(policy, host)
            self.assertEqual(1, len(refusals), (changes, refusals))
            self.assertEqual(options, refusals[0].options)
            self.assertIn(text, str(refusals[0]))
            self.assertRaises(lp.InvalidPolicy, lf.check_policy, policy,
                              host)

    def test_supported_features_pass(self):
        policy = lp.MigrationPolicy().replace(
            parallel_connections=4, compression='zstd', native_tls=True,
            permit_post_copy=False, ladder=('downtime', 'auto_converge',
                                            'abort'))
        self.assertEqual([], lf.host_refusals(policy, HOST))
        lf.check_policy(policy, HOST)

    def test_versions(self):
        self.assertEqual(11003000, lf.version_int(11, 3))
        self.assertEqual('10.0.2', lf.version_str(10000002))
