"""The benchmark again with one assumption or one option changed.

Each :class:`Variant` changes one thing, for a few policies, on the
workloads it can change:

* ``stream``: what one migration stream (one multifd channel) moves at
  most.  ``workloads.STREAM_LIMIT_BYTES_S`` is an assumption (a CPU-bound
  QEMU migration thread, no TLS) and KubeVirt's 8 multifd channels are
  faster than one stream only where it binds.  A workload whose link
  carries no more than the smaller of the two limits cannot change and
  keeps its row of the main grid.
* ``sync``: the dirty-bitmap sync cost per GiB (KVM's is assumed; the lab
  measures TCG's, ``benchmarks/synccost.py``).
* ``timeout``: ``[livemig_ext] completion_timeout_max_s`` lower than the
  shipped 4 h (which equals the benchmark's horizon).  Only workloads
  whose controller configuration it changes are run again.  The shipped
  default is not changed by this table.
* ``stop-ceiling``: ``[livemig_ext] max_guest_stop_s`` set (the ladder then
  gains a pause within it, as an unset ladder does on a host): what the
  operator's ceiling buys in work lost and costs in the longest stop.
  Every workload is run again.  Not a default.
* ``contention``: traffic the host does not own takes a share of the link
  from the middle of the first pass on (``sim.Workload.foreign_traffic``):
  half of it, 95 % of it (the job still moves data: a shared link), or
  all but a thousandth (next to nothing moves: a dead link).  Nobody tells
  the policies; the steady family, every policy.
* ``vdsm-count``: oVirt's policies with VDSM counting a stalling iteration
  as a 10 s poll whose data remaining grew, as VDSM did up to 4.30.13
  (:data:`policies.OVIRT_STALL_REMAINING_GREW`).

Variants are built by key in each worker process (nothing here is
pickled but names and numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from benchmarks import policies
from benchmarks import simulator as sim
from benchmarks import synccost
from benchmarks import workloads
from nova_livemig_ext import planner

GB = 1e9
STREAM_VALUES_BYTES_S = (0.3 * GB, 0.6 * GB, 2.5 * GB)
STREAM_POLICIES = ('kubevirt', 'ours', 'ours-postcopy')
SYNC_POLICIES = ('nova34', 'kubevirt', 'proxmox', 'ours', 'ours-postcopy')
SYNC_FAMILIES = ('steady', 'huge')
SYNC_EXTREME_PER_GIB_S = 0.01
TIMEOUT_VALUES_S = (3600,)
TIMEOUT_POLICIES = ('ours', 'ours-postcopy')
OVIRT_POLICIES = ('ovirt-minimal-downtime', 'ovirt-suspend-workload',
                  'ovirt-postcopy')
CEILING_VALUES_S = (10.0, 60.0)
CEILING_POLICIES = ('ours', 'ours-postcopy')
CONTENTION_SHARES = (0.5, 0.95, 0.999)
CONTENTION_FAMILIES = ('steady',)

STREAM = 'stream'
SYNC = 'sync'
TIMEOUT = 'timeout'
VDSM_COUNT = 'vdsm-count'
CEILING = 'stop-ceiling'
CONTENTION = 'contention'


@dataclasses.dataclass(frozen=True)
class Variant:
    """One changed assumption or option, for some policies."""

    group: str
    value: float
    label: str
    policy_names: tuple[str, ...]
    families: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        return f'{self.group}={self.value:g}'

    def workload(self, w: sim.Workload) -> sim.Workload:
        if self.group == STREAM:
            return dataclasses.replace(w, stream_limit_bytes_s=self.value)
        if self.group == SYNC:
            return dataclasses.replace(w, sync_per_gib_s=self.value)
        if self.group == CONTENTION:
            return dataclasses.replace(w, foreign_traffic=(
                (contention_from_s(w), self.value),))
        return w

    def policy(self, name: str) -> policies.Policy:
        if self.group == TIMEOUT:
            return policies.ours_with(
                name, completion_timeout_max_s=int(self.value))
        if self.group == VDSM_COUNT:
            return policies.ovirt_counting(
                name, policies.OVIRT_STALL_REMAINING_GREW)
        if self.group == CEILING:
            return policies.ours_with(name, max_guest_stop_s=self.value,
                                      ladder=with_pause(name))
        return policies.by_name(name)

    def applies_to(self, case: workloads.Case) -> bool:
        return self.families is None or case.family in self.families

    def changes(self, case: workloads.Case, name: str) -> bool:
        """Can this variant change the run of ``name`` on ``case``?"""
        if not self.applies_to(case) or name not in self.policy_names:
            return False
        w = case.workload
        if self.group == STREAM:
            base = w.stream_limit_bytes_s
            if base is None:
                return True
            return w.bandwidth_bytes_s > min(base, self.value)
        if self.group == TIMEOUT:
            # The cap is the controller's deadline_s, which also shapes
            # its plan before any deadline falls: run every workload whose
            # configuration it changes.
            shipped = policies.OURS_BASE[name]()
            changed = shipped.replace(
                completion_timeout_max_s=int(self.value))
            return (planner.controller_config_for(shipped, w.memory_bytes)
                    != planner.controller_config_for(changed,
                                                     w.memory_bytes))
        return True


def contention_from_s(w: sim.Workload) -> float:
    """The middle of the first pass, had the link stayed the guest's."""
    return 0.5 * w.nonzero_bytes / w.bandwidth_bytes_s


