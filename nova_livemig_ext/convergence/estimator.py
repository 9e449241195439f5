"""What the samples say about a pre-copy migration, and where it is going.

The pre-copy model: with memory M, bandwidth B and dirty rate D
(λ = D / B), pass 0 sends all of M in M / B seconds and every later pass i
resends what the guest dirtied during the previous one, so it lasts
(M / B)·λ^i.  QEMU ends a pass with a dirty-bitmap sync as soon as what is
left fits in B × downtime limit, and switches over if the freshly synced
remainder still fits.  So the remainder right after each sync, the
*working set*, is the number that tells whether the migration converges:
it shrinks geometrically when λ < 1 and settles at the guest's writable
working set otherwise.

Two facts about QEMU shape the estimator:

* remaining bytes only go *up* at a sync; inside a pass they fall at the
  transfer rate.  The lowest remaining within a pass is always near the
  switch threshold, converging or not, so troughs say nothing and the
  working set at the pass boundaries says everything;
* QEMU measures the dirty rate only at a bitmap sync
  (``migration_bitmap_sync`` -> ``migration_update_rates``), so nothing is
  known about it until the first full pass has ended.

All functions are pure; time comes in as ``at_s``.
"""

from __future__ import annotations

import dataclasses
import math

from nova_livemig_ext.convergence import samples

MS_PER_S = 1000.0

# QEMU's first dirty-bitmap sync happens at setup, so pass 1 runs with
# memory_iteration == 1 and the first real measurement arrives with 2.
FIRST_PASS_ITERATION = 1


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Smoothing of the noisy rates.

    QEMU's own bandwidth figure is computed over 100 ms chunks and jumps
    around; the half-lives smooth over a few seconds without hiding a link
    that has really gone quiet.
    """

    bandwidth_half_life_s: float = 3.0
    dirty_rate_half_life_s: float = 6.0
    boundaries_kept: int = 16

    def __post_init__(self) -> None:
        if self.bandwidth_half_life_s <= 0 or self.dirty_rate_half_life_s <= 0:
            raise ValueError('estimator half-lives must be positive seconds')
        if self.boundaries_kept < 2:
            raise ValueError('the estimator must keep at least 2 boundaries')


@dataclasses.dataclass(frozen=True)
class PassBoundary:
    """The start of a pass (the sync), seen from its first sample."""

    iteration: int
    at_s: float
    # What the previous pass left dirty: the remainder just after the sync,
    # read from the first sample of the pass plus what it had already sent.
    working_set_bytes: int
    previous_pass_s: float | None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Everything learnt from the samples so far."""

    at_s: float | None = None
    memory_total_bytes: int = 0
    remaining_bytes: int = 0
    processed_bytes: int = 0
    iteration: int | None = None
    bandwidth_bytes_s: float | None = None
    interval_bandwidth_bytes_s: float | None = None
    peak_bandwidth_bytes_s: float = 0.0
    dirty_rate_bytes_s: float | None = None
    throttle_pct: int | None = None
    pass_started_s: float | None = None
    pass_trough_bytes: int | None = None
    previous_pass_trough_bytes: int | None = None
    boundaries: tuple[PassBoundary, ...] = ()
    largest_working_set_bytes: int = 0
    passes_completed: int = 0
    # passes_completed when QEMU's auto-converge throttle first showed.
    throttle_started_passes: int | None = None


def smoothing_weight(interval_s: float, half_life_s: float) -> float:
    """EWMA weight of a new reading taken ``interval_s`` after the last.

    Weighting by time, not by sample, keeps the smoothing the same when the
    poll interval changes or a poll is late.
    """
    return 1.0 - math.pow(0.5, interval_s / half_life_s)


def smoothed(old: float | None, new: float, weight: float) -> float:
    """One EWMA step; the first reading is taken as is."""
    if old is None:
        return new
    return old + weight * (new - old)


