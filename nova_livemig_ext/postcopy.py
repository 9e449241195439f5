"""After the switch to post-copy: completed on the destination, or recovering.

Once QEMU switched a migration to post-copy, the guest runs on the
destination while part of its memory is still on the source. Neither half
can run alone, so there are only two ways out: the migration completes on
the destination, or it is resumed until it does. Nothing here ever destroys,
resumes or aborts either half. One case has a third way out: a destination
that failed to load the guest at the switch and never ran it leaves the whole
guest on the source, which :mod:`nova_livemig_ext.standin` can run again;
so does a destination whose QEMU stuck while loading the guest's device state
(see :func:`settle`: it is stopped first, by the caller's ``stop_stuck_dest``).

libvirt's view and QEMU's differ while post-copy is in trouble: libvirt marks
the domain ``POSTCOPY_FAILED`` as soon as its own connection between the two
daemons drops (keepalive), while QEMU's migration stream may survive a short
outage and finish by itself. So a "failed" verdict from libvirt is never
taken as the end: the states of both halves are read again and again, and a
resume (``VIR_MIGRATE_POSTCOPY_RESUME``) is tried with backoff. libvirt
refuses a resume while QEMU's stream is still alive ("migration is still
running"); that refusal costs nothing and means "wait".

:func:`judge` reads where the guest is from the two hosts' domain states
(pure); :func:`settle` is the loop that waits, resumes and gives up only when
``postcopy_recovery_timeout_s`` has passed without progress, leaving both
halves untouched for ``nova-livemig-ext recover``.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

# libvirt's domain states and reasons (virDomainState and its reasons).
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_SHUTDOWN = 4
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_PAUSED_MIGRATION = 2
VIR_DOMAIN_RUNNING_POSTCOPY = 10
VIR_DOMAIN_RUNNING_POSTCOPY_FAILED = 11
VIR_DOMAIN_PAUSED_POSTCOPY = 12
VIR_DOMAIN_PAUSED_POSTCOPY_FAILED = 13
VIR_DOMAIN_SHUTOFF_MIGRATED = 4
VIR_DOMAIN_SHUTOFF_FAILED = 6
VIR_MIGRATE_POSTCOPY_RESUME = 1 << 19

# libvirt releases whose destination daemon crashes on every
# VIR_MIGRATE_POSTCOPY_RESUME: from 11.2.0 qemuMigrationDstPrepareResume()
# hands qemuMigrationDstPrepare() a NULL ``int *fd`` that
# qemuProcessIncomingDefNew() dereferences; 11.4.0 fixed it ("qemu: Fix
# virtqemud crash when resuming failed post-copy migration"). Seen in the
# project's lab on each of eight tries with Debian's 11.3.0. A resume there
# only kills the destination libvirtd; waiting keeps every chance that
# remains (QEMU's own stream heals a short outage by itself). Keyed by
# (major, minor): every micro release of those two carries the bug.
RESUME_CRASHES_DESTINATION = frozenset({(11, 2), (11, 3)})

# [livemig_ext] postcopy_resume
RESUME_AUTO = 'auto'
RESUME_PATCHED = 'patched'
RESUME_NEVER = 'never'
RESUME_CHOICES = (RESUME_AUTO, RESUME_PATCHED, RESUME_NEVER)

DEFAULT_POLL_INTERVAL_S = 1.0
# A resume that has not returned by then is counted as failed and the wait
# goes on: seen in the lab, a destination QEMU deadlocked while loading the
# device state keeps the call blocked in libvirt for good.
RESUME_CALL_TIMEOUT_S = 60.0
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 30.0
# A destination whose libvirt still shows the incoming guest paused for
# migration this long after the source's post-copy failed is stuck loading
# the guest's device state (see Where.DEST_STUCK).
STUCK_LOADING_S = 10.0


@dataclasses.dataclass(frozen=True)
class HostView:
    """What one host's libvirt says about the guest's domain."""

    reachable: bool
    present: bool = False
    state: int | None = None
    reason: int | None = None

    def __str__(self) -> str:
        if not self.reachable:
            return 'unreachable'
        if not self.present:
            return 'no domain'
        state = STATE_NAMES.get(self.state or 0, str(self.state))
        reason = REASON_NAMES.get((self.state or 0, self.reason or 0),
                                  str(self.reason))
        return '%s/%s' % (state, reason)


UNREACHABLE = HostView(False)
ABSENT = HostView(True, False)

STATE_NAMES: dict[int, str] = {
    VIR_DOMAIN_RUNNING: 'running', VIR_DOMAIN_PAUSED: 'paused',
    VIR_DOMAIN_SHUTDOWN: 'shutting down', VIR_DOMAIN_SHUTOFF: 'shut off'}
REASON_NAMES: dict[tuple[int, int], str] = {
    (VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_POSTCOPY): 'post-copy',
    (VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_POSTCOPY_FAILED):
        'post-copy failed',
    (VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY): 'post-copy',
    (VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
        'post-copy failed',
    (VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_MIGRATED): 'migrated',
    (VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_FAILED): 'failed',
    (VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_MIGRATION): 'migrating',
}


class Where(enum.Enum):
    """Where the guest is, as the two hosts' states tell it."""

    # The destination runs the whole guest; the source half is gone.
    COMPLETED = 'completed'
    # Post-copy is under way and libvirt sees nothing wrong.
    POSTCOPY = 'post-copy'
    # libvirt says post-copy failed; QEMU's stream may or may not live.
    BROKEN = 'broken'
    # The switch never happened: the source holds the whole guest.
    NOT_SWITCHED = 'not switched'
    # The source half died after the switch: the guest cannot be completed.
    SOURCE_LOST = 'source lost'
    # The destination failed to load the guest's state at the switch and
    # was shut off before it ran the guest: the source holds all of it but
    # QEMU will not run it again by itself (see nova_livemig_ext.standin).
    DEST_FAILED = 'destination failed before running'
    # The source is paused in post-copy while the destination's libvirt
    # still shows the incoming guest paused for migration: its QEMU never
    # started the guest's CPUs. Seen when a
    # stream reset at the switch made the destination's loader fail while
    # its main thread waited for a page inside the device state: its QEMU
    # stays alive but will never run the guest, nor accept a resume.
    # Taken as stuck only once it lasts (see settle).
    DEST_STUCK = 'destination stuck before running'
    # Neither host can be read.
    UNKNOWN = 'unknown'


