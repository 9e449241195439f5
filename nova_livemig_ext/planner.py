"""Predict a live migration before starting it.

Given the guest's memory, the link's bandwidth, the guest's dirty rate and
writable working set, and a downtime limit, predict total time, downtime and
data sent for four ways of moving the guest:

* paused copy: the guest stops for the whole copy (no ``VIR_MIGRATE_LIVE``);
* pre-copy: passes of M / B, then what the guest dirtied meanwhile (at
  most its working set), until the remainder fits in B × downtime limit;
* pre-copy with auto-converge: the same, with QEMU's vCPU throttle stepping
  up at its dirty-bitmap syncs, slowing the writer;
* post-copy after the first pass: the guest moves to the destination at
  once and pulls the rest through page faults.

and, for a :class:`~nova_livemig_ext.policy.MigrationPolicy`, which ladder
the controller would climb: the real controller runs against the pre-copy
model of :mod:`nova_livemig_ext.convergence.model`, so the answer is the
controller's, not a restatement of it.

Everything here is pure: numbers in, frozen predictions out.
"""

from __future__ import annotations

import dataclasses
import math
import re

from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import model
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import policy as livemig_policy

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
# Planning happens away from any host: assume one with every feature.
ANY_HOST = livemig_flags.HostFacts(
    libvirt_version=livemig_flags.version_int(11, 3),
    qemu_version=livemig_flags.version_int(10, 1), userfaultfd=True)
TIB = 1024 * GIB
MS_PER_S = 1000.0

SIZE_UNITS: dict[str, float] = {
    'b': 1, 'kib': KIB, 'mib': MIB, 'gib': GIB, 'tib': TIB,
    'k': KIB, 'm': MIB, 'g': GIB, 't': TIB,
    'kb': 1e3, 'mb': 1e6, 'gb': 1e9, 'tb': 1e12,
}
SIZE_UNIT_NAMES = 'B, KiB, MiB, GiB, TiB, kB, MB, GB, TB'

# Rate units: a decimal (k, M, G, T) or binary (Ki, Mi, Gi, Ti) prefix on
# bits or bytes per second.  As in SI and IEC usage the letter's case
# decides: b is a bit and B a byte, so Gb/s = Gbit/s = Gbps (bits) and
# GB/s = GBps (bytes).  Prefixes are read in either case (mb/s is Mb/s).
RATE_UNIT = re.compile(
    r'^(?P<prefix>[kmgt]?)(?P<binary>i?)'
    r'(?P<base>bits?|bytes?|b)(?P<per>/s|ps|/sec)$', re.IGNORECASE)
DECIMAL_PREFIX: dict[str, float] = {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9,
                                    't': 1e12}
BINARY_PREFIX: dict[str, float] = {'k': KIB, 'm': MIB, 'g': GIB, 't': TIB}
RATE_UNIT_NAMES = ('MiB/s, GiB/s, MB/s, GB/s, B/s (bytes); Gbit/s, Mbit/s, '
                   'Gb/s, Mb/s, Gbps (bits)')

# The share of a link's line rate that reaches QEMU as migration payload
# (TCP/IP and Ethernet framing): 1 Gbit/s carries about 110 MiB/s.
DEFAULT_LINK_EFFICIENCY = 0.92

# QEMU's auto-converge trigger and ceiling (migration/ram.c).
THROTTLE_TRIGGER_FRACTION = 0.5
THROTTLE_MAX_PCT = 99
RATE_PERIOD_S = 1.0
# QEMU 9.2 and later sync every 5 s while the throttle is on.
THROTTLE_SYNC_PERIOD_S = 5.0
# Device state and the final handshake.
SWITCHOVER_OVERHEAD_MS = 15.0
# Passes after which a prediction gives up on pre-copy converging.
MAX_PASSES = 10_000

_NUMBER = re.compile(
    r'^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$')


class UnitError(ValueError):
    """A quantity the planner cannot read, with what it accepts."""


# A decimal number alone, in ASCII digits (float() also reads '4_00' and
# the digits of every script, '٤٠٠' or '４００').
_PLAIN_NUMBER = re.compile(
    r'^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*$')


