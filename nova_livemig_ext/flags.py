"""Policy + host facts + instance facts -> libvirt flags and parameters.

Pure: no libvirt import, no Nova, no I/O.  libvirt's flag values and
parameter names are part of its public ABI (``libvirt-domain.h``), so they
are spelled here once; that keeps this module testable with Nova's fake
libvirt, which lacks most of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from nova_livemig_ext.policy import InvalidPolicy
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_ext.policy import Refusal

# virDomainMigrateFlags
FLAG_VALUES: Mapping[str, int] = {
    'VIR_MIGRATE_LIVE': 1 << 0,
    'VIR_MIGRATE_PEER2PEER': 1 << 1,
    'VIR_MIGRATE_TUNNELLED': 1 << 2,
    'VIR_MIGRATE_PERSIST_DEST': 1 << 3,
    'VIR_MIGRATE_UNDEFINE_SOURCE': 1 << 4,
    'VIR_MIGRATE_NON_SHARED_INC': 1 << 7,
    'VIR_MIGRATE_COMPRESSED': 1 << 11,
    'VIR_MIGRATE_AUTO_CONVERGE': 1 << 13,
    'VIR_MIGRATE_POSTCOPY': 1 << 15,
    'VIR_MIGRATE_TLS': 1 << 16,
    'VIR_MIGRATE_PARALLEL': 1 << 17,
    'VIR_MIGRATE_ZEROCOPY': 1 << 20,
}

PARAM_URI = 'migrate_uri'
PARAM_LISTEN_ADDRESS = 'listen_address'
PARAM_BANDWIDTH = 'bandwidth'
PARAM_BANDWIDTH_POSTCOPY = 'bandwidth.postcopy'
PARAM_AUTO_CONVERGE_INITIAL = 'auto_converge.initial'
PARAM_AUTO_CONVERGE_INCREMENT = 'auto_converge.increment'
PARAM_PARALLEL_CONNECTIONS = 'parallel.connections'
PARAM_COMPRESSION = 'compression'
PARAM_COMPRESSION_LEVEL = {'zlib': 'compression.zlib.level',
                           'zstd': 'compression.zstd.level'}


def version_int(major: int, minor: int = 0, micro: int = 0) -> int:
    """libvirt's encoding of versions: 11.3.0 -> 11003000."""
    return major * 1_000_000 + minor * 1_000 + micro


def version_str(version: int) -> str:
    return '%d.%d.%d' % (version // 1_000_000, version // 1_000 % 1_000,
                         version % 1_000)


@dataclass(frozen=True)
class Feature:
    """A migration feature and the oldest libvirt and QEMU that have it."""

    name: str
    options: tuple[str, ...]
    libvirt_min: int
    qemu_min: int
    binding_names: tuple[str, ...] = ()


FEATURES: Mapping[str, Feature] = {
    f.name: f for f in (
        Feature('native TLS', ('[livemig_ext] native_tls',),
                version_int(4, 4), version_int(2, 11),
                ('VIR_MIGRATE_TLS',)),
        Feature('parallel connections',
                ('[livemig_ext] parallel_connections',),
                version_int(5, 2), version_int(4, 0),
                ('VIR_MIGRATE_PARALLEL',
                 'VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS')),
        Feature('post-copy bandwidth',
                ('[livemig_ext] postcopy_bandwidth_mib_s',),
                version_int(5, 1), version_int(3, 0),
                ('VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY',)),
        Feature('auto-converge throttle settings',
                ('[livemig_ext] auto_converge_initial_pct',
                 '[livemig_ext] auto_converge_increment_pct'),
                version_int(2, 0), version_int(2, 7),
                ('VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL',
                 'VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT')),
        Feature('zlib/zstd multifd compression',
                ('[livemig_ext] compression',),
                version_int(9, 4), version_int(5, 0),
                ('VIR_MIGRATE_PARAM_COMPRESSION_ZLIB_LEVEL',
                 'VIR_MIGRATE_PARAM_COMPRESSION_ZSTD_LEVEL')),
        Feature('zero-copy', ('[livemig_ext] zero_copy',),
                version_int(8, 5), version_int(7, 1),
                ('VIR_MIGRATE_ZEROCOPY',)),
        Feature('post-copy with parallel connections',
                ('[livemig_ext] permit_post_copy',
                 '[livemig_ext] parallel_connections'),
                version_int(8, 0), version_int(10, 1)),
    )
}


