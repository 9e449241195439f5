"""One migration's decision maker, from its policy and plan.

The Nova driver and the command line both build the controller here, so a
migration is steered the same way whoever started it.
"""

from __future__ import annotations

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import upstream
from nova_livemig_ext.flags import MigrationPlan
from nova_livemig_ext.policy import MigrationPolicy

MIB = 1024 * 1024
GIB = 1024 * MIB


def data_gib(memory_mib: float, disk_gib: float = 0.0) -> float:
    """What a migration moves: guest memory plus copied disks, in GiB."""
    return memory_mib / 1024.0 + disk_gib


def deadline_s(policy: MigrationPolicy, size_gib: float) -> float:
    return ctl.migration_deadline_s(
        max(size_gib, 1.0 / 1024), policy.completion_timeout_s_per_gib,
        policy.completion_timeout_max_s)


def controller_config(policy: MigrationPolicy, plan: MigrationPlan,
                      size_gib: float) -> ctl.ControllerConfig:
    """Our controller's settings for one migration."""
    return ctl.ControllerConfig(
        ladder=plan.ladder,
        initial_downtime_ms=policy.initial_downtime_ms,
        max_downtime_ms=policy.max_downtime_ms,
        downtime_steps=policy.downtime_steps,
        # Instance facts already removed post-copy from the plan when it
        # cannot work for this instance.
        postcopy_armed=plan.postcopy_armed,
        postcopy_allowed=plan.postcopy_armed,
        pause_allowed='pause' in plan.ladder,
        auto_converge_armed=plan.auto_converge_armed,
        deadline_s=deadline_s(policy, size_gib),
        switchover_timeout_s=float(policy.switchover_timeout_s),
        stall_patience_passes=policy.stall_passes,
        stall_window_s=float(policy.stall_window_s),
        poll_interval_s=policy.poll_interval_s,
        postcopy_bandwidth_mib_s=policy.postcopy_bandwidth_mib_s or None)


def upstream_config(policy: MigrationPolicy, plan: MigrationPlan,
                    nova_data_gib: float) -> upstream.UpstreamConfig:
    """Nova 34's settings; ``nova_data_gib`` as Nova counts it."""
    up = policy.upstream
    return upstream.UpstreamConfig(
        data_gib=nova_data_gib,
        downtime_ms=up.downtime_ms,
        downtime_steps=up.downtime_steps,
        downtime_delay_s=up.downtime_delay_s_per_gib,
        completion_timeout_s=up.completion_timeout_s_per_gib,
        timeout_action=up.timeout_action,
        postcopy_enabled=plan.postcopy_armed)


def wall_clock_deadline_s(policy: MigrationPolicy, size_gib: float,
                          nova_data_gib: float | None = None
                          ) -> float | None:
    """The deadline the monitor enforces by itself when libvirt is silent.

    The same deadline the controller works to (ours, or Nova's completion
    timeout in upstream mode); None when upstream Nova's is disabled.
    """
    if policy.mode == 'upstream':
        per_gib_s = policy.upstream.completion_timeout_s_per_gib
        if per_gib_s <= 0:
            return None
        size = (nova_data_gib if nova_data_gib is not None else size_gib)
        return float(per_gib_s) * size if size > 0 else None
    return deadline_s(policy, size_gib)


def decision_maker(policy: MigrationPolicy, plan: MigrationPlan,
                   memory_mib: float, disk_gib: float = 0.0,
                   nova_data_gib: float | None = None) -> ctl.DecisionMaker:
    """The controller the policy's mode asks for."""
    if policy.mode == 'upstream':
        size = (nova_data_gib if nova_data_gib is not None
                else upstream.nova_data_gib(memory_mib))
        return upstream.UpstreamController(
            upstream_config(policy, plan, size))
    return ctl.Controller(controller_config(
        policy, plan, data_gib(memory_mib, disk_gib)))
