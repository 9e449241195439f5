"""A synthetic pre-copy migration that answers like libvirt's jobStats.

Used by the tests to drive the estimator and the controller through
scenarios whose truth is known: memory M, bandwidth B, dirty rate D and a
writable working set W.  It follows QEMU's pre-copy loop closely enough for
the controller's questions, not byte for byte:

* pass 1 sends all of M; remaining bytes only fall inside a pass;
* when remaining fits in B × downtime limit QEMU syncs the dirty bitmap
  (``memory_iteration`` + 1) and adds what the guest dirtied since the last
  sync, at most W; if the new remainder still fits, it stops the guest and
  copies it (the downtime).  QEMU looks at the remainder between chunks of
  about 100 ms of sending, so on average it syncs half a chunk below the
  threshold; without that slack a dirtying guest could never fit;
* the dirty rate is measured at a sync, over periods of at least a second,
  and counts each page once per period (so it never exceeds W per pass);
* auto-converge: at such a rate period, when the bytes dirtied exceed 50 %
  of the bytes sent, a counter goes up and the second time the vCPUs are
  throttled (initial, then + increment, up to 99 %), scaling D down;
* post-copy: the switch adds the last dirtied pages once, then the rest is
  pulled at B while the guest runs on the destination;
* a pause stops the dirtying; the copy then ends at the next sync;
* link changes at given times model a network stall.

Time is simulated; nothing here reads a clock.  The loop itself
(:class:`PrecopyJob`) and :func:`apply_decision` also serve the calibrated
benchmark simulator (``benchmarks/simulator.py``), which refines the hooks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import samples

MIB = 1024 * 1024
GIB = 1024 * MIB
MS_PER_S = 1000.0

# QEMU updates its rates at syncs at least this far apart.
RATE_PERIOD_S = 1.0
# The device state and the final handshake add a little to every downtime.
SWITCHOVER_OVERHEAD_MS = 15.0
# Integration step: small against any pass the tests use.
MAX_STEP_S = 0.1
# QEMU sends in rate-limit slices of 100 ms (BUFFER_DELAY) and checks the
# remainder between them: on average half a slice below the threshold.
CHECK_SLACK_S = 0.05
# What jobStats reports as memory_page_size unless the workload says.
PAGE_SIZE_BYTES = 4096


class SimulationError(Exception):
    """An operation the simulated QEMU refuses (like a libvirtError)."""


@dataclasses.dataclass(frozen=True)
class WorkloadBase:
    """The guest and the link: what every simulated job needs."""

    memory_bytes: int
    bandwidth_bytes_s: float
    dirty_rate_bytes_s: float
    working_set_bytes: int

    def link_bytes_s(self, at_s: float) -> float:
        """The link's rate at ``at_s``."""
        return self.bandwidth_bytes_s

    def dirty_bytes_s(self, at_s: float) -> float:
        """The guest's write rate at ``at_s`` (before any throttle)."""
        return self.dirty_rate_bytes_s


@dataclasses.dataclass(frozen=True)
class Workload(WorkloadBase):
    """The guest and the link."""

    page_size_bytes: int = PAGE_SIZE_BYTES
    # Dirty rate × (1 + fraction × sin(2πt / period)): bursty guests.
    dirty_wave_fraction: float = 0.0
    dirty_wave_period_s: float = 60.0
    # (at_s, bandwidth_bytes_s): the link changes, e.g. to 0 for a stall.
    link_changes: tuple[tuple[float, float], ...] = ()
    # (at_s, dirty_rate_bytes_s): the guest changes pace.
    dirty_changes: tuple[tuple[float, float], ...] = ()

    def link_bytes_s(self, at_s: float) -> float:
        rate = self.bandwidth_bytes_s
        for when, value in self.link_changes:
            if at_s >= when:
                rate = value
        return rate

    def dirty_bytes_s(self, at_s: float) -> float:
        rate = self.dirty_rate_bytes_s
        for when, value in self.dirty_changes:
            if at_s >= when:
                rate = value
        if self.dirty_wave_fraction:
            rate *= 1 + self.dirty_wave_fraction * math.sin(
                2 * math.pi * at_s / self.dirty_wave_period_s)
        return max(rate, 0.0)


