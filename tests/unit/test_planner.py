"""Tests for nova_livemig_ext.planner and the ``plan`` command."""

import contextlib
import io
import os
import tempfile

import testtools

from nova_livemig_ext.cmd import plan as cmd_plan
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext import planner as p
from nova_livemig_ext import policy as livemig_policy

GIB = p.GIB
MIB = p.MIB
TRACES = os.path.join(os.path.dirname(__file__), '..', 'traces')
GBIT_PAYLOAD = 1e9 / 8 * p.DEFAULT_LINK_EFFICIENCY


class TestUnits(testtools.TestCase):

    SIZES = [
        ('32GiB', 32 * GIB),
        ('512 MiB', 512 * MIB),
        ('1.5TiB', 1.5 * 1024 * GIB),
        ('4GB', 4e9),
        ('2g', 2 * GIB),
        ('100 B', 100),
    ]
    RATES = [
        ('1Gbit/s', 125e6),
        ('10 Gbit/s', 1.25e9),
        ('100Mbit/s', 12.5e6),
        ('10Gbps', 1.25e9),
        ('110MiB/s', 110 * MIB),
        ('120MB/s', 120e6),
        ('1GiB/s', GIB),
        # b is a bit, B a byte, whatever the prefix's case.
        ('1Gb/s', 125e6),
        ('100Mb/s', 12.5e6),
        ('40 mb/s', 5e6),
        ('1GB/s', 1e9),
        ('1GBps', 1e9),
        ('8bit/s', 1),
        ('1Mibit/s', MIB / 8),
        ('0', 0),
        ('0 MB/s', 0),
    ]
    BAD_RATES = [
        ('1GiB', 'a size; a rate needs "/s"'),
        ('110', 'has no unit'),
        ('fast', 'cannot read'),
        ('3 furlongs/s', "unknown unit 'furlongs/s'"),
        ('', 'cannot read'),
        ('1Mib/s', 'ambiguous'),
        ('-1MB/s', 'must not be negative'),
        ('1e400MB/s', 'too large'),
        ('1e300TB/s', 'too large'),
        ('nan', 'cannot read'),
        ('inf MB/s', 'cannot read'),
    ]
    BAD_SIZES = [
        ('32', 'has no unit'),
        ('32 GiB/s', "unknown unit 'GiB/s'"),
        ('lots', 'cannot read'),
    ]

    def test_sizes(self):
        for text, expected in self.SIZES:
            self.assertAlmostEqual(expected, p.parse_size_bytes(text),
                                   msg=text)

    def test_rates(self):
        for text, expected in self.RATES:
            self.assertAlmostEqual(expected, p.parse_rate_bytes_s(text),
                                   msg=text)

    def test_bad_rates_say_what_is_accepted(self):
        for text, fragment in self.BAD_RATES:
            e = self.assertRaises(p.UnitError, p.parse_rate_bytes_s, text,
                                  'bandwidth')
            self.assertIn(fragment, str(e), text)
            if not any(f in fragment for f in (
                    'cannot read', 'negative', 'too large', 'ambiguous')):
                self.assertIn('Gbit/s', str(e))

    def test_bad_sizes(self):
        for text, fragment in self.BAD_SIZES:
            e = self.assertRaises(p.UnitError, p.parse_size_bytes, text,
                                  'memory')
            self.assertIn(fragment, str(e), text)

    def test_bit_rates(self):
        for text, bits in [('1Gbit/s', True), ('10Gbps', True),
                           ('1Gb/s', True), ('100Mb/s', True),
                           ('110MiB/s', False), ('40MB/s', False),
                           ('1GB/s', False), ('0', False)]:
            self.assertEqual(bits, p.is_bit_rate(text), text)

    def test_working_set(self):
        cases = [('25%', 8 * GIB), ('100%', 32 * GIB), ('4GiB', 4 * GIB),
                 ('0%', 0)]
        for text, expected in cases:
            self.assertAlmostEqual(expected,
                                   p.parse_working_set_bytes(text, 32 * GIB))
        self.assertRaises(p.UnitError, p.parse_working_set_bytes, '120%',
                          32 * GIB)

    def test_scenario_validation(self):
        for kwargs in [dict(memory_bytes=0, bandwidth_bytes_s=1),
                       dict(memory_bytes=1, bandwidth_bytes_s=0),
                       dict(memory_bytes=GIB, bandwidth_bytes_s=1,
                            working_set_bytes=2 * GIB),
                       dict(memory_bytes=GIB, bandwidth_bytes_s=1,
                            dirty_rate_bytes_s=-1)]:
            self.assertRaises(ValueError, p.Scenario, **kwargs)


