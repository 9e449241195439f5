"""What a migration cost the guest and the operator, and the floor of each.

Per run:

* ``completed`` and ``within_slo`` (completed in at most the workload's
  SLO, ``SLO_FACTOR`` x the lower bound + ``SLO_SLACK_S``);
* ``outcome``: ``completed``, ``aborted`` (the policy gave up and the guest
  stayed on the source) or ``unfinished`` (still copying when the
  benchmark's horizon ended the run: neither completed nor aborted);
* ``time_ratio``: total time / (non-zero memory / bandwidth); runs that did
  not complete (aborted or unfinished) have an infinite ratio, so they stay
  in every median and percentile instead of being dropped;
* ``work_lost_s``: guest work lost = downtime + post-copy fault stall +
  the vCPU time the throttle took from a guest that needed it (all of the
  throttle for a CPU-bound writer, only what cuts into a paced writer's
  pace).  An aborted run keeps the throttle it cost: the guest paid it
  and did not move;
* ``longest_pause_s``: the longest time the guest made no progress;
* ``postcopy_s``: time exposed in post-copy (a failure of either host or
  the link then loses the guest);
* ``sent_ratio``: bytes sent / non-zero memory.

Physical lower bounds per workload: the time to send every non-zero page
once at the full link; those bytes; and for the guest, the switchover
itself (``SWITCHOVER_OVERHEAD_MS``): a migration cannot cost the guest
less than the device-state handoff, which makes that floor trivial, so
guest work lost is also compared with the best any policy achieved on the
same workload.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import simulator as sim
from nova_livemig_ext.convergence.model import SWITCHOVER_OVERHEAD_MS

SLO_FACTOR = 2.0
SLO_SLACK_S = 60.0
FLOOR_WORK_LOST_S = SWITCHOVER_OVERHEAD_MS / 1000.0
INF = math.inf
COMPLETED = 'completed'
ABORTED = 'aborted'
UNFINISHED = sim.UNFINISHED


def lower_bound_s(workload: sim.Workload) -> float:
    """Every non-zero page once at the full link: no policy beats it."""
    return workload.nonzero_bytes / workload.bandwidth_bytes_s


def slo_s(workload: sim.Workload) -> float:
    return SLO_FACTOR * lower_bound_s(workload) + SLO_SLACK_S


def work_lost_s(result: sim.RunResult) -> float:
    return result.guest_work_lost_s


def run_metrics(workload: sim.Workload,
                result: sim.RunResult) -> dict[str, Any]:
    """The per-run numbers (ratios ``None`` where the run did not
    complete)."""
    lower = lower_bound_s(workload)
    done = result.completed
    return {
        'outcome': result.outcome,
        'completed': done,
        'within_slo': done and result.total_s <= slo_s(workload),
        'total_s': round(result.total_s, 2),
        'lower_bound_s': round(lower, 3),
        'slo_s': round(slo_s(workload), 1),
        'time_ratio': round(result.total_s / lower, 4) if done else None,
        'downtime_ms': (None if result.downtime_ms is None
                        else round(result.downtime_ms, 1)),
        'throttle_lost_s': round(result.throttle_lost_s, 3),
        'postcopy_stall_s': round(result.postcopy_stall_s, 3),
        'work_lost_s': round(work_lost_s(result), 3),
        'longest_pause_s': round(result.longest_pause_s, 3),
        'postcopy_s': round(result.postcopy_s, 2),
        'sent_ratio': round(result.data_sent_bytes / workload.nonzero_bytes,
                            3),
        'iterations': result.iterations,
        'max_throttle_pct': result.max_throttle_pct,
    }


def ratio_value(row: dict[str, Any]) -> float:
    """The time ratio with runs that did not complete as infinity."""
    value = row['time_ratio']
    return INF if value is None else float(value)


def quantile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank quantile; infinities sort last (None when empty)."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def median(values: Iterable[float]) -> float | None:
    return quantile(values, 0.5)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One policy over a set of workloads (runs that did not complete
    included)."""
    n = len(rows)
    ratios = [ratio_value(r) for r in rows]
    lost = [r['work_lost_s'] for r in rows]
    return {
        'runs': n,
        'completed': sum(1 for r in rows if r['completed']),
        'aborted': sum(1 for r in rows if r.get('outcome') == ABORTED),
        'unfinished': sum(1 for r in rows
                          if r.get('outcome') == UNFINISHED),
        'within_slo': sum(1 for r in rows if r['within_slo']),
        'median_time_ratio': median(ratios),
        'p90_time_ratio': quantile(ratios, 0.9),
        'median_work_lost_s': median(lost),
        'p90_work_lost_s': quantile(lost, 0.9),
        'max_work_lost_s': max(lost, default=None),
        # An aborted run keeps the throttle it paid: the largest loss of
        # the runs that completed may be smaller.
        'max_work_lost_completed_s': max(
            (r['work_lost_s'] for r in rows if r['completed']),
            default=None),
        'max_longest_pause_s': max((r['longest_pause_s'] for r in rows),
                                   default=None),
        'p90_longest_pause_s': quantile((r['longest_pause_s']
                                         for r in rows), 0.9),
        'postcopy_runs': sum(1 for r in rows if r['postcopy_s'] > 0),
        'median_postcopy_s': median(r['postcopy_s'] for r in rows),
        'max_postcopy_s': max((r['postcopy_s'] for r in rows),
                              default=None),
        'median_sent_ratio': median(r['sent_ratio'] for r in rows),
    }


