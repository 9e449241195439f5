"""The simulator against the lab: every recorded `lab compare` run, predicted.

``nova-livemig-ext lab compare`` moves the lab's guest under every policy
and records what the guest itself counted (``benchmarks/lab-compare/``).
This replays each of those runs in the simulator: the same workload (the
lab's guest program, its pattern, the link each run measured), the same
policy with the same decision maker (the shipped controller, Nova 34's
algorithm or the unsteered baselines of ``nova_livemig_lab.baselines``;
only libvirt and QEMU are simulated), and prints the prediction beside the
measurement, per metric:

- the outcome and the total time;
- the longest stop (the guest's longest heartbeat gap, against the
  simulator's longest stop: the final copy, a pause, the post-copy stall or
  one stop of the throttle);
- the work lost (the guest's application's own deficit, against the
  simulator's downtime + post-copy stall + throttle x time);
- the post-copy stall, where post-copy was the only remedy (the guest's
  work lost, against the simulator's stall and switch);
- the rungs taken.

The two lab-only constants of the simulator (the TCG guest's dirty-bitmap
sync time and its program's top write rate) are fitted here, on the
unsteered baselines alone (QEMU's knobs, post-copy after the first pass,
the paused copy); the controllers' runs are held out.  ``TOLERANCE`` states
what counts as a good prediction; the results file lists every miss.

    python -m benchmarks.labpredict            # writes lab-predict.md / .json
    python -m benchmarks.labpredict --run      # first `labcompare --run` (root)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import calibration
from benchmarks import labcompare
from benchmarks import simulator as sim
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_lab import baselines
from nova_livemig_lab import demo
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab import workloads as lab_workloads

HERE = Path(__file__).resolve().parent
MB = calibration.MB
MIB = calibration.MIB
# The guest program starts when the guest boots; the lab migrates once ten
# heartbeats (10 Hz) came, about this long after the program's clock began.
# Its time-dependent patterns (bursts, the step, the growth) are shifted by
# it.  An estimate: the lab does not record the program's clock at the start.
LEAD_S = 2.0
# Beyond the lab's cap on unsteered runs, so that the cap's abort happens.
HORIZON_S = baselines.CAP_S + 30.0
# The baselines the two lab constants are fitted on (nobody steers them, so
# they test the simulated QEMU loop, not a controller).
FIT_POLICIES = ("QEMU 50/20 alone", "QEMU 20/10 alone",
                "post-copy after first pass", "paused copy")
# The lab's host: what the flags are planned for.
LAB_HOST = livemig_flags.HostFacts(
    libvirt_version=livemig_flags.version_int(11, 3),
    qemu_version=livemig_flags.version_int(10, 0, 2), userfaultfd=True)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a prediction may be from the lab's median and still count."""

    total_fraction: float = 0.25
    stop_fraction: float = 0.5
    stop_floor_s: float = 0.5
    lost_fraction: float = 0.35
    lost_floor_s: float = 1.0

    def describe(self) -> str:
        return (f"outcome and rungs equal; total time within "
                f"{self.total_fraction:.0%}; longest stop within "
                f"{self.stop_fraction:.0%} or {self.stop_floor_s} s; work lost "
                f"and post-copy stall within {self.lost_fraction:.0%} or "
                f"{self.lost_floor_s} s")


TOLERANCE = Tolerance()

# What the simulator leaves out, and so where the table above can show it
# wrong (no figure here: the figures are the table's).
KNOWN_GAPS = (
    "What the simulator leaves out:",
    "",
    "- **The throttle's stops**: it counts one stop of the throttle (at 99 %, "
    "0.99 s); the guest's heartbeat, which needs more than one slice of CPU, "
    "waits several.",
    "- **The migration's own CPU**: on the lab's 2 cores the two QEMUs' "
    "migration threads take CPU from the guest, so even an aborted run costs "
    "the application some work; the simulator's guest loses nothing to it.",
    "- **The post-copy stall**: it is priced from the pages the guest touches "
    "after the switch at the link's rate and a fault latency; the lab's guest "
    "waits less than that.",
    "- **The latency server's work**: it serves a backlog once it runs again, "
    "so its count of work lost is near zero where its latency suffered; its "
    "p99 is in `lab-compare.md`, which the simulator does not predict.",
    "- **The guest program's clock**: the bursts, the step and the growth start "
    "with the program, an estimated lead before the migration.",
)


def within(predicted: float, measured: float, fraction: float,
           floor: float = 0.0) -> bool:
    """``predicted`` within ``fraction`` of ``measured``, or ``floor``."""
    return abs(predicted - measured) <= max(fraction * abs(measured), floor)


