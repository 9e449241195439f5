"""What the guest pays for its migration, predicted and measured.

libvirt's downtime is only the stop-and-copy at the end of pre-copy.  The
guest pays more than that whenever the controller steps in:

* a pause it forces stops the guest for everything still dirty, sent at the
  bandwidth;
* after a switch to post-copy the guest runs on the destination, but every
  touch of a page still on the source waits for the page: a guest that
  writes its whole working set waits about working set / bandwidth, one
  long stall as far as it can tell (the lab's heartbeats show 4.6 to
  11.4 s at 14 MB/s where libvirt reports no downtime at all);
* a throttle of p % takes p % of the guest's CPU time for as long as it
  lasts: work lost, and short stops too (QEMU runs each vCPU for a 10 ms
  slice, then stops it for p / (100 - p) of that: 0.99 s at 99 %).  A guest
  task that needs more than one slice to answer waits proportionally longer
  (the lab's guest, about 60 ms of CPU a heartbeat, saw 2 to 6 s at 99 %).

So every figure here comes in two parts: the guest's longest unavailability
(the longest it cannot run) and the guest work lost (downtime + post-copy
stall + throttle × time), in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from nova_livemig_ext.convergence import estimator

MS_PER_S = 1000.0
PCT = 100.0
# QEMU's CPU throttle (cpu-throttle.c): a vCPU runs for this slice, then
# sleeps pct / (100 - pct) of it; QEMU throttles at most 99 %.
THROTTLE_SLICE_S = 0.010
MAX_THROTTLE_PCT = 99
# After the switch to post-copy, a guest touching a page still on the
# source waits for one round trip and the page (an assumption: 0.5 ms on a
# LAN), one page at a time.
FAULT_LATENCY_S = 0.0005
PAGE_SIZE_BYTES = 4096

Measure = tuple[str, float | int | str | None]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


@dataclasses.dataclass(frozen=True)
class GuestCost:
    """The guest's view of a migration, in seconds.

    ``None`` where a part is unknown.  A measured post-copy stall is an
    upper bound: the post-copy phase as long as it lasted, since the guest
    may run between page faults; the lab's heartbeats give the truth.
    """

    longest_unavailable_s: float | None
    work_lost_s: float | None
    downtime_s: float | None = None
    postcopy_stall_s: float | None = None
    throttle_lost_s: float = 0.0
    # A measured post-copy stall is "at most" the post-copy phase.
    upper_bound: bool = False
    # The longest single stop of QEMU's throttle (at the highest throttle):
    # the least a throttled guest waits for any answer.
    throttle_stop_s: float = 0.0

    def measures(self, prefix: str) -> tuple[Measure, ...]:
        """The figures for a decision's measures, under ``prefix``."""
        return (
            (f'{prefix}_unavailable_s', _round(self.longest_unavailable_s)),
            (f'{prefix}_work_lost_s', _round(self.work_lost_s)),
        )

    def text(self) -> str:
        """One line for logs and reports, with the parts."""
        bound = 'at most ' if self.upper_bound else ''
        parts = [f'downtime {_s(self.downtime_s)}']
        if self.postcopy_stall_s is not None:
            parts.append(f'post-copy fault stall {bound}'
                         f'{_s(self.postcopy_stall_s)}')
        parts.append(f'throttle {_s(self.throttle_lost_s)}')
        stops = ''
        if self.throttle_stop_s > 0:
            stops = (f'; throttled, it stops for {_s(self.throttle_stop_s)} '
                     f'at a time, longer for work needing more than '
                     f'{THROTTLE_SLICE_S * MS_PER_S:.0f} ms of CPU')
        return (f'longest unavailability {bound}'
                f'{_s(self.longest_unavailable_s)}, work lost {bound}'
                f"{_s(self.work_lost_s)} ({' + '.join(parts)}){stops}")

    def as_dict(self) -> dict[str, float | bool | None]:
        return {
            'longest_unavailable_s': _round(self.longest_unavailable_s),
            'work_lost_s': _round(self.work_lost_s),
            'downtime_s': _round(self.downtime_s),
            'postcopy_stall_s': _round(self.postcopy_stall_s),
            'throttle_lost_s': _round(self.throttle_lost_s),
            'throttle_stop_s': _round(self.throttle_stop_s),
            'upper_bound': self.upper_bound,
        }


def _s(value: float | None) -> str:
    return 'unknown' if value is None else f'{value:.2f} s'


def _total(*parts: float | None) -> float | None:
    if any(p is None for p in parts):
        return None
    return sum(p for p in parts if p is not None)


