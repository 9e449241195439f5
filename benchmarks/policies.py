"""Migration policies side by side, each as its platform really runs it.

Every policy answers three questions for a workload: what the job starts
with (:class:`~benchmarks.simulator.JobSettings`: flags, parameters,
channels, bandwidth cap), who watches it (a decision maker with the
controller's interface: ``start`` / ``observe`` / ``acknowledge``) and how
many guests one host migrates at once when it is drained.

Two tiers per platform: its defaults, and the same platform with the
capabilities it offers for hard guests switched on (auto-converge,
post-copy).  Each peer's class and entry cite the release and the source
behaviour it models; the facts were read from the peers' sources:

* Nova 34.0.0 (``nova/virt/libvirt/driver.py`` ``_live_migration_monitor``
  and ``nova/virt/libvirt/migration.py``; ``nova/conf/libvirt.py``,
  ``nova/conf/compute.py``): polls every 0.5 s from the start
  (``sleep_time = 0.5``), and at every poll of a running job
  ``update_downtime`` sets the last step of ``downtime_steps`` whose start
  has passed (``elapsed > step[0]``), so the first step, 50 ms, is set at
  the first poll that sees the job; steps from
  ``live_migration_downtime`` / ``steps`` up to 500 ms, ``steps`` 10,
  ``delay`` 75 s per GiB of data; ``live_migration_completion_timeout``
  800 s per GiB of data (RAM and disks, each at least 2 GiB), then
  ``live_migration_timeout_action`` = ``abort``;
  ``max_concurrent_live_migrations`` = 1.  With
  ``live_migration_permit_post_copy`` Nova does not set auto-converge even
  when ``live_migration_permit_auto_converge`` is on
  (``_handle_live_migration_auto_converge``), and ``force_complete`` at the
  timeout switches to post-copy.
* KubeVirt main (``pkg/virt-launcher/virtwrap/live-migration-source.go``,
  ``handleLegacyConvergence``; ``pkg/virt-config/virt-config.go``;
  ``pkg/virt-handler`` ``configureParallelMigrationThreads``): polls every
  400 ms; progress means the remaining data fell since the previous poll
  (``progressWatermark`` is the previous poll's value); abort after
  ``progressTimeout`` 150 s without progress; completion timeout
  ``completionTimeoutPerGiB`` 150 s x ceil(bytes / 10^9)
  (``ScaledValue(resource.Giga)``); no bandwidth cap; 8 multifd channels
  unless post-copy is allowed (or the VMI has a CPU limit); with
  ``allowPostCopy`` (``allowWorkloadDisruption`` follows it) post-copy
  starts at the completion timeout; ``parallelOutboundMigrationsPerNode``
  2.  The newer stall detector (VEP 248) is behind a feature gate and not
  modelled.
* oVirt engine 4.5 (``packaging/dbscripts/upgrade/pre_upgrade/
  0000_config.sql`` ``MigrationPolicies`` for 4.7 clusters,
  ``MigrateVmCommand.getMaxBandwidth``) executed by VDSM 4.50
  (``lib/vdsm/virt/migration.py`` ``MonitorThread.monitor_migration`` and
  ``_next_action``): "Minimal downtime"
  (the default) arms auto-converge, starts at 100 ms and steps 150, 200,
  300, 400, 500 ms at stalling limits 1, 2, 3, 4, 6 new iterations, then
  aborts; "Suspend workload if needed" ends with 5000 ms, then abort
  (and compression, not modelled); "Post-copy migration" steps 150, 200 ms
  then starts post-copy.  The engine caps each migration at the link speed
  divided by the policy's ``maxMigrations`` (2, 1, 2), which is also how
  many leave a host at once.  VDSM waits ``migration_monitor_interval``
  (10 s) before each ``jobStats()``; the first poll that sees the job
  records libvirt's ``memory_iteration`` as the initial iteration, and a
  later poll seeing a higher one runs at most one schedule item, with
  stalling = iteration - initial (VDSM commit 077b7817b, "Use libvirt
  memory iteration info in migrations", in every 4.40 and 4.50 release
  and backported to 4.30.14).  Its ``lowmark`` of the data remaining is
  only logged ("Migration stalling").  Before that commit (VDSM up to
  4.30.13) a stalling iteration was a poll whose data remaining had grown
  since the previous poll (``lastDataRemaining <
  progress.data_remaining``); :class:`OVirt` can count that way for
  comparison (``OVIRT_STALL_REMAINING_GREW``).
  ``migration_max_time_per_gib_mem`` (64 s/GiB) and
  ``migration_progress_timeout`` belonged to the legacy,
  non-schedule path only, which VDSM 4.40 removed with both options
  (commit d8ff8959d, "Remove support for legacy migrations"): a schedule
  migration has no time limit of its own.
* Proxmox VE qemu-server (``src/PVE/QemuMigrate.pm`` ``phase2``,
  ``src/PVE/QemuMigrate/Helpers.pm`` ``set_migration_caps``): auto-converge
  and XBZRLE on (XBZRLE not modelled), ``migrate_downtime`` 0.1 s,
  ``max-bandwidth`` 16 GiB/s (no cap); polls every second, and every
  100 ms from the first poll whose remainder is below the average amount
  sent per poll (it never goes back); a poll seeing the remainder grow (or
  zero) counts, and after more than five the downtime limit doubles, with
  no cap of its own: QEMU refuses limits above 2000 s.  It never gives up.
  Drains through HA maintenance mode run ``max_workers`` 4 at once.

Baselines: a paused (non-live) copy, post-copy right after the first pass
(libvirt's ``--postcopy-after-precopy``), and QEMU's auto-converge alone
(300 ms, nobody watching).  Ours: the project's controller as shipped
(``MigrationPolicy()`` defaults) and with post-copy permitted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples
from nova_livemig_ext.convergence import upstream
from nova_livemig_ext import planner
from nova_livemig_ext import policy as livemig_policy

MIB = 1024 * 1024
GIB = 1024 * MIB
QEMU_DEFAULT_DOWNTIME_MS = 300.0
# QEMU's downtime-limit upper bound (MAX_MIGRATE_DOWNTIME_SECONDS).
QEMU_MAX_DOWNTIME_MS = 2000 * 1000

TIER_DEFAULT = 'defaults'
TIER_CAPABLE = 'capabilities on'
TIER_BASELINE = 'baseline'
TIER_OURS = 'ours'


@dataclasses.dataclass(frozen=True)
class Policy:
    """One contender: the job's settings and a factory for its watcher."""

    name: str
    title: str
    settings: Callable[[sim.Workload], sim.JobSettings]
    decider: Callable[[sim.Workload, float], ctl.DecisionMaker]
    # Its monitor's own poll interval.
    poll_s: float
    # The downtime ceiling it is configured with (None: unbounded).
    downtime_ceiling_ms: float | None
    tier: str = TIER_DEFAULT
    # Guests one host migrates at once when it is drained.
    host_concurrency: int = 1
    # The release and source whose behaviour this entry models.
    source: str = ''

    def poll_for(self, workload: sim.Workload) -> float:
        return self.poll_s


