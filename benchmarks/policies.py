"""Migration policies side by side, each from its documented algorithm.

Every policy answers two questions for a workload: what the job starts
with (:class:`~benchmarks.simulator.JobSettings`: flags and parameters) and
who watches it (a decision maker with the controller's interface:
``start`` / ``observe`` / ``acknowledge``).

* ``nova34``: upstream Nova 34 with its defaults, the project's own
  :class:`~nova_livemig_ext.convergence.upstream.UpstreamController`
  (downtime ramp from 50 to 500 ms over 75 s/GiB steps, abort after
  800 s/GiB).
* ``nova34-postcopy``: the same with ``live_migration_permit_post_copy``
  and ``live_migration_timeout_action = force_complete``: post-copy at the
  completion timeout.
* ``kubevirt``: KubeVirt's migration defaults: ``completionTimeoutPerGiB``
  150 s, ``progressTimeout`` 150 s, no post-copy, no auto-converge, no
  bandwidth cap, QEMU's default downtime limit (300 ms).  The job is
  cancelled when the memory copy has made no progress (no new low of the
  remaining data) for the progress timeout, or when the completion time
  passes.  Its monitor polls every 400 ms.
* ``ovirt-minimal-downtime`` and ``ovirt-postcopy``: oVirt's engine
  migration policies as VDSM executes them: auto-converge armed, an
  initial downtime of 100 ms, then one schedule item per new iteration
  seen once its stalling limit is passed (Minimal downtime: 150, 200, 300,
  400, 500 ms at limits 1, 2, 3, 4, 6, then abort; Post-copy: 150, 200 ms
  at limits 1, 2, then post-copy, then abort).  VDSM's monitor polls every
  10 s and aborts any migration after ``migration_max_time_per_gib_mem``
  (64 s/GiB) unless it runs in post-copy.
* ``proxmox``: ``qm migrate --online``: downtime limit ``migrate_downtime``
  0.1 s, no bandwidth limit; every poll (1 s, 0.1 s once the remainder is
  below a poll's worth) that sees the remainder grow counts, and after
  more than five the limit doubles.  It never gives up.  (Proxmox also
  turns on XBZRLE compression; the simulator does not model compression,
  which only helps guests rewriting few bytes per page.)
* ``ours``: the project's :class:`~nova_livemig_ext.convergence.controller
  .Controller`, configured from the policy defaults with post-copy
  permitted and the ladder ``downtime,auto_converge,postcopy,abort``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
    # How often a poll can change its mind: a policy deciding on wall-clock
    # steps alone may be polled more coarsely in the simulation.
    decision_period_s: Callable[[sim.Workload], float] | None = None

    def poll_for(self, workload: sim.Workload) -> float:
        if self.decision_period_s is None:
            return self.poll_s
        return max(self.poll_s, self.decision_period_s(workload))


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


class KubeVirt(Watcher):
    """KubeVirt's virt-launcher migration monitor with its defaults."""

    def __init__(self, memory_bytes: int, completion_s_per_gib: float = 150,
                 progress_timeout_s: float = 150) -> None:
        super().__init__()
        self.acceptable_s = completion_s_per_gib * memory_bytes / GIB
        self.progress_timeout_s = progress_timeout_s
        self.lowest_remaining: int | None = None
        self.last_progress_s = 0.0
        self.aborted = False

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if self.aborted or not sample.is_active:
            return ()
        remaining = sample.data_remaining_bytes
        if self.lowest_remaining is None or remaining < self.lowest_remaining:
            self.lowest_remaining = remaining
            self.last_progress_s = now_s
        elapsed = now_s - self.started_s
        if now_s - self.last_progress_s > self.progress_timeout_s:
            self.aborted = True
            return (self.decide(ctl.Action.ABORT, 'no progress', now_s),)
        if elapsed > self.acceptable_s:
            self.aborted = True
            return (self.decide(ctl.Action.ABORT, 'completion timeout',
                                now_s),)
        return ()


# oVirt's schedules: (stalling limit, action, downtime ms); limit None is a
# "last item", run at the next new iteration after the others.
OVIRT_MINIMAL_DOWNTIME = ((1, 'downtime', 150), (2, 'downtime', 200),
                          (3, 'downtime', 300), (4, 'downtime', 400),
                          (6, 'downtime', 500), (None, 'abort', 0))
OVIRT_POSTCOPY = ((1, 'downtime', 150), (2, 'downtime', 200),
                  (None, 'postcopy', 0), (None, 'abort', 0))
OVIRT_INITIAL_DOWNTIME_MS = 100
OVIRT_MAX_TIME_PER_GIB_S = 64.0
OVIRT_POLL_S = 10.0


class OVirt(Watcher):
    """VDSM's migration monitor running an engine convergence schedule."""

    def __init__(self, memory_bytes: int,
                 schedule: tuple[tuple[int | None, str, int], ...]) -> None:
        super().__init__()
        self.schedule = list(schedule)
        self.max_time_s = OVIRT_MAX_TIME_PER_GIB_S * max(
            1.0, memory_bytes / GIB)
        self.initial_iteration: int | None = None
        self.last_iteration: int | None = None
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

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if self.done or not sample.is_active:
            return ()
        if (not self.in_postcopy
                and now_s - self.started_s > self.max_time_s):
            self.done = True
            return (self.decide(ctl.Action.ABORT, 'max time', now_s),)
        iteration = sample.iteration
        if iteration is None or self.in_postcopy:
            return ()
        if self.initial_iteration is None:
            self.initial_iteration = self.last_iteration = iteration
            return ()
        assert self.last_iteration is not None
        if iteration <= self.last_iteration:
            return ()
        self.last_iteration = iteration
        stalling = iteration - self.initial_iteration
        if not self.schedule:
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


