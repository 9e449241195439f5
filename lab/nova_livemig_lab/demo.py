"""The lab demo: one memory-busy guest, four ways to move it.

A guest writes its 120 MB working set at 40 MB/s, faster than the 14.4 MB/s
link carries it. It is migrated between the lab's two libvirt hosts:

1. as a paused copy (no ``VIR_MIGRATE_LIVE``), the guest stopped throughout;
2. live under upstream Nova 34's algorithm, with a short deadline;
3. live under nova-livemig-ext with nothing configured (its deadline follows
   the link);
4. live under nova-livemig-ext with post-copy permitted, with upstream's
   deadline.

Each run uses the same flags, controller and monitor code as nova-compute
(:mod:`nova_livemig_lab.controlled`); the lab measures the pause the
guest saw and checks its memory page by page. The demo prints a table and
writes ``remaining.png`` (remaining memory over time, decisions marked) and
``results.json``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import safefile
from nova_livemig_ext.convergence.decision import DecisionMaker
from nova_livemig_lab import baselines, controlled, hosts, image, network, traces, workloads
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab.config import LabConfig
from nova_livemig_lab.lock import LabLock
from nova_livemig_ext.policy import MigrationPolicy, UpstreamSettings, upstream_policy

LOG = logging.getLogger(__name__)
MIB = 1024 * 1024
# The lab's memory-busy workload, the one the traces were recorded with.
WORKING_SET_MB = traces.WORKING_SET_MB
DIRTY_RATE_MB_S = traces.FAST_DIRTY_RATE_MB_S
MAX_DOWNTIME_MS = 500
# A 320 MiB guest: 280 s/GiB is an 87.5 s deadline. Nova counts at least
# 2 GiB of RAM, so 44 s/GiB gives upstream the same 88 s.
PER_GIB_S = 280
UPSTREAM_PER_GIB_S = 44


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    policy: MigrationPolicy
    # A baseline nobody steers (nova_livemig_lab.baselines) in place of the
    # policy's decision maker; the flags still come from the policy.
    decider: Callable[[], DecisionMaker] | None = None


def ours_policy() -> MigrationPolicy:
    """The lab's policy: auto-converge, then post-copy; downtime up to 500 ms.

    QEMU's auto-converge usually converges this guest in about 50 s; when
    it has not after its chance (4 throttled passes), post-copy finishes.
    """
    return MigrationPolicy().replace(
        ladder=("downtime", "auto_converge", "postcopy", "abort"), permit_post_copy=True,
        max_downtime_ms=MAX_DOWNTIME_MS,
        auto_converge_initial_pct=50, auto_converge_increment_pct=20,
        completion_timeout_s_per_gib=PER_GIB_S)


def upstream_policy_same_deadline() -> MigrationPolicy:
    """Nova 34's algorithm with the deadline ours has (abort at the timeout)."""
    return upstream_policy(MigrationPolicy(mode="upstream", upstream=UpstreamSettings(
        completion_timeout_s_per_gib=UPSTREAM_PER_GIB_S, timeout_action="abort")))


DEFAULTS_NAME = "ours, defaults"
POSTCOPY_NAME = "ours, post-copy"
# The shipped defaults' name in `lab compare`, and the defaults with the
# operator's ceiling on the guest's stop set to 10 s.
DEFAULTS = "shipped defaults"
CEILING = "defaults, stop ceiling 10 s"


def scenarios() -> tuple[Scenario, ...]:
    return (
        Scenario("paused copy", MigrationPolicy().replace(
            copy_mode="paused", ladder=("abort",), completion_timeout_s_per_gib=PER_GIB_S)),
        Scenario("upstream Nova 34", upstream_policy_same_deadline()),
        # Nothing configured: the deadline follows the link.
        Scenario(DEFAULTS_NAME, MigrationPolicy()),
        Scenario(POSTCOPY_NAME, ours_policy()),
    )


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    outcome: str
    total_s: float
    downtime_ms: float | None
    guest_pause_s: float
    guest_intact: bool
    guest_on: str
    curve: tuple[tuple[float, float], ...]
    marks: tuple[tuple[float, str], ...]
    rungs: tuple[str, ...]
    # The guest's work lost, by its own counters (appmetrics: its
    # application's throughput deficit over the migration and the settle
    # time), and the model's figure beside it: the longest heartbeat gap
    # plus throttle x time (QEMU's reported throttle at every poll).
    guest_work_lost_s: float = 0.0
    model_work_lost_s: float = 0.0
    # The application's own view (latencies for a server), when it has one.
    app: dict[str, object] | None = None
    # What the monitor alone can say (an upper bound after post-copy), and
    # what our controller predicted before acting.
    monitor_unavailable_s: float | None = None
    predicted_unavailable_s: float | None = None
    # Every decision, with its reason: why the run went as it did.
    decisions: tuple[str, ...] = ()


