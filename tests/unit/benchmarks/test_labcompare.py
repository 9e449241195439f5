"""The per-workload comparison: distance from the least, and the verdict."""

import json
import tempfile
from pathlib import Path

import testtools

from benchmarks import labcompare

DEFAULTS = labcompare.DEFAULTS


def run(name, outcome, gap_s, lost_s, rungs=()):
    return {"name": name, "outcome": outcome, "total_s": 60.0,
            "downtime_ms": None, "guest_pause_s": gap_s,
            "guest_work_lost_s": lost_s, "guest_intact": True,
            "guest_on": "b" if outcome == "completed" else "a",
            "rungs": list(rungs)}


def write(directory, name, *runs, described=None):
    """A compare-<name>.json as the lab writes it."""
    Path(directory).mkdir(exist_ok=True)
    data = {"link_mb_s": 14.4, "runs": list(runs)}
    if described:
        data["workload"] = described
    Path(directory, f"compare-{name}.json").write_text(json.dumps(data))


class TestLabCompare(testtools.TestCase):

    def summaries(self, *runs):
        by_name = {}
        for r in runs:
            by_name.setdefault(r["name"], []).append(r)
        return [labcompare.summarize(n, rs) for n, rs in by_name.items()]

    def test_verdict_on_the_guests_work_lost(self):
        runs = [run("shipped defaults", "completed", 1.2, 10.0, ["auto_converge"]),
                run("bounded pause", "completed", 8.0, 8.5),
                run("QEMU 50/20 alone", "completed", 1.0, 28.0),
                run("post-copy after first pass", "aborted", 0.1, 0.1)]
        # The aborted run sets nothing: 10.0 / 8.5.
        self.assertEqual(
            "defaults' median work lost 10.00 s, x1.18 of the least (bounded pause, "
            "8.50 s): within 1.25 x; no policy better on both work lost and longest stop",
            labcompare.verdict(self.summaries(*runs)))
        runs[0] = run("shipped defaults", "completed", 1.2, 11.0)
        self.assertIn("x1.29 of the least (bounded pause, 8.50 s): NOT within 1.25 x",
                      labcompare.verdict(self.summaries(*runs)))
        runs[0] = run("shipped defaults", "aborted", 0.1, 0.0)
        self.assertEqual("defaults completed 0 of 1 runs: NOT within 1.25 x",
                         labcompare.verdict(self.summaries(*runs)))

    def test_a_policy_better_on_both_counts_is_named(self):
        runs = [run("shipped defaults", "completed", 6.0, 30.0),
                run("QEMU 20/10 alone", "completed", 1.0, 29.0),
                run("paused copy", "completed", 9.0, 9.0)]
        text = labcompare.verdict(self.summaries(*runs))
        self.assertIn("NOT within 1.25 x", text)
        self.assertIn("better on both work lost and longest stop: QEMU 20/10 alone", text)
        self.assertNotIn("paused copy", text.split(";")[-1])

    def test_a_damaged_guest_never_counts_as_completed(self):
        damaged = dict(run("paused copy", "completed", 0.1, 0.1), guest_intact=False)
        summary = labcompare.summarize("paused copy", [damaged])
        self.assertEqual((1, 0), (summary.runs, summary.completed))
        self.assertFalse(summary.always_completed)

    def test_medians_and_spread_over_every_run(self):
        first = {"steady": {"workload": "steady", "runs": [
            run("shipped defaults", "completed", 3.3, 20.0),
            run("QEMU 50/20 alone", "completed", 1.0, 20.0),
            run("bounded pause", "completed", 9.0, 9.0)]}}
        repeats = [
            {"steady": {"runs": [run("shipped defaults", "completed", 1.0, 10.0),
                                 run("QEMU 50/20 alone", "completed", 1.1, 22.0)]}},
            {"steady": {"runs": [run("shipped defaults", "completed", 1.1, 12.0),
                                 run("QEMU 50/20 alone", "completed", 6.0, 21.0)]}},
        ]
        merged = labcompare.merged_runs(first, repeats)
        lines = labcompare.workload_lines("steady", "steady", merged["steady"])
        self.assertIn("| shipped defaults | 3 | 3 | 60.0 | 1.10 (1.00-3.30) | "
                      "12.00 (10.00-20.00) | - | - | - |", lines)
        self.assertIn("| QEMU 50/20 alone | 3 | 3 | 60.0 | 1.10 (1.00-6.00) | "
                      "21.00 (20.00-22.00) | - | - | - |", lines)
        self.assertIn("| bounded pause | 1 | 1 | 60.0 | 9.00 | 9.00 | - | - | - |", lines)
        self.assertIn("Verdict: defaults' median work lost 12.00 s, x1.33 of the least "
                      "(bounded pause, 9.00 s): NOT within 1.25 x; no policy better on both "
                      "work lost and longest stop", lines)
        # One aborted run of the defaults: they did not complete every run.
        repeats[0]["steady"]["runs"][0] = run("shipped defaults", "aborted", 0.1, 1.0)
        merged = labcompare.merged_runs(first, repeats)
        self.assertIn("Verdict: defaults completed 2 of 3 runs: NOT within 1.25 x",
                      labcompare.workload_lines("steady", "steady", merged["steady"]))

    def test_the_servers_latency_and_the_model_beside(self):
        served = dict(run("shipped defaults", "completed", 1.0, 5.0),
                      model_work_lost_s=30.0, app={"latency_p99_ms": 812.5})
        summary = labcompare.summarize(DEFAULTS, [served])
        self.assertEqual(812.5, summary.p99_ms.median)
        self.assertEqual(30.0, summary.model_lost_s.median)
        paused = dict(run("bounded pause", "completed", 9.0, 4.0),
                      app={"latency_p99_ms": 8300.0})
        quick = dict(run("Nova 34", "completed", 0.1, 6.0),
                     app={"latency_p99_ms": 4.0})
        text = labcompare.verdict([summary, labcompare.summarize("bounded pause", [paused]),
                                   labcompare.summarize("Nova 34", [quick])])
        self.assertTrue(text.endswith("; p99 latency 812 ms against the least 4 ms "
                                      "(Nova 34)"), text)

    def test_render_from_the_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, "bursty", run("shipped defaults", "completed", 1.0, 20.0),
                  run("bounded pause", "completed", 8.0, 8.0), described="bursty: 120 MB")
            results = labcompare.load(Path(tmp), labcompare.WORKLOADS)
            self.assertEqual(["bursty"], list(results))
            text = labcompare.render(results)
            self.assertIn("bursty: 120 MB; link 14.4 MB/s", text)
            self.assertIn("- bursty: defaults' median work lost 20.00 s, x2.50 of the least "
                          "(bounded pause, 8.00 s): NOT within 1.25 x", text)
            slow = {"workload": "slow-random", "runs": [run("shipped defaults", "completed",
                                                            0.5, 0.5)]}
            self.assertIn("- slow-random (slow-random): completed in 60.0 s with no rung, "
                          "longest stop 0.50 s", labcompare.render(results, {"slow-random": slow}))
            out = Path(tmp, "out.md")
            self.assertEqual(0, labcompare.main(["--results", tmp, "--output", str(out)]))
            self.assertEqual(text, out.read_text())
            self.assertEqual(1, labcompare.main(["--results", str(Path(tmp, "none"))]))

    def test_main_reads_the_repeat_folders(self):
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, "steady", run("shipped defaults", "completed", 1.0, 20.0),
                  run("QEMU 50/20 alone", "completed", 1.0, 20.0), described="steady")
            for k, lost in ((2, 40.0), (10, 30.0)):
                write(Path(tmp, f"repeat-{k}"), "steady",
                      run("shipped defaults", "completed", 1.0, lost))
            self.assertEqual(["repeat-2", "repeat-10"],
                             [p.name for p in labcompare.repeat_dirs(Path(tmp))])
            out = Path(tmp, "out.md")
            self.assertEqual(0, labcompare.main(["--results", tmp, "--output", str(out)]))
            text = out.read_text()
            self.assertIn("3 round(s) of runs", text)
            self.assertIn("| shipped defaults | 3 | 3 | 60.0 | 1.00 | 30.00 (20.00-40.00) |",
                          text)
            self.assertIn("- steady: defaults' median work lost 30.00 s, x1.50 of the least "
                          "(QEMU 50/20 alone, 20.00 s): NOT within 1.25 x", text)

    def test_the_ceiling_gets_a_verdict_of_its_own(self):
        first = {"cpu-bound": {"workload": "cpu-bound", "runs": [
            run("shipped defaults", "completed", 2.0, 36.0),
            run(labcompare.CEILING, "completed", 8.8, 9.2),
            run("bounded pause", "completed", 8.8, 9.1)]}}
        text = labcompare.render(first)
        self.assertIn("- cpu-bound, with the ceiling: defaults, stop ceiling 10 s: median "
                      "work lost 9.20 s, x1.01 of the least (bounded pause, 9.10 s): within "
                      "1.25 x", text)
        self.assertIn("- cpu-bound: defaults' median work lost 36.00 s, x3.96 of the least "
                      "(bounded pause, 9.10 s)", text)


