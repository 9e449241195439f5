"""Baselines nobody steers: QEMU's own knobs, set at the start and left alone.

The lab compares the shipped defaults with what an operator gets without
the extension's controller: QEMU's auto-converge armed with a setting
(``50/20``, ``20/10``) and nobody watching, or post-copy started as soon as
the first pass ends, with no throttle. These are not policies a host could
be configured with; they exist so that the comparison has the same guest,
the same link and the same measurements for every way of moving it.

:class:`Unwatched` stands behind the monitor's decision-maker interface:
it folds every sample into an :class:`~nova_livemig_ext.convergence.
estimator.Estimate` (for the report) and decides nothing, except, when
asked, the switch to post-copy once QEMU has finished its first pass, and
an abort when the lab's own cap on a run passes (QEMU alone never gives
up; the lab must end the run). The monitor is the one nova-compute runs.
"""
from __future__ import annotations

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence.decision import Action, Decision

# The lab's cap on one unsteered run: about three times what the defaults'
# deadline gives the lab's 320 MiB guest (87.5 s), so a knob that converges
# slowly still gets to, and one that never does is counted as unfinished.
CAP_S = 300.0


class Unwatched:
    """QEMU's knobs alone (and, with ``postcopy_after_first_pass``, the
    switch to post-copy at the end of the first pass)."""

    def __init__(self, cap_s: float = CAP_S,
                 postcopy_after_first_pass: bool = False) -> None:
        if cap_s <= 0:
            raise ValueError(f"the cap must be positive, not {cap_s}")
        self.cap_s = cap_s
        self.postcopy_after_first_pass = postcopy_after_first_pass
        self._started_s: float | None = None
        self._estimate = estimator.Estimate()
        self._switched = False
        self._aborted = False

    @property
    def estimate(self) -> estimator.Estimate:
        return self._estimate

    @property
    def predicted_downtime_ms(self) -> float | None:
        return None  # nobody predicts anything

    def start(self, now_s: float) -> tuple[Decision, ...]:
        self._started_s = now_s
        return ()

    def observe(self, sample: samples.JobSample, now_s: float) -> tuple[Decision, ...]:
        if self._started_s is None:
            self.start(now_s)
        assert self._started_s is not None
        if sample.job_type is not samples.JobType.UNBOUNDED:
            return ()
        elapsed = now_s - self._started_s
        self._estimate = estimator.update_estimate(self._estimate, sample, elapsed)
        if elapsed >= self.cap_s and not self._aborted:
            self._aborted = True
            return (Decision(Action.ABORT, f"the lab's cap of {self.cap_s:.0f} s on an "
                             "unsteered run passed: aborting", at_s=elapsed, rung="abort"),)
        if (self.postcopy_after_first_pass and not self._switched
                and (self._estimate.iteration or 0) > estimator.FIRST_PASS_ITERATION):
            self._switched = True
            return (Decision(Action.START_POSTCOPY, "the first pass ended: switching to "
                             "post-copy", at_s=elapsed, rung="postcopy"),)
        return ()

    def acknowledge(self, decision: Decision, applied: bool, now_s: float) -> None:
        if applied:
            return
        # Not applied: let the next sample ask again.
        if decision.action is Action.START_POSTCOPY:
            self._switched = False
        elif decision.action is Action.ABORT:
            self._aborted = False

    def force_complete(self, now_s: float) -> tuple[Decision, ...]:
        return ()