def scenario(memory_gib=32, link=GBIT_PAYLOAD, ratio=0.0, ws=None,
             limit_ms=300.0):
    return p.Scenario(
        memory_bytes=memory_gib * GIB, bandwidth_bytes_s=link,
        dirty_rate_bytes_s=ratio * link,
        working_set_bytes=None if ws is None else ws * memory_gib * GIB,
        downtime_limit_ms=limit_ms)


class TestPredictions(testtools.TestCase):

    def test_paused_32gib_over_1gbit_is_about_300s_down(self):
        pred = p.predict_paused(scenario())
        self.assertTrue(280 <= pred.downtime_ms / 1000 <= 320,
                        pred.downtime_ms)
        self.assertAlmostEqual(pred.total_s, pred.downtime_ms / 1000,
                               delta=0.1)
        self.assertEqual(32 * GIB, pred.data_bytes)

    # (ratio, working set share, converges, total / (M/B) range)
    PRECOPY = [
        (0.0, None, True, (1.0, 1.01)),
        (0.5, None, True, (1.9, 2.0)),
        (0.25, 0.1, True, (1.1, 1.3)),
        (0.9, None, True, (5.0, 10.0)),
        (1.0, 0.5, False, None),
        (2.0, 1.0, False, None),
        (2.0, 0.001, True, (1.0, 1.01)),
    ]

    def test_precopy(self):
        for ratio, ws, converges, window in self.PRECOPY:
            s = scenario(ratio=ratio, ws=ws)
            pred = p.predict_precopy(s)
            self.assertEqual(converges, pred.converges, (ratio, ws))
            if not converges:
                self.assertIsNone(pred.total_s)
                self.assertIn('never converges', pred.note)
                continue
            low, high = window
            self.assertTrue(low <= pred.total_s / s.bulk_pass_s <= high,
                            (ratio, ws, pred.total_s / s.bulk_pass_s))
            self.assertLessEqual(pred.downtime_ms,
                                 s.downtime_limit_ms
                                 + p.SWITCHOVER_OVERHEAD_MS)

    def test_auto_converge_throttles_a_busy_guest_to_convergence(self):
        s = scenario(memory_gib=4, ratio=2.0, ws=1.0)
        self.assertFalse(p.predict_precopy(s).converges)
        pred = p.predict_auto_converge(s, 20, 10)
        self.assertTrue(pred.converges)
        self.assertGreaterEqual(pred.max_throttle_pct, 50)
        self.assertGreater(pred.slowdown_s, 0)

    def test_auto_converge_idle_guest_never_throttles(self):
        pred = p.predict_auto_converge(scenario(ratio=0.0), 20, 10)
        self.assertEqual(0, pred.max_throttle_pct)
        self.assertEqual(0, pred.slowdown_s)

    def test_postcopy_after_the_bulk_pass(self):
        s = scenario(memory_gib=8, ratio=2.0, ws=0.25)
        pred = p.predict_postcopy(s)
        pull_s = 2 * GIB / s.bandwidth_bytes_s
        self.assertAlmostEqual(s.bulk_pass_s + pull_s, pred.total_s)
        self.assertAlmostEqual(pull_s, pred.slowdown_s)
        self.assertEqual(10 * GIB, pred.data_bytes)

    def test_predict_all_order(self):
        methods = [x.method for x in p.predict_all(scenario())]
        self.assertEqual(['paused copy', 'pre-copy',
                          'pre-copy + auto-converge', 'post-copy'], methods)


POSTCOPY_POLICY = livemig_policy.MigrationPolicy().replace(
    permit_post_copy=True,
    ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))