class Watcher:
    """Base for the peers' monitors and the trace replay: no predictions."""

    def __init__(self) -> None:
        self._estimate = estimator.Estimate()
        self.started_s = 0.0

    @property
    def estimate(self) -> estimator.Estimate:
        return self._estimate

    @property
    def predicted_downtime_ms(self) -> float | None:
        return None

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        self.started_s = now_s
        return ()

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        return ()

    def acknowledge(self, decision: ctl.Decision, applied: bool,
                    now_s: float) -> None:
        return None

    def force_complete(self, now_s: float) -> tuple[ctl.Decision, ...]:
        # No operator asks for anything in the benchmark.
        return ()

    @staticmethod
    def decide(action: ctl.Action, reason: str, now_s: float,
               downtime_ms: int | None = None) -> ctl.Decision:
        return ctl.Decision(action=action, reason=reason, at_s=now_s,
                            downtime_ms=downtime_ms)


# ---------------------------------------------------------------------------
# KubeVirt
# ---------------------------------------------------------------------------

KUBEVIRT_POLL_S = 0.4               # monitorSleepPeriodMS
KUBEVIRT_PROGRESS_TIMEOUT_S = 150   # MigrationProgressTimeout
KUBEVIRT_COMPLETION_PER_GB_S = 150  # MigrationCompletionTimeoutPerGiB
KUBEVIRT_MULTIFD_CHANNELS = 8       # parallelMultifdMigrationThreads
KUBEVIRT_OUTBOUND_PER_NODE = 2      # ParallelOutboundMigrationsPerNode


