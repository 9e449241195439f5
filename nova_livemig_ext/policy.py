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
DEFAULT_LADDER: tuple[str, ...] = ('downtime', 'auto_converge', 'abort')
DEFAULT_INITIAL_DOWNTIME_MS = 300
DEFAULT_DOWNTIME_STEPS = 3
# 0: no per-GiB cap, the deadline follows the link (deadline_link_multiple).
DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB = 0
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
    # The ceiling on the guest's longest stop (None: none stated).
    max_guest_stop_s: float | None = None
    downtime_steps: int = 3
    auto_converge_initial_pct: int = 50
    auto_converge_increment_pct: int = 20
    permit_post_copy: bool = False
    ladder: tuple[str, ...] = ('downtime', 'auto_converge', 'abort')
    stall_window_s: int = 60
    stall_passes: int = 2
    completion_timeout_s_per_gib: int = DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB
    completion_timeout_max_s: int = 14400
    deadline_link_multiple: float = 8.0
    deadline_floor_s: int = 120
    switchover_timeout_s: int = 60
    postcopy_recovery_timeout_s: int = 1800
    postcopy_resume: str = 'auto'
    postcopy_give_back_address: str = 'tcp:127.0.0.1'
    destination_libvirt_uri: str | None = None
    poll_interval_s: float = 0.5
    ignore_image_properties: bool = False
    image_deadline_floor_s: int = 300
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

    def one_line(self) -> str:
        """Every refusal on one line, for a log or an exception."""
        return 'nova-livemig-ext refuses this configuration: %s' % ' | '.join(
            str(r) for r in self.refusals)


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


# How each of Nova's ``[libvirt] live_migration_*`` options is treated in
# mode = controller (the configuration guide has the same table).
HONOURED = 'honoured by Nova'
INHERITED = 'inherited by [livemig_ext] %s when that is unset; both set must agree'
NOVA_LIVE_MIGRATION_OPTIONS: dict[str, str] = {
    'live_migration_scheme': HONOURED,
    'live_migration_inbound_addr': HONOURED,
    'live_migration_uri': HONOURED,
    'live_migration_monitor_interval': HONOURED,
    'live_migration_tunnelled': INHERITED % 'tunnelled',
    'live_migration_with_native_tls': INHERITED % 'native_tls',
    'live_migration_parallel_connections':
        INHERITED % 'parallel_connections',
    'live_migration_bandwidth': INHERITED % 'bandwidth_mib_s',
    'live_migration_downtime': INHERITED % 'max_downtime_ms',
    'live_migration_downtime_steps': INHERITED % 'downtime_steps',
    'live_migration_completion_timeout':
        INHERITED % 'completion_timeout_s_per_gib' + '; 0 is refused',
    'live_migration_permit_post_copy': INHERITED % 'permit_post_copy',
    'live_migration_permit_auto_converge':
        'decides whether an unset [livemig_ext] ladder has auto_converge; '
        'a ladder set must agree',
    'live_migration_timeout_action':
        'force_complete puts pause (or postcopy) in an unset [livemig_ext] '
        'ladder; a ladder set must have one of them',
    'live_migration_downtime_delay':
        'refused when set: the controller raises the downtime on stalls',
}


def nova_option_set(conf: Any, name: str, group: str = 'libvirt') -> bool:
    """Whether an operator set ``[group] name`` (a file, the command line,
    the environment or an override), rather than leaving its default.

    False for an option the running Nova does not have.
    """
    try:
        info = conf._get_opt_info(name, group)
    except AttributeError:  # oslo's NoSuchOptError: an older Nova
        return False
    except Exception:  # noqa: BLE001 - a test double without it
        info = None
    if info is not None and 'override' in info:
        return True
    try:
        where = conf.get_location(name, group)
    except Exception:  # noqa: BLE001 - an older oslo.config
        where = None
    if where is not None:
        # oslo.config leaves 'set_override' as the location of a default
        # once an override is cleared: only real sources count.
        return where.location.name in ('user', 'command_line',
                                       'environment')
    if info is None:
        return True
    return bool(getattr(conf, group)[name] != info['opt'].default)


def nova_value(conf: Any, name: str, absent: Any) -> Any:
    """``[libvirt] name``, or ``absent`` when the running Nova has no such
    option (``live_migration_parallel_connections`` came with Nova 33)."""
    try:
        return conf.libvirt[name]
    except AttributeError:  # oslo's NoSuchOptError
        return absent


@dataclass(frozen=True)
class _Shared:
    """One of our options that has an equivalent in ``[libvirt]``."""

    own: str
    nova: str
    default: Any
    low: int
    high: int
    # Nova's value where the running Nova lacks the option.
    absent: Any = None


