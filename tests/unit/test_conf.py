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
