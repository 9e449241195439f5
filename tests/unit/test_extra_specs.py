"""Nova's API validates livemig_ext:* flavor extra specs with our parsers."""

import configparser
import os

import fixtures
from nova import exception
import testtools

from nova_livemig_ext import extra_specs
from nova_livemig_ext import instance_policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class ExtraSpecValidatorsTest(testtools.TestCase):

    def validator(self, name):
        [found] = [v for v in extra_specs.register()
                   if v.name == instance_policy.PREFIX + name]
        return found

    def test_one_validator_per_documented_key(self):
        self.assertEqual(
            sorted(instance_policy.PREFIX + n
                   for n in instance_policy.KEY_NAMES),
            sorted(v.name for v in extra_specs.register()))

    def test_accepted_and_refused_values(self):
        for name, good, bad in [
                ('max_downtime_ms', ['100', '60000', ' 300'],
                 ['99', '60001', 'soon', '1.5', '']),
                ('completion_timeout_s_per_gib', ['1', '86400'],
                 ['0', '-1', '86401', 'nan', '1e400']),
                ('permit_post_copy', ['true', 'False', 'no', '1'],
                 ['maybe', 'y', 't', '']),
                ('ladder', ['downtime,abort', 'auto_converge, pause, abort',
                            'postcopy', ''],
                 ['abort,downtime', 'downtime,downtime', 'warp',
                  'downtime;abort'])]:
            validator = self.validator(name)
            for value in good:
                validator.validate(validator.name, value)
            for value in bad:
                self.assertRaises(exception.ValidationError,
                                  validator.validate, validator.name, value)

    def test_nova_refuses_unknown_keys_of_our_namespace(self):
        # As Nova's registry holds them once the entry point is loaded;
        # patched so that this test does not depend on the installed
        # metadata nor change the registry for others.
        from nova.api.validation.extra_specs import validators

        registry = dict(validators.VALIDATORS)
        registry.update((v.name, v) for v in extra_specs.register())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.VALIDATORS',
            registry))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.NAMESPACES',
            validators.NAMESPACES | {'livemig_ext'}))
        validators.validate('livemig_ext:max_downtime_ms', '300')
        self.assertRaises(exception.ValidationError, validators.validate,
                          'livemig_ext:max_downtime_ms', 'soon')
        self.assertRaises(exception.ValidationError, validators.validate,
                          'livemig_ext:warp_speed', '9')

    def test_entry_point_is_declared(self):
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, 'setup.cfg'))
        points = parser['entry_points']['nova.api.extra_spec_validators']
        self.assertEqual(['livemig_ext = nova_livemig_ext.extra_specs'],
                         [p.strip() for p in points.splitlines()
                          if p.strip()])


class ExtraSpecHostileValuesTest(testtools.TestCase):

    def validator(self, name):
        [found] = [v for v in extra_specs.register()
                   if v.name == instance_policy.PREFIX + name]
        return found

    def test_numbers_only_in_ascii_digits(self):
        # int() reads all of these as 400; Nova's API stored them.
        for text in ('4_00', '٤٠٠', '４００', '+400',
                     '\U0001d7d2\U0001d7ce\U0001d7ce'):
            for name in ('max_downtime_ms', 'completion_timeout_s_per_gib'):
                validator = self.validator(name)
                e = self.assertRaises(exception.ValidationError,
                                      validator.validate, validator.name,
                                      text)
                self.assertIn('ASCII digits', str(e))

    def test_the_refusal_shows_the_value_escaped_and_short(self):
        validator = self.validator('ladder')
        for value in ('downtime\nabort\x1b[2J', 'warp,' * 10000):
            e = self.assertRaises(exception.ValidationError,
                                  validator.validate, validator.name, value)
            message = str(e)
            self.assertTrue(message.isprintable(), message[:200])
            self.assertLess(len(message), 600)
        e = self.assertRaises(exception.ValidationError, validator.validate,
                              validator.name, 'downtime\nabort')
        self.assertIn(r"'downtime\nabort' is not valid for "
                      'livemig_ext:ladder', str(e))
