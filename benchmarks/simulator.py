"""A pre-copy migration simulator that follows QEMU's RAM migration loop.

What it reproduces (QEMU 10, ``migration/migration.c`` and
``migration/ram.c``), because each of these shapes how long a migration
takes and how many iterations it needs:

* setup syncs the dirty bitmap once (``memory_iteration`` starts at 1) with
  every page dirty; the bulk pass sends only non-zero pages at link speed,
  zero pages go as a flag and cost nothing;
* while the unsent remainder is above ``bandwidth × downtime-limit`` QEMU
  keeps sending; once it falls below, it syncs the bitmap (iteration + 1)
  and adds what the guest dirtied since the last sync, counted once per
  page (at most the writable working set).  If the new remainder still
  fits, it stops the guest and copies it: the downtime;
* the bandwidth QEMU compares with is its own measurement, which the sync
  itself (no data moves while the bitmap is scanned) drags down when passes
  are short: the reason a tail of short passes adds iterations;
* auto-converge: at a sync at least a second after the last rate period,
  if the bytes dirtied in the period exceed ``throttle-trigger-threshold``
  (50 %) of the bytes sent, a counter goes up; the second time the vCPUs
  are throttled to ``cpu-throttle-initial`` and then raised by
  ``cpu-throttle-increment`` up to 99 %.  While throttling, QEMU 9.2 and
  later also sync every 5 s (``CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS``) so
  the throttle follows the guest;
* post-copy: the switch syncs once more, stops the source briefly and the
  rest is pulled at link speed while the guest runs on the destination;
* pause: the guest stops dirtying, the copy ends at the next sync and the
  downtime runs from the pause;
* a migration started without ``VIR_MIGRATE_LIVE`` is a pause from t = 0.

What belongs to the guest rather than to the link (``Workload``): its write
rate (a CPU-bound writer slows in proportion to the throttle, a paced one
only once the throttle cuts into its pace), which pages it writes
(sequential sweeps dirty each byte once; random writes over the working set
collect unique pages like coupons, skewed ones mostly re-dirty a hot tenth),
rate steps and a working set that grows.  What belongs to the host: one
migration stream moves at most ``stream_limit_bytes_s`` (a QEMU migration
thread is CPU-bound), so only multifd channels fill a fast link.

What it also accounts, for the guest-cost metrics: vCPU time the throttle
took from a guest that needed it, after post-copy the time the guest
waited on page faults for its remote working set (``postcopy_stall_s``),
and the longest the guest could not run at all (``longest_pause_s``: the
downtime, a post-copy stall, or one stop of the throttle).  The guest's
costs are priced by the project's own guest-cost module
(``nova_livemig_ext.convergence.guest``), the one the controller and the
monitor's reports use.

Time advances from event to event (pass ends, syncs, bursts, polls), not in
fixed steps, so a 256 GiB guest costs no more to simulate than a 1 GiB one.
The methods a policy uses are the libvirt ones the monitor calls.
"""

from __future__ import annotations

import dataclasses
import math

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence import model
from nova_livemig_ext.convergence import samples
# Shared with the model: QEMU syncs CHECK_SLACK_S of sending below the
# threshold, and every switchover costs SWITCHOVER_OVERHEAD_MS.
from nova_livemig_ext.convergence.model import (
    CHECK_SLACK_S, GIB, MS_PER_S, SWITCHOVER_OVERHEAD_MS)

# For the policies and the tests, which size workloads in MiB.
MIB = model.MIB

# QEMU measures its bandwidth over windows of this length.
RATE_WINDOW_S = 0.1
# Step through passes shorter than a rate window in steps this long.
SHORT_PASS_STEP_S = 0.01
# While the vCPUs are throttled QEMU syncs at least this often.
THROTTLE_SYNC_PERIOD_S = 5.0
# Scanning the dirty bitmap: a fixed part plus a part per GiB of guest
# memory.  Under KVM the kernel's dirty log makes it a few milliseconds per
# GiB; the lab's TCG guests sync far slower (benchmarks/calibration.py).
SYNC_BASE_S = 0.005
SYNC_PER_GIB_S = 0.001
MAX_THROTTLE_PCT = 99
# Steady state: this many identical passes in a row may be skipped over.
STEADY_PASSES = 3
# Share of the line rate that carries pages (framing and TCP overhead).
LINK_EFFICIENCY = 0.92
# Skewed page popularity: this share of the working set takes
# HOT_WRITE_SHARE of the writes.
HOT_SET_SHARE = 0.1
HOT_WRITE_SHARE = 0.9
POPULARITIES = ('sequential', 'uniform', 'skewed')
# After post-copy starts, a guest touching a page still on the source waits
# for one round trip and the page (guest.FAULT_LATENCY_S, an assumption).
FAULT_LATENCY_S = guest.FAULT_LATENCY_S
# The post-copy window is walked in at most this many pieces to count the
# pages the guest touches while they are still remote.
POSTCOPY_PIECES = 64