def _row(scenario: Scenario, done: controlled.ControlledMigration) -> Row:
    report = done.report
    curve = tuple((round(p.elapsed_s, 2), round(p.sample.memory_remaining_bytes / MIB, 1))
                  for p in done.progress)
    marks = tuple((a.decision.at_s,
                   (a.decision.action.value + livemig_monitor.decision_argument(a.decision))
                   if a.decision.has_effect else f"{a.decision.rung} (QEMU throttles)")
                  for a in report.decisions
                  if a.applied and (a.decision.has_effect or a.decision.rung == "auto_converge"))
    throttle_s = done.guest.throttle_lost_s if done.guest is not None else 0.0
    return Row(scenario.name, report.outcome.value, round(report.total_s, 1),
               report.downtime_ms, done.result.max_heartbeat_gap_s,
               done.result.integrity.ok, done.result.integrity.host, curve, marks,
               tuple(rung for rung, _ in report.rungs_used),
               guest_work_lost_s=round(
                   done.result.app_cost.work_lost_s if done.result.app_cost is not None
                   else done.result.max_heartbeat_gap_s + throttle_s, 2),
               model_work_lost_s=round(done.result.max_heartbeat_gap_s + throttle_s, 2),
               app=None if done.result.app_cost is None else done.result.app_cost.as_dict(),
               monitor_unavailable_s=(None if done.guest is None
                                      else done.guest.longest_unavailable_s),
               predicted_unavailable_s=(None if done.predicted_guest is None
                                        else done.predicted_guest.longest_unavailable_s),
               decisions=tuple(f"{a.decision.at_s:.1f} s {a.decision.action.value}: "
                               f"{a.decision.reason}" for a in report.decisions))


def _times(value: float, least: float | None) -> str:
    if least is None or least <= 0:
        return "-"
    return f"x{value / least:.1f}"


