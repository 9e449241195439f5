"""The shipped defaults against each remedy alone, per lab workload.

For each named workload of :mod:`nova_livemig_lab.workloads` that pre-copy
alone cannot move, ``nova-livemig-ext lab compare`` migrates the guest once
under the shipped defaults and once under each remedy on its own (bounded
pause, post-copy, throttling), the deadline following the link in all of
them. This module runs those comparisons (``--run``, root, about 25
minutes) or only renders their JSON files, and writes
``benchmarks/lab-compare.md``: per run the outcome, total time, the
guest's longest unavailability (its heartbeats), the work it lost
(that + throttle x time) and how far each is from the least any completed
run achieved on that workload; then, per workload, the defaults' distance
from the least unavailability against the 1.25 x the guest-first issue
asks for.

A single run is noisy on a shared 2-core machine (a guest throttled at
99 % may stop for 1 s or for 6 s). ``--run --repeats N --only NAME...``
migrates each workload N more times under the policies named (those that
can set the least unavailability: the defaults and the throttle), into
``repeat-<k>`` folders; the results file then adds, per workload and
policy, the median, least and most unavailability over every run, and the
verdict on the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "lab-compare"
WORKLOADS = ("steady", "bursty", "growing", "near-link")
# Converges on its own: only the defaults, which must leave it alone.
CONVERGING = ("slow-random",)
DEFAULTS = "shipped defaults"
# What the guest-first issue asks of the defaults: within this factor of
# the least unavailability any policy achieved on the guest.
TARGET = 1.25


def _least(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    done = [r[key] for r in runs if r["outcome"] == "completed"]
    return min(done) if done else None


def _times(value: float, least: float | None) -> str:
    if least is None or least <= 0:
        return "-"
    return f"x{value / least:.2f}"


def _defaults_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in runs if r["name"] == DEFAULTS), None)


def verdict(runs: Sequence[Mapping[str, Any]]) -> str:
    """The defaults against the least unavailability of the workload."""
    least = _least(runs, "guest_pause_s")
    run = _defaults_run(runs)
    if run is None:
        return "defaults not run"
    if run["outcome"] != "completed":
        return f"defaults {run['outcome']}: not within {TARGET} x"
    if least is None or least <= 0:
        return "no least to compare with"
    ratio = run["guest_pause_s"] / least
    return (f"defaults x{ratio:.2f} of the least unavailability: "
            f"{'within' if ratio <= TARGET else 'NOT within'} {TARGET} x")


def left_alone(name: str, data: Mapping[str, Any]) -> str:
    """How the defaults treated a guest that converges on its own."""
    r = _defaults_run(data["runs"])
    if r is None:
        return f"- {name}: defaults not run"
    rungs = ", ".join(r["rungs"]) or "no rung"
    return (f"- {name} ({data.get('workload', name)}): {r['outcome']} in "
            f"{r['total_s']:.1f} s with {rungs}, unavailable {r['guest_pause_s']:.2f} s, "
            f"work lost {r['guest_work_lost_s']:.2f} s")


def repeated_runs(first: Mapping[str, Mapping[str, Any]],
                  repeats: Sequence[Mapping[str, Mapping[str, Any]]]
                  ) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """workload -> policy -> every run of it, the first full run included."""
    merged: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for results in (first, *repeats):
        for workload, data in results.items():
            for r in data["runs"]:
                merged.setdefault(workload, {}).setdefault(r["name"], []).append(r)
    return merged


def _median_gap(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """The median unavailability; None unless every run completed."""
    if not runs or any(r["outcome"] != "completed" for r in runs):
        return None
    return statistics.median(r["guest_pause_s"] for r in runs)


def repeat_lines(merged: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]
                 ) -> list[str]:
    """Per workload and policy, the spread of the unavailability over its
    runs, and the defaults' median against the least median."""
    lines = ["| workload | policy | runs | completed | unavailable s: median | least | most |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for workload, policies in merged.items():
        medians = {}
        for name, runs in policies.items():
            gaps = [r["guest_pause_s"] for r in runs]
            done = sum(r["outcome"] == "completed" for r in runs)
            medians[name] = _median_gap(runs)
            lines.append(f"| {workload} | {name} | {len(runs)} | {done} | "
                         f"{statistics.median(gaps):.2f} | {min(gaps):.2f} | "
                         f"{max(gaps):.2f} |")
        least = min((m for m in medians.values() if m is not None), default=None)
        mine = medians.get(DEFAULTS)
        count = len(policies.get(DEFAULTS, ()))
        if mine is None or least is None or least <= 0:
            verdicts.append(f"- {workload}: defaults did not complete every run")
            continue
        ratio = mine / least
        verdicts.append(
            f"- {workload}: defaults' median x{ratio:.2f} of the least median "
            f"({count} runs of the defaults): "
            f"{'within' if ratio <= TARGET else 'NOT within'} {TARGET} x")
    return lines + [""] + verdicts


def render(results: Mapping[str, Mapping[str, Any]],
           converging: Mapping[str, Mapping[str, Any]] | None = None,
           note: str | None = None,
           repeats: Sequence[Mapping[str, Mapping[str, Any]]] = ()) -> str:
    lines = [
        "# The shipped defaults against each remedy alone, per workload",
        "",
        "Generated by `python -m benchmarks.labcompare` from "
        "`benchmarks/lab-compare/compare-<workload>.json` (written by "
        "`nova-livemig-ext lab compare --workload <name>`). 320 MiB TCG guests, "
        "one run per policy: single measurements on a shared 2-core machine.",
        "",
        "Unavailable = the guest's longest gap between its 10 Hz heartbeats; work lost = "
        "that + throttle x time; 'x least' = distance from the least any completed run "
        "achieved on the workload (unavailable / work lost).",
        "",
        "| workload | policy | outcome | total s | unavailable s | work lost s | "
        "x least | libvirt downtime ms | rungs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, data in results.items():
        runs = data["runs"]
        least_gap = _least(runs, "guest_pause_s")
        least_lost = _least(runs, "guest_work_lost_s")
        for r in runs:
            downtime = "-" if r["downtime_ms"] is None else f"{r['downtime_ms']:.0f}"
            lines.append(
                f"| {name} | {r['name']} | {r['outcome']}"
                f"{'' if r['guest_intact'] else ' (DAMAGED)'} on {r['guest_on']} | "
                f"{r['total_s']:.1f} | {r['guest_pause_s']:.2f} | "
                f"{r['guest_work_lost_s']:.2f} | {_times(r['guest_pause_s'], least_gap)} / "
                f"{_times(r['guest_work_lost_s'], least_lost)} | {downtime} | "
                f"{', '.join(r['rungs']) or '-'} |")
        verdicts.append(f"- {name} ({data.get('workload', name)}; link "
                        f"{data.get('link_mb_s')} MB/s): {verdict(runs)}")
    lines += ["", "## The defaults against the least", ""] + verdicts
    if repeats:
        lines += ["", f"## Over repeated runs (the run above and {len(repeats)} more of "
                  "some policies)", ""]
        lines += repeat_lines(repeated_runs(results, repeats))
    if converging:
        lines += ["", "## A guest that converges on its own, under the defaults", ""]
        lines += [left_alone(name, data) for name, data in converging.items()]
    if note:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def load(directory: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        path = directory / f"compare-{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return results


def repeat_dirs(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("repeat-*") if p.is_dir()
             and p.name.removeprefix("repeat-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("repeat-")))


def _compare(name: str, out: Path, only: Sequence[str] | None) -> None:
    command = [sys.executable, "-m", "nova_livemig_lab", "compare",
               "--workload", name, "--output", str(out)]
    if only:
        command += ["--only", *only]
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true",
                        help="run the comparisons in the lab first (root; the lab must "
                             "be started: nova-livemig-ext lab start)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=HERE / "lab-compare.md")
    parser.add_argument("--note", help="a note on the runs, kept in the results file")
    parser.add_argument("--repeats", type=int, default=0,
                        help="with --run: that many more runs of each workload, each "
                             "into its own repeat-<k> folder, instead of the full run")
    parser.add_argument("--only", nargs="*", default=None,
                        help="with --repeats: the policies to repeat (default: all)")
    args = parser.parse_args(argv)
    if args.repeats < 0:
        parser.error("--repeats must not be negative")
    if args.run:
        if os.geteuid() != 0:
            print("benchmarks.labcompare --run: run as root (it uses the lab)",
                  file=sys.stderr)
            return 1
        if args.repeats:
            done = repeat_dirs(args.results)
            start = int(done[-1].name.removeprefix("repeat-")) + 1 if done else 2
            for k in range(start, start + args.repeats):
                for name in WORKLOADS:
                    _compare(name, args.results / f"repeat-{k}", args.only)
        else:
            for name in WORKLOADS:
                _compare(name, args.results, None)
            for name in CONVERGING:
                _compare(name, args.results, [DEFAULTS])
    results = load(args.results, WORKLOADS)
    if not results:
        print(f"benchmarks.labcompare: no compare-*.json in {args.results}", file=sys.stderr)
        return 1
    repeats = [load(d, WORKLOADS) for d in repeat_dirs(args.results)]
    text = render(results, load(args.results, CONVERGING), args.note, repeats)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