def _is(view: HostView, state: int, reasons: tuple[int, ...] = ()) -> bool:
    return (view.present and view.state == state
            and (not reasons or view.reason in reasons))


def judge(source: HostView, dest: HostView) -> Where:
    """Where the guest is after a switch to post-copy was asked for."""
    dest_failed = (_is(dest, VIR_DOMAIN_RUNNING,
                       (VIR_DOMAIN_RUNNING_POSTCOPY_FAILED,))
                   or _is(dest, VIR_DOMAIN_PAUSED,
                          (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,)))
    dest_postcopy = _is(dest, VIR_DOMAIN_RUNNING,
                        (VIR_DOMAIN_RUNNING_POSTCOPY,))
    if source.reachable:
        if not source.present and dest.reachable and not dest.present:
            # On neither host: nothing this module can say or do.
            return Where.UNKNOWN
        if (not source.present
                or _is(source, VIR_DOMAIN_SHUTOFF,
                       (VIR_DOMAIN_SHUTOFF_MIGRATED,))
                or _is(source, VIR_DOMAIN_SHUTDOWN)):
            # libvirt removes or shuts off the source only once QEMU said
            # the migration completed; a destination still marked failed
            # then only lags behind (its QEMU finished by itself).
            return Where.COMPLETED
        if _is(source, VIR_DOMAIN_SHUTOFF):
            return Where.SOURCE_LOST
        if _is(source, VIR_DOMAIN_RUNNING):
            # libvirt never runs the source again after a switch: it still
            # holds the whole guest, whatever the destination shows.
            return Where.NOT_SWITCHED
        if (_is(source, VIR_DOMAIN_PAUSED, (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
                                            VIR_DOMAIN_PAUSED_POSTCOPY))
                and _is(dest, VIR_DOMAIN_SHUTOFF,
                        (VIR_DOMAIN_SHUTOFF_FAILED,))):
            # libvirt shuts an incoming domain off as failed only before it
            # reached post-copy; one that ran is kept for a resume.
            return Where.DEST_FAILED
        if (_is(source, VIR_DOMAIN_PAUSED, (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
                                            VIR_DOMAIN_PAUSED_POSTCOPY))
                and _is(dest, VIR_DOMAIN_PAUSED,
                        (VIR_DOMAIN_PAUSED_MIGRATION,))):
            # libvirt keeps an incoming domain paused for migration until
            # QEMU reports its CPUs started (qemuProcessHandleResume then
            # sets running, whatever the job), which QEMU does only once the
            # whole device state is loaded.
            return Where.DEST_STUCK
        if _is(source, VIR_DOMAIN_PAUSED, (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,)):
            return Where.BROKEN
        if _is(source, VIR_DOMAIN_PAUSED, (VIR_DOMAIN_PAUSED_POSTCOPY,)):
            return Where.BROKEN if dest_failed else Where.POSTCOPY
        if source.present and (dest_failed or dest_postcopy):
            # Source paused for another reason (by the monitor, or at the
            # start of the switchover) while the destination runs post-copy.
            return Where.BROKEN if dest_failed else Where.POSTCOPY
        return Where.NOT_SWITCHED
    if dest_failed:
        return Where.BROKEN
    if dest_postcopy:
        return Where.POSTCOPY
    if _is(dest, VIR_DOMAIN_RUNNING):
        # Running for any other reason (migrated, unpaused): complete.
        return Where.COMPLETED
    return Where.UNKNOWN