def head_to_head(mine: dict[str, dict[str, Any]],
                 theirs: dict[str, dict[str, Any]],
                 tolerance_s: float = 0.01) -> dict[str, Any]:
    """Ours against one peer, workload by workload, on guest work lost.

    Compared only where both completed; ``worse`` lists the workloads where
    ours cost the guest more than ``tolerance_s`` extra, with the part of
    the difference each component explains.
    """
    both = sorted(k for k in mine if k in theirs and mine[k]['completed']
                  and theirs[k]['completed'])
    worse, better = [], []
    for key in both:
        a, b = mine[key], theirs[key]
        diff = a['work_lost_s'] - b['work_lost_s']
        if diff > tolerance_s:
            worse.append({
                'case': key, 'extra_s': round(diff, 3),
                'downtime_s': round(((a['downtime_ms'] or 0)
                                     - (b['downtime_ms'] or 0)) / 1000, 3),
                'throttle_s': round(a['throttle_lost_s']
                                    - b['throttle_lost_s'], 3),
                'stall_s': round(a['postcopy_stall_s']
                                 - b['postcopy_stall_s'], 3)})
        elif diff < -tolerance_s:
            better.append({'case': key, 'saved_s': round(-diff, 3)})
    only_mine = [k for k in mine if k in theirs and mine[k]['completed']
                 and not theirs[k]['completed']]
    only_theirs = [k for k in mine if k in theirs
                   and theirs[k]['completed'] and not mine[k]['completed']]
    slower = sum(1 for k in both
                 if mine[k]['total_s'] > 1.05 * theirs[k]['total_s'])
    faster = sum(1 for k in both
                 if mine[k]['total_s'] * 1.05 < theirs[k]['total_s'])
    return {
        'both_completed': len(both), 'worse': worse, 'better': better,
        'only_ours_completed': len(only_mine),
        # How the other side ended where only one completed.
        'only_ours_theirs_aborted': sum(
            1 for k in only_mine if theirs[k].get('outcome') == ABORTED),
        'only_ours_theirs_unfinished': sum(
            1 for k in only_mine if theirs[k].get('outcome') == UNFINISHED),
        'only_theirs_completed': len(only_theirs),
        'only_theirs_ours_aborted': sum(
            1 for k in only_theirs if mine[k].get('outcome') == ABORTED),
        'only_theirs_ours_unfinished': sum(
            1 for k in only_theirs if mine[k].get('outcome') == UNFINISHED),
        'slower_5pct': slower, 'faster_5pct': faster,
        'max_saved_s': max((b['saved_s'] for b in better), default=0.0),
        'max_extra_s': max((w['extra_s'] for w in worse), default=0.0),
    }
