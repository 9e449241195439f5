"""What the controller remembers between samples.

One frozen :class:`ControllerState` per job: the estimate, the working-set
tracker, the rung last entered and what was tried, the deadline and the
link as seen so far.  Every rule takes one and returns a new one with its
decisions (a :data:`Step`).
"""

from __future__ import annotations

import dataclasses
import enum

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.decision import Decision


class Phase(enum.Enum):
    PRECOPY = 'precopy'
    POSTCOPY = 'postcopy'
    PAUSED = 'paused'
    ABORTING = 'aborting'


@dataclasses.dataclass(frozen=True)
class StallTracker:
    """Working-set progress at pass boundaries."""

    best_working_set_bytes: int | None = None
    passes_without_progress: int = 0
    last_progress_s: float | None = None
    boundaries_seen: int = 0


@dataclasses.dataclass(frozen=True)
class ControllerState:
    """Everything the controller remembers between samples."""

    started_s: float
    downtime_ms: int
    confirmed_downtime_ms: int
    # The initial limit is set at the first sample of a running job: libvirt
    # refuses migrateSetMaxDowntime before the job exists.
    initial_downtime_sent: bool = False
    initial_downtime_failures: int = 0
    phase: Phase = Phase.PRECOPY
    estimate: estimator.Estimate = estimator.Estimate()
    stall: StallTracker = StallTracker()
    rung_index: int = -1
    rung_started_s: float | None = None
    rung_started_passes: int = 0
    network_slow_since_s: float | None = None
    # Bytes QEMU had sent when the link turned slow: what moved since tells
    # a link shared with traffic this host does not own from a dead one.
    network_slow_processed_bytes: float = 0.0
    network_stalled: bool = False
    # The rate this job gets of a link shared with traffic it does not own
    # (None: not shared with others, as far as it measured).
    contended_bytes_s: float | None = None
    postcopy_wait_since_s: float | None = None
    # A pause chosen but held for a cheaper moment (a shrinking working
    # set, or the trough of the remaining bytes).
    pause_wait_since_s: float | None = None
    # At the last pass boundary: the throttle in force during the pass that
    # ended, and the dirty rate QEMU measured over it.
    pass_throttle_pct: int = 0
    pass_dirty_bytes_s: float | None = None
    # The same, at the first boundary of a throttled pass, and the best
    # effect of the throttle shown since (see throttle_effect).
    throttle_first_pct: int | None = None
    throttled_dirty_bytes_s: float | None = None
    throttle_best_effect: float | None = None
    # With nothing left but the abort: the pass at which QEMU's throttle was
    # first seen not to bite with pre-copy not predicted to finish in time
    # (see rungs.abort.throttled_in_vain).
    throttle_spent_passes: int | None = None
    switchover_started_s: float | None = None
    exhausted: frozenset[str] = frozenset()
    # Rungs entered so far (a rung passed over for a cheaper one is not).
    tried: frozenset[str] = frozenset()
    noted: frozenset[str] = frozenset()
    predicted_downtime_ms: float | None = None
    # The deadline in force (None: config.deadline_s, not derived yet), and
    # the one last said in the log.
    deadline_s: float | None = None
    deadline_noted_s: float | None = None
    # Migrations sharing the link now, the most seen, and when it changed.
    link_shares: int = 1
    max_link_shares: int = 1
    link_shares_changed_s: float | None = None
    # The link's capacity: settled bandwidth × shares, the best seen.
    peak_link_bytes_s: float = 0.0
    # The least settled bandwidth this job had while sharing the link.
    least_shared_bytes_s: float | None = None
    # Guest CPU time taken by QEMU's throttle so far (Σ throttle × time).
    throttle_lost_s: float = 0.0
    # What the guest was predicted to pay when the controller paused it
    # or switched it to post-copy.
    predicted_guest: guest.GuestCost | None = None

    def rung_name(self, config: ControllerConfig) -> str | None:
        """The rung last entered, if any."""
        if self.rung_index < 0:
            return None
        return config.ladder[self.rung_index]


# What every rule returns: the new state and the decisions to apply.
Step = tuple[ControllerState, tuple[Decision, ...]]


def elapsed_s(state: ControllerState, now_s: float) -> float:
    return now_s - state.started_s


def on_rung(state: ControllerState, index: int, now_s: float
            ) -> ControllerState:
    """The state once the ladder's rung ``index`` is entered now."""
    return dataclasses.replace(
        state, rung_index=index,
        rung_started_s=elapsed_s(state, now_s),
        rung_started_passes=state.estimate.passes_completed)


def tried_in_vain(state: ControllerState, rung: str) -> str | None:
    """Why ``rung`` cannot be used again: it was tried and did not take
    effect.  None when it did not fail."""
    if rung in state.exhausted:
        return f'{rung} was already tried and did not take effect'
    return None
