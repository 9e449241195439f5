"""The forced switchover (a pause or post-copy): its moment, and its timeout.

Both rungs that force the switchover may wait for the trough of the
remaining bytes near the end of a pass, when the fewest pages are left to
send or to pull by page faults; waiting is worth it only when it saves
enough (a guest that rewrites its whole working set within a pass has it
all dirty again by the trough).

After a forced switchover the switchover timeout applies: a paused
migration that has not finished is aborted (the monitor resumes the
source), but post-copy is never aborted: once the destination runs the
guest, the newest memory exists only there and aborting would lose the
guest.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_ABORT
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s

# Remaining bytes fall by about bandwidth × poll interval between samples;
# a sample within this many polls of the last trough is at the trough.
TROUGH_POLLS = 1.5

# Waiting for the trough is worth it only if post-copy then has this much
# less to pull; a guest rewriting its working set every pass dirties it all
# again by the end of the pass.
TROUGH_SAVING_FRACTION = 0.1


def at_remaining_trough(config: ControllerConfig,
                        state: ControllerState) -> bool:
    """Is the remainder near the bottom it reaches before the next sync?"""
    est = state.estimate
    bandwidth = est.bandwidth_bytes_s
    if not bandwidth:
        return False
    floor = max(est.previous_pass_trough_bytes or 0,
                estimator.switch_threshold_bytes(bandwidth,
                                                 state.downtime_ms))
    slack = bandwidth * config.poll_interval_s * TROUGH_POLLS
    return est.remaining_bytes <= floor + slack


def trough_saves_bytes(state: ControllerState) -> bool:
    """Would post-copy pull notably less at the end of this pass?"""
    est = state.estimate
    now_bytes = estimator.switchover_bytes(est)
    at_trough = estimator.switchover_bytes_at_trough(est, state.downtime_ms)
    return at_trough < now_bytes * (1 - TROUGH_SAVING_FRACTION)


def after_forced_switchover(config: ControllerConfig, state: ControllerState,
                            now_s: float) -> Step:
    """Enforce the switchover timeout after a pause or post-copy switch."""
    assert state.switchover_started_s is not None
    running_s = elapsed_s(state, now_s) - state.switchover_started_s
    if running_s < config.switchover_timeout_s:
        return state, ()
    extra: tuple[Measure, ...] = (
        ('switchover_s', round(running_s, 1)),
        ('switchover_timeout_s', config.switchover_timeout_s))
    if state.phase is Phase.POSTCOPY:
        return note_once(
            state, 'postcopy-timeout', now_s,
            f'post-copy still running {running_s:.0f} s after the switch '
            f'(timeout {config.switchover_timeout_s:.0f} s); not aborting: '
            f'the guest runs on the destination and part of its memory '
            f'exists only there', RUNG_POSTCOPY, extra)
    state = dataclasses.replace(state, phase=Phase.ABORTING)
    reason = (f'still not switched over {running_s:.0f} s after the pause '
              f'(timeout {config.switchover_timeout_s:.0f} s); aborting, the '
              f'source guest is resumed')
    return state, (decide(state, now_s, Action.ABORT, reason, RUNG_ABORT,
                          extra),)
