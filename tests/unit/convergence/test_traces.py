"""Replays of real migrations recorded in the lab (tests/traces/*.json).

Each trace holds the jobStats the lab read every poll, the actions the
recorder itself took (a replay stops at the first one: after it the job
reacts to something the controller did not decide) and libvirt's
completed-job statistics.
"""

import glob
import json
import os

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import estimator as e
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence import upstream as u

A = c.Action
MIB = 1024 * 1024
TRACES = os.path.join(os.path.dirname(__file__), '..', '..', 'traces')


def load(name):
    path = os.path.join(TRACES, name + '.json')
    if not os.path.exists(path):
        raise testtools.testcase.TestSkipped('no recorded trace ' + name)
    with open(path) as f:
        return json.load(f)


def entries(trace):
    # The lab writes "trace"; the first format draft said "samples".
    return trace.get('trace') or trace.get('samples') or []


def first_action_s(trace):
    actions = trace.get('actions') or []
    return min((a['t'] for a in actions), default=None)


def replay(trace, decider, until_s=None):
    """Feed the recorded samples; return (decisions, decider)."""
    timeline = entries(trace)
    until_s = first_action_s(trace) if until_s is None else until_s
    decisions = list(decider.start(timeline[0]['t']))
    for entry in timeline:
        if until_s is not None and entry['t'] >= until_s:
            break
        sample = samples.sample_from_job_stats(entry['stats'])
        for decision in decider.observe(sample, entry['t']):
            decisions.append(decision)
            decider.acknowledge(decision, True, entry['t'])
    return decisions, decider


def config_for(trace, **changes):
    flags = trace.get('metadata', {}).get('flag_names', [])
    settings = dict(auto_converge_armed='AUTO_CONVERGE' in flags,
                    postcopy_armed='POSTCOPY' in flags,
                    postcopy_allowed=True)
    settings.update(changes)
    return c.ControllerConfig(**settings)


def effects(decisions):
    return [d for d in decisions[1:] if d.has_effect]


class TestRecordedTraces(testtools.TestCase):

    def test_every_trace_replays_within_the_ceiling(self):
        paths = sorted(glob.glob(os.path.join(TRACES, '*.json')))
        if not paths:
            self.skipTest('no recorded traces')
        for path in paths:
            with open(path) as f:
                trace = json.load(f)
            config = config_for(trace, deadline_s=60, pause_allowed=True)
            decisions, _ = replay(trace, c.Controller(config))
            for decision in decisions:
                if decision.downtime_ms is not None:
                    self.assertLessEqual(decision.downtime_ms,
                                         config.max_downtime_ms, path)

    def test_converging_is_left_alone(self):
        trace = load('converging')
        decisions, controller = replay(
            trace, c.Controller(config_for(trace, deadline_s=60)))
        self.assertEqual([A.SET_DOWNTIME], [d.action for d in decisions])
        link_bytes_s = trace['metadata']['link_measured_mb_s'] * 1e6
        bandwidth = controller.estimate.bandwidth_bytes_s
        self.assertLess(abs(bandwidth - link_bytes_s), 0.15 * link_bytes_s)

    def test_non_converging_plateau_found_two_passes_after_the_first(self):
        trace = load('non-converging')
        config = config_for(trace, deadline_s=3600,
                            ladder=('downtime', 'abort'))
        decisions, controller = replay(trace, c.Controller(config))
        boundaries = controller.estimate.boundaries
        first_stall = next(d for d in decisions
                           if 'stopped shrinking' in d.reason)
        # Pass 1 ends at the first boundary; two more passes at most.
        self.assertLessEqual(first_stall.at_s, boundaries[2].at_s + 1.0)
        self.assertEqual([], effects(decisions))
        # The guest rewrites dirty_mb megabytes: that is the working set.
        truth = trace['metadata']['dirty_mb'] * 1e6
        for boundary in boundaries:
            self.assertLess(abs(boundary.working_set_bytes - truth),
                            0.1 * truth)

    def test_non_converging_aborted_at_the_deadline(self):
        trace = load('non-converging')
        config = config_for(trace, deadline_s=55)
        decisions, _ = replay(trace, c.Controller(config))
        self.assertEqual([A.ABORT], [d.action for d in effects(decisions)])
        self.assertGreaterEqual(effects(decisions)[0].at_s, 55)
        skipped = ' '.join(d.reason for d in decisions)
        self.assertIn('skipping downtime', skipped)
        self.assertIn('auto-converge was not armed', skipped)

    def test_upstream_does_nothing_useful_in_a_minute(self):
        trace = load('non-converging')
        memory_mib = entries(trace)[-1]['stats']['memory_total'] / MIB
        config = u.UpstreamConfig(data_gib=u.nova_data_gib(memory_mib))
        decisions, _ = replay(trace, u.UpstreamController(config))
        self.assertEqual([(A.SET_DOWNTIME, 50)],
                         [(d.action, d.downtime_ms) for d in decisions])

    def test_auto_converge_gets_its_chance_without_any_other_effect(self):
        trace = load('auto-converge')
        config = config_for(trace, deadline_s=300,
                            ladder=('downtime', 'auto_converge', 'abort'))
        decisions, controller = replay(trace, c.Controller(config))
        self.assertEqual([], effects(decisions))
        self.assertEqual(1, len([d for d in decisions
                                 if d.rung == 'auto_converge']))
        # QEMU throttled by itself, past its first step (initial 50%,
        # increment 20% in this recording): the rung really was in effect.
        self.assertGreaterEqual(max(
            entry['stats'].get('auto_converge_throttle', 0)
            for entry in entries(trace)), 70)

    def test_downtime_raised_predicted_pause(self):
        # At the recorder's action the controller's estimate of a forced
        # switchover's downtime meets libvirt's completed figure.
        trace = load('downtime-raised')
        decisions, controller = replay(
            trace, c.Controller(config_for(trace, deadline_s=300)))
        self.assertEqual([], effects(decisions))
        actual_ms = trace['completed_stats']['downtime']
        predicted_ms = e.pause_downtime_ms(controller.estimate)
        self.assertLess(abs(predicted_ms - actual_ms), 0.3 * actual_ms)

    def test_paused_copy_and_post_copy_need_nothing_before_the_switch(self):
        for name in ('paused', 'post-copy'):
            try:
                trace = load(name)
            except testtools.testcase.TestSkipped:
                continue
            decisions, _ = replay(trace, c.Controller(
                config_for(trace, deadline_s=300)))
            self.assertEqual([], effects(decisions), name)
