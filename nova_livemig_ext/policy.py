"""One frozen, validated migration policy built from configuration.

``policy_from_conf`` reads ``[livemig_ext]`` and the ``[libvirt]
live_migration_*`` options Nova owns, resolves inheritance (an unset transport
option takes Nova's value) and returns a :class:`MigrationPolicy`.  The checks
that need nothing but the policy live in :func:`policy_refusals`; the ones that
need the host's libvirt and QEMU are in :mod:`nova_livemig_ext.flags`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

RUNGS: tuple[str, ...] = ('downtime', 'auto_converge', 'postcopy', 'pause',
                          'abort')
ZLIB_MAX_LEVEL = 9
ZSTD_MAX_LEVEL = 20


@dataclass(frozen=True)
class UpstreamSettings:
    """Nova 34's own ``[libvirt]`` knobs, used by ``mode = upstream``."""

    downtime_ms: int = 500
    downtime_steps: int = 10
    downtime_delay_s_per_gib: int = 75
    completion_timeout_s_per_gib: int = 800
    timeout_action: str = 'abort'
    permit_post_copy: bool = False
    permit_auto_converge: bool = False
    bandwidth_mib_s: int = 0


@dataclass(frozen=True)
class MigrationPolicy:
    """Everything that decides how one host migrates its guests."""

    mode: str = 'controller'
    copy_mode: str = 'live'
    peer_to_peer: bool = True
    tunnelled: bool = False
    native_tls: bool = False
    require_tls: bool = False
    parallel_connections: int = 1
    compression: str = 'none'
    compression_level: int | None = None
    zero_copy: bool = False
    bandwidth_mib_s: int = 0
    postcopy_bandwidth_mib_s: int = 0
    initial_downtime_ms: int = 300
    max_downtime_ms: int = 500
    downtime_steps: int = 3
    auto_converge_initial_pct: int = 20
    auto_converge_increment_pct: int = 10
    permit_post_copy: bool = False
    ladder: tuple[str, ...] = ('downtime', 'auto_converge', 'abort')
    stall_window_s: int = 60
    stall_passes: int = 2
    completion_timeout_s_per_gib: int = 120
    completion_timeout_max_s: int = 14400
    switchover_timeout_s: int = 60
    postcopy_recovery_timeout_s: int = 1800
    poll_interval_s: float = 0.5
    upstream: UpstreamSettings = UpstreamSettings()

    def replace(self, **changes: Any) -> MigrationPolicy:
        """A copy with ``changes`` applied (the policy itself is frozen)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Refusal:
    """One reason a configuration cannot be used, and how to fix it."""

    options: tuple[str, ...]
    problem: str
    fix: str

    def __str__(self) -> str:
        return '%s: %s. %s' % (', '.join(self.options), self.problem,
                               self.fix)


class InvalidPolicy(Exception):
    """The configuration was refused; the message lists every refusal."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = tuple(refusals)
        lines = ['nova-livemig-ext refuses this configuration:']
        lines += ['  - %s' % r for r in self.refusals]
        super().__init__('\n'.join(lines))


def _opt(group: str, name: str) -> str:
    return '[%s] %s' % (group, name)


def _inherit(own: Any, nova_value: Any, name: str, nova_name: str,
             refusals: list[Refusal], must_agree: bool = True) -> Any:
    """An unset option takes Nova's value.

    With ``must_agree`` a set one must also equal Nova's: Nova's own
    pre-checks (block migration, URIs) read the ``[libvirt]`` transport
    options, so two different answers would make Nova check one migration
    and libvirt run another.
    """
    if own is None:
        return nova_value
    if must_agree and own != nova_value:
        refusals.append(Refusal(
            (_opt('livemig_ext', name), _opt('libvirt', nova_name)),
            'set to %r and %r' % (own, nova_value),
            'Unset [livemig_ext] %s or give both the same value.' % name))
    return own


