"""Policy building and the refusals that need no host."""

from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import novacompat
from nova_livemig_ext import policy as livemig_policy


def make_conf(test):
    import nova.conf.libvirt

    conf = cfg.ConfigOpts()
    nova.conf.libvirt.register_opts(conf)
    livemig_conf.register_opts(conf)
    fixture = test.useFixture(config_fixture.Config(conf))
    conf([], project='nova', default_config_files=[])
    return conf, fixture


class PolicyFromConfTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf, self.fixture = make_conf(self)

    def set(self, group='livemig_ext', **kw):
        self.fixture.config(group=group, **kw)

    def test_defaults_are_accepted(self):
        policy = livemig_policy.policy_from_conf(self.conf)
        self.assertEqual('live', policy.copy_mode)
        self.assertEqual(('downtime', 'auto_converge', 'abort'),
                         policy.ladder)
        self.assertEqual(300, policy.initial_downtime_ms)
        self.assertEqual(500, policy.max_downtime_ms)
        self.assertFalse(policy.tunnelled)
        self.assertEqual(1, policy.parallel_connections)

    def test_unset_transport_options_inherit_nova(self):
        self.set(group='libvirt', live_migration_with_native_tls=True)
        policy = livemig_policy.policy_from_conf(self.conf)
        self.assertTrue(policy.native_tls)

    def test_unset_parallel_connections_inherit_nova(self):
        if 'live_migration_parallel_connections' not in self.conf.libvirt:
            self.skipTest('this Nova has no [libvirt] '
                          'live_migration_parallel_connections (Nova 33+)')
        self.set(group='libvirt', live_migration_parallel_connections=4)
        policy = livemig_policy.policy_from_conf(self.conf)
        self.assertEqual(4, policy.parallel_connections)

    def test_own_parallel_connections_supersede_nova(self):
        self.set(parallel_connections=8)
        self.assertEqual(
            8, livemig_policy.policy_from_conf(self.conf)
            .parallel_connections)

    def test_disagreeing_tunnelled_is_refused(self):
        self.set(group='libvirt', live_migration_tunnelled=True)
        self.set(tunnelled=False)
        e = self.assertRaises(livemig_policy.InvalidPolicy,
                              livemig_policy.policy_from_conf, self.conf)
        self.assertIn('[livemig_ext] tunnelled', str(e))
        self.assertIn('[libvirt] live_migration_tunnelled', str(e))

    def test_upstream_mode_takes_nova_knobs(self):
        self.set(mode='upstream')
        self.set(group='libvirt', live_migration_downtime=800,
                 live_migration_downtime_steps=5,
                 live_migration_downtime_delay=30,
                 live_migration_completion_timeout=200,
                 live_migration_timeout_action='force_complete',
                 live_migration_permit_post_copy=True,
                 live_migration_bandwidth=50)
        policy = livemig_policy.policy_from_conf(self.conf)
        self.assertEqual(
            livemig_policy.UpstreamSettings(
                downtime_ms=800, downtime_steps=5,
                downtime_delay_s_per_gib=30,
                completion_timeout_s_per_gib=200,
                timeout_action='force_complete', permit_post_copy=True,
                permit_auto_converge=False, bandwidth_mib_s=50),
            policy.upstream)
        self.assertEqual((), policy.ladder)
        self.assertTrue(policy.permit_post_copy)
        self.assertEqual(50, policy.bandwidth_mib_s)

    def test_every_refusal_is_reported_at_once(self):
        self.set(ladder=['postcopy', 'sideways'], initial_downtime_ms=900)
        e = self.assertRaises(livemig_policy.InvalidPolicy,
                              livemig_policy.policy_from_conf, self.conf)
        self.assertEqual(3, len(e.refusals))