PROXMOX_DOWNTIME_MS = 100
PROXMOX_POLL_S = 1.0
PROXMOX_FAST_POLL_S = 0.1


class Proxmox(Watcher):
    """qemu-server's live-migration loop (QemuMigrate phase 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.downtime_ms = PROXMOX_DOWNTIME_MS
        self.last_remaining: int | None = None
        self.counter = 0
        self.polls = 0
        self.fast = False
        self.last_processed = 0

    def start(self, now_s: float) -> tuple[ctl.Decision, ...]:
        super().start(now_s)
        return (self.decide(ctl.Action.SET_DOWNTIME, 'migrate_downtime',
                            now_s, self.downtime_ms),)

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        if not sample.is_active:
            return ()
        self.polls += 1
        remaining = sample.data_remaining_bytes
        average = self.last_processed / self.polls
        if average and remaining < average:
            self.fast = True
        grew = self.last_remaining is not None and (
            remaining > self.last_remaining)
        if grew or remaining == 0:
            self.counter += 1
        self.last_remaining = remaining
        self.last_processed = sample.memory_processed_bytes
        if self.counter > 5:
            self.counter = 0
            self.downtime_ms *= 2
            return (self.decide(ctl.Action.SET_DOWNTIME, 'auto-increased',
                                now_s, self.downtime_ms),)
        return ()


# ---------------------------------------------------------------------------
# The contenders.
# ---------------------------------------------------------------------------

def _plain(downtime_ms: float = QEMU_DEFAULT_DOWNTIME_MS, *,
           auto_converge: bool = False, postcopy: bool = False,
           initial_pct: int = 20, increment_pct: int = 10
           ) -> Callable[[sim.Workload], sim.JobSettings]:
    def settings(workload: sim.Workload) -> sim.JobSettings:
        return sim.JobSettings(
            downtime_limit_ms=downtime_ms, auto_converge=auto_converge,
            postcopy=postcopy, throttle_initial_pct=initial_pct,
            throttle_increment_pct=increment_pct)
    return settings


def _nova(postcopy: bool) -> Callable[[sim.Workload, float],
                                      ctl.DecisionMaker]:
    def decider(workload: sim.Workload, poll_s: float) -> ctl.DecisionMaker:
        config = upstream.UpstreamConfig(
            data_gib=upstream.nova_data_gib(workload.memory_bytes / MIB),
            postcopy_enabled=postcopy,
            timeout_action=(upstream.TIMEOUT_ACTION_FORCE_COMPLETE
                            if postcopy else upstream.TIMEOUT_ACTION_ABORT))
        return upstream.UpstreamController(config)
    return decider


def _nova_step_fraction(workload: sim.Workload) -> float:
    # Nova acts only at its downtime steps (75 s per GiB of data) and at
    # the completion timeout; polling at 1/200 of a step changes neither
    # by more than half a percent.
    data_gib = upstream.nova_data_gib(workload.memory_bytes / MIB)
    return int(75 * data_gib) / 200.0


def ours_policy() -> livemig_policy.MigrationPolicy:
    """Policy defaults with post-copy permitted and its rung in the ladder."""
    return livemig_policy.MigrationPolicy().replace(
        permit_post_copy=True,
        ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))


def _ours_settings(workload: sim.Workload) -> sim.JobSettings:
    policy = ours_policy()
    return sim.JobSettings(
        downtime_limit_ms=float(policy.initial_downtime_ms),
        auto_converge=True, postcopy=True,
        throttle_initial_pct=policy.auto_converge_initial_pct,
        throttle_increment_pct=policy.auto_converge_increment_pct)


def _ours(workload: sim.Workload, poll_s: float) -> ctl.DecisionMaker:
    config = planner.controller_config_for(
        ours_policy(), workload.memory_bytes, poll_s)
    return ctl.Controller(config)


POLICIES: tuple[Policy, ...] = (
    Policy('nova34', 'Nova 34 defaults', _plain(), _nova(False), 0.5,
           500.0, _nova_step_fraction),
    Policy('nova34-postcopy', 'Nova 34, post-copy + force_complete',
           _plain(postcopy=True), _nova(True), 0.5, 500.0,
           _nova_step_fraction),
    Policy('kubevirt', 'KubeVirt defaults', _plain(),
           lambda w, p: KubeVirt(w.memory_bytes), 0.4,
           QEMU_DEFAULT_DOWNTIME_MS),
    Policy('ovirt-minimal-downtime', 'oVirt "Minimal downtime"',
           _plain(auto_converge=True),
           lambda w, p: OVirt(w.memory_bytes, OVIRT_MINIMAL_DOWNTIME),
           OVIRT_POLL_S, 500.0),
    Policy('ovirt-postcopy', 'oVirt "Post-copy migration"',
           _plain(auto_converge=True, postcopy=True),
           lambda w, p: OVirt(w.memory_bytes, OVIRT_POSTCOPY),
           OVIRT_POLL_S, 200.0),
    Policy('proxmox', 'Proxmox VE qm migrate --online',
           _plain(PROXMOX_DOWNTIME_MS), lambda w, p: Proxmox(),
           PROXMOX_POLL_S, None),
    Policy('ours', 'nova-livemig-ext (downtime, auto_converge, postcopy, '
           'abort)', _ours_settings, _ours, 0.5,
           float(ours_policy().max_downtime_ms)),
)
POLICY_NAMES = tuple(p.name for p in POLICIES)


def by_name(name: str) -> Policy:
    for policy in POLICIES:
        if policy.name == name:
            return policy
    raise KeyError(name)