@dataclasses.dataclass(frozen=True)
class QemuSettings:
    """What the job was started with."""

    downtime_limit_ms: float = 300.0
    max_speed_bytes_s: float | None = None
    auto_converge: bool = False
    throttle_initial_pct: int = 20
    throttle_increment_pct: int = 10
    throttle_max_pct: int = 99
    throttle_trigger_pct: int = 50
    postcopy: bool = False


class JobParameters(Protocol):
    """The start parameters a simulated job reads (read-only)."""

    @property
    def downtime_limit_ms(self) -> float: ...
    @property
    def max_speed_bytes_s(self) -> float | None: ...
    @property
    def auto_converge(self) -> bool: ...
    @property
    def throttle_initial_pct(self) -> int: ...
    @property
    def throttle_increment_pct(self) -> int: ...
    @property
    def throttle_max_pct(self) -> int: ...
    @property
    def throttle_trigger_pct(self) -> int: ...
    @property
    def postcopy(self) -> bool: ...


W = TypeVar('W', bound=WorkloadBase)
S = TypeVar('S', bound=JobParameters)


class PrecopyJob(Generic[W, S]):
    """QEMU's pre-copy loop as every simulated job shares it.

    Syncs, rate periods, auto-converge, stop-and-copy, post-copy, the
    operations libvirt offers and the jobStats it answers.  How time
    advances is the subclass's (``_advance_once``), and so are the hooks
    a more faithful simulation refines (the bitmap scan, QEMU's own
    bandwidth figure, the writer under a throttle, ...).
    """

    # What jobStats reports as setup_time.
    SETUP_TIME_MS = 5

    def __init__(self, workload: W, settings: S) -> None:
        self.workload = workload
        self.settings = settings
        self.now_s = 0.0
        self.phase = 'precopy'
        self.downtime_limit_ms = settings.downtime_limit_ms
        self.max_speed_bytes_s = settings.max_speed_bytes_s
        self.remaining_bytes = float(workload.memory_bytes)
        self.processed_bytes = 0.0
        self.iteration = 1
        self.throttle_pct = 0
        self.max_throttle_pct = 0
        self.paused_at_s: float | None = None
        self.downtime_ms: float | None = None
        self.finished_at_s: float | None = None
        self.postcopy_started_s: float | None = None
        self.reported_dirty_bytes_s = 0.0
        self._dirtied = 0.0
        self._period_started_s = 0.0
        self._period_dirty = 0.0
        self._period_sent = 0.0
        self._high_periods = 0

    # -- rates ------------------------------------------------------------

    def bandwidth_bytes_s(self) -> float:
        link = self.workload.link_bytes_s(self.now_s)
        if self.max_speed_bytes_s is not None and self.phase == 'precopy':
            return min(link, self.max_speed_bytes_s)
        return link

    def guest_dirty_bytes_s(self) -> float:
        if self.paused_at_s is not None or self.phase != 'precopy':
            return 0.0
        rate = self.workload.dirty_bytes_s(self.now_s)
        return self._throttled(rate, 1 - self.throttle_pct / 100.0)

    def _throttled(self, rate: float, running: float) -> float:
        """The write rate when the vCPUs run ``running`` of the time."""
        return rate * running

    def qemu_bandwidth_bytes_s(self) -> float:
        """The bandwidth QEMU compares the remainder with."""
        return self.bandwidth_bytes_s()

    def threshold_bytes(self) -> float:
        return self.qemu_bandwidth_bytes_s() * self.downtime_limit_ms / (
            MS_PER_S)

    def sync_point_bytes(self) -> float:
        """QEMU syncs once the remainder is this low."""
        return max(self.threshold_bytes()
                   - self.bandwidth_bytes_s() * CHECK_SLACK_S, 0.0)

    @property
    def running(self) -> bool:
        return self.phase in ('precopy', 'postcopy')

    @property
    def outcome(self) -> str:
        """completed, aborted or running (not over yet)."""
        return 'running' if self.running else self.phase

    @property
    def ended_at_s(self) -> float:
        """When the job ended, or now if it has not."""
        return (self.finished_at_s if self.finished_at_s is not None
                else self.now_s)

    # -- time -------------------------------------------------------------

    def advance(self, duration_s: float) -> None:
        """Let the job run for ``duration_s`` simulated seconds."""
        end_s = self.now_s + duration_s
        while self.running and self.now_s < end_s - 1e-9:
            self._advance_once(end_s)
        if not self.running:
            self.now_s = max(self.now_s, end_s)

    def _advance_once(self, end_s: float) -> None:
        raise NotImplementedError

    def _send(self, size_bytes: float, dt_s: float,
              scale: float = 1.0) -> None:
        """Send ``size_bytes``; each clears ``scale`` of the remainder."""
        size_bytes = min(size_bytes, self.remaining_bytes / scale)
        self.remaining_bytes = max(0.0,
                                   self.remaining_bytes - size_bytes * scale)
        self.processed_bytes += size_bytes
        self._period_sent += size_bytes
        self._dirtied += self.guest_dirty_bytes_s() * dt_s
        self.now_s += dt_s

    def _dirty_set_bytes(self) -> float:
        return min(self._dirtied, float(self.workload.working_set_bytes))

    def _add_dirty(self, dirty_bytes: float) -> None:
        """The remainder takes the dirtied pages (each page once)."""
        cap = max(float(self.workload.working_set_bytes),
                  self.remaining_bytes)
        self.remaining_bytes = min(self.remaining_bytes + dirty_bytes, cap)

    def _sync(self) -> None:
        """A dirty-bitmap sync: the remainder grows by the dirtied pages."""
        dirty = self._dirty_set_bytes()
        self._add_dirty(dirty)
        self._scan_bitmap()
        self._period_dirty += dirty
        self.iteration += 1
        self._record_sync()
        if self.now_s - self._period_started_s >= RATE_PERIOD_S:
            self._close_rate_period()
        if self.remaining_bytes <= self.threshold_bytes():
            self._stop_and_copy()
        else:
            self._next_pass()

    def _scan_bitmap(self) -> None:
        """The sync's scan; here it takes no time."""
        self._dirtied = 0.0

    def _record_sync(self) -> None:
        """Note a sync that just happened."""

    def _next_pass(self) -> None:
        """A sync that did not stop the guest starts the next pass."""

    def _close_rate_period(self) -> None:
        period_s = self.now_s - self._period_started_s
        self.reported_dirty_bytes_s = self._period_dirty / period_s
        if self.settings.auto_converge and self._period_dirty > (
                self._period_sent * self.settings.throttle_trigger_pct
                / 100.0):
            self._high_periods += 1
            if self._high_periods >= 2:
                self._high_periods = 0
                self._throttle_up()
        self._period_started_s = self.now_s
        self._period_dirty = 0.0
        self._period_sent = 0.0

    def _throttle_up(self) -> None:
        if self.throttle_pct == 0:
            self.throttle_pct = self._initial_throttle_pct()
        else:
            self.throttle_pct = min(
                self.throttle_pct + self.settings.throttle_increment_pct,
                self.settings.throttle_max_pct)
        self.max_throttle_pct = max(self.max_throttle_pct, self.throttle_pct)

    def _initial_throttle_pct(self) -> int:
        return self.settings.throttle_initial_pct

    def _switchover_bytes_s(self) -> float:
        """The rate the stopped guest's remainder is copied at."""
        return self.bandwidth_bytes_s()

    def _stop_and_copy(self) -> None:
        bandwidth = self._switchover_bytes_s()
        copy_ms = (self.remaining_bytes / bandwidth * MS_PER_S
                   if bandwidth > 0 else 0.0)
        self.processed_bytes += self.remaining_bytes
        self.remaining_bytes = 0.0
        paused_ms = (0.0 if self.paused_at_s is None
                     else (self.now_s - self.paused_at_s) * MS_PER_S)
        self.now_s += copy_ms / MS_PER_S
        self._finish(paused_ms + copy_ms + SWITCHOVER_OVERHEAD_MS)

    def _finish(self, downtime_ms: float) -> None:
        self.phase = 'completed'
        if self.downtime_ms is None:
            self.downtime_ms = downtime_ms
        self.finished_at_s = self.now_s

    # -- the operations libvirt offers -----------------------------------

    def set_max_downtime_ms(self, downtime_ms: float) -> None:
        self._require_running()
        self.downtime_limit_ms = downtime_ms

    def set_max_speed_mib_s(self, speed_mib_s: float,
                            postcopy: bool = False) -> None:
        self._require_running()
        if not postcopy:
            self.max_speed_bytes_s = speed_mib_s * MIB

    def start_postcopy(self) -> None:
        self._require_running()
        if not self.settings.postcopy:
            raise SimulationError('post-copy was not enabled for this job')
        if self.phase == 'postcopy':
            raise SimulationError('already in post-copy')
        self._add_dirty(self._dirty_set_bytes())
        self._dirtied = 0.0
        self.phase = 'postcopy'
        self.postcopy_started_s = self.now_s

    def suspend(self) -> None:
        self._require_running()
        if self.paused_at_s is None:
            self.paused_at_s = self.now_s

    def abort(self) -> None:
        if self.phase == 'postcopy':
            raise SimulationError('cannot abort a migration in post-copy')
        self._require_running()
        self.phase = 'aborted'
        self.finished_at_s = self.now_s

    def _require_running(self) -> None:
        if not self.running:
            raise SimulationError('no migration job is running')

    # -- what libvirt would report ---------------------------------------

    def _page_size_bytes(self) -> int:
        return PAGE_SIZE_BYTES

    def _postcopy_requests(self) -> int:
        raise NotImplementedError

    def job_stats(self) -> dict[str, int | float]:
        """A ``virDomain.jobStats()`` dict for the running job."""
        if not self.running:
            return {samples.KEY_TYPE: int(samples.JobType.NONE)}
        bandwidth = self.bandwidth_bytes_s()
        total = self.workload.memory_bytes
        page_size = self._page_size_bytes()
        stats: dict[str, int | float] = {
            samples.KEY_TYPE: int(samples.JobType.UNBOUNDED),
            samples.KEY_TIME_ELAPSED_MS: int(self.now_s * MS_PER_S),
            samples.KEY_DATA_TOTAL: total,
            samples.KEY_DATA_PROCESSED: int(self.processed_bytes),
            samples.KEY_DATA_REMAINING: int(self.remaining_bytes),
            samples.KEY_MEMORY_TOTAL: total,
            samples.KEY_MEMORY_PROCESSED: int(self.processed_bytes),
            samples.KEY_MEMORY_REMAINING: int(self.remaining_bytes),
            samples.KEY_MEMORY_BPS: int(bandwidth),
            samples.KEY_MEMORY_DIRTY_RATE: int(
                self.reported_dirty_bytes_s / page_size),
            samples.KEY_MEMORY_PAGE_SIZE: page_size,
            samples.KEY_MEMORY_ITERATION: self.iteration,
            samples.KEY_SETUP_TIME_MS: self.SETUP_TIME_MS,
        }
        if bandwidth > 0:
            stats[samples.KEY_DOWNTIME_MS] = int(
                self.remaining_bytes / bandwidth * MS_PER_S)
        if self.settings.auto_converge:
            stats[samples.KEY_AUTO_CONVERGE_THROTTLE] = self.throttle_pct
        if self.phase == 'postcopy':
            stats[samples.KEY_MEMORY_POSTCOPY_REQS] = (
                self._postcopy_requests())
        return stats