# (policy changes, options every refusal must name, text in the message)
REFUSED = [
    ('tunnelled with native TLS',
     dict(tunnelled=True, native_tls=True),
     ['[livemig_ext] tunnelled', '[livemig_ext] native_tls'], 'native TLS'),
    ('direct migration',
     dict(peer_to_peer=False),
     ['[livemig_ext] peer_to_peer'], "libvirt's QEMU driver"),
    ('tunnelled with parallel connections',
     dict(tunnelled=True, parallel_connections=4),
     ['[livemig_ext] tunnelled', '[livemig_ext] parallel_connections'],
     'parallel_connections = 1'),
    ('tunnelled with post-copy',
     dict(tunnelled=True, permit_post_copy=True),
     ['[livemig_ext] tunnelled', '[livemig_ext] permit_post_copy'],
     'post-copy'),
    ('TLS required but off',
     dict(require_tls=True),
     ['[livemig_ext] require_tls', '[livemig_ext] native_tls'],
     'native_tls = True'),
    ('zero-copy without parallel connections',
     dict(zero_copy=True),
     ['[livemig_ext] zero_copy', '[livemig_ext] parallel_connections'],
     'parallel_connections to 2'),
    ('zero-copy with compression',
     dict(zero_copy=True, parallel_connections=2, compression='zstd'),
     ['[livemig_ext] zero_copy', '[livemig_ext] compression'],
     'compression = none'),
    ('zero-copy with TLS',
     dict(zero_copy=True, parallel_connections=2, native_tls=True),
     ['[livemig_ext] zero_copy', '[livemig_ext] native_tls'], 'TLS'),
    ('xbzrle on parallel connections',
     dict(compression='xbzrle', parallel_connections=4),
     ['[livemig_ext] compression', '[livemig_ext] parallel_connections'],
     'single stream'),
    ('zstd on one connection',
     dict(compression='zstd'),
     ['[livemig_ext] compression', '[livemig_ext] parallel_connections'],
     'parallel connections'),
    ('zlib level above 9',
     dict(compression='zlib', parallel_connections=2, compression_level=12),
     ['[livemig_ext] compression_level'], '0 to 9'),
    ('level without a method that has one',
     dict(compression='xbzrle', compression_level=3),
     ['[livemig_ext] compression_level', '[livemig_ext] compression'],
     'Unset compression_level'),
    ('post-copy rung without post-copy permitted',
     dict(ladder=('downtime', 'postcopy', 'abort')),
     ['[livemig_ext] ladder', '[livemig_ext] permit_post_copy'],
     'permit_post_copy = True'),
    ('unknown rung',
     dict(ladder=('downtime', 'warp')),
     ['[livemig_ext] ladder'], 'warp'),
    ('repeated rung',
     dict(ladder=('downtime', 'downtime', 'abort')),
     ['[livemig_ext] ladder'], 'more than once'),
    ('rungs after abort',
     dict(ladder=('abort', 'pause')),
     ['[livemig_ext] ladder'], "Put 'abort' last"),
    ('initial downtime above the maximum',
     dict(initial_downtime_ms=800, max_downtime_ms=500),
     ['[livemig_ext] initial_downtime_ms', '[livemig_ext] max_downtime_ms'],
     '800 ms is above the maximum 500 ms'),
    ('post-copy bandwidth without post-copy',
     dict(postcopy_bandwidth_mib_s=100),
     ['[livemig_ext] postcopy_bandwidth_mib_s',
      '[livemig_ext] permit_post_copy'], 'permit_post_copy'),
    ('deadline cap below the switchover timeout',
     dict(completion_timeout_max_s=30, switchover_timeout_s=60),
     ['[livemig_ext] completion_timeout_max_s',
      '[livemig_ext] switchover_timeout_s'], 'Raise'),
    ('a stop ceiling below the downtime limit',
     dict(max_guest_stop_s=0.4, max_downtime_ms=500),
     ['[livemig_ext] max_guest_stop_s', '[livemig_ext] max_downtime_ms'],
     'beyond the 0.4 s the guest may be stopped'),
    ('a stop ceiling that is not a number',
     dict(max_guest_stop_s=float('nan')),
     ['[livemig_ext] max_guest_stop_s'], 'positive finite'),

]