def table(rows: list[Row]) -> str:
    """One line per run; "vs least" compares with the least any completed
    run of the table achieved (unavailability, then work lost)."""
    done = [r for r in rows if r.outcome == "completed"]
    least_gap = min((r.guest_pause_s for r in done), default=None)
    least_lost = min((r.guest_work_lost_s for r in done), default=None)
    head = (f"{'run':17} {'outcome':10} {'total':>6} {'downtime':>9} "
            f"{'unavailable':>12} {'work lost':>10} {'(model)':>8} {'vs least':>12}  guest")
    lines = [head, "-" * len(head)]
    for r in rows:
        downtime = "-" if r.downtime_ms is None else f"{r.downtime_ms:.0f} ms"
        intact = "intact" if r.guest_intact else "DAMAGED"
        versus = (f"{_times(r.guest_pause_s, least_gap)}/"
                  f"{_times(r.guest_work_lost_s, least_lost)}")
        lines.append(f"{r.name:17} {r.outcome:10} {r.total_s:5.1f}s {downtime:>9} "
                     f"{r.guest_pause_s:11.2f}s {r.guest_work_lost_s:9.2f}s "
                     f"{r.model_work_lost_s:7.2f}s {versus:>12}  {intact}, {r.guest_on}")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, link_mb_s: float) -> bool:
    """Remaining memory over time, one panel per run; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        LOG.warning("matplotlib is not installed: no chart (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 3.2 * len(rows)), sharex=True)
    for ax, row in zip(axes, rows):
        if row.curve:
            xs, ys = zip(*row.curve)
            ax.plot(xs, ys, lw=1.2)
        for at_s, label in row.marks:
            ax.axvline(at_s, color="tab:red", lw=0.8, ls="--")
            ax.annotate(label, (at_s, ax.get_ylim()[1] * 0.9), fontsize=7, rotation=90,
                        va="top", ha="right", color="tab:red")
        downtime = "-" if row.downtime_ms is None else f"{row.downtime_ms:.0f} ms"
        ax.set_title(f"{row.name}: {row.outcome} in {row.total_s:.0f} s, downtime {downtime}, "
                     f"guest pause {row.guest_pause_s:.1f} s", fontsize=9)
        ax.set_ylabel("remaining MiB")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the migration started")
    fig.suptitle(f"{WORKING_SET_MB} MB working set written at {DIRTY_RATE_MB_S} MB/s over a "
                 f"{link_mb_s:.1f} MB/s link", fontsize=10)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    safefile.atomic_write(path, image.getvalue())
    return True


def run(cfg: LabConfig, out_dir: Path) -> list[Row]:
    """Start the lab, run the four migrations, stop the lab."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image.setup(cfg)
    rows: list[Row] = []
    with LabLock(cfg):
        hosts.start(cfg)
        print(f"libvirt: {cfg.libvirt.name}")
        try:
            link_mb_s = float(network.load_link_state(cfg)["measured_mb_s"])
            for scenario in scenarios():
                print(f"--- {scenario.name}: booting a guest on host a", flush=True)
                guest = lab_guest.boot(cfg, cfg.host_a, f"demo-{int(time.time() * 1000) % 10**8}",
                                       WORKING_SET_MB, DIRTY_RATE_MB_S)
                try:
                    print(f"--- {scenario.name}: migrating to host b", flush=True)
                    done = controlled.migrate_with_policy(cfg, guest, scenario.policy)
                finally:
                    lab_guest.destroy(guest, cfg)
                rows.append(_row(scenario, done))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            report = hosts.stop(cfg)
    print()
    print(table(rows))
    chart = out_dir / "remaining.png"
    if plot(rows, chart, link_mb_s):
        print(f"\nchart: {chart}")
    results = out_dir / "results.json"
    safefile.atomic_write(results, json.dumps(
        {"link_mb_s": link_mb_s, "working_set_mb": WORKING_SET_MB,
         "dirty_rate_mb_s": DIRTY_RATE_MB_S, "libvirt_build": cfg.libvirt.name,
         "runs": [dataclasses.asdict(r) for r in rows],
         "lab_leftovers": report["leftovers"]}, indent=1).encode())
    print(f"results: {results}")
    return rows


def summary_ok(rows: list[Row]) -> bool:
    """Every guest intact, and ours completed."""
    ours = [r for r in rows if r.name in (DEFAULTS_NAME, POSTCOPY_NAME)]
    return (all(r.guest_intact for r in rows) and bool(ours)
            and all(r.outcome == "completed" for r in ours))


def main(cfg: LabConfig, out_dir: Path) -> int:
    rows = run(cfg, out_dir)
    return 0 if summary_ok(rows) else 1


def alternatives() -> tuple[Scenario, ...]:
    """Ways to move one guest, side by side: the shipped defaults with the
    deadline following the link, ours with one remedy on its ladder, and
    the baselines an operator has without our controller: QEMU's
    auto-converge armed at 50/20 and at 20/10 with nobody watching,
    post-copy from the end of the first pass with no throttle, Nova 34's
    algorithm (the demo's deadline) and a paused copy. The unsteered ones
    end at the lab's cap (:data:`nova_livemig_lab.baselines.CAP_S`)."""
    base = MigrationPolicy().replace(completion_timeout_s_per_gib=0)

    def knobs(initial: int, increment: int) -> Scenario:
        return Scenario(f"QEMU {initial}/{increment} alone",
                        base.replace(ladder=("auto_converge", "abort"),
                                     auto_converge_initial_pct=initial,
                                     auto_converge_increment_pct=increment),
                        baselines.Unwatched)

    return (
        Scenario(DEFAULTS, base),
        Scenario("bounded pause", base.replace(ladder=("downtime", "pause", "abort"))),
        Scenario("post-copy", base.replace(ladder=("downtime", "postcopy", "abort"),
                                           permit_post_copy=True)),
        Scenario("throttle", base.replace(ladder=("auto_converge", "abort"))),
        # What an operator gets by setting max_guest_stop_s = 10 and
        # nothing else (the ladder then gains a pause within it).
        Scenario(CEILING, base.replace(max_guest_stop_s=10.0, ladder=(
            "downtime", "auto_converge", "pause", "abort"))),
        knobs(50, 20),
        knobs(20, 10),
        Scenario("post-copy after first pass",
                 base.replace(ladder=("postcopy", "abort"), permit_post_copy=True),
                 lambda: baselines.Unwatched(postcopy_after_first_pass=True)),
        Scenario("Nova 34", upstream_policy_same_deadline()),
        Scenario("paused copy", MigrationPolicy().replace(
            copy_mode="paused", ladder=("abort",), completion_timeout_s_per_gib=PER_GIB_S)),
    )