class PrecopySimulation(PrecopyJob[Workload, QemuSettings]):
    """One migration job, advanced by the caller's simulated time."""

    def __init__(self, workload: Workload,
                 settings: QemuSettings = QemuSettings()) -> None:
        super().__init__(workload, settings)
        self.postcopy_requests = 0
        # (at_s, new iteration, remaining right after the sync): the truth
        # the estimator's working set is checked against.
        self.syncs: list[tuple[float, int, float]] = []

    @property
    def reported_dirty_pages_s(self) -> float:
        return self.reported_dirty_bytes_s / self.workload.page_size_bytes

    def _advance_once(self, end_s: float) -> None:
        dt_s = min(MAX_STEP_S, end_s - self.now_s)
        bandwidth = self.bandwidth_bytes_s()
        if self.phase == 'postcopy':
            self._send(min(bandwidth * dt_s, self.remaining_bytes), dt_s)
            self.postcopy_requests += 1
            if self.remaining_bytes <= 0:
                self._finish(SWITCHOVER_OVERHEAD_MS)
            return
        sync_point = self.sync_point_bytes()
        if bandwidth > 0 and self.remaining_bytes - bandwidth * dt_s <= (
                sync_point):
            to_sync_s = max(0.0, (self.remaining_bytes - sync_point)
                            / bandwidth)
            self._send(bandwidth * to_sync_s, to_sync_s)
            self._sync()
            return
        self._send(bandwidth * dt_s, dt_s)

    def _record_sync(self) -> None:
        self.syncs.append((self.now_s, self.iteration, self.remaining_bytes))

    def _page_size_bytes(self) -> int:
        return self.workload.page_size_bytes

    def _postcopy_requests(self) -> int:
        return self.postcopy_requests

    def completed_stats(self) -> dict[str, int | float]:
        """What ``jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED)`` would say."""
        if self.phase != 'completed':
            return {samples.KEY_TYPE: int(samples.JobType.NONE)}
        assert self.finished_at_s is not None
        stats: dict[str, int | float] = {
            samples.KEY_TYPE: int(samples.JobType.COMPLETED),
            samples.KEY_TIME_ELAPSED_MS: int(self.finished_at_s * MS_PER_S),
            samples.KEY_MEMORY_TOTAL: self.workload.memory_bytes,
            samples.KEY_MEMORY_PROCESSED: int(self.processed_bytes),
            samples.KEY_MEMORY_REMAINING: 0,
            samples.KEY_MEMORY_ITERATION: self.iteration,
        }
        if self.downtime_ms is not None:
            stats[samples.KEY_DOWNTIME_MS] = int(self.downtime_ms)
        return stats