def plain_number(text: str) -> float | None:
    """``text`` as a number when it is one in ASCII digits, else None.

    May be infinite (``1e400``): the caller says what range it takes.
    """
    match = _PLAIN_NUMBER.match(text)
    return float(match.group(1)) if match else None


def _split(text: str, what: str, accepted: str) -> tuple[float, str]:
    match = _NUMBER.match(text)
    if not match:
        raise UnitError(f'cannot read {what} {text!r}: expected a number and '
                        f'a unit, for example {accepted.split(",")[0]}')
    value = float(match.group(1))
    if not math.isfinite(value):
        raise UnitError(f'{what} {text!r} is too large to be a number')
    if value < 0:
        raise UnitError(f'{what} {text!r} must not be negative')
    return value, match.group(2)


def _finite(value: float, what: str, text: str) -> float:
    if not math.isfinite(value):
        raise UnitError(f'{what} {text!r} is too large to be a number')
    return value


def parse_size_bytes(text: str, what: str = 'size') -> float:
    """'32GiB', '512 MiB', '4GB' -> bytes.  A bare number is refused."""
    value, unit = _split(text, what, '32GiB')
    factor = SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise UnitError(f'unknown unit {unit!r} in {what} {text!r}; use '
                        f'{SIZE_UNIT_NAMES}' if unit else
                        f'{what} {text!r} has no unit; use {SIZE_UNIT_NAMES}')
    return _finite(value * factor, what, text)


def rate_unit_bytes_s(unit: str, what: str, text: str) -> tuple[float, bool]:
    """Bytes per second one ``unit`` stands for, and whether it counts bits.
    """
    match = RATE_UNIT.match(unit)
    if match is None:
        hint = ''
        if unit.lower() in SIZE_UNITS:
            hint = f' ({unit} is a size; a rate needs "/s", e.g. {unit}/s)'
        raise UnitError(f'unknown unit {unit!r} in {what} {text!r}{hint}; '
                        f'use {RATE_UNIT_NAMES}')
    prefix = match.group('prefix').lower()
    base = match.group('base')
    bits = base.lower().startswith('bit') or base == 'b'
    if match.group('binary'):
        if not prefix:
            raise UnitError(f'unknown unit {unit!r} in {what} {text!r}; use '
                            f'{RATE_UNIT_NAMES}')
        if base == 'b':
            # "Mib/s": almost always a MiB/s typed in lower case.
            raise UnitError(f'{what} {text!r}: {unit!r} is ambiguous; write '
                            f'{prefix.upper()}iB/s for bytes or '
                            f'{prefix.upper()}ibit/s for bits')
        factor = BINARY_PREFIX[prefix]
    else:
        factor = DECIMAL_PREFIX[prefix]
    return (factor / 8 if bits else factor), bits


def parse_rate_bytes_s(text: str, what: str = 'rate') -> float:
    """'1Gbit/s', '110 MiB/s', '40MB/s' -> bytes per second (on the wire).

    Zero needs no unit (a guest that writes nothing).
    """
    value, unit = _split(text, what, '1Gbit/s')
    if not unit:
        if value == 0:
            return 0.0
        raise UnitError(f'{what} {text!r} has no unit; use '
                        f'{RATE_UNIT_NAMES}')
    factor, _ = rate_unit_bytes_s(unit, what, text)
    return _finite(value * factor, what, text)


def is_bit_rate(text: str) -> bool:
    """Is this rate given in bits (a line rate) rather than bytes?"""
    unit = _split(text, 'rate', '1Gbit/s')[1]
    return bool(unit) and rate_unit_bytes_s(unit, 'rate', text)[1]


def parse_working_set_bytes(text: str, memory_bytes: float) -> float:
    """'25%' of memory, or a size."""
    stripped = text.strip()
    if stripped.endswith('%'):
        pct = plain_number(stripped[:-1])
        if pct is None:
            raise UnitError(f'cannot read working set {text!r}: a share is '
                            f'a number in ASCII digits and %, e.g. 25%')
        if not (math.isfinite(pct) and 0 <= pct <= 100):
            raise UnitError(f'working set {text!r} must be 0% to 100%')
        return memory_bytes * pct / 100.0
    return parse_size_bytes(text, 'working set')


