"""The escalation ladder: when to climb, and to which rung.

A rung is entered only once the previous one had its chance
(``downtime_chance_passes``, ``auto_converge_chance_passes``, or
``stall_window_s`` when passes do not come), and only while pre-copy is
stalled or predicted to miss the deadline.  Which rung: the one not tried
yet that the guest is predicted to pay least for (:mod:`.pricing`); the
configured order only breaks ties.  A rung that cannot help now is noted
once and priced again at the next escalation.  Each rung says for itself
why it cannot help and what entering it does (:mod:`.rungs`).
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_ABORT
from nova_livemig_ext.convergence.config import RUNG_AUTO_CONVERGE
from nova_livemig_ext.convergence.config import RUNG_DOWNTIME
from nova_livemig_ext.convergence.config import RUNG_PAUSE
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.pricing import beyond_ceiling
from nova_livemig_ext.convergence.pricing import rank_rungs
from nova_livemig_ext.convergence.pricing import ranking_text
from nova_livemig_ext.convergence.pricing import rung_cost
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.rungs.abort import enter_abort
from nova_livemig_ext.convergence.rungs.auto_converge import MAX_THROTTLE_PCT
from nova_livemig_ext.convergence.rungs.auto_converge import auto_converge_blocker
from nova_livemig_ext.convergence.rungs.auto_converge import enter_auto_converge
from nova_livemig_ext.convergence.rungs.auto_converge import passes_on_rung
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_hopeless
from nova_livemig_ext.convergence.rungs.downtime import downtime_blocker
from nova_livemig_ext.convergence.rungs.downtime import enter_downtime
from nova_livemig_ext.convergence.rungs.pause import enter_pause
from nova_livemig_ext.convergence.rungs.pause import pause_blocker
from nova_livemig_ext.convergence.rungs.postcopy import enter_postcopy
from nova_livemig_ext.convergence.rungs.postcopy import postcopy_blocker
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s
from nova_livemig_ext.convergence.state import tried_in_vain


def rung_blocker(config: ControllerConfig, state: ControllerState, rung: str,
                 trigger: Trigger | None, now_s: float) -> str | None:
    """Why a rung cannot be used now, or None if it can: each rung says."""
    if rung == RUNG_DOWNTIME:
        return downtime_blocker(config, state, trigger, now_s)
    if rung == RUNG_AUTO_CONVERGE:
        return auto_converge_blocker(config, state)
    if rung == RUNG_POSTCOPY:
        return postcopy_blocker(config, state, now_s)
    if rung == RUNG_PAUSE:
        return pause_blocker(config, state, now_s)
    return tried_in_vain(state, rung)


def chance_passes(config: ControllerConfig, rung: str) -> int:
    """How many passes a rung gets to show an effect."""
    if rung == RUNG_AUTO_CONVERGE:
        return config.auto_converge_chance_passes
    return config.downtime_chance_passes


def postcopy_window_closing(config: ControllerConfig, state: ControllerState,
                            now_s: float) -> bool:
    """Would waiting one more pass leave post-copy unable to fit?

    A later post-copy rung must not be lost to the patience of an earlier
    rung: the deadline shortens every chance.
    """
    if RUNG_POSTCOPY not in untried_rungs(config, state):
        return False
    if rung_blocker(config, state, RUNG_POSTCOPY, None, now_s) is not None:
        return False
    pass_s = estimator.expected_pass_s(state.estimate) or 0.0
    duration = estimator.postcopy_duration_s(state.estimate) or 0.0
    return pass_s + duration > time_left_s(config, state, now_s)


def rung_had_its_chance(config: ControllerConfig, state: ControllerState,
                        now_s: float) -> bool:
    """Has the rung last entered had time to show an effect?"""
    rung = state.rung_name(config)
    if rung is None or rung in state.exhausted:
        # Plain pre-copy (the trigger itself already took passes), or the
        # rung's effect failed.
        return True
    if rung == RUNG_AUTO_CONVERGE and (
            state.estimate.throttle_pct or 0) >= MAX_THROTTLE_PCT:
        return True
    if rung == RUNG_AUTO_CONVERGE and throttle_hopeless(config, state):
        return True
    if passes_on_rung(config, state) >= chance_passes(config, rung):
        return True
    assert state.rung_started_s is not None
    last_boundary_s = max(
        [state.rung_started_s]
        + [b.at_s for b in state.estimate.boundaries])
    if elapsed_s(state, now_s) - last_boundary_s >= config.stall_window_s:
        return True
    return postcopy_window_closing(config, state, now_s)


def enter_rung(config: ControllerConfig, state: ControllerState, index: int,
               trigger: Trigger, now_s: float) -> Step:
    """Enter the ladder's rung ``index``, as that rung does it."""
    rung = config.ladder[index]
    state = dataclasses.replace(state, tried=state.tried | {rung})
    if rung == RUNG_DOWNTIME:
        return enter_downtime(config, state, index, trigger, now_s)
    if rung == RUNG_AUTO_CONVERGE:
        return enter_auto_converge(config, state, index, trigger, now_s)
    if rung == RUNG_POSTCOPY:
        return enter_postcopy(config, state, index, trigger, now_s)
    if rung == RUNG_PAUSE:
        return enter_pause(config, state, index, trigger, now_s)
    return enter_abort(config, state, index, trigger, now_s)