def kubevirt_data_gb(memory_bytes: float) -> int:
    """KubeVirt's data size: memory in units of 10^9 bytes, rounded up."""
    return math.ceil(memory_bytes / 1e9)


class KubeVirt(Watcher):
    """virt-launcher's migration monitor (``handleLegacyConvergence``).

    Per poll: progress is remembered when the remaining data is below the
    previous poll's; in post-copy nothing is done; past the completion
    timeout with ``allowWorkloadDisruption`` it starts post-copy (when
    allowed) or pauses the guest and doubles the timeout; otherwise 150 s
    without progress, or the completion timeout, abort the job.
    """

    def __init__(self, memory_bytes: int, *, allow_postcopy: bool = False,
                 allow_workload_disruption: bool | None = None,
                 completion_s_per_gb: float = KUBEVIRT_COMPLETION_PER_GB_S,
                 progress_timeout_s: float = KUBEVIRT_PROGRESS_TIMEOUT_S
                 ) -> None:
        super().__init__()
        self.acceptable_s = completion_s_per_gb * kubevirt_data_gb(
            memory_bytes)
        self.progress_timeout_s = progress_timeout_s
        self.allow_postcopy = allow_postcopy
        self.allow_disruption = (allow_postcopy
                                 if allow_workload_disruption is None
                                 else allow_workload_disruption)
        self.watermark = 0
        self.last_progress_s = 0.0
        self.in_postcopy = False
        self.paused = False
        self.done = False

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        self.last_progress_s = now_s
        return super().start(now_s)

    def acknowledge(self, decision: ctl.Decision, applied: bool,
                    now_s: float) -> None:
        if decision.action is ctl.Action.START_POSTCOPY and applied:
            self.in_postcopy = True

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if self.done or not sample.is_active:
            return ()
        remaining = sample.data_remaining_bytes
        if self.watermark == 0 or remaining < self.watermark:
            self.last_progress_s = now_s
        self.watermark = remaining
        elapsed = int(now_s - self.started_s)
        if self.in_postcopy:
            return ()
        if (self.allow_disruption and not self.paused
                and elapsed > self.acceptable_s):
            if self.allow_postcopy:
                return (self.decide(ctl.Action.START_POSTCOPY,
                                    'completion timeout', now_s),)
            self.paused = True
            self.acceptable_s *= 2
            return (self.decide(ctl.Action.PAUSE, 'completion timeout',
                                now_s),)
        if int(now_s - self.last_progress_s) > self.progress_timeout_s:
            self.done = True
            return (self.decide(ctl.Action.ABORT, 'no progress', now_s),)
        if elapsed > self.acceptable_s:
            self.done = True
            return (self.decide(ctl.Action.ABORT, 'completion timeout',
                                now_s),)
        return ()


# ---------------------------------------------------------------------------
# oVirt
# ---------------------------------------------------------------------------

# Engine schedules: (stalling limit, action, downtime ms); limit None is a
# "last item", run at the next new iteration after the others.
OVIRT_MINIMAL_DOWNTIME = ((1, 'downtime', 150), (2, 'downtime', 200),
                          (3, 'downtime', 300), (4, 'downtime', 400),
                          (6, 'downtime', 500), (None, 'abort', 0))
OVIRT_SUSPEND_WORKLOAD = ((1, 'downtime', 150), (2, 'downtime', 200),
                          (3, 'downtime', 300), (4, 'downtime', 400),
                          (6, 'downtime', 500), (None, 'downtime', 5000),
                          (None, 'abort', 0))
