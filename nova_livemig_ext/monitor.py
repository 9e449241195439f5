"""The loop that watches a migration job and applies the controller's choices.

Samples come from ``virDomain.jobStats()``, decisions from a
:class:`~nova_livemig_ext.convergence.controller.DecisionMaker` (ours or
upstream Nova's), and their effects go to the domain in one place,
:meth:`MigrationMonitor.apply`.  Time is passed in (a clock and a sleep), so
the same code runs under a scripted fake domain in the unit tests, inside
nova-compute (which starts ``migrateToURI3`` in its own thread and calls
:meth:`MigrationMonitor.watch`), and from the command line
(:func:`run_migration`).

The monitor polls; libvirt's migration-iteration events would only say
sooner what the next poll reads anyway.

Two rules keep the guest safe:

* errors from libvirt while applying a decision are logged and reported to
  the controller, never raised: the job is still running and still needs
  watching;
* a guest the monitor paused is resumed on the source when the job does not
  complete, unless it was switched to post-copy (then the newest memory is
  on the destination and resuming the source would fork the guest).

After the switch to post-copy a failed migrate call is not the end: the
migration completes on the destination or is resumed
(:mod:`nova_livemig_ext.postcopy`), and when that cannot be done in time the
outcome is NEEDS_RECOVERY with both halves left as they are.  Nothing the
monitor does on the side (progress saving, logging) and no crash of the
monitor itself changes that: a crash in pre-copy aborts the job and resumes
the source, a crash in post-copy hands over to the same recovery.

Job statistics libvirt will not give (its job lock held elsewhere, QEMU's
monitor stuck) are retried at every poll and reported at a bounded rate.  A
job the monitor cannot see is not left to the 4 h cap: in pre-copy it is
aborted at the controller's deadline from the link, or after
:data:`DEFAULT_BLIND_TIMEOUT_S` of silence when no deadline was derived yet.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from nova_livemig_ext import native
from nova_livemig_ext import postcopy
from nova_livemig_ext import standin
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest as guest_cost
from nova_livemig_ext.convergence import samples

LOG = logging.getLogger(__name__)

# libvirt constants, spelled out so that importing this module does not need
# libvirt (the unit tests and the pure core run without it).
VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY = 1
VIR_DOMAIN_PAUSED = 3
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_OPERATION_ABORTED = 78

# While the switchover runs, jobStats on the source fails with these: the
# job is ending, not failing (checked by code, and by text for errors that
# carry no code).
DOMAIN_GONE_CODES = frozenset({VIR_ERR_NO_DOMAIN, VIR_ERR_OPERATION_INVALID})
DOMAIN_GONE_TEXTS = ('domain is not running', 'domain not found',
                     'no domain with matching')

DEFAULT_POLL_INTERVAL_S = 0.5

# Job statistics that stay unreadable: the first failure is logged, then at
# most one line this often, with the failures counted since the last line
# (one line per poll would be 7200 an hour at 0.5 s).
UNREADABLE_LOG_INTERVAL_S = 60.0
# How long a job may run blind: statistics unreadable and no deadline from
# the link, which the controller derives from the bandwidth it measures and
# so never gets without them.  Ten minutes: five times the controller's
# default deadline floor (deadline_floor_s, the shortest deadline any
# migration gets; a higher floor is kept), far below the 4 h cap
# (completion_timeout_max_s).  The monitor cannot see stalls, progress or
# the switchover meanwhile; the guest keeps running on the source.
DEFAULT_BLIND_TIMEOUT_S = 600.0

# oslo_log's KeywordArgumentAdapter is a LoggerAdapter.
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Domain(Protocol):
    """The part of ``libvirt.virDomain`` the monitor uses."""

    def jobStats(self, flags: int = 0) -> dict[str, Any]: ...

    def migrateSetMaxDowntime(self, downtime: int, flags: int = 0) -> int: ...

    def migrateSetMaxSpeed(self, bandwidth: int, flags: int = 0) -> int: ...

    def migrateStartPostCopy(self, flags: int = 0) -> int: ...

    def suspend(self) -> int: ...

    def resume(self) -> int: ...

    def abortJob(self) -> int: ...

    def state(self, flags: int = 0) -> list[int]: ...

    def name(self) -> str: ...


class MigratableDomain(Domain, Protocol):
    """A domain that can also start its migration (for run_migration)."""

    def migrateToURI3(self, dconnuri: str, params: dict[str, Any],
                      flags: int = 0) -> int: ...


class ErrorClassifier:
    """Tells libvirt errors apart, importing libvirt only when first needed.

    Tests inject their own error type; production uses
    ``libvirt.libvirtError``.
    """

    def __init__(self,
                 error_types: tuple[type[BaseException], ...] | None = None
                 ) -> None:
        self._error_types = error_types

    @property
    def error_types(self) -> tuple[type[BaseException], ...]:
        if self._error_types is None:
            import libvirt  # noqa: PLC0415 - optional at import time
            self._error_types = (libvirt.libvirtError,)
        return self._error_types

    def is_libvirt_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self.error_types)

    @staticmethod
    def error_code(exc: BaseException) -> int | None:
        get_code = getattr(exc, 'get_error_code', None)
        if get_code is None:
            return None
        try:
            code = get_code()
        except Exception:  # a half-built error must not hide the real one
            return None
        return code if isinstance(code, int) else None

    def domain_gone(self, exc: BaseException) -> bool:
        """Does this error mean the domain left the source host?"""
        if self.error_code(exc) in DOMAIN_GONE_CODES:
            return True
        text = str(exc).lower()
        return any(marker in text for marker in DOMAIN_GONE_TEXTS)

    def aborted(self, exc: BaseException) -> bool:
        """Does this error mean the job was aborted on request?"""
        return self.error_code(exc) == VIR_ERR_OPERATION_ABORTED


class Outcome(enum.Enum):
    COMPLETED = 'completed'
    ABORTED = 'aborted'
    FAILED = 'failed'
    CANCELLED = 'cancelled'
    # Post-copy could not be completed in time: both halves are kept as
    # they are for ``nova-livemig-ext recover``.
    NEEDS_RECOVERY = 'needs recovery'
    # watch() alone cannot tell: the caller that ran the migration knows.
    UNKNOWN = 'unknown'


class EndedBy(enum.Enum):
    JOB_DONE = 'job_done'
    DOMAIN_GONE = 'domain_gone'
    JOB_FINISHED = 'job_finished'
    MONITOR_CRASHED = 'monitor_crashed'
    # After the switch, the source shows post-copy failed while libvirt's
    # migration call has not returned: recovery must not wait for it.
    POSTCOPY_BROKEN = 'postcopy_broken'


# How long the source may show "post-copy failed" while the migration call
# is still blocked in libvirt before the monitor stops waiting for that call.
# Seen in the lab: QEMU's stream reset 0.1 s after the switch left
# migrateToURI3 blocked for good, and libvirt then refuses every resume
# ("being actively monitored by another thread").
POSTCOPY_BROKEN_GRACE_S = 15.0


@dataclasses.dataclass(frozen=True)
class AppliedDecision:
    decision: ctl.Decision
    applied: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the live display needs after each poll."""

    elapsed_s: float
    sample: samples.JobSample
    estimate: estimator.Estimate
    decisions: tuple[ctl.Decision, ...]


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    """How a migration went."""

    outcome: Outcome
    total_s: float
    ended_by: EndedBy
    polls: int
    error: str | None = None
    # libvirt's figure from the completed-job statistics, when given.
    downtime_ms: float | None = None
    predicted_downtime_ms: float | None = None
    iterations: int | None = None
    memory_total_bytes: int | None = None
    memory_sent_bytes: int | None = None
    data_sent_bytes: int | None = None
    decisions: tuple[AppliedDecision, ...] = ()
    paused_by_monitor: bool = False
    switched_to_postcopy: bool = False
    source_resumed: bool = False
    # How a post-copy in trouble ended, when it was in trouble.
    recovery: postcopy.Settled | None = None
    # What the guest paid (measured) and was predicted to pay, in seconds.
    guest: guest_cost.GuestCost | None = None
    predicted_guest: guest_cost.GuestCost | None = None

    @property
    def rungs_used(self) -> tuple[tuple[str, str], ...]:
        """(rung, reason) of every decision that used a rung and took.

        Only auto-converge's note counts among notes: that rung is used by
        waiting for QEMU's throttle. Other notes (an abort announced for the
        deadline, a post-copy switch awaited) change nothing by themselves.
        """
        return tuple(
            (a.decision.rung, a.decision.reason) for a in self.decisions
            if a.decision.rung is not None
            and used_a_rung(a.decision, a.applied))