class PolicyRefusalsTest(testtools.TestCase):

    def test_refusals(self):
        for name, changes, options, text in REFUSED:
            policy = livemig_policy.MigrationPolicy().replace(**changes)
            refusals = livemig_policy.policy_refusals(policy)
            self.assertEqual(1, len(refusals), '%s: %s' % (name, refusals))
            self.assertEqual(tuple(options), refusals[0].options, name)
            self.assertIn(text, str(refusals[0]), name)

    def test_poll_interval_must_be_a_positive_finite_number(self):
        for value in (float('nan'), float('inf'), -1.0, 0.0):
            refusals = livemig_policy.policy_refusals(
                livemig_policy.MigrationPolicy().replace(
                    poll_interval_s=value))
            self.assertEqual([('[livemig_ext] poll_interval_s',)],
                             [r.options for r in refusals], value)

    def test_sound_policies_pass(self):
        for changes in [
                {},
                dict(permit_post_copy=True,
                     ladder=('downtime', 'postcopy', 'abort')),
                dict(parallel_connections=4, compression='zstd',
                     compression_level=3),
                dict(parallel_connections=4, zero_copy=True),
                dict(native_tls=True, require_tls=True),
                dict(tunnelled=True, compression='xbzrle'),
                dict(copy_mode='paused'),
                dict(ladder=()),
        ]:
            self.assertEqual(
                [], livemig_policy.policy_refusals(
                    livemig_policy.MigrationPolicy().replace(**changes)),
                changes)

    def test_options_out_of_range_fail_on_parse(self):
        # Absurd numbers never reach the policy: oslo.config's bounds.
        import nova.conf.libvirt

        conf = cfg.ConfigOpts()
        nova.conf.libvirt.register_opts(conf)
        livemig_conf.register_opts(conf)
        fixture = self.useFixture(config_fixture.Config(conf))
        for name, value in [('max_downtime_ms', -1),
                            ('bandwidth_mib_s', -5),
                            ('auto_converge_initial_pct', 150),
                            ('parallel_connections', 0),
                            ('poll_interval_s', 0.0)]:
            self.assertRaises(ValueError, fixture.config,
                              group='livemig_ext', **{name: value})


# ([libvirt] options set by the operator, [livemig_ext] options, expected
# policy fields): Nova's options are inherited when ours are unset.
INHERITED = [
    ('the issue: bandwidth 100 is kept, not replaced by our 0',
     dict(live_migration_bandwidth=100), {}, dict(bandwidth_mib_s=100)),
    ('nothing set: our defaults',
     {}, {}, dict(bandwidth_mib_s=0, max_downtime_ms=500,
                  initial_downtime_ms=300, downtime_steps=3,
                  completion_timeout_s_per_gib=0, permit_post_copy=False,
                  ladder=('downtime', 'auto_converge', 'abort'))),
    ('ours alone', {}, dict(bandwidth_mib_s=50), dict(bandwidth_mib_s=50)),
    ('both, the same', dict(live_migration_bandwidth=50),
     dict(bandwidth_mib_s=50), dict(bandwidth_mib_s=50)),
    ('downtime ceiling', dict(live_migration_downtime=800), {},
     dict(max_downtime_ms=800, initial_downtime_ms=300)),
    ('a low ceiling lowers the start', dict(live_migration_downtime=200), {},
     dict(max_downtime_ms=200, initial_downtime_ms=200)),
    ('downtime steps', dict(live_migration_downtime_steps=5), {},
     dict(downtime_steps=5)),
    ('parallel connections', dict(live_migration_parallel_connections=4), {},
     dict(parallel_connections=4)),
    ('completion timeout, same unit',
     dict(live_migration_completion_timeout=300), {},
     dict(completion_timeout_s_per_gib=300)),
    ('post-copy permitted: used by the ladder and force-complete',
     dict(live_migration_permit_post_copy=True), {},
     dict(permit_post_copy=True,
          ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))),
    ('auto-converge not permitted',
     dict(live_migration_permit_auto_converge=False), {},
     dict(ladder=('downtime', 'abort'))),
    ('timeout action force_complete without post-copy: pause',
     dict(live_migration_timeout_action='force_complete'), {},
     dict(ladder=('downtime', 'auto_converge', 'pause', 'abort'))),
    ('timeout action abort', dict(live_migration_timeout_action='abort'),
     {}, dict(ladder=('downtime', 'auto_converge', 'abort'))),
    ('a stop ceiling adds a pause within it',
     {}, dict(max_guest_stop_s=10.0),
     dict(max_guest_stop_s=10.0,
          ladder=('downtime', 'auto_converge', 'pause', 'abort'))),
    ('a stop ceiling with post-copy permitted',
     dict(live_migration_permit_post_copy=True), dict(max_guest_stop_s=5.0),
     dict(ladder=('downtime', 'auto_converge', 'postcopy', 'pause',
                  'abort'))),
    ('a stop ceiling leaves a ladder set by the operator alone',
     {}, dict(max_guest_stop_s=5.0, ladder=['downtime', 'abort']),
     dict(ladder=('downtime', 'abort'))),
    ('a ladder that agrees with Nova',
     dict(live_migration_permit_auto_converge=True,
          live_migration_timeout_action='force_complete'),
     dict(ladder=['auto_converge', 'pause', 'abort']),
     dict(ladder=('auto_converge', 'pause', 'abort'))),
]