OVIRT_POSTCOPY = ((1, 'downtime', 150), (2, 'downtime', 200),
                  (None, 'postcopy', 0), (None, 'abort', 0))
OVIRT_INITIAL_DOWNTIME_MS = 100
OVIRT_POLL_S = 10.0
# Each policy's maxMigrations: the engine divides the link by it.
OVIRT_MAX_MIGRATIONS = {'minimal': 2, 'suspend': 1, 'postcopy': 2}
# How VDSM counts stalling iterations: libvirt's memory_iteration since
# the first poll (VDSM 4.30.14 and later, so all of oVirt 4.4 and 4.5), or
# polls whose data remaining grew since the previous poll (VDSM up to
# 4.30.13).
OVIRT_STALL_ITERATIONS = 'iterations'
OVIRT_STALL_REMAINING_GREW = 'remaining grew'


class OVirt(Watcher):
    """VDSM's migration monitor running an engine convergence schedule.

    ``lib/vdsm/virt/migration.py`` ``MonitorThread.monitor_migration``:
    it sleeps ``migration_monitor_interval`` before every poll, so it
    sees nothing of the first 10 s; the first poll only records the
    initial iteration.  ``_next_action`` runs the schedule's head when
    its limit is below the stalling count, at most one item per poll.
    """

    def __init__(self, memory_bytes: int,
                 schedule: tuple[tuple[int | None, str, int], ...],
                 stall_count: str = OVIRT_STALL_ITERATIONS,
                 interval_s: float = OVIRT_POLL_S) -> None:
        super().__init__()
        if stall_count not in (OVIRT_STALL_ITERATIONS,
                               OVIRT_STALL_REMAINING_GREW):
            raise ValueError(f'unknown stall count {stall_count!r}')
        self.schedule = list(schedule)
        self.stall_count = stall_count
        self.interval_s = interval_s
        self.initial_iteration: int | None = None
        self.last_iteration: int | None = None
        self.last_remaining: int | None = None
        self.stalling = 0
        self.in_postcopy = False
        self.done = False

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        super().start(now_s)
        return (self.decide(ctl.Action.SET_DOWNTIME, 'initial item', now_s,
                            OVIRT_INITIAL_DOWNTIME_MS),)

    def acknowledge(self, decision: ctl.Decision, applied: bool,
                    now_s: float) -> None:
        if decision.action is ctl.Action.START_POSTCOPY and applied:
            self.in_postcopy = True

    def _stalling(self, sample: samples.JobSample) -> int | None:
        """The stalling count when this poll counts a new one."""
        if self.stall_count == OVIRT_STALL_REMAINING_GREW:
            # VDSM <= 4.30.13: lastDataRemaining < data_remaining.
            remaining = sample.data_remaining_bytes
            grew = (self.last_remaining is not None
                    and remaining > self.last_remaining)
            self.last_remaining = remaining
            if not grew:
                return None
            self.stalling += 1
            return self.stalling
        iteration = sample.iteration
        if iteration is None:
            return None
        if self.initial_iteration is None:
            self.initial_iteration = self.last_iteration = iteration
            return None
        assert self.last_iteration is not None
        if iteration <= self.last_iteration:
            return None
        self.last_iteration = iteration
        return iteration - self.initial_iteration

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        # VDSM waits a whole interval before its first jobStats().
        if (self.done or not sample.is_active
                or now_s - self.started_s < self.interval_s - 1e-9):
            return ()
        if self.in_postcopy:
            return ()
        stalling = self._stalling(sample)
        if stalling is None or not self.schedule:
            return ()
        limit, action, downtime = self.schedule[0]
        if limit is not None and limit >= stalling:
            return ()
        self.schedule.pop(0)
        if action == 'downtime':
            return (self.decide(ctl.Action.SET_DOWNTIME, 'schedule', now_s,
                                downtime),)
        if action == 'postcopy':
            return (self.decide(ctl.Action.START_POSTCOPY, 'schedule',
                                now_s),)
        self.done = True
        return (self.decide(ctl.Action.ABORT, 'schedule', now_s),)