def used_a_rung(decision: ctl.Decision, applied: bool) -> bool:
    """Did ``decision`` use its rung (see ``MigrationReport.rungs_used``)?"""
    return (applied and decision.rung is not None
            and (decision.has_effect
                 or decision.rung == ctl.RUNG_AUTO_CONVERGE))


def log_decision(log: Logger, decision: ctl.Decision) -> None:
    """One line per decision, with the numbers that caused it."""
    log.info('Live migration %(action)s%(argument)s at %(at_s).1f s: '
             '%(reason)s; measured %(measures)s',
             {'action': decision.action.value,
              'argument': decision_argument(decision),
              'at_s': decision.at_s,
              'reason': decision.reason,
              'measures': decision.measures_dict()})


def decision_argument(decision: ctl.Decision) -> str:
    if decision.downtime_ms is not None:
        return f'({decision.downtime_ms} ms)'
    if decision.speed_mib_s is not None:
        return f'({decision.speed_mib_s} MiB/s)'
    return ''


def apply_to_domain(domain: Domain, decision: ctl.Decision) -> None:
    """The libvirt call for a decision (NOTE calls nothing)."""
    action = decision.action
    if action is ctl.Action.SET_DOWNTIME:
        assert decision.downtime_ms is not None
        domain.migrateSetMaxDowntime(decision.downtime_ms, 0)
    elif action is ctl.Action.SET_SPEED:
        assert decision.speed_mib_s is not None
        flags = (VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY
                 if decision.postcopy_speed else 0)
        domain.migrateSetMaxSpeed(decision.speed_mib_s, flags)
    elif action is ctl.Action.START_POSTCOPY:
        domain.migrateStartPostCopy(0)
    elif action is ctl.Action.PAUSE:
        domain.suspend()
    elif action is ctl.Action.ABORT:
        domain.abortJob()