def read_view(domain: Any | None, is_libvirt_error: Callable[[BaseException],
                                                             bool],
              domain_gone: Callable[[BaseException], bool]) -> HostView:
    """``domain.state()`` as a :class:`HostView` (None: no connection)."""
    if domain is None:
        return UNREACHABLE
    try:
        state = domain.state()
    except Exception as exc:
        if not is_libvirt_error(exc):
            raise
        return ABSENT if domain_gone(exc) else UNREACHABLE
    return HostView(True, True, int(state[0]), int(state[1]))


@dataclasses.dataclass(frozen=True)
class Settled:
    """How a post-copy migration in trouble ended (or was left)."""

    where: Where
    waited_s: float
    resume_attempts: int
    resumed: bool
    last_error: str | None
    source: HostView
    dest: HostView
    resume_withheld: str | None = None
    # The source runs the guest again after the destination failed before
    # running it (see nova_livemig_ext.standin); why not, when it was tried.
    given_back: bool = False
    give_back_error: str | None = None

    @property
    def completed(self) -> bool:
        return self.where is Where.COMPLETED

    @property
    def needs_operator(self) -> bool:
        """Both halves kept, nothing more will be tried automatically."""
        return self.where not in (Where.COMPLETED, Where.NOT_SWITCHED)


def resume_hazard(libvirt_version: int | None,
                  resume: str = RESUME_AUTO) -> str | None:
    """Why a resume must not be sent to this libvirt, or None.

    ``resume`` is ``[livemig_ext] postcopy_resume``: ``auto`` trusts the
    version number, ``patched`` is the operator's word that every host's
    libvirt carries the 11.4.0 fix (the number does not change with a
    backport), ``never`` withholds every resume. An unknown version under
    ``auto`` is the destination's silence: a resume to a daemon that does
    not answer cannot crash it, so it is not withheld.
    """
    if resume == RESUME_NEVER:
        return ('[livemig_ext] postcopy_resume = never: resumes are left to '
                'the operator')
    if resume == RESUME_PATCHED or libvirt_version is None:
        return None
    version = int(libvirt_version)
    major, minor = version // 1000000, version // 1000 % 1000
    if (major, minor) not in RESUME_CRASHES_DESTINATION:
        return None
    return ('libvirt %d.%d.%d crashes the destination libvirtd on every '
            'post-copy resume (NULL pointer in qemuProcessIncomingDefNew, '
            'fixed in 11.4.0; a build with the fix backported is declared '
            'with [livemig_ext] postcopy_resume = patched)'
            % (major, minor, version % 1000))


def libvirt_version_of(domain: Any | None) -> int | None:
    """The version of the libvirt that serves ``domain``, if it answers."""
    if domain is None:
        return None
    try:
        return int(domain.connect().getLibVersion())
    except Exception:  # a probe: no answer is not an error of the migration
        return None


