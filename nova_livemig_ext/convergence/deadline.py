"""The deadline: derived from the link, and never moved earlier once promised.

With ``deadline_link_multiple`` set, the deadline follows the link: that
many times the data to move divided by the bandwidth measured (the best
smoothed rate, counted per share of the link when several migrations share
it), never below ``deadline_floor_s`` and never above ``deadline_s``, the
operator's cap.  Until the first pass ends it follows the measurement; from
then on it never moves earlier, so a link measured faster later cannot end
a migration it has already promised time to, and it moves later when more
migrations come to share the link.  Without the multiple ``deadline_s`` is
the deadline.  Whatever triggers an escalation, a migration the pre-copy
model predicts to complete before its deadline at the current limit is
left alone (:func:`predicted_in_time_s`).  What happens when it passes is
:mod:`.rungs.abort`'s business.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s

# A deadline that moved later is said again once it moved this much more.
DEADLINE_NOTE_FRACTION = 0.1


def migration_deadline_s(memory_gib: float, per_gib_s: float,
                         cap_s: float) -> float:
    """The deadline for a guest: per GiB of memory, never above the cap."""
    if memory_gib <= 0 or per_gib_s <= 0 or cap_s <= 0:
        raise ValueError(
            'memory_gib, per_gib_s and cap_s must be positive '
            f'(got {memory_gib}, {per_gib_s}, {cap_s})')
    return min(per_gib_s * memory_gib, cap_s)


def current_deadline_s(config: ControllerConfig,
                       state: ControllerState) -> float:
    """The deadline in force, in seconds from the start of the job."""
    return config.deadline_s if state.deadline_s is None else state.deadline_s


def time_left_s(config: ControllerConfig, state: ControllerState,
                now_s: float) -> float:
    """Seconds until the deadline (negative once it passed)."""
    return current_deadline_s(config, state) - elapsed_s(state, now_s)


def deadline_passed(config: ControllerConfig, state: ControllerState,
                    now_s: float) -> bool:
    """Has the deadline in force passed?"""
    return time_left_s(config, state, now_s) <= 0


def deadline_share_bytes_s(state: ControllerState) -> float:
    """The bandwidth the deadline gives this job: its fair share with the
    most migrations seen, or less when it got less while sharing.

    A migration counted as sharing may not send yet (its job is still being
    set up): a job can have the link to itself at first and half of it
    later.  Never below half the fair share: a link that dies while shared
    must not stretch the deadline without end.
    """
    share = state.peak_link_bytes_s / state.max_link_shares
    least = state.least_shared_bytes_s
    if least is None:
        return share
    return min(share, max(least, share / 2))


def link_deadline_s(config: ControllerConfig, transfer_bytes: float,
                    bandwidth_bytes_s: float) -> float:
    """multiple × data / bandwidth, at least the floor, at most the cap."""
    multiple = config.deadline_link_multiple
    assert multiple is not None and bandwidth_bytes_s > 0
    derived = multiple * transfer_bytes / bandwidth_bytes_s
    return min(config.deadline_s, max(config.deadline_floor_s, derived))


def first_pass_ended(est: estimator.Estimate) -> bool:
    """Has the bulk pass (all of memory) ended?  QEMU's setup sync is
    iteration 1; the first sync after the bulk pass starts iteration 2."""
    return any(b.iteration > estimator.FIRST_PASS_ITERATION
               for b in est.boundaries)


def update_deadline(config: ControllerConfig, state: ControllerState,
                    now_s: float) -> Step:
    """Derive the deadline from the data and the link (when configured).

    It follows the measurement during the first pass; from the end of the
    first pass on it only moves later (more migrations came to share the
    link), never earlier.  Said once when it settles, and at every move.
    """
    multiple = config.deadline_link_multiple
    if multiple is None:
        return state, ()
    est = state.estimate
    data = config.transfer_bytes or est.memory_total_bytes
    if not data or state.peak_link_bytes_s <= 0:
        return state, ()
    # The smallest share seen: a deadline promised is not taken back.  Until
    # it settles, never above the job's average so far: the first readings
    # catch the burst that fills the socket buffers (21 MiB/s read on a
    # 14 MiB/s lab link).  Not after: a dying link would drag the average.
    share = deadline_share_bytes_s(state)
    elapsed = elapsed_s(state, now_s)
    if ('deadline-set' not in state.noted and elapsed > 0
            and est.processed_bytes > 0):
        share = min(share, est.processed_bytes / elapsed)
    derived = link_deadline_s(config, data, share)
    old = state.deadline_s
    if not first_pass_ended(est):
        return dataclasses.replace(state, deadline_s=derived), ()
    new = derived if old is None else max(old, derived)
    state = dataclasses.replace(state, deadline_s=new)
    extra: tuple[Measure, ...] = (
        ('deadline_s', round(new, 1)),
        ('link_share_mib_s', mib(share)),
        ('link_shares', state.link_shares))
    if 'deadline-set' not in state.noted:
        state = dataclasses.replace(state, deadline_noted_s=new)
        return note_once(
            state, 'deadline-set', now_s,
            f'deadline {new:.0f} s: {multiple:g} x '
            f"{fmt(mib(data), ' MiB')} / {fmt(mib(share), ' MiB/s')} "
            f'is {multiple * data / share:.0f} s (floor '
            f'{config.deadline_floor_s:.0f} s, cap {config.deadline_s:.0f} '
            f's)', None, extra)
    noted = state.deadline_noted_s
    if noted is not None and new < noted * (1 + DEADLINE_NOTE_FRACTION):
        # The smoothed share moves a little at every sample: said when the
        # deadline moved by a tenth since the last time.
        return state, ()
    state = dataclasses.replace(state, deadline_noted_s=new)
    return state, (decide(
        state, now_s, Action.NOTE,
        f'deadline moved from {old:.0f} s to {new:.0f} s: up to '
        f'{state.max_link_shares} migrations share the link, this one gets '
        f"{fmt(mib(share), ' MiB/s')}", None, extra),)


def predicted_in_time_s(config: ControllerConfig, state: ControllerState,
                        now_s: float) -> float | None:
    """Predicted seconds to completion if it is before the deadline."""
    predicted = estimator.predicted_completion_s(state.estimate,
                                                 state.downtime_ms)
    if predicted is None or predicted > time_left_s(config, state, now_s):
        return None
    return predicted
