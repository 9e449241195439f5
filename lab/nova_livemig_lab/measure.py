"""Measurements of one real migration, for tests, traces and benchmarks.

At each poll: the source's ``jobStats()`` with its elapsed time.  At the end:
libvirt's completed-job statistics (from the destination when the guest
moved: QEMU's own downtime figure is wrong for a paused copy, libvirt's
completed statistics on the destination are right), the longest heartbeat
gap the guest saw, and the guest's integrity.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nova_livemig_lab import guest as lab_guest
from nova_livemig_ext import native
from nova_livemig_lab import appmetrics, network, system
from nova_livemig_lab.config import HostSpec, LabConfig
from nova_livemig_lab.errors import LabError

LOG = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
SETTLE_S = 6.0
# Heartbeats are 10 Hz; under TCG with two QEMUs on two cores a third of them is plenty.
MIN_HEARTBEATS_PER_S = 3.0
# While the switchover runs the source domain stops being there: the job has ended.
END_OF_JOB_ERRORS = ("domain is not running", "Domain not found", "no domain with matching")

Stats = dict[str, Any]
OnPoll = Callable[[Any, Stats, float], None]


@dataclasses.dataclass(frozen=True)
class JobPoll:
    """One ``jobStats()`` answer and when it came, seconds after the job started."""

    elapsed_s: float
    stats: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class MigrationRun:
    """What the migration call itself did."""

    polls: tuple[JobPoll, ...]
    error: str | None
    started_s: float
    ended_s: float
    timed_out: bool

    @property
    def duration_s(self) -> float:
        return self.ended_s - self.started_s


@dataclasses.dataclass(frozen=True)
class IntegrityReport:
    """Did the guest come through intact, and where does it run now."""

    ok: bool
    host: str
    heartbeats_after: int
    heartbeats_after_span_s: float
    bad_pages: int
    fatal_lines: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MigrationResult:
    """Everything measured about one migration."""

    domain: str
    source: str
    destination: str
    flags: int
    flag_names: tuple[str, ...]
    params: Mapping[str, Any]
    dirty_mb: int
    dirty_rate_mb_s: int
    link_rate_mbit: float
    link_measured_mb_s: float
    run: MigrationRun
    completed_stats: Mapping[str, Any] | None
    max_heartbeat_gap_s: float
    max_gap_started_at_s: float
    integrity: IntegrityReport
    # The libvirt daemons the lab ran (libvirt_build): both report 11.3.0.
    libvirt_build: str = ""
    # What the guest's application lost, by its own counters (appmetrics).
    app_cost: appmetrics.AppCost | None = None

    @property
    def completed(self) -> bool:
        return self.run.error is None and self.integrity.host == self.destination


def is_end_of_job(exc: Exception) -> bool:
    text = str(exc)
    return any(marker in text for marker in END_OF_JOB_ERRORS)


def run_migration(dom: Any, dest_uri: str, params: Mapping[str, Any], flags: int,
                  on_poll: OnPoll | None = None, poll_interval_s: float = POLL_INTERVAL_S,
                  timeout_s: float | None = None) -> MigrationRun:
    """Run ``migrateToURI3`` in a thread and poll ``jobStats`` until it returns.

    ``on_poll(dom, stats, elapsed_s)`` is called after each successful poll;
    it may act on the job (abortJob, migrateStartPostCopy, ...).  After
    ``timeout_s`` the job is aborted once so that no caller can hang.
    """
    import libvirt
    system.quiet_libvirt()
    errors: list[str] = []

    def migrate() -> None:
        try:
            dom.migrateToURI3(dest_uri, dict(params), flags)
        except libvirt.libvirtError as exc:
            errors.append(str(exc))

    polls: list[JobPoll] = []
    # A native thread: under eventlet a green one would block the poller too.
    worker = native.threading_module().Thread(target=migrate, name="migrateToURI3", daemon=True)
    started_s = time.monotonic()
    worker.start()
    polling = True
    timed_out = False
    while worker.is_alive():
        elapsed_s = time.monotonic() - started_s
        if polling:
            polling = _poll_once(dom, elapsed_s, polls, on_poll)
        if timeout_s is not None and elapsed_s > timeout_s and not timed_out:
            timed_out = True
            LOG.warning("migration still running after %.0f s: aborting it", elapsed_s)
            _abort_quietly(dom)
        worker.join(poll_interval_s)
    return MigrationRun(tuple(polls), errors[0] if errors else None, started_s,
                        time.monotonic(), timed_out)


def _poll_once(dom: Any, elapsed_s: float, polls: list[JobPoll],
               on_poll: OnPoll | None) -> bool:
    """One poll; returns False once the source domain has gone (switchover)."""
    import libvirt
    try:
        stats = dict(dom.jobStats())
    except libvirt.libvirtError as exc:
        if is_end_of_job(exc):
            return False
        LOG.warning("jobStats failed: %s", exc)
        return True
    polls.append(JobPoll(round(elapsed_s, 3), stats))
    if on_poll is not None:
        on_poll(dom, stats, elapsed_s)
    return True


def _abort_quietly(dom: Any) -> None:
    import libvirt
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        LOG.info("abortJob: %s", exc)


# --- on_poll helpers ------------------------------------------------------

Events = list[dict[str, Any]]


def _note(events: Events | None, action: str, elapsed_s: float, **extra: Any) -> None:
    """Record an action taken on the job, for traces."""
    if events is not None:
        events.append({"t": round(elapsed_s, 3), "action": action, **extra})


def abort_after(delay_s: float, events: Events | None = None) -> OnPoll:
    """Abort the job once, the first poll after ``delay_s`` seconds."""
    done = threading.Event()

    def on_poll(dom: Any, stats: Stats, elapsed_s: float) -> None:
        if elapsed_s >= delay_s and not done.is_set():
            done.set()
            _note(events, "abortJob", elapsed_s)
            LOG.info("aborting the job after %.1f s (iteration %s)", elapsed_s,
                     stats.get("memory_iteration"))
            _abort_quietly(dom)
    return on_poll


def postcopy_after_first_pass(events: Events | None = None) -> OnPoll:
    """Switch to post-copy once the first pass over memory has finished."""
    done = threading.Event()

    def on_poll(dom: Any, stats: Stats, elapsed_s: float) -> None:
        if stats.get("memory_iteration", 0) >= 2 and not done.is_set():
            done.set()
            _note(events, "migrateStartPostCopy", elapsed_s)
            LOG.info("starting post-copy after %.1f s", elapsed_s)
            dom.migrateStartPostCopy(0)
    return on_poll


def set_max_downtime_after(delay_s: float, downtime_ms: int,
                           events: Events | None = None) -> OnPoll:
    """Raise the allowed downtime once, after ``delay_s`` seconds."""
    done = threading.Event()

    def on_poll(dom: Any, stats: Stats, elapsed_s: float) -> None:
        if elapsed_s >= delay_s and not done.is_set():
            done.set()
            _note(events, "migrateSetMaxDowntime", elapsed_s, downtime_ms=downtime_ms)
            LOG.info("max downtime -> %d ms after %.1f s", downtime_ms, elapsed_s)
            dom.migrateSetMaxDowntime(downtime_ms, 0)
    return on_poll


def once_into_precopy(action: Callable[[], None], processed_bytes: int) -> OnPoll:
    """Run ``action`` once, after the first ``processed_bytes`` of pass 1 were sent.

    Used to inject faults in the middle of pre-copy.
    """
    done = threading.Event()

    def on_poll(dom: Any, stats: Stats, elapsed_s: float) -> None:
        if stats.get("memory_processed", 0) >= processed_bytes and not done.is_set():
            done.set()
            LOG.info("injecting fault after %.1f s (%d bytes sent)", elapsed_s,
                     stats.get("memory_processed", 0))
            action()
    return on_poll


def chain(*callbacks: OnPoll | None) -> OnPoll:
    def on_poll(dom: Any, stats: Stats, elapsed_s: float) -> None:
        for callback in callbacks:
            if callback is not None:
                callback(dom, stats, elapsed_s)
    return on_poll


# --- flags and params -----------------------------------------------------

def flags_from_names(names: Sequence[str]) -> int:
    """``["LIVE", "PEER2PEER"]`` -> VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER."""
    import libvirt
    value = 0
    for name in names:
        attr = f"VIR_MIGRATE_{name.upper()}"
        if not hasattr(libvirt, attr):
            raise LabError(f"unknown migration flag {name} (no libvirt.{attr})")
        value |= getattr(libvirt, attr)
    return value


def flag_names(flags: int) -> tuple[str, ...]:
    import libvirt
    names = []
    for attr in dir(libvirt):
        if attr.startswith("VIR_MIGRATE_") and not attr.startswith("VIR_MIGRATE_PARAM_"):
            value = getattr(libvirt, attr)
            if isinstance(value, int) and value and value & (value - 1) == 0 and flags & value:
                names.append(attr[len("VIR_MIGRATE_"):])
    return tuple(sorted(set(names)))


def link_params(destination: HostSpec) -> dict[str, Any]:
    """Send QEMU's data over the shaped link to the destination's link address."""
    import libvirt
    return {libvirt.VIR_MIGRATE_PARAM_URI: destination.migration_uri,
            libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: destination.link_address}


def destination_uri(destination: HostSpec, flags: int) -> str:
    """Peer-to-peer: the source libvirtd dials the peer over the link; else we do."""
    import libvirt
    return destination.peer_uri if flags & libvirt.VIR_MIGRATE_PEER2PEER else destination.uri


# --- integrity and gaps ---------------------------------------------------

def max_gap(heartbeats: Sequence[lab_guest.Heartbeat], start_s: float,
            end_s: float) -> tuple[float, float]:
    """Longest interval between consecutive heartbeats inside [start_s, end_s].

    Returns (gap_s, when the gap began, relative to ``start_s``).
    """
    times = [hb.host_time_s for hb in heartbeats if start_s <= hb.host_time_s <= end_s]
    if len(times) < 2:
        return end_s - start_s, 0.0
    gaps = [(b - a, a - start_s) for a, b in zip(times, times[1:])]
    gap_s, began_s = max(gaps)
    return round(gap_s, 3), round(began_s, 3)


def assess_integrity(lines: Sequence[lab_guest.ConsoleLine],
                     heartbeats: Sequence[lab_guest.Heartbeat], host: str, since_s: float,
                     settle_s: float) -> IntegrityReport:
    """Intact: steady heartbeats on ``host`` after ``since_s``, no bad page, no panic."""
    after = [hb for hb in heartbeats if hb.host == host and hb.host_time_s >= since_s]
    span_s = after[-1].host_time_s - after[0].host_time_s if len(after) > 1 else 0.0
    bad_pages = max((hb.bad_pages for hb in heartbeats), default=0)
    fatal = tuple(line.text for line in lines if lab_guest.is_fatal(line.text))
    reasons = []
    if len(after) < MIN_HEARTBEATS_PER_S * settle_s:
        reasons.append(f"only {len(after)} heartbeats on host {host} in the {settle_s:.0f} s "
                       "after the job ended")
    if bad_pages:
        reasons.append(f"guest counted {bad_pages} bad pages")
    if fatal:
        reasons.append(f"console shows: {fatal[0]!r}")
    seqs = [hb.seq for hb in after]
    if any(b != a + 1 for a, b in zip(seqs, seqs[1:])):
        reasons.append("heartbeat sequence numbers jump after the job (guest restarted?)")
    return IntegrityReport(not reasons, host, len(after), round(span_s, 3), bad_pages, fatal,
                           tuple(reasons))


# --- one measured migration ----------------------------------------------

def _domain_state(host: HostSpec, name: str) -> tuple[int, int] | None:
    import libvirt
    try:
        conn = libvirt.open(host.uri)
    except libvirt.libvirtError:
        return None
    try:
        state, reason = conn.lookupByName(name).state()
        return int(state), int(reason)
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def guest_host_after(source: HostSpec, destination: HostSpec, name: str) -> HostSpec:
    """Where the guest lives once a migration call has returned.

    Asked of the source, not the destination: after a fault in pre-copy the
    destination still holds the half-done incoming domain (active, paused)
    until keepalive notices its peer is gone, while the source already runs
    the guest again. The guest is on the source while the source domain is
    active and not a post-copy half (paused for post-copy, or paused because
    post-copy failed): in those states the newest memory is on the
    destination.
    """
    import libvirt
    state = _domain_state(source, name)
    if state is None or state[0] in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTDOWN,
                                     libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_NOSTATE):
        return destination
    postcopy_halves = (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
                       libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    if state[0] == libvirt.VIR_DOMAIN_PAUSED and state[1] in postcopy_halves:
        return destination
    return source


def completed_job_stats(host: HostSpec, name: str) -> dict[str, Any] | None:
    """libvirt's statistics of the job that just ended, as seen by ``host``."""
    import libvirt
    try:
        conn = libvirt.open(host.uri)
    except libvirt.libvirtError:
        return None
    try:
        return dict(conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except libvirt.libvirtError as exc:
        LOG.info("no completed job statistics on host %s: %s", host.name, exc)
        return None
    finally:
        conn.close()


# Runs the migration call instead of run_migration (the controller's monitor
# does, in nova_livemig_lab.controlled): (dom, dest_uri, params, flags).
Runner = Callable[[Any, str, Mapping[str, Any], int], MigrationRun]


def migrate_and_measure(config: LabConfig, guest: lab_guest.Guest, flags: int,
                        params: Mapping[str, Any] | None = None, on_poll: OnPoll | None = None,
                        settle_s: float = SETTLE_S, timeout_s: float | None = 300.0,
                        poll_interval_s: float = POLL_INTERVAL_S,
                        runner: Runner | None = None) -> MigrationResult:
    """Migrate ``guest`` to the other host over the shaped link and measure it."""
    import libvirt
    if flags & libvirt.VIR_MIGRATE_POSTCOPY and not system.userfaultfd_available():
        raise LabError("post-copy needs userfaultfd, which this kernel does not offer "
                       "(CONFIG_USERFAULTFD, /dev/userfaultfd or vm.unprivileged_userfaultfd)")
    source, destination = guest.host, config.other(guest.host)
    all_params = {**link_params(destination), **(params or {})}
    guest.watch(destination)
    link = network.load_link_state(config)
    conn = libvirt.open(source.uri)
    try:
        dom = conn.lookupByName(guest.name)
        if runner is not None:
            run = runner(dom, destination_uri(destination, flags), all_params, flags)
        else:
            run = run_migration(dom, destination_uri(destination, flags), all_params, flags,
                                on_poll, poll_interval_s, timeout_s)
    finally:
        conn.close()
    final = guest_host_after(source, destination, guest.name)
    time.sleep(settle_s)
    guest.host = final
    gap_s, gap_at_s = max_gap(guest.heartbeats(), run.started_s, run.ended_s + settle_s)
    return MigrationResult(
        domain=guest.name, source=source.name, destination=destination.name, flags=flags,
        flag_names=flag_names(flags), params=all_params, dirty_mb=guest.dirty_mb,
        dirty_rate_mb_s=guest.dirty_rate_mb_s, link_rate_mbit=link["rate_mbit"],
        link_measured_mb_s=link["measured_mb_s"], run=run,
        completed_stats=completed_job_stats(final, guest.name),
        max_heartbeat_gap_s=gap_s, max_gap_started_at_s=gap_at_s,
        integrity=assess_integrity(guest.lines(), guest.heartbeats(), final.name, run.ended_s,
                                   settle_s),
        libvirt_build=config.libvirt.name,
        app_cost=appmetrics.cost(
            guest.lines(), run.started_s, run.ended_s + settle_s,
            write_rate=lambda ms: guest.pattern.write_rate_at(guest.dirty_rate_mb_s, ms)))


def summary(result: MigrationResult) -> dict[str, Any]:
    """The numbers a person wants to see, as plain JSON-able data."""
    last = result.run.polls[-1].stats if result.run.polls else {}
    completed = result.completed_stats or {}
    return {
        "domain": result.domain, "flags": list(result.flag_names),
        "dirty_mb": result.dirty_mb, "dirty_rate_mb_s": result.dirty_rate_mb_s,
        "link_rate_mbit": result.link_rate_mbit,
        "link_measured_mb_s": result.link_measured_mb_s,
        "outcome": "completed" if result.completed else "not migrated",
        "error": result.run.error, "timed_out": result.run.timed_out,
        "duration_s": round(result.run.duration_s, 2), "polls": len(result.run.polls),
        "last_iteration": last.get("memory_iteration"),
        "completed_downtime_ms": completed.get("downtime"),
        "completed_time_elapsed_ms": completed.get("time_elapsed"),
        "completed_memory_transferred_bytes": completed.get("memory_processed"),
        "max_heartbeat_gap_s": result.max_heartbeat_gap_s,
        "max_gap_started_at_s": result.max_gap_started_at_s,
        "guest_host": result.integrity.host, "integrity_ok": result.integrity.ok,
        "integrity_reasons": list(result.integrity.reasons),
        "bad_pages": result.integrity.bad_pages,
        "libvirt_build": result.libvirt_build,
        "app_cost": None if result.app_cost is None else result.app_cost.as_dict(),
    }


def scenario(config: LabConfig, flags_names: Sequence[str], dirty_mb: int, dirty_rate_mb_s: int,
             abort_after_s: float | None = None, postcopy_after_pass: bool = False,
             params: Mapping[str, Any] | None = None, name: str | None = None,
             timeout_s: float = 300.0, emulator: str | None = None) -> MigrationResult:
    """Boot a guest on host A, migrate it to B, measure, destroy it."""
    guest = lab_guest.boot(config, config.host_a, name or f"lab-{int(time.time())}",
                           dirty_mb=dirty_mb, dirty_rate_mb_s=dirty_rate_mb_s,
                           emulator=emulator)
    try:
        on_poll = chain(abort_after(abort_after_s) if abort_after_s is not None else None,
                        postcopy_after_first_pass() if postcopy_after_pass else None)
        return migrate_and_measure(config, guest, flags_from_names(flags_names), params,
                                   on_poll, timeout_s=timeout_s)
    finally:
        lab_guest.destroy(guest, config)
