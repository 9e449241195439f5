"""Tests for benchmarks.simulator: QEMU's pre-copy loop, event by event."""

import testtools

from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl

MIB = sim.MIB
GIB = sim.GIB
B = 100 * MIB  # bytes/s


def workload(memory=GIB, ratio=0.0, ws=1.0, **kw):
    return sim.Workload(memory_bytes=memory, bandwidth_bytes_s=B,
                        dirty_rate_bytes_s=ratio * B,
                        working_set_bytes=int(ws * memory), **kw)


def run_plain(w, settings=sim.JobSettings(), seconds=600.0):
    m = sim.Migration(w, settings)
    m.advance(seconds)
    return m


class TestPrecopy(testtools.TestCase):

    def test_idle_guest_takes_one_pass(self):
        m = run_plain(workload())
        self.assertEqual('completed', m.phase)
        self.assertAlmostEqual(GIB / B, m.finished_at_s, delta=0.5)
        # setup sync, end of the bulk pass, completion
        self.assertEqual(3, m.iteration)
        self.assertLess(m.downtime_ms, 300)

    def test_zero_pages_cost_nothing(self):
        m = run_plain(workload(touched_fraction=0.5))
        self.assertAlmostEqual(GIB / B / 2, m.finished_at_s, delta=0.5)
        # The last bulk chunk is copied at the switchover, zeros and all.
        self.assertAlmostEqual(GIB / 2, m.processed_bytes, delta=0.03 * GIB)

    def test_geometric_passes(self):
        m = run_plain(workload(ratio=0.5))
        self.assertEqual('completed', m.phase)
        self.assertAlmostEqual(2 * GIB / B, m.finished_at_s,
                               delta=0.1 * GIB / B)
        self.assertGreater(m.iteration, 6)

    def test_never_converges_above_the_link(self):
        m = run_plain(workload(ratio=2.0, ws=0.5), seconds=300)
        self.assertEqual('precopy', m.phase)
        self.assertGreater(m.iteration, 40)

    def test_small_working_set_fits(self):
        m = run_plain(workload(ratio=2.0, ws=0.02))
        self.assertEqual('completed', m.phase)

    def test_raising_downtime_converges(self):
        m = sim.Migration(workload(ratio=2.0, ws=0.25), sim.JobSettings())
        m.advance(30)
        self.assertTrue(m.running)
        m.set_max_downtime_ms(5000)
        m.advance(30)
        self.assertEqual('completed', m.phase)
        self.assertGreater(m.downtime_ms, 2000)

    def test_paused_copy_is_down_for_the_whole_copy(self):
        m = run_plain(workload(ratio=1.0), sim.JobSettings(live=False))
        self.assertEqual('completed', m.phase)
        self.assertAlmostEqual(m.finished_at_s * 1000, m.downtime_ms,
                               delta=500)

    def test_pause_mid_job_ends_at_the_next_sync(self):
        m = sim.Migration(workload(ratio=2.0), sim.JobSettings())
        m.advance(20)
        m.suspend()
        m.advance(30)
        self.assertEqual('completed', m.phase)
        self.assertGreater(m.downtime_ms, 1000)

    def test_bursty_writer_has_the_same_mean(self):
        w = workload(ratio=0.5, burst_period_s=20, burst_duty=0.25)
        rates = [w.dirty_bytes_s(t / 10) for t in range(200)]
        self.assertAlmostEqual(0.5 * B, sum(rates) / len(rates),
                               delta=0.01 * B)
        self.assertEqual(5.0, w.next_rate_change_s(0.0))
        self.assertEqual(20.0, w.next_rate_change_s(5.0))

    def test_slow_bitmap_sync_can_keep_a_guest_from_converging(self):
        # Pages dirtied while the bitmap is scanned land in the next pass:
        # with a slow sync (TCG) a guest at half the link never fits.
        fast = run_plain(workload(ratio=0.5))
        slow = run_plain(workload(ratio=0.5, sync_base_s=0.1), seconds=120)
        self.assertEqual('completed', fast.phase)
        self.assertEqual('precopy', slow.phase)

    def test_steady_passes_are_skipped_without_changing_the_result(self):
        w = workload(ratio=2.0, ws=0.5)
        coarse = sim.Migration(w, sim.JobSettings())
        coarse.advance(2000)
        fine = sim.Migration(w, sim.JobSettings())
        for _ in range(4000):
            fine.advance(0.5)
        self.assertLessEqual(abs(coarse.iteration - fine.iteration), 2)
        self.assertAlmostEqual(coarse.processed_bytes, fine.processed_bytes,
                               delta=0.01 * fine.processed_bytes)