# ---------------------------------------------------------------------------
# The lab's guest and policies, in the simulator's terms.
# ---------------------------------------------------------------------------

def sim_workload(workload: lab_workloads.Workload, link_mb_s: float,
                 sync_base_s: float, capacity_bytes_s: float,
                 lead_s: float = LEAD_S) -> sim.Workload:
    """The lab's guest program writing ``workload`` over ``link_mb_s``."""
    pattern = workload.pattern
    settings = dict(pattern.settings)
    rate = float(workload.dirty_rate_mb_s) * MB
    working_set = float(workload.dirty_mb) * MB
    extra: dict[str, Any] = {}
    if pattern.name == "bursty":
        on_s = settings.get("BURST_ON_MS", 3000) / 1000.0
        period_s = on_s + settings.get("BURST_OFF_MS", 3000) / 1000.0
        # The simulator's rate is the mean; the lab's is the rate in a burst.
        extra.update(burst_period_s=period_s, burst_duty=on_s / period_s)
        rate *= on_s / period_s
    elif pattern.name == "growing":
        grow = settings.get("GROW_MB_S", 0) * MB
        start = settings.get("START_MB", workload.dirty_mb) * MB
        extra.update(ws_growth_bytes_s=grow, ws_max_bytes=working_set)
        working_set = min(working_set, start + grow * lead_s)
    elif pattern.name == "random":
        extra.update(popularity="uniform")
    if pattern.app == "cpu":
        extra.update(cpu_app=True)
    if "STEP_AT_S" in settings:
        step_rate = settings.get("STEP_RATE", workload.dirty_rate_mb_s)
        extra.update(rate_steps=((max(0.0, settings["STEP_AT_S"] - lead_s),
                                  step_rate / workload.dirty_rate_mb_s),))
    return sim.Workload(
        memory_bytes=lab_guest.GUEST_MEMORY_MIB * MIB,
        bandwidth_bytes_s=link_mb_s * MB, dirty_rate_bytes_s=rate,
        working_set_bytes=working_set,
        touched_fraction=calibration.LAB_TOUCHED_FRACTION,
        write_capacity_bytes_s=capacity_bytes_s, sync_base_s=sync_base_s,
        sync_per_gib_s=calibration.LAB_SYNC_PER_GIB_S, name=workload.name,
        **extra)


def lab_plan(policy: MigrationPolicy) -> livemig_flags.MigrationPlan:
    """The flags, parameters and ladder the lab plans for ``policy``."""
    return livemig_flags.plan_migration(
        policy, LAB_HOST,
        livemig_flags.InstanceFacts(memory_mib=lab_guest.GUEST_MEMORY_MIB))


def sim_settings(plan: livemig_flags.MigrationPlan) -> sim.JobSettings:
    """The job the lab starts with ``plan``: its flags and params."""
    params = plan.params
    bandwidth = params.get(livemig_flags.PARAM_BANDWIDTH) or 0
    return sim.JobSettings(
        live="VIR_MIGRATE_LIVE" in plan.flag_names,
        auto_converge=plan.auto_converge_armed, postcopy=plan.postcopy_armed,
        throttle_initial_pct=int(params.get(
            livemig_flags.PARAM_AUTO_CONVERGE_INITIAL, 20)),
        throttle_increment_pct=int(params.get(
            livemig_flags.PARAM_AUTO_CONVERGE_INCREMENT, 10)),
        channels=int(params.get(livemig_flags.PARAM_PARALLEL_CONNECTIONS, 1)),
        max_speed_bytes_s=float(bandwidth) * MIB if bandwidth else None)


def sim_decider(scenario: demo.Scenario,
                plan: livemig_flags.MigrationPlan) -> ctl.DecisionMaker:
    """The decision maker the lab ran for ``scenario``, unchanged."""
    if scenario.decider is not None:
        return scenario.decider()
    return livemig_job.decision_maker(scenario.policy, plan,
                                      lab_guest.GUEST_MEMORY_MIB)


