"""Upstream mode: the decisions Nova 34's libvirt driver makes, for comparison.

Nova's ``_live_migration_monitor`` (``nova/virt/libvirt/driver.py``) with the
helpers of ``nova/virt/libvirt/migration.py`` decides on wall-clock time
alone; it reads neither the dirty rate nor the iterations.  Restated as
rules, per poll of a job that is running (``VIR_DOMAIN_JOB_UNBOUNDED``):

1. run the tasks queued by earlier polls: a queued force-complete starts
   post-copy when the job was started with ``VIR_MIGRATE_POSTCOPY``, or
   pauses the guest otherwise; a job already in post-copy is left alone;
2. when the completion timeout (``live_migration_completion_timeout`` ×
   data GiB, 0 = never) has passed and the job is not in post-copy, act:
   ``abort`` aborts the job at once, ``force_complete`` queues a
   force-complete for the next poll;
3. set the downtime of the last step whose start time has passed, if it
   changed.  Steps are ``live_migration_downtime_steps`` + 1 pairs: step i
   starts after i × int(``live_migration_downtime_delay`` × data GiB) s and
   sets int(base + (downtime - base) / steps × i) ms with
   base = downtime / steps.

Elapsed time is counted from the start of the monitor, and the data size
is RAM plus migrated disks, each at least 2 GiB.  Nova repeats an action
whose condition stays true on every poll (abort, or a pause when post-copy
is not possible); a repeat changes nothing, so this mode emits each action
once.  A failed post-copy switch is retried, as in Nova, because the job
never reached post-copy.  A failed abort ends Nova's monitor with an
error; here it is asked for again at the next poll.
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples

TIMEOUT_ACTION_ABORT = 'abort'
TIMEOUT_ACTION_FORCE_COMPLETE = 'force_complete'
TIMEOUT_ACTIONS = (TIMEOUT_ACTION_ABORT, TIMEOUT_ACTION_FORCE_COMPLETE)

MIB = 1024 * 1024
GIB = 1024 * MIB
# Nova counts every device as at least this big.
MINIMUM_DEVICE_GIB = 2.0


def nova_data_gib(memory_mib: float,
                  disk_sizes_bytes: tuple[int, ...] = ()) -> float:
    """Nova's data size: RAM and each migrated disk, at least 2 GiB each."""
    ram_gib = max(memory_mib * MIB / GIB, MINIMUM_DEVICE_GIB)
    disk_gib = sum(max(size / GIB, MINIMUM_DEVICE_GIB)
                   for size in disk_sizes_bytes)
    return ram_gib + disk_gib


@dataclasses.dataclass(frozen=True)
class UpstreamConfig:
    """Nova's ``[libvirt]`` options that shape its decisions."""

    data_gib: float
    downtime_ms: int = 500
    downtime_steps: int = 10
    downtime_delay_s: int = 75
    completion_timeout_s: int = 800
    timeout_action: str = TIMEOUT_ACTION_ABORT
    # Nova's is_post_copy_enabled: VIR_MIGRATE_POSTCOPY in the job's flags
    # (live_migration_permit_post_copy on a capable host, no vPMEM).
    postcopy_enabled: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.data_gib <= 0:
            problems.append('data_gib must be positive')
        if self.downtime_ms < 100:
            problems.append("downtime_ms must be at least 100 (Nova's min)")
        if self.downtime_steps < 3:
            problems.append("downtime_steps must be at least 3 (Nova's min)")
        if self.downtime_delay_s < 3:
            problems.append("downtime_delay_s must be at least 3 (Nova's "
                            'min)')
        if self.completion_timeout_s < 0:
            problems.append('completion_timeout_s must not be negative')
        if self.timeout_action not in TIMEOUT_ACTIONS:
            problems.append(f'timeout_action must be one of '
                            f'{list(TIMEOUT_ACTIONS)}')
        if problems:
            raise ValueError('invalid upstream config: '
                             + '; '.join(problems))


def downtime_steps(config: UpstreamConfig) -> tuple[tuple[int, int], ...]:
    """(start after s, downtime ms) pairs, as Nova computes them."""
    delay = int(config.downtime_delay_s * config.data_gib)
    base = config.downtime_ms / config.downtime_steps
    offset = (config.downtime_ms - base) / config.downtime_steps
    return tuple((int(delay * i), int(base + offset * i))
                 for i in range(config.downtime_steps + 1))


def completion_timeout_s(config: UpstreamConfig) -> int:
    """Seconds before the timeout action; 0 means never."""
    return int(config.completion_timeout_s * config.data_gib)


def downtime_due_ms(steps: tuple[tuple[int, int], ...],
                    elapsed_s: float) -> int | None:
    """The downtime of the last step whose start time has passed."""
    due = None
    for start_s, downtime_ms in steps:
        if elapsed_s > start_s:
            due = downtime_ms
    return due


def timeout_reached(config: UpstreamConfig, elapsed_s: float,
                    in_postcopy: bool) -> bool:
    """Should the completion-timeout action fire now?"""
    timeout = completion_timeout_s(config)
    if not timeout or in_postcopy:
        return False
    return elapsed_s > timeout


@dataclasses.dataclass(frozen=True)
class UpstreamState:
    started_s: float
    downtime_ms: int | None = None
    force_complete_queued: bool = False
    in_postcopy: bool = False
    paused: bool = False
    aborted: bool = False
    estimate: estimator.Estimate = estimator.Estimate()