class TestLadder(testtools.TestCase):

    def test_config_follows_the_policy(self):
        config = p.controller_config_for(POSTCOPY_POLICY, 64 * GIB)
        self.assertEqual(('downtime', 'auto_converge', 'postcopy', 'abort'),
                         config.ladder)
        self.assertTrue(config.postcopy_armed)
        self.assertTrue(config.auto_converge_armed)
        self.assertFalse(config.pause_allowed)
        # No per-GiB cap by default: only the absolute cap bounds the
        # deadline, which follows the link below it.
        self.assertEqual(14400, config.deadline_s)
        capped = POSTCOPY_POLICY.replace(completion_timeout_s_per_gib=120)
        self.assertEqual(7680, p.controller_config_for(
            capped, 64 * GIB).deadline_s)  # 120 s/GiB
        self.assertEqual(240, p.controller_config_for(
            capped, 2 * GIB).deadline_s)
        self.assertEqual(14400, p.controller_config_for(  # capped
            capped, 256 * GIB).deadline_s)

    def test_deadline_follows_the_link_without_a_per_gib_cap(self):
        policy = POSTCOPY_POLICY.replace(completion_timeout_s_per_gib=0)
        # 32 GiB over 1 Gbit/s: a pass takes 295 s, the deadline 8 times it.
        s = scenario(memory_gib=32, ratio=2.0, ws=1.0)
        pred = p.predict_ladder(s, policy)
        self.assertAlmostEqual(8 * s.bulk_pass_s, pred.deadline_s,
                               delta=0.05 * 8 * s.bulk_pass_s)
        # The per-GiB option, when set, caps it: 60 s x 32, not 2390 s.
        capped = p.predict_ladder(
            s, policy.replace(completion_timeout_s_per_gib=60))
        self.assertEqual(1920, capped.deadline_s)
        # A cap above the link's deadline changes nothing.
        self.assertEqual(pred.deadline_s, p.predict_ladder(
            s, POSTCOPY_POLICY).deadline_s)
        # A small guest on the same link gets the floor.
        small = p.predict_ladder(scenario(memory_gib=1, ratio=2.0, ws=1.0),
                                 policy)
        self.assertEqual(120, small.deadline_s)

    def test_defaults_do_not_arm_postcopy(self):
        config = p.controller_config_for(livemig_policy.MigrationPolicy(),
                                         GIB)
        self.assertFalse(config.postcopy_armed)
        self.assertTrue(config.auto_converge_armed)

    # (ratio, working set, policy, outcome, rungs that must be reached)
    LADDERS = [
        (0.0, None, livemig_policy.MigrationPolicy(), 'completed', ()),
        # The defaults' throttle (50 % + 20 %) finishes a guest dirtying
        # twice the link's rate; at twenty times it cannot, and they abort.
        (2.0, 1.0, livemig_policy.MigrationPolicy(), 'completed',
         (ctl.RUNG_AUTO_CONVERGE,)),
        (20.0, 1.0, livemig_policy.MigrationPolicy(), 'aborted',
         (ctl.RUNG_ABORT,)),
        (20.0, 1.0, POSTCOPY_POLICY, 'completed', (ctl.RUNG_POSTCOPY,)),
    ]

    def test_ladders(self):
        for ratio, ws, policy, outcome, rungs in self.LADDERS:
            s = scenario(memory_gib=2, ratio=ratio, ws=ws)
            pred = p.predict_ladder(s, policy)
            self.assertEqual(outcome, pred.outcome, (ratio, ws))
            for rung in rungs:
                self.assertIn(rung, pred.rungs_reached)
            if rungs:
                self.assertTrue(any(step.rung == rungs[0]
                                    for step in pred.steps))
            self.assertLessEqual(pred.total_s, pred.deadline_s + 61)