# ---------------------------------------------------------------------------
# Closed loop: a decision maker driving the simulation.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SimulationRun:
    """How a simulated migration went under a decision maker."""

    outcome: str
    total_s: float
    downtime_ms: float | None
    iterations: int
    max_throttle_pct: int
    decisions: tuple[ctl.Decision, ...]
    failed_decisions: tuple[ctl.Decision, ...]
    samples: tuple[tuple[float, samples.JobSample], ...]

    def actions(self, *, with_notes: bool = False) -> list[ctl.Action]:
        return [d.action for d in self.decisions
                if with_notes or d.has_effect]

    def rungs(self) -> list[str]:
        """Rungs in the order they first appear in the decisions."""
        seen: list[str] = []
        for decision in self.decisions:
            if decision.rung and decision.rung not in seen:
                seen.append(decision.rung)
        return seen


def apply_decision(sim: PrecopyJob[Any, Any],
                   decision: ctl.Decision) -> None:
    """Do to the simulation what the monitor does to a libvirt domain."""
    action = decision.action
    if action is ctl.Action.SET_DOWNTIME:
        assert decision.downtime_ms is not None
        sim.set_max_downtime_ms(decision.downtime_ms)
    elif action is ctl.Action.SET_SPEED:
        assert decision.speed_mib_s is not None
        sim.set_max_speed_mib_s(decision.speed_mib_s,
                                postcopy=decision.postcopy_speed)
    elif action is ctl.Action.START_POSTCOPY:
        sim.start_postcopy()
    elif action is ctl.Action.PAUSE:
        sim.suspend()
    elif action is ctl.Action.ABORT:
        sim.abort()