def _decision(config: UpstreamConfig, state: UpstreamState, now_s: float,
              action: ctl.Action, reason: str, *, rung: str | None = None,
              downtime_ms: int | None = None) -> ctl.Decision:
    elapsed = now_s - state.started_s
    measures: tuple[ctl.Measure, ...] = (
        ('elapsed_s', round(elapsed, 1)),
        ('data_gib', round(config.data_gib, 2)),
        ('completion_timeout_s', completion_timeout_s(config)),
        ('remaining_mib', round(state.estimate.remaining_bytes / MIB, 1)),
        ('iteration', state.estimate.iteration),
    )
    return ctl.Decision(action=action, reason=reason,
                        at_s=round(elapsed, 3), rung=rung,
                        downtime_ms=downtime_ms, measures=measures)


def run_queued_force_complete(config: UpstreamConfig, state: UpstreamState,
                              now_s: float
                              ) -> tuple[UpstreamState, tuple[ctl.Decision,
                                                              ...]]:
    """Nova's run_tasks for a queued force-complete."""
    if not state.force_complete_queued:
        return state, ()
    state = dataclasses.replace(state, force_complete_queued=False)
    if state.in_postcopy:
        return state, ()
    if config.postcopy_enabled:
        # Nova marks the migration as in post-copy only once libvirt
        # accepted the switch: see upstream_acknowledge.
        return state, (_decision(
            config, state, now_s, ctl.Action.START_POSTCOPY,
            'force-complete: switching to post-copy', rung=ctl.RUNG_POSTCOPY),)
    if state.paused:
        return state, ()
    state = dataclasses.replace(state, paused=True)
    return state, (_decision(
        config, state, now_s, ctl.Action.PAUSE,
        'force-complete without post-copy: pausing the guest',
        rung=ctl.RUNG_PAUSE),)


def upstream_step(config: UpstreamConfig, state: UpstreamState,
                  sample: samples.JobSample, now_s: float
                  ) -> tuple[UpstreamState, tuple[ctl.Decision, ...]]:
    """One poll of Nova's monitor loop."""
    if sample.job_type is not samples.JobType.UNBOUNDED:
        return state, ()
    elapsed = now_s - state.started_s
    state = dataclasses.replace(state, estimate=estimator.update_estimate(
        state.estimate, sample, elapsed))
    state, decisions = run_queued_force_complete(config, state, now_s)
    if timeout_reached(config, elapsed, state.in_postcopy):
        if config.timeout_action == TIMEOUT_ACTION_FORCE_COMPLETE:
            state = dataclasses.replace(state, force_complete_queued=True)
        elif not state.aborted:
            state = dataclasses.replace(state, aborted=True)
            decisions += (_decision(
                config, state, now_s, ctl.Action.ABORT,
                f'live migration not completed after '
                f'{completion_timeout_s(config)} s: aborting',
                rung=ctl.RUNG_ABORT),)
    due = downtime_due_ms(downtime_steps(config), elapsed)
    if due is not None and due != state.downtime_ms:
        state = dataclasses.replace(state, downtime_ms=due)
        decisions += (_decision(
            config, state, now_s, ctl.Action.SET_DOWNTIME,
            f'downtime step: {due} ms after {elapsed:.0f} s',
            rung=ctl.RUNG_DOWNTIME, downtime_ms=due),)
    return state, decisions


def upstream_acknowledge(state: UpstreamState, decision: ctl.Decision,
                         applied: bool) -> UpstreamState:
    """A failed switch leaves Nova's migration status unchanged."""
    if decision.action is ctl.Action.START_POSTCOPY:
        return dataclasses.replace(state, in_postcopy=applied)
    if applied:
        return state
    if decision.action is ctl.Action.PAUSE:
        return dataclasses.replace(state, paused=False)
    if decision.action is ctl.Action.ABORT:
        return dataclasses.replace(state, aborted=False)
    # Nova keeps the new downtime as current even when setting it failed.
    return state


class UpstreamController:
    """Nova 34's behaviour behind the same interface as our controller."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._state: UpstreamState | None = None

    @property
    def state(self) -> UpstreamState:
        if self._state is None:
            raise RuntimeError('the controller has not been started')
        return self._state

    @property
    def estimate(self) -> estimator.Estimate:
        return (estimator.Estimate() if self._state is None
                else self._state.estimate)

    @property
    def predicted_downtime_ms(self) -> float | None:
        # Nova predicts nothing; report the limit in force.
        if self._state is None or self._state.downtime_ms is None:
            return None
        return float(self._state.downtime_ms)

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        # Nova sets nothing before its first poll.
        self._state = UpstreamState(started_s=now_s)
        return ()

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if self._state is None:
            self.start(now_s)
        self._state, decisions = upstream_step(self.config, self.state,
                                               sample, now_s)
        return decisions

    def acknowledge(self, decision: ctl.Decision, applied: bool,
                    now_s: float) -> None:
        self._state = upstream_acknowledge(self.state, decision, applied)

    def force_complete(self, now_s: float) -> tuple[ctl.Decision, ...]:
        """Nova queues an operator's force-complete for its next poll."""
        if self._state is None:
            self.start(now_s)
        self._state = dataclasses.replace(self.state,
                                          force_complete_queued=True)
        return ()