def untried_rungs(config: ControllerConfig,
                  state: ControllerState) -> tuple[str, ...]:
    """Rungs of the ladder not entered yet, abort aside, in ladder order."""
    current = state.rung_name(config)
    return tuple(r for r in config.ladder
                 if r != RUNG_ABORT and r != current and r not in state.tried
                 and r not in state.exhausted)


def escalate(config: ControllerConfig, state: ControllerState,
             trigger: Trigger, now_s: float) -> Step:
    """Enter the rung the guest is predicted to pay least for.

    The candidates are the rungs of the ladder not tried yet that can help
    now (each blocked one is noted once, and stays a candidate for later);
    they are ranked by :func:`rank_rungs`, those predicted to stop the
    guest beyond ``max_guest_stop_s`` left out (noted, and priced again at
    the next escalation).  The ladder says which rungs are permitted and
    breaks ties.  With none left, abort at the deadline.
    """
    decisions: list[Decision] = []
    current = state.rung_name(config)
    if current == RUNG_DOWNTIME and rung_blocker(
            config, state, RUNG_DOWNTIME, trigger, now_s) is None:
        # Another downtime step is still within the ceiling.
        return enter_downtime(config, state, state.rung_index, trigger,
                              now_s)
    if current == RUNG_ABORT:
        return state, ()
    costs: list[tuple[str, guest.GuestCost]] = []
    for rung in untried_rungs(config, state):
        blocker = rung_blocker(config, state, rung, trigger, now_s)
        if blocker is None:
            cost = rung_cost(config, state, rung, trigger, now_s)
            blocker = beyond_ceiling(config, cost)
            if blocker is None:
                costs.append((rung, cost))
                continue
        state, note = note_once(state, f'skip-{rung}', now_s,
                                f'skipping {rung}: {blocker}', None,
                                (('skipped_rung', rung),))
        decisions.extend(note)
    ranked = rank_rungs(config, costs)
    if ranked:
        chosen = ranked[0][0]
        if len(ranked) > 1:
            trigger = dataclasses.replace(
                trigger, reason=f'{trigger.reason}; {ranking_text(ranked)}',
                measures=trigger.measures + (
                    ('passed_over', ','.join(r for r, _ in ranked[1:])),))
        state, entered = enter_rung(config, state,
                                    config.ladder.index(chosen), trigger,
                                    now_s)
        return state, tuple(decisions) + entered
    if RUNG_ABORT in config.ladder:
        state, entered = enter_rung(config, state,
                                    config.ladder.index(RUNG_ABORT), trigger,
                                    now_s)
        return state, tuple(decisions) + entered
    state, note = note_once(
        state, 'ladder-exhausted', now_s,
        f'{trigger.reason}; no rung of the ladder {list(config.ladder)} can '
        f'help, aborting at the deadline unless pre-copy converges',
        None, trigger.measures)
    return state, tuple(decisions) + note
