"""When pre-copy needs help: the plateau and window rules, one by one."""

import dataclasses

import testtools

from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples

MIB = model.MIB


def boundary_samples(working_sets, bandwidth=10 * MIB):
    """One sample per pass boundary, the working set as remaining bytes.

    Each pass sends the previous working set at ``bandwidth`` and the
    guest dirties exactly the next one meanwhile.
    """
    out = []
    now_s = 0.0
    processed = 0
    remaining = 320 * MIB
    out.append((now_s, samples.JobSample(
        job_type=samples.JobType.UNBOUNDED, memory_total_bytes=320 * MIB,
        memory_remaining_bytes=remaining, memory_processed_bytes=0,
        iteration=1)))
    for index, working_set in enumerate(working_sets, start=1):
        pass_s = remaining / bandwidth
        now_s += pass_s
        processed += remaining
        remaining = working_set
        out.append((now_s, samples.JobSample(
            job_type=samples.JobType.UNBOUNDED,
            memory_total_bytes=320 * MIB, memory_remaining_bytes=remaining,
            memory_processed_bytes=processed, iteration=index + 1,
            dirty_rate_bytes_s=working_set / pass_s)))
    return out


def feed(config, timed_samples):
    state, _ = c.initial_state(config, 0.0)
    states = []
    for now_s, sample in timed_samples:
        state, _ = c.step(config, state, sample, now_s)
        states.append(state)
    return states


class TestStallRules(testtools.TestCase):

    # (name, working set after each pass in MiB, first boundary (1-based)
    #  at which the plateau is declared, or None)
    PLATEAUS = [
        ('flat', [100, 100, 100, 100], 3),
        ('flat with noise', [100, 103, 98, 101], 3),
        ('converging', [100, 50, 25, 12, 6], None),
        ('oscillating but trending down',
         [100, 60, 90, 50, 85, 45, 80, 40], None),
        ('shrinking too slowly', [100, 98, 96, 94], 3),
        ('growing', [100, 120, 140], 3),
        ('plateau after progress', [100, 50, 50, 50], 4),
    ]

    def test_plateau_within_two_passes_after_the_first(self):
        config = c.ControllerConfig()
        for name, working_sets_mib, expected in self.PLATEAUS:
            states = feed(config, boundary_samples(
                [w * MIB for w in working_sets_mib]))
            declared = [i for i, state in enumerate(states)
                        if c.plateau_trigger(config, state) is not None]
            self.assertEqual(expected, declared[0] if declared else None,
                             name)

    def test_no_plateau_when_the_working_set_fits_the_limit(self):
        # 2 MiB at 10 MiB/s fits 300 ms: QEMU switches by itself.
        config = c.ControllerConfig()
        states = feed(config, boundary_samples([2 * MIB] * 5))
        self.assertIsNone(c.plateau_trigger(config, states[-1]))

    def test_window_needs_a_projection_that_does_not_shrink(self):
        config = c.ControllerConfig(stall_window_s=30)
        # A 600 MiB working set: passes of 60 s, longer than the window.
        boundaries = boundary_samples([600 * MIB])
        at_boundary_s, first = boundaries[-1]
        now_s = at_boundary_s + 40
        # (dirty rate MiB/s, expected trigger)
        for dirty_mib_s, expected in [(2, None), (8, None),
                                      (12, c.TriggerKind.WINDOW)]:
            mid = dataclasses.replace(
                first, memory_remaining_bytes=200 * MIB,
                memory_processed_bytes=first.memory_processed_bytes
                + 400 * MIB, dirty_rate_bytes_s=dirty_mib_s * MIB)
            states = feed(config, boundaries + [(now_s, mid)])
            trigger = c.window_trigger(config, states[-1], now_s)
            self.assertEqual(expected, trigger and trigger.kind, dirty_mib_s)
