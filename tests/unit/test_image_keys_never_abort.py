"""No image property can make a migration abort that would otherwise complete.

Image properties are set by whoever uploads the image, often a tenant. Two
proofs that none of them can make the tenant's instance unmovable:

* the resolved policy: for every key and hostile value, on hosts with
  every kind of ladder, the ladder, the downtime ceiling and the deadline's
  caps are the operator's, the deadline's floor only rises, and post-copy
  stays armed wherever the ladder uses it;
* the controller itself, run by the planner against the pre-copy model:
  every migration that completes under the host's policy still completes
  with the image's keys.
"""

import dataclasses

import testtools

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext import instance_policy as ip
from nova_livemig_ext import job
from nova_livemig_ext import planner
from nova_livemig_ext import policy as lp

GIB = planner.GIB
# 1 Gbit/s less framing, as the planner reads a line rate.
GBIT_S = 1e9 / 8 * planner.DEFAULT_LINK_EFFICIENCY

BASE = lp.MigrationPolicy()
HOSTS = {
    'default': BASE,
    'downtime only': BASE.replace(ladder=('downtime', 'abort')),
    'abort only': BASE.replace(ladder=('abort',)),
    'no ladder': BASE.replace(ladder=()),
    'pause': BASE.replace(ladder=('downtime', 'pause', 'abort')),
    'post-copy': BASE.replace(
        permit_post_copy=True,
        ladder=('downtime', 'auto_converge', 'postcopy', 'abort')),
    'post-copy armed, off the ladder': BASE.replace(
        permit_post_copy=True, ladder=('downtime', 'pause', 'abort')),
    'post-copy and pause': BASE.replace(
        permit_post_copy=True, ladder=('postcopy', 'pause', 'abort')),
    'tight deadline': BASE.replace(
        ladder=('downtime', 'abort'), max_downtime_ms=2000,
        deadline_link_multiple=2.0),
    'per-GiB cap': BASE.replace(completion_timeout_s_per_gib=30),
    'low ceiling': BASE.replace(max_downtime_ms=200,
                                initial_downtime_ms=150),
}

HOSTILE = {
    'max_downtime_ms': ['100', '150', '299', '300', '500', '60000', '99',
                        '0', '-1', '٤٠٠', '４００', '4_00', '1e3', ''],
    'ladder': ['', ',', 'abort', 'downtime,abort', 'pause,abort',
               'postcopy,abort', 'auto_converge', 'downtime', 'pause',
               'downtime,auto_converge,postcopy,pause,abort',
               'abort\nWARNING forged', 'downtime,abort,abort'],
    'permit_post_copy': ['false', 'no', '0', 'off', 'true', 'maybe', ''],
    'completion_timeout_s_per_gib': ['1', '5', '60', '600', '86400',
                                     '86401', '0', '-5', '١', '1_0',
                                     '1e400', ''],
}
SIZES_GIB = (1 / 4096.0, 0.5, 4.0, 64.0, 1024.0)


def image(name, value):
    return {'image_livemig_ext:%s' % name: value}


def link_deadline_s(policy, size_gib, bandwidth_bytes_s):
    """The deadline the controller derives for a link of this speed."""
    plan = planner.livemig_flags.plan_migration(
        policy, planner.ANY_HOST, planner.livemig_flags.InstanceFacts())
    config = job.controller_config(policy, plan, size_gib)
    return ctl.link_deadline_s(config, config.transfer_bytes,
                               bandwidth_bytes_s)


class ResolvedPolicyTest(testtools.TestCase):
    """Every image key and hostile value, on every kind of host."""

    CHANGEABLE = {'initial_downtime_ms', 'deadline_floor_s',
                  'permit_post_copy'}

    def test_never_less_room_to_complete(self):
        failures = []
        for host_name, host in HOSTS.items():
            for size in SIZES_GIB:
                ref = ip.resolve(host, {}, {}, size).policy
                for name, values in HOSTILE.items():
                    for value in values:
                        got = ip.resolve(host, {}, image(name, value),
                                         size).policy
                        why = self.less_room(ref, got, size)
                        if why:
                            failures.append('%s, %.4g GiB, %s=%r: %s' % (
                                host_name, size, name, value, why))
        self.assertEqual([], failures, '\n'.join(failures))

    def less_room(self, ref, got, size):
        for field in dataclasses.fields(lp.MigrationPolicy):
            if field.name in self.CHANGEABLE:
                continue
            if getattr(ref, field.name) != getattr(got, field.name):
                return '%s changed' % field.name
        if got.initial_downtime_ms > ref.initial_downtime_ms:
            return 'a higher starting limit'
        if (got.initial_downtime_ms != ref.initial_downtime_ms
                and 'downtime' not in got.ladder):
            return 'a lower limit with no downtime rung to raise it'
        if got.deadline_floor_s < ref.deadline_floor_s:
            return 'a lower deadline floor'
        if job.deadline_s(got, size) != job.deadline_s(ref, size):
            return 'another deadline cap'
        for bandwidth in (1e6, 1e8, GBIT_S, 1e10):
            if (link_deadline_s(got, size, bandwidth)
                    < link_deadline_s(ref, size, bandwidth)):
                return 'a shorter deadline at %g B/s' % bandwidth
        if ref.permit_post_copy != got.permit_post_copy and (
                'postcopy' in ref.ladder):
            return 'post-copy disarmed though the ladder uses it'
        return None

    def test_flavor_keeps_full_power(self):
        # The operator's flavor can do what an image cannot.
        host = HOSTS['post-copy']
        for name, value, field, want in [
                ('ladder', 'abort', 'ladder', ('abort',)),
                ('max_downtime_ms', '100', 'max_downtime_ms', 100),
                ('completion_timeout_s_per_gib', '1',
                 'completion_timeout_s_per_gib', 1),
                ('permit_post_copy', 'false', 'ladder',
                 ('downtime', 'auto_converge', 'abort'))]:
            resolved = ip.resolve(host, {'livemig_ext:%s' % name: value},
                                  {}, 4.0)
            self.assertEqual((), resolved.ignored, name)
            self.assertEqual(want, getattr(resolved.policy, field), name)


