"""The pause rung: when the guest may be paused, and the moment to do it.

Only when allowed; its expected downtime is in the reason and must be
within the switchover timeout.  The bandwidth cap is lifted first when
``max_bandwidth_mib_s`` is set, since the pause lasts what is left divided
by the bandwidth.  The pause waits for the moment the guest pays least:
while the working set still shrinks (a converging guest that is only too
slow) as long as another pass and the pause fit before the deadline, else
up to a pass for the trough of the remaining bytes when the working set is
seen to shrink; a working set rewritten every pass is paused at once.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_PAUSE
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.link import link_slow
from nova_livemig_ext.convergence.pricing import beyond_ceiling
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.reasons import rounded
from nova_livemig_ext.convergence.rungs.switchover import TROUGH_SAVING_FRACTION
from nova_livemig_ext.convergence.rungs.switchover import at_remaining_trough
from nova_livemig_ext.convergence.rungs.switchover import trough_saves_bytes
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s
from nova_livemig_ext.convergence.state import on_rung
from nova_livemig_ext.convergence.state import tried_in_vain

MS_PER_S = 1000.0


def pause_fits_timeout(config: ControllerConfig,
                       state: ControllerState) -> bool:
    """Would the pause end within the switchover timeout?"""
    downtime = estimator.pause_downtime_ms(state.estimate)
    return downtime is not None and (
        downtime <= config.switchover_timeout_s * MS_PER_S)


def pause_blocker(config: ControllerConfig, state: ControllerState,
                  now_s: float) -> str | None:
    """Why the guest cannot be paused now, or None if it can."""
    spent = tried_in_vain(state, RUNG_PAUSE)
    if spent is not None:
        return spent
    if not config.pause_allowed:
        return 'pausing is not allowed for this instance'
    if state.network_stalled or link_slow(config, state):
        return 'the link is stalled; a pause would freeze the guest'
    if not pause_fits_timeout(config, state):
        downtime = estimator.pause_downtime_ms(state.estimate)
        return (f"a pause would last {fmt(downtime, ' ms', 0)}, over "
                f'the switchover timeout '
                f'{config.switchover_timeout_s:.0f} s')
    beyond = beyond_ceiling(config, guest.predicted_pause(state.estimate))
    if beyond is not None:
        return f'a pause: {beyond}'
    return None


def pause_decisions(config: ControllerConfig, state: ControllerState,
                    now_s: float, why: str,
                    extra: tuple[Measure, ...]) -> Step:
    """Pause now, the bandwidth cap lifted first when one is set."""
    expected = estimator.pause_downtime_ms(state.estimate)
    decisions: list[Decision] = []
    if config.max_bandwidth_mib_s is not None:
        decisions.append(decide(
            state, now_s, Action.SET_SPEED,
            f'lifting the bandwidth cap to {config.max_bandwidth_mib_s} '
            f'MiB/s before pausing: the pause lasts what is left divided '
            f'by the bandwidth', RUNG_PAUSE, extra,
            speed_mib_s=config.max_bandwidth_mib_s))
    cost = guest.predicted_pause(state.estimate, state.throttle_lost_s)
    state = dataclasses.replace(
        state, phase=Phase.PAUSED,
        switchover_started_s=elapsed_s(state, now_s),
        predicted_downtime_ms=expected, postcopy_wait_since_s=None,
        pause_wait_since_s=None, predicted_guest=cost)
    left_mib = mib(estimator.switchover_bytes(state.estimate))
    reason = (f'{why}; pausing the guest to force the switchover, expected '
              f"downtime {fmt(expected, ' ms', 0)} for "
              f"{fmt(left_mib, ' MiB')} at "
              f"{fmt(mib(state.estimate.bandwidth_bytes_s), ' MiB/s')}")
    decisions.append(decide(
        state, now_s, Action.PAUSE, reason, RUNG_PAUSE,
        extra + (('expected_downtime_ms', rounded(expected, 0)),)
        + cost.measures('guest')))
    return state, tuple(decisions)


def pause_should_wait(config: ControllerConfig, state: ControllerState,
                      now_s: float) -> str | None:
    """Why a pause decided on would cost the guest less a little later.

    While the working set still shrinks (a converging guest that is only
    too slow for its deadline) every pass makes the pause shorter: wait
    while another pass and the pause still fit before the deadline.  A
    working set seen to stop shrinking (the plateau's patience in passes)
    is not waited for, whatever its dirty rate suggests: the lab's bursty
    writer read 0.97 and would have been held to its deadline for nothing.
    Otherwise wait, at most a pass, for the trough of the remaining bytes
    when it has notably less to send.  None: pause now.
    """
    est = state.estimate
    pause_ms = estimator.pause_downtime_ms(est)
    if pause_ms is None:
        return None
    pause_s = pause_ms / MS_PER_S
    left = time_left_s(config, state, now_s)
    pass_s = estimator.expected_pass_s(est) or 0.0
    margin_s = 2 * config.poll_interval_s
    ratio = estimator.convergence_ratio(est)
    stopped = (state.stall.passes_without_progress
               >= config.stall_patience_passes)
    if (ratio is not None and ratio < 1 and not stopped
            and left > pause_s + pass_s + margin_s):
        return (f'the working set still shrinks by a ratio of {ratio:.2f} a '
                f"pass: pausing now costs the guest {fmt(pause_s, ' s')}, "
                f'later less; the deadline in {left:.0f} s leaves room')
    waited_s = (0.0 if state.pause_wait_since_s is None
                else elapsed_s(state, now_s) - state.pause_wait_since_s)
    # QEMU counts a page once per rate period, so its dirty rate alone
    # promises savings at the trough that a guest rewriting its working set
    # every pass never gives (it is all dirty again by then): only a
    # working set seen to shrink says the end of the pass is cheaper.
    if (ratio is not None and ratio < 1 - TROUGH_SAVING_FRACTION
            and not at_remaining_trough(config, state)
            and trough_saves_bytes(state)
            and waited_s < min(pass_s + config.poll_interval_s,
                               config.stall_window_s)
            and left > pause_s + margin_s):
        at_trough_s = estimator.switchover_bytes_at_trough(
            est, state.downtime_ms) / (est.bandwidth_bytes_s or 1.0)
        return (f"pausing now costs the guest {fmt(pause_s, ' s')}, at the "
                f"end of this pass about {fmt(at_trough_s, ' s')}")
    return None


def maybe_pause(config: ControllerConfig, state: ControllerState,
                now_s: float) -> Step:
    """Pause once it costs the guest least (or cannot wait longer)."""
    blocker = pause_blocker(config, state, now_s)
    if blocker is not None:
        state = dataclasses.replace(state, pause_wait_since_s=None,
                                    exhausted=state.exhausted | {RUNG_PAUSE})
        return note_once(state, 'pause-dropped', now_s,
                         f'not pausing after all: {blocker}', None,
                         (('skipped_rung', RUNG_PAUSE),))
    if pause_should_wait(config, state, now_s) is not None:
        return state, ()
    waited_s = elapsed_s(state, now_s) - (state.pause_wait_since_s or 0.0)
    return pause_decisions(
        config, state, now_s,
        f'the moment for the pause came after waiting {waited_s:.0f} s',
        (('pause_waited_s', round(waited_s, 1)),))


def enter_pause(config: ControllerConfig, state: ControllerState, index: int,
                trigger: Trigger, now_s: float) -> Step:
    """Choose the pause: now, or held for a moment the guest pays less."""
    state = on_rung(state, index, now_s)
    wait = pause_should_wait(config, state, now_s)
    if wait is None:
        return pause_decisions(config, state, now_s, trigger.reason,
                               trigger.measures)
    state = dataclasses.replace(state,
                                pause_wait_since_s=elapsed_s(state, now_s))
    cost = guest.predicted_pause(state.estimate, state.throttle_lost_s)
    return state, (decide(
        state, now_s, Action.NOTE,
        f'{trigger.reason}; pausing, but not yet: {wait}', RUNG_PAUSE,
        trigger.measures + cost.measures('guest_now')),)
