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
        # From an image, the starting limit: the ceiling stays the host's.
        ({}, image(max_downtime_ms='200'),
         dict(max_downtime_ms=1000, initial_downtime_ms=200)),
        ({}, image(max_downtime_ms='1000'),
         dict(max_downtime_ms=1000, initial_downtime_ms=300)),
        # 100 s/GiB x 4 GiB = 400 s: a deadline of at least 400 s, within
        # the host's cap of 120 s/GiB (480 s); the cap itself unchanged.
        ({}, image(completion_timeout_s_per_gib='100'),
         dict(completion_timeout_s_per_gib=120, deadline_floor_s=400)),
        # The operator's flavor keeps its full power.
        (flavor(ladder='abort'), {}, dict(ladder=('abort',))),
        (flavor(completion_timeout_s_per_gib='1'), {},
         dict(completion_timeout_s_per_gib=1)),
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
         "not a whole number in ASCII digits"),
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
         'image property livemig_ext:ladder', "the ladder is the operator's"),
        ({}, image(ladder='downtime,pause,abort'),
         'image property livemig_ext:ladder', "the ladder is the operator's"),
        ({}, image(ladder='downtime,abort'),
         'image property livemig_ext:ladder', "the ladder is the operator's"),
        ({}, image(ladder=''),
         'image property livemig_ext:ladder', "the ladder is the operator's"),
        ({}, image(ladder='abort'),
         'image property livemig_ext:ladder', "the ladder is the operator's"),
        ({}, image(permit_post_copy='false'),
         'image property livemig_ext:permit_post_copy', 'only way'),
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
                           image(max_downtime_ms='200', ladder='sideways'))
        self.assertEqual(200, resolved.policy.initial_downtime_ms)
        self.assertEqual(HOST.max_downtime_ms,
                         resolved.policy.max_downtime_ms)
        self.assertEqual(HOST.ladder, resolved.policy.ladder)
        self.assertEqual(2, len(resolved.ignored))

    def test_no_post_copy_from_a_flavor_drops_the_rung(self):
        resolved = resolve(flavor(permit_post_copy='false'), {})
        self.assertEqual((), resolved.ignored)
        self.assertFalse(resolved.policy.permit_post_copy)
        self.assertEqual(('downtime', 'auto_converge', 'abort'),
                         resolved.policy.ladder)
        self.assertIn('postcopy rung removed', resolved.notes[0])

    def test_no_post_copy_from_an_image_only_off_the_ladder(self):
        # On the ladder post-copy may be what completes the migration.
        resolved = resolve({}, image(permit_post_copy='false'))
        self.assertTrue(resolved.policy.permit_post_copy)
        self.assertEqual(HOST.ladder, resolved.policy.ladder)
        [ignored] = resolved.ignored
        self.assertIn('a flavor extra spec can turn it off', ignored)
        # Off the ladder it only leaves the flag unarmed.
        host = HOST.replace(ladder=('downtime', 'pause', 'abort'))
        resolved = resolve({}, image(permit_post_copy='false'), host)
        self.assertEqual((), resolved.ignored)
        self.assertFalse(resolved.policy.permit_post_copy)
        self.assertEqual(host.ladder, resolved.policy.ladder)

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

    def test_image_deadline_only_lengthens_within_the_caps(self):
        # (host per-GiB cap, size GiB, asked s/GiB, deadline floor wanted)
        for cap, size_gib, asked, want in [
                (120, 4.0, '100', 400),     # 400 s, below the 480 s cap
                (120, 4.0, '900', 480),     # the host's cap: 120 x 4
                (120, 0.5, '1', 120),       # 0.5 s: the host's floor stays
                (0, 64.0, '1', 120),        # the case of the report
                (0, 64.0, '60', 3840),      # 60 x 64, under 14400 s
                (0, 64.0, '86400', 14400),  # completion_timeout_max_s
                (0, 1 / 4096.0, '86400', 120)]:  # 1 MiB: 84 s
            host = HOST.replace(completion_timeout_s_per_gib=cap)
            resolved = resolve(
                {}, image(completion_timeout_s_per_gib=asked), host,
                size_gib=size_gib)
            policy = resolved.policy
            self.assertEqual((), resolved.ignored)
            self.assertEqual(want, policy.deadline_floor_s,
                             (cap, size_gib, asked))
            # The operator's caps never move.
            self.assertEqual(cap, policy.completion_timeout_s_per_gib)
            self.assertEqual(host.completion_timeout_max_s,
                             policy.completion_timeout_max_s)
            self.assertEqual(host.deadline_link_multiple,
                             policy.deadline_link_multiple)
            if want > host.deadline_floor_s:
                self.assertIn('the deadline is at least %d s' % want,
                              resolved.notes[0])
            else:
                self.assertEqual((), resolved.notes)

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


