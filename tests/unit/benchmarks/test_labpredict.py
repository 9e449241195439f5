"""The simulator against the lab's recorded runs: mapping, fit, verdicts."""

import testtools

from benchmarks import labpredict
from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_lab import workloads as lab_workloads

MB = labpredict.MB
SYNC_S = 0.1
CAPACITY = 60 * MB


def workload(name, link_mb_s=14.4):
    return labpredict.sim_workload(lab_workloads.named(name), link_mb_s,
                                   SYNC_S, CAPACITY)


def lab_run(name, prediction, **changes):
    """A lab run whose figures are ``prediction``'s, with ``changes``."""
    run = {"name": name, "outcome": prediction.outcome,
           "total_s": prediction.total_s, "guest_pause_s": prediction.stop_s,
           "guest_work_lost_s": prediction.lost_s,
           "rungs": list(prediction.rungs)}
    run.update(changes)
    return run


class TestTheLabsGuestInTheSimulator(testtools.TestCase):

    def test_steady_writer(self):
        w = workload("steady")
        self.assertEqual(320 * labpredict.MIB, w.memory_bytes)
        self.assertEqual(120 * MB, w.working_set_bytes)
        self.assertEqual(40 * MB, w.dirty_rate_bytes_s)
        self.assertEqual(14.4 * MB, w.bandwidth_bytes_s)
        self.assertFalse(w.time_varying)
        self.assertFalse(w.cpu_app)

    def test_bursty_writer_keeps_its_burst_rate_and_mean(self):
        w = workload("bursty")
        self.assertEqual(6.0, w.burst_period_s)
        self.assertAlmostEqual(4 / 6, w.burst_duty)
        # 40 MB/s in a burst, 4 s of every 6: 26.7 MB/s on average.
        self.assertAlmostEqual(40 * MB, w.dirty_bytes_s(1.0))
        self.assertEqual(0.0, w.dirty_bytes_s(5.0))

    def test_growing_set_starts_after_the_lead_and_stops_at_its_top(self):
        w = workload("growing")
        lead = labpredict.LEAD_S
        self.assertEqual((16 + 4 * lead) * MB, w.working_set_at(0.0))
        self.assertEqual(160 * MB, w.working_set_at(1000.0))

    def test_step_up_steps_at_the_programs_time(self):
        w = workload("step-up")
        at = 15 - labpredict.LEAD_S
        self.assertEqual(8 * MB, w.dirty_bytes_s(at - 0.1))
        self.assertEqual(40 * MB, w.dirty_bytes_s(at))

    def test_cpu_worker_counts_every_throttled_second(self):
        self.assertTrue(workload("cpu-bound").cpu_app)
        self.assertFalse(workload("latency-server").cpu_app)

    def test_random_writer(self):
        self.assertEqual("uniform", workload("slow-random").popularity)


