"""Flavor extra specs and image properties applied to the host policy."""

import testtools

from nova_livemig_ext import instance_policy as ip
from nova_livemig_ext import policy as lp

HOST = lp.MigrationPolicy().replace(
    permit_post_copy=True, max_downtime_ms=1000,
    ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))


def image(**props):
    return {'image_livemig_ext:%s' % k: v for k, v in props.items()}


def flavor(**specs):
    return {'livemig_ext:%s' % k: v for k, v in specs.items()}


class InstancePolicyTest(testtools.TestCase):

    # (flavor, image system metadata, expected field values)
    ACCEPTED = [
        ({}, {}, dict(max_downtime_ms=1000, ladder=HOST.ladder)),
        (flavor(max_downtime_ms='2000'), {}, dict(max_downtime_ms=2000)),
        (flavor(ladder='downtime,abort'), {},
         dict(ladder=('downtime', 'abort'))),
        (flavor(permit_post_copy='false', ladder='downtime,abort'), {},
         dict(permit_post_copy=False)),
        ({}, image(max_downtime_ms='200'),
         dict(max_downtime_ms=200, initial_downtime_ms=200)),
        ({}, image(ladder='downtime,abort'),
         dict(ladder=('downtime', 'abort'))),
        ({}, image(permit_post_copy='no', ladder='downtime,abort'),
         dict(permit_post_copy=False)),
        ({}, image(completion_timeout_s_per_gib='30'),
         dict(completion_timeout_s_per_gib=30)),
        ({'hw:cpu_policy': 'dedicated'}, {'image_hw_disk_bus': 'scsi'},
         dict(max_downtime_ms=1000)),
    ]

    def test_accepted(self):
        for specs, sysmeta, want in self.ACCEPTED:
            policy = ip.instance_policy(HOST, specs, sysmeta)
            for name, value in want.items():
                self.assertEqual(value, getattr(policy, name),
                                 (specs, sysmeta, name))

    # (flavor, image system metadata, key named, text)
    REFUSED = [
        (flavor(max_downtime_ms='fast'), {},
         'flavor extra spec livemig_ext:max_downtime_ms', "'fast'"),
        (flavor(max_downtime_ms='99999'), {},
         'flavor extra spec livemig_ext:max_downtime_ms', '100 to 60000'),
        (flavor(ladder='downtime,teleport'), {},
         'flavor extra spec livemig_ext:ladder', 'teleport'),
        (flavor(ladder='abort,downtime'), {},
         'flavor extra spec livemig_ext:ladder', "'abort' must be the last"),
        (flavor(permit_post_copy='maybe'), {},
         'flavor extra spec livemig_ext:permit_post_copy', 'true or false'),
        (flavor(speed='11'), {}, 'flavor extra spec livemig_ext:speed',
         'unknown key'),
        (flavor(permit_post_copy='false'), {},
         'flavor extra spec livemig_ext:ladder', "'postcopy' needs"),
        ({}, image(max_downtime_ms='5000'),
         'image property livemig_ext:max_downtime_ms', 'only lower'),
        ({}, image(ladder='postcopy,downtime'),
         'image property livemig_ext:ladder', 'only remove rungs'),
        ({}, image(completion_timeout_s_per_gib='900'),
         'image property livemig_ext:completion_timeout_s_per_gib',
         'only shorten'),
        ({}, image(permit_post_copy='false'),
         'image property livemig_ext:ladder', "'postcopy' needs"),
    ]

    def test_refused(self):
        for specs, sysmeta, key, text in self.REFUSED:
            e = self.assertRaises(lp.InvalidPolicy, ip.instance_policy,
                                  HOST, specs, sysmeta)
            self.assertIn(key, str(e), (specs, sysmeta))
            self.assertIn(text, str(e), (specs, sysmeta))

    def test_image_cannot_permit_post_copy_the_host_forbids(self):
        host = HOST.replace(permit_post_copy=False,
                            ladder=('downtime', 'abort'))
        e = self.assertRaises(lp.InvalidPolicy, ip.instance_policy, host,
                              {}, image(permit_post_copy='true'))
        self.assertIn('image property livemig_ext:permit_post_copy', str(e))
        e = self.assertRaises(lp.InvalidPolicy, ip.instance_policy, host,
                              flavor(permit_post_copy='true'), {})
        self.assertIn('flavor extra spec livemig_ext:permit_post_copy',
                      str(e))

    def test_flavor_cannot_add_auto_converge_the_host_never_armed(self):
        host = HOST.replace(ladder=('downtime', 'abort'))
        e = self.assertRaises(lp.InvalidPolicy, ip.instance_policy, host,
                              flavor(ladder='auto_converge,abort'), {})
        self.assertIn("'auto_converge' is not in this host's ladder", str(e))

    def test_upstream_mode_ignores_instance_keys(self):
        host = HOST.replace(mode='upstream')
        self.assertIs(host, ip.instance_policy(
            host, flavor(max_downtime_ms='nonsense'), {}))

    def test_every_key_is_documented(self):
        self.assertEqual(set(ip.PARSERS), set(ip.KEY_NAMES))
        for key in ip.KEYS:
            self.assertTrue(key.help)