_SHARED: tuple[_Shared, ...] = (
    _Shared('bandwidth_mib_s', 'live_migration_bandwidth', None, 0, 1048576),
    _Shared('max_downtime_ms', 'live_migration_downtime', None, 100, 60000),
    _Shared('downtime_steps', 'live_migration_downtime_steps',
            DEFAULT_DOWNTIME_STEPS, 1, 100),
    _Shared('parallel_connections', 'live_migration_parallel_connections',
            None, 1, 255, absent=1),
    _Shared('completion_timeout_s_per_gib',
            'live_migration_completion_timeout',
            DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB, 1, 86400),
)


def _shared_value(conf: Any, shared: _Shared,
                  refusals: list[Refusal]) -> Any:
    """Ours when set, else Nova's when set (or its default), else ours.

    ``shared.default`` None means Nova's value, set or not, is the default.
    An operator's value in both places must be the same: nothing is
    silently overridden.
    """
    own = conf.livemig_ext[shared.own]
    theirs = nova_value(conf, shared.nova, shared.absent)
    nova_set = nova_option_set(conf, shared.nova)
    if own is not None:
        if nova_set and own != theirs:
            refusals.append(Refusal(
                (_opt('livemig_ext', shared.own), _opt('libvirt', shared.nova)),
                'set to %r and %r' % (own, theirs),
                'Unset one of them or give both the same value.'))
        return own
    if not nova_set and shared.default is not None:
        return shared.default
    if theirs is None or not shared.low <= theirs <= shared.high:
        refusals.append(Refusal(
            (_opt('libvirt', shared.nova),),
            '%r cannot be used by nova-livemig-ext (%s from %d to %d)'
            % (theirs, _opt('livemig_ext', shared.own), shared.low,
               shared.high),
            'Set %s to a value in that range.'
            % _opt('livemig_ext', shared.own)))
        return shared.default if shared.default is not None else shared.low
    return theirs


def _nova_only_refusals(conf: Any) -> list[Refusal]:
    """``[libvirt]`` options set by an operator that the controller has no
    use for: refused rather than silently ignored."""
    refusals = []
    if nova_option_set(conf, 'live_migration_downtime_delay'):
        refusals.append(Refusal(
            (_opt('libvirt', 'live_migration_downtime_delay'),),
            'set to %r, but in mode = controller the downtime is raised when '
            'progress stalls, not on a timer'
            % conf.libvirt.live_migration_downtime_delay,
            'Remove it (tune [livemig_ext] stall_window_s and stall_passes '
            'instead) or set [livemig_ext] mode = upstream.'))
    return refusals


def _ladder_from_conf(conf: Any, permit_post_copy: bool,
                      refusals: list[Refusal]) -> tuple[str, ...]:
    """Our ladder, or one built from Nova's options when ours is unset.

    ``live_migration_permit_auto_converge`` and
    ``live_migration_timeout_action``, when an operator set them, say which
    rungs Nova would use; a ladder of ours must then agree.  Unset, the
    ladder also holds ``pause`` when ``max_guest_stop_s`` is set: a pause
    within the operator's ceiling is a remedy the controller may price.
    """
    own = conf.livemig_ext.ladder
    auto_set = nova_option_set(conf, 'live_migration_permit_auto_converge')
    auto = bool(conf.libvirt.live_migration_permit_auto_converge)
    action_set = nova_option_set(conf, 'live_migration_timeout_action')
    force = conf.libvirt.live_migration_timeout_action == 'force_complete'
    if own is None:
        ladder = [r for r in DEFAULT_LADDER
                  if r != 'auto_converge' or auto or not auto_set]
        if permit_post_copy:
            ladder.insert(ladder.index('abort'), 'postcopy')
        if (conf.livemig_ext.max_guest_stop_s is not None
                or (action_set and force and not permit_post_copy)):
            ladder.insert(ladder.index('abort'), 'pause')
        return tuple(ladder)
    ladder = [r.strip() for r in own]
    ladder_opt = _opt('livemig_ext', 'ladder')
    auto_opt = _opt('libvirt', 'live_migration_permit_auto_converge')
    if auto_set and auto != ('auto_converge' in ladder):
        refusals.append(Refusal(
            (ladder_opt, auto_opt),
            '%s is %s but the ladder %s auto_converge'
            % (auto_opt, auto, 'lacks' if auto else 'has'),
            'Unset %s or make the ladder agree.' % auto_opt))
    if action_set and force and not {'postcopy', 'pause'} & set(ladder):
        action_opt = _opt('libvirt', 'live_migration_timeout_action')
        refusals.append(Refusal(
            (ladder_opt, action_opt),
            '%s = force_complete but the ladder has neither postcopy nor '
            'pause' % action_opt,
            'Add pause (or postcopy) before abort, or unset %s.'
            % action_opt))
    return tuple(ladder)