# ([libvirt] options, [livemig_ext] options, options the refusal names)
CONFLICTS = [
    (dict(live_migration_bandwidth=100), dict(bandwidth_mib_s=0),
     ['[livemig_ext] bandwidth_mib_s', '[libvirt] live_migration_bandwidth']),
    (dict(live_migration_downtime=800), dict(max_downtime_ms=500),
     ['[livemig_ext] max_downtime_ms', '[libvirt] live_migration_downtime']),
    (dict(live_migration_downtime_steps=5), dict(downtime_steps=3),
     ['[livemig_ext] downtime_steps',
      '[libvirt] live_migration_downtime_steps']),
    (dict(live_migration_parallel_connections=4),
     dict(parallel_connections=8),
     ['[livemig_ext] parallel_connections',
      '[libvirt] live_migration_parallel_connections']),
    (dict(live_migration_completion_timeout=800),
     dict(completion_timeout_s_per_gib=120),
     ['[livemig_ext] completion_timeout_s_per_gib',
      '[libvirt] live_migration_completion_timeout']),
    (dict(live_migration_completion_timeout=0), {},
     ['[libvirt] live_migration_completion_timeout']),
    (dict(live_migration_permit_post_copy=True),
     dict(permit_post_copy=False),
     ['[livemig_ext] permit_post_copy',
      '[libvirt] live_migration_permit_post_copy']),
    (dict(live_migration_permit_auto_converge=False),
     dict(ladder=['downtime', 'auto_converge', 'abort']),
     ['[livemig_ext] ladder',
      '[libvirt] live_migration_permit_auto_converge']),
    (dict(live_migration_permit_auto_converge=True),
     dict(ladder=['downtime', 'abort']),
     ['[livemig_ext] ladder',
      '[libvirt] live_migration_permit_auto_converge']),
    (dict(live_migration_timeout_action='force_complete'),
     dict(ladder=['downtime', 'abort']),
     ['[livemig_ext] ladder', '[libvirt] live_migration_timeout_action']),
    (dict(live_migration_downtime_delay=30), {},
     ['[libvirt] live_migration_downtime_delay']),
    (dict(live_migration_bandwidth=-5), {},
     ['[libvirt] live_migration_bandwidth']),
    (dict(live_migration_downtime=90000), {},
     ['[libvirt] live_migration_downtime']),
    (dict(live_migration_parallel_connections=0), {},
     ['[libvirt] live_migration_parallel_connections']),
]


