"""What a controller answers: decisions, their actions and measures.

A :class:`Decision` is one thing for the monitor to do to the domain (or a
finding to log), with the reason and the measured numbers behind it;
:class:`DecisionMaker` is what the monitor drives, ours or upstream Nova's.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples


class Action(enum.Enum):
    """What a decision asks the monitor to do to the domain."""

    SET_DOWNTIME = 'set_downtime'
    SET_SPEED = 'set_speed'
    START_POSTCOPY = 'start_postcopy'
    PAUSE = 'pause'
    ABORT = 'abort'
    # No effect on the domain: a finding (a stall, a skipped rung, a rung
    # given its chance) that the log and the report must explain.
    NOTE = 'note'


Measure = tuple[str, float | int | str | None]


@dataclasses.dataclass(frozen=True)
class Decision:
    """One thing to do, why, and the measured numbers that caused it."""

    action: Action
    reason: str
    at_s: float = 0.0
    # The ladder rung this decision uses (None for the initial settings and
    # for notes about rungs that were skipped).
    rung: str | None = None
    downtime_ms: int | None = None
    speed_mib_s: int | None = None
    # A SET_SPEED that applies to the post-copy phase
    # (VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY).
    postcopy_speed: bool = False
    measures: tuple[Measure, ...] = ()

    @property
    def has_effect(self) -> bool:
        """Does applying it call libvirt?"""
        return self.action is not Action.NOTE

    def measures_dict(self) -> dict[str, float | int | str | None]:
        """The measures as a dict, for logs and reports."""
        return dict(self.measures)


class DecisionMaker(Protocol):
    """What the monitor needs from a controller (ours or upstream Nova's)."""

    def start(self, now_s: float) -> tuple[Decision, ...]:
        """Begin a job; returns the settings to apply at once."""

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[Decision, ...]:
        """Take one sample; returns what to do now."""

    def acknowledge(self, decision: Decision, applied: bool,
                    now_s: float) -> None:
        """Learn whether a decision's effect really happened."""

    def force_complete(self, now_s: float) -> tuple[Decision, ...]:
        """The operator asked to finish now; returns what to do."""

    @property
    def estimate(self) -> estimator.Estimate:
        """What the samples said so far."""

    @property
    def predicted_downtime_ms(self) -> float | None:
        """The downtime expected at the switchover, if known."""