# An operation the simulated QEMU refuses (like a libvirtError).
SimulationError = model.SimulationError
# Do to the simulated job what the monitor does to a domain.
apply_decision = model.apply_decision


@dataclasses.dataclass(frozen=True)
class Workload(model.WorkloadBase):
    """The guest and the link."""

    # Share of guest memory that is not zero pages (sent in the bulk pass).
    touched_fraction: float = 1.0
    # Bursty writer: the same mean rate, written in bursts of
    # ``burst_duty`` of every ``burst_period_s`` (0 = steady).
    burst_period_s: float = 0.0
    burst_duty: float = 0.25
    # How fast the guest could write with a whole CPU: a writer paced
    # below it keeps its pace under a light throttle (the lab's guest
    # program does), a CPU-bound one (None) slows down in proportion.
    write_capacity_bytes_s: float | None = None
    # Dirty-bitmap sync time, fixed part (see SYNC_BASE_S).
    sync_base_s: float = SYNC_BASE_S
    # Which pages the writes land on (POPULARITIES): 'sequential' sweeps
    # the working set (each byte written is a new dirty byte until the set
    # is covered), 'uniform' and 'skewed' pick pages at random.
    popularity: str = 'sequential'
    # (at_s, factor): from at_s on the guest writes factor x the base rate.
    rate_steps: tuple[tuple[float, float], ...] = ()
    # The working set grows by this much per second (up to the memory, or
    # to ``ws_max_bytes`` when that is set).
    ws_growth_bytes_s: float = 0.0
    ws_max_bytes: float | None = None
    # One migration stream (channel) moves at most this much (None: the
    # link is the only limit).
    stream_limit_bytes_s: float | None = None
    # Dirty-bitmap sync time per GiB of guest memory (see SYNC_PER_GIB_S).
    sync_per_gib_s: float = SYNC_PER_GIB_S
    # An application beside the writer uses whatever CPU the writer leaves
    # (the lab's CPU-bound worker): a throttle then costs the guest's work
    # in full, however little CPU the writer itself needs.
    cpu_app: bool = False
    # (at_s, share): from at_s on, traffic the host does not own takes this
    # share of the link (less than 1: a link shared, not a dead one).
    foreign_traffic: tuple[tuple[float, float], ...] = ()
    name: str = ''

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0 or self.bandwidth_bytes_s <= 0:
            raise ValueError('memory and bandwidth must be positive')
        if self.dirty_rate_bytes_s < 0 or self.working_set_bytes < 0:
            raise ValueError('dirty rate and working set must not be '
                             'negative')
        if not 0 < self.touched_fraction <= 1:
            raise ValueError('touched_fraction must be in (0, 1]')
        if self.burst_period_s < 0 or not 0 < self.burst_duty <= 1:
            raise ValueError('bad burst shape')
        if self.popularity not in POPULARITIES:
            raise ValueError(f'popularity must be one of {POPULARITIES}')
        if self.ws_growth_bytes_s < 0 or any(
                f < 0 for _, f in self.rate_steps):
            raise ValueError('growth and rate steps must not be negative')
        if self.stream_limit_bytes_s is not None and (
                self.stream_limit_bytes_s <= 0):
            raise ValueError('stream_limit_bytes_s must be positive')
        if any(not 0 <= share < 1 for _, share in self.foreign_traffic):
            raise ValueError('foreign traffic takes a share in [0, 1)')
        if self.ws_max_bytes is not None and (
                self.ws_max_bytes < self.working_set_bytes):
            raise ValueError('ws_max_bytes must not be below the working '
                             'set')

    @property
    def bursty(self) -> bool:
        return self.burst_period_s > 0 and self.burst_duty < 1

    @property
    def time_varying(self) -> bool:
        """Does anything about the guest change with time?"""
        return (self.bursty or bool(self.rate_steps)
                or self.ws_growth_bytes_s > 0 or bool(self.foreign_traffic))

    @property
    def nonzero_bytes(self) -> float:
        """What any copy must send: the pages that are not zero."""
        return self.memory_bytes * self.touched_fraction

    def link_bytes_s(self, at_s: float) -> float:
        """What the link carries for this job at ``at_s``."""
        taken = 0.0
        for when, share in self.foreign_traffic:
            if at_s >= when:
                taken = share
        return self.bandwidth_bytes_s * (1.0 - taken)

    @property
    def line_rate_bytes_s(self) -> float:
        """The NIC's nominal rate (what oVirt's engine divides)."""
        return self.bandwidth_bytes_s / LINK_EFFICIENCY

    def working_set_at(self, at_s: float) -> float:
        """The writable working set at ``at_s``."""
        top = float(self.memory_bytes)
        if self.ws_max_bytes is not None:
            top = min(top, self.ws_max_bytes)
        return min(top, self.working_set_bytes
                   + self.ws_growth_bytes_s * max(at_s, 0.0))

    def rate_factor(self, at_s: float) -> float:
        factor = 1.0
        for when, value in self.rate_steps:
            if at_s >= when:
                factor = value
        return factor

    def dirty_bytes_s(self, at_s: float) -> float:
        """The guest's write rate at ``at_s`` (before any throttle)."""
        base = self.dirty_rate_bytes_s * self.rate_factor(at_s)
        if not self.bursty:
            return base
        phase = math.fmod(at_s, self.burst_period_s) / self.burst_period_s
        if phase < self.burst_duty:
            return base / self.burst_duty
        return 0.0

    def next_rate_change_s(self, at_s: float) -> float:
        """When the write rate next changes (inf for a steady writer)."""
        steps = [when for when, _ in (*self.rate_steps,
                                      *self.foreign_traffic)
                 if when > at_s + 1e-9]
        step = min(steps) if steps else math.inf
        if not self.bursty:
            return step
        period = self.burst_period_s
        start = math.floor(at_s / period) * period
        for edge in (start + self.burst_duty * period, start + period,
                     start + period + self.burst_duty * period):
            if edge > at_s + 1e-9:
                return min(edge, step)
        return min(start + 2 * period, step)

    def unique_dirty_bytes(self, written_bytes: float,
                           working_set_bytes: float) -> float:
        """Distinct bytes dirtied by ``written_bytes`` of writes."""
        ws = working_set_bytes
        if ws <= 0 or written_bytes <= 0:
            return 0.0
        if self.popularity == 'sequential':
            return min(written_bytes, ws)
        if self.popularity == 'uniform':
            return ws * -math.expm1(-written_bytes / ws)
        hot = ws * HOT_SET_SHARE
        cold = ws - hot
        return (hot * -math.expm1(-written_bytes * HOT_WRITE_SHARE / hot)
                + cold * -math.expm1(-written_bytes * (1 - HOT_WRITE_SHARE)
                                     / cold))


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What the job is started with (flags and migrateToURI3 params)."""

    live: bool = True
    downtime_limit_ms: float = 300.0
    max_speed_bytes_s: float | None = None
    auto_converge: bool = False
    throttle_initial_pct: int = 20
    throttle_increment_pct: int = 10
    throttle_trigger_pct: int = 50
    postcopy: bool = False
    # Migration streams: multifd channels (VIR_MIGRATE_PARALLEL).
    channels: int = 1

    @property
    def throttle_max_pct(self) -> int:
        return MAX_THROTTLE_PCT


class Migration(model.PrecopyJob[Workload, JobSettings]):
    """One simulated migration job, answering like libvirt's jobStats."""

    SETUP_TIME_MS = 1

    def __init__(self, workload: Workload, settings: JobSettings) -> None:
        super().__init__(workload, settings)
        self.bulk = True
        self.throttle_s = 0.0
        if not settings.live:
            self.paused_at_s = 0.0
        self.postcopy_s = 0.0
        # vCPU seconds the throttle took from a guest that needed them.
        self.throttle_lost_s = 0.0
        # After post-copy: what of the working set was still on the source,
        # the working set then, what was still to send and how fast pages
        # came.
        self._postcopy_remote_ws = 0.0
        self._postcopy_ws = 0.0
        self._postcopy_remaining = 0.0
        self._postcopy_bytes_s = 0.0
        # Set by a host drain: this job's share of the host's link.
        self.link_share_bytes_s: float | None = None
        self.sync_s = workload.sync_base_s + workload.sync_per_gib_s * (
            workload.memory_bytes / GIB)
        self._last_sync_s = 0.0
        self._sending_s = 0.0
        self._steps = 0
        # (at_s, remaining after the sync, processed) of the last syncs,
        # to recognise a steady state.
        self._syncs: list[tuple[float, float, float]] = []

    # -- rates --------------------------------------------------------------

    def _link_bytes_s(self, streams: int) -> float:
        if self.link_share_bytes_s is not None:
            link = self.link_share_bytes_s
        else:
            link = self.workload.link_bytes_s(self.now_s)
        limit = self.workload.stream_limit_bytes_s
        if limit is not None:
            link = min(link, streams * limit)
        return link

    def bandwidth_bytes_s(self) -> float:
        if self.phase == 'precopy':
            link = self._link_bytes_s(self.settings.channels)
            if self.max_speed_bytes_s is not None:
                return min(link, self.max_speed_bytes_s)
            return link
        # Post-copy page requests and the background push share the
        # main channel.
        return self._link_bytes_s(1)

    def rate_cap_bytes_s(self) -> float:
        """What this job could send on an unlimited link."""
        streams = self.settings.channels if self.phase == 'precopy' else 1
        cap = math.inf
        if self.workload.stream_limit_bytes_s is not None:
            cap = streams * self.workload.stream_limit_bytes_s
        if self.phase == 'precopy' and self.max_speed_bytes_s is not None:
            cap = min(cap, self.max_speed_bytes_s)
        return cap

    def cpu_idle_share(self) -> float:
        """Share of its CPU the guest does not need (0 when CPU-bound)."""
        capacity = self.workload.write_capacity_bytes_s
        if self.workload.cpu_app or capacity is None or capacity <= 0:
            return 0.0
        need = self.workload.dirty_bytes_s(self.now_s) / capacity
        return max(0.0, 1.0 - min(1.0, need))

    def _throttled(self, rate: float, running: float) -> float:
        capacity = self.workload.write_capacity_bytes_s
        if capacity is None:
            return rate * running
        return min(rate, capacity * running)

    def qemu_bandwidth_bytes_s(self) -> float:
        """QEMU's own bandwidth figure, measured over 100 ms windows.

        A window that holds a sync moved no data while the bitmap was
        scanned, so right after a sync the figure is low; a window of pure
        sending gives the link rate.
        """
        sending = self._sending_s
        if sending >= RATE_WINDOW_S:
            return self.bandwidth_bytes_s()
        if sending <= 0:
            return 0.0
        return self.bandwidth_bytes_s() * sending / (sending + self.sync_s)

    # -- time ---------------------------------------------------------------

    def advance(self, duration_s: float) -> None:
        """Let the job run for ``duration_s`` simulated seconds."""
        end_s = self.now_s + duration_s
        self._steps = 0
        super().advance(duration_s)
        if self.running:
            self.now_s = end_s

    def _advance_once(self, end_s: float) -> None:
        self._next_event(end_s)
        self._steps += 1
        if self._steps > 1_000_000:
            raise RuntimeError('simulation does not advance')

    def _next_event(self, end_s: float) -> None:
        bandwidth = self.bandwidth_bytes_s()
        if self.phase == 'postcopy':
            dt = min(end_s - self.now_s, self.remaining_bytes / bandwidth)
            self._send(bandwidth * dt, dt)
            self.postcopy_s += dt
            if self.remaining_bytes <= 1:
                self._finish(SWITCHOVER_OVERHEAD_MS)
            return
        if self._skip_steady_passes(end_s):
            return
        # The bulk pass also drops zero pages, at no cost on the wire.
        scale = 1.0 / self.workload.touched_fraction if self.bulk else 1.0
        drain = bandwidth * scale
        to_sync = self._time_to_sync_s(bandwidth, drain)
        next_event = min(end_s,
                         self.workload.next_rate_change_s(self.now_s))
        if self.throttle_pct > 0:
            next_event = min(next_event,
                             self._last_sync_s + THROTTLE_SYNC_PERIOD_S)
        dt = next_event - self.now_s
        if to_sync <= dt:
            self._send(bandwidth * to_sync, to_sync, scale)
            if self.sync_point_bytes() >= self.remaining_bytes - 1:
                self._sync()
            return
        self._send(bandwidth * dt, dt, scale)
        if (self.throttle_pct > 0 and self.now_s >= self._last_sync_s
                + THROTTLE_SYNC_PERIOD_S - 1e-9):
            self._sync()

    def _time_to_sync_s(self, bandwidth: float, drain: float) -> float:
        """Sending time until the remainder falls to QEMU's sync point.

        Once a pass has sent for a whole rate window QEMU's figure is the
        link rate; in a shorter pass it rises as the pass goes on, so the
        pass is walked in small steps.
        """
        full_point = max(bandwidth * (self.downtime_limit_ms / MS_PER_S
                                      - CHECK_SLACK_S), 0.0)
        to_full = max(0.0, (self.remaining_bytes - full_point) / drain)
        if self._sending_s + to_full >= RATE_WINDOW_S:
            return to_full
        to_now = max(0.0, (self.remaining_bytes - self.sync_point_bytes())
                     / drain)
        return min(to_now, SHORT_PASS_STEP_S) if to_now > 0 else 0.0

    def _send(self, size_bytes: float, dt_s: float,
              scale: float = 1.0) -> None:
        super()._send(size_bytes, dt_s, scale)
        self._sending_s += dt_s
        if self.phase == 'precopy' and self.paused_at_s is None:
            self._count_throttle(dt_s)

    def _count_throttle(self, dt_s: float) -> None:
        share = self.throttle_pct / 100.0
        self.throttle_s += share * dt_s
        self.throttle_lost_s += max(0.0, share - self.cpu_idle_share()) * dt_s

    def _dirty_set_bytes(self) -> float:
        return self.workload.unique_dirty_bytes(
            self._dirtied, self.workload.working_set_at(self.now_s))

    def _add_dirty(self, dirty_bytes: float) -> None:
        cap = max(self.workload.working_set_at(self.now_s),
                  self.remaining_bytes)
        self.remaining_bytes = min(self.remaining_bytes + dirty_bytes, cap)

    def _scan_bitmap(self) -> None:
        # The scan takes time; the guest keeps writing meanwhile.
        self._dirtied = self.guest_dirty_bytes_s() * self.sync_s
        self.now_s += self.sync_s

    def _record_sync(self) -> None:
        self.bulk = False
        self._last_sync_s = self.now_s
        self._syncs.append((self.now_s, self.remaining_bytes,
                            self.processed_bytes))
        del self._syncs[:-STEADY_PASSES - 1]

    def _next_pass(self) -> None:
        self._sending_s = 0.0

    def _initial_throttle_pct(self) -> int:
        return min(self.settings.throttle_initial_pct, MAX_THROTTLE_PCT)

    def _skip_steady_passes(self, end_s: float) -> bool:
        """Jump over passes that repeat exactly (nothing can change them).

        Only for a steady writer whose throttle can no longer move and
        whose last passes left the same remainder at the same interval.
        """
        if (self.workload.time_varying or self.paused_at_s is not None
                or self.link_share_bytes_s is not None
                or len(self._syncs) <= STEADY_PASSES):
            return False
        if self.settings.auto_converge and (
                self.throttle_pct < MAX_THROTTLE_PCT):
            return False
        times = [t for t, _, _ in self._syncs]
        rems = [r for _, r, _ in self._syncs]
        gaps = [b - a for a, b in zip(times, times[1:])]
        if max(gaps) - min(gaps) > 1e-6 * max(gaps) or (
                max(rems) - min(rems) > 1e-6 * max(rems)):
            return False
        if self.now_s - times[-1] > 1e-9:
            return False
        pass_s = gaps[-1]
        passes = int((end_s - self.now_s) / pass_s) - 1
        if passes < 1:
            return False
        sent = self._syncs[-1][2] - self._syncs[-2][2]
        self.now_s += passes * pass_s
        self.iteration += passes
        self.processed_bytes += passes * sent
        if self.paused_at_s is None:
            self._count_throttle(passes * pass_s)
        self._last_sync_s = self.now_s
        self._period_started_s = self.now_s
        self._syncs = [(t + passes * pass_s, r, p + passes * sent)
                       for t, r, p in self._syncs]
        return True

    def _switchover_bytes_s(self) -> float:
        # The stopped guest's rest goes at full speed over every channel.
        return self._link_bytes_s(self.settings.channels)

    def _stop_and_copy(self) -> None:
        # The completion syncs once more.
        self.iteration += 1
        super()._stop_and_copy()

    # -- what libvirt lets a policy do ------------------------------------

    def start_postcopy(self) -> None:
        super().start_postcopy()
        self._postcopy_ws = self.workload.working_set_at(self.now_s)
        self._postcopy_remote_ws = min(self.remaining_bytes,
                                       self._postcopy_ws)
        self._postcopy_remaining = self.remaining_bytes
        self._postcopy_bytes_s = self.bandwidth_bytes_s()
        self.iteration += 1
        # The source stops, sends the device state and the discard bitmap.
        self.downtime_ms = SWITCHOVER_OVERHEAD_MS + self.sync_s * MS_PER_S
        self.now_s += self.sync_s
        if self.remaining_bytes <= 1:
            self._finish(self.downtime_ms)

    # -- what the guest paid ------------------------------------------------

    def _postcopy_window_s(self) -> float:
        """How long post-copy lasts (so far, and what is left to pull)."""
        left = 0.0
        if self.phase == 'postcopy':
            bandwidth = self.bandwidth_bytes_s()
            left = self.remaining_bytes / bandwidth if bandwidth > 0 else 0.0
        return self.postcopy_s + left

    def _written_bytes(self, start_s: float, end_s: float) -> float:
        """What the guest (unthrottled) writes between two instants."""
        written, at = 0.0, start_s
        while at < end_s - 1e-9:
            step = min(end_s, self.workload.next_rate_change_s(at))
            written += self.workload.dirty_bytes_s(at) * (step - at)
            at = step
        return written

    def _postcopy_touched_remote_bytes(self) -> float:
        """Distinct pages of the remote working set the guest touches
        during post-copy before they arrive.

        The guest's writes over the whole post-copy phase (bursts and rate
        steps included, not the rate at the switch), counted once per page
        (its popularity), on the share of its working set still remote:
        that share at the switch, shrinking as the background copy brings
        the rest at the post-copy rate.
        """
        ws = self._postcopy_ws
        start = self.postcopy_started_s
        window = self._postcopy_window_s()
        if ws <= 0 or start is None or window <= 0:
            return 0.0
        share = self._postcopy_remote_ws / ws
        # Cut the window at every rate change and into at most
        # POSTCOPY_PIECES pieces; each piece's new pages are weighted by
        # the share still remote at its midpoint.
        edges = {start, start + window}
        at = start
        while True:
            at = self.workload.next_rate_change_s(at)
            if at >= start + window:
                break
            edges.add(at)
        edges.update(start + window * i / POSTCOPY_PIECES
                     for i in range(1, POSTCOPY_PIECES))
        points = sorted(edges)
        touched, written, seen = 0.0, 0.0, 0.0
        for a, b in zip(points, points[1:]):
            written += self._written_bytes(a, b)
            unique = self.workload.unique_dirty_bytes(written, ws)
            still_remote = max(0.0, 1.0 - ((a + b) / 2 - start) / window)
            touched += (unique - seen) * share * still_remote
            seen = unique
        return touched

    def _postcopy_outpaces_link(self) -> bool:
        """Does the guest, over the time its remote working set takes to
        arrive, write at least as fast as pages come?  Then it waits for
        them in one long pause."""
        start = self.postcopy_started_s
        if start is None or self._postcopy_bytes_s <= 0:
            return False
        pull_s = self._postcopy_remote_ws / self._postcopy_bytes_s
        if pull_s <= 0:
            return False
        mean = self._written_bytes(start, start + pull_s) / pull_s
        return mean >= self._postcopy_bytes_s

    @property
    def postcopy_stall_s(self) -> float:
        """Time the guest waited on faults for its remote working set
        (:func:`guest.postcopy_fault_stall_s`)."""
        if self.postcopy_started_s is None or self._postcopy_bytes_s <= 0:
            return 0.0
        return guest.postcopy_fault_stall_s(
            self._postcopy_remote_ws, self._postcopy_touched_remote_bytes(),
            self._postcopy_bytes_s, page_size_bytes=model.PAGE_SIZE_BYTES)

    @property
    def longest_pause_s(self) -> float:
        """The longest time the guest made no progress at all
        (:func:`guest.longest_stop_s`): the downtime, a post-copy stall,
        or one stop of the throttle at the highest throttle it ran under
        (0.99 s at 99 %)."""
        stall = self.postcopy_stall_s
        return guest.longest_stop_s(
            (self.downtime_ms or 0.0) / MS_PER_S, postcopy_stall_s=stall,
            stalled_in_one=stall > 0 and self._postcopy_outpaces_link(),
            throttle_pct=self.max_throttle_pct)

    # -- what libvirt reports -----------------------------------------------

    def _postcopy_requests(self) -> int:
        return int(self.postcopy_s * 10)