def with_pause(name: str) -> tuple[str, ...]:
    """The policy's ladder with ``pause`` before ``abort``: what an unset
    ladder becomes on a host with ``max_guest_stop_s`` set."""
    ladder = [r for r in policies.OURS_BASE[name]().ladder if r != 'pause']
    ladder.insert(ladder.index('abort'), 'pause')
    return tuple(ladder)


def sync_values() -> list[tuple[float, str]]:
    """None and the extreme; the lab's upper bound for TCG when measured."""
    values = [(0.0, 'none'),
              (SYNC_EXTREME_PER_GIB_S, 'ten times the grid\'s')]
    data = synccost.load()
    analysis = (data or {}).get('analysis')
    if analysis:
        values.insert(1, (float(analysis['upper_bound_per_gib_s']),
                          'the lab\'s upper bound (TCG)'))
    return values


def all_variants() -> tuple[Variant, ...]:
    out = [Variant(STREAM, v, f'{v / GB:g} GB/s per stream', STREAM_POLICIES)
           for v in STREAM_VALUES_BYTES_S]
    out += [Variant(SYNC, v, f'{v * 1000:.3g} ms/GiB ({label})',
                    SYNC_POLICIES, SYNC_FAMILIES)
            for v, label in sync_values() if v != sim.SYNC_PER_GIB_S]
    out += [Variant(TIMEOUT, float(v), f'completion_timeout_max_s = {v}',
                    TIMEOUT_POLICIES) for v in TIMEOUT_VALUES_S]
    out += [Variant(CEILING, v, f'max_guest_stop_s = {v:g}',
                    CEILING_POLICIES) for v in CEILING_VALUES_S]
    out += [Variant(CONTENTION, v, f'others take {v:.1%} of the link',
                    policies.POLICY_NAMES, CONTENTION_FAMILIES)
            for v in CONTENTION_SHARES]
    out.append(Variant(VDSM_COUNT, 0.0, 'VDSM up to 4.30.13: a stalling '
                       'iteration is a poll whose remaining grew',
                       OVIRT_POLICIES))
    return tuple(out)


def by_key(key: str) -> Variant:
    for v in all_variants():
        if v.key == key:
            return v
    raise KeyError(key)


def base_label(group: str) -> str:
    """How the main grid stands on the variant's question."""
    return {
        STREAM: f'{workloads.STREAM_LIMIT_BYTES_S / GB:g} GB/s per stream '
                '(the grid)',
        SYNC: f'{sim.SYNC_PER_GIB_S * 1000:g} ms/GiB (the grid)',
        TIMEOUT: 'completion_timeout_max_s = '
                 f'{policies.shipped_policy().completion_timeout_max_s} '
                 '(shipped)',
        VDSM_COUNT: 'VDSM 4.30.14 and later: libvirt\'s memory_iteration '
                    '(the grid)',
        CEILING: 'max_guest_stop_s unset (shipped)',
        CONTENTION: 'the link is the guest\'s alone (the grid)',
    }[group]


def jobs(case_list: Sequence[workloads.Case]
         ) -> list[tuple[str, str, workloads.Case]]:
    """(variant key, policy, case) of every run a variant changes."""
    return [(v.key, name, c) for v in all_variants() for c in case_list
            for name in v.policy_names if v.changes(c, name)]