def throttle_lost_s(throttle_pct: int | None, seconds: float) -> float:
    """Guest CPU time a throttle takes over ``seconds``."""
    if not throttle_pct or seconds <= 0:
        return 0.0
    return min(max(throttle_pct, 0), 100) / PCT * seconds


def throttle_stop_s(throttle_pct: int | None) -> float:
    """How long QEMU stops a vCPU at a time at ``throttle_pct``."""
    if not throttle_pct or throttle_pct <= 0:
        return 0.0
    pct = min(throttle_pct, MAX_THROTTLE_PCT)
    return pct / (PCT - pct) * THROTTLE_SLICE_S


def postcopy_fault_stall_s(remote_bytes: float, touched_remote_bytes: float,
                           bandwidth_bytes_s: float, *,
                           page_size_bytes: int = PAGE_SIZE_BYTES,
                           fault_latency_s: float = FAULT_LATENCY_S) -> float:
    """Time a guest waits on page faults after the switch to post-copy.

    ``remote_bytes`` is its working set still on the source at the switch;
    ``touched_remote_bytes`` the distinct pages of it the guest touches
    during post-copy before they arrive anyway.  Each such page costs one
    fault latency, but the guest never waits longer than the link takes
    to bring all of ``remote_bytes``: one that wants its pages faster
    than that waits for all of them.
    """
    if remote_bytes <= 0 or bandwidth_bytes_s <= 0:
        return 0.0
    pull_s = remote_bytes / bandwidth_bytes_s
    touched = min(max(touched_remote_bytes, 0.0), remote_bytes)
    faults = math.ceil(touched / page_size_bytes)
    return min(pull_s, faults * fault_latency_s)


def longest_stop_s(downtime_s: float, *, postcopy_stall_s: float = 0.0,
                   stalled_in_one: bool = False,
                   throttle_pct: int | None = None,
                   fault_latency_s: float = FAULT_LATENCY_S) -> float:
    """The longest the guest could not run at all.

    The switchover's ``downtime_s``; after post-copy, for a guest that
    needs its pages faster than they arrive (``stalled_in_one``), that
    and its whole fault stall in one piece, otherwise a single fault; and
    one stop of QEMU's throttle at the highest ``throttle_pct`` it ran
    under (:func:`throttle_stop_s`), whichever is longest.
    """
    longest = max(downtime_s, 0.0)
    if postcopy_stall_s > 0:
        if stalled_in_one:
            longest += postcopy_stall_s
        else:
            longest = max(longest, min(fault_latency_s, postcopy_stall_s))
    return max(longest, throttle_stop_s(throttle_pct))


def with_throttle_stops(cost: GuestCost,
                        throttle_pct: int | None) -> GuestCost:
    """``cost`` for a guest that was (or will be) throttled at up to
    ``throttle_pct``: its longest unavailability is at least one stop."""
    return with_stop_s(cost, throttle_stop_s(throttle_pct))


def with_stop_s(cost: GuestCost, stop_s: float) -> GuestCost:
    """``cost`` with throttle stops of ``stop_s`` at a time."""
    if stop_s <= cost.throttle_stop_s:
        return cost
    longest = cost.longest_unavailable_s
    if longest is not None:
        longest = max(longest, stop_s)
    return dataclasses.replace(cost, longest_unavailable_s=longest,
                               throttle_stop_s=stop_s)


def _downtime_cost(downtime_s: float | None, lost_s: float) -> GuestCost:
    return GuestCost(longest_unavailable_s=downtime_s,
                     work_lost_s=_total(downtime_s, lost_s),
                     downtime_s=downtime_s, throttle_lost_s=lost_s)


def predicted_precopy(est: estimator.Estimate, limit_ms: float,
                      lost_s: float = 0.0) -> GuestCost:
    """Pre-copy left to finish at ``limit_ms``: its stop-and-copy."""
    downtime_ms = estimator.predicted_downtime_ms(est, limit_ms)
    downtime_s = None if downtime_ms is None else downtime_ms / MS_PER_S
    return _downtime_cost(downtime_s, lost_s)


def predicted_pause(est: estimator.Estimate,
                    lost_s: float = 0.0) -> GuestCost:
    """Pausing now: stopped until what is dirty has been sent."""
    downtime_ms = estimator.pause_downtime_ms(est)
    downtime_s = None if downtime_ms is None else downtime_ms / MS_PER_S
    return _downtime_cost(downtime_s, lost_s)