# ---------------------------------------------------------------------------
# Proxmox VE
# ---------------------------------------------------------------------------

PROXMOX_DOWNTIME_MS = 100
PROXMOX_POLL_S = 1.0
PROXMOX_FAST_POLL_S = 0.1
PROXMOX_HA_MAX_WORKERS = 4


class Proxmox(Watcher):
    """qemu-server's live-migration loop (QemuMigrate phase 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.downtime_ms = PROXMOX_DOWNTIME_MS
        self.last_remaining: int | None = None
        self.counter = 0
        self.polls = 0
        self.fast = False
        self.last_transferred = 0

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        super().start(now_s)
        return (self.decide(ctl.Action.SET_DOWNTIME, 'migrate_downtime',
                            now_s, self.downtime_ms),)

    def next_poll_s(self, base_s: float) -> float:
        """1 s, and 100 ms from the first poll near the end of a pass.

        ``base_s`` is the simulation's poll for this guest (coarser for
        big guests); the fast poll keeps a tenth of it.
        """
        if not self.fast:
            return max(PROXMOX_POLL_S, base_s)
        return max(PROXMOX_FAST_POLL_S, base_s / 10)

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if not sample.is_active:
            return ()
        self.polls += 1
        average = self.last_transferred / self.polls
        transferred = sample.memory_processed_bytes
        if transferred == self.last_transferred:
            return ()
        remaining = sample.data_remaining_bytes
        if average and remaining < average:
            self.fast = True
        grew = self.last_remaining is not None and self.last_remaining > 0 \
            and remaining > self.last_remaining
        if grew or remaining == 0:
            self.counter += 1
        self.last_remaining = remaining
        self.last_transferred = transferred
        if self.counter > 5:
            self.counter = 0
            self.downtime_ms *= 2
            if self.downtime_ms > QEMU_MAX_DOWNTIME_MS:
                # migrate-set-parameters fails; Proxmox logs it and goes on.
                return ()
            return (self.decide(ctl.Action.SET_DOWNTIME, 'auto-increased',
                                now_s, self.downtime_ms),)
        return ()


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------

class PostcopyAfterFirstPass(Watcher):
    """libvirt's ``--postcopy-after-precopy``: switch after iteration 1."""

    def __init__(self) -> None:
        super().__init__()
        self.switched = False

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if self.switched or not sample.is_active:
            return ()
        if sample.iteration is not None and sample.iteration >= 2:
            self.switched = True
            return (self.decide(ctl.Action.START_POSTCOPY, 'first pass done',
                                now_s),)
        return ()


# ---------------------------------------------------------------------------
# The contenders.
# ---------------------------------------------------------------------------

def _plain(downtime_ms: float = QEMU_DEFAULT_DOWNTIME_MS, *,
           auto_converge: bool = False, postcopy: bool = False,
           live: bool = True, channels: int = 1,
           link_share: int | None = None
           ) -> Callable[[sim.Workload], sim.JobSettings]:
    def settings(workload: sim.Workload) -> sim.JobSettings:
        cap = (None if link_share is None
               else workload.line_rate_bytes_s / link_share)
        return sim.JobSettings(
            live=live, downtime_limit_ms=downtime_ms,
            auto_converge=auto_converge, postcopy=postcopy,
            channels=channels, max_speed_bytes_s=cap)
    return settings


NOVA_POLL_S = 0.5  # _live_migration_monitor's sleep_time


