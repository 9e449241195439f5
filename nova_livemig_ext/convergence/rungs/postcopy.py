"""The post-copy rung: when it may be used, and the switch at the trough.

Only when ``VIR_MIGRATE_POSTCOPY`` was armed at start, the instance allows
it, the link is healthy and the projected post-copy duration (what is left
/ bandwidth) ends before the deadline.  The switch waits for the trough of
the remaining bytes near the end of a pass, when the fewest pages are left
to be pulled by page faults, unless waiting saves nothing (a guest that
rewrites its whole working set within a pass has it all dirty again by the
trough) or the deadline leaves no room.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.link import link_slow
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.reasons import rounded
from nova_livemig_ext.convergence.rungs.switchover import at_remaining_trough
from nova_livemig_ext.convergence.rungs.switchover import trough_saves_bytes
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s
from nova_livemig_ext.convergence.state import on_rung
from nova_livemig_ext.convergence.state import tried_in_vain


def postcopy_fits_deadline(config: ControllerConfig, state: ControllerState,
                           now_s: float) -> bool:
    """Would what is left be pulled before the deadline?"""
    duration = estimator.postcopy_duration_s(state.estimate)
    return duration is not None and duration <= time_left_s(config, state,
                                                            now_s)


def postcopy_blocker(config: ControllerConfig, state: ControllerState,
                     now_s: float) -> str | None:
    """Why post-copy cannot be used now, or None if it can."""
    spent = tried_in_vain(state, RUNG_POSTCOPY)
    if spent is not None:
        return spent
    if not config.postcopy_armed:
        return 'post-copy was not armed at job start'
    if not config.postcopy_allowed:
        return 'post-copy is not allowed for this instance'
    if state.network_stalled or link_slow(config, state):
        return 'the link is stalled; post-copy would strand the guest'
    if not postcopy_fits_deadline(config, state, now_s):
        duration = estimator.postcopy_duration_s(state.estimate)
        return (f"post-copy would take {fmt(duration, ' s', 0)}, "
                f'the deadline is in '
                f'{time_left_s(config, state, now_s):.0f} s')
    return None


def enter_postcopy(config: ControllerConfig, state: ControllerState,
                   index: int, trigger: Trigger, now_s: float) -> Step:
    """Choose post-copy: switch now, or wait for the trough."""
    state = dataclasses.replace(on_rung(state, index, now_s),
                                postcopy_wait_since_s=elapsed_s(state, now_s))
    reason = (f'{trigger.reason}; switching to post-copy, at the trough of '
              f'the remaining bytes if waiting for it saves pages')
    note = decide(state, now_s, Action.NOTE, reason, RUNG_POSTCOPY,
                  trigger.measures)
    state, switch = maybe_switch_to_postcopy(config, state, now_s)
    return state, (note,) + switch


def postcopy_wait_over(config: ControllerConfig, state: ControllerState,
                       now_s: float) -> bool:
    """Waited a pass for the trough, or the deadline allows no more?"""
    assert state.postcopy_wait_since_s is not None
    waited_s = elapsed_s(state, now_s) - state.postcopy_wait_since_s
    pass_s = estimator.expected_pass_s(state.estimate)
    longest_wait_s = config.stall_window_s if pass_s is None else min(
        pass_s + config.poll_interval_s, config.stall_window_s)
    if waited_s >= longest_wait_s:
        return True
    duration = estimator.postcopy_duration_s(state.estimate) or 0.0
    return (duration + 2 * config.poll_interval_s
            > time_left_s(config, state, now_s))


def maybe_switch_to_postcopy(config: ControllerConfig, state: ControllerState,
                             now_s: float) -> Step:
    """Switch to post-copy once at the trough (or out of time to wait)."""
    blocker = postcopy_blocker(config, state, now_s)
    if blocker is not None:
        state = dataclasses.replace(state, postcopy_wait_since_s=None,
                                    exhausted=state.exhausted
                                    | {RUNG_POSTCOPY})
        return note_once(state, 'postcopy-dropped', now_s,
                         f'not switching to post-copy after all: {blocker}',
                         None, (('skipped_rung', RUNG_POSTCOPY),))
    if not (at_remaining_trough(config, state)
            or not trough_saves_bytes(state)
            or postcopy_wait_over(config, state, now_s)):
        return state, ()
    est = state.estimate
    duration = estimator.postcopy_duration_s(est)
    cost = guest.predicted_postcopy(est, state.throttle_lost_s)
    decisions: list[Decision] = []
    if config.postcopy_bandwidth_mib_s is not None:
        decisions.append(decide(
            state, now_s, Action.SET_SPEED,
            f'post-copy bandwidth {config.postcopy_bandwidth_mib_s} MiB/s: '
            f'every page fault on the destination waits for it',
            RUNG_POSTCOPY, speed_mib_s=config.postcopy_bandwidth_mib_s,
            postcopy_speed=True))
    state = dataclasses.replace(
        state, phase=Phase.POSTCOPY, postcopy_wait_since_s=None,
        switchover_started_s=elapsed_s(state, now_s),
        predicted_downtime_ms=None, predicted_guest=cost)
    reason = (f'switching to post-copy with '
              f"{fmt(mib(est.remaining_bytes), ' MiB')} remaining: about "
              f"{fmt(mib(estimator.switchover_bytes(est)), ' MiB')} to pull "
              f"in {fmt(duration, ' s', 0)}, deadline in "
              f'{time_left_s(config, state, now_s):.0f} s; the guest is '
              f'predicted to pay: {cost.text()}')
    decisions.append(decide(
        state, now_s, Action.START_POSTCOPY, reason, RUNG_POSTCOPY,
        (('postcopy_duration_s', rounded(duration, 1)),)
        + cost.measures('guest')))
    return state, tuple(decisions)