@dataclass(frozen=True)
class HostFacts:
    """What this host's libvirt and QEMU can do, as libvirt reports it.

    ``binding_names`` are the ``VIR_MIGRATE_*`` names the libvirt Python
    binding defines; ``None`` when unknown (that check is then skipped).
    """

    libvirt_version: int
    qemu_version: int
    userfaultfd: bool
    binding_names: frozenset[str] | None = None


@dataclass(frozen=True)
class InstanceFacts:
    """What one instance brings to its migration."""

    memory_mib: int = 0
    disk_gib: int = 0
    block_migration: bool = False
    paused: bool = False
    has_vpmem: bool = False
    has_pci_passthrough: bool = False
    hugepage_size_kib: int | None = None
    has_sriov_port: bool = False
    has_mdev: bool = False
    # The guest's devices could not be read: post-copy is not risked.
    devices_unknown: bool = False


@dataclass(frozen=True)
class MigrationPlan:
    """The flags, parameters and ladder for one migration, with notes."""

    flags: int
    params: Mapping[str, object]
    ladder: tuple[str, ...]
    postcopy_armed: bool
    auto_converge_armed: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def flag_names(self) -> tuple[str, ...]:
        return flag_names(self.flags)


def flag_names(flags: int) -> tuple[str, ...]:
    """Names of the known flags set in ``flags``, lowest bit first."""
    return tuple(name for name, value in sorted(FLAG_VALUES.items(),
                                                key=lambda kv: kv[1])
                 if flags & value)


def _features_used(policy: MigrationPolicy) -> list[Feature]:
    used = []
    if policy.native_tls:
        used.append(FEATURES['native TLS'])
    if policy.parallel_connections > 1:
        used.append(FEATURES['parallel connections'])
    if policy.postcopy_bandwidth_mib_s and policy.permit_post_copy:
        used.append(FEATURES['post-copy bandwidth'])
    if 'auto_converge' in policy.ladder:
        used.append(FEATURES['auto-converge throttle settings'])
    if policy.compression in ('zlib', 'zstd'):
        used.append(FEATURES['zlib/zstd multifd compression'])
    if policy.zero_copy:
        used.append(FEATURES['zero-copy'])
    if policy.permit_post_copy and policy.parallel_connections > 1:
        used.append(FEATURES['post-copy with parallel connections'])
    return used


def host_refusals(policy: MigrationPolicy, host: HostFacts) -> list[Refusal]:
    """Reasons this host's libvirt or QEMU cannot run ``policy``."""
    refusals = []
    for feature in _features_used(policy):
        missing = []
        if host.libvirt_version < feature.libvirt_min:
            missing.append('libvirt %s (needs %s)' % (
                version_str(host.libvirt_version),
                version_str(feature.libvirt_min)))
        if host.qemu_version < feature.qemu_min:
            missing.append('QEMU %s (needs %s)' % (
                version_str(host.qemu_version),
                version_str(feature.qemu_min)))
        if host.binding_names is not None:
            absent = [n for n in feature.binding_names
                      if n not in host.binding_names]
            if absent:
                missing.append('libvirt-python lacks %s' % ', '.join(absent))
        if missing:
            refusals.append(Refusal(
                feature.options,
                '%s is not supported here: %s' % (feature.name,
                                                  '; '.join(missing)),
                'Upgrade, or turn the feature off.'))
    if policy.permit_post_copy and not host.userfaultfd:
        refusals.append(Refusal(
            ('[livemig_ext] permit_post_copy',),
            'post-copy needs userfaultfd, which QEMU cannot use on this '
            'host', 'Make /dev/userfaultfd available to QEMU (or set '
            'vm.unprivileged_userfaultfd = 1), or set permit_post_copy = '
            'False.'))
    return refusals


def check_policy(policy: MigrationPolicy, host: HostFacts) -> None:
    """Raise :class:`InvalidPolicy` if this host cannot run ``policy``."""
    refusals = host_refusals(policy, host)
    if refusals:
        raise InvalidPolicy(refusals)


def _effective_ladder(policy: MigrationPolicy, instance: InstanceFacts,
                      postcopy_armed: bool) -> tuple[tuple[str, ...],
                                                     list[str]]:
    notes = []
    ladder = list(policy.ladder)
    if policy.copy_mode == 'paused':
        kept = [r for r in ladder if r == 'abort']
        if kept != ladder:
            notes.append('paused copy: only the deadline abort applies')
        ladder = kept
    if 'postcopy' in ladder and not postcopy_armed:
        ladder.remove('postcopy')
    if 'pause' in ladder and instance.paused:
        ladder.remove('pause')
        notes.append('instance is already paused: pause rung removed')
    return tuple(ladder), notes


