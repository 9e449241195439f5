"""Option definitions and the sample config the generator prints."""

import os
import subprocess
import sys
import tempfile

from oslo_config import cfg
import testtools

from nova_livemig_ext import conf as livemig_conf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class OptionsTest(testtools.TestCase):

    def test_every_option_documents_itself(self):
        for opt in livemig_conf.ALL_OPTS:
            self.assertIn('Possible values', opt.help, opt.name)
            if opt.name not in ('poll_interval_s', 'switchover_timeout_s',
                                'mode', 'copy_mode'):
                self.assertIn('Related options', opt.help, opt.name)

    def test_units_are_in_the_names(self):
        for opt in livemig_conf.ALL_OPTS:
            unitless = ('parallel_connections', 'compression_level',
                        'downtime_steps', 'stall_passes')
            if (isinstance(opt, (cfg.IntOpt, cfg.FloatOpt))
                    and opt.name not in unitless):
                self.assertRegex(opt.name, r'_(ms|s|pct|mib_s|per_gib|multiple)$')

    def test_register_is_idempotent_and_lists_everything(self):
        conf = cfg.ConfigOpts()
        livemig_conf.register_opts(conf)
        livemig_conf.register_opts(conf)
        [(group, opts)] = livemig_conf.list_opts()
        self.assertEqual('livemig_ext', group.name)
        self.assertEqual({o.name for o in opts},
                         set(conf.livemig_ext.keys()))

    def test_generator_prints_every_option(self):
        gen = os.path.join(os.path.dirname(sys.executable),
                           'oslo-config-generator')
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'sample.conf')
            subprocess.run([gen, '--namespace', 'nova_livemig_ext',
                            '--output-file', out], check=True)
            with open(out) as f:
                sample = f.read()
        self.assertIn('[livemig_ext]', sample)
        for opt in livemig_conf.ALL_OPTS:
            self.assertIn('#%s = ' % opt.name, sample)


class FiniteFloatTest(testtools.TestCase):

    def test_nan_and_infinities_are_refused_at_parse(self):
        kind = livemig_conf.FiniteFloat(min=0.1, max=10.0)
        self.assertEqual(0.5, kind('0.5'))
        for text in ('nan', 'NaN', '-nan', 'inf', '-inf', '1e400', '0', '11'):
            self.assertRaises(ValueError, kind, text)

    def test_poll_interval_uses_it_and_stays_a_float_opt(self):
        [opt] = [o for o in livemig_conf.ALL_OPTS
                 if o.name == 'poll_interval_s']
        # A FloatOpt for the docs and the sample config; the finite type
        # for the values.
        self.assertIs(cfg.FloatOpt, type(opt))
        self.assertIsInstance(opt.type, livemig_conf.FiniteFloat)
        self.assertEqual((0.1, 10.0), (opt.type.min, opt.type.max))
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write('[livemig_ext]\npoll_interval_s = nan\n')
            f.flush()
            conf = cfg.ConfigOpts()
            livemig_conf.register_opts(conf)
            conf(args=['--config-file', f.name], default_config_files=[])
            self.assertRaises(cfg.ConfigFileValueError, getattr,
                              conf.livemig_ext, 'poll_interval_s')
            [problem] = livemig_conf.invalid_values(conf)
        self.assertIn("poll_interval_s = 'nan' in %s" % f.name, problem)
        self.assertIn('not a finite number', problem)


def load(text, register_libvirt=True):
    """A ConfigOpts with our options (and Nova's [libvirt] ones) read from
    ``text``; the file is removed when the test ends."""
    import nova.conf.libvirt

    f = tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False)
    with f:
        f.write(text)
    conf = cfg.ConfigOpts()
    if register_libvirt:
        nova.conf.libvirt.register_opts(conf)
    livemig_conf.register_opts(conf)
    conf(args=['--config-file', f.name], default_config_files=[])
    return conf, f.name


class ConfTestCase(testtools.TestCase):

    def load(self, text):
        conf, path = load(text)
        self.addCleanup(os.unlink, path)
        return conf, path


