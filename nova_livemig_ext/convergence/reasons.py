"""How a decision says why: the figures it carries and the words for them.

Every decision carries the estimate's numbers (:func:`estimate_measures`)
and whatever its rule adds; a finding that should be said once per job is
made with :func:`note_once`.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.decision import Decision
from nova_livemig_ext.convergence.decision import Measure
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step

MIB = 1024 * 1024


def mib(size_bytes: float | None) -> float | None:
    """Bytes in MiB, to a tenth, for measures."""
    return None if size_bytes is None else round(size_bytes / MIB, 1)


def rounded(value: float | None, digits: int = 2) -> float | None:
    """A measure rounded, or None when unknown."""
    return None if value is None else round(value, digits)


def fmt(value: float | None, unit: str = '', digits: int = 1) -> str:
    """A number for a reason's words ('unknown' when it is not known)."""
    return 'unknown' if value is None else f'{value:.{digits}f}{unit}'


def estimate_measures(state: ControllerState, now_s: float
                      ) -> tuple[Measure, ...]:
    """The numbers every decision carries."""
    est = state.estimate
    return (
        ('elapsed_s', rounded(now_s - state.started_s, 1)),
        ('iteration', est.iteration),
        ('remaining_mib', mib(est.remaining_bytes)),
        ('working_set_mib', mib(estimator.latest_working_set_bytes(est))),
        ('bandwidth_mib_s', mib(est.bandwidth_bytes_s)),
        ('dirty_rate_mib_s', mib(est.dirty_rate_bytes_s)),
        ('dirty_ratio', rounded(estimator.dirty_ratio(est))),
        ('convergence_ratio', rounded(estimator.convergence_ratio(est))),
        ('downtime_limit_ms', state.downtime_ms),
        ('throttle_pct', est.throttle_pct),
    )


def decide(state: ControllerState, now_s: float, action: Action,
           reason: str, rung: str | None = None,
           extra: tuple[Measure, ...] = (), *,
           downtime_ms: int | None = None,
           speed_mib_s: int | None = None,
           postcopy_speed: bool = False) -> Decision:
    """A decision made now, with the estimate's numbers and ``extra``."""
    return Decision(action=action, reason=reason,
                    at_s=round(now_s - state.started_s, 3), rung=rung,
                    downtime_ms=downtime_ms, speed_mib_s=speed_mib_s,
                    postcopy_speed=postcopy_speed,
                    measures=estimate_measures(state, now_s) + extra)


def note_once(state: ControllerState, key: str, now_s: float, reason: str,
              rung: str | None = None,
              extra: tuple[Measure, ...] = ()) -> Step:
    """A note said once per job under ``key``; nothing the next time."""
    if key in state.noted:
        return state, ()
    state = dataclasses.replace(state, noted=state.noted | {key})
    return state, (decide(state, now_s, Action.NOTE, reason, rung,
                          extra),)