def policy_from_conf(conf: Any) -> MigrationPolicy:
    """Build the policy from ``conf``; raise :class:`InvalidPolicy`.

    ``conf`` is a ``ConfigOpts`` with the ``[livemig_ext]`` options and
    Nova's ``[libvirt]`` live-migration options registered.
    """
    own = conf.livemig_ext
    nova = conf.libvirt
    refusals: list[Refusal] = []
    tunnelled = _inherit(own.tunnelled, bool(nova.live_migration_tunnelled),
                         'tunnelled', 'live_migration_tunnelled', refusals)
    native_tls = _inherit(own.native_tls,
                          bool(nova.live_migration_with_native_tls),
                          'native_tls', 'live_migration_with_native_tls',
                          refusals)
    parallel = _inherit(own.parallel_connections,
                        int(nova.live_migration_parallel_connections or 1),
                        'parallel_connections',
                        'live_migration_parallel_connections', refusals,
                        must_agree=False)
    upstream = UpstreamSettings(
        downtime_ms=nova.live_migration_downtime,
        downtime_steps=nova.live_migration_downtime_steps,
        downtime_delay_s_per_gib=nova.live_migration_downtime_delay,
        completion_timeout_s_per_gib=nova.live_migration_completion_timeout,
        timeout_action=nova.live_migration_timeout_action,
        permit_post_copy=nova.live_migration_permit_post_copy,
        permit_auto_converge=nova.live_migration_permit_auto_converge,
        bandwidth_mib_s=nova.live_migration_bandwidth)
    policy = MigrationPolicy(
        mode=own.mode,
        copy_mode=own.copy_mode,
        peer_to_peer=own.peer_to_peer,
        tunnelled=tunnelled,
        native_tls=native_tls,
        require_tls=own.require_tls,
        parallel_connections=parallel,
        compression=own.compression,
        compression_level=own.compression_level,
        zero_copy=own.zero_copy,
        bandwidth_mib_s=own.bandwidth_mib_s,
        postcopy_bandwidth_mib_s=own.postcopy_bandwidth_mib_s,
        initial_downtime_ms=own.initial_downtime_ms,
        max_downtime_ms=own.max_downtime_ms,
        downtime_steps=own.downtime_steps,
        auto_converge_initial_pct=own.auto_converge_initial_pct,
        auto_converge_increment_pct=own.auto_converge_increment_pct,
        permit_post_copy=own.permit_post_copy,
        ladder=tuple(r.strip() for r in own.ladder),
        stall_window_s=own.stall_window_s,
        stall_passes=own.stall_passes,
        completion_timeout_s_per_gib=own.completion_timeout_s_per_gib,
        completion_timeout_max_s=own.completion_timeout_max_s,
        switchover_timeout_s=own.switchover_timeout_s,
        postcopy_recovery_timeout_s=own.postcopy_recovery_timeout_s,
        poll_interval_s=own.poll_interval_s,
        upstream=upstream)
    if policy.mode == 'upstream':
        policy = upstream_policy(policy)
    refusals += policy_refusals(policy)
    if refusals:
        raise InvalidPolicy(refusals)
    return policy


def upstream_policy(policy: MigrationPolicy) -> MigrationPolicy:
    """Nova 34's choices: post-copy wins over auto-converge, no ladder."""
    up = policy.upstream
    return policy.replace(
        copy_mode='live', peer_to_peer=True, compression='none',
        compression_level=None, zero_copy=False,
        bandwidth_mib_s=up.bandwidth_mib_s, postcopy_bandwidth_mib_s=0,
        permit_post_copy=up.permit_post_copy,
        max_downtime_ms=max(up.downtime_ms, policy.initial_downtime_ms),
        ladder=())


def _ladder_refusals(policy: MigrationPolicy) -> list[Refusal]:
    opt = _opt('livemig_ext', 'ladder')
    refusals = []
    unknown = [r for r in policy.ladder if r not in RUNGS]
    if unknown:
        refusals.append(Refusal(
            (opt,), 'unknown rung(s) %s' % ', '.join(unknown),
            'Use only %s.' % ', '.join(RUNGS)))
    repeated = sorted({r for r in policy.ladder if policy.ladder.count(r) > 1})
    if repeated:
        refusals.append(Refusal(
            (opt,), 'rung(s) %s listed more than once' % ', '.join(repeated),
            'List each rung at most once, in the order to try them.'))
    if 'abort' in policy.ladder and policy.ladder[-1] != 'abort':
        refusals.append(Refusal(
            (opt,), "'abort' is followed by %s, which could never be reached"
            % ', '.join(policy.ladder[policy.ladder.index('abort') + 1:]),
            "Put 'abort' last or remove the rungs after it."))
    if 'postcopy' in policy.ladder and not policy.permit_post_copy:
        refusals.append(Refusal(
            (opt, _opt('livemig_ext', 'permit_post_copy')),
            "the ladder has 'postcopy' but post-copy is not permitted",
            "Set permit_post_copy = True or remove 'postcopy' from ladder."))
    return refusals


