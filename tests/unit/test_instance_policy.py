"""Flavor extra specs and image properties applied to the host policy."""

import testtools

from nova_livemig_ext import instance_policy as ip
from nova_livemig_ext import policy as lp

# An operator's per-GiB cap of 120 s (unset, the deadline follows the link).
HOST = lp.MigrationPolicy().replace(
    permit_post_copy=True, max_downtime_ms=1000,
    completion_timeout_s_per_gib=120,
    ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))


def image(**props):
    return {'image_livemig_ext:%s' % k: v for k, v in props.items()}


def flavor(**specs):
    return {'livemig_ext:%s' % k: v for k, v in specs.items()}


def resolve(specs, sysmeta, host=HOST, size_gib=4.0):
    return ip.resolve(host, specs, sysmeta, size_gib)


class InstancePolicyTest(testtools.TestCase):

    # (flavor, image system metadata, expected field values)
    ACCEPTED = [
        ({}, {}, dict(max_downtime_ms=1000, ladder=HOST.ladder)),
        (flavor(max_downtime_ms='2000'), {}, dict(max_downtime_ms=2000)),
        (flavor(ladder='downtime,abort'), {},
         dict(ladder=('downtime', 'abort'))),
        (flavor(ladder=' downtime , pause,abort'), {},
         dict(ladder=('downtime', 'pause', 'abort'))),
        (flavor(permit_post_copy='false', ladder='downtime,abort'), {},
         dict(permit_post_copy=False)),
        (flavor(completion_timeout_s_per_gib='600'), {},
         dict(completion_timeout_s_per_gib=600)),
        ({}, image(max_downtime_ms='200'),
         dict(max_downtime_ms=200, initial_downtime_ms=200)),
        ({}, image(ladder='downtime,abort'),
         dict(ladder=('downtime', 'abort'))),
        ({}, image(permit_post_copy='no', ladder='downtime,abort'),
         dict(permit_post_copy=False)),
        # 100 s/GiB x 4 GiB = 400 s, above the 300 s floor: as asked.
        ({}, image(completion_timeout_s_per_gib='100'),
         dict(completion_timeout_s_per_gib=100)),
        ({'hw:cpu_policy': 'dedicated'}, {'image_hw_disk_bus': 'scsi'},
         dict(max_downtime_ms=1000)),
    ]

    def test_accepted(self):
        for specs, sysmeta, want in self.ACCEPTED:
            resolved = resolve(specs, sysmeta)
            self.assertEqual((), resolved.ignored, (specs, sysmeta))
            for name, value in want.items():
                self.assertEqual(value, getattr(resolved.policy, name),
                                 (specs, sysmeta, name))

    # (flavor, image system metadata, text of the one ignored key)
    IGNORED = [
        (flavor(max_downtime_ms='soon'), {},
         "flavor extra spec livemig_ext:max_downtime_ms = 'soon' ignored: "
         "invalid literal"),
        (flavor(max_downtime_ms='99999'), {},
         'flavor extra spec livemig_ext:max_downtime_ms', '100 to 60000'),
        (flavor(ladder='downtime,teleport'), {},
         'flavor extra spec livemig_ext:ladder', 'teleport'),
        (flavor(ladder='abort,downtime'), {},
         'flavor extra spec livemig_ext:ladder', "'abort' must be the last"),
        (flavor(ladder='downtime,downtime'), {},
         'flavor extra spec livemig_ext:ladder', 'more than once'),
        (flavor(permit_post_copy='maybe'), {},
         'flavor extra spec livemig_ext:permit_post_copy', 'true or false'),
        (flavor(speed='11'), {}, 'flavor extra spec livemig_ext:speed',
         'unknown key'),
        ({}, image(max_downtime_ms='5000'),
         'image property livemig_ext:max_downtime_ms', 'only lower'),
        ({}, image(max_downtime_ms='nan'),
         'image property livemig_ext:max_downtime_ms', "'nan'"),
        ({}, image(ladder='postcopy,downtime'),
         'image property livemig_ext:ladder', 'only remove rungs'),
        ({}, image(ladder='downtime,pause,abort'),
         'image property livemig_ext:ladder', 'only remove rungs'),
        ({}, image(completion_timeout_s_per_gib='900'),
         'image property livemig_ext:completion_timeout_s_per_gib',
         'only shorten'),
        ({}, image(completion_timeout_s_per_gib='1e400'),
         'image property livemig_ext:completion_timeout_s_per_gib', '1e400'),
        ({}, image(warp_speed='9'), 'image property livemig_ext:warp_speed',
         'unknown key'),
    ]

    def test_ignored_keys_are_named_and_never_refuse(self):
        for case in self.IGNORED:
            specs, sysmeta, texts = case[0], case[1], case[2:]
            resolved = resolve(specs, sysmeta)
            self.assertEqual(1, len(resolved.ignored), case)
            for text in texts:
                self.assertIn(text, resolved.ignored[0], case)
            # The key had no effect: the host's values are kept.
            self.assertEqual(HOST.max_downtime_ms,
                             resolved.policy.max_downtime_ms, case)
            self.assertEqual(HOST.ladder, resolved.policy.ladder, case)
            self.assertEqual(HOST.completion_timeout_s_per_gib,
                             resolved.policy.completion_timeout_s_per_gib,
                             case)

    def test_good_keys_apply_next_to_bad_ones(self):
        resolved = resolve(flavor(max_downtime_ms='fast'),
                           image(max_downtime_ms='400', ladder='sideways'))
        self.assertEqual(400, resolved.policy.max_downtime_ms)
        self.assertEqual(HOST.ladder, resolved.policy.ladder)
        self.assertEqual(2, len(resolved.ignored))

    def test_no_post_copy_drops_the_rung_instead_of_refusing(self):
        for specs, sysmeta in [(flavor(permit_post_copy='false'), {}),
                               ({}, image(permit_post_copy='false'))]:
            resolved = resolve(specs, sysmeta)
            self.assertEqual((), resolved.ignored)
            self.assertFalse(resolved.policy.permit_post_copy)
            self.assertEqual(('downtime', 'auto_converge', 'abort'),
                             resolved.policy.ladder)
            self.assertIn('postcopy rung removed', resolved.notes[0])

    def test_image_cannot_permit_post_copy_the_host_forbids(self):
        host = HOST.replace(permit_post_copy=False,
                            ladder=('downtime', 'abort'))
        resolved = resolve({}, image(permit_post_copy='true'), host)
        self.assertFalse(resolved.policy.permit_post_copy)
        [ignored] = resolved.ignored
        self.assertIn('image property livemig_ext:permit_post_copy', ignored)
        resolved = resolve(flavor(permit_post_copy='true'), {}, host)
        self.assertFalse(resolved.policy.permit_post_copy)
        [ignored] = resolved.ignored
        self.assertIn('flavor extra spec livemig_ext:permit_post_copy',
                      ignored)
        self.assertIn('userfaultfd', ignored)

    def test_flavor_cannot_add_auto_converge_the_host_never_armed(self):
        host = HOST.replace(ladder=('downtime', 'abort'))
        resolved = resolve(flavor(ladder='auto_converge,abort'), {}, host)
        self.assertEqual(('downtime', 'abort'), resolved.policy.ladder)
        [ignored] = resolved.ignored
        self.assertIn("'auto_converge' is not in this host's ladder",
                      ignored)

    def test_image_deadline_is_never_below_the_floor(self):
        # The case of the report: 1 s/GiB on a 0.5 GiB guest gave 0.5 s.
        for size_gib, asked, floor_s, want in [
                (0.5, '1', 300, 120),    # 600 s/GiB needed: host's 120
                (0.5, '1', 30, 60),      # 60 s/GiB x 0.5 GiB = 30 s
                (4.0, '1', 300, 75),     # 75 s/GiB x 4 GiB = 300 s
                (16.0, '30', 300, 30),   # 480 s: above the floor, as asked
                (1 / 4096.0, '1', 300, 120)]:
            host = HOST.replace(image_deadline_floor_s=floor_s)
            resolved = resolve(
                {}, image(completion_timeout_s_per_gib=asked), host,
                size_gib=size_gib)
            per_gib = resolved.policy.completion_timeout_s_per_gib
            self.assertEqual(want, per_gib, (size_gib, asked, floor_s))
            self.assertGreaterEqual(
                per_gib * max(size_gib, 1 / 1024.0), min(
                    floor_s, HOST.completion_timeout_s_per_gib * size_gib))
            self.assertEqual((), resolved.ignored)
            if str(want) != asked:
                self.assertIn('image_deadline_floor_s', resolved.notes[0])

    def test_image_deadline_caps_a_host_without_a_per_gib_cap(self):
        # No operator cap: the image's value is a cap of its own (above the
        # floor), never "longer than the host's".
        host = HOST.replace(completion_timeout_s_per_gib=0)
        resolved = resolve({}, image(completion_timeout_s_per_gib='900'),
                           host, size_gib=0.5)
        self.assertEqual((), resolved.ignored)
        self.assertEqual(900, resolved.policy.completion_timeout_s_per_gib)
        resolved = resolve({}, image(completion_timeout_s_per_gib='1'),
                           host, size_gib=0.5)
        self.assertEqual(600, resolved.policy.completion_timeout_s_per_gib)

    def test_operator_can_ignore_image_properties(self):
        host = HOST.replace(ignore_image_properties=True)
        resolved = resolve(flavor(max_downtime_ms='700'),
                           image(max_downtime_ms='200', ladder='abort'),
                           host)
        self.assertEqual(700, resolved.policy.max_downtime_ms)
        self.assertEqual(HOST.ladder, resolved.policy.ladder)
        self.assertEqual(2, len(resolved.ignored))
        for line in resolved.ignored:
            self.assertIn('ignore_image_properties is set', line)

    def test_upstream_mode_ignores_instance_keys(self):
        host = HOST.replace(mode='upstream')
        self.assertIs(host, ip.instance_policy(
            host, flavor(max_downtime_ms='nonsense'), {}))

    def test_every_key_is_documented(self):
        self.assertEqual(set(ip.PARSERS), set(ip.KEY_NAMES))
        for key in ip.KEYS:
            self.assertTrue(key.help)

    def test_parse_value_names_the_problem(self):
        self.assertEqual(300, ip.parse_value('max_downtime_ms', ' 300 '))
        self.assertEqual(('downtime', 'abort'),
                         ip.parse_value('ladder', 'downtime,abort'))
        for name, text in [('max_downtime_ms', '99'),
                           ('permit_post_copy', 'y'), ('ladder', 'abort,x'),
                           ('speed', '1')]:
            self.assertRaises(ValueError, ip.parse_value, name, text)