@dataclasses.dataclass(frozen=True)
class Scenario:
    """The guest, the link and the limit, in bytes, seconds and ms."""

    memory_bytes: float
    bandwidth_bytes_s: float
    dirty_rate_bytes_s: float = 0.0
    working_set_bytes: float | None = None
    downtime_limit_ms: float = 300.0

    def __post_init__(self) -> None:
        problems = []
        numbers = {'memory': self.memory_bytes,
                   'bandwidth': self.bandwidth_bytes_s,
                   'dirty rate': self.dirty_rate_bytes_s,
                   'working set': (0.0 if self.working_set_bytes is None
                                   else self.working_set_bytes),
                   'downtime limit': self.downtime_limit_ms}
        for name, number in numbers.items():
            if not math.isfinite(number):
                problems.append(f'{name} must be a finite number')
        if problems:
            raise ValueError('; '.join(problems))
        if self.memory_bytes <= 0:
            problems.append('memory must be positive')
        if self.bandwidth_bytes_s <= 0:
            problems.append('bandwidth must be positive')
        if self.dirty_rate_bytes_s < 0:
            problems.append('dirty rate must not be negative')
        if self.working_set_bytes is not None and not (
                0 <= self.working_set_bytes <= self.memory_bytes):
            problems.append('working set must be between 0 and the memory')
        if self.downtime_limit_ms <= 0:
            problems.append('downtime limit must be positive')
        if problems:
            raise ValueError('; '.join(problems))

    @property
    def working_set(self) -> float:
        """Writable working set; all of memory when not given."""
        if self.working_set_bytes is None:
            return self.memory_bytes
        return self.working_set_bytes

    @property
    def dirty_ratio(self) -> float:
        return self.dirty_rate_bytes_s / self.bandwidth_bytes_s

    @property
    def bulk_pass_s(self) -> float:
        return self.memory_bytes / self.bandwidth_bytes_s

    def threshold_bytes(self, limit_ms: float | None = None) -> float:
        limit = self.downtime_limit_ms if limit_ms is None else limit_ms
        return self.bandwidth_bytes_s * limit / MS_PER_S


@dataclasses.dataclass(frozen=True)
class Prediction:
    """How one way of migrating would go; None where it never ends."""

    method: str
    converges: bool
    total_s: float | None
    downtime_ms: float | None
    data_bytes: float | None
    passes: int | None = None
    # Time the guest runs slowed: vCPU throttle (throttle-weighted seconds)
    # or page faults waiting on the link after a post-copy switch.
    slowdown_s: float = 0.0
    max_throttle_pct: int = 0
    note: str = ''


def dirtied_bytes(scenario: Scenario, seconds: float,
                  running_fraction: float = 1.0) -> float:
    """Pages the guest dirties in ``seconds``, each counted once."""
    return min(scenario.dirty_rate_bytes_s * running_fraction * seconds,
               scenario.working_set)


def predict_paused(scenario: Scenario) -> Prediction:
    """No ``VIR_MIGRATE_LIVE``: the guest is down for the whole copy."""
    total = scenario.bulk_pass_s
    return Prediction(
        method='paused copy', converges=True, total_s=total,
        downtime_ms=total * MS_PER_S + SWITCHOVER_OVERHEAD_MS,
        data_bytes=scenario.memory_bytes, passes=1,
        note='the guest is paused for the whole copy')


def predict_precopy(scenario: Scenario,
                    limit_ms: float | None = None) -> Prediction:
    """Plain pre-copy at a fixed downtime limit."""
    limit = scenario.downtime_limit_ms if limit_ms is None else limit_ms
    threshold = scenario.threshold_bytes(limit)
    bandwidth = scenario.bandwidth_bytes_s
    pass_s = scenario.bulk_pass_s
    sent = scenario.memory_bytes
    elapsed = pass_s
    left = dirtied_bytes(scenario, pass_s)
    passes = 1
    while left > threshold:
        nxt = dirtied_bytes(scenario, left / bandwidth)
        if nxt >= left * 0.999:
            return Prediction(
                method='pre-copy', converges=False, total_s=None,
                downtime_ms=None, data_bytes=None, passes=None,
                note=(f'never converges: each pass leaves '
                      f'{nxt / MIB:.0f} MiB dirty, more than the '
                      f'{threshold / MIB:.0f} MiB that fit in {limit:.0f} ms'))
        sent += left
        elapsed += left / bandwidth
        left = nxt
        passes += 1
        if passes > MAX_PASSES:
            break
    downtime_ms = left / bandwidth * MS_PER_S + SWITCHOVER_OVERHEAD_MS
    return Prediction(
        method='pre-copy', converges=True,
        total_s=elapsed + left / bandwidth, downtime_ms=downtime_ms,
        data_bytes=sent + left, passes=passes + 1)