class ResumeTimedOut(Exception):
    """A resume call that did not return in time (it may still be blocked)."""


def bounded(call: Callable[[], None], timeout_s: float,
            start_thread: Callable[[Callable[[], None]], Any]) -> Callable[[], None]:
    """``call`` run in its own thread, given up on after ``timeout_s``.

    libvirt calls block their thread; one that never returns must not stop
    the loop that watches both halves. ``start_thread(target)`` starts a
    daemon thread running ``target`` and returns an object with
    ``join(timeout)`` and ``is_alive()``.
    """
    def run() -> None:
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the caller
                outcome.append(exc)
            else:
                outcome.append(None)

        thread = start_thread(target)
        thread.join(timeout_s)
        if thread.is_alive() or not outcome:
            raise ResumeTimedOut('the resume call did not return within %.0f s '
                                 '(still blocked in libvirt)' % timeout_s)
        if outcome[0] is not None:
            raise outcome[0]
    return run


def retry_delays_s(first_s: float = FIRST_RETRY_S,
                   max_s: float = MAX_RETRY_S) -> Callable[[int], float]:
    """Backoff between resume attempts: doubling from ``first_s``."""
    def delay(attempt: int) -> float:
        return float(min(max_s, first_s * 2.0 ** max(0, attempt - 1)))
    return delay