# What `lab compare` runs unless told: the defaults (alone and with the
# stop ceiling) and every baseline; "post-copy" and "throttle" (ours with
# one remedy) only when named.
COMPARED = (DEFAULTS, CEILING, "bounded pause", "QEMU 50/20 alone", "QEMU 20/10 alone",
            "post-copy after first pass", "Nova 34", "paused copy")


def compare(cfg: LabConfig, out_dir: Path, workload: workloads.Workload,
            chosen: tuple[Scenario, ...] | None = None) -> list[Row]:
    """Migrate the same kind of guest once per scenario; the guest's
    heartbeats measure each. The lab must be running; the lab lock is held
    for each run only. "vs least" in the table is each run's distance from
    the least any of them achieved on this workload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The guest program as it is in this checkout (a no-op when unchanged):
    # an older one would ignore the workload's application.
    image.build_initramfs(cfg)
    rows: list[Row] = []
    link_mb_s = None
    for scenario in chosen or tuple(s for s in alternatives() if s.name in COMPARED):
        with LabLock(cfg):
            link_mb_s = float(network.load_link_state(cfg)["measured_mb_s"])
            guest = lab_guest.boot(cfg, cfg.host_a, f"cmp-{int(time.time() * 1000) % 10**8}",
                                   workload.dirty_mb, workload.dirty_rate_mb_s,
                                   pattern=workload.pattern)
            try:
                done = controlled.migrate_with_policy(cfg, guest, scenario.policy,
                                                      decider=scenario.decider)
            finally:
                lab_guest.destroy(guest, cfg)
        rows.append(_row(scenario, done))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"{workload.describe()}; link {link_mb_s} MB/s; {cfg.libvirt.name}")
    print(table(rows))
    for row in rows:
        if row.app is not None and row.app.get("latency_p99_ms") is not None:
            print(f"{row.name}: {row.app['requests']} requests in "
                  f"{row.app['window_s']:.0f} s, latency p50 {row.app['latency_p50_ms']:.1f} ms, "
                  f"p99 {row.app['latency_p99_ms']:.1f} ms, p99.9 "
                  f"{row.app['latency_p999_ms']:.1f} ms, max {row.app['latency_max_ms']:.1f} ms")
    results = out_dir / f"compare-{workload.name}.json"
    from nova_livemig_lab.chaos import code_version
    stamp = {"code": code_version(), "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    runs = [{**{k: v for k, v in dataclasses.asdict(r).items() if k != "curve"}, **stamp}
            for r in rows]
    safefile.atomic_write(results, json.dumps(
        {"link_mb_s": link_mb_s, "workload": workload.describe(),
         "working_set_mb": workload.dirty_mb, "dirty_rate_mb_s": workload.dirty_rate_mb_s,
         "libvirt_build": cfg.libvirt.name,
         "runs": merged_runs(results, workload, runs)}, indent=1).encode())
    print(f"results: {results}")
    return rows


def merged_runs(results: Path, workload: workloads.Workload,
                runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """``runs`` in place of the runs of the same policies already in
    ``results`` (the same workload), the others kept: a policy run again
    replaces its earlier run, and another policy is added beside it."""
    try:
        old = json.loads(results.read_text())
    except (OSError, ValueError):
        return runs
    if not isinstance(old, dict) or old.get("workload") != workload.describe():
        return runs
    new = {r["name"]: r for r in runs}
    kept = [new.pop(r["name"], r) for r in old.get("runs", [])
            if isinstance(r, dict) and "name" in r]
    return kept + list(new.values())