class TestAutoConverge(testtools.TestCase):

    def test_throttle_steps(self):
        settings = sim.JobSettings(auto_converge=True,
                                   throttle_initial_pct=30,
                                   throttle_increment_pct=20)
        m = sim.Migration(workload(ratio=2.0), settings)
        seen = []
        while m.running and m.now_s < 600:
            m.advance(0.5)
            if not seen or seen[-1] != m.throttle_pct:
                seen.append(m.throttle_pct)
        self.assertEqual('completed', m.phase)
        self.assertEqual([0, 30, 50, 70], seen[:4])
        self.assertLessEqual(max(seen), sim.MAX_THROTTLE_PCT)
        self.assertGreater(m.throttle_s, 0)

    def test_a_paced_writer_ignores_a_light_throttle(self):
        w = workload(ratio=0.5, write_capacity_bytes_s=4 * B)
        m = sim.Migration(w, sim.JobSettings(auto_converge=True))
        m.throttle_pct = 50
        self.assertEqual(0.5 * B, m.guest_dirty_bytes_s())
        m.throttle_pct = 90
        self.assertAlmostEqual(0.4 * B, m.guest_dirty_bytes_s())


class TestPostcopy(testtools.TestCase):

    def test_postcopy_pulls_the_rest(self):
        m = sim.Migration(workload(ratio=2.0, ws=0.5),
                          sim.JobSettings(postcopy=True))
        m.advance(GIB / B + 1)
        m.start_postcopy()
        self.assertRaises(sim.SimulationError, m.abort)
        self.assertRaises(sim.SimulationError, m.start_postcopy)
        m.advance(60)
        self.assertEqual('completed', m.phase)
        self.assertLess(m.downtime_ms, 200)
        self.assertAlmostEqual(0.5 * GIB / B, m.postcopy_s, delta=1)

    def test_postcopy_needs_the_flag(self):
        m = sim.Migration(workload(), sim.JobSettings())
        self.assertRaises(sim.SimulationError, m.start_postcopy)


class TestDrive(testtools.TestCase):

    def test_abort_at_a_deadline(self):
        config = ctl.ControllerConfig(
            ladder=('downtime', 'abort'), deadline_s=60,
            initial_downtime_ms=300, max_downtime_ms=500)
        m = sim.Migration(workload(ratio=2.0, ws=0.5), sim.JobSettings())
        result = sim.drive(m, ctl.Controller(config), 0.5, 600)
        self.assertEqual('aborted', result.outcome)
        self.assertAlmostEqual(60, result.total_s, delta=1)
        self.assertIn('abort', result.actions[-1])

    def test_unfinished_at_the_horizon_is_not_aborted(self):
        config = ctl.ControllerConfig(ladder=(), deadline_s=10_000)
        m = sim.Migration(workload(ratio=2.0, ws=0.5), sim.JobSettings())
        result = sim.drive(m, ctl.Controller(config), 0.5, 100)
        self.assertEqual(sim.UNFINISHED, result.outcome)
        self.assertEqual('unfinished', result.outcome)
        self.assertFalse(result.completed)

    def test_job_stats_parse(self):
        from nova_livemig_ext.convergence import samples
        m = sim.Migration(workload(ratio=0.5), sim.JobSettings(
            auto_converge=True))
        m.advance(15)
        sample = samples.sample_from_job_stats(m.job_stats())
        self.assertTrue(sample.is_active)
        self.assertEqual(m.iteration, sample.iteration)
        self.assertEqual(0, sample.auto_converge_throttle_pct)


