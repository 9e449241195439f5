"""The downtime rung: the limit's steps, and the smallest one that helps.

Raise the limit to the smallest step that fits the measured working set
(or that makes the geometric prediction meet the deadline), never above
``max_downtime_ms``.  Skipped when even the ceiling is too small.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_DOWNTIME
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.stall import TriggerKind
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import on_rung
from nova_livemig_ext.convergence.state import tried_in_vain

# The working set is read one poll late, and QEMU compares the remainder
# with its own bandwidth estimate: ask for a little more than it needs.
DOWNTIME_HEADROOM = 1.25


def downtime_steps_ms(config: ControllerConfig) -> tuple[int, ...]:
    """The downtime limits the controller may set, initial to ceiling."""
    span = config.max_downtime_ms - config.initial_downtime_ms
    steps = config.downtime_steps
    values = (config.initial_downtime_ms + round(span * i / steps)
              for i in range(steps + 1))
    return tuple(sorted(set(values)))


def downtime_needed_ms(state: ControllerState) -> float | None:
    """The limit at which QEMU would take the current working set."""
    est = state.estimate
    working_set = estimator.latest_working_set_bytes(est)
    needed = (None if working_set is None else
              estimator.downtime_ms_for(working_set, est.bandwidth_bytes_s))
    return None if needed is None else needed * DOWNTIME_HEADROOM


def next_downtime_ms(config: ControllerConfig, state: ControllerState,
                     trigger: Trigger, now_s: float) -> int | None:
    """The smallest higher step that should let pre-copy finish in time."""
    higher = [s for s in downtime_steps_ms(config) if s > state.downtime_ms]
    if not higher:
        return None
    if trigger.kind is TriggerKind.DEADLINE:
        left = time_left_s(config, state, now_s)
        for step in higher:
            predicted = estimator.predicted_completion_s(state.estimate, step)
            if predicted is not None and predicted <= left:
                return step
        return None
    needed = downtime_needed_ms(state)
    if needed is None:
        return higher[0]
    fitting = [s for s in higher if s >= needed]
    return fitting[0] if fitting else None


def downtime_blocker(config: ControllerConfig, state: ControllerState,
                     trigger: Trigger | None, now_s: float) -> str | None:
    """Why no higher downtime limit can help now, or None if one can."""
    spent = tried_in_vain(state, RUNG_DOWNTIME)
    if spent is not None:
        return spent
    if trigger is not None and next_downtime_ms(config, state, trigger,
                                                now_s) is not None:
        return None
    if trigger is not None and trigger.kind is TriggerKind.DEADLINE:
        return (f'no downtime step up to the ceiling '
                f'{config.max_downtime_ms} ms is predicted to finish '
                f'before the deadline')
    needed = downtime_needed_ms(state)
    return (f'no downtime step up to the ceiling '
            f'{config.max_downtime_ms} ms helps (the working set '
            f"needs {fmt(needed, ' ms', 0)})")


def enter_downtime(config: ControllerConfig, state: ControllerState,
                   index: int, trigger: Trigger, now_s: float) -> Step:
    """Raise the limit to the next step that helps."""
    target = next_downtime_ms(config, state, trigger, now_s)
    assert target is not None
    state = dataclasses.replace(on_rung(state, index, now_s),
                                downtime_ms=target)
    needed = downtime_needed_ms(state)
    cost = guest.predicted_precopy(state.estimate, target,
                                   state.throttle_lost_s)
    reason = (f'{trigger.reason}; raising the downtime limit to {target} ms '
              f"(working set needs {fmt(needed, ' ms', 0)}, ceiling "
              f'{config.max_downtime_ms} ms); the guest is predicted to '
              f'pay: {cost.text()}')
    return state, (decide(state, now_s, Action.SET_DOWNTIME, reason,
                          RUNG_DOWNTIME,
                          trigger.measures + cost.measures('guest'),
                          downtime_ms=target),)