def _postcopy_blockers(instance: InstanceFacts) -> list[str]:
    """Instance facts that make post-copy impossible or harmful."""
    blockers = []
    if instance.paused:
        blockers.append('the instance is paused (libvirt refuses post-copy '
                        'for a paused domain)')
    if instance.has_vpmem:
        blockers.append('the instance has vPMEM devices, whose contents '
                        'post-copy cannot fetch on demand')
    if instance.has_pci_passthrough:
        blockers.append('the instance has PCI passthrough (VFIO) devices, '
                        'which do not support post-copy')
    if instance.has_sriov_port:
        blockers.append('the instance has SR-IOV or vDPA ports (devices that '
                        'write guest memory directly), which do not support '
                        'post-copy')
    if instance.has_mdev:
        blockers.append('the instance has mediated devices (vGPU), which do '
                        'not support post-copy')
    if instance.devices_unknown:
        blockers.append("the guest's devices could not be read")
    if instance.hugepage_size_kib and instance.hugepage_size_kib >= 1 << 20:
        blockers.append('the instance uses 1 GiB huge pages: every post-copy '
                        'page fault would wait for a whole GiB')
    return blockers


def plan_migration(policy: MigrationPolicy, host: HostFacts,
                   instance: InstanceFacts) -> MigrationPlan:
    """The libvirt flags and ``migrateToURI3`` parameters for one instance.

    The host is assumed checked by :func:`check_policy` at start; instance
    facts never refuse, they only remove what cannot apply, with a note.
    """
    del host  # checked once at start; kept for the callers' symmetry
    notes: list[str] = []
    names = ['VIR_MIGRATE_PERSIST_DEST', 'VIR_MIGRATE_UNDEFINE_SOURCE']
    if policy.copy_mode == 'live':
        names.append('VIR_MIGRATE_LIVE')
    if policy.peer_to_peer:
        names.append('VIR_MIGRATE_PEER2PEER')
    if policy.tunnelled:
        names.append('VIR_MIGRATE_TUNNELLED')
    if policy.native_tls:
        names.append('VIR_MIGRATE_TLS')
    if instance.block_migration:
        names.append('VIR_MIGRATE_NON_SHARED_INC')

    params: dict[str, object] = {PARAM_BANDWIDTH: policy.bandwidth_mib_s}
    live = policy.copy_mode == 'live'

    postcopy_armed = False
    if policy.permit_post_copy and live:
        blockers = _postcopy_blockers(instance)
        if blockers:
            notes.append('post-copy removed: %s' % '; '.join(blockers))
        else:
            postcopy_armed = True
            names.append('VIR_MIGRATE_POSTCOPY')
            if policy.postcopy_bandwidth_mib_s:
                params[PARAM_BANDWIDTH_POSTCOPY] = (
                    policy.postcopy_bandwidth_mib_s)

    auto_converge_armed = False
    if live and ('auto_converge' in policy.ladder or (
            policy.mode == 'upstream'
            and policy.upstream.permit_auto_converge
            and not policy.permit_post_copy)):
        auto_converge_armed = True
        names.append('VIR_MIGRATE_AUTO_CONVERGE')
        if policy.mode != 'upstream':
            params[PARAM_AUTO_CONVERGE_INITIAL] = (
                policy.auto_converge_initial_pct)
            params[PARAM_AUTO_CONVERGE_INCREMENT] = (
                policy.auto_converge_increment_pct)

    if policy.parallel_connections > 1:
        names.append('VIR_MIGRATE_PARALLEL')
        params[PARAM_PARALLEL_CONNECTIONS] = policy.parallel_connections
        if policy.zero_copy:
            names.append('VIR_MIGRATE_ZEROCOPY')
    if policy.compression != 'none':
        names.append('VIR_MIGRATE_COMPRESSED')
        params[PARAM_COMPRESSION] = policy.compression
        if policy.compression_level is not None:
            params[PARAM_COMPRESSION_LEVEL[policy.compression]] = (
                policy.compression_level)

    ladder, ladder_notes = _effective_ladder(policy, instance,
                                             postcopy_armed)
    flags = 0
    for name in names:
        flags |= FLAG_VALUES[name]
    return MigrationPlan(flags=flags, params=params, ladder=ladder,
                         postcopy_armed=postcopy_armed,
                         auto_converge_armed=auto_converge_armed,
                         notes=tuple(notes + ladder_notes))