def scenario(memory_gib, dirty_rate_bytes_s=0.0, working_set_gib=None):
    return planner.Scenario(
        memory_bytes=memory_gib * GIB, bandwidth_bytes_s=GBIT_S,
        dirty_rate_bytes_s=dirty_rate_bytes_s,
        working_set_bytes=(None if working_set_gib is None
                           else working_set_gib * GIB))


# Guests that each need a different remedy over 1 Gbit/s.
SCENARIOS = {
    # One pass takes 550 s: only the link-derived deadline lets it finish.
    '64 GiB idle': scenario(64),
    # 200 MB/s over 4 GiB: auto-converge, post-copy or nothing.
    '8 GiB writing 200 MB/s': scenario(8, 200e6, 4),
    # Fits 300 ms, not 100 ms: converges at the start or on the downtime
    # rung.
    'working set of 300 ms': scenario(4, 60e6, 0.03),
    # Needs the downtime rung up to 500 ms.
    'working set of 460 ms': scenario(4, 100e6, 0.05),
    # Rewrites all of its memory: post-copy or nothing.
    '16 GiB rewritten': scenario(16, 110e6, 16),
}
# Values an image can set that change the policy at all (the others are
# ignored: the test above shows the policy is then the host's).
APPLIED = {
    'max_downtime_ms': ['100', '299'],
    'permit_post_copy': ['false'],
    'completion_timeout_s_per_gib': ['1', '60', '86400'],
}


class ControllerOutcomeTest(testtools.TestCase):
    """The real controller against the model, with and without the keys."""

    def check_host(self, *host_names):
        failures, compared = [], 0
        for host_name in host_names:
            host = HOSTS[host_name]
            for scenario_name, scene in SCENARIOS.items():
                size = scene.memory_bytes / GIB
                ref_policy = ip.resolve(host, {}, {}, size).policy
                ref = planner.predict_ladder(scene, ref_policy)
                if ref.outcome != 'completed':
                    continue
                for name, values in APPLIED.items():
                    for value in values:
                        got_policy = ip.resolve(host, {}, image(name, value),
                                                size).policy
                        if got_policy == ref_policy:
                            continue
                        compared += 1
                        got = planner.predict_ladder(scene, got_policy)
                        if got.outcome != 'completed':
                            failures.append(
                                '%s, %s, %s=%r: %s after %.0f s (completes '
                                'in %.0f s without it)' % (
                                    host_name, scenario_name, name, value,
                                    got.outcome, got.total_s, ref.total_s))
        self.assertEqual([], failures, '\n'.join(failures))
        self.assertGreater(compared, 0)

    def test_default_host(self):
        self.check_host('default', 'per-GiB cap')

    def test_downtime_hosts(self):
        self.check_host('downtime only', 'tight deadline', 'low ceiling')

    def test_pause_and_post_copy_hosts(self):
        self.check_host('pause', 'post-copy',
                        'post-copy armed, off the ladder')

    def test_the_reported_cases_complete(self):
        # completion_timeout_s_per_gib=1 on a 64 GiB guest at 1 Gbit/s gave
        # a 320 s deadline: aborted at 321 s where it needs 598 s.
        scene = SCENARIOS['64 GiB idle']
        got = planner.predict_ladder(scene, ip.instance_policy(
            BASE, {}, image('completion_timeout_s_per_gib', '1'), 64.0))
        self.assertEqual('completed', got.outcome)
        self.assertGreater(got.deadline_s, 598)
        # An image ladder without a completing rung, on a guest writing
        # 200 MB/s: aborted at the deadline where it completes without it.
        scene = SCENARIOS['8 GiB writing 200 MB/s']
        for ladder in ('', 'abort', 'downtime,abort'):
            for host in (HOSTS['default'], HOSTS['post-copy']):
                got = planner.predict_ladder(scene, ip.instance_policy(
                    host, {}, image('ladder', ladder), 8.0))
                self.assertEqual('completed', got.outcome, (ladder, host))
