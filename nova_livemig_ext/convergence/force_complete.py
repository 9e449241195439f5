"""The operator's force-complete: finish now, by post-copy or by a pause.

Nova's ``force-complete`` skips the ladder's patience; what it may not skip
(a post-copy never armed, a stalled link) is in :func:`force_complete`.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_PAUSE
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.rungs.pause import pause_decisions
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s
from nova_livemig_ext.convergence.state import on_rung


def force_complete(config: ControllerConfig, state: ControllerState,
                   now_s: float) -> Step:
    """The operator asked to finish now (Nova's force-complete).

    Goes at once to the rung that completes the migration: post-copy when it
    is on the ladder, was armed and is allowed for this instance, otherwise
    a pause. An
    operator's explicit request overrides the ladder's order and
    ``pause_allowed``, as in Nova; it does not override what cannot work
    (post-copy that was never armed) and never pushes post-copy over a
    stalled link.
    """
    if state.phase is not Phase.PRECOPY:
        return note_once(state, 'force-complete-late', now_s,
                         f'force-complete requested while already '
                         f'{state.phase.value}; nothing more to do', None,
                         ())
    why = 'force-complete requested by the operator'
    extra: tuple[Measure, ...] = (('requested_at_s',
                                   round(elapsed_s(state, now_s), 1)),)
    if (config.postcopy_armed and config.postcopy_allowed
            and RUNG_POSTCOPY in config.ladder
            and not state.network_stalled):
        index = config.ladder.index(RUNG_POSTCOPY)
        state = dataclasses.replace(on_rung(state, index, now_s),
                                    postcopy_wait_since_s=None)
        est = state.estimate
        state = dataclasses.replace(
            state, phase=Phase.POSTCOPY,
            switchover_started_s=elapsed_s(state, now_s),
            predicted_downtime_ms=None,
            predicted_guest=guest.predicted_postcopy(est,
                                                     state.throttle_lost_s))
        decisions: list[Decision] = []
        if config.postcopy_bandwidth_mib_s is not None:
            decisions.append(decide(
                state, now_s, Action.SET_SPEED,
                f'post-copy bandwidth {config.postcopy_bandwidth_mib_s} '
                f'MiB/s', RUNG_POSTCOPY,
                speed_mib_s=config.postcopy_bandwidth_mib_s,
                postcopy_speed=True))
        decisions.append(decide(
            state, now_s, Action.START_POSTCOPY,
            f"{why}; switching to post-copy with "
            f"{fmt(mib(est.remaining_bytes), ' MiB')} remaining",
            RUNG_POSTCOPY, extra))
        return state, tuple(decisions)
    index = (config.ladder.index(RUNG_PAUSE)
             if RUNG_PAUSE in config.ladder else state.rung_index)
    state = on_rung(state, index, now_s)
    return pause_decisions(config, state, now_s, why, extra)