def run_plan(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cmd_plan.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class TestPlanCommand(testtools.TestCase):

    def test_seed_question(self):
        code, out, _ = run_plan('--memory', '32GiB', '--bandwidth',
                                '1Gbit/s')
        self.assertEqual(0, code)
        paused = [line for line in out.splitlines()
                  if line.startswith('paused copy')][0]
        self.assertEqual(['299', 's', '299', 's'], paused.split()[2:6])
        self.assertIn('our controller, ladder downtime,auto_converge,abort',
                      out)

    BAD = [
        (('--memory', '32GiB', '--bandwidth', '1GiB'), 'a rate needs'),
        (('--memory', '32', '--bandwidth', '1Gbit/s'), 'has no unit'),
        (('--bandwidth', '1Gbit/s'), '--memory is required'),
        (('--memory', '1GiB', '--bandwidth', '1Gbit/s', '--downtime-limit',
          'soon'), 'cannot read downtime limit'),
        (('--memory', '1GiB', '--bandwidth', '1Gbit/s', '--working-set',
          '2GiB'), 'working set must be'),
        (('--trace', '/nonexistent.json'), 'cannot read trace'),
    ]

    def test_bad_input_exits_2_with_one_line(self):
        for argv, fragment in self.BAD:
            code, out, err = run_plan(*argv)
            self.assertEqual(2, code, argv)
            self.assertIn(fragment, err, argv)
            self.assertTrue(err.startswith('nova-livemig-ext plan: error:'))
            self.assertEqual('', out)

    def test_trace_measures_a_guest_that_never_converges(self):
        path = os.path.join(TRACES, 'non-converging.json')
        if not os.path.exists(path):
            self.skipTest('no recorded trace')
        code, out, _ = run_plan('--trace', path)
        self.assertEqual(0, code)
        self.assertIn('measured in', out)
        precopy = [line for line in out.splitlines()
                   if line.startswith('pre-copy ')][0]
        self.assertIn('never converges', precopy)

    def test_json(self):
        code, out, _ = run_plan('--memory', '1GiB', '--bandwidth',
                                '10Gbit/s', '--json')
        self.assertEqual(0, code)
        self.assertIn('"predictions"', out)

    def test_config_file_policy(self):
        _need_nova(self)
        with tempfile.NamedTemporaryFile('w', suffix='.conf',
                                         delete=False) as f:
            f.write('[livemig_ext]\npermit_post_copy = true\n'
                    'ladder = downtime,postcopy,abort\n'
                    'max_downtime_ms = 400\n')
        self.addCleanup(os.unlink, f.name)
        code, out, err = run_plan('--memory', '2GiB', '--bandwidth',
                                  '1Gbit/s', '--dirty-rate', '250MB/s',
                                  '--config-file', f.name)
        self.assertEqual(0, code, err)
        self.assertIn('ladder downtime,postcopy,abort', out)
        self.assertIn('300 to 400 ms', out)
        self.assertIn('postcopy', out.split('rungs reached:')[1])

    def test_refused_config_exits_2(self):
        _need_nova(self)
        with tempfile.NamedTemporaryFile('w', suffix='.conf',
                                         delete=False) as f:
            f.write('[livemig_ext]\nladder = postcopy,abort\n')
        self.addCleanup(os.unlink, f.name)
        code, _, err = run_plan('--memory', '2GiB', '--bandwidth',
                                '1Gbit/s', '--config-file', f.name)
        self.assertEqual(2, code)
        self.assertIn('permit_post_copy', err)


def _need_nova(test):
    try:
        import nova.conf.libvirt  # noqa: F401
    except ImportError:
        test.skipTest('nova is not installed')


def write_trace(test, text):
    with tempfile.NamedTemporaryFile('w', suffix='.json',
                                     delete=False) as f:
        f.write(text)
    test.addCleanup(os.unlink, f.name)
    return f.name


def converging_trace():
    import json
    with open(os.path.join(TRACES, 'converging.json')) as f:
        return json.load(f)


class TestTraceNumbers(testtools.TestCase):
    """A trace holds 64-bit counters and times that never go back."""

    def test_a_400_digit_integer_is_one_line(self):
        big = '1' + '0' * 399
        for text in ('{"trace": [{"t": %s, "stats": {"type": 2}}]}' % big,
                     '{"trace": [{"t": 0, "stats": {"type": 2, '
                     '"memory_total": %s}}]}' % big,
                     '{"trace": [{"t": 0, "stats": {"type": 2}}], '
                     '"x": -%s}' % big,
                     '{"trace": [], "x": %s}' % ('9' * 5000),
                     '{"trace": [{"t": 1e300, "stats": {"type": 2}}]}'):
            path = write_trace(self, text)
            code, out, err = run_plan('--trace', path)
            self.assertEqual(2, code, err)
            self.assertEqual('', out)
            self.assertEqual(1, len(err.splitlines()), err)
            self.assertIn('is not a number a trace can hold (at most '
                          '2**64)', err)
            self.assertLess(len(err), 300)

    def test_the_largest_counter_is_read(self):
        self.assertEqual(2 ** 64, cmd_plan._bounded_int(str(2 ** 64)))
        self.assertEqual(-5, cmd_plan._bounded_int('-5'))
        self.assertRaises(cmd_plan.TraceNumberError, cmd_plan._bounded_int,
                          str(2 ** 64 + 1))

    def test_times_that_go_back_are_refused(self):
        import json
        trace = converging_trace()
        samples = trace['trace']
        # The clock goes back 8 s at sample 21, as a bad recorder's would.
        for sample in samples[21:]:
            sample['t'] = round(sample['t'] - 8.0, 3)
        path = write_trace(self, json.dumps(trace))
        code, out, err = run_plan('--trace', path)
        self.assertEqual(2, code)
        self.assertEqual('', out)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn('%s: sample 21 has "t" %g, before the %g of the '
                      'sample before it' % (path, samples[21]['t'],
                                            samples[20]['t']), err)

    def test_equal_times_are_accepted(self):
        import json
        trace = converging_trace()
        trace['trace'][5]['t'] = trace['trace'][4]['t']
        path = write_trace(self, json.dumps(trace))
        code, _, err = run_plan('--trace', path)
        self.assertEqual(0, code, err)


class TestAsciiNumbers(testtools.TestCase):
    """float() reads '4_00', '٤٠٠' and '４００'; the planner does not."""

    def test_plain_number(self):
        self.assertEqual(25.0, p.plain_number(' 25 '))
        self.assertEqual(0.5, p.plain_number('.5'))
        self.assertEqual(1e3, p.plain_number('1e3'))
        for text in ('٢٥', '２５', '2_5', 'nan', 'inf', '', '1e', '--1'):
            self.assertIsNone(p.plain_number(text), text)

    def test_quantities(self):
        for text in ('٢٥%', '２５%', '2_5%'):
            self.assertRaises(p.UnitError, p.parse_working_set_bytes, text,
                              GIB)
        for text in ('٣٠٠ms', '３００', '3_00ms', '٠.٥s'):
            self.assertRaises(cmd_plan.InputError, cmd_plan.parse_downtime_ms,
                              text)
        for parse in (p.parse_size_bytes, p.parse_rate_bytes_s):
            for text in ('٣٢GiB', '３２GiB', '3_2GiB'):
                self.assertRaises(p.UnitError, parse, text)
        self.assertEqual(300.0, cmd_plan.parse_downtime_ms('300ms'))
        self.assertEqual(500.0, cmd_plan.parse_downtime_ms('0.5s'))
        self.assertEqual(GIB / 4, p.parse_working_set_bytes('25%', GIB))

    def test_link_efficiency(self):
        e = self.assertRaises(SystemExit, run_plan, '--memory', '1GiB',
                              '--bandwidth', '1Gbit/s',
                              '--link-efficiency', '٠.٥')
        self.assertEqual(2, e.code)
        self.assertEqual(0.5, cmd_plan.link_efficiency(' 0.5'))

    def test_link_efficiency_error_is_one_line(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertRaises(SystemExit, cmd_plan.main, [
                '--memory', '1GiB', '--bandwidth', '1Gbit/s',
                '--link-efficiency', '٠.٥'])
        err = err.getvalue()
        self.assertEqual(1, len(err.splitlines()))
        self.assertIn('--link-efficiency', err)
        self.assertIn('ASCII digits', err)