def interval_bandwidth_bytes_s(previous: Estimate, sample: samples.JobSample,
                               at_s: float) -> float | None:
    """Bytes actually sent per second since the previous sample."""
    if previous.at_s is None or at_s <= previous.at_s:
        return None
    sent = sample.memory_processed_bytes - previous.processed_bytes
    if sent < 0:
        # Counters went backwards: a new job, not a negative rate.
        return None
    return sent / (at_s - previous.at_s)


def pass_started(previous: Estimate, sample: samples.JobSample) -> bool:
    """Did a bitmap sync (a new pass) happen since the previous sample?"""
    return (sample.iteration is not None and previous.iteration is not None
            and sample.iteration > previous.iteration)


def measured_dirty_rate_bytes_s(sample: samples.JobSample) -> float | None:
    """The dirty rate, if QEMU has measured one yet."""
    if sample.iteration is not None and (
            sample.iteration <= FIRST_PASS_ITERATION):
        # Reported as 0 until the first sync: not a measurement.
        return None
    return sample.dirty_rate_bytes_s


def sent_since_sync_bytes(previous: Estimate,
                          sample: samples.JobSample) -> int:
    """Bytes of the new pass already sent when its first sample is read.

    What was sent since the previous sample, less what the previous pass
    still had to send, shared evenly when several short passes ended
    between the two samples.  A lower bound: part of the previous remainder
    is carried over the sync rather than sent before it.
    """
    assert sample.iteration is not None and previous.iteration is not None
    syncs = max(1, sample.iteration - previous.iteration)
    sent = sample.memory_processed_bytes - previous.processed_bytes
    return max(0, sent - previous.remaining_bytes) // syncs


def _with_boundary(previous: Estimate, sample: samples.JobSample, at_s: float,
                   config: EstimatorConfig) -> Estimate:
    assert sample.iteration is not None and previous.iteration is not None
    sent_bytes = sent_since_sync_bytes(previous, sample)
    rate = interval_bandwidth_bytes_s(previous, sample, at_s)
    # Date the sync back by the time it took to send those bytes.
    synced_s = at_s - (sent_bytes / rate if rate else 0.0)
    if previous.at_s is not None:
        synced_s = max(synced_s, previous.at_s)
    pass_s = (None if previous.pass_started_s is None
              else synced_s - previous.pass_started_s)
    working_set = sample.memory_remaining_bytes + sent_bytes
    boundary = PassBoundary(
        iteration=sample.iteration,
        at_s=synced_s,
        working_set_bytes=working_set,
        previous_pass_s=pass_s,
    )
    kept = (previous.boundaries + (boundary,))[-config.boundaries_kept:]
    return dataclasses.replace(
        previous,
        boundaries=kept,
        pass_started_s=synced_s,
        previous_pass_trough_bytes=previous.pass_trough_bytes,
        pass_trough_bytes=None,
        largest_working_set_bytes=max(previous.largest_working_set_bytes,
                                      working_set),
        passes_completed=(previous.passes_completed
                          + sample.iteration - previous.iteration),
    )


def fallback_dirty_rate_bytes_s(estimate: Estimate) -> float | None:
    """Dirty rate implied by the last pass: what it left over its length.

    Used only when libvirt reports no dirty rate.  It is a lower bound,
    since pages written twice count once.
    """
    if not estimate.boundaries:
        return None
    last = estimate.boundaries[-1]
    if not last.previous_pass_s:
        return None
    return last.working_set_bytes / last.previous_pass_s