def policy_from_conf(conf: Any) -> MigrationPolicy:
    """Build the policy from ``conf``; raise :class:`InvalidPolicy`.

    ``conf`` is a ``ConfigOpts`` with the ``[livemig_ext]`` options and
    Nova's ``[libvirt]`` live-migration options registered.  Every
    ``[libvirt] live_migration_*`` option is honoured by Nova (URIs, the
    monitor interval), inherited by the equivalent option of ours when that
    is unset, or refused here when it conflicts with ours or has no
    equivalent (see the configuration guide).
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
    upstream = UpstreamSettings(
        downtime_ms=nova.live_migration_downtime,
        downtime_steps=nova.live_migration_downtime_steps,
        downtime_delay_s_per_gib=nova.live_migration_downtime_delay,
        completion_timeout_s_per_gib=nova.live_migration_completion_timeout,
        timeout_action=nova.live_migration_timeout_action,
        permit_post_copy=nova.live_migration_permit_post_copy,
        permit_auto_converge=nova.live_migration_permit_auto_converge,
        bandwidth_mib_s=nova.live_migration_bandwidth)
    # In upstream mode Nova's options rule and ours are not read: nothing
    # there can conflict.
    nova_refusals: list[Refusal] = []
    shared = {s.own: _shared_value(conf, s, nova_refusals) for s in _SHARED}
    permit_post_copy = _inherit(
        own.permit_post_copy, bool(nova.live_migration_permit_post_copy),
        'permit_post_copy', 'live_migration_permit_post_copy',
        nova_refusals, must_agree=nova_option_set(
            conf, 'live_migration_permit_post_copy'))
    ladder = _ladder_from_conf(conf, permit_post_copy, nova_refusals)
    nova_refusals += _nova_only_refusals(conf)
    max_downtime_ms = shared['max_downtime_ms']
    initial_downtime_ms = own.initial_downtime_ms
    if initial_downtime_ms is None:
        initial_downtime_ms = min(DEFAULT_INITIAL_DOWNTIME_MS,
                                  max_downtime_ms)
    policy = MigrationPolicy(
        mode=own.mode,
        copy_mode=own.copy_mode,
        peer_to_peer=own.peer_to_peer,
        tunnelled=tunnelled,
        native_tls=native_tls,
        require_tls=own.require_tls,
        parallel_connections=shared['parallel_connections'],
        compression=own.compression,
        compression_level=own.compression_level,
        zero_copy=own.zero_copy,
        bandwidth_mib_s=shared['bandwidth_mib_s'],
        postcopy_bandwidth_mib_s=own.postcopy_bandwidth_mib_s,
        initial_downtime_ms=initial_downtime_ms,
        max_downtime_ms=max_downtime_ms,
        max_guest_stop_s=own.max_guest_stop_s,
        downtime_steps=shared['downtime_steps'],
        auto_converge_initial_pct=own.auto_converge_initial_pct,
        auto_converge_increment_pct=own.auto_converge_increment_pct,
        permit_post_copy=permit_post_copy,
        ladder=ladder,
        stall_window_s=own.stall_window_s,
        stall_passes=own.stall_passes,
        completion_timeout_s_per_gib=shared['completion_timeout_s_per_gib'],
        completion_timeout_max_s=own.completion_timeout_max_s,
        deadline_link_multiple=own.deadline_link_multiple,
        deadline_floor_s=own.deadline_floor_s,
        switchover_timeout_s=own.switchover_timeout_s,
        postcopy_recovery_timeout_s=own.postcopy_recovery_timeout_s,
        postcopy_resume=own.postcopy_resume,
        postcopy_give_back_address=own.postcopy_give_back_address,
        destination_libvirt_uri=own.destination_libvirt_uri,
        poll_interval_s=own.poll_interval_s,
        ignore_image_properties=own.ignore_image_properties,
        image_deadline_floor_s=own.image_deadline_floor_s,
        upstream=upstream)
    if policy.mode == 'upstream':
        policy = upstream_policy(policy)
    else:
        refusals += nova_refusals
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
    if not policy.peer_to_peer:
        # Without VIR_MIGRATE_PEER2PEER, virDomainMigrateToURI3 (Nova's call
        # and ours) asks for a direct migration, which libvirt's QEMU
        # driver does not implement.
        refusals.append(Refusal(
            (_opt(lm, 'peer_to_peer'),),
            "direct migration is refused by libvirt's QEMU driver",
            'Set peer_to_peer = True (or remove it).'))
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
    ceiling = policy.max_guest_stop_s
    if ceiling is not None and not (math.isfinite(ceiling) and ceiling > 0):
        refusals.append(Refusal(
            (_opt(lm, 'max_guest_stop_s'),),
            '%r is not a positive finite number of seconds' % ceiling,
            'Set a value from 0.1 to 3600, or leave it unset.'))
    elif ceiling is not None and policy.max_downtime_ms > ceiling * 1000:
        refusals.append(Refusal(
            (_opt(lm, 'max_guest_stop_s'), _opt(lm, 'max_downtime_ms')),
            'the downtime limit may reach %d ms, beyond the %g s the guest '
            'may be stopped' % (policy.max_downtime_ms, ceiling),
            'Lower max_downtime_ms or raise max_guest_stop_s.'))
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
