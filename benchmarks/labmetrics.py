"""The simulator's guest-cost metrics, computed from a real lab migration.

Input is one plain record per run (what ``benchmarks.lab`` saves in
``lab-results.json`` under ``raw``): the source's ``jobStats()`` polls, the
guest's heartbeats (host time, relative to the start of the job), the
monitor's decisions and report, and libvirt's completed-job statistics.
Output is a row with the keys of :func:`benchmarks.metrics.run_metrics`, so
:func:`benchmarks.metrics.summarise` summarises lab runs exactly as it does
simulated ones (runs that did not complete stay in every median as
infinitely slow).

Where each guest cost comes from:

* downtime: libvirt's completed-job figure (pre-copy completions and the
  paused copy; libvirt reports none for a job post-copy finished);
* post-copy fault stall: the guest's own heartbeats after the switch.  The
  guest prints one every ``HEARTBEAT_INTERVAL_S``; every gap longer than
  ``STALL_MIN_GAP_S`` that begins between the switch and the end of the
  job counts for what it exceeds the interval (the stop at the switch and
  every wait on a page still on the source);
* throttle: auto-converge's throttle (``auto_converge_throttle`` in the
  polls) x the time it held, until the job ended or post-copy started:
  the vCPU time QEMU took from the guest, as the simulator counts it for a
  CPU-bound writer.  The lab's writer is paced, so part of it may not have
  slowed the program: ``guest_shortfall_s`` is the guest's own count;
* ``guest_shortfall_s``: the time the guest's writer fell behind its pace
  (it never catches up after a pause), from the ``written`` counter of the
  heartbeats between the start of the job and the end of the settle time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import metrics

MB = 1000 * 1000
PAGE_BYTES = 4096
HEARTBEAT_INTERVAL_S = 0.1
# Under TCG heartbeats arrive irregularly (two QEMUs share two cores):
# gaps up to this long are jitter, not a stall.
STALL_MIN_GAP_S = 0.25
# Non-zero share of the lab guest when no poll after the bulk pass tells
# (the paused copy of a 320 MiB guest sent 191877120 of 335937536 bytes).
DEFAULT_NONZERO_FRACTION = 191877120 / 335937536

Poll = tuple[float, Mapping[str, Any]]


def polls_of(raw: Mapping[str, Any]) -> list[Poll]:
    return [(float(t), stats) for t, stats in raw.get('polls') or ()]


def nonzero_bytes(polls: Sequence[Poll], memory_bytes: int) -> int:
    """Guest memory less the zero pages QEMU found in its bulk pass.

    Read at the first poll after the bulk pass (``memory_iteration`` >= 2),
    when every page has been looked at once; a paused copy has one pass
    only, so its last poll with everything processed stands in.
    """
    for _, stats in polls:
        if int(stats.get('memory_iteration', 0)) >= 2:
            page = int(stats.get('memory_page_size') or PAGE_BYTES)
            return int(stats.get('memory_total', memory_bytes)
                       - int(stats.get('memory_constant', 0)) * page)
    return int(round(memory_bytes * DEFAULT_NONZERO_FRACTION))


def throttle_lost_s(polls: Sequence[Poll], until_s: float) -> float:
    """Throttle % x time, each poll's throttle held until the next poll."""
    lost = 0.0
    for (t0, stats), (t1, _) in zip(polls, [*polls[1:], (until_s, {})]):
        end = min(t1, until_s)
        if end <= t0:
            continue
        pct = float(stats.get('auto_converge_throttle') or 0)
        lost += pct / 100.0 * (end - t0)
    return lost


def max_throttle_pct(polls: Sequence[Poll]) -> int:
    return max((int(s.get('auto_converge_throttle') or 0) for _, s in polls),
               default=0)


def gaps(times: Sequence[float]) -> list[tuple[float, float]]:
    """(start, length) of every interval between consecutive heartbeats."""
    ordered = sorted(times)
    return [(a, b - a) for a, b in zip(ordered, ordered[1:])]


def postcopy_stall_s(times: Sequence[float], switch_s: float,
                     end_s: float) -> float:
    """What the heartbeat gaps from the switch to the end exceed 10 Hz by."""
    return sum(length - HEARTBEAT_INTERVAL_S
               for start, length in gaps(times)
               if switch_s - HEARTBEAT_INTERVAL_S <= start <= end_s
               and length > STALL_MIN_GAP_S)


def longest_gap_s(times: Sequence[float], start_s: float,
                  end_s: float) -> float:
    """Longest heartbeat gap that overlaps [start_s, end_s]."""
    return max((length for start, length in gaps(times)
                if start <= end_s and start + length >= start_s),
               default=end_s - start_s)