class Recorded:
    """A decision maker whose decisions, and whether they took, are kept."""

    def __init__(self, inner: ctl.DecisionMaker) -> None:
        self._inner = inner
        self.decisions: list[ctl.Decision] = []
        self._refused: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        return self._keep(self._inner.start(now_s))

    def observe(self, sample: Any, now_s: float) -> tuple[ctl.Decision, ...]:
        return self._keep(self._inner.observe(sample, now_s))

    def acknowledge(self, decision: ctl.Decision, applied: bool,
                    now_s: float) -> None:
        if not applied:
            self._refused.add(id(decision))
        self._inner.acknowledge(decision, applied, now_s)

    def _keep(self, batch: tuple[ctl.Decision, ...]
              ) -> tuple[ctl.Decision, ...]:
        self.decisions.extend(batch)
        return batch

    def rungs(self) -> list[str]:
        """The rungs used, in order, once each (as the lab's report)."""
        used: list[str] = []
        for d in self.decisions:
            rung = d.rung
            if (livemig_monitor.used_a_rung(d, id(d) not in self._refused)
                    and rung is not None and rung not in used):
                used.append(rung)
        return used


@dataclasses.dataclass(frozen=True)
class Prediction:
    outcome: str
    total_s: float
    stop_s: float
    lost_s: float
    postcopy_stall_s: float
    rungs: tuple[str, ...]


def predict(scenario: demo.Scenario, workload: sim.Workload) -> Prediction:
    """One simulated run of ``scenario`` on ``workload``."""
    plan = lab_plan(scenario.policy)
    decider = Recorded(sim_decider(scenario, plan))
    migration = sim.Migration(workload, sim_settings(plan))
    run = sim.drive(migration, decider, scenario.policy.poll_interval_s,
                    HORIZON_S)
    outcome = run.outcome if run.outcome != sim.UNFINISHED else "aborted"
    return Prediction(outcome, run.total_s, run.longest_pause_s,
                      run.guest_work_lost_s, run.postcopy_stall_s,
                      tuple(decider.rungs()))


# ---------------------------------------------------------------------------
# Prediction against measurement.
# ---------------------------------------------------------------------------