class AsciiNumbersTest(ConfTestCase):
    """int() and float() read '4_00', '٤٠٠' and '４００' as 400."""

    NOT_ASCII = ('4_00', '٤٠٠', '４００', '4\u00a000')

    def test_every_number_option_reads_ascii_digits_only(self):
        numbers = [o for o in livemig_conf.ALL_OPTS
                   if isinstance(o, (cfg.IntOpt, cfg.FloatOpt))]
        self.assertGreater(len(numbers), 15)
        for opt in numbers:
            for text in self.NOT_ASCII:
                self.assertRaises(ValueError, opt.type, text)
            low = opt.type.min
            self.assertEqual(low, opt.type(str(low)), opt.name)

    def test_they_stay_int_and_float_opts_with_their_range(self):
        [opt] = [o for o in livemig_conf.ALL_OPTS
                 if o.name == 'max_downtime_ms']
        self.assertIs(cfg.IntOpt, type(opt))
        self.assertEqual((100, 60000), (opt.type.min, opt.type.max))
        self.assertRaises(ValueError, opt.type, '99')

    def test_a_file_value_is_refused_with_the_option_and_the_file(self):
        for text in self.NOT_ASCII:
            conf, path = self.load('[livemig_ext]\nmax_downtime_ms = %s\n'
                                   'poll_interval_s = %s\n' % (text, text))
            problems = livemig_conf.invalid_values(conf)
            self.assertEqual(2, len(problems), problems)
            self.assertIn('[livemig_ext] max_downtime_ms = %r in %s'
                          % (text, path), problems[0])

    def test_nova_options_too(self):
        # Nova's [libvirt] types are Nova's: the value as written is read.
        conf, path = self.load('[libvirt]\nlive_migration_downtime = ٥٠٠\n'
                               'live_migration_bandwidth = 1_0\n'
                               'live_migration_downtime_steps = 10\n')
        self.assertEqual(500, conf.libvirt.live_migration_downtime)
        problems = livemig_conf.invalid_values(conf, ('libvirt',),
                                               prefix='live_migration')
        self.assertEqual([
            "[libvirt] live_migration_bandwidth = '1_0' in %s is not "
            'valid: write numbers without "_"' % path,
            "[libvirt] live_migration_downtime = '٥٠٠' in %s is not valid: "
            'write numbers in ASCII digits (0-9)' % path], problems)


class StrayOptionsTest(ConfTestCase):
    """Sections and options of ours that oslo.config ignores in silence."""

    def test_lookalike_sections(self):
        for section in ('livemig-ext', 'livemig_ext ', ' livemig_ext',
                        'livemigext', 'Livemig-Ext', 'livmig_ext',
                        'livemig_ex', 'live_mig_ext', 'livemig ext'):
            self.assertTrue(livemig_conf.is_lookalike_section(section),
                            section)
        for section in ('livemig_ext', 'LIVEMIG_EXT', 'Livemig_Ext',
                        'libvirt', 'DEFAULT', 'workarounds', 'live',
                        'livemig_extension_x'):
            self.assertFalse(livemig_conf.is_lookalike_section(section),
                             section)

    def test_upper_case_is_read_as_ours(self):
        # oslo.config lower-cases section names (all but DEFAULT): this
        # one is not a mistake, and require_tls is enforced.
        from nova_livemig_ext import policy
        conf, _ = self.load('[LIVEMIG_EXT]\nrequire_tls = True\n')
        self.assertTrue(conf.livemig_ext.require_tls)
        self.assertEqual([], livemig_conf.unknown_options(conf))
        self.assertEqual([], livemig_conf.invalid_values(conf))
        self.assertRaises(policy.InvalidPolicy, policy.policy_from_conf,
                          conf)

    def test_lookalike_asking_for_tls_is_refused(self):
        for section in ('livemig-ext', 'livemig_ext ', 'livemigext'):
            for key, value in [('require_tls', 'True'),
                               ('native_tls', 'yes'),
                               ('require_tls', 'tru')]:
                conf, path = self.load('[%s]\n%s = %s\nladder = abort\n'
                                       % (section, key, value))
                # Silently not read: the default is in force.
                self.assertFalse(conf.livemig_ext.require_tls)
                [problem] = livemig_conf.invalid_values(conf)
                self.assertIn('%s = %r in [%s] of %s is not read'
                              % (key, value, section, path), problem)
                self.assertIn('as asked: move it to [livemig_ext]', problem)
                # The rest of the section is still named.
                [warning] = livemig_conf.unknown_options(conf)
                self.assertIn('ladder there is ignored', warning)

    def test_lookalike_without_tls_is_named(self):
        conf, path = self.load('[livemig-ext]\nmax_downtime_ms = 400\n'
                               'require_tls = false\n')
        self.assertEqual([], livemig_conf.invalid_values(conf))
        self.assertEqual([
            'section [livemig-ext] in %s is not read, nova-livemig-ext '
            'reads [livemig_ext]: max_downtime_ms, require_tls there are '
            'ignored (rename the section [livemig_ext])' % path],
            livemig_conf.unknown_options(conf))

    def test_our_options_under_default_or_libvirt(self):
        conf, path = self.load('[DEFAULT]\nmax_downtime_ms = 400\n'
                               '[libvirt]\nladder = abort\n'
                               'live_migration_downtime = 400\n'
                               'cpu_mode = none\n')
        self.assertEqual([
            'option max_downtime_ms in [DEFAULT] of %s is ignored: it '
            'belongs in [livemig_ext]' % path,
            'option ladder in [libvirt] of %s is ignored: it belongs in '
            '[livemig_ext]' % path], livemig_conf.unknown_options(conf))
        self.assertEqual([], livemig_conf.invalid_values(conf))

    def test_misplaced_tls_is_refused(self):
        conf, path = self.load('[DEFAULT]\nrequire_tls = true\n'
                               '[libvirt]\nnative_tls = on\n')
        problems = livemig_conf.invalid_values(conf)
        self.assertEqual([
            "require_tls = 'true' in [DEFAULT] of %s is not read (it "
            'belongs in [livemig_ext]), so TLS would not be required as '
            'asked: move it to [livemig_ext]' % path,
            "native_tls = 'on' in [libvirt] of %s is not read (it belongs "
            'in [livemig_ext]), so migrations would not be encrypted as '
            'asked: move it to [livemig_ext]' % path], sorted(
                problems, key=lambda p: 'DEFAULT' not in p))
        self.assertEqual([], livemig_conf.unknown_options(conf))
        # Only with our group: the [libvirt] pass does not repeat them.
        self.assertEqual([], livemig_conf.invalid_values(
            conf, ('libvirt',), prefix='live_migration'))

    def test_a_name_another_option_has_there_is_not_ours(self):
        conf = cfg.ConfigOpts()
        conf.register_opt(cfg.StrOpt('mode'))
        livemig_conf.register_opts(conf)
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write('[DEFAULT]\nmode = fast\n')
            f.flush()
            conf(args=['--config-file', f.name], default_config_files=[])
            self.assertEqual([], livemig_conf.unknown_options(conf))