class TestGuestBehaviour(testtools.TestCase):
    """What belongs to the guest: pages it writes, its pace, its changes."""

    def test_random_writes_dirty_fewer_distinct_pages(self):
        seq = workload(ratio=0.5, ws=0.5)
        uni = workload(ratio=0.5, ws=0.5, popularity='uniform')
        skew = workload(ratio=0.5, ws=0.5, popularity='skewed')
        ws = 0.5 * GIB
        # Writing the working set's size once covers all of it only when
        # writes sweep it; random ones hit 1 - 1/e of it.
        self.assertAlmostEqual(ws, seq.unique_dirty_bytes(ws, ws))
        self.assertAlmostEqual(ws * (1 - 1 / 2.718281828),
                               uni.unique_dirty_bytes(ws, ws), delta=1e3)
        self.assertLess(skew.unique_dirty_bytes(ws, ws),
                        uni.unique_dirty_bytes(ws, ws))
        # ... and never more than the working set.
        self.assertLessEqual(skew.unique_dirty_bytes(100 * ws, ws), ws)

    def test_skewed_guest_converges_where_a_sweeping_one_does_not(self):
        sweep = run_plain(workload(ratio=1.5, ws=0.3), seconds=300)
        skewed = run_plain(workload(ratio=1.5, ws=0.3, popularity='skewed'),
                           seconds=300)
        self.assertEqual('precopy', sweep.phase)
        self.assertGreater(skewed.iteration, 3)
        # Skewed writes re-dirty the hot tenth, so each pass leaves less.
        self.assertLess(skewed.remaining_bytes, sweep.remaining_bytes)

    def test_rate_steps_and_their_events(self):
        w = workload(ratio=0.5, rate_steps=((30.0, 4.0),))
        self.assertEqual(0.5 * B, w.dirty_bytes_s(29.0))
        self.assertEqual(2.0 * B, w.dirty_bytes_s(30.0))
        self.assertEqual(30.0, w.next_rate_change_s(0.0))
        self.assertTrue(w.time_varying)
        self.assertFalse(workload(ratio=0.5).time_varying)

    def test_growing_working_set(self):
        w = workload(ratio=0.5, ws=0.1, ws_growth_bytes_s=MIB)
        self.assertAlmostEqual(0.1 * GIB, w.working_set_at(0.0), delta=1)
        self.assertAlmostEqual(0.1 * GIB + 100 * MIB, w.working_set_at(100),
                               delta=1)
        self.assertEqual(GIB, w.working_set_at(1e9))

    def test_throttle_costs_a_cpu_bound_writer_all_of_it(self):
        cpu = sim.Migration(workload(ratio=2.0), sim.JobSettings(
            auto_converge=True))
        paced = sim.Migration(
            workload(ratio=2.0, write_capacity_bytes_s=8 * B),
            sim.JobSettings(auto_converge=True))
        for m in (cpu, paced):
            m.advance(120)
        self.assertGreater(cpu.throttle_s, 0)
        self.assertAlmostEqual(cpu.throttle_s, cpu.throttle_lost_s)
        # The paced writer needs a quarter of its CPU: only the throttle
        # above 75 % costs it anything.
        self.assertLess(paced.throttle_lost_s, 0.5 * paced.throttle_s)

    def test_one_stream_cannot_fill_a_fast_link(self):
        w = workload(stream_limit_bytes_s=B / 4)
        one = run_plain(w)
        four = run_plain(w, sim.JobSettings(channels=4))
        self.assertAlmostEqual(4 * GIB / B, one.finished_at_s, delta=1)
        self.assertAlmostEqual(GIB / B, four.finished_at_s, delta=0.5)

    def test_postcopy_stall_of_a_busy_and_a_quiet_guest(self):
        def after_switch(ratio):
            m = sim.Migration(workload(ratio=ratio, ws=0.5),
                              sim.JobSettings(postcopy=True))
            # Half way through the bulk pass: half the memory is remote.
            m.advance(GIB / B / 2)
            m.start_postcopy()
            m.advance(60)
            return m
        busy, quiet = after_switch(2.0), after_switch(0.001)
        # A guest writing faster than pages come waits for its whole
        # remote working set, in one long pause.
        self.assertAlmostEqual(busy.postcopy_s, busy.postcopy_stall_s,
                               delta=0.5)
        self.assertGreater(busy.longest_pause_s, 1.0)
        # A quiet one waits a fault latency per page it touches.
        self.assertLess(quiet.postcopy_stall_s, 0.1)
        self.assertLess(quiet.longest_pause_s, 0.1)

    def test_a_bursty_guest_switched_in_a_quiet_window_still_stalls(self):
        # Bursts of 4 x the mean for a quarter of every 20 s: the switch
        # falls in the quiet part, but the guest writes during post-copy.
        def switched(burst_period_s):
            w = workload(memory=8 * GIB, ratio=0.5, ws=0.5,
                         burst_period_s=burst_period_s, burst_duty=0.25)
            m = sim.Migration(w, sim.JobSettings(postcopy=True))
            m.advance(8.0)
            if burst_period_s:
                self.assertEqual(0.0, w.dirty_bytes_s(m.now_s))
            m.start_postcopy()
            m.advance(600)
            self.assertEqual('completed', m.phase)
            self.assertGreater(m.postcopy_s, 30)
            return m
        bursty, steady = switched(20.0), switched(0.0)
        self.assertGreater(bursty.postcopy_stall_s, 1.0)
        # The same mean rate costs about the same, quiet switch or not.
        self.assertAlmostEqual(steady.postcopy_stall_s,
                               bursty.postcopy_stall_s,
                               delta=0.25 * steady.postcopy_stall_s)

    def test_pages_arriving_anyway_cost_no_fault(self):
        # A slow guest touches few pages before the background copy
        # brings them: it waits less than a fault for each page it writes.
        m = sim.Migration(workload(memory=4 * GIB, ratio=0.005, ws=1.0),
                          sim.JobSettings(postcopy=True))
        m.advance(1.0)
        m.start_postcopy()
        m.advance(600)
        written = 0.005 * B * m.postcopy_s
        faults_if_all_remote = written / 4096 * sim.FAULT_LATENCY_S
        self.assertGreater(m.postcopy_stall_s, 0.2 * faults_if_all_remote)
        self.assertLess(m.postcopy_stall_s, 0.7 * faults_if_all_remote)

    def test_throttle_stops_set_the_longest_stop(self):
        # CPU-bound at 5 x the link: QEMU's throttle climbs to 99 % and
        # stops the vCPUs 0.99 s at a time, longer than the downtime.
        m = sim.Migration(workload(ratio=5.0, ws=0.5),
                          sim.JobSettings(auto_converge=True))
        m.advance(900)
        self.assertEqual('completed', m.phase)
        self.assertEqual(sim.MAX_THROTTLE_PCT, m.max_throttle_pct)
        self.assertLess(m.downtime_ms, 500)
        self.assertAlmostEqual(0.99, m.longest_pause_s, places=3)
        result = sim.result_of(m, [])
        self.assertAlmostEqual(0.99, result.longest_pause_s, places=3)

    def test_bad_guests_are_refused(self):
        self.assertRaises(ValueError, workload, popularity='zipf')
        self.assertRaises(ValueError, workload, ws_growth_bytes_s=-1)
        self.assertRaises(ValueError, workload, stream_limit_bytes_s=0)
