"""The per-workload comparison: distance from the least, and the verdict."""

import json
import tempfile
from pathlib import Path

import testtools

from benchmarks import labcompare


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

    def test_verdict_against_the_least_completed(self):
        runs = [run("shipped defaults", "completed", 1.2, 30.0, ["auto_converge"]),
                run("bounded pause", "completed", 8.0, 8.0),
                run("throttle", "completed", 1.0, 28.0),
                run("post-copy", "aborted", 0.1, 0.1)]
        # The aborted run does not set the least: 1.2 / 1.0.
        self.assertEqual("defaults x1.20 of the least unavailability: within 1.25 x",
                         labcompare.verdict(runs))
        runs[0] = run("shipped defaults", "completed", 1.3, 30.0)
        self.assertIn("NOT within 1.25 x", labcompare.verdict(runs))
        runs[0] = run("shipped defaults", "aborted", 0.1, 0.0)
        self.assertEqual("defaults aborted: not within 1.25 x", labcompare.verdict(runs))

    def test_render_from_the_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, "bursty", run("shipped defaults", "completed", 1.0, 20.0),
                  run("bounded pause", "completed", 8.0, 8.0), described="bursty: 120 MB")
            results = labcompare.load(Path(tmp), labcompare.WORKLOADS)
            self.assertEqual(["bursty"], list(results))
            text = labcompare.render(results)
            self.assertIn("| bursty | shipped defaults | completed on b | 60.0 | 1.00 | "
                          "20.00 | x1.00 / x2.50 | - | - |", text)
            self.assertIn("| bursty | bounded pause | completed on b | 60.0 | 8.00 | "
                          "8.00 | x8.00 / x1.00 | - | - |", text)
            self.assertIn("- bursty (bursty: 120 MB; link 14.4 MB/s): defaults x1.00", text)
            slow = {"workload": "slow-random", "runs": [run("shipped defaults", "completed",
                                                            0.5, 0.5)]}
            self.assertIn("- slow-random (slow-random): completed in 60.0 s with no rung, "
                          "unavailable 0.50 s", labcompare.render(results, {"slow-random": slow}))
            out = Path(tmp, "out.md")
            self.assertEqual(0, labcompare.main(["--results", tmp, "--output", str(out)]))
            self.assertEqual(text, out.read_text())
            self.assertEqual(1, labcompare.main(["--results", str(Path(tmp, "none"))]))

    def test_repeats_judge_the_medians(self):
        first = {"steady": {"workload": "steady", "runs": [
            run("shipped defaults", "completed", 3.3, 20.0),
            run("throttle", "completed", 1.0, 20.0),
            run("post-copy", "completed", 4.0, 4.0)]}}
        repeats = [
            {"steady": {"runs": [run("shipped defaults", "completed", 1.0, 20.0),
                                 run("throttle", "completed", 1.1, 20.0)]}},
            {"steady": {"runs": [run("shipped defaults", "completed", 1.1, 20.0),
                                 run("throttle", "completed", 6.0, 20.0)]}},
        ]
        lines = labcompare.repeat_lines(labcompare.repeated_runs(first, repeats))
        self.assertIn("| steady | shipped defaults | 3 | 3 | 1.10 | 1.00 | 3.30 |", lines)
        self.assertIn("| steady | throttle | 3 | 3 | 1.10 | 1.00 | 6.00 |", lines)
        self.assertIn("| steady | post-copy | 1 | 1 | 4.00 | 4.00 | 4.00 |", lines)
        self.assertIn("- steady: defaults' median x1.00 of the least median (3 runs of "
                      "the defaults): within 1.25 x", lines)
        # One aborted run of the defaults: no median to judge.
        repeats[0]["steady"]["runs"][0] = run("shipped defaults", "aborted", 0.1, 1.0)
        lines = labcompare.repeat_lines(labcompare.repeated_runs(first, repeats))
        self.assertIn("- steady: defaults did not complete every run", lines)

    def test_main_reads_the_repeat_folders(self):
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, "steady", run("shipped defaults", "completed", 1.0, 20.0),
                  run("throttle", "completed", 1.0, 20.0), described="steady")
            for k, gap in ((2, 2.0), (10, 3.0)):
                write(Path(tmp, f"repeat-{k}"), "steady",
                      run("shipped defaults", "completed", gap, 20.0))
            self.assertEqual(["repeat-2", "repeat-10"],
                             [p.name for p in labcompare.repeat_dirs(Path(tmp))])
            out = Path(tmp, "out.md")
            self.assertEqual(0, labcompare.main(["--results", tmp, "--output", str(out)]))
            text = out.read_text()
            self.assertIn("## Over repeated runs (the run above and 2 more", text)
            self.assertIn("- steady: defaults' median x2.00 of the least median (3 runs of "
                          "the defaults): NOT within 1.25 x", text)