class DestinationLibvirtUriTest(ConfTestCase):

    def test_a_template_with_one_host_name(self):
        conf, _ = self.load('[livemig_ext]\n'
                            'destination_libvirt_uri = qemu+tls://%s/system\n')
        self.assertEqual('qemu+tls://%s/system',
                         conf.livemig_ext.destination_libvirt_uri)
        self.assertEqual([], livemig_conf.invalid_values(conf))

    def test_unset_by_default(self):
        conf, _ = self.load('')
        self.assertIsNone(conf.livemig_ext.destination_libvirt_uri)

    def test_anything_else_is_refused_with_its_name(self):
        for value in ('qemu+tls://dest/system', 'qemu+tls://%s/%s',
                      'qemu+tls://%d/system', 'qemu+tls://%(host)s/system'):
            conf, path = self.load('[livemig_ext]\n'
                                   'destination_libvirt_uri = %s\n' % value)
            self.assertRaises(ValueError, getattr, conf.livemig_ext,
                              'destination_libvirt_uri')
            [problem] = livemig_conf.invalid_values(conf)
            self.assertIn('destination_libvirt_uri', problem)
            self.assertIn(path, problem)


class GiveBackAddressTest(ConfTestCase):

    def test_default_is_the_hosts_loopback(self):
        from nova_livemig_ext import standin
        conf, _ = self.load('')
        value = conf.livemig_ext.postcopy_give_back_address
        self.assertEqual('tcp:127.0.0.1', value)
        self.assertEqual('tcp:127.0.0.1', standin.address_or_none(value))

    def test_a_directory_or_off(self):
        from nova_livemig_ext import standin
        for value, address in (('unix:/var/lib/nova/standin',
                                'unix:/var/lib/nova/standin'),
                               ('tcp:[::1]', 'tcp:[::1]'), ('off', None)):
            conf, _ = self.load('[livemig_ext]\n'
                                'postcopy_give_back_address = %s\n' % value)
            self.assertEqual(address, standin.address_or_none(
                conf.livemig_ext.postcopy_give_back_address))

    def test_anything_else_is_refused_with_its_name(self):
        for value in ('127.0.0.1', 'unix:relative/dir', 'tcp:', 'Off',
                      'tcp:127.0.0.1 unix:/x'):
            conf, path = self.load('[livemig_ext]\n'
                                   'postcopy_give_back_address = %s\n' % value)
            self.assertRaises(ValueError, getattr, conf.livemig_ext,
                              'postcopy_give_back_address')
            [problem] = livemig_conf.invalid_values(conf)
            self.assertIn('postcopy_give_back_address', problem)
