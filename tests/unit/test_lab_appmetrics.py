"""The guest application's own account of what a migration cost it."""

import testtools

from nova_livemig_lab import appmetrics
from nova_livemig_lab.guest import ConsoleLine


def beats(app_field, rate_per_tick, stop=None, slow=None, seconds=30.0):
    """Heartbeats every 0.1 s; no beats and no work during ``stop``; half
    the work during ``slow`` (start_s, end_s)."""
    lines, t, counter, seq = [], 0.0, 0, 0
    while t <= seconds:
        if stop and stop[0] <= t < stop[1]:
            t = round(t + 0.1, 3)
            continue
        step = rate_per_tick / 2 if slow and slow[0] <= t < slow[1] else rate_per_tick
        counter += step
        lines.append(ConsoleLine(t, 'a', (
            f'HB seq={seq} bad=0 written={int(counter if app_field is None else 0)} '
            f'checked=0 ms={int(t * 1000)}' + (app_field(int(counter), t) if app_field else ''))))
        seq += 1
        t = round(t + 0.1, 3)
    return lines


class CostTest(testtools.TestCase):

    def test_writer_stopped_two_seconds_loses_two(self):
        lines = beats(None, 4_000_000, stop=(12.0, 14.0))
        c = appmetrics.cost(lines, 10.0, 20.0)
        self.assertEqual('writer', c.app)
        self.assertAlmostEqual(40e6, c.baseline_per_s, delta=1e6)
        self.assertAlmostEqual(2.0, c.work_lost_s, delta=0.15)

    def test_cpu_worker_at_half_speed_for_ten_seconds_loses_five(self):
        lines = beats(lambda n, t: f' work={n}', 100, slow=(10.0, 20.0))
        c = appmetrics.cost(lines, 10.0, 25.0)
        self.assertEqual('cpu', c.app)
        self.assertAlmostEqual(5.0, c.work_lost_s, delta=0.2)
        self.assertIsNone(c.latency_p99_ms)

    def test_nothing_lost_without_a_stop(self):
        c = appmetrics.cost(beats(lambda n, t: f' work={n}', 100), 10.0, 20.0)
        self.assertAlmostEqual(0.0, c.work_lost_s, delta=0.05)

    def test_server_latencies_from_the_guest_buckets(self):
        # 20 requests a tick in bucket 26 (96..112 us); one tick after the
        # start, a 1 s stall: its requests in bucket 79 (~1.0-1.2 s).
        def field(n, t):
            if abs(t - 12.0) < 1e-6:
                return f' req={n} lat=1100000 lh=26:10,79:10'
            return f' req={n} lat=110 lh=26:20'
        c = appmetrics.cost(beats(field, 20), 10.0, 20.0)
        self.assertEqual('server', c.app)
        self.assertEqual(2000, c.requests)
        self.assertAlmostEqual(0.112, c.latency_p50_ms, places=3)
        self.assertGreater(c.latency_p999_ms, 1000.0)
        self.assertLess(c.latency_p99_ms, 1.0)
        self.assertGreater(c.latency_max_ms, 1000.0)

    def test_bucket_bounds_match_the_guest(self):
        # dirtier.c: idx = 4 * floor(log2 us) + next two bits.
        for us, idx in ((1, 0), (2, 4), (3, 6), (5, 9), (96, 26), (1000, 39)):
            self.assertLessEqual(appmetrics.bucket_floor_us(idx), us)
            self.assertGreater(appmetrics.bucket_floor_us(idx + 1), us)

    def test_too_little_history_is_no_answer(self):
        self.assertIsNone(appmetrics.cost(beats(None, 1000, seconds=5.0), 0.5, 4.0))
        self.assertIsNone(appmetrics.cost([], 0.5, 4.0))


class UnseenStopTest(testtools.TestCase):

    def test_a_stop_of_the_whole_vm_adds_the_requests_clients_sent(self):
        # The guest's clock stands still for 2 s (ms unchanged across a
        # 2.1 s host gap): 200 req/s x 2 s wait 0..2 s each.
        before = appmetrics.Beat(10.0, 0, 10_000)
        after = appmetrics.Beat(12.1, 0, 10_100)
        added = appmetrics.unseen_stop(before, after, 200.0)
        self.assertEqual(400, sum(added.values()))
        histogram = dict(added)
        self.assertGreater(appmetrics.percentile_ms(histogram, 0.99), 1900.0)
        self.assertLess(appmetrics.percentile_ms(histogram, 0.5), 1300.0)

    def test_clocks_in_step_add_nothing(self):
        before = appmetrics.Beat(10.0, 0, 10_000)
        after = appmetrics.Beat(10.15, 0, 10_100)
        self.assertEqual({}, appmetrics.unseen_stop(before, after, 200.0))

    def test_buckets_match_the_guest(self):
        for us, idx in ((1, 0), (2, 4), (3, 6), (5, 9), (96, 26), (1000, 39)):
            self.assertEqual(idx, appmetrics.latency_bucket(us * 1000))


class ScheduledWriterTest(testtools.TestCase):
    """A writer held to its own schedule: a step up is not a gain."""

    @staticmethod
    def lines(rate_at, stop=None, seconds=40.0):
        out, t, written, seq = [], 0.0, 0, 0
        while t <= seconds:
            if not (stop and stop[0] <= t < stop[1]):
                written += int(rate_at(int(t * 1000)) / 10)
                text = f'HB seq={seq} bad=0 written={written} checked=0 ms={int(t * 1000)}'
                out.append(ConsoleLine(t, 'a', text))
                seq += 1
            t = round(t + 0.1, 3)
        return out

    def test_a_step_up_during_the_migration_is_no_gain(self):
        from nova_livemig_lab.guest import Pattern
        step = Pattern('steady', (('STEP_AT_S', 15), ('STEP_RATE', 40)))

        def rate(ms):
            return step.write_rate_at(8, ms)
        # Stopped 2 s after the step, with the clocks in step (the guest's
        # own clock runs on here: a throttled vCPU, not a stopped VM).
        lines = self.lines(rate, stop=(20.0, 22.0))
        c = appmetrics.cost(lines, 10.0, 30.0, write_rate=rate)
        self.assertAlmostEqual(2.0, c.work_lost_s, delta=0.2)
        clean = appmetrics.cost(self.lines(rate), 10.0, 30.0, write_rate=rate)
        self.assertAlmostEqual(0.0, clean.work_lost_s, delta=0.1)
        # Held to its pre-migration rate alone, the step looked like a gain.
        self.assertAlmostEqual(0.0, appmetrics.cost(lines, 10.0, 30.0).work_lost_s, delta=0.01)

    def test_a_bursty_writer_loses_nothing_in_its_quiet_spells(self):
        from nova_livemig_lab.guest import Pattern
        bursty = Pattern('bursty', (('BURST_ON_MS', 4000), ('BURST_OFF_MS', 2000)))

        def rate(ms):
            return bursty.write_rate_at(40, ms)
        c = appmetrics.cost(self.lines(rate), 10.0, 30.0, write_rate=rate)
        self.assertAlmostEqual(0.0, c.work_lost_s, delta=0.1)