@dataclasses.dataclass
class _Unreadable:
    """The monitor's account of job statistics it cannot read."""

    # First failed read of the current run of failures (None: readable).
    since_s: float | None = None
    failures: int = 0
    # Failures since the last line logged, and when that line was.
    unlogged: int = 0
    logged_s: float | None = None
    said_since: bool = False
    last_error: str = ''
    # The abort for a passed deadline: when last tried; post-copy said.
    abort_tried_s: float | None = None
    postcopy_said: bool = False

    def reset(self) -> None:
        """Readable again.  The last line's time and the failures not yet
        logged stay: a read that keeps failing now and then is still
        reported at the bounded rate, with every failure counted."""
        self.since_s = None
        self.failures = 0
        self.said_since = False
        self.last_error = ''


class MigrationMonitor:
    """Polls a migration job, feeds the controller, applies its decisions."""

    # Whether finish() logs the summary line; nova-compute's driver logs
    # its own, with Nova's words, so one line tells each migration's end.
    log_summary = True

    def __init__(self, domain: Domain, controller: ctl.DecisionMaker,
                 clock: Callable[[], float], sleep: Callable[[float], None],
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
                 on_sample: Callable[[Progress], None] | None = None,
                 log: Logger | None = None,
                 errors: ErrorClassifier | None = None,
                 deadline_s: float | None = None,
                 blind_timeout_s: float = DEFAULT_BLIND_TIMEOUT_S) -> None:
        if not (math.isfinite(poll_interval_s) and poll_interval_s > 0):
            raise ValueError('poll_interval_s must be a positive number, '
                             'not %r' % poll_interval_s)
        for name, value in (('deadline_s', deadline_s),
                            ('blind_timeout_s', blind_timeout_s)):
            if value is not None and not (math.isfinite(value)
                                          and value > 0):
                raise ValueError('%s must be a positive number, not %r'
                                 % (name, value))
        self.domain = domain
        self.controller = controller
        self.clock = clock
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.on_sample = on_sample
        self.log = log if log is not None else LOG
        self.errors = errors if errors is not None else ErrorClassifier()
        # The wall-clock limit the monitor enforces by itself when libvirt
        # stops answering jobStats (the controller decides on samples).
        self.deadline_s = deadline_s
        # Its limit while blind: no statistics, no deadline from the link.
        self.blind_timeout_s = blind_timeout_s
        self._unreadable = _Unreadable()
        self._polls = 0
        self._applied: list[AppliedDecision] = []
        self._started_s: float | None = None
        self._last_sample: samples.JobSample | None = None
        self._paused_by_monitor = False
        self._postcopy = False
        self._postcopy_broken_since_s: float | None = None
        self._abort_requested = False
        # Throttle x time from the samples, whoever decides (Nova's
        # algorithm does not count it).
        self._throttle = guest_cost.ThrottleMeter()

    @property
    def abort_requested(self) -> bool:
        """Did the monitor ask libvirt to abort the job?"""
        return self._abort_requested

    def in_postcopy(self) -> bool:
        """Was the switch to post-copy made (by us, or as the source shows)?

        A failure after it must never resume or destroy either half.
        """
        if self._postcopy:
            return True
        try:
            state = self.domain.state()
        except Exception as exc:
            # Asked while deciding how a migration ends: an error here must
            # not end it differently. Without the state, our own record of
            # the switch is all there is.
            self.log.warning('Live migration: reading the source domain '
                             'state failed: %(error)r', {'error': exc})
            return False
        return (len(state) > 1 and state[0] == VIR_DOMAIN_PAUSED
                and state[1] in (postcopy.VIR_DOMAIN_PAUSED_POSTCOPY,
                                 postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED))

    def apply(self, decision: ctl.Decision) -> AppliedDecision:
        """Log a decision, make its libvirt call, tell the controller."""
        log_decision(self.log, decision)
        now_s = self.clock()
        if not decision.has_effect:
            result = AppliedDecision(decision, True)
            self._applied.append(result)
            return result
        try:
            apply_to_domain(self.domain, decision)
        except Exception as exc:
            if not self.errors.is_libvirt_error(exc):
                raise
            self.log.warning('Live migration %(action)s failed: %(error)s',
                             {'action': decision.action.value, 'error': exc})
            self.controller.acknowledge(decision, False, now_s)
            result = AppliedDecision(decision, False, str(exc))
        else:
            self.controller.acknowledge(decision, True, now_s)
            self._note_effect(decision)
            result = AppliedDecision(decision, True)
        self._applied.append(result)
        return result

    def _note_effect(self, decision: ctl.Decision) -> None:
        if decision.action is ctl.Action.PAUSE:
            self._paused_by_monitor = True
        elif decision.action is ctl.Action.START_POSTCOPY:
            self._postcopy = True
        elif decision.action is ctl.Action.ABORT:
            self._abort_requested = True

    def _read_stats(self, now_s: float) -> dict[str, Any] | EndedBy | None:
        """jobStats, or how the job ended, or None to try again later."""
        try:
            stats = self.domain.jobStats()
        except Exception as exc:
            if not self.errors.is_libvirt_error(exc):
                raise
            if self.errors.domain_gone(exc):
                self.log.info('Live migration: the domain left the source '
                              '(%(error)s); the job is over', {'error': exc})
                return EndedBy.DOMAIN_GONE
            failure = exc
        else:
            self._note_readable(now_s)
            return stats
        # Out of the except block: oslo.log would repeat the error on the
        # line as the exception being handled.
        self._note_unreadable(now_s, failure)
        return None

    def _note_unreadable(self, now_s: float, exc: BaseException) -> None:
        """Count a failed read; say so at the first and then at a bounded
        rate, never once per poll."""
        state = self._unreadable
        if state.since_s is None:
            state.since_s = now_s
        state.failures += 1
        state.unlogged += 1
        state.last_error = str(exc)
        if (state.logged_s is not None
                and now_s - state.logged_s < UNREADABLE_LOG_INTERVAL_S):
            return
        if state.logged_s is None or state.unlogged == 1:
            self.log.warning('Live migration: reading job statistics '
                             'failed: %(error)s; retrying every poll, '
                             'reported at most every %(interval).0f s',
                             {'error': exc,
                              'interval': UNREADABLE_LOG_INTERVAL_S})
        else:
            self.log.warning('Live migration: reading job statistics '
                             'failed %(count)d times in the last '
                             '%(window).0f s (unreadable for %(silent).0f s); '
                             'last error: %(error)s',
                             {'count': state.unlogged,
                              'window': now_s - state.logged_s,
                              'silent': now_s - state.since_s,
                              'error': exc})
        state.logged_s = now_s
        state.unlogged = 0
        state.said_since = True

    def _note_readable(self, now_s: float) -> None:
        state = self._unreadable
        if state.since_s is None:
            return
        if state.said_since:
            self.log.info('Live migration: job statistics readable again '
                          'after %(silent).1f s (%(count)d failed reads)',
                          {'silent': now_s - state.since_s,
                           'count': state.failures})
        state.reset()

    def watch(self, job_done: Callable[[], bool]) -> MigrationReport:
        """Watch the running job until it ends; apply decisions meanwhile.

        ``job_done`` says whether whoever started the migration has seen it
        return.  The report's outcome is UNKNOWN unless libvirt said how the
        job ended; :meth:`finish` fills it in.
        """
        self._started_s = self.clock()
        for decision in self.controller.start(self._started_s):
            self.apply(decision)
        final: dict[str, Any] | None = None
        while True:
            if job_done():
                ended_by = EndedBy.JOB_DONE
                break
            now_s = self.clock()
            self._each_poll(now_s)
            stats = self._read_stats(now_s)
            if isinstance(stats, EndedBy):
                ended_by = stats
                break
            if self._postcopy_broken_for(now_s) >= POSTCOPY_BROKEN_GRACE_S:
                self.log.warning(
                    'Live migration: the source has shown post-copy failed '
                    'for %(grace).0f s while libvirt\'s migration call has '
                    'not returned; recovering without waiting for it',
                    {'grace': POSTCOPY_BROKEN_GRACE_S})
                ended_by = EndedBy.POSTCOPY_BROKEN
                break
            if stats is None:
                self._stats_unreadable(now_s)
            else:
                self._polls += 1
                sample = samples.sample_from_job_stats(stats)
                if sample.is_finished:
                    final = stats
                    ended_by = EndedBy.JOB_FINISHED
                    break
                self._observe(sample, now_s)
            self.sleep(self.poll_interval_s)
        return self._report(ended_by, final)

    def _postcopy_broken_for(self, now_s: float) -> float:
        """How long the source has shown post-copy failed (0: it does not)."""
        if not self._postcopy:
            return 0.0
        try:
            state = self.domain.state()
        except Exception as exc:
            if not self.errors.is_libvirt_error(exc):
                raise
            state = None
        broken = state is not None and len(state) >= 2 and (
            int(state[0]), int(state[1])) == (
            VIR_DOMAIN_PAUSED, postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
        if not broken:
            self._postcopy_broken_since_s = None
            return 0.0
        if self._postcopy_broken_since_s is None:
            self._postcopy_broken_since_s = now_s
        return now_s - self._postcopy_broken_since_s

    def crash_report(self, exc: BaseException) -> MigrationReport:
        """The report of a watch that ended in an exception of its own."""
        if self._started_s is None:
            self._started_s = self.clock()
        return dataclasses.replace(
            self._report(EndedBy.MONITOR_CRASHED, None),
            error='monitor error: %r' % (exc,))

    def _each_poll(self, now_s: float) -> None:
        """Called once per poll, whether or not jobStats answers."""

    def _stats_unreadable(self, now_s: float) -> None:
        """Enforce a deadline by the wall clock while libvirt is silent.

        The controller decides on samples; without them it would never see
        its deadline pass.  The deadline is the controller's own once it
        derived one from the link, else the blind timeout counted from the
        first failed read, and never later than the monitor's cap.  Only
        pre-copy is aborted, and the guest keeps running on the source:
        after the switch to post-copy that would lose the guest.
        """
        state = self._unreadable
        assert self._started_s is not None and state.since_s is not None
        if self._abort_requested or state.postcopy_said:
            return
        if (state.abort_tried_s is not None
                and now_s - state.abort_tried_s < UNREADABLE_LOG_INTERVAL_S):
            return
        elapsed_s = now_s - self._started_s
        silent_s = now_s - state.since_s
        why = self._unreadable_limit_passed(elapsed_s, silent_s)
        if why is None:
            return
        reason, measures = why
        if self._postcopy or self.in_postcopy():
            state.postcopy_said = True
            self.log.warning('Live migration: %(reason)s, but the guest was '
                             'switched to post-copy: not aborting (the '
                             'newest memory is on the destination)',
                             {'reason': reason})
            return
        if state.abort_tried_s is None:
            self.log.error('Live migration: %(reason)s, after %(count)d '
                           'failed reads (last error: %(error)s); aborting '
                           'the job, the guest keeps running on the source',
                           {'reason': reason, 'count': state.failures,
                            'error': state.last_error})
        state.abort_tried_s = now_s
        self.apply(ctl.Decision(
            ctl.Action.ABORT,
            '%s; aborting, the guest keeps running on the source' % reason,
            at_s=elapsed_s, rung=ctl.RUNG_ABORT,
            measures=measures + (('unreadable_s', round(silent_s, 1)),
                                 ('failed_reads', state.failures))))

    def _unreadable_limit_passed(
            self, elapsed_s: float, silent_s: float
            ) -> tuple[str, tuple[tuple[str, float], ...]] | None:
        """Why the job must end now that statistics are unreadable, with
        the numbers; None while it may go on."""
        link_s = self._link_deadline_s()
        cap_s = self.deadline_s
        if link_s is not None and (cap_s is None or link_s < cap_s):
            cap_s = link_s
        if cap_s is not None and elapsed_s >= cap_s:
            return ('deadline of %.0f s passed while job statistics were '
                    'unreadable for %.0f s' % (cap_s, silent_s),
                    (('deadline_s', cap_s),))
        if link_s is not None:
            return None
        blind_s = self._blind_timeout_in_force_s()
        if silent_s >= blind_s:
            return ('no deadline from the link yet, and %.0f s passed while '
                    'job statistics were unreadable (blind timeout %.0f s)'
                    % (silent_s, blind_s),
                    (('blind_timeout_s', blind_s),))
        return None

    def _link_deadline_s(self) -> float | None:
        """The controller's own deadline, when it has one to give.

        Ours derives it from the bandwidth it measures (its ``state``
        holds None until then, and its ``deadline_s`` is only the cap);
        another decision maker's ``deadline_s`` is taken as it comes.
        """
        try:
            live = getattr(self.controller, 'deadline_s', None)
            state = getattr(self.controller, 'state', None)
        except Exception:  # not started, or no deadline of its own
            return None
        if (state is not None and hasattr(state, 'deadline_s')
                and state.deadline_s is None):
            return None
        if (isinstance(live, (int, float)) and not isinstance(live, bool)
                and math.isfinite(live) and live > 0):
            return float(live)
        return None

    def _blind_timeout_in_force_s(self) -> float:
        """The blind timeout, never below the controller's deadline floor
        (the shortest deadline it would give any migration)."""
        config = getattr(self.controller, 'config', None)
        floor_s = getattr(config, 'deadline_floor_s', None)
        if (isinstance(floor_s, (int, float)) and not isinstance(floor_s, bool)
                and math.isfinite(floor_s) and floor_s > self.blind_timeout_s):
            return float(floor_s)
        return self.blind_timeout_s

    def _observe(self, sample: samples.JobSample, now_s: float) -> None:
        if sample.is_active:
            self._last_sample = sample
            if self._started_s is not None:
                self._throttle.add(now_s - self._started_s,
                                   sample.auto_converge_throttle_pct)
        decisions = self.controller.observe(sample, now_s)
        if self.on_sample is not None and sample.is_active:
            assert self._started_s is not None
            self.on_sample(Progress(now_s - self._started_s, sample,
                                    self.controller.estimate, decisions))
        for decision in decisions:
            self.apply(decision)

    def _report(self, ended_by: EndedBy,
                final: Mapping[str, Any] | None) -> MigrationReport:
        assert self._started_s is not None
        outcome = Outcome.UNKNOWN
        if final is not None:
            outcome = {
                samples.JobType.COMPLETED: Outcome.COMPLETED,
                samples.JobType.FAILED: Outcome.FAILED,
                samples.JobType.CANCELLED: Outcome.CANCELLED,
            }.get(samples.job_type_of(final), Outcome.UNKNOWN)
        last = self._last_sample
        report = MigrationReport(
            outcome=outcome,
            total_s=self.clock() - self._started_s,
            ended_by=ended_by,
            polls=self._polls,
            predicted_downtime_ms=self.controller.predicted_downtime_ms,
            iterations=None if last is None else last.iteration,
            memory_total_bytes=None if last is None else (
                last.memory_total_bytes),
            memory_sent_bytes=None if last is None else (
                last.memory_processed_bytes),
            data_sent_bytes=None if last is None else (
                last.data_processed_bytes),
            decisions=tuple(self._applied),
            paused_by_monitor=self._paused_by_monitor,
            switched_to_postcopy=self._postcopy,
        )
        if final is not None:
            report = with_completed_stats(report, final)
        return report

    def resume_source(self) -> bool:
        """Resume the source guest if the monitor paused it; True if done."""
        if not self._paused_by_monitor or self._postcopy:
            return False
        try:
            state = self.domain.state()
            if not state or state[0] != VIR_DOMAIN_PAUSED:
                return False
            self.domain.resume()
        except Exception as exc:
            if not self.errors.is_libvirt_error(exc):
                raise
            self.log.warning('Live migration: could not resume the source '
                             'guest: %(error)s', {'error': exc})
            return False
        self.log.info('Live migration did not complete; resumed the guest '
                      'on the source')
        return True

    def elapsed_s(self) -> float | None:
        """Seconds since the watch began (None: it never began)."""
        if self._started_s is None:
            return None
        return self.clock() - self._started_s

    def finish(self, report: MigrationReport, outcome: Outcome,
               error: str | None = None,
               completed_stats: Mapping[str, Any] | None = None
               ) -> MigrationReport:
        """Settle the outcome; leave the source guest running if not moved."""
        resumed = False
        if outcome is not Outcome.COMPLETED:
            resumed = self.resume_source()
        report = dataclasses.replace(report, outcome=outcome, error=error,
                                     source_resumed=resumed)
        if completed_stats:
            report = with_completed_stats(report, completed_stats)
        report = self._with_guest_view(report)
        assert report.guest is not None
        if not self.log_summary:
            return report
        self.log.info('Live migration %(outcome)s after %(total_s).1f s: '
                      'guest %(guest)s; predicted %(predicted)s; libvirt '
                      'downtime %(downtime)s; %(iterations)s iterations, '
                      '%(sent)s bytes sent',
                      {'outcome': outcome.value, 'total_s': report.total_s,
                       'guest': report.guest.text(),
                       'predicted': (report.predicted_guest.text()
                                     if report.predicted_guest is not None
                                     else 'unknown'),
                       'downtime': downtime_text(report),
                       'iterations': report.iterations,
                       'sent': report.memory_sent_bytes})
        return report

    def _with_guest_view(self, report: MigrationReport) -> MigrationReport:
        """The guest's cost, measured from what the monitor saw."""
        lost_s = self._throttle.lost_s
        state = getattr(self.controller, 'state', None)
        counted = getattr(state, 'throttle_lost_s', None)
        if isinstance(counted, (int, float)) and math.isfinite(counted):
            # Ours counts it from every sample, the meter from those read.
            lost_s = max(lost_s, float(counted))
        predicted = getattr(self.controller, 'predicted_guest_cost', None)
        if not isinstance(predicted, guest_cost.GuestCost):
            predicted = None
        return dataclasses.replace(
            report, guest=guest_view(report, lost_s, self._throttle.max_pct),
            predicted_guest=predicted)


def abort_job_and_wait(domain: Any, wait_s: float,
                       sleep: Callable[[float], None]) -> None:
    """Abort the domain's migration job and wait, at most ``wait_s``, for
    libvirt to say it ended (the guest stays on the source).  The abort's
    own failure is raised; a job that can no longer be read has ended."""
    domain.abortJob()
    deadline_s = native.time_module().monotonic() + wait_s
    while native.time_module().monotonic() < deadline_s:
        try:
            if (samples.job_type_of(domain.jobStats())
                    is not samples.JobType.UNBOUNDED):
                return
        except Exception:
            return
        sleep(0.5)


def guest_view(report: MigrationReport, throttle_lost_s: float,
               max_throttle_pct: int | None = None) -> guest_cost.GuestCost:
    """What the guest paid by the monitor's account: never libvirt's
    downtime alone after post-copy.  ``throttle_lost_s``: throttle x time;
    ``max_throttle_pct``: the highest throttle seen."""
    switch_s = guest_cost.switch_at_s([
        (a.decision.action.value, a.decision.at_s, a.applied)
        for a in report.decisions])
    return guest_cost.measured(
        completed=report.outcome is Outcome.COMPLETED,
        ended_at_s=report.total_s, switchover_started_s=switch_s,
        postcopy=report.switched_to_postcopy,
        paused=report.paused_by_monitor and not report.switched_to_postcopy,
        libvirt_downtime_ms=report.downtime_ms, lost_s=throttle_lost_s,
        max_throttle_pct=max_throttle_pct)


def downtime_text(report: MigrationReport) -> str:
    """libvirt's downtime figure, never passed off as the guest's pause.

    After post-copy libvirt reports none, and the guest also waited on page
    faults for pages still on the source: say so instead of a number.
    """
    if report.switched_to_postcopy:
        figure = ('%d ms' % report.downtime_ms
                  if report.downtime_ms is not None else 'none')
        return ('%s from libvirt; post-copy: the guest also waited on page '
                'faults, which libvirt does not count' % figure)
    if report.downtime_ms is None:
        return 'not reported by libvirt'
    return '%d ms (libvirt)' % report.downtime_ms


def with_completed_stats(report: MigrationReport,
                         stats: Mapping[str, Any]) -> MigrationReport:
    """Take libvirt's own figures from completed-job statistics."""
    sample = samples.sample_from_job_stats(stats)
    updated = dataclasses.replace(
        report,
        downtime_ms=(sample.downtime_ms if sample.downtime_ms is not None
                     else report.downtime_ms),
        # A cancelled job's statistics count 0 iterations: keep what ran.
        iterations=sample.iteration or report.iterations,
        memory_total_bytes=(sample.memory_total_bytes
                            or report.memory_total_bytes),
        memory_sent_bytes=(sample.memory_processed_bytes
                           or report.memory_sent_bytes),
        data_sent_bytes=sample.data_processed_bytes or report.data_sent_bytes,
    )
    if report.guest is not None:
        # libvirt's downtime is part of what the guest paid: count it again.
        updated = dataclasses.replace(updated, guest=guest_cost.with_stop_s(
            guest_view(updated, report.guest.throttle_lost_s),
            report.guest.throttle_stop_s))
    return updated


def outcome_of_error(errors: ErrorClassifier, exc: BaseException,
                     abort_requested: bool) -> Outcome:
    """An error from migrateToURI3: an abort we asked for, or a failure."""
    ours = abort_requested or errors.aborted(exc)
    if errors.is_libvirt_error(exc) and ours:
        return Outcome.ABORTED
    return Outcome.FAILED


def resume_postcopy_call(domain: MigratableDomain, dest_uri: str,
                         params: Mapping[str, Any], flags: int
                         ) -> Callable[[], None]:
    """The call that resumes a broken post-copy migration: the original
    ``migrateToURI3`` with ``VIR_MIGRATE_POSTCOPY_RESUME`` added."""
    def resume() -> None:
        domain.migrateToURI3(dest_uri, dict(params),
                             flags | postcopy.VIR_MIGRATE_POSTCOPY_RESUME)
    return postcopy.bounded(resume, postcopy.RESUME_CALL_TIMEOUT_S,
                            daemon_thread)


def daemon_thread(target: Callable[[], None]) -> Any:
    """A real OS thread (even under eventlet) that never holds the process."""
    thread = native.threading_module().Thread(
        target=target, name='livemig-resume', daemon=True)
    thread.start()
    return thread


def settle_postcopy(monitor: MigrationMonitor, report: MigrationReport,
                    resume: Callable[[], None],
                    dest_domain: Callable[[], Any | None] | None,
                    timeout_s: float,
                    postcopy_resume: str = postcopy.RESUME_AUTO,
                    give_back_address: str | None = None,
                    dest_peer: Any | None = None
                    ) -> MigrationReport:
    """After a failure in post-copy: complete on the destination, or keep
    both halves and say so (NEEDS_RECOVERY). Never resumes the source.

    ``postcopy_resume`` is ``[livemig_ext] postcopy_resume``: whether a
    resume may be sent to the destination's libvirt (see
    :func:`postcopy.resume_hazard`). The destination is read through
    ``dest_domain`` (a callable opening its domain) or ``dest_peer`` (a
    :class:`nova_livemig_ext.peer.BoundedPeer`); with neither it is not in
    view, and nothing is ever given back."""
    dest_cache: list[Any | None] = []

    def views() -> tuple[postcopy.HostView, postcopy.HostView]:
        source = postcopy.read_view(monitor.domain,
                                    monitor.errors.is_libvirt_error,
                                    monitor.errors.domain_gone)
        dest = postcopy.UNREACHABLE
        if dest_peer is not None:
            dest = dest_peer.view()
        elif dest_domain is not None:
            if not dest_cache or dest_cache[0] is None:
                dest_cache[:] = [dest_domain()]
            dest = postcopy.read_view(dest_cache[0],
                                      monitor.errors.is_libvirt_error,
                                      monitor.errors.domain_gone)
            if not dest.reachable:
                dest_cache.clear()
        return source, dest

    # The destination's libvirt when it can be reached, else the source's
    # (hosts of one cloud run one release).
    if dest_peer is not None:
        dest_version = dest_peer.libvirt_version()
    elif dest_domain is not None:
        dest_version = postcopy.libvirt_version_of(dest_domain())
    else:
        dest_version = None
    hazard = postcopy.resume_hazard(
        dest_version if dest_version is not None
        else postcopy.libvirt_version_of(monitor.domain), postcopy_resume)
    monitor.log.warning(
        'Live migration failed after the switch to post-copy (%(error)s): '
        'the newest memory is on the destination, so nothing is rolled '
        'back; watching both halves and %(action)s for up to '
        '%(timeout).0f s',
        {'error': report.error, 'timeout': timeout_s,
         'action': 'resuming' if hazard is None else 'waiting'})

    def give_back(dest: postcopy.HostView, never_ran: bool = False) -> None:
        assert give_back_address is not None
        steps = standin.give_back_domain(
            monitor.domain, standin.state_of(dest.state, dest.reason),
            give_back_address, operator_says_never_ran=never_ran)
        for step in steps:
            monitor.log.info('Live migration: give-back: %(step)s',
                             {'step': step})

    def stop_stuck_dest() -> postcopy.HostView:
        """Stop the destination's QEMU (stuck before it ran the guest)
        and read it again."""
        if dest_peer is not None:
            stopped: postcopy.HostView = dest_peer.destroy()
            error = dest_peer.destroy_error
        else:
            assert dest_domain is not None
            domain = (dest_cache[0] if dest_cache and dest_cache[0] is not None
                      else dest_domain())
            if domain is None:
                raise RuntimeError('the destination cannot be reached to stop '
                                   'its QEMU')
            error = standin.destroy_stuck(domain,
                                          monitor.errors.is_libvirt_error)
            dest_cache.clear()
            stopped = views()[1]
        if error:
            monitor.log.info('Live migration: stopping the destination\'s '
                             'QEMU: %(error)s', {'error': error})
        return stopped

    can_give_back = give_back_address is not None and (
        dest_domain is not None or dest_peer is not None)
    settled = postcopy.settle(views, resume, monitor.clock, monitor.sleep,
                              timeout_s, monitor.errors.is_libvirt_error,
                              log=monitor.log, hazard=hazard,
                              # Only with the destination in view: its
                              # state is the proof that it never ran.
                              give_back=give_back if can_give_back
                              else None,
                              stop_stuck_dest=stop_stuck_dest
                              if can_give_back else None,
                              source_refusal=lambda: standin
                              .source_refusal_domain(monitor.domain))
    # The migration lasted until it settled: the guest on the destination
    # waited for its missing pages through the whole recovery, and so did
    # the guest paused on the source, including any wait before this call
    # (nova-compute waits for libvirt's call, reads the destination).
    elapsed_s = monitor.elapsed_s()
    report = dataclasses.replace(
        report, recovery=settled, switched_to_postcopy=True,
        total_s=max(report.total_s + settled.waited_s,
                    elapsed_s if elapsed_s is not None else 0.0))
    if settled.completed:
        return monitor.finish(report, Outcome.COMPLETED)
    if settled.where is postcopy.Where.NOT_SWITCHED:
        error = report.error
        if settled.given_back:
            error = ('%s; the destination failed before it ran the guest, '
                     'which was given back to the source' % error)
        return monitor.finish(report, Outcome.FAILED, error=error)
    return monitor.finish(report, Outcome.NEEDS_RECOVERY, error=report.error)


def run_migration(domain: MigratableDomain, dest_uri: str,
                  params: dict[str, Any], flags: int,
                  monitor: MigrationMonitor,
                  fetch_completed_stats: Callable[[], Mapping[str, Any]]
                  | None = None,
                  dest_domain: Callable[[], Any | None] | None = None,
                  recovery_timeout_s: float = 1800.0,
                  postcopy_resume: str = postcopy.RESUME_AUTO,
                  give_back_address: str | None = None,
                  dest_peer: Any | None = None
                  ) -> MigrationReport:
    """Start ``migrateToURI3`` in a thread and watch it to the end.

    ``fetch_completed_stats`` reads libvirt's completed-job statistics (on
    the destination they carry the right downtime) once the job completed.
    ``dest_domain`` opens the guest's domain on the destination (None when
    it cannot be reached), or ``dest_peer`` reads it (see
    :func:`settle_postcopy`): after a failure in post-copy both halves are
    watched while the migration is resumed; with ``give_back_address`` a
    destination that failed before it ran the guest gives it back to the
    source (see :mod:`nova_livemig_ext.standin`).
    """
    done = native.threading_module().Event()
    failure: list[BaseException] = []

    def migrate() -> None:
        try:
            domain.migrateToURI3(dest_uri, params, flags)
        except BaseException as exc:  # reported, not lost with the thread
            failure.append(exc)
        finally:
            done.set()

    # A real OS thread even under eventlet: migrateToURI3 blocks the thread
    # that calls it, and a green one would freeze the watcher too.
    thread = native.threading_module().Thread(
        target=migrate, name='livemig-migrate', daemon=True)
    thread.start()
    crashed = False
    try:
        report = monitor.watch(done.is_set)
    except Exception as exc:
        # The monitor's own fault must not decide the guest's fate.
        crashed = True
        monitor.log.exception('Live migration monitor failed')
        report = monitor.crash_report(exc)
        if not monitor.in_postcopy():
            # Never leave a job running unwatched: it would hold both hosts.
            try:
                domain.abortJob()
            except Exception as abort_exc:
                monitor.log.warning('Live migration: abort after a monitor '
                                    'error failed: %(error)s',
                                    {'error': abort_exc})
    if not crashed and report.ended_by is EndedBy.POSTCOPY_BROKEN:
        # libvirt's call may never return: recover beside it, and leave the
        # thread blocked in libvirt (it ends with the call, or the process).
        report = dataclasses.replace(
            report, error='post-copy failed while the migration call was '
                          'still running in libvirt')
        settled = settle_postcopy(
            monitor, report,
            resume_postcopy_call(domain, dest_uri, params, flags),
            dest_domain, recovery_timeout_s, postcopy_resume,
            give_back_address, dest_peer)
        if done.is_set():
            thread.join()
        return settled
    done.wait()
    thread.join()
    if not failure and not crashed:
        completed = None
        if fetch_completed_stats is not None:
            try:
                completed = fetch_completed_stats()
            except Exception as exc:
                monitor.log.warning('Live migration: completed-job '
                                    'statistics unavailable: %(error)s',
                                    {'error': exc})
        return monitor.finish(report, Outcome.COMPLETED,
                              completed_stats=completed)
    if failure:
        error = str(failure[0])
        if crashed:
            error = '%s; then the migration call: %s' % (report.error, error)
        report = dataclasses.replace(report, error=error)
    if monitor.in_postcopy():
        return settle_postcopy(
            monitor, report,
            resume_postcopy_call(domain, dest_uri, params, flags),
            dest_domain, recovery_timeout_s, postcopy_resume,
            give_back_address, dest_peer)
    if not failure:
        # The monitor crashed but the migration call returned: it completed.
        return monitor.finish(report, Outcome.COMPLETED)
    outcome = outcome_of_error(monitor.errors, failure[0],
                               monitor.abort_requested)
    return monitor.finish(report, outcome, error=report.error)
