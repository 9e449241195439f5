"""Lab migrations steered by a policy, through the monitor nova-compute uses.

The flags come from :func:`nova_livemig_ext.flags.plan_migration`, the
decisions from :func:`nova_livemig_ext.job.decision_maker` and the loop is
:func:`nova_livemig_ext.monitor.run_migration`: the same code the Nova driver
and ``nova-livemig-ext migrate`` run. The lab adds what only it can measure:
the pause the guest saw and whether its memory arrived intact.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import native
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import guest as livemig_guest
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab import measure, system
from nova_livemig_lab.config import LabConfig
from nova_livemig_lab.errors import LabError
from nova_livemig_ext.policy import InvalidPolicy, MigrationPolicy, policy_refusals

OnProgress = Callable[[livemig_monitor.Progress], None]


class RecordingDomain:
    """A domain whose ``jobStats`` answers are kept, timestamped, for traces."""

    def __init__(self, domain: Any, started_s: float) -> None:
        self._domain = domain
        self._started_s = started_s
        self.polls: list[measure.JobPoll] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._domain, name)

    def jobStats(self, flags: int = 0) -> dict[str, Any]:
        stats = dict(self._domain.jobStats(flags))
        self.polls.append(measure.JobPoll(
            round(time.monotonic() - self._started_s, 3), stats))
        return stats


@dataclasses.dataclass(frozen=True)
class ControlledMigration:
    """What the lab measured and what the monitor reported."""

    result: measure.MigrationResult
    report: livemig_monitor.MigrationReport
    plan: livemig_flags.MigrationPlan
    progress: tuple[livemig_monitor.Progress, ...]
    # CPU time of the thread that ran the monitor (polls, controller,
    # libvirt calls): what steering one migration costs the host.
    monitor_cpu_s: float
    # What the guest paid as the monitor and libvirt see it (a bound after
    # post-copy), and what our controller predicted; the heartbeats in
    # ``result`` are the truth.
    guest: livemig_guest.GuestCost | None = None
    predicted_guest: livemig_guest.GuestCost | None = None
    # Our controller's deadline at the end (None for Nova's algorithm).
    deadline_s: float | None = None


def _plan(config: LabConfig, guest: lab_guest.Guest, policy: MigrationPolicy
          ) -> tuple[livemig_flags.MigrationPlan, livemig_flags.InstanceFacts]:
    import libvirt
    refusals = policy_refusals(policy)
    if refusals:
        raise InvalidPolicy(refusals)
    conn = libvirt.open(guest.host.uri)
    try:
        facts = hostfacts.probe(conn, libvirt)
        livemig_flags.check_policy(policy, facts)
        dom = conn.lookupByName(guest.name)
        instance = livemig_flags.InstanceFacts(memory_mib=dom.info()[1] // 1024)
    finally:
        conn.close()
    return livemig_flags.plan_migration(policy, facts, instance), instance


def migrate_with_policy(config: LabConfig, guest: lab_guest.Guest, policy: MigrationPolicy,
                        on_progress: OnProgress | None = None,
                        settle_s: float = measure.SETTLE_S,
                        link_shares: Callable[[], int] | None = None,
                        give_back_address: str | None = None,
                        decider: Callable[[], ctl.DecisionMaker] | None = None
                        ) -> ControlledMigration:
    """Migrate ``guest`` to the other host as nova-compute would, and measure it.

    ``link_shares`` counts the migrations sharing the link, as the driver does;
    ``give_back_address`` is ``[livemig_ext] postcopy_give_back_address``
    (None: off). ``decider`` replaces the policy's decision maker (a baseline
    of :mod:`nova_livemig_lab.baselines`); the flags still come from the
    policy.
    """
    import libvirt
    system.quiet_libvirt()
    if config.libvirt.resume_fixed and policy.postcopy_resume == "auto":
        # The lab knows its daemons carry the resume fix, as an operator
        # who checked every host would, and says so.
        policy = policy.replace(postcopy_resume="patched")
    plan, instance = _plan(config, guest, policy)
    if plan.postcopy_armed and not system.userfaultfd_available():
        raise LabError("post-copy needs userfaultfd, which this kernel does not offer")
    progress: list[livemig_monitor.Progress] = []
    reports: list[livemig_monitor.MigrationReport] = []
    cpu_s: list[float] = []
    deciders: list[ctl.DecisionMaker] = []
    destination = config.other(guest.host)
    dest_conns: list[Any] = []

    def dest_domain() -> Any | None:
        """The guest on the destination, read through its own socket."""
        try:
            conn = libvirt.open(destination.uri)
        except libvirt.libvirtError:
            return None
        dest_conns.append(conn)
        try:
            return conn.lookupByName(guest.name)
        except libvirt.libvirtError:
            return None

    def collect(update: livemig_monitor.Progress) -> None:
        progress.append(update)
        if on_progress is not None:
            on_progress(update)

    def runner(dom: Any, dest_uri: str, params: Mapping[str, Any],
               flags: int) -> measure.MigrationRun:
        started_s = time.monotonic()
        recorded = RecordingDomain(dom, started_s)
        controller = (decider() if decider is not None else livemig_job.decision_maker(
            policy, plan, instance.memory_mib, link_shares=link_shares))
        deciders.append(controller)
        monitor = livemig_monitor.MigrationMonitor(
            recorded, controller, time.monotonic, native.time_module().sleep,
            poll_interval_s=policy.poll_interval_s, on_sample=collect,
            errors=livemig_monitor.ErrorClassifier((libvirt.libvirtError,)),
            deadline_s=livemig_job.wall_clock_deadline_s(
                policy, livemig_job.data_gib(instance.memory_mib)))
        cpu_started_s = time.thread_time()
        try:
            report = livemig_monitor.run_migration(
                recorded, dest_uri, dict(params), flags, monitor,
                dest_domain=dest_domain,
                recovery_timeout_s=float(policy.postcopy_recovery_timeout_s),
                postcopy_resume=policy.postcopy_resume,
                give_back_address=give_back_address)
        finally:
            for conn in dest_conns:
                conn.close()
        cpu_s.append(time.thread_time() - cpu_started_s)
        reports.append(report)
        error = None
        if report.outcome is not livemig_monitor.Outcome.COMPLETED:
            error = report.error or report.outcome.value
        return measure.MigrationRun(tuple(recorded.polls), error, started_s,
                                    time.monotonic(), False)

    result = measure.migrate_and_measure(config, guest, plan.flags, plan.params,
                                         settle_s=settle_s, runner=runner)
    report = reports[0]
    if result.completed_stats:
        report = livemig_monitor.with_completed_stats(report, result.completed_stats)
    # What the guest paid by the monitor's account (libvirt's downtime from
    # the completed statistics counted in), and what ours predicted.
    paid, predicted = report.guest, report.predicted_guest
    deadline = (deciders[0].deadline_s if isinstance(deciders[0], ctl.Controller)
                else None)
    return ControlledMigration(result, report, plan, tuple(progress), cpu_s[0],
                               paid, predicted, deadline)
