"""The auto-converge rung: QEMU's own throttle, its chance, and its verdict.

QEMU enables auto-converge only as a capability at the start of the job, so
when the rung is in the ladder the policy arms it at start
(``VIR_MIGRATE_AUTO_CONVERGE`` with the initial and increment throttle).
From then on QEMU throttles by itself: at a dirty-bitmap sync at least a
second after the previous rate period, when the bytes dirtied in the period
exceed ``throttle-trigger-threshold`` (50 % by default) of the bytes sent,
it counts; on the second such period it throttles the vCPUs to
``cpu-throttle-initial`` and then raises them by ``cpu-throttle-increment``
(``migration_trigger_throttle`` in QEMU's ``migration/ram.c``).  The
controller cannot switch it on or off; the rung is in effect from the start
and its effect shows as a shrinking working set, which already defers any
escalation.  Its chance is ``auto_converge_chance_passes`` passes counted
from the first pass QEMU reported a throttle (``auto_converge_throttle``),
or from the rung's turn if QEMU has not throttled yet; the throttle reaching
its maximum ends it, and so does a throttle that does not bite: once the
throttle in force reached 75 % and two steps past its first pass, if the
dirty rate never fell by a quarter of what the throttle takes from a writer
bound by its vCPU (a paced writer needing little CPU), the rung is given up
with the numbers.  Without the flag armed the rung is skipped.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_AUTO_CONVERGE
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import on_rung
from nova_livemig_ext.convergence.state import tried_in_vain

# QEMU caps the vCPU throttle at max-cpu-throttle, 99 % by default.
MAX_THROTTLE_PCT = 99

# Throttling is trusted while the dirty rate falls with it.  QEMU counts a
# page once per period, so a writer faster than the link shows no fall
# until the throttle passes 1 - bandwidth / rate: judged only once the
# throttle in force reached this (a writer up to 4 x the link has shown
# its fall by then) and rose this many steps past its first reading.  It is
# given up when the dirty rate never fell by this fraction of what the
# throttle takes from a writer bound by its vCPU (the lab's paced writer
# still dirtied 13 MiB/s at 90 %).
THROTTLE_JUDGED_PCT = 75
THROTTLE_JUDGED_STEPS = 2
THROTTLE_TRUSTED_EFFECT = 0.25


def track_throttle_baseline(state: ControllerState) -> ControllerState:
    """Remember the first pass QEMU throttled, and the best effect since.

    QEMU's per-pass dirty rate is noisy (periods of uneven length): one
    pass that shows the throttle biting is enough to keep trusting it.
    """
    if state.throttle_first_pct is None:
        if not state.pass_throttle_pct or state.pass_dirty_bytes_s is None:
            return state
        return dataclasses.replace(
            state, throttle_first_pct=state.pass_throttle_pct,
            throttled_dirty_bytes_s=state.pass_dirty_bytes_s)
    effect = throttle_effect(state)
    best = state.throttle_best_effect
    if effect is None or (best is not None and effect <= best):
        return state
    return dataclasses.replace(state, throttle_best_effect=effect)


def throttle_effect(state: ControllerState) -> float | None:
    """How much of the throttle's rise shows in the dirty rate (1: all).

    From the first throttled pass (rate D0 at throttle p0) to the last one
    (D at p), a writer bound by its vCPU slows to (1 - p) / (1 - p0) of D0;
    a paced writer that needs little CPU, or one that rewrites its whole
    working set every period (QEMU counts each page once), does not slow.
    """
    first_pct = state.throttle_first_pct
    before = state.throttled_dirty_bytes_s
    now = state.pass_dirty_bytes_s
    pct = state.pass_throttle_pct
    if (first_pct is None or before is None or now is None or before <= 0
            or pct <= first_pct or first_pct >= 100):
        return None
    expected_fall = 1.0 - (100.0 - pct) / (100.0 - first_pct)
    fall = max(0.0, 1.0 - now / before)
    return fall / expected_fall


def throttle_hopeless(config: ControllerConfig,
                      state: ControllerState) -> bool:
    """Has the dirty rate failed to fall while the throttle rose two steps?"""
    first_pct = state.throttle_first_pct
    pct = state.pass_throttle_pct
    if first_pct is None or pct < max(THROTTLE_JUDGED_PCT, first_pct + (
            THROTTLE_JUDGED_STEPS * config.auto_converge_increment_pct)):
        return False
    best = state.throttle_best_effect
    return best is not None and best < THROTTLE_TRUSTED_EFFECT


def throttle_verdict(config: ControllerConfig,
                     state: ControllerState) -> str:
    """Why the throttle is given up, with the numbers."""
    est = state.estimate
    return (f'throttling does not bite: from {state.throttle_first_pct}% to '
            f'{state.pass_throttle_pct}% the dirty rate went from '
            f"{fmt(mib(state.throttled_dirty_bytes_s), ' MiB/s')} to "
            f"{fmt(mib(state.pass_dirty_bytes_s), ' MiB/s')}; at best it "
            f"fell {fmt(state.throttle_best_effect, '', 2)} of what the "
            f'throttle takes from a writer bound by its vCPU, against '
            f"{fmt(mib(est.bandwidth_bytes_s), ' MiB/s')} of bandwidth")


def auto_converge_blocker(config: ControllerConfig,
                          state: ControllerState) -> str | None:
    """Why QEMU's throttle cannot help now, or None if it can."""
    spent = tried_in_vain(state, RUNG_AUTO_CONVERGE)
    if spent is not None:
        return spent
    est = state.estimate
    if not config.auto_converge_armed:
        return ('auto-converge was not armed at job start and QEMU '
                'cannot enable it mid-job')
    if (est.throttle_pct or 0) >= MAX_THROTTLE_PCT:
        return f'QEMU already throttles the guest at {est.throttle_pct}%'
    if throttle_hopeless(config, state):
        return throttle_verdict(config, state)
    return None