def predict_auto_converge(scenario: Scenario, initial_pct: int = 20,
                          increment_pct: int = 10) -> Prediction:
    """Pre-copy with QEMU's auto-converge throttle (a CPU-bound writer).

    At each sync at least a second after the last rate period, a period
    that dirtied more than half of what it sent counts; every second such
    period raises the throttle (initial, then + increment, up to 99 %).
    """
    threshold = scenario.threshold_bytes()
    bandwidth = scenario.bandwidth_bytes_s
    throttle = 0
    high_periods = 0
    elapsed = 0.0
    throttled_s = 0.0
    sent = 0.0
    remaining = scenario.memory_bytes
    passes = 0
    period_s = period_dirty = period_sent = 0.0
    while passes < MAX_PASSES:
        running = 1 - throttle / 100.0
        pass_s = remaining / bandwidth
        if throttle and pass_s > THROTTLE_SYNC_PERIOD_S:
            # The throttle's own sync cuts the pass short.
            pass_s = THROTTLE_SYNC_PERIOD_S
        sent_now = pass_s * bandwidth
        dirty = dirtied_bytes(scenario, pass_s, running)
        unsent = remaining - sent_now
        remaining = min(unsent + dirty, max(scenario.working_set, unsent))
        elapsed += pass_s
        throttled_s += pass_s * throttle / 100.0
        sent += sent_now
        passes += 1
        period_s += pass_s
        period_dirty += dirty
        period_sent += sent_now
        if remaining <= threshold:
            break
        if period_s >= RATE_PERIOD_S:
            if period_dirty > THROTTLE_TRIGGER_FRACTION * period_sent:
                high_periods += 1
                if high_periods >= 2:
                    high_periods = 0
                    throttle = (initial_pct if not throttle else
                                min(throttle + increment_pct,
                                    THROTTLE_MAX_PCT))
            period_s = period_dirty = period_sent = 0.0
        if throttle >= THROTTLE_MAX_PCT and dirtied_bytes(
                scenario, remaining / bandwidth,
                1 - THROTTLE_MAX_PCT / 100.0) >= remaining:
            return Prediction(
                method='pre-copy + auto-converge', converges=False,
                total_s=None, downtime_ms=None, data_bytes=None,
                max_throttle_pct=throttle,
                note='never converges even at a 99% throttle')
    else:
        return Prediction(
            method='pre-copy + auto-converge', converges=False,
            total_s=None, downtime_ms=None, data_bytes=None,
            max_throttle_pct=throttle, note='no convergence in sight')
    copy_s = remaining / bandwidth
    return Prediction(
        method='pre-copy + auto-converge', converges=True,
        total_s=elapsed + copy_s,
        downtime_ms=copy_s * MS_PER_S + SWITCHOVER_OVERHEAD_MS,
        data_bytes=sent + remaining, passes=passes + 1,
        slowdown_s=throttled_s, max_throttle_pct=throttle,
        note=(f'vCPUs throttled up to {throttle}%' if throttle else
              'the throttle never engages'))


def predict_postcopy(scenario: Scenario) -> Prediction:
    """Switch to post-copy after the bulk pass (what the lab recorded)."""
    bulk_s = scenario.bulk_pass_s
    dirty = dirtied_bytes(scenario, bulk_s)
    pull_s = dirty / scenario.bandwidth_bytes_s
    return Prediction(
        method='post-copy', converges=True, total_s=bulk_s + pull_s,
        downtime_ms=SWITCHOVER_OVERHEAD_MS,
        data_bytes=scenario.memory_bytes + dirty, passes=1,
        slowdown_s=pull_s,
        note=(f'the guest runs on the destination while {dirty / MIB:.0f} '
              f'MiB are pulled by page faults for {pull_s:.1f} s; a network '
              f'failure then loses the guest'))