def update_estimate(previous: Estimate, sample: samples.JobSample,
                    at_s: float,
                    config: EstimatorConfig = EstimatorConfig()) -> Estimate:
    """Fold one sample of an active job into the estimate."""
    est = previous
    if pass_started(previous, sample):
        est = _with_boundary(previous, sample, at_s, config)
    elif est.pass_started_s is None:
        est = dataclasses.replace(est, pass_started_s=at_s)

    interval_s = None if previous.at_s is None else at_s - previous.at_s
    rate = interval_bandwidth_bytes_s(previous, sample, at_s)
    bandwidth = est.bandwidth_bytes_s
    if rate is not None and interval_s is not None:
        bandwidth = smoothed(
            bandwidth, rate,
            smoothing_weight(interval_s, config.bandwidth_half_life_s))
    elif bandwidth is None and sample.memory_bandwidth_bytes_s:
        bandwidth = sample.memory_bandwidth_bytes_s

    dirty = est.dirty_rate_bytes_s
    reading = measured_dirty_rate_bytes_s(sample)
    if reading is None and sample.dirty_rate_bytes_s is None:
        reading = (fallback_dirty_rate_bytes_s(est)
                   if pass_started(previous, sample) else None)
    if reading is not None:
        weight = (1.0 if interval_s is None else
                  smoothing_weight(interval_s, config.dirty_rate_half_life_s))
        dirty = smoothed(dirty, reading, weight)

    trough = est.pass_trough_bytes
    remaining = sample.memory_remaining_bytes
    return dataclasses.replace(
        est,
        at_s=at_s,
        memory_total_bytes=sample.memory_total_bytes or est.memory_total_bytes,
        remaining_bytes=remaining,
        processed_bytes=sample.memory_processed_bytes,
        iteration=(sample.iteration if sample.iteration is not None
                   else est.iteration),
        bandwidth_bytes_s=bandwidth,
        interval_bandwidth_bytes_s=rate,
        peak_bandwidth_bytes_s=max(est.peak_bandwidth_bytes_s,
                                   bandwidth or 0.0),
        dirty_rate_bytes_s=dirty,
        throttle_pct=sample.auto_converge_throttle_pct,
        throttle_started_passes=(
            est.passes_completed
            if est.throttle_started_passes is None
            and (sample.auto_converge_throttle_pct or 0) > 0
            else est.throttle_started_passes),
        pass_trough_bytes=remaining if trough is None else min(trough,
                                                               remaining),
    )


# ---------------------------------------------------------------------------
# Questions about an estimate.
# ---------------------------------------------------------------------------

def dirty_ratio(estimate: Estimate) -> float | None:
    """λ: dirty rate over bandwidth; below 1 pre-copy shrinks every pass."""
    if estimate.dirty_rate_bytes_s is None or not estimate.bandwidth_bytes_s:
        return None
    return estimate.dirty_rate_bytes_s / estimate.bandwidth_bytes_s


# Passes the observed shrink is averaged over: one pass's ratio carries the
# sync's timing noise (a few percent either way), which alone would turn a
# slowly converging guest (λ = 0.96) into a "never" prediction.
# Three passes smooth that and still see a plateau a pass after it shows.
SHRINK_PASSES = 3


def observed_shrink_ratio(estimate: Estimate) -> float | None:
    """How much a pass shrinks the working set: (W_i / W_i-k)^(1/k).

    The geometric mean over the last passes (at most ``SHRINK_PASSES``),
    leaving out the setup sync, whose "working set" is all of memory.
    """
    boundaries = tuple(
        b for b in estimate.boundaries if b.iteration > FIRST_PASS_ITERATION
    )[-(SHRINK_PASSES + 1):]
    if len(boundaries) < 2:
        return None
    first = boundaries[0].working_set_bytes
    if first <= 0:
        return None
    passes = boundaries[-1].iteration - boundaries[0].iteration
    if passes <= 0:
        passes = len(boundaries) - 1
    ratio = boundaries[-1].working_set_bytes / first
    return float(ratio ** (1.0 / passes))


