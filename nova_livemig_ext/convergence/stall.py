"""Stall detection: when pre-copy needs help, and why (the triggers).

Progress is judged at pass boundaries, on the working set (what a pass left
dirty), never on instantaneous remaining bytes: those fall through every pass
and jump at every sync, so a "remaining has not hit a new low" rule fires on
healthy migrations (Nova dropped its progress timeout for that, bug 1644248).

* plateau: ``stall_patience_passes`` boundaries in a row without the working
  set shrinking by ``min_pass_progress_fraction`` below the best so far.  The
  bulk pass only sets the first working set, so a real plateau is found two
  passes after the first full one.  Oscillating working sets keep setting
  new bests and never reach the patience.
* window: when passes are long, ``stall_window_s`` without a better working
  set *and* the pass under way is not projected to leave a smaller one (its
  projected length × dirty rate).  A 64 GiB guest over 1 Gbit/s at λ = 0.5
  spends minutes per pass but every projection shrinks, so it is never
  stalled.
* deadline: converging, but predicted by the pre-copy model to finish
  after the deadline.

A stall of the link rather than of the guest is :mod:`.link`'s business.
"""

from __future__ import annotations

import dataclasses
import enum

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import rounded
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import StallTracker
from nova_livemig_ext.convergence.state import elapsed_s


class TriggerKind(enum.Enum):
    PLATEAU = 'plateau'
    WINDOW = 'window'
    DEADLINE = 'deadline'


@dataclasses.dataclass(frozen=True)
class Trigger:
    """Why pre-copy needs help, with the numbers."""

    kind: TriggerKind
    reason: str
    measures: tuple[Measure, ...]


def working_set_progressed(config: ControllerConfig, best_bytes: int,
                           working_set_bytes: float) -> bool:
    """Did the working set shrink enough to count as progress?"""
    return working_set_bytes < best_bytes * (
        1 - config.min_pass_progress_fraction)


def track_stall(config: ControllerConfig, state: ControllerState,
                now_s: float) -> ControllerState:
    """Update the working-set progress at a new pass boundary."""
    est = state.estimate
    tracker = state.stall
    new_passes = est.passes_completed - tracker.boundaries_seen
    working_set = estimator.latest_working_set_bytes(est)
    if new_passes <= 0 or working_set is None:
        return state
    t = elapsed_s(state, now_s)
    best = tracker.best_working_set_bytes
    if best is None or working_set_progressed(config, best, working_set):
        tracker = StallTracker(best_working_set_bytes=working_set,
                               passes_without_progress=0,
                               last_progress_s=t,
                               boundaries_seen=est.passes_completed)
    else:
        # Counted per boundary seen, not per sync: several short passes
        # between two polls are one reading, not several.
        tracker = dataclasses.replace(
            tracker,
            passes_without_progress=tracker.passes_without_progress + 1,
            boundaries_seen=est.passes_completed)
    return dataclasses.replace(state, stall=tracker)


def working_set_fits_limit(state: ControllerState) -> bool:
    """Would QEMU switch over at the current limit with this working set?"""
    est = state.estimate
    working_set = estimator.latest_working_set_bytes(est)
    if working_set is None or not est.bandwidth_bytes_s:
        return False
    return working_set <= estimator.switch_threshold_bytes(
        est.bandwidth_bytes_s, state.downtime_ms)


def projected_next_working_set_bytes(state: ControllerState,
                                     now_s: float) -> float | None:
    """What the pass under way will leave dirty: its length × dirty rate."""
    est = state.estimate
    if (est.dirty_rate_bytes_s is None or not est.bandwidth_bytes_s
            or est.pass_started_s is None):
        return None
    in_pass_s = elapsed_s(state, now_s) - est.pass_started_s
    pass_s = in_pass_s + est.remaining_bytes / est.bandwidth_bytes_s
    dirtied = est.dirty_rate_bytes_s * pass_s
    cap = est.largest_working_set_bytes or dirtied
    return min(dirtied, cap)


def plateau_trigger(config: ControllerConfig, state: ControllerState
                    ) -> Trigger | None:
    """Has the working set stopped shrinking for the patience in passes?"""
    tracker = state.stall
    if tracker.passes_without_progress < config.stall_patience_passes:
        return None
    if working_set_fits_limit(state):
        return None
    est = state.estimate
    reason = (
        f'working set stopped shrinking: '
        f"{fmt(mib(estimator.latest_working_set_bytes(est)), ' MiB')} "
        f'at the start of pass {est.iteration}, best '
        f"{fmt(mib(tracker.best_working_set_bytes), ' MiB')}, "
        f'{tracker.passes_without_progress} passes without progress, '
        f"dirty ratio {fmt(estimator.dirty_ratio(est), '', 2)}")
    return Trigger(TriggerKind.PLATEAU, reason, (
        ('passes_without_progress', tracker.passes_without_progress),
        ('best_working_set_mib', mib(tracker.best_working_set_bytes))))


def window_trigger(config: ControllerConfig, state: ControllerState,
                   now_s: float) -> Trigger | None:
    """No better working set for the window, and none on the way?"""
    tracker = state.stall
    best = tracker.best_working_set_bytes
    if tracker.last_progress_s is None or best is None:
        return None
    quiet_s = elapsed_s(state, now_s) - tracker.last_progress_s
    if quiet_s < config.stall_window_s or working_set_fits_limit(state):
        return None
    projected = projected_next_working_set_bytes(state, now_s)
    if projected is None or working_set_progressed(
            config, best, projected):
        return None
    reason = (
        f'no better working set for {quiet_s:.0f} s (window '
        f'{config.stall_window_s:.0f} s) and the pass under way is '
        f"projected to leave {fmt(mib(projected), ' MiB')}, best "
        f"{fmt(mib(best), ' MiB')}")
    return Trigger(TriggerKind.WINDOW, reason, (
        ('quiet_s', round(quiet_s, 1)),
        ('projected_working_set_mib', mib(projected)),
        ('best_working_set_mib', mib(best))))


def deadline_trigger(config: ControllerConfig, state: ControllerState,
                     now_s: float) -> Trigger | None:
    """Converging, but predicted to finish after the deadline?"""
    est = state.estimate
    ratio = estimator.convergence_ratio(est)
    if ratio is None or ratio >= 1 or not est.boundaries:
        # λ ≥ 1 is the plateau's business; before the first boundary there
        # is nothing to predict from.
        return None
    predicted = estimator.predicted_completion_s(est, state.downtime_ms)
    left = time_left_s(config, state, now_s)
    if predicted is not None and predicted <= left:
        return None
    reason = (f"predicted to finish in {fmt(predicted, ' s', 0)} at "
              f'{state.downtime_ms} ms, but the deadline is in '
              f'{left:.0f} s')
    return Trigger(TriggerKind.DEADLINE, reason, (
        ('predicted_completion_s', rounded(predicted, 1)),
        ('time_left_s', round(left, 1))))


def escalation_trigger(config: ControllerConfig, state: ControllerState,
                       now_s: float) -> Trigger | None:
    """Does pre-copy need the next rung, and why?"""
    return (plateau_trigger(config, state)
            or window_trigger(config, state, now_s)
            or deadline_trigger(config, state, now_s))