class TestThePoliciesInTheSimulator(testtools.TestCase):

    @staticmethod
    def settings(name):
        return labpredict.sim_settings(
            labpredict.lab_plan(labpredict.scenarios()[name].policy))

    @staticmethod
    def decider(name):
        scenario = labpredict.scenarios()[name]
        return labpredict.sim_decider(
            scenario, labpredict.lab_plan(scenario.policy))

    def test_settings_follow_the_planned_flags(self):
        defaults = self.settings("shipped defaults")
        self.assertTrue(defaults.live)
        self.assertTrue(defaults.auto_converge)
        self.assertFalse(defaults.postcopy)
        self.assertEqual((50, 20), (defaults.throttle_initial_pct,
                                    defaults.throttle_increment_pct))
        knobs = self.settings("QEMU 20/10 alone")
        self.assertEqual((20, 10), (knobs.throttle_initial_pct,
                                    knobs.throttle_increment_pct))
        paused = self.settings("paused copy")
        self.assertFalse(paused.live)
        first_pass = self.settings("post-copy after first pass")
        self.assertTrue(first_pass.postcopy)
        self.assertFalse(first_pass.auto_converge)

    def test_decision_makers_are_the_labs(self):
        self.assertIsInstance(self.decider("shipped defaults"),
                              ctl.Controller)
        self.assertEqual("Unwatched",
                         type(self.decider("QEMU 50/20 alone")).__name__)
        self.assertNotIsInstance(self.decider("Nova 34"), ctl.Controller)

    def test_paused_copy_stops_the_guest_for_the_whole_copy(self):
        w = workload("steady")
        p = labpredict.predict(labpredict.scenarios()["paused copy"], w)
        self.assertEqual("completed", p.outcome)
        self.assertEqual((), p.rungs)
        floor = w.nonzero_bytes / w.bandwidth_bytes_s
        self.assertGreater(p.stop_s, 0.9 * floor)
        # The guest is stopped for the whole job.
        self.assertAlmostEqual(p.total_s, p.stop_s, delta=0.2)

    def test_first_pass_baseline_takes_postcopy(self):
        p = labpredict.predict(
            labpredict.scenarios()["post-copy after first pass"],
            workload("steady"))
        self.assertEqual("completed", p.outcome)
        self.assertEqual(("postcopy",), p.rungs)
        self.assertGreater(p.postcopy_stall_s, 0.0)

    def test_a_refused_decision_used_no_rung(self):
        class Deciding:
            def start(self, now_s):
                return (ctl.Decision(action=ctl.Action.PAUSE, reason="r",
                                     at_s=now_s, rung="pause"),)

            def acknowledge(self, decision, applied, now_s):
                pass

        for applied, rungs in ((False, []), (True, ["pause"])):
            recorded = labpredict.Recorded(Deciding())
            decision, = recorded.start(0.0)
            recorded.acknowledge(decision, applied, 0.0)
            self.assertEqual(rungs, recorded.rungs())


