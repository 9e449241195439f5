"""The synthetic pre-copy model behaves like QEMU where tests rely on it."""

import testtools

from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples

MIB = model.MIB
GIB = model.GIB


class TestModel(testtools.TestCase):

    def test_converging_guest(self):
        sim = model.PrecopySimulation(
            model.Workload(GIB, 100 * MIB, 30 * MIB, GIB))
        sim.advance(600)
        self.assertEqual('completed', sim.phase)
        # Passes shrink by λ = 0.3: about M / B / (1 - λ).
        self.assertLess(abs(sim.finished_at_s - 10.24 / 0.7), 1.0)
        self.assertLessEqual(sim.downtime_ms,
                             300 + model.SWITCHOVER_OVERHEAD_MS)

    def test_saturated_working_set_never_converges(self):
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 200e6))
        sim.advance(600)
        self.assertEqual('precopy', sim.phase)
        plateau = [remaining for _, _, remaining in sim.syncs[3:]]
        self.assertLess(max(plateau) - min(plateau), 0.05 * max(plateau))

    def test_downtime_limit_that_fits_the_working_set_converges(self):
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 10 * MIB))
        sim.advance(60)
        self.assertEqual('precopy', sim.phase)
        sim.set_max_downtime_ms(1000)
        sim.advance(10)
        self.assertEqual('completed', sim.phase)

    def test_auto_converge_follows_qemu_steps(self):
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 200e6),
            model.QemuSettings(auto_converge=True, throttle_initial_pct=50,
                               throttle_increment_pct=20))
        sim.advance(600)
        self.assertEqual('completed', sim.phase)
        self.assertEqual(90, sim.max_throttle_pct)

    def test_post_copy_needs_the_flag_and_cannot_be_aborted(self):
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 200e6))
        self.assertRaises(model.SimulationError, sim.start_postcopy)
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 200e6),
            model.QemuSettings(postcopy=True))
        sim.advance(30)
        sim.start_postcopy()
        self.assertRaises(model.SimulationError, sim.abort)
        stats = samples.sample_from_job_stats(sim.job_stats())
        self.assertIsNotNone(stats.postcopy_requests)
        sim.advance(60)
        self.assertEqual('completed', sim.phase)

    def test_job_stats_shape(self):
        sim = model.PrecopySimulation(
            model.Workload(GIB, 15 * MIB, 4e6, GIB))
        sim.advance(30)
        sample = samples.sample_from_job_stats(sim.job_stats())
        self.assertTrue(sample.is_active)
        self.assertEqual(30.0, sample.elapsed_s)
        self.assertEqual(GIB, sample.memory_total_bytes)
        self.assertEqual(1, sample.iteration)
        self.assertAlmostEqual(450 * MIB, sample.memory_processed_bytes,
                               delta=1)
        sim.advance(600)
        self.assertEqual(samples.JobType.NONE, samples.sample_from_job_stats(
            sim.job_stats()).job_type)
        completed = samples.sample_from_job_stats(sim.completed_stats())
        self.assertEqual(samples.JobType.COMPLETED, completed.job_type)
        self.assertIsNotNone(completed.downtime_ms)

    def test_link_cut_stops_the_transfer(self):
        sim = model.PrecopySimulation(model.Workload(
            320 * MIB, 15 * MIB, 4e6, 320 * MIB,
            link_changes=((10.05, 0.0),)))
        sim.advance(10.1)
        sent = sim.processed_bytes
        sim.advance(100)
        self.assertEqual(sent, sim.processed_bytes)
        self.assertTrue(sim.running)
