"""Host drains: several guests leave one host over its shared link.

Each platform starts as many migrations at once as its defaults allow
(``Policy.host_concurrency``) and the next guest as soon as one ends.  The
running migrations share the link fairly (water-filling: a job held below
its share by its own cap, a bandwidth limit or its streams, leaves the rest
to the others).  A guest whose migration is aborted stays on the host, so
the host is never empty.  Guests still migrating, or still waiting their
turn, when the drain's horizon ends it are counted apart: unfinished at the
horizon, not aborted.

The drain advances in steps of ``STEP_S`` (1 s): shares are recomputed and
each job is polled at its own interval, rounded up to whole steps (Nova,
KubeVirt and ours poll every second here instead of every 0.4-0.5 s; Nova
skips the polls at which it would do nothing, ``NovaMonitor.next_poll_s``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from benchmarks import metrics
from benchmarks import policies
from benchmarks import simulator as sim
from benchmarks import workloads
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples

STEP_S = 1.0
HORIZON_S = 8 * 3600.0


def fair_shares(link_bytes_s: float, caps: list[float]) -> list[float]:
    """Split the link evenly; what a capped job cannot use goes to others."""
    shares = [0.0] * len(caps)
    left = link_bytes_s
    order = sorted(range(len(caps)), key=lambda i: caps[i])
    for done, index in enumerate(order):
        even = left / (len(caps) - done)
        shares[index] = min(caps[index], even)
        left -= shares[index]
    return shares


@dataclasses.dataclass
class _Slot:
    case: workloads.Case
    migration: sim.Migration
    decider: ctl.DecisionMaker
    started_s: float
    poll_s: float
    next_poll_s: float = 0.0


def _apply(slot: _Slot, batch: tuple[ctl.Decision, ...]) -> None:
    for decision in batch:
        if decision.has_effect:
            model.apply_and_acknowledge(slot.migration, slot.decider,
                                        decision)


def run_drain(policy: policies.Policy, case: workloads.DrainCase,
              step_s: float = STEP_S,
              horizon_s: float = HORIZON_S) -> dict[str, Any]:
    """Drain the host of ``case`` under ``policy``."""
    queue = list(case.guests)
    active: list[_Slot] = []
    finished: list[tuple[_Slot, sim.RunResult]] = []
    now = 0.0
    while (queue or active) and now < horizon_s:
        while queue and len(active) < policy.host_concurrency:
            guest = queue.pop(0)
            w = guest.workload
            poll = step_s * math.ceil(max(step_s, policy.poll_for(w))
                                      / step_s - 1e-9)
            slot = _Slot(guest, sim.Migration(w, policy.settings(w)),
                         policy.decider(w, poll), now, poll)
            _apply(slot, slot.decider.start(0.0))
            active.append(slot)
        shares = fair_shares(case.link_bytes_s,
                             [s.migration.rate_cap_bytes_s() for s in active])
        for slot, share in zip(active, shares):
            m = slot.migration
            m.link_share_bytes_s = share
            if m.running and m.now_s >= slot.next_poll_s - 1e-9:
                sample = samples.sample_from_job_stats(m.job_stats())
                _apply(slot, slot.decider.observe(sample, m.now_s))
                next_poll = getattr(slot.decider, 'next_poll_s', None)
                interval = (slot.poll_s if next_poll is None
                            else max(step_s, next_poll(slot.poll_s)))
                slot.next_poll_s = m.now_s + interval
            if m.running:
                m.advance(step_s)
        now += step_s
        for slot in [s for s in active if not s.migration.running]:
            active.remove(slot)
            finished.append((slot, sim.result_of(slot.migration, [])))
    moved = [(s, r) for s, r in finished if r.completed]
    left = len(case.guests) - len(moved)
    aborted = sum(1 for _, r in finished if r.outcome == 'aborted')
    empty_s = (max(s.started_s + r.total_s for s, r in moved)
               if not left and moved else None)
    lower = case.lower_bound_s
    return {
        'policy': policy.name, 'drain': case.key,
        'guests': len(case.guests), 'link_gbit_s': case.link_gbit_s,
        'concurrency': policy.host_concurrency,
        'lower_bound_s': round(lower, 1),
        'host_empty_s': None if empty_s is None else round(empty_s, 1),
        'empty_ratio': (None if empty_s is None
                        else round(empty_s / lower, 3)),
        'guests_left': left,
        'guests_aborted': aborted,
        'guests_unfinished': left - aborted,
        'work_lost_s': round(sum(metrics.work_lost_s(r)
                                 for _, r in finished), 2),
        'longest_pause_s': round(max((r.longest_pause_s
                                      for _, r in finished), default=0.0),
                                 3),
        'postcopy_s': round(sum(r.postcopy_s for _, r in finished), 1),
    }