def apply_and_acknowledge(sim: PrecopyJob[Any, Any],
                          decider: ctl.DecisionMaker,
                          decision: ctl.Decision) -> bool:
    """Apply ``decision`` and tell ``decider`` whether it took."""
    try:
        apply_decision(sim, decision)
    except SimulationError:
        decider.acknowledge(decision, False, sim.now_s)
        return False
    decider.acknowledge(decision, True, sim.now_s)
    return True


def simulate(sim: PrecopySimulation, decider: ctl.DecisionMaker,
             poll_interval_s: float, max_s: float,
             on_poll: Callable[[PrecopySimulation], None] | None = None
             ) -> SimulationRun:
    """Poll, decide and apply until the job ends or ``max_s`` passes."""
    decisions: list[ctl.Decision] = []
    failed: list[ctl.Decision] = []
    seen: list[tuple[float, samples.JobSample]] = []

    def apply_all(batch: tuple[ctl.Decision, ...]) -> None:
        for decision in batch:
            decisions.append(decision)
            if not apply_and_acknowledge(sim, decider, decision):
                failed.append(decision)

    apply_all(decider.start(sim.now_s))
    while sim.running and sim.now_s < max_s:
        sample = samples.sample_from_job_stats(sim.job_stats())
        seen.append((sim.now_s, sample))
        apply_all(decider.observe(sample, sim.now_s))
        if on_poll is not None:
            on_poll(sim)
        sim.advance(poll_interval_s)
    return SimulationRun(
        outcome=sim.outcome, total_s=sim.ended_at_s,
        downtime_ms=sim.downtime_ms,
        iterations=sim.iteration, max_throttle_pct=sim.max_throttle_pct,
        decisions=tuple(decisions), failed_decisions=tuple(failed),
        samples=tuple(seen))