class NovaMonitor(upstream.UpstreamController):
    """Nova 34's ``_live_migration_monitor`` polling every 0.5 s.

    ``nova/virt/libvirt/driver.py`` ``_live_migration_monitor`` sleeps
    ``sleep_time = 0.5`` between polls from the start of the job, and at
    each poll of a running job checks the completion timeout and calls
    ``nova/virt/libvirt/migration.py`` ``update_downtime`` with the steps
    of ``downtime_steps``.  Its decisions depend on the elapsed time alone,
    so they change only at the first 0.5 s poll after a step start or the
    timeout, and one poll after a queued force-complete.  ``next_poll_s``
    skips the polls in between, at which Nova would do nothing: the same
    decisions at the same instants as polling every 0.5 s, for a fraction
    of the simulated polls.  The harness's own poll interval (coarser for
    big guests) does not apply: Nova's poll is its own.
    """

    def __init__(self, config: upstream.UpstreamConfig,
                 poll_s: float = NOVA_POLL_S) -> None:
        super().__init__(config)
        self.poll_s = poll_s
        self._boundaries = sorted(
            {float(start) for start, _ in upstream.downtime_steps(config)}
            | ({float(upstream.completion_timeout_s(config))}
               if upstream.completion_timeout_s(config) else set()))
        self._now_s = 0.0

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        self._now_s = now_s
        return super().observe(sample, now_s)

    def next_poll_s(self, base_s: float) -> float:
        """Time to the next 0.5 s poll at which Nova can act."""
        if self._state is None:
            return self.poll_s
        if self._state.force_complete_queued:
            return self.poll_s
        elapsed = self._now_s - self._state.started_s
        # Nova acts at the first poll with elapsed > boundary.
        due = [b for b in self._boundaries if b >= elapsed - 1e-9]
        if not due:
            return math.inf
        poll = (math.floor(due[0] / self.poll_s + 1e-9) + 1) * self.poll_s
        return max(poll - elapsed, self.poll_s * 1e-3)


def _nova(postcopy: bool) -> Callable[[sim.Workload, float],
                                      ctl.DecisionMaker]:
    def decider(workload: sim.Workload, poll_s: float) -> ctl.DecisionMaker:
        config = upstream.UpstreamConfig(
            data_gib=upstream.nova_data_gib(workload.memory_bytes / MIB),
            postcopy_enabled=postcopy,
            timeout_action=(upstream.TIMEOUT_ACTION_FORCE_COMPLETE
                            if postcopy else upstream.TIMEOUT_ACTION_ABORT))
        return NovaMonitor(config)
    return decider


def ours_policy() -> livemig_policy.MigrationPolicy:
    """Policy defaults with post-copy permitted and its rung in the ladder."""
    return livemig_policy.MigrationPolicy().replace(
        permit_post_copy=True,
        ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))


def shipped_policy() -> livemig_policy.MigrationPolicy:
    """The policy a host gets without any [livemig_ext] setting."""
    return livemig_policy.MigrationPolicy()


def _ours_settings(policy: Callable[[], livemig_policy.MigrationPolicy]
                   ) -> Callable[[sim.Workload], sim.JobSettings]:
    def settings(workload: sim.Workload) -> sim.JobSettings:
        chosen = policy()
        config = planner.controller_config_for(chosen, workload.memory_bytes)
        return sim.JobSettings(
            downtime_limit_ms=float(chosen.initial_downtime_ms),
            auto_converge=config.auto_converge_armed,
            postcopy=config.postcopy_armed,
            throttle_initial_pct=chosen.auto_converge_initial_pct,
            throttle_increment_pct=chosen.auto_converge_increment_pct,
            channels=max(1, chosen.parallel_connections),
            max_speed_bytes_s=(chosen.bandwidth_mib_s * MIB
                               if chosen.bandwidth_mib_s else None))
    return settings


def _ours(policy: Callable[[], livemig_policy.MigrationPolicy]
          ) -> Callable[[sim.Workload, float], ctl.DecisionMaker]:
    def decider(workload: sim.Workload, poll_s: float) -> ctl.DecisionMaker:
        config = planner.controller_config_for(
            policy(), workload.memory_bytes, poll_s)
        return ctl.Controller(config)
    return decider


NOVA_SOURCE = ('Nova 34.0.0 libvirt driver _live_migration_monitor: 0.5 s '
               'polls from the start, downtime steps 50->500 ms (the first '
               'at the first poll, then 10 steps of 75 s/GiB; migration.py '
               'update_downtime), completion timeout 800 s/GiB, '
               'max_concurrent_live_migrations 1')