def pace_bytes_s(dirty_rate_mb_s: int) -> float:
    """The writer's pace: whole pages per 100 ms tick (tools/lab/dirtier.c)."""
    pages_per_tick = dirty_rate_mb_s * MB // PAGE_BYTES // 10
    return float(pages_per_tick * PAGE_BYTES * 10)


def guest_shortfall_s(beats: Sequence[Sequence[Any]], start_s: float,
                      end_s: float, pace: float) -> float | None:
    """How far the writer fell behind its pace over [start_s, end_s].

    ``beats`` are (time, seq, written bytes, host).  None when the window
    holds fewer than two heartbeats or the writer does not write.
    """
    inside = sorted((float(b[0]), int(b[2])) for b in beats
                    if start_s <= float(b[0]) <= end_s)
    if len(inside) < 2 or pace <= 0:
        return None
    (t0, w0), (t1, w1) = inside[0], inside[-1]
    return max(0.0, (t1 - t0) - (w1 - w0) / pace)


def first_action_s(decisions: Sequence[Sequence[Any]],
                   action: str) -> float | None:
    """When the monitor first applied ``action`` ((at_s, action, applied))."""
    times = [float(d[0]) for d in decisions if d[1] == action and d[2]]
    return min(times) if times else None


def sent_bytes(raw: Mapping[str, Any], polls: Sequence[Poll]) -> int:
    """Bytes QEMU sent: libvirt's completed figure, else the last polls'.

    After post-copy libvirt keeps no completed statistics; the largest
    ``memory_processed`` polled (at most one poll interval before the end)
    and the monitor's own figure stand in.
    """
    completed = raw.get('completed_stats') or {}
    candidates = [int(completed.get('memory_processed') or 0),
                  int(raw.get('report_memory_sent_bytes') or 0)]
    candidates += [int(s.get('memory_processed') or 0) for _, s in polls]
    return max(candidates)


def run_row(raw: Mapping[str, Any], settle_s: float) -> dict[str, Any]:
    """One lab run as a row of :func:`benchmarks.metrics.run_metrics`."""
    polls = polls_of(raw)
    memory = int(raw['memory_bytes'])
    nonzero = nonzero_bytes(polls, memory)
    bandwidth = float(raw['link_mb_s']) * MB
    lower = nonzero / bandwidth
    slo = metrics.SLO_FACTOR * lower + metrics.SLO_SLACK_S
    total = float(raw['total_s'])
    done = raw['outcome'] == 'completed' and bool(raw['guest_intact'])
    decisions = raw.get('decisions') or ()
    switch = first_action_s(decisions, 'start_postcopy')
    if switch is not None and not raw.get('switched_to_postcopy'):
        switch = None
    beats = raw.get('heartbeats') or ()
    times = [float(b[0]) for b in beats]
    downtime_ms = raw.get('downtime_ms')
    downtime_s = 0.0 if downtime_ms is None else float(downtime_ms) / 1000
    stall = 0.0 if switch is None else postcopy_stall_s(times, switch, total)
    throttle = throttle_lost_s(polls, total if switch is None else switch)
    sent = sent_bytes(raw, polls)
    shortfall = guest_shortfall_s(beats, 0.0, total + settle_s,
                                  pace_bytes_s(int(raw['dirty_rate_mb_s'])))
    return {
        'policy': raw['policy'], 'workload': raw['workload'],
        'outcome': raw['outcome'] if raw['guest_intact'] else 'damaged',
        'completed': done,
        'within_slo': done and total <= slo,
        'total_s': round(total, 2),
        'lower_bound_s': round(lower, 3),
        'slo_s': round(slo, 1),
        'time_ratio': round(total / lower, 4) if done else None,
        'downtime_ms': None if downtime_ms is None else float(downtime_ms),
        'throttle_lost_s': round(throttle, 3),
        'postcopy_stall_s': round(stall, 3),
        'work_lost_s': round(downtime_s + stall + throttle, 3),
        'guest_shortfall_s': (None if shortfall is None
                              else round(shortfall, 3)),
        'longest_pause_s': round(longest_gap_s(times, 0.0,
                                               total + settle_s), 3),
        'postcopy_s': round(total - switch, 2) if switch is not None else 0.0,
        'sent_bytes': sent,
        'nonzero_bytes': nonzero,
        'sent_ratio': round(sent / nonzero, 3),
        'iterations': raw.get('iterations'),
        'max_throttle_pct': max_throttle_pct(polls),
    }