def passes_on_rung(config: ControllerConfig, state: ControllerState) -> int:
    """Passes the current rung has been in effect.

    Auto-converge is in effect from the job's start: QEMU's throttling
    counts from the first pass it showed, even before the rung's turn.
    """
    est = state.estimate
    started = state.rung_started_passes
    if (state.rung_name(config) == RUNG_AUTO_CONVERGE
            and est.throttle_started_passes is not None):
        started = min(started, est.throttle_started_passes)
    return est.passes_completed - started


def throttle_chance_price(config: ControllerConfig, state: ControllerState
                          ) -> tuple[float, guest.GuestCost]:
    """The auto-converge rung's chance in seconds, and what the guest is
    predicted to pay over it: the throttle in force (at least the initial
    one) for its passes of chance, then pre-copy's stop-and-copy."""
    est = state.estimate
    chance_s = (estimator.expected_pass_s(est) or 0.0) * (
        config.auto_converge_chance_passes)
    return chance_s, guest.predicted_throttle(
        est, state.downtime_ms, max(est.throttle_pct or 0,
                                    config.auto_converge_initial_pct),
        chance_s, state.throttle_lost_s)


def enter_auto_converge(config: ControllerConfig, state: ControllerState,
                        index: int, trigger: Trigger, now_s: float) -> Step:
    """Give QEMU's throttle its chance: a note, nothing to apply."""
    state = on_rung(state, index, now_s)
    est = state.estimate
    chance_s, cost = throttle_chance_price(config, state)
    reason = (f'{trigger.reason}; auto-converge was armed at start and QEMU '
              f'throttles by itself (now '
              f'{est.throttle_pct or 0}% after '
              f'{passes_on_rung(config, state)} passes); giving it '
              f'{config.auto_converge_chance_passes} passes of throttling '
              f"(about {fmt(chance_s, ' s', 0)}); the guest is predicted "
              f'to pay at least: {cost.text()}')
    return state, (decide(state, now_s, Action.NOTE, reason,
                          RUNG_AUTO_CONVERGE,
                          trigger.measures + cost.measures('guest')),)