class TestPredictionAgainstMeasurement(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.scenario = labpredict.scenarios()["bounded pause"]
        self.prediction = labpredict.predict(self.scenario, workload("steady"))

    def row(self, **changes):
        return labpredict.row_for(
            "steady", [lab_run(self.scenario.name, self.prediction, **changes)],
            self.scenario, workload("steady"))

    def test_the_same_figures_miss_nothing(self):
        self.assertEqual([], self.row().misses())

    def test_each_metric_is_judged(self):
        p = self.prediction
        self.assertEqual(["total"], self.row(total_s=p.total_s * 2).misses())
        self.assertEqual(["stop"],
                         self.row(guest_pause_s=p.stop_s * 3).misses())
        self.assertEqual(["lost"],
                         self.row(guest_work_lost_s=p.lost_s * 3).misses())
        self.assertEqual(["rungs"], self.row(rungs=["downtime"]).misses())
        self.assertIn("outcome", self.row(outcome="aborted").misses())

    def test_small_absolute_errors_are_within(self):
        self.assertTrue(labpredict.within(0.4, 0.1, 0.5, 0.5))
        self.assertFalse(labpredict.within(0.7, 0.1, 0.5, 0.5))
        self.assertTrue(labpredict.within(12.0, 10.0, 0.25))
        self.assertFalse(labpredict.within(13.0, 10.0, 0.25))

    def test_the_median_of_the_runs_that_ended_as_most_did(self):
        p = self.prediction
        runs = [lab_run(self.scenario.name, p, total_s=10.0),
                lab_run(self.scenario.name, p, total_s=30.0),
                lab_run(self.scenario.name, p, total_s=20.0),
                lab_run(self.scenario.name, p, total_s=99.0,
                        outcome="aborted")]
        row = labpredict.row_for("steady", runs, self.scenario,
                                 workload("steady"))
        self.assertEqual((4, p.outcome, 20.0), (row.runs, row.outcome,
                                                row.total_s))

    def test_tally_counts_misses_per_metric(self):
        rows = [self.row(), self.row(total_s=self.prediction.total_s * 2)]
        tally = labpredict.tally(rows)
        self.assertEqual((1, 2), tally["total"])
        self.assertEqual((0, 2), tally["stop"])


class TestTheFit(testtools.TestCase):

    def test_fit_finds_the_constants_the_lab_behaved_by(self):
        """Lab runs made from a simulation with known constants: the fit
        must find those constants back, with no error."""
        sync_s, capacity = 0.2, 40 * MB
        truth = labpredict.sim_workload(lab_workloads.named("steady"), 14.4,
                                        sync_s, capacity)
        scenarios = labpredict.scenarios()
        merged = {"steady": {
            name: [lab_run(name, labpredict.predict(scenarios[name], truth))]
            for name in labpredict.FIT_POLICIES}}
        found = labpredict.fit(merged, {"steady": 14.4})
        self.assertEqual((sync_s, capacity), found[:2])
        self.assertAlmostEqual(0.0, found[2])

    def test_the_renders_say_what_missed(self):
        scenario = labpredict.scenarios()["bounded pause"]
        p = labpredict.predict(scenario, workload("steady"))
        row = labpredict.row_for(
            "steady", [lab_run(scenario.name, p, total_s=p.total_s * 2)],
            scenario, workload("steady"))
        text = labpredict.render([row], (0.1, 60 * MB, 0.0), None, 1)
        self.assertIn("| total | 1 | 1 |", text)
        self.assertIn("| steady | bounded pause | 1 | held out |", text)
        self.assertIn("dirty-bitmap sync 100 ms, guest program's top write "
                      "rate 60 MB/s", text)
        self.assertIn("no traces are recorded", text)


class TestSimulatorAdditions(testtools.TestCase):

    def test_growth_stops_at_its_top(self):
        w = sim.Workload(memory_bytes=1000, bandwidth_bytes_s=10,
                         dirty_rate_bytes_s=1, working_set_bytes=100,
                         ws_growth_bytes_s=10, ws_max_bytes=300)
        self.assertEqual(300, w.working_set_at(100))
        self.assertRaises(ValueError, sim.Workload, memory_bytes=1000,
                          bandwidth_bytes_s=10, dirty_rate_bytes_s=1,
                          working_set_bytes=100, ws_max_bytes=50)

    def test_a_cpu_app_loses_what_a_paced_writer_would_not(self):
        base = dict(memory_bytes=320 * labpredict.MIB,
                    bandwidth_bytes_s=14.4 * MB, dirty_rate_bytes_s=20 * MB,
                    working_set_bytes=120 * MB,
                    write_capacity_bytes_s=60 * MB)
        settings = sim.JobSettings(auto_converge=True,
                                   throttle_initial_pct=50,
                                   throttle_increment_pct=20)
        lost = []
        for cpu_app in (False, True):
            m = sim.Migration(sim.Workload(cpu_app=cpu_app, **base), settings)
            m.advance(60.0)
            lost.append(m.throttle_lost_s)
        self.assertGreater(lost[1], lost[0])
        self.assertGreater(lost[1], 0.0)

    def test_traffic_we_do_not_own_takes_its_share_of_the_link(self):
        w = sim.Workload(memory_bytes=1000 * MB, bandwidth_bytes_s=10 * MB,
                         dirty_rate_bytes_s=0, working_set_bytes=0,
                         foreign_traffic=((5.0, 0.75),))
        self.assertEqual(10 * MB, w.link_bytes_s(4.9))
        self.assertEqual(2.5 * MB, w.link_bytes_s(5.0))
        self.assertEqual(5.0, w.next_rate_change_s(1.0))
        self.assertTrue(w.time_varying)
        m = sim.Migration(w, sim.JobSettings())
        m.advance(10.0)
        # 5 s at the whole link, 5 s at a quarter of it.
        self.assertAlmostEqual(62.5 * MB, m.processed_bytes,
                               delta=0.02 * 62.5 * MB)
        self.assertRaises(ValueError, sim.Workload, memory_bytes=1000,
                          bandwidth_bytes_s=10, dirty_rate_bytes_s=1,
                          working_set_bytes=100, foreign_traffic=((1, 1.0),))