# ---------------------------------------------------------------------------
# A policy driving the simulation, as the monitor drives a libvirt domain.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunResult:
    """How one simulated migration ended under one policy."""

    # completed, aborted, or unfinished (still running at the horizon)
    outcome: str
    total_s: float
    downtime_ms: float | None
    iterations: int
    data_sent_bytes: float
    throttle_s: float
    max_throttle_pct: int
    postcopy_s: float
    actions: tuple[str, ...]
    throttle_lost_s: float = 0.0
    postcopy_stall_s: float = 0.0
    longest_pause_s: float = 0.0

    @property
    def completed(self) -> bool:
        return self.outcome == 'completed'

    @property
    def guest_work_lost_s(self) -> float:
        """Downtime, post-copy fault stall and throttled vCPU time."""
        return ((self.downtime_ms or 0.0) / MS_PER_S + self.postcopy_stall_s
                + self.throttle_lost_s)


def drive(migration: Migration, decider: ctl.DecisionMaker,
          poll_interval_s: float, max_s: float) -> RunResult:
    """Poll, decide and apply until the job ends or ``max_s`` passes."""
    actions: list[str] = []

    def apply_all(batch: tuple[ctl.Decision, ...]) -> None:
        for decision in batch:
            if not decision.has_effect:
                continue
            if model.apply_and_acknowledge(migration, decider, decision):
                actions.append(
                    f'{migration.now_s:.1f}s {decision.action.value}'
                    + (f' {decision.downtime_ms}ms'
                       if decision.downtime_ms else ''))

    next_poll = getattr(decider, 'next_poll_s', None)
    apply_all(decider.start(migration.now_s))
    while migration.running and migration.now_s < max_s:
        sample = samples.sample_from_job_stats(migration.job_stats())
        apply_all(decider.observe(sample, migration.now_s))
        if migration.running:
            interval = (poll_interval_s if next_poll is None
                        else next_poll(poll_interval_s))
            migration.advance(min(interval,
                                  max_s - migration.now_s + 1e-6))
    return result_of(migration, actions)


UNFINISHED = 'unfinished'


def result_of(migration: Migration, actions: list[str]) -> RunResult:
    """What a finished job, or one still running at the horizon
    (``unfinished``: neither completed nor aborted), leaves behind."""
    outcome = UNFINISHED if migration.running else migration.outcome
    return RunResult(
        outcome=outcome, total_s=migration.ended_at_s,
        downtime_ms=migration.downtime_ms,
        iterations=migration.iteration,
        data_sent_bytes=migration.processed_bytes,
        throttle_s=migration.throttle_s,
        max_throttle_pct=migration.max_throttle_pct,
        postcopy_s=migration.postcopy_s, actions=tuple(actions),
        throttle_lost_s=migration.throttle_lost_s,
        postcopy_stall_s=migration.postcopy_stall_s,
        longest_pause_s=migration.longest_pause_s)