KUBEVIRT_SOURCE = ('KubeVirt main live-migration-source.go '
                   'handleLegacyConvergence: 400 ms polls, progress = '
                   'remaining fell since the previous poll, 150 s progress '
                   'timeout, 150 s x ceil(GB), 2 outbound per node')
OVIRT_SOURCE = ('oVirt engine 4.5 MigrationPolicies (4.7 clusters) via '
                'VDSM 4.50 MonitorThread: 10 s polls, one schedule item per '
                'poll at stalling = libvirt memory_iteration since the '
                'first poll, no time limit (legacy 64 s/GiB removed in '
                'VDSM 4.40), bandwidth = link / maxMigrations')
PROXMOX_SOURCE = ('Proxmox qemu-server QemuMigrate.pm phase2: auto-converge '
                  'on, 100 ms downtime doubled after >5 growing polls, 1 s '
                  'then 100 ms polls, never aborts; HA max_workers 4')

POLICIES: tuple[Policy, ...] = (
    Policy('nova34', 'Nova 34 defaults', _plain(), _nova(False),
           NOVA_POLL_S, 500.0, TIER_DEFAULT, 1, NOVA_SOURCE),
    Policy('kubevirt', 'KubeVirt defaults (8 multifd channels)',
           _plain(channels=KUBEVIRT_MULTIFD_CHANNELS),
           lambda w, p: KubeVirt(w.memory_bytes), KUBEVIRT_POLL_S,
           QEMU_DEFAULT_DOWNTIME_MS, TIER_DEFAULT,
           KUBEVIRT_OUTBOUND_PER_NODE, KUBEVIRT_SOURCE),
    Policy('ovirt-minimal-downtime', 'oVirt "Minimal downtime" (default)',
           _plain(auto_converge=True,
                  link_share=OVIRT_MAX_MIGRATIONS['minimal']),
           lambda w, p: OVirt(w.memory_bytes, OVIRT_MINIMAL_DOWNTIME),
           OVIRT_POLL_S, 500.0, TIER_DEFAULT,
           OVIRT_MAX_MIGRATIONS['minimal'], OVIRT_SOURCE),
    Policy('ovirt-suspend-workload', 'oVirt "Suspend workload if needed"',
           _plain(auto_converge=True,
                  link_share=OVIRT_MAX_MIGRATIONS['suspend']),
           lambda w, p: OVirt(w.memory_bytes, OVIRT_SUSPEND_WORKLOAD),
           OVIRT_POLL_S, 5000.0, TIER_DEFAULT,
           OVIRT_MAX_MIGRATIONS['suspend'], OVIRT_SOURCE),
    Policy('proxmox', 'Proxmox VE qm migrate --online',
           _plain(PROXMOX_DOWNTIME_MS, auto_converge=True),
           lambda w, p: Proxmox(), PROXMOX_POLL_S, None,
           TIER_DEFAULT, PROXMOX_HA_MAX_WORKERS, PROXMOX_SOURCE),
    Policy('nova34-postcopy', 'Nova 34, permit post-copy + auto-converge, '
           'force_complete', _plain(postcopy=True), _nova(True),
           NOVA_POLL_S, 500.0, TIER_CAPABLE, 1,
           NOVA_SOURCE + '; post-copy permitted disables auto-converge, '
           'force_complete switches to post-copy at the timeout'),
    Policy('kubevirt-postcopy', 'KubeVirt, allowAutoConverge + '
           'allowPostCopy', _plain(auto_converge=True, postcopy=True),
           lambda w, p: KubeVirt(w.memory_bytes, allow_postcopy=True),
           KUBEVIRT_POLL_S, QEMU_DEFAULT_DOWNTIME_MS, TIER_CAPABLE,
           KUBEVIRT_OUTBOUND_PER_NODE,
           KUBEVIRT_SOURCE + '; post-copy at the completion timeout, no '
           'multifd with post-copy'),
    Policy('ovirt-postcopy', 'oVirt "Post-copy migration"',
           _plain(auto_converge=True, postcopy=True,
                  link_share=OVIRT_MAX_MIGRATIONS['postcopy']),
           lambda w, p: OVirt(w.memory_bytes, OVIRT_POSTCOPY),
           OVIRT_POLL_S, 200.0, TIER_CAPABLE,
           OVIRT_MAX_MIGRATIONS['postcopy'], OVIRT_SOURCE),
    Policy('paused-copy', 'Baseline: paused (non-live) copy',
           _plain(live=False), lambda w, p: Watcher(), 1.0, None,
           TIER_BASELINE, 1, 'libvirt migrate without VIR_MIGRATE_LIVE'),
    Policy('postcopy-after-first-pass', 'Baseline: post-copy after the '
           'first pass', _plain(postcopy=True),
           lambda w, p: PostcopyAfterFirstPass(), 0.5, None,
           TIER_BASELINE, 1, 'libvirt --postcopy --postcopy-after-precopy'),
    Policy('qemu-autoconverge', 'Baseline: QEMU auto-converge alone',
           _plain(auto_converge=True), lambda w, p: Watcher(), 1.0,
           QEMU_DEFAULT_DOWNTIME_MS, TIER_BASELINE, 1,
           'QEMU 10 auto-converge (20 %/+10 %), 300 ms, nobody watching'),
    Policy('ours', 'nova-livemig-ext as shipped (downtime, auto_converge, '
           'abort)', _ours_settings(shipped_policy), _ours(shipped_policy),
           0.5, float(shipped_policy().max_downtime_ms), TIER_OURS, 1,
           'MigrationPolicy() defaults; nova-compute keeps '
           'max_concurrent_live_migrations 1'),
    Policy('ours-postcopy', 'nova-livemig-ext with post-copy (downtime, '
           'auto_converge, postcopy, abort)', _ours_settings(ours_policy),
           _ours(ours_policy), 0.5, float(ours_policy().max_downtime_ms),
           TIER_OURS, 1, 'MigrationPolicy() with permit_post_copy'),
)
POLICY_NAMES = tuple(p.name for p in POLICIES)