class NovaOptionsTest(testtools.TestCase):
    """Every ``[libvirt] live_migration_*`` option: honoured, inherited or
    refused, never silently overridden."""

    def policy(self, nova, own):
        # Option groups are shared between ConfigOpts objects (oslo copies
        # them shallowly): clear each case's overrides before the next.
        conf, fixture = make_conf(self)
        try:
            if nova:
                fixture.config(group='libvirt', **nova)
            if own:
                fixture.config(group='livemig_ext', **own)
            return livemig_policy.policy_from_conf(conf)
        finally:
            for group, names in (('libvirt', nova), ('livemig_ext', own)):
                for name in names:
                    conf.clear_override(name, group)

    def cases(self, table, nova_of):
        """The cases of ``table`` that use none of the ``[libvirt]`` options
        older Nova lacks."""
        newer = set(novacompat.LIBVIRT_OPTIONS_SINCE)
        return [c for c in table if not newer & set(nova_of(c))]

    def newer_cases(self, table, nova_of):
        """The other cases: those this Nova has the options for, and why
        the rest cannot run here (None when all can)."""
        newer = set(novacompat.LIBVIRT_OPTIONS_SINCE)
        libvirt = make_conf(self)[0].libvirt
        cases = [c for c in table if newer & set(nova_of(c))]
        self.assertNotEqual([], cases)
        here = [c for c in cases
                if all(n in libvirt for n in newer & set(nova_of(c)))]
        missing = sorted(n for n in newer if n not in libvirt)
        why = None
        if len(here) < len(cases):
            why = ('this Nova lacks [libvirt] %s (added later): %d of %d '
                   'case(s) not run' % (', '.join(missing),
                                        len(cases) - len(here), len(cases)))
        return here, why

    def test_inherited(self):
        self.check_inherited(self.cases(INHERITED, lambda c: c[1]))

    def test_inherited_options_of_newer_nova(self):
        cases, why = self.newer_cases(INHERITED, lambda c: c[1])
        self.check_inherited(cases)
        if why:
            self.skipTest(why)

    def check_inherited(self, cases):
        for name, nova, own, want in cases:
            policy = self.policy(nova, own)
            for field, value in want.items():
                self.assertEqual(value, getattr(policy, field),
                                 '%s: %s' % (name, field))

    def test_conflicts_are_refused_naming_both(self):
        self.check_conflicts(self.cases(CONFLICTS, lambda c: c[0]))

    def test_conflicts_of_newer_nova_options(self):
        cases, why = self.newer_cases(CONFLICTS, lambda c: c[0])
        self.check_conflicts(cases)
        if why:
            self.skipTest(why)

    def check_conflicts(self, cases):
        for nova, own, names in cases:
            e = self.assertRaises(livemig_policy.InvalidPolicy, self.policy,
                                  nova, own)
            self.assertEqual(1, len(e.refusals), (nova, own, e.refusals))
            self.assertEqual(tuple(names), e.refusals[0].options,
                             (nova, own))
            self.assertNotIn('\n', e.one_line())
            self.assertIn('refuses this configuration', e.one_line())

    def test_upstream_mode_uses_nova_options_without_conflicts(self):
        policy = self.policy(dict(live_migration_bandwidth=100,
                                  live_migration_downtime_delay=30),
                             dict(mode='upstream', bandwidth_mib_s=10))
        self.assertEqual(100, policy.bandwidth_mib_s)
        self.assertEqual(30, policy.upstream.downtime_delay_s_per_gib)

    def test_every_nova_live_migration_option_is_classified(self):
        import nova.conf.libvirt

        nova_names = {o.name for o in nova.conf.libvirt.ALL_OPTS
                      if o.name.startswith('live_migration')}
        # Those of a later Nova than this one are classified too.
        later = set(novacompat.LIBVIRT_OPTIONS_SINCE) - nova_names
        self.assertEqual(nova_names | later,
                         set(livemig_policy.NOVA_LIVE_MIGRATION_OPTIONS))

    def test_an_option_at_its_default_in_a_file_is_set(self):
        # Written in a file, Nova's default value still is an operator's
        # choice: ours must agree with it.
        import os
        import tempfile

        import nova.conf.libvirt

        with tempfile.NamedTemporaryFile('w', suffix='.conf',
                                         delete=False) as f:
            f.write('[libvirt]\nlive_migration_bandwidth = 0\n'
                    '[livemig_ext]\nbandwidth_mib_s = 100\n')
        self.addCleanup(os.unlink, f.name)
        conf = cfg.ConfigOpts()
        nova.conf.libvirt.register_opts(conf)
        livemig_conf.register_opts(conf)
        conf(['--config-file', f.name], default_config_files=[])
        self.assertTrue(livemig_policy.nova_option_set(
            conf, 'live_migration_bandwidth'))
        self.assertFalse(livemig_policy.nova_option_set(
            conf, 'live_migration_downtime'))
        e = self.assertRaises(livemig_policy.InvalidPolicy,
                              livemig_policy.policy_from_conf, conf)
        self.assertIn('[libvirt] live_migration_bandwidth', str(e))