def convergence_ratio(estimate: Estimate) -> float | None:
    """The λ to predict with: the reported one, unless passes say worse.

    QEMU counts a page once per rate period however often it is written,
    so a guest rewriting a working set smaller than the link carries per
    pass reports a dirty rate just below the bandwidth (λ ≈ 0.9) while its
    working set does not shrink at all.  The ratio of successive working
    sets shows that; the larger of the two is the honest one.
    """
    ratio = dirty_ratio(estimate)
    observed = observed_shrink_ratio(estimate)
    if ratio is None:
        return observed if observed is not None and observed >= 1 else None
    if observed is None:
        return ratio
    return max(ratio, observed)


def latest_working_set_bytes(estimate: Estimate) -> int | None:
    """What the last finished pass left dirty, if a pass has finished."""
    if not estimate.boundaries:
        return None
    return estimate.boundaries[-1].working_set_bytes


def transfer_time_s(size_bytes: float, bandwidth_bytes_s: float | None
                    ) -> float | None:
    """Seconds to send ``size_bytes``; None when nothing moves."""
    if not bandwidth_bytes_s or bandwidth_bytes_s <= 0:
        return None
    return size_bytes / bandwidth_bytes_s


def downtime_ms_for(size_bytes: float, bandwidth_bytes_s: float | None
                    ) -> float | None:
    """Stop-and-copy time for ``size_bytes`` at ``bandwidth_bytes_s``."""
    seconds = transfer_time_s(size_bytes, bandwidth_bytes_s)
    return None if seconds is None else seconds * MS_PER_S


def switch_threshold_bytes(bandwidth_bytes_s: float, limit_ms: float) -> float:
    """QEMU switches over once the remainder fits in this many bytes."""
    return bandwidth_bytes_s * limit_ms / MS_PER_S


def precopy_pass_duration_s(memory_bytes: float, bandwidth_bytes_s: float,
                            ratio: float, index: int) -> float:
    """Length of pass ``index`` (0 = the bulk pass): (M / B)·λ^index."""
    return memory_bytes / bandwidth_bytes_s * ratio ** index


def passes_to_fit(start_bytes: float, ratio: float,
                  threshold_bytes: float) -> int | None:
    """Passes until the working set fits the threshold; None if never."""
    if start_bytes <= threshold_bytes:
        return 0
    if ratio <= 0:
        return 1
    if ratio >= 1 or threshold_bytes <= 0:
        return None
    return max(1, math.ceil(math.log(threshold_bytes / start_bytes)
                            / math.log(ratio)))


def geometric_finish_s(start_bytes: float, bandwidth_bytes_s: float,
                       ratio: float, limit_ms: float) -> float | None:
    """Seconds from the start of a pass of ``start_bytes`` to switchover end.

    Passes shrink by λ each; the job ends with a stop-and-copy of the first
    working set that fits in B × limit.
    """
    threshold = switch_threshold_bytes(bandwidth_bytes_s, limit_ms)
    passes = passes_to_fit(start_bytes, ratio, threshold)
    if passes is None:
        return None
    if ratio == 1:  # only reachable when passes == 0
        return start_bytes / bandwidth_bytes_s
    sent = start_bytes * (1 - ratio ** (passes + 1)) / (1 - ratio)
    return sent / bandwidth_bytes_s


def predicted_completion_s(estimate: Estimate, limit_ms: float
                           ) -> float | None:
    """Seconds from now until pre-copy completes at this downtime limit.

    None when it is unknown (first pass) or never (λ ≥ 1 and the working
    set does not fit).
    """
    ratio = convergence_ratio(estimate)
    working_set = latest_working_set_bytes(estimate)
    bandwidth = estimate.bandwidth_bytes_s
    if ratio is None or working_set is None or not bandwidth:
        return None
    if estimate.pass_started_s is None or estimate.at_s is None:
        return None
    finish = geometric_finish_s(working_set, bandwidth, ratio, limit_ms)
    if finish is None:
        return None
    in_pass_s = estimate.at_s - estimate.pass_started_s
    floor_s = estimate.remaining_bytes / bandwidth
    return max(finish - in_pass_s, floor_s)