def settle(views: Callable[[], tuple[HostView, HostView]],
           resume: Callable[[], None], clock: Callable[[], float],
           sleep: Callable[[float], None], timeout_s: float,
           is_libvirt_error: Callable[[BaseException], bool],
           log: logging.Logger | logging.LoggerAdapter[Any] = LOG,
           poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
           retry_delay_s: Callable[[int], float] = retry_delays_s(),
           hazard: str | None = None,
           give_back: Callable[..., None] | None = None,
           stop_stuck_dest: Callable[[], HostView] | None = None,
           stuck_s: float | None = None,
           source_refusal: Callable[[], str | None] | None = None
           ) -> Settled:
    """Watch a post-copy migration until it completes, or give up.

    ``views()`` reads both halves; ``resume()`` repeats the migration with
    ``VIR_MIGRATE_POSTCOPY_RESUME`` and returns when it completed (it raises
    a libvirt error when refused or broken again). Gives up once the guest
    has not been seen in healthy post-copy for ``timeout_s``; a guest whose
    source half was lost, or whose switch never happened, ends at once.
    With a ``hazard`` (see :func:`resume_hazard`) no resume is tried: the
    loop only waits for QEMU's stream to heal, then leaves both halves.

    A destination that failed before it ran the guest (``DEST_FAILED``)
    cannot be resumed into; ``give_back(dest)``, when given, is tried once
    to run the guest on the source again (it raises when it refuses or
    fails; the halves are then left as they are).

    A destination stuck before it ran the guest (``DEST_STUCK`` for
    ``stuck_s`` without a break, by default :data:`STUCK_LOADING_S`, capped
    at half of ``timeout_s``) is
    neither resumed into nor waited for when ``give_back`` and
    ``stop_stuck_dest`` are given: ``stop_stuck_dest()`` stops the
    destination's QEMU and returns its new view, and only a destination that
    then runs no QEMU for the guest is followed by ``give_back(dest,
    never_ran=True)``, once. Without them it is treated as ``BROKEN``.
    Nothing is stopped while ``source_refusal()`` gives a reason the source
    cannot take the guest back (its stream still alive after a link cut may
    yet deliver the switch): the loop waits, and tries again each poll.
    """
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError('timeout_s must be a positive number')
    started_s = clock()
    trouble_since_s = started_s
    attempts = 0
    resumed = False
    last_error: str | None = None
    next_try_s = started_s
    last_where: Where | None = None
    warned = False
    given_back = False
    give_back_error: str | None = None
    stuck_since_s: float | None = None
    source_not_ready: str | None = None
    stuck_for_s = min(STUCK_LOADING_S if stuck_s is None else stuck_s,
                      timeout_s / 2.0)
    while True:
        source, dest = views()
        where = judge(source, dest)
        now_s = clock()
        if where is Where.DEST_STUCK:
            stuck_since_s = now_s if stuck_since_s is None else stuck_since_s
        else:
            stuck_since_s = None
        if where is not last_where:
            log.info('Live migration after the switch to post-copy: '
                     '%(where)s (source %(source)s, destination %(dest)s) '
                     'at %(at).1f s', {'where': where.value, 'source': source,
                                       'dest': dest,
                                       'at': now_s - started_s})
            last_where = where
        if where in (Where.COMPLETED, Where.NOT_SWITCHED, Where.SOURCE_LOST):
            return Settled(where, now_s - started_s, attempts, resumed,
                           last_error, source, dest, hazard, given_back,
                           give_back_error)
        may_give_back = (give_back is not None and not given_back
                         and give_back_error is None)
        may_unstick = may_give_back and stop_stuck_dest is not None
        unstick: bool | None = None  # None: nothing to give back now
        stuck_long = (where is Where.DEST_STUCK and may_unstick
                      and stuck_since_s is not None
                      and now_s - stuck_since_s >= stuck_for_s)
        if stuck_long and source_refusal is not None:
            reason = source_refusal()
            if reason is not None:
                if reason != source_not_ready:
                    log.info('Live migration: the destination looks stuck, '
                             'but it is not stopped yet: %(reason)s',
                             {'reason': reason})
                source_not_ready = reason
                stuck_long = False
        if where is Where.DEST_FAILED and may_give_back:
            log.warning('Live migration: the destination failed to load the '
                        'guest at the switch to post-copy and never ran it; '
                        'giving the guest back to the source, which holds '
                        'all of it')
            unstick = False
        elif stuck_long:
            assert stuck_since_s is not None
            log.warning('Live migration: the destination has shown the guest '
                        'paused for migration for %(stuck).0f s while the '
                        'source is paused in post-copy: its QEMU is stuck '
                        'loading the guest and never ran it; stopping it and '
                        'giving the guest back to the source, which holds '
                        'all of it', {'stuck': now_s - stuck_since_s})
            unstick = True
        if unstick is not None:
            try:
                assert give_back is not None
                if not unstick:
                    give_back(dest)
                else:
                    assert stop_stuck_dest is not None
                    stopped = stop_stuck_dest()
                    if not stopped.reachable or (
                            stopped.present
                            and stopped.state != VIR_DOMAIN_SHUTOFF):
                        raise RuntimeError('the destination still runs a '
                                           'QEMU for the guest after it was '
                                           'stopped (%s)' % stopped)
                    give_back(stopped, never_ran=True)
            except Exception as exc:
                give_back_error = str(exc) or type(exc).__name__
                log.error('Live migration: the guest could not be given back '
                          'to the source: %(error)s; what is left is left as '
                          'it is', {'error': give_back_error})
            else:
                given_back = True
                log.warning('Live migration: the source runs the guest again '
                            '(the migration failed; no memory was lost)')
                continue
        if where is Where.DEST_STUCK and may_unstick:
            # Waiting to be sure: a resume into it would only block.
            pass
        elif where is Where.POSTCOPY:
            trouble_since_s = now_s
        elif where in (Where.BROKEN, Where.DEST_STUCK) and hazard is not None:
            if not warned:
                warned = True
                log.warning('Live migration: post-copy resume is not tried, '
                            'only waited for: %(hazard)s', {'hazard': hazard})
        elif (where in (Where.BROKEN, Where.DEST_STUCK)
              and now_s >= next_try_s):
            attempts += 1
            try:
                resume()
            except Exception as exc:
                if not (is_libvirt_error(exc) or isinstance(exc, ResumeTimedOut)):
                    raise
                last_error = str(exc)
                delay_s = retry_delay_s(attempts)
                next_try_s = clock() + delay_s
                log.warning('Live migration: post-copy resume attempt '
                            '%(attempt)d refused or failed, next in '
                            '%(delay).0f s: %(error)s',
                            {'attempt': attempts, 'delay': delay_s,
                             'error': exc})
            else:
                resumed = True
                log.info('Live migration: post-copy resumed (attempt '
                         '%(attempt)d) and finished', {'attempt': attempts})
                continue
        if clock() - trouble_since_s >= timeout_s:
            return Settled(where, clock() - started_s, attempts, resumed,
                           last_error, source, dest, hazard, given_back,
                           give_back_error)
        sleep(poll_interval_s)
