"""The abort rung, and the deadline that ends pre-copy: a last pause or abort.

Reaching the abort rung means nothing else can help; the abort itself
happens at the deadline, so a guest that calms down still finishes.  One
exception: QEMU's throttle, armed at start, goes on throttling the guest
until the job ends, and the controller cannot lift it.  When the throttle
is shown not to bite, pre-copy is not predicted to finish before the
deadline and the working set has stopped shrinking under it, waiting only
costs the guest its CPU: the job is aborted then (:func:`throttled_in_vain`).
A throttle that bites is left to the deadline even at QEMU's maximum: a
bursty or growing guest it slows can still finish in a quiet spell (in the
benchmark five such guests did, after 86 to 554 s of throttling).

The deadline always ends pre-copy: a pause that is allowed and fits the
switchover timeout is the last try, otherwise the job is aborted and the
guest keeps running on the source.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_ABORT
from nova_livemig_ext.convergence.config import RUNG_PAUSE
from nova_livemig_ext.convergence.deadline import current_deadline_s
from nova_livemig_ext.convergence.deadline import predicted_in_time_s
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_hopeless
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_verdict
from nova_livemig_ext.convergence.rungs.pause import pause_blocker
from nova_livemig_ext.convergence.rungs.pause import pause_decisions
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import on_rung


def enter_abort(config: ControllerConfig, state: ControllerState, index: int,
                trigger: Trigger, now_s: float) -> Step:
    """Nothing else can help: say so, and abort at the deadline."""
    state = on_rung(state, index, now_s)
    left = time_left_s(config, state, now_s)
    reason = (f'{trigger.reason}; no permitted rung is left, aborting at the '
              f'deadline in {left:.0f} s unless pre-copy converges first')
    return note_once(state, 'abort-pending', now_s, reason, RUNG_ABORT,
                     trigger.measures)


def at_deadline(config: ControllerConfig, state: ControllerState,
                now_s: float) -> Step:
    """The deadline passed in pre-copy: a last allowed pause, or abort."""
    decisions: list[Decision] = []
    left = time_left_s(config, state, now_s)
    deadline = current_deadline_s(config, state)
    why = f'deadline of {deadline:.0f} s passed'
    extra: tuple[Measure, ...] = (('deadline_s', round(deadline, 1)),
                                  ('time_left_s', round(left, 1)))
    if RUNG_PAUSE in config.ladder and (
            RUNG_PAUSE not in state.tried
            or state.rung_name(config) == RUNG_PAUSE):
        blocker = pause_blocker(config, state, now_s)
        if blocker is None:
            index = config.ladder.index(RUNG_PAUSE)
            state = on_rung(state, index, now_s)
            return pause_decisions(config, state, now_s, why, extra)
        state, note = note_once(state, 'deadline-no-pause', now_s,
                                f'{why}; not pausing: {blocker}', None,
                                (('skipped_rung', RUNG_PAUSE),))
        decisions.extend(note)
    state = dataclasses.replace(state, phase=Phase.ABORTING,
                                postcopy_wait_since_s=None)
    link = (' during a network stall' if state.network_stalled else '')
    reason = (f'{why}{link} and no permitted rung is left; aborting, the '
              f'guest keeps running on the source')
    decisions.append(decide(state, now_s, Action.ABORT, reason,
                            RUNG_ABORT, extra))
    return state, tuple(decisions)


def throttled_in_vain(config: ControllerConfig, state: ControllerState,
                      now_s: float) -> Step:
    """Nothing is left but the abort, and QEMU throttles the guest for
    nothing: abort now rather than at the deadline.

    The throttle is spent when it is shown not to bite
    (:func:`~.auto_converge.throttle_hopeless`).  Seen spent with pre-copy
    not predicted to finish before the deadline, it is still given
    ``stall_patience_passes`` passes, and the job is aborted only if the
    working set did not shrink over them (QEMU's dirty rate lags a throttle
    that has just risen, so the prediction alone is not trusted).  The
    guest then keeps running, unthrottled, on the source.
    """
    est = state.estimate
    pct = est.throttle_pct or 0
    spent = pct > 0 and throttle_hopeless(config, state)
    if not spent or predicted_in_time_s(config, state, now_s) is not None:
        if state.throttle_spent_passes is None:
            return state, ()
        return dataclasses.replace(state, throttle_spent_passes=None), ()
    if state.throttle_spent_passes is None:
        return dataclasses.replace(
            state, throttle_spent_passes=est.passes_completed), ()
    patience = config.stall_patience_passes
    if (est.passes_completed - state.throttle_spent_passes < patience
            or state.stall.passes_without_progress < patience):
        return state, ()
    left = time_left_s(config, state, now_s)
    why = throttle_verdict(config, state)
    reason = (f'no permitted rung is left and {why}; the working set has '
              f'not shrunk for {state.stall.passes_without_progress} passes '
              f'and pre-copy is not predicted to finish before the deadline '
              f'in {left:.0f} s, so waiting would only keep the guest '
              f'throttled at {pct}% '
              f"(it has lost {fmt(state.throttle_lost_s, ' s', 1)} of CPU "
              f'so far); aborting now, the guest keeps running on the '
              f'source')
    state = dataclasses.replace(state, phase=Phase.ABORTING,
                                postcopy_wait_since_s=None)
    return state, (decide(state, now_s, Action.ABORT, reason, RUNG_ABORT, (
        ('time_left_s', round(left, 1)), ('throttle_pct', pct),
        ('throttle_lost_s', round(state.throttle_lost_s, 2)))),)
