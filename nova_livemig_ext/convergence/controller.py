"""The controller's step: each sample through the rules, the state kept.

The controller reads one :class:`~.samples.JobSample` at a time and answers
two questions: is pre-copy going to finish in time, and if not, what is the
next thing to try?  It never touches libvirt; it returns frozen
:class:`~.decision.Decision` values with the reason and the numbers behind
them, and the monitor applies them.

This file runs the rules in their order at every sample
(:func:`precopy_step`), folds in what the monitor could apply
(:func:`acknowledge`), and keeps the state for the monitor
(:class:`Controller`).  Each rule lives in the file named for it:

* :mod:`.stall`: when pre-copy needs help (a working-set plateau, a quiet
  window, a deadline it will miss);
* :mod:`.link`: the migrations sharing the link, this job's share, and a
  network stall, which holds every escalation;
* :mod:`.deadline`: the link-derived deadline and how it grows;
* :mod:`.ladder`: whether the rung last entered had its chance, and which
  rung comes next;
* :mod:`.pricing`: what each rung costs the guest, and the ranking;
* :mod:`.rungs`: each rung's own rules (``downtime``, ``auto_converge``,
  ``postcopy``, ``pause``, ``abort`` with what the deadline does to
  pre-copy), and :mod:`.rungs.switchover` for the moment of a forced
  switchover and its timeout;
* :mod:`.force_complete`: the operator's request to finish now;
* :mod:`.decision`, :mod:`.config`, :mod:`.state` and :mod:`.reasons`: what
  they all share (decisions, the config, the state, and the words and
  figures of a reason).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_AUTO_CONVERGE
from nova_livemig_ext.convergence.config import RUNG_PAUSE
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.deadline import current_deadline_s
from nova_livemig_ext.convergence.deadline import deadline_passed
from nova_livemig_ext.convergence.deadline import predicted_in_time_s
from nova_livemig_ext.convergence.deadline import time_left_s
from nova_livemig_ext.convergence.deadline import update_deadline
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.force_complete import force_complete
from nova_livemig_ext.convergence.ladder import escalate
from nova_livemig_ext.convergence.ladder import rung_had_its_chance
from nova_livemig_ext.convergence.link import set_link_shares
from nova_livemig_ext.convergence.link import track_contention
from nova_livemig_ext.convergence.link import track_link_capacity
from nova_livemig_ext.convergence.link import track_network
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.reasons import rounded
from nova_livemig_ext.convergence.rungs.abort import at_deadline
from nova_livemig_ext.convergence.rungs.abort import throttled_in_vain
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_hopeless
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_verdict
from nova_livemig_ext.convergence.rungs.auto_converge import track_throttle_baseline
from nova_livemig_ext.convergence.rungs.pause import maybe_pause
from nova_livemig_ext.convergence.rungs.postcopy import maybe_switch_to_postcopy
from nova_livemig_ext.convergence.rungs.switchover import after_forced_switchover
from nova_livemig_ext.convergence.stall import escalation_trigger
from nova_livemig_ext.convergence.stall import track_stall
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Phase
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s

# Handed on: the monitor, the planner, the lab, the benchmarks and the tests
# have always taken these from the controller.
from nova_livemig_ext.convergence.config import DEFAULT_LADDER
from nova_livemig_ext.convergence.config import RUNGS
from nova_livemig_ext.convergence.config import RUNG_ABORT
from nova_livemig_ext.convergence.config import RUNG_DOWNTIME
from nova_livemig_ext.convergence.deadline import link_deadline_s
from nova_livemig_ext.convergence.deadline import migration_deadline_s
from nova_livemig_ext.convergence.decision import DecisionMaker
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.link import link_is_slow
from nova_livemig_ext.convergence.pricing import rank_rungs
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_effect
from nova_livemig_ext.convergence.rungs.downtime import downtime_steps_ms
from nova_livemig_ext.convergence.rungs.pause import pause_should_wait
from nova_livemig_ext.convergence.stall import TriggerKind
from nova_livemig_ext.convergence.stall import plateau_trigger
from nova_livemig_ext.convergence.stall import window_trigger

__all__ = [
    'Action',
    'Controller',
    'ControllerConfig',
    'ControllerState',
    'DEFAULT_LADDER',
    'Decision',
    'DecisionMaker',
    'INITIAL_DOWNTIME_ATTEMPTS',
    'Measure',
    'Phase',
    'RUNGS',
    'RUNG_ABORT',
    'RUNG_AUTO_CONVERGE',
    'RUNG_DOWNTIME',
    'RUNG_PAUSE',
    'RUNG_POSTCOPY',
    'TriggerKind',
    'acknowledge',
    'current_deadline_s',
    'downtime_steps_ms',
    'initial_downtime',
    'initial_state',
    'link_deadline_s',
    'link_is_slow',
    'maybe_pause',
    'migration_deadline_s',
    'pause_should_wait',
    'plateau_trigger',
    'precopy_step',
    'rank_rungs',
    'step',
    'throttle_effect',
    'throttle_hopeless',
    'throttled_in_vain',
    'window_trigger',
]

# Tries at setting the initial downtime limit before leaving QEMU's own.
INITIAL_DOWNTIME_ATTEMPTS = 3


def initial_state(config: ControllerConfig, now_s: float) -> Step:
    """A fresh state; nothing to apply before the job runs."""
    state = ControllerState(started_s=now_s,
                            downtime_ms=config.initial_downtime_ms,
                            confirmed_downtime_ms=config.initial_downtime_ms,
                            link_shares=config.concurrent_migrations,
                            max_link_shares=config.concurrent_migrations)
    return state, ()


def initial_downtime(config: ControllerConfig, state: ControllerState,
                     now_s: float) -> Step:
    """Set the initial limit once the job runs (retried if refused)."""
    if (state.initial_downtime_sent or state.initial_downtime_failures
            >= INITIAL_DOWNTIME_ATTEMPTS):
        return state, ()
    state = dataclasses.replace(state, initial_downtime_sent=True)
    decision = decide(
        state, now_s, Action.SET_DOWNTIME,
        f'initial downtime limit {config.initial_downtime_ms} ms',
        None, downtime_ms=config.initial_downtime_ms)
    return state, (decision,)


def precopy_step(config: ControllerConfig, state: ControllerState,
                 now_s: float) -> Step:
    """One sample in pre-copy: learn from it, then act on the first rule
    that applies (the deadline, a switchover waiting for its moment, a
    link going bad, the ladder)."""
    state, first = initial_downtime(config, state, now_s)
    state = track_link_capacity(config, state, now_s)
    state = track_throttle_baseline(state)
    state, deadline_notes = update_deadline(config, state, now_s)
    state, freed = track_contention(config, state, now_s)
    state, decisions = track_network(config, state, now_s)
    decisions = first + deadline_notes + freed + decisions
    state = track_stall(config, state, now_s)
    state = dataclasses.replace(
        state, predicted_downtime_ms=estimator.predicted_downtime_ms(
            state.estimate, state.downtime_ms))
    if deadline_passed(config, state, now_s):
        state, more = at_deadline(config, state, now_s)
        return state, decisions + more
    if state.postcopy_wait_since_s is not None:
        state, more = maybe_switch_to_postcopy(config, state, now_s)
        return state, decisions + more
    if state.pause_wait_since_s is not None:
        state, more = maybe_pause(config, state, now_s)
        return state, decisions + more
    if state.network_stalled or state.network_slow_since_s is not None:
        # A collapsing link inflates every prediction; wait for the verdict.
        return state, decisions
    if (state.rung_name(config) == RUNG_AUTO_CONVERGE
            and throttle_hopeless(config, state)):
        state, note = note_once(
            state, 'throttle-hopeless', now_s,
            f'{throttle_verdict(config, state)}; not waiting for the rest '
            f'of its {config.auto_converge_chance_passes} passes',
            RUNG_AUTO_CONVERGE, (
                ('throttle_effect', rounded(state.throttle_best_effect)),
                ('first_throttle_pct', state.throttle_first_pct),
                ('first_throttled_dirty_rate_mib_s',
                 mib(state.throttled_dirty_bytes_s))))
        decisions = decisions + note
    if (state.rung_name(config) == RUNG_ABORT
            or 'ladder-exhausted' in state.noted):
        state, more = throttled_in_vain(config, state, now_s)
        if more:
            return state, decisions + more
    trigger = escalation_trigger(config, state, now_s)
    if trigger is None or not rung_had_its_chance(config, state, now_s):
        return state, decisions
    in_time_s = predicted_in_time_s(config, state, now_s)
    if in_time_s is not None:
        state, note = note_once(
            state, 'converging-in-time', now_s,
            f'{trigger.reason}; not escalating: predicted to complete in '
            f'{in_time_s:.0f} s at {state.downtime_ms} ms, the deadline is '
            f'in {time_left_s(config, state, now_s):.0f} s', None,
            trigger.measures + (('predicted_completion_s',
                                 rounded(in_time_s, 1)),))
        return state, decisions + note
    state, more = escalate(config, state, trigger, now_s)
    return state, decisions + more


def step(config: ControllerConfig, state: ControllerState,
         sample: samples.JobSample, now_s: float) -> Step:
    """Take one sample; return the new state and the decisions to apply."""
    if not sample.is_active:
        return state, ()
    previous = state.estimate
    t = elapsed_s(state, now_s)
    if previous.at_s is not None and t > previous.at_s:
        # The throttle QEMU reported held over the interval.
        state = dataclasses.replace(
            state, throttle_lost_s=state.throttle_lost_s
            + guest.throttle_lost_s(previous.throttle_pct,
                                    t - previous.at_s))
    est = estimator.update_estimate(previous, sample, t, config.estimator)
    state = dataclasses.replace(state, estimate=est)
    if est.passes_completed > previous.passes_completed:
        # QEMU raises the throttle at the same sync that measures the
        # dirty rate: the rate read now belongs to the throttle before.
        state = dataclasses.replace(
            state, pass_throttle_pct=previous.throttle_pct or 0,
            pass_dirty_bytes_s=estimator.measured_dirty_rate_bytes_s(sample))
    if state.phase is Phase.PRECOPY:
        return precopy_step(config, state, now_s)
    if state.phase in (Phase.PAUSED, Phase.POSTCOPY):
        return after_forced_switchover(config, state, now_s)
    return state, ()


def acknowledge(config: ControllerConfig, state: ControllerState,
                decision: Decision, applied: bool) -> ControllerState:
    """Fold in whether a decision's effect happened.

    A failed switch leaves pre-copy running: the rung is marked as tried so
    the ladder moves on.  A failed abort returns to the phase it came from;
    the next sample asks again.
    """
    action = decision.action
    if action is Action.SET_DOWNTIME and decision.downtime_ms is not None:
        if applied:
            return dataclasses.replace(
                state, confirmed_downtime_ms=decision.downtime_ms)
        if decision.rung is None:
            # The initial limit: try again at the next sample, a few times.
            return dataclasses.replace(
                state, initial_downtime_sent=False,
                initial_downtime_failures=state.initial_downtime_failures + 1)
        return dataclasses.replace(state,
                                   downtime_ms=state.confirmed_downtime_ms)
    if applied:
        return state
    if action is Action.START_POSTCOPY and state.phase is Phase.POSTCOPY:
        return dataclasses.replace(
            state, phase=Phase.PRECOPY, switchover_started_s=None,
            exhausted=state.exhausted | {RUNG_POSTCOPY})
    if action is Action.PAUSE and state.phase is Phase.PAUSED:
        return dataclasses.replace(
            state, phase=Phase.PRECOPY, switchover_started_s=None,
            predicted_downtime_ms=None,
            exhausted=state.exhausted | {RUNG_PAUSE})
    if action is Action.ABORT and state.phase is Phase.ABORTING:
        phase = (Phase.PAUSED if state.switchover_started_s is not None
                 else Phase.PRECOPY)
        return dataclasses.replace(state, phase=phase)
    return state


class Controller:
    """The step function with its state kept, for the monitor.

    ``link_shares`` answers how many migrations from this host run now,
    this one included (the driver counts them); it is asked once per sample.
    """

    def __init__(self, config: ControllerConfig,
                 link_shares: Callable[[], int] | None = None) -> None:
        self.config = config
        self._link_shares = link_shares
        self._state: ControllerState | None = None

    @property
    def state(self) -> ControllerState:
        if self._state is None:
            raise RuntimeError('the controller has not been started')
        return self._state

    @property
    def estimate(self) -> estimator.Estimate:
        if self._state is None:
            return estimator.Estimate()
        return self._state.estimate

    @property
    def predicted_downtime_ms(self) -> float | None:
        return None if self._state is None else (
            self._state.predicted_downtime_ms)

    @property
    def predicted_guest_cost(self) -> guest.GuestCost | None:
        """What the guest is predicted to pay, as things stand."""
        if self._state is None:
            return None
        state = self._state
        if state.predicted_guest is not None:
            return state.predicted_guest
        # Pre-copy's stop-and-copy, and the throttle's stops while QEMU
        # throttles.
        return guest.with_throttle_stops(
            guest.predicted_precopy(state.estimate, state.downtime_ms,
                                    state.throttle_lost_s),
            state.estimate.throttle_pct)

    @property
    def deadline_s(self) -> float:
        """The deadline in force, from the start of the job."""
        if self._state is None:
            return self.config.deadline_s
        return current_deadline_s(self.config, self._state)

    def _shares_now(self) -> int | None:
        if self._link_shares is None:
            return None
        try:
            shares = int(self._link_shares())
        except Exception:
            # A bad count must not stop the migration's steering.
            return None
        return shares if shares >= 1 else None

    def start(self, now_s: float) -> tuple[Decision, ...]:
        self._state, decisions = initial_state(self.config, now_s)
        return decisions

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[Decision, ...]:
        if self._state is None:
            self.start(now_s)
        shares = self._shares_now()
        if shares is not None:
            self._state = set_link_shares(self.state, shares, now_s)
        self._state, decisions = step(self.config, self.state, sample, now_s)
        return decisions

    def acknowledge(self, decision: Decision, applied: bool,
                    now_s: float) -> None:
        self._state = acknowledge(self.config, self.state, decision, applied)

    def force_complete(self, now_s: float) -> tuple[Decision, ...]:
        if self._state is None:
            self.start(now_s)
        self._state, decisions = force_complete(self.config, self.state,
                                                now_s)
        return decisions