def predicted_downtime_ms(estimate: Estimate, limit_ms: float
                          ) -> float | None:
    """The stop-and-copy pause pre-copy will end with at this limit.

    It is the first working set that fits, sent at the current bandwidth;
    at most the limit itself.
    """
    bandwidth = estimate.bandwidth_bytes_s
    if not bandwidth:
        return None
    working_set = latest_working_set_bytes(estimate)
    ratio = convergence_ratio(estimate)
    threshold = switch_threshold_bytes(bandwidth, limit_ms)
    if working_set is None or ratio is None:
        return min(float(limit_ms),
                   estimate.remaining_bytes / bandwidth * MS_PER_S)
    passes = passes_to_fit(working_set, ratio, threshold)
    if passes is None:
        return None
    return downtime_ms_for(working_set * ratio ** passes, bandwidth)


def can_converge(estimate: Estimate, ceiling_ms: float) -> bool | None:
    """Can pre-copy alone ever finish with a downtime within the ceiling?

    Yes when λ < 1 (the working set shrinks every pass) or when the working
    set already fits in B × ceiling.  None before the first pass ended.
    """
    ratio = convergence_ratio(estimate)
    working_set = latest_working_set_bytes(estimate)
    bandwidth = estimate.bandwidth_bytes_s
    if ratio is None or working_set is None or not bandwidth:
        return None
    return ratio < 1 or working_set <= switch_threshold_bytes(bandwidth,
                                                              ceiling_ms)


def switchover_bytes(estimate: Estimate) -> int:
    """Bytes a forced switchover right now would still have to move.

    What this pass has not sent yet plus what the guest dirtied since the
    last sync, never more than the largest working set seen (pages written
    twice count once).
    """
    remaining = estimate.remaining_bytes
    dirty = estimate.dirty_rate_bytes_s
    if (dirty is None or estimate.pass_started_s is None
            or estimate.at_s is None):
        return remaining
    dirtied = dirty * (estimate.at_s - estimate.pass_started_s)
    cap = max(estimate.largest_working_set_bytes, remaining)
    return int(min(remaining + dirtied, cap))


def switchover_bytes_at_trough(estimate: Estimate, limit_ms: float) -> int:
    """Bytes a forced switchover would move at the end of this pass.

    The pass sends down to the switch threshold while the guest keeps
    dirtying; with a working set the guest rewrites within a pass, the
    trough saves nothing.
    """
    bandwidth = estimate.bandwidth_bytes_s
    dirty = estimate.dirty_rate_bytes_s
    if (not bandwidth or dirty is None or estimate.pass_started_s is None
            or estimate.at_s is None):
        return switchover_bytes(estimate)
    threshold = switch_threshold_bytes(bandwidth, limit_ms)
    to_trough_s = max(estimate.remaining_bytes - threshold, 0) / bandwidth
    in_pass_s = estimate.at_s - estimate.pass_started_s + to_trough_s
    cap = max(estimate.largest_working_set_bytes, estimate.remaining_bytes)
    return int(min(min(threshold, estimate.remaining_bytes)
                   + dirty * in_pass_s, cap))


def pause_downtime_ms(estimate: Estimate) -> float | None:
    """How long the guest stays paused if it is paused now."""
    return downtime_ms_for(switchover_bytes(estimate),
                           estimate.bandwidth_bytes_s)


def postcopy_duration_s(estimate: Estimate) -> float | None:
    """How long post-copy would take to pull the rest if switched now."""
    return transfer_time_s(switchover_bytes(estimate),
                           estimate.bandwidth_bytes_s)


def expected_pass_s(estimate: Estimate) -> float | None:
    """How long a pass of the current working set takes to send."""
    working_set = latest_working_set_bytes(estimate)
    if working_set is None:
        working_set = estimate.memory_total_bytes
    return transfer_time_s(working_set, estimate.bandwidth_bytes_s)