def by_name(name: str) -> Policy:
    for policy in POLICIES:
        if policy.name == name:
            return policy
    raise KeyError(name)


# ---------------------------------------------------------------------------
# Variants for the sensitivity tables (never a default of the extension).
# ---------------------------------------------------------------------------

OURS_BASE = {'ours': shipped_policy, 'ours-postcopy': ours_policy}
OVIRT_SCHEDULES = {'ovirt-minimal-downtime': OVIRT_MINIMAL_DOWNTIME,
                   'ovirt-suspend-workload': OVIRT_SUSPEND_WORKLOAD,
                   'ovirt-postcopy': OVIRT_POSTCOPY}


class _Changed:
    """One of our policies with some options changed (picklable)."""

    def __init__(self, base: str, changes: tuple[tuple[str, Any], ...]
                 ) -> None:
        self.base = base
        self.changes = changes

    def __call__(self) -> livemig_policy.MigrationPolicy:
        return OURS_BASE[self.base]().replace(**dict(self.changes))


def ours_with(name: str, **changes: Any) -> Policy:
    """``ours`` or ``ours-postcopy`` with ``changes`` to its options."""
    policy = by_name(name)
    chosen = _Changed(name, tuple(sorted(changes.items())))
    return dataclasses.replace(
        policy, settings=_ours_settings(chosen), decider=_ours(chosen),
        source=policy.source + '; ' + ', '.join(
            f'{k} = {v}' for k, v in sorted(changes.items())))


def ovirt_counting(name: str, stall_count: str) -> Policy:
    """An oVirt policy with VDSM counting stalls as ``stall_count``."""
    policy = by_name(name)
    schedule = OVIRT_SCHEDULES[name]

    def decider(w: sim.Workload, poll_s: float) -> ctl.DecisionMaker:
        return OVirt(w.memory_bytes, schedule, stall_count=stall_count)
    return dataclasses.replace(policy, decider=decider,
                               source=policy.source + f'; {stall_count}')