def _median(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _majority(values: Sequence[Any]) -> Any:
    return max(set(values), key=lambda v: (values.count(v), str(v)))


@dataclasses.dataclass(frozen=True)
class Row:
    """One policy on one workload: the lab's medians and the prediction."""

    workload: str
    policy: str
    runs: int
    fit: bool
    outcome: str
    predicted: Prediction
    total_s: float | None
    stop_s: float | None
    lost_s: float | None
    rungs: tuple[str, ...]

    @property
    def postcopy_stall_s(self) -> float | None:
        """The guest's loss where post-copy was its only remedy."""
        return self.lost_s if self.rungs == ("postcopy",) else None

    def misses(self, tol: Tolerance = TOLERANCE) -> list[str]:
        """The metrics whose prediction is out of ``tol``."""
        p = self.predicted
        out = []
        if p.outcome != self.outcome:
            out.append("outcome")
        if self.total_s is not None and not within(
                p.total_s, self.total_s, tol.total_fraction):
            out.append("total")
        if self.stop_s is not None and not within(
                p.stop_s, self.stop_s, tol.stop_fraction, tol.stop_floor_s):
            out.append("stop")
        if self.lost_s is not None and not within(
                p.lost_s, self.lost_s, tol.lost_fraction, tol.lost_floor_s):
            out.append("lost")
        stall = self.postcopy_stall_s
        if stall is not None and not within(
                p.postcopy_stall_s, stall, tol.lost_fraction,
                tol.lost_floor_s):
            out.append("post-copy stall")
        if p.rungs != self.rungs:
            out.append("rungs")
        return out


def row_for(workload_name: str, runs: Sequence[Mapping[str, Any]],
            scenario: demo.Scenario, workload: sim.Workload) -> Row:
    """The lab's runs of ``scenario`` summarised beside its prediction.

    The figures are medians over the runs that ended as most did (a run
    that aborted does not count towards a completed median).
    """
    outcome = _majority([str(r["outcome"]) for r in runs])
    same = [r for r in runs if r["outcome"] == outcome]
    return Row(
        workload=workload_name, policy=scenario.name, runs=len(runs),
        fit=scenario.name in FIT_POLICIES, outcome=outcome,
        predicted=predict(scenario, workload),
        total_s=_median(same, "total_s"),
        stop_s=_median(same, "guest_pause_s"),
        lost_s=_median(same, "guest_work_lost_s"),
        rungs=tuple(_majority([tuple(r.get("rungs") or ()) for r in same])))


def scenarios() -> dict[str, demo.Scenario]:
    return {s.name: s for s in demo.alternatives()}


def rows(merged: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
         links: Mapping[str, float], sync_base_s: float,
         capacity_bytes_s: float,
         only: Sequence[str] | None = None) -> list[Row]:
    """Every (workload, policy) recorded, predicted with the given fit."""
    known = scenarios()
    out = []
    for name, policies in merged.items():
        workload = sim_workload(lab_workloads.named(name), links[name],
                                sync_base_s, capacity_bytes_s)
        for policy, runs in policies.items():
            if policy not in known or (only is not None and policy not in only):
                continue
            out.append(row_for(name, runs, known[policy], workload))
    return out


def _relative(predicted: float, measured: float | None, floor: float) -> float:
    if measured is None:
        return 0.0
    return abs(predicted - measured) / max(abs(measured), floor)


def fit_error(fitted: Sequence[Row], tol: Tolerance = TOLERANCE) -> float:
    """What the fit minimises: for every completed baseline the relative
    errors of its total time, its longest stop and its work lost (the last
    two against at least the tolerance's floors), plus one for every
    outcome missed."""
    error = 0.0
    for r in fitted:
        if r.predicted.outcome != r.outcome:
            error += 1.0
        elif r.outcome == "completed":
            error += _relative(r.predicted.total_s, r.total_s, 1.0)
            error += _relative(r.predicted.stop_s, r.stop_s, tol.stop_floor_s)
            error += _relative(r.predicted.lost_s, r.lost_s, tol.lost_floor_s)
    return error


def fit(merged: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
        links: Mapping[str, float]) -> tuple[float, float, float]:
    """(sync s, write capacity B/s, error) fitted on ``FIT_POLICIES``."""
    return calibration.grid_fit(lambda sync_s, capacity: fit_error(
        rows(merged, links, sync_s, capacity, FIT_POLICIES)))


# ---------------------------------------------------------------------------
# The results file.
# ---------------------------------------------------------------------------

def _pair(measured: float | None, predicted: float, digits: int = 1) -> str:
    if measured is None:
        return "-"
    return f"{measured:.{digits}f} / {predicted:.{digits}f}"


def table(found: Sequence[Row], tol: Tolerance = TOLERANCE) -> list[str]:
    lines = ["| workload | policy | runs | role | outcome lab / sim | total s | "
             "longest stop s | work lost s | post-copy stall s | rungs lab / sim "
             "| out of tolerance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        p = r.predicted
        stall = r.postcopy_stall_s
        lines.append(
            f"| {r.workload} | {r.policy} | {r.runs} | "
            f"{'fit' if r.fit else 'held out'} | {r.outcome} / {p.outcome} | "
            f"{_pair(r.total_s, p.total_s)} | {_pair(r.stop_s, p.stop_s, 2)} | "
            f"{_pair(r.lost_s, p.lost_s)} | "
            f"{_pair(stall, p.postcopy_stall_s) if stall is not None else '-'} | "
            f"{', '.join(r.rungs) or '-'} / {', '.join(p.rungs) or '-'} | "
            f"{', '.join(r.misses(tol)) or 'none'} |")
    return lines


def tally(found: Sequence[Row], tol: Tolerance = TOLERANCE
          ) -> dict[str, tuple[int, int]]:
    """metric -> (rows out of tolerance, rows with that metric)."""
    counts: dict[str, list[int]] = {}
    for r in found:
        checked = ["outcome", "rungs"]
        checked += [m for m, v in (("total", r.total_s), ("stop", r.stop_s),
                                   ("lost", r.lost_s),
                                   ("post-copy stall", r.postcopy_stall_s))
                    if v is not None]
        missed = r.misses(tol)
        for metric in checked:
            c = counts.setdefault(metric, [0, 0])
            c[1] += 1
            c[0] += metric in missed
    return {k: (v[0], v[1]) for k, v in counts.items()}


def remedy(row: Row) -> str:
    """What moved the guest in the lab, as the table groups it."""
    if row.outcome != "completed":
        return "not completed"
    if "postcopy" in row.rungs:
        return "post-copy"
    if "pause" in row.rungs:
        return "pause"
    if row.policy == "paused copy":
        return "paused copy"
    return "throttle"


def _ratio(predicted: float, measured: float | None) -> float | None:
    if measured is None or measured <= 0:
        return None
    return predicted / measured


def by_remedy(found: Sequence[Row]) -> list[str]:
    """Per remedy: the median of simulated / measured for each metric."""
    groups: dict[str, list[Row]] = {}
    for r in found:
        groups.setdefault(remedy(r), []).append(r)
    lines = ["| remedy in the lab | rows | total sim/lab | longest stop "
             "sim/lab | work lost sim/lab |", "|---|---|---|---|---|"]
    for name, group in groups.items():
        cells = []
        for key in ("total", "stop", "lost"):
            ratios = [x for x in (
                _ratio(getattr(r.predicted, f"{key}_s"), getattr(r, f"{key}_s"))
                for r in group) if x is not None]
            cells.append(f"{statistics.median(ratios):.2f} "
                         f"({min(ratios):.2f}-{max(ratios):.2f})"
                         if ratios else "-")
        lines.append(f"| {name} | {len(group)} | {' | '.join(cells)} |")
    return lines


def render(found: Sequence[Row], fitted: tuple[float, float, float],
           traces_fit: tuple[float, float, float] | None, rounds: int,
           tol: Tolerance = TOLERANCE) -> str:
    sync_s, capacity, error = fitted
    if traces_fit is None:
        traces = "no traces are recorded"
    else:
        traces = (f"fitted the same way on the recorded traces "
                  f"(`benchmarks/calibration.py`, {', '.join(calibration.FIT_TRACES)}): "
                  f"{traces_fit[0] * 1000:.0f} ms and {traces_fit[1] / MB:.0f} MB/s")
    lines = [
        "# The simulator against the lab",
        "",
        "Generated by `python -m benchmarks.labpredict` from the runs of "
        "`benchmarks/lab-compare/` (`nova-livemig-ext lab compare`; "
        f"{rounds} round(s)). Each cell is lab / simulator: the lab's median "
        "over the runs that ended as most did, and one simulated run of the "
        "same workload with the same policy and the same decision maker.",
        "",
        f"The lab's two constants, fitted on the unsteered baselines only "
        f"({', '.join(FIT_POLICIES)}): dirty-bitmap sync {sync_s * 1000:.0f} "
        f"ms, guest program's top write rate {capacity / MB:.0f} MB/s (fit "
        f"error {error:.2f}); {traces}. Neither is set by hand. "
        f"The guest program is taken to have run {LEAD_S:.0f} s before the "
        "migration (its bursts, step and growth are shifted by that).",
        "",
        f"Tolerance: {tol.describe()}. **Work lost** in the lab is the "
        "application's own count; in the simulator it is downtime + "
        "post-copy stall + throttle x time. **Post-copy stall** is shown "
        "where post-copy was the only remedy: the guest's work lost, "
        "against the simulated switch and fault stall.",
        "",
        "## Out of tolerance, per metric",
        "",
        "| metric | rows out of tolerance | rows |",
        "|---|---|---|",
    ]
    for metric, (missed, checked) in tally(found, tol).items():
        lines.append(f"| {metric} | {missed} | {checked} |")
    lines += ["", "## Per remedy: simulated over measured (median, least-most)",
              "", *by_remedy(found), "", *KNOWN_GAPS,
              "", "## Every workload and policy", ""] + table(found, tol)
    return "\n".join(lines) + "\n"


def recorded() -> tuple[dict[str, dict[str, list[Mapping[str, Any]]]],
                        dict[str, float], int]:
    """workload -> policy -> runs, the link of each workload, rounds."""
    first = labcompare.load(labcompare.RESULTS_DIR, labcompare.WORKLOADS)
    repeats = [labcompare.load(d, labcompare.WORKLOADS)
               for d in labcompare.repeat_dirs(labcompare.RESULTS_DIR)]
    links: dict[str, list[float]] = {}
    for results in (first, *repeats):
        for name, data in results.items():
            links.setdefault(name, []).append(float(data["link_mb_s"]))
    merged = labcompare.merged_runs(first, repeats)
    return (merged, {k: statistics.median(v) for k, v in links.items()},
            1 + len(repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true",
                        help="first run `python -m benchmarks.labcompare --run` "
                             "(root, the lab started)")
    parser.add_argument("--output", type=Path, default=HERE / "lab-predict.md")
    args = parser.parse_args(argv)
    if args.run:
        code = labcompare.main(["--run"])
        if code:
            return code
    merged, links, rounds = recorded()
    if not merged:
        print("benchmarks.labpredict: no lab comparison recorded in "
              f"{labcompare.RESULTS_DIR}", file=sys.stderr)
        return 1
    fitted = fit(merged, links)
    found = rows(merged, links, fitted[0], fitted[1])
    traces = calibration.load_traces()
    traces_fit = calibration.fit(traces) if traces else None
    text = render(found, fitted, traces_fit, rounds)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps({
        "fitted": {"sync_base_s": fitted[0],
                   "write_capacity_bytes_s": fitted[1],
                   "fit_error": fitted[2]},
        "tolerance": dataclasses.asdict(TOLERANCE),
        "lead_s": LEAD_S,
        "rows": [dataclasses.asdict(r) | {"misses": r.misses()}
                 for r in found]}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