def predicted_postcopy(est: estimator.Estimate,
                       lost_s: float = 0.0) -> GuestCost:
    """Switching to post-copy now.

    A guest that writes its whole working set needs all of what is dirty
    before it can run freely: it waits about that / bandwidth.  Pessimistic
    for a guest with skewed access, which finds its hot pages sooner.
    """
    stall_s = estimator.postcopy_duration_s(est)
    return GuestCost(longest_unavailable_s=stall_s,
                     work_lost_s=_total(stall_s, lost_s),
                     downtime_s=None, postcopy_stall_s=stall_s,
                     throttle_lost_s=lost_s)


def predicted_throttle(est: estimator.Estimate, limit_ms: float,
                       throttle_pct: int, over_s: float,
                       lost_s: float = 0.0) -> GuestCost:
    """Throttling at ``throttle_pct`` for ``over_s`` more, then pre-copy's
    stop-and-copy at ``limit_ms``."""
    more = throttle_lost_s(throttle_pct, over_s)
    return with_throttle_stops(predicted_precopy(est, limit_ms, lost_s + more),
                               throttle_pct)


def once_converged(cost: GuestCost, limit_ms: float) -> GuestCost:
    """``cost`` of a pre-copy rung whose stop-and-copy the model cannot
    predict yet (the working set does not converge at the rates seen): if
    the rung works, QEMU switches over within ``limit_ms``."""
    if cost.downtime_s is not None:
        return cost
    return with_stop_s(_downtime_cost(limit_ms / MS_PER_S,
                                      cost.throttle_lost_s),
                       cost.throttle_stop_s)


def measured(*, completed: bool, ended_at_s: float,
             switchover_started_s: float | None, postcopy: bool,
             paused: bool, libvirt_downtime_ms: float | None,
             lost_s: float, max_throttle_pct: int | None = None
             ) -> GuestCost:
    """What the guest paid, from what the monitor and libvirt saw.

    ``switchover_started_s`` is when the controller paused the guest or
    switched it to post-copy (seconds from the start of the job);
    ``max_throttle_pct`` the highest throttle QEMU reported.
    """
    return with_throttle_stops(_measured(
        completed=completed, ended_at_s=ended_at_s,
        switchover_started_s=switchover_started_s, postcopy=postcopy,
        paused=paused, libvirt_downtime_ms=libvirt_downtime_ms,
        lost_s=lost_s), max_throttle_pct)


def _measured(*, completed: bool, ended_at_s: float,
              switchover_started_s: float | None, postcopy: bool,
              paused: bool, libvirt_downtime_ms: float | None,
              lost_s: float) -> GuestCost:
    libvirt_s = (None if libvirt_downtime_ms is None
                 else libvirt_downtime_ms / MS_PER_S)
    since_switch_s = (None if switchover_started_s is None
                      else max(0.0, ended_at_s - switchover_started_s))
    if postcopy and since_switch_s is not None:
        # libvirt reports no downtime after post-copy (or only the switch):
        # the phase itself bounds the guest's wait for its pages.
        switch_s = libvirt_s or 0.0
        return GuestCost(
            longest_unavailable_s=since_switch_s + switch_s,
            work_lost_s=since_switch_s + switch_s + lost_s,
            downtime_s=libvirt_s, postcopy_stall_s=since_switch_s,
            throttle_lost_s=lost_s, upper_bound=True)
    if paused and since_switch_s is not None:
        # Paused by the controller until the end (or until resumed on the
        # source): the pause is the downtime, whatever libvirt counts.
        return _downtime_cost(since_switch_s, lost_s)
    if completed:
        return _downtime_cost(libvirt_s, lost_s)
    # The guest stayed on the source, running: only the throttle cost it.
    return _downtime_cost(0.0, lost_s)


class ThrottleMeter:
    """Σ throttle × time from the samples a monitor reads, for any
    decision maker (ours counts it itself; Nova's does not)."""

    def __init__(self) -> None:
        self.lost_s = 0.0
        self.max_pct = 0
        self._last: tuple[float, int | None] | None = None

    def add(self, elapsed_s: float, throttle_pct: int | None) -> None:
        """A sample read ``elapsed_s`` after the start of the job."""
        self.max_pct = max(self.max_pct, throttle_pct or 0)
        if self._last is not None and elapsed_s > self._last[0]:
            self.lost_s += throttle_lost_s(self._last[1],
                                           elapsed_s - self._last[0])
        self._last = (elapsed_s, throttle_pct)


def switch_at_s(decisions: Sequence[tuple[str, float, bool]]
                ) -> float | None:
    """When the guest was paused or switched to post-copy, from
    (action value, at_s, applied) of the decisions made."""
    for action, at_s, applied in decisions:
        if applied and action in ('pause', 'start_postcopy'):
            return at_s
    return None