class TestTheReadmeTable(testtools.TestCase):

    def test_the_readme_shows_the_recorded_runs(self):
        """README.rst's lab table is what --readme writes from the files."""
        results = labcompare.load(labcompare.RESULTS_DIR, labcompare.WORKLOADS)
        repeats = [labcompare.load(d, labcompare.WORKLOADS)
                   for d in labcompare.repeat_dirs(labcompare.RESULTS_DIR)]
        text = labcompare.README.read_text()
        self.assertEqual(
            text, labcompare.replace_readme_block(
                text, labcompare.readme_block(results, repeats)),
            "README.rst's lab table is stale: run "
            "python -m benchmarks.labcompare --readme")

    def test_the_block_picks_the_least_of_the_others(self):
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, "steady",
                  run(DEFAULTS, "completed", 1.0, 12.0, ["auto_converge"]),
                  run("bounded pause", "completed", 9.0, 9.0, ["pause"]),
                  run("QEMU 50/20 alone", "completed", 2.0, 14.0),
                  run("Nova 34", "aborted", 0.1, 1.0),
                  described="steady")
            results = labcompare.load(Path(tmp), ["steady"])
        results["steady"]["working_set_mb"] = 144
        block = labcompare.readme_block(results)
        self.assertIn("steady (10.0 s)", block)
        self.assertIn("bounded pause (least)", block)
        self.assertNotIn("QEMU 50/20 alone", block)
        self.assertIn("Nova 34", block)
        self.assertIn("0/1", block)
        self.assertIn("x1.33 of the least (bounded pause, 9.00 s)", block)
        replaced = labcompare.replace_readme_block(
            f"a\n{labcompare.README_START}\nold\n{labcompare.README_END}\nb\n",
            block)
        self.assertEqual(f"a\n{block}\nb\n", replaced)