class TenantTextTest(testtools.TestCase):
    """What an image says reaches a log line or a fault only escaped and
    cut short: it cannot forge a line, drive a terminal or flood the log."""

    HOSTILE = [
        'downtime\nWARNING nova.compute.manager forged line',
        'abort\r\x1b[2J\x1b[31mred',
        'pause,\u202eesuap',
        '\u2028downtime',
        'x' * 100000,
        ','.join('rung%d' % i for i in range(5000)),
        '300\n',
        '\x00',
    ]

    def lines(self, resolved):
        return resolved.ignored + resolved.notes

    def check(self, lines):
        for line in lines:
            self.assertTrue(line.isprintable(), repr(line))
            self.assertLess(len(line), 600, line[:200])

    def test_values_of_every_key(self):
        said = 0
        for value in self.HOSTILE:
            for name in ip.KEY_NAMES + ('warp_speed',):
                for specs, sysmeta in [({}, image(**{name: value})),
                                       (flavor(**{name: value}), {})]:
                    lines = self.lines(resolve(specs, sysmeta))
                    self.check(lines)
                    said += len(lines)
        self.assertGreater(said, 60)

    def test_key_names(self):
        for name in self.HOSTILE:
            resolved = resolve(flavor(**{name: '1'}), image(**{name: '1'}))
            self.assertEqual(2, len(resolved.ignored))
            self.check(resolved.ignored)

    def test_newline_in_an_image_ladder(self):
        # The case of the report: written raw into nova-compute's WARNING.
        [line] = resolve({}, image(ladder='downtime\nabort')).ignored
        self.assertIn(r"livemig_ext:ladder = 'downtime\nabort' ignored", line)
        [line] = resolve({}, image(ladder='downtime\nWARNING forged')
                         ).ignored
        self.assertIn(r"'downtime\nWARNING forged'", line)
        self.assertIn(r"unknown rung(s) 'downtime\nWARNING forged'", line)

    def test_long_values_are_cut_with_their_length(self):
        [line] = resolve({}, image(warp_speed='y' * 100000)).ignored
        self.assertIn("'%s'... (100000 characters)" % ('y' * ip.SHOWN_CHARS),
                      line)

    def test_plain_names_and_rungs_read_as_before(self):
        [line] = resolve({}, image(ladder='sideways')).ignored
        self.assertEqual("image property livemig_ext:ladder = 'sideways' "
                         'ignored: unknown rung(s) sideways; use downtime, '
                         'auto_converge, postcopy, pause, abort', line)

    def test_shown(self):
        self.assertEqual("'a\\nb'", ip.shown('a\nb'))
        self.assertEqual("'ab'... (3 characters)", ip.shown('abc', limit=2))
        self.assertEqual("'\\u202e'", ip.shown('\u202e'))


class AsciiDigitsTest(testtools.TestCase):
    """int() reads '4_00', '٤٠٠' and '４００' as 400; a key does not."""

    def test_only_ascii_digits_are_numbers(self):
        for text in ('4_00', '٤٠٠', '４００', '4\u00a000', '+400', '400.0',
                     '1' * 5000):
            for name in ('max_downtime_ms', 'completion_timeout_s_per_gib'):
                self.assertRaises(ValueError, ip.parse_value, name, text)
                resolved = resolve(flavor(**{name: text}),
                                   image(**{name: text}))
                self.assertEqual(2, len(resolved.ignored), (name, text))
                for line in resolved.ignored:
                    self.assertIn('ASCII digits', line)
        self.assertEqual(400, ip.parse_value('max_downtime_ms', ' 400\t'))
