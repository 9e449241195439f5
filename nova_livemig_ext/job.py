"""One migration's decision maker, from its policy and plan.

The Nova driver and the command line both build the controller here, so a
migration is steered the same way whoever started it.
"""

from __future__ import annotations

from collections.abc import Callable

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import upstream
from nova_livemig_ext.flags import MigrationPlan
from nova_livemig_ext.policy import MigrationPolicy

MIB = 1024 * 1024
GIB = 1024 * MIB


def data_gib(memory_mib: float, disk_gib: float = 0.0) -> float:
    """What a migration moves: guest memory plus copied disks, in GiB."""
    return memory_mib / 1024.0 + disk_gib


# The deadline follows the link: this many times data / bandwidth.  A pass
# of the whole memory takes data / bandwidth; the bulk pass, two passes to
# see a plateau, a pass for the downtime rung, four of throttling and the
# post-copy pull fit in eight when the working set is most of the memory,
# and a converging guest with a dirty ratio up to 0.87 (1 / (1 - λ) = 8)
# finishes without help.
DEFAULT_DEADLINE_LINK_MULTIPLE = 8.0
# Small guests on fast links still get one stall window and a switchover.
DEFAULT_DEADLINE_FLOOR_S = 120.0


def _policy_number(policy: MigrationPolicy, name: str,
                   default: float) -> float:
    """An option the policy may not carry yet; its default otherwise."""
    value = getattr(policy, name, None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def deadline_link_multiple(policy: MigrationPolicy) -> float:
    return _policy_number(policy, 'deadline_link_multiple',
                          DEFAULT_DEADLINE_LINK_MULTIPLE)


def deadline_floor_s(policy: MigrationPolicy) -> float:
    return _policy_number(policy, 'deadline_floor_s',
                          DEFAULT_DEADLINE_FLOOR_S)


def deadline_s(policy: MigrationPolicy, size_gib: float) -> float:
    """The operator's cap on the deadline.

    ``completion_timeout_max_s``, and ``completion_timeout_s_per_gib`` ×
    size when that is set (above 0).  The deadline itself follows the link
    below it (:func:`controller_config`).
    """
    cap_s = float(policy.completion_timeout_max_s)
    per_gib_s = policy.completion_timeout_s_per_gib
    if per_gib_s and per_gib_s > 0:
        return ctl.migration_deadline_s(max(size_gib, 1.0 / 1024),
                                        per_gib_s, cap_s)
    return cap_s


def controller_config(policy: MigrationPolicy, plan: MigrationPlan,
                      size_gib: float, concurrent_migrations: int = 1
                      ) -> ctl.ControllerConfig:
    """Our controller's settings for one migration.

    ``concurrent_migrations``: migrations from this host running when this
    one starts, itself included.
    """
    return ctl.ControllerConfig(
        ladder=plan.ladder,
        initial_downtime_ms=policy.initial_downtime_ms,
        max_downtime_ms=policy.max_downtime_ms,
        max_guest_stop_s=policy.max_guest_stop_s,
        downtime_steps=policy.downtime_steps,
        # Instance facts already removed post-copy from the plan when it
        # cannot work for this instance.
        postcopy_armed=plan.postcopy_armed,
        postcopy_allowed=plan.postcopy_armed,
        pause_allowed='pause' in plan.ladder,
        auto_converge_armed=plan.auto_converge_armed,
        auto_converge_initial_pct=policy.auto_converge_initial_pct,
        auto_converge_increment_pct=policy.auto_converge_increment_pct,
        deadline_s=deadline_s(policy, size_gib),
        deadline_link_multiple=deadline_link_multiple(policy),
        deadline_floor_s=min(deadline_floor_s(policy),
                             deadline_s(policy, size_gib)),
        transfer_bytes=max(1, int(size_gib * GIB)),
        concurrent_migrations=max(1, concurrent_migrations),
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

    Nova's completion timeout in upstream mode (None when disabled); ours
    otherwise, at most: the operator's cap.  Our controller's deadline
    follows the link below it (``Controller.deadline_s``).
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
                   nova_data_gib: float | None = None,
                   link_shares: Callable[[], int] | None = None
                   ) -> ctl.DecisionMaker:
    """The controller the policy's mode asks for.

    ``link_shares`` counts the migrations from this host running now, this
    one included: ours then reads a fair share of the link as such, not as
    a stalled link, and gives the deadline the time the share needs.
    """
    if policy.mode == 'upstream':
        size = (nova_data_gib if nova_data_gib is not None
                else upstream.nova_data_gib(memory_mib))
        return upstream.UpstreamController(
            upstream_config(policy, plan, size))
    shares = _shares_at_start(link_shares)
    return ctl.Controller(controller_config(
        policy, plan, data_gib(memory_mib, disk_gib), shares), link_shares)


def _shares_at_start(link_shares: Callable[[], int] | None) -> int:
    if link_shares is None:
        return 1
    try:
        return max(1, int(link_shares()))
    except Exception:  # a bad count must not stop the migration
        return 1
