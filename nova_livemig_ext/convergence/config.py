"""What the controller is told: the ladder's rungs and its validated config.

The policy builds a :class:`ControllerConfig` from the operator's options
and the instance's overrides; :func:`config_problems` says, in sentences,
everything wrong with one, and the config refuses to exist with any.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nova_livemig_ext.convergence import estimator

RUNG_DOWNTIME = 'downtime'
RUNG_AUTO_CONVERGE = 'auto_converge'
RUNG_POSTCOPY = 'postcopy'
RUNG_PAUSE = 'pause'
RUNG_ABORT = 'abort'
RUNGS = (RUNG_DOWNTIME, RUNG_AUTO_CONVERGE, RUNG_POSTCOPY, RUNG_PAUSE,
         RUNG_ABORT)
DEFAULT_LADDER = RUNGS


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """Everything the controller needs, validated once.

    Built by the policy from the operator's options and the instance's
    overrides; the defaults here are only what the tests start from.
    """

    ladder: tuple[str, ...] = DEFAULT_LADDER
    initial_downtime_ms: int = 300
    max_downtime_ms: int = 1000
    # Steps between the initial and the maximum downtime (linear).
    downtime_steps: int = 4
    # VIR_MIGRATE_POSTCOPY was set when the job started.
    postcopy_armed: bool = False
    # This instance may run on the destination before its memory is there.
    postcopy_allowed: bool = False
    pause_allowed: bool = False
    # VIR_MIGRATE_AUTO_CONVERGE was set when the job started, with these
    # throttle steps (QEMU's cpu-throttle-initial and -increment).
    auto_converge_armed: bool = False
    auto_converge_initial_pct: int = 20
    auto_converge_increment_pct: int = 10
    # The operator's cap on the deadline (the deadline itself when
    # deadline_link_multiple is None).
    deadline_s: float = 3600.0
    # Deadline = this × data / measured bandwidth, floored and capped.
    deadline_link_multiple: float | None = None
    deadline_floor_s: float = 120.0
    # Bytes the migration moves (memory, plus disks for a block migration);
    # None: the memory libvirt reports.
    transfer_bytes: int | None = None
    # Migrations sharing the link when this one starts (the host knows).
    concurrent_migrations: int = 1
    switchover_timeout_s: float = 60.0
    stall_patience_passes: int = 2
    stall_window_s: float = 120.0
    min_pass_progress_fraction: float = 0.05
    bandwidth_collapse_fraction: float = 0.1
    network_stall_window_s: float = 10.0
    poll_interval_s: float = 0.5
    downtime_chance_passes: int = 1
    auto_converge_chance_passes: int = 4
    # Lifted to before a pause, when set (libvirt's unit is MiB/s).
    max_bandwidth_mib_s: int | None = None
    # Post-copy bandwidth set before switching, when set.
    postcopy_bandwidth_mib_s: int | None = None
    # The operator's ceiling on the guest's longest stop, in seconds: no
    # rung predicted to stop the guest longer is entered, and the rungs
    # within it are ranked by the work the guest loses.  None: no ceiling,
    # the rung with the shortest stop wins (see pricing.rank_rungs).
    max_guest_stop_s: float | None = None
    estimator: estimator.EstimatorConfig = estimator.EstimatorConfig()

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            raise ValueError('invalid controller config: '
                             + '; '.join(problems))


def _ladder_problems(ladder: Sequence[str]) -> list[str]:
    problems = []
    unknown = [r for r in ladder if r not in RUNGS]
    if unknown:
        problems.append(f'unknown rungs {unknown}; known rungs are '
                        f'{list(RUNGS)}')
    if len(set(ladder)) != len(ladder):
        problems.append(f'rungs repeat in {list(ladder)}')
    if RUNG_ABORT in ladder and ladder[-1] != RUNG_ABORT:
        problems.append('abort must be the last rung')
    return problems


def config_problems(config: ControllerConfig) -> list[str]:
    """Everything wrong with a config, as sentences."""
    problems = _ladder_problems(config.ladder)
    if config.initial_downtime_ms <= 0:
        problems.append('initial_downtime_ms must be positive')
    if config.max_downtime_ms < config.initial_downtime_ms:
        problems.append('max_downtime_ms must be at least '
                        'initial_downtime_ms')
    if config.downtime_steps < 1:
        problems.append('downtime_steps must be at least 1')
    for name in ('deadline_s', 'switchover_timeout_s', 'stall_window_s',
                 'network_stall_window_s', 'poll_interval_s',
                 'deadline_floor_s'):
        if not getattr(config, name) > 0:
            problems.append(f'{name} must be positive')
    multiple = config.deadline_link_multiple
    if multiple is not None and not multiple >= 1:
        problems.append('deadline_link_multiple must be at least 1 (the '
                        'first pass alone takes data / bandwidth)')
    if config.transfer_bytes is not None and config.transfer_bytes <= 0:
        problems.append('transfer_bytes must be positive when set')
    if config.concurrent_migrations < 1:
        problems.append('concurrent_migrations must be at least 1')
    for name in ('stall_patience_passes', 'downtime_chance_passes',
                 'auto_converge_chance_passes'):
        if getattr(config, name) < 1:
            problems.append(f'{name} must be at least 1')
    for name in ('min_pass_progress_fraction', 'bandwidth_collapse_fraction'):
        if not 0 < getattr(config, name) < 1:
            problems.append(f'{name} must be between 0 and 1')
    ceiling = config.max_guest_stop_s
    if ceiling is not None and not ceiling > 0:
        problems.append('max_guest_stop_s must be positive when set')
    for name in ('max_bandwidth_mib_s', 'postcopy_bandwidth_mib_s'):
        value = getattr(config, name)
        if value is not None and value <= 0:
            problems.append(f'{name} must be positive when set')
    return problems