def predict_all(scenario: Scenario, initial_pct: int = 20,
                increment_pct: int = 10) -> tuple[Prediction, ...]:
    return (predict_paused(scenario), predict_precopy(scenario),
            predict_auto_converge(scenario, initial_pct, increment_pct),
            predict_postcopy(scenario))


# ---------------------------------------------------------------------------
# The ladder our controller would follow.
# ---------------------------------------------------------------------------

def controller_config_for(policy: livemig_policy.MigrationPolicy,
                          memory_bytes: float,
                          poll_interval_s: float | None = None
                          ) -> ctl.ControllerConfig:
    """The controller's config for one guest under ``policy``.

    Built the way nova-compute builds it (:mod:`nova_livemig_ext.job` from
    :func:`nova_livemig_ext.flags.plan_migration`), for a host that has
    every feature the policy asks for.
    """
    plan = livemig_flags.plan_migration(
        policy, ANY_HOST,
        livemig_flags.InstanceFacts(memory_mib=int(memory_bytes // MIB)))
    config = livemig_job.controller_config(policy, plan, memory_bytes / GIB)
    if poll_interval_s is not None:
        config = dataclasses.replace(config, poll_interval_s=poll_interval_s)
    return config


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing the controller did, when, and why."""

    at_s: float
    rung: str | None
    action: str
    reason: str


@dataclasses.dataclass(frozen=True)
class LadderPrediction:
    """The controller's run against the model."""

    outcome: str
    total_s: float
    downtime_ms: float | None
    deadline_s: float
    ladder: tuple[str, ...]
    rungs_reached: tuple[str, ...]
    steps: tuple[Step, ...]


def planning_poll_s(scenario: Scenario, policy_poll_s: float) -> float:
    """A poll interval that keeps the model run short for big guests.

    A pass of a 256 GiB guest lasts minutes; polling it twice a second
    tells the controller nothing a poll every few seconds does not.
    """
    return max(policy_poll_s, min(5.0, scenario.bulk_pass_s / 400.0))


def predict_ladder(scenario: Scenario,
                   policy: livemig_policy.MigrationPolicy
                   ) -> LadderPrediction:
    """Run the real controller against the pre-copy model."""
    poll_s = planning_poll_s(scenario, policy.poll_interval_s)
    config = controller_config_for(policy, scenario.memory_bytes, poll_s)
    workload = model.Workload(
        memory_bytes=int(scenario.memory_bytes),
        bandwidth_bytes_s=scenario.bandwidth_bytes_s,
        dirty_rate_bytes_s=scenario.dirty_rate_bytes_s,
        working_set_bytes=int(scenario.working_set))
    settings = model.QemuSettings(
        downtime_limit_ms=float(policy.initial_downtime_ms),
        max_speed_bytes_s=(policy.bandwidth_mib_s * MIB
                           if policy.bandwidth_mib_s else None),
        auto_converge=config.auto_converge_armed,
        throttle_initial_pct=policy.auto_converge_initial_pct,
        throttle_increment_pct=policy.auto_converge_increment_pct,
        postcopy=config.postcopy_armed)
    sim = model.PrecopySimulation(workload, settings)
    if policy.copy_mode != 'live':
        sim.suspend()
    deadline_s = config.deadline_s
    if config.deadline_link_multiple is not None:
        # The deadline follows the link: known here from the scenario.
        deadline_s = ctl.link_deadline_s(
            config, config.transfer_bytes or scenario.memory_bytes,
            scenario.bandwidth_bytes_s)
    max_s = deadline_s + config.switchover_timeout_s + math.ceil(
        scenario.bulk_pass_s) + 60.0
    controller = ctl.Controller(config)
    run = model.simulate(sim, controller, poll_s, max_s)
    steps = tuple(
        Step(at_s=d.at_s, rung=d.rung, action=d.action.value,
             reason=d.reason)
        for d in run.decisions
        if d.rung is not None or d.action is not ctl.Action.SET_DOWNTIME)
    reached = tuple(r for r in run.rungs())
    return LadderPrediction(
        outcome=run.outcome, total_s=run.total_s,
        downtime_ms=run.downtime_ms, deadline_s=controller.deadline_s,
        ladder=config.ladder, rungs_reached=reached, steps=steps)
