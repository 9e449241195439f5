"""Tests for benchmarks.workloads and benchmarks.drain."""

import math
import statistics

import testtools

from benchmarks import drain
from benchmarks import policies
from benchmarks import simulator as sim
from benchmarks import workloads

GIB = sim.GIB


class TestWorkloads(testtools.TestCase):

    def test_reproducible(self):
        a = workloads.cases(5)
        b = workloads.cases(5)
        self.assertEqual([c.key for c in a], [c.key for c in b])
        self.assertEqual(5 * len(workloads.FAMILIES), len(a))

    def test_dirty_rates_do_not_depend_on_the_link(self):
        cases = workloads.cases(60, families=('steady',))
        rates = [c.workload.dirty_rate_bytes_s for c in cases]
        self.assertGreaterEqual(min(rates), workloads.MIN_DIRTY_BYTES_S)
        self.assertLessEqual(max(rates), workloads.MAX_DIRTY_BYTES_S)
        slow = [math.log(c.workload.dirty_rate_bytes_s) for c in cases
                if c.link_gbit_s <= 10]
        fast = [math.log(c.workload.dirty_rate_bytes_s) for c in cases
                if c.link_gbit_s > 10]
        # The same distribution on slow and fast links (log-uniform over
        # 8.3 e-folds: means within 1.5 of each other).
        self.assertLess(abs(statistics.mean(slow) - statistics.mean(fast)),
                        1.5)
        # Some guests dirty faster than their link, most do not.
        above = sum(1 for c in cases if c.workload.dirty_rate_bytes_s
                    > c.workload.bandwidth_bytes_s)
        self.assertLess(0, above)
        self.assertLess(above, len(cases) / 2)

    def test_families_shape_the_guest(self):
        by = {f: workloads.cases(8, families=(f,)) for f in
              workloads.FAMILIES}
        for c in by['paced']:
            w = c.workload
            need = w.dirty_rate_bytes_s / w.write_capacity_bytes_s
            self.assertTrue(0.05 <= need <= 0.5)
        self.assertTrue(all(c.workload.popularity in ('uniform', 'skewed')
                            for c in by['random-writes']))
        self.assertTrue(all(c.workload.bursty for c in by['bursty']))
        self.assertTrue(all(c.workload.rate_steps for c in by['rate-step']))
        self.assertTrue(all(c.workload.ws_growth_bytes_s > 0
                            for c in by['growing-ws']))
        self.assertTrue(all(512 * GIB <= c.workload.memory_bytes
                            <= 1024 * GIB for c in by['huge']))
        self.assertTrue(all(c.link_gbit_s >= 25 for c in by['fast-link']))
        for c in by['steady']:
            self.assertIsNone(c.workload.write_capacity_bytes_s)
            self.assertEqual(workloads.STREAM_LIMIT_BYTES_S,
                             c.workload.stream_limit_bytes_s)

    def test_the_stream_limit_is_a_parameter(self):
        slow = workloads.cases(2, stream_limit_bytes_s=0.3e9)
        base = workloads.cases(2)
        self.assertEqual([c.key for c in base], [c.key for c in slow])
        self.assertTrue(all(c.workload.stream_limit_bytes_s == 0.3e9
                            for c in slow))

    def test_the_seeds_case(self):
        seeds = workloads.seed_cases()
        self.assertEqual(len(workloads.SEED_DIRTY_FRACTIONS), len(seeds))
        link = workloads.link_bytes_s(1)
        # 1 Gbit/s carries about 110 MiB/s of pages.
        self.assertAlmostEqual(110, link / sim.MIB, delta=1)
        for c, fraction in zip(seeds, workloads.SEED_DIRTY_FRACTIONS):
            w = c.workload
            self.assertEqual(32 * GIB, w.memory_bytes)
            self.assertEqual(w.memory_bytes, w.working_set_bytes)
            self.assertEqual(1.0, w.touched_fraction)
            self.assertAlmostEqual(fraction * link, w.dirty_rate_bytes_s)
            self.assertEqual(workloads.SEED_FAMILY, c.family)
        self.assertEqual((0.0, 2.0), (workloads.SEED_DIRTY_FRACTIONS[0],
                                      workloads.SEED_DIRTY_FRACTIONS[-1]))

    def test_drains(self):
        d = workloads.drain_cases(((3, 10),))[0]
        self.assertEqual(3, len(d.guests))
        total = sum(g.workload.nonzero_bytes for g in d.guests)
        self.assertAlmostEqual(total / workloads.link_bytes_s(10),
                               d.lower_bound_s)


def idle_guest(memory_gib, link_gbit_s=10):
    w = sim.Workload(memory_bytes=memory_gib * GIB,
                     bandwidth_bytes_s=workloads.link_bytes_s(link_gbit_s),
                     dirty_rate_bytes_s=0.0, working_set_bytes=0,
                     stream_limit_bytes_s=workloads.STREAM_LIMIT_BYTES_S)
    return workloads.Case(f'idle{memory_gib}', 'steady', link_gbit_s, w)


class TestDrain(testtools.TestCase):

    def test_fair_shares(self):
        self.assertEqual([50.0, 50.0], drain.fair_shares(100, [80, 80]))
        self.assertEqual([20.0, 80.0], drain.fair_shares(100, [20, 90]))
        self.assertEqual([10.0, 10.0], drain.fair_shares(100, [10, 10]))

    def test_idle_guests_leave_at_link_speed_under_any_concurrency(self):
        case = workloads.DrainCase('t', 25, tuple(idle_guest(8, 25)
                                                  for _ in range(4)))
        one = drain.run_drain(policies.by_name('nova34'), case)
        four = drain.run_drain(policies.by_name('proxmox'), case)
        # One stream moves 1.25 GB/s of a 2.9 GB/s link: four at once
        # fill it, one at a time cannot.
        self.assertEqual(0, one['guests_left'])
        self.assertAlmostEqual(4 * 8 * GIB / 1.25e9, one['host_empty_s'],
                               delta=6)
        self.assertLess(four['host_empty_s'], 0.6 * one['host_empty_s'])
        self.assertGreaterEqual(four['host_empty_s'], case.lower_bound_s)

    def test_an_aborted_guest_keeps_the_host_busy(self):
        busy = sim.Workload(
            memory_bytes=2 * GIB, bandwidth_bytes_s=workloads.link_bytes_s(1),
            dirty_rate_bytes_s=1e9, working_set_bytes=2 * GIB,
            write_capacity_bytes_s=1e12)
        case = workloads.DrainCase('t', 1, (
            idle_guest(1, 1),
            workloads.Case('busy', 'steady', 1, busy)))
        result = drain.run_drain(policies.by_name('kubevirt'), case)
        self.assertEqual(1, result['guests_left'])
        self.assertIsNone(result['host_empty_s'])