def _transport_refusals(policy: MigrationPolicy) -> list[Refusal]:
    lm = 'livemig_ext'
    refusals = []
    if policy.tunnelled and policy.native_tls:
        refusals.append(Refusal(
            (_opt(lm, 'tunnelled'), _opt(lm, 'native_tls')),
            'tunnelled migration cannot also use native TLS',
            'Choose one; native TLS is faster and supports block migration.'))
    if policy.tunnelled and not policy.peer_to_peer:
        refusals.append(Refusal(
            (_opt(lm, 'tunnelled'), _opt(lm, 'peer_to_peer')),
            'tunnelled migration needs peer-to-peer',
            'Set peer_to_peer = True or tunnelled = False.'))
    if policy.tunnelled and policy.parallel_connections > 1:
        refusals.append(Refusal(
            (_opt(lm, 'tunnelled'), _opt(lm, 'parallel_connections')),
            'tunnelled migration has a single stream, parallel_connections '
            'is %d' % policy.parallel_connections,
            'Set parallel_connections = 1 or tunnelled = False.'))
    if policy.tunnelled and policy.permit_post_copy:
        refusals.append(Refusal(
            (_opt(lm, 'tunnelled'), _opt(lm, 'permit_post_copy')),
            'libvirt cannot run post-copy over a tunnelled connection',
            'Set permit_post_copy = False or tunnelled = False.'))
    if policy.require_tls and not policy.native_tls:
        refusals.append(Refusal(
            (_opt(lm, 'require_tls'), _opt(lm, 'native_tls')),
            'TLS is required but native TLS is off',
            'Set native_tls = True (with TLS certificates for QEMU) or '
            'require_tls = False.'))
    if policy.zero_copy:
        if policy.parallel_connections < 2:
            refusals.append(Refusal(
                (_opt(lm, 'zero_copy'), _opt(lm, 'parallel_connections')),
                'zero-copy works only with parallel connections',
                'Set parallel_connections to 2 or more, or zero_copy = '
                'False.'))
        if policy.compression != 'none':
            refusals.append(Refusal(
                (_opt(lm, 'zero_copy'), _opt(lm, 'compression')),
                'zero-copy sends guest pages as they are and cannot '
                'compress them', 'Set compression = none or zero_copy = '
                'False.'))
        if policy.native_tls:
            refusals.append(Refusal(
                (_opt(lm, 'zero_copy'), _opt(lm, 'native_tls')),
                'zero-copy cannot be combined with TLS',
                'Set zero_copy = False or native_tls = False.'))
    return refusals


def _compression_refusals(policy: MigrationPolicy) -> list[Refusal]:
    method = _opt('livemig_ext', 'compression')
    level = _opt('livemig_ext', 'compression_level')
    parallel = _opt('livemig_ext', 'parallel_connections')
    refusals = []
    if policy.compression == 'xbzrle' and policy.parallel_connections > 1:
        refusals.append(Refusal(
            (method, parallel),
            'xbzrle compresses a single stream only',
            'Use zlib or zstd with parallel connections, or set '
            'parallel_connections = 1.'))
    if (policy.compression in ('zlib', 'zstd')
            and policy.parallel_connections < 2):
        refusals.append(Refusal(
            (method, parallel),
            '%s compression works only on parallel connections'
            % policy.compression,
            'Set parallel_connections to 2 or more, or use xbzrle.'))
    if policy.compression_level is not None:
        top = {'zlib': ZLIB_MAX_LEVEL, 'zstd': ZSTD_MAX_LEVEL}.get(
            policy.compression)
        if top is None:
            refusals.append(Refusal(
                (level, method),
                'a level is set but %s compression has none'
                % policy.compression,
                'Unset compression_level or use zlib or zstd.'))
        elif not 0 <= policy.compression_level <= top:
            refusals.append(Refusal(
                (level,), '%d is outside 0..%d for %s'
                % (policy.compression_level, top, policy.compression),
                'Choose a level from 0 to %d.' % top))
    return refusals


def _number_refusals(policy: MigrationPolicy) -> list[Refusal]:
    lm = 'livemig_ext'
    refusals = []
    # oslo.config's float type lets NaN through any min/max check; a policy
    # built without it (tests, tools) gets the same guard.
    if not (math.isfinite(policy.poll_interval_s)
            and policy.poll_interval_s > 0):
        refusals.append(Refusal(
            (_opt(lm, 'poll_interval_s'),),
            '%r is not a positive finite number of seconds'
            % policy.poll_interval_s,
            'Set a value from 0.1 to 10.'))
    if policy.initial_downtime_ms > policy.max_downtime_ms:
        refusals.append(Refusal(
            (_opt(lm, 'initial_downtime_ms'), _opt(lm, 'max_downtime_ms')),
            'initial downtime %d ms is above the maximum %d ms'
            % (policy.initial_downtime_ms, policy.max_downtime_ms),
            'Raise max_downtime_ms or lower initial_downtime_ms.'))
    if (policy.postcopy_bandwidth_mib_s and policy.permit_post_copy is False
            and policy.mode == 'controller'):
        refusals.append(Refusal(
            (_opt(lm, 'postcopy_bandwidth_mib_s'),
             _opt(lm, 'permit_post_copy')),
            'a post-copy bandwidth is set but post-copy is not permitted',
            'Set permit_post_copy = True or postcopy_bandwidth_mib_s = 0.'))
    if policy.completion_timeout_max_s < policy.switchover_timeout_s:
        refusals.append(Refusal(
            (_opt(lm, 'completion_timeout_max_s'),
             _opt(lm, 'switchover_timeout_s')),
            'the deadline cap %d s is shorter than the switchover timeout '
            '%d s' % (policy.completion_timeout_max_s,
                      policy.switchover_timeout_s),
            'Raise completion_timeout_max_s.'))
    return refusals


def policy_refusals(policy: MigrationPolicy) -> list[Refusal]:
    """Every reason ``policy`` is unusable on any host."""
    return (_ladder_refusals(policy) + _transport_refusals(policy)
            + _compression_refusals(policy) + _number_refusals(policy))
