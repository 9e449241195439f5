"""Faults at moments nobody chose: random faults in random phases of a migration.

Each run boots a busy guest on host A and moves it to host B with
``nova-livemig-ext migrate`` (a subprocess, post-copy permitted, ladder
``postcopy,abort``), while a real OS thread injects one fault at one moment,
both drawn from ``random.Random(f"{seed}-{i}")``:

faults
    ``stream-reset``: QEMU's migration sockets reset at both ends;
    ``link-down``: the link cut for 1 to 60 s;
    ``dest-libvirtd-restart``: host B's libvirtd stopped and started again;
    ``monitor-killed``: the ``migrate`` process killed (SIGKILL), then
    ``nova-livemig-ext recover`` run, as an operator would.

phases
    ``pre-copy``: 1 to 25 s after the job started (the busy guest switches
    after about 30 s); ``switchover``: 0 to 0.3 s after the source shows
    paused for post-copy; ``early-post-copy``: 0.3 to 3 s after it;
    ``late-post-copy``: most memory arrived (at least 3 s after the switch
    and 10 to 40 % of the memory left at the switch still to come, or 8 s).

When the migration ends unsettled (both halves of the guest still there,
the report asking for recovery, the monitor killed or hung), ``recover``
runs once the fault is over. Then the guest is judged: completed on B,
rolled back to A, or lost (not running intact on exactly one host: no
QEMU of it left on the other, no bad page, steady heartbeats after the
end), and whether the reports (migrate's ``--json``, recover's exit status
and words) said where it really was.

``python -m nova_livemig_lab.chaos --runs N --seed S [--json PATH]``
prints the seed first, one line per run, and a table fault x phase;
``--cover`` goes round every fault x phase pair, ``--table-from PATH``
prints the table of runs saved with ``--json``. Each run holds the lab lock
(:class:`nova_livemig_lab.lock.LabLock`) from boot to destroy.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from nova_livemig_ext import native
from nova_livemig_lab import config as lab_config
from nova_livemig_lab import demo, hosts, measure, network, system
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab.config import HostSpec, LabConfig
from nova_livemig_lab.errors import LabError
from nova_livemig_lab.lock import LabLock

LOG = logging.getLogger(__name__)

STREAM_RESET = "stream-reset"
LINK_DOWN = "link-down"
DEST_RESTART = "dest-libvirtd-restart"
MONITOR_KILLED = "monitor-killed"
FAULTS = (STREAM_RESET, LINK_DOWN, DEST_RESTART, MONITOR_KILLED)

PRECOPY = "pre-copy"
SWITCHOVER = "switchover"
EARLY_POSTCOPY = "early-post-copy"
LATE_POSTCOPY = "late-post-copy"
PHASES = (PRECOPY, SWITCHOVER, EARLY_POSTCOPY, LATE_POSTCOPY)

COMPLETED = "completed"
ROLLED_BACK = "rolled back"
LOST = "lost"
HARNESS_ERROR = "harness error"

WORKING_SET_MB = demo.WORKING_SET_MB
DIRTY_RATE_MB_S = demo.DIRTY_RATE_MB_S
LINK_DOWN_S = (1.0, 60.0)
# The busy guest switches to post-copy about 31 s after its job started
# (first pass 13 s, then passes of about 8 s, the controller switches at the
# fourth); pre-copy faults land before that.
PRECOPY_AT_S = (1.0, 25.0)
SWITCHOVER_AFTER_S = (0.0, 0.3)
EARLY_AFTER_S = (0.3, 3.0)
# Post-copy then takes about 8 s for ~120 MB.
LATE_AFTER_S = (3.0, 8.0)
LATE_REMAINING_FRACTION = (0.1, 0.4)
RECOVERY_TIMEOUT_S = 120
RECOVER_TIMEOUT_S = 120
# The deadline (about 170 s for this guest) plus the recovery timeout, and
# room: a migrate still running after this is a hang.
MIGRATE_TIMEOUT_S = 360.0
RECOVER_PROCESS_TIMEOUT_S = RECOVER_TIMEOUT_S + 180.0
# How long a half-done incoming domain may linger after the fault is over
# (libvirt's keepalive drops a dead peer in about 8 s).
SETTLE_WAIT_S = 30.0
STRAY_WAIT_S = 30.0
SETTLE_S = measure.SETTLE_S
POLL_S = 0.05
# Heartbeats come at 10 Hz; a reported pause this much shorter than the
# longest heartbeat gap is wrong, not imprecise.
PAUSE_TOLERANCE_S = 1.0
LATE_POLL_S = 0.2
INJECTOR_GIVE_UP_S = 400.0
LOG_TAIL_LINES = 40

# libvirt's domain states and reasons, spelled out so that the module can be
# imported without libvirt-python.
VIR_DOMAIN_NOSTATE = 0
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_SHUTDOWN = 4
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_CRASHED = 6
VIR_DOMAIN_PAUSED_POSTCOPY = 12
VIR_DOMAIN_PAUSED_POSTCOPY_FAILED = 13
VIR_DOMAIN_JOB_NONE = 0
INACTIVE_STATES = (VIR_DOMAIN_NOSTATE, VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTOFF,
                   VIR_DOMAIN_CRASHED)
POSTCOPY_HALF = (VIR_DOMAIN_PAUSED_POSTCOPY, VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)

State = tuple[int, int]


# --- what each run does ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
    """One run's fault, phase and moment, all drawn from its own seed."""

    index: int
    seed: str
    fault: str
    phase: str
    link_down_s: float
    precopy_at_s: float
    after_switch_s: float
    late_fraction: float

    def moment(self) -> str:
        if self.phase == PRECOPY:
            return f"{self.precopy_at_s:.1f} s after the job started"
        if self.phase == LATE_POSTCOPY:
            return (f"{LATE_AFTER_S[0]:.0f} s after the switch and at most "
                    f"{self.late_fraction:.0%} of the memory left, or "
                    f"{LATE_AFTER_S[1]:.0f} s after it")
        return f"{self.after_switch_s:.2f} s after the switch"


def plan_run(seed: int, index: int, faults: Sequence[str] = FAULTS,
             phases: Sequence[str] = PHASES, cover: bool = False,
             max_link_down_s: float = LINK_DOWN_S[1],
             exclude: Collection[tuple[str, str]] = ()) -> Plan:
    """The run ``index`` of ``seed``: the same plan whenever it is asked for.

    With ``cover`` the fault and phase go round every pair of ``faults``
    x ``phases`` in an order shuffled by the seed (so that N pairs are all
    met in N runs); the moments are still drawn per run. ``exclude`` names
    (fault, phase) pairs never drawn.
    """
    rng = random.Random(f"{seed}-{index}")
    fault = rng.choice(list(faults))
    phase = rng.choice(list(phases))
    while (fault, phase) in exclude:
        fault, phase = rng.choice(list(faults)), rng.choice(list(phases))
    if cover:
        pairs = [pair for pair in itertools.product(faults, phases) if pair not in exclude]
        random.Random(f"{seed}-cover").shuffle(pairs)
        fault, phase = pairs[index % len(pairs)]
    link_down_s = rng.uniform(LINK_DOWN_S[0], max(LINK_DOWN_S[0], max_link_down_s))
    precopy_at_s = rng.uniform(*PRECOPY_AT_S)
    switchover_s = rng.uniform(*SWITCHOVER_AFTER_S)
    early_s = rng.uniform(*EARLY_AFTER_S)
    late_fraction = rng.uniform(*LATE_REMAINING_FRACTION)
    after_switch_s = {SWITCHOVER: switchover_s, EARLY_POSTCOPY: early_s}.get(phase, 0.0)
    return Plan(index, f"{seed}-{index}", fault, phase, round(link_down_s, 2),
                round(precopy_at_s, 2), round(after_switch_s, 3), round(late_fraction, 3))


@dataclasses.dataclass
class ChaosRun:
    """What happened in one run; times in seconds after ``migrate`` started."""

    index: int
    seed: str
    fault: str
    phase: str
    moment: str
    guest: str = ""
    result: str = HARNESS_ERROR
    lost_reasons: list[str] = dataclasses.field(default_factory=list)
    injected: bool = False
    # Where the source was when the fault hit: pre-copy, post-copy,
    # post-copy failed, or the job had ended (the fault came too late).
    landed: str = ""
    fault_detail: str = ""
    lock_wait_s: float = 0.0
    job_started_s: float | None = None
    switched_s: float | None = None
    injected_s: float | None = None
    fault_over_s: float | None = None
    outage_s: float = 0.0
    migrate_rc: int | None = None
    migrate_killed: bool = False
    migrate_hung: bool = False
    migrate_ended_s: float | None = None
    migrate_outcome: str | None = None
    migrate_error: str | None = None
    migrate_claim: str | None = None
    # What migrate's report said the guest paid (an upper bound when it
    # says so) and how long it took, against the heartbeats.
    reported_unavailable_s: float | None = None
    reported_upper_bound: bool | None = None
    reported_total_s: float | None = None
    reported_recovery_waited_s: float | None = None
    migrate_recovery_where: str | None = None
    pause_underreported: bool = False
    where_at_migrate_end: str = ""
    needed_recover: bool = False
    recover_rc: int | None = None
    recover_hung: bool = False
    recover_claim: str | None = None
    recover_s: float | None = None
    settled_s: float | None = None
    fault_to_settled_s: float | None = None
    end_host: str = ""
    end_state: str = ""
    stray_qemu: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    intact: bool = False
    bad_pages: int | None = None
    heartbeats_after: int = 0
    integrity_reasons: list[str] = dataclasses.field(default_factory=list)
    max_gap_s: float | None = None
    max_gap_at_s: float | None = None
    report_truthful: bool = False
    truth_notes: list[str] = dataclasses.field(default_factory=list)
    dest_daemon_pids: list[int | None] = dataclasses.field(default_factory=list)
    code: str = ""
    # Both hosts' view when migrate or recover hung, or the guest was lost.
    at_hang: dict[str, Any] = dataclasses.field(default_factory=dict)
    at_end: dict[str, Any] = dataclasses.field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    migrate_log: list[str] = dataclasses.field(default_factory=list)
    recover_log: list[str] = dataclasses.field(default_factory=list)

    @property
    def lost(self) -> bool:
        return self.result == LOST

    def line(self) -> str:
        """One line for the console as the run ends."""
        bits = [f"run {self.index} ({self.seed}): {self.fault} in {self.phase}"]
        if self.injected:
            bits.append(f"hit {self.landed} at {self.injected_s:.1f} s")
        else:
            bits.append(f"not injected ({self.landed or 'no job'})")
        if self.outage_s:
            bits.append(f"outage {self.outage_s:.1f} s")
        bits.append(f"migrate rc {self.migrate_rc}"
                    + (f" ({self.migrate_outcome})" if self.migrate_outcome else "")
                    + (" killed" if self.migrate_killed else "")
                    + (" HUNG" if self.migrate_hung else ""))
        if self.needed_recover:
            bits.append(f"recover rc {self.recover_rc}" + (" HUNG" if self.recover_hung else ""))
        bits.append(f"-> {self.result}" + (f" on {self.end_host}" if self.result != LOST else ""))
        if self.fault_to_settled_s is not None:
            bits.append(f"settled {self.fault_to_settled_s:.1f} s after the fault")
        if self.max_gap_s is not None:
            bits.append(f"longest gap {self.max_gap_s:.1f} s")
        if self.reported_unavailable_s is not None:
            bits.append(f"reported {self.reported_unavailable_s:.1f} s"
                        + (" (UNDER)" if self.pause_underreported else ""))
        bits.append("report true" if self.report_truthful else "REPORT UNTRUE")
        if self.lost_reasons:
            bits.append("; ".join(self.lost_reasons))
        if self.error:
            bits.append(f"error: {self.error}")
        bits.append(f"{self.duration_s:.0f} s" + (f" after {self.lock_wait_s:.0f} s waiting for "
                                                  "the lab" if self.lock_wait_s >= 1 else ""))
        return ", ".join(bits)


# --- looking at the two hosts ---------------------------------------------

def domain_state(host: HostSpec, name: str) -> State | None:
    """(state, reason) of ``name`` on ``host``; None when absent or unreachable."""
    import libvirt
    try:
        conn = libvirt.open(host.uri)
    except libvirt.libvirtError:
        return None
    try:
        state = conn.lookupByName(name).state()
        return int(state[0]), int(state[1])
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def _active(state: State | None) -> bool:
    return state is not None and state[0] not in INACTIVE_STATES


def _half(state: State | None) -> bool:
    return state is not None and state[0] == VIR_DOMAIN_PAUSED and state[1] in POSTCOPY_HALF


def where(source: State | None, dest: State | None) -> str:
    """Where the guest is, asked of the source first (as measure.guest_host_after).

    ``a``: the source holds the whole guest (a half-done incoming domain on
    B does not count, it has no memory of its own); ``both``: the two
    post-copy halves; ``a-half``: only the source half of a post-copy
    guest; ``b``: only the destination; ``none``: nowhere.
    """
    if _half(source):
        return "both" if _active(dest) else "a-half"
    if _active(source):
        return "a"
    return "b" if _active(dest) else "none"


def guest_qemu_pids(host: HostSpec, name: str) -> list[int]:
    """The QEMU processes of guest ``name`` on ``host`` (not other users' guests)."""
    found = []
    for pid in hosts.qemu_pids(host):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"guest={name}".encode() in b",".join(cmdline).split(b","):
            found.append(pid)
    return found


def code_version() -> str:
    """The checkout the commands run from: HEAD, and "+changes" when the
    product's files differ from it (other people's work in progress)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                  "--untracked-files=no", "nova_livemig_ext"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+changes" if changed else "")


def snapshot(config: LabConfig, name: str) -> dict[str, Any]:
    """Both hosts' view of the guest, for the record of a run that went wrong.

    libvirt's state and job, and QEMU's own ``query-migrate`` (through
    libvirt, read-only), on each host.
    """
    import libvirt
    import libvirt_qemu
    seen: dict[str, Any] = {}
    for host in config.hosts:
        view: dict[str, Any] = {}
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError as exc:
            seen[host.name] = {"error": str(exc)}
            continue
        try:
            dom = conn.lookupByName(name)
            asks: dict[str, Callable[[], Any]] = {
                "state": lambda: list(dom.state()),
                "job": lambda: dict(dom.jobStats()),
                # Waits up to libvirt's 30 s for a job lock a stuck job holds.
                "query-migrate": lambda: json.loads(libvirt_qemu.qemuMonitorCommand(
                    dom, '{"execute": "query-migrate"}', 0)).get("return")}
            for key, ask in asks.items():
                try:
                    view[key] = ask()
                except libvirt.libvirtError as exc:
                    view[key] = f"error: {exc}"
        except libvirt.libvirtError as exc:
            view["error"] = str(exc)
        finally:
            conn.close()
        seen[host.name] = view
    return seen


def describe(state: State | None) -> str:
    if state is None:
        return "absent"
    names = {VIR_DOMAIN_RUNNING: "running", VIR_DOMAIN_PAUSED: "paused",
             VIR_DOMAIN_SHUTOFF: "shut off"}
    return f"{names.get(state[0], f'state {state[0]}')} (reason {state[1]})"


# --- the migrate and recover commands -------------------------------------

def conf_text(config: LabConfig) -> str:
    lines = ["[livemig_ext]", "permit_post_copy = True", "ladder = postcopy,abort",
             f"postcopy_recovery_timeout_s = {RECOVERY_TIMEOUT_S}"]
    if config.libvirt.resume_fixed:
        # The lab's daemons carry the resume fix: said as an operator would.
        lines.append("postcopy_resume = patched")
    return "\n".join(lines) + "\n"


def _command(config: LabConfig, name: str, conf: Path) -> list[str]:
    b = config.host_b
    return [sys.executable, "-m", "nova_livemig_ext.cmd.main", "{verb}", name,
            "--from", config.host_a.uri,
            "--to", measure.destination_uri(b, measure.flags_from_names(["PEER2PEER"])),
            "--dest-connect", b.uri, "--migrate-uri", b.migration_uri,
            "--listen-address", b.link_address, "--config-file", str(conf),
            # The lab's QEMU lives in host a's network namespace, the command
            # in the root one: the stand-in listens on a socket file instead
            # of the loopback address a compute host would use.
            "--give-back-address", "unix:" + str(standin_dir(config))]


def standin_dir(config: LabConfig) -> Path:
    """Where a give-back's stand-in destination makes its socket."""
    path = config.state_dir / "standin"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def migrate_argv(config: LabConfig, name: str, conf: Path, report: Path) -> list[str]:
    argv = _command(config, name, conf)
    argv[argv.index("{verb}")] = "migrate"
    return argv + ["--json", str(report), "--quiet"]


def recover_argv(config: LabConfig, name: str, conf: Path, force_resume: bool) -> list[str]:
    argv = _command(config, name, conf)
    argv[argv.index("{verb}")] = "recover"
    argv += ["--timeout", str(RECOVER_TIMEOUT_S)]
    if force_resume:
        # Not needed on the lab: the --config-file says postcopy_resume =
        # patched when its daemons carry the fix, as migrate's does.
        argv.append("--force-resume")
    return argv


def migrate_claim(outcome: str | None, rc: int | None,
                  recovery_where: str | None = None) -> str | None:
    """Where migrate's report says the guest is (see :func:`where`)."""
    if outcome == "completed":
        return "b"
    if outcome == "needs recovery" and recovery_where == "destination failed before running":
        # The source's paused half holds the whole guest; B has none of it.
        return "a-half"
    if outcome == "needs recovery":
        return "both"
    if outcome in ("aborted", "failed", "cancelled"):
        return "a"
    if outcome is None and rc == 0:
        return "b"
    return None


def recover_claim(rc: int | None, text: str) -> str | None:
    """Where recover's exit status and words say the guest is."""
    if rc == 0:
        if ("recovered: the guest runs on the destination" in text
                or "nothing to recover: the migration completed" in text):
            return "b"
        if ("the source holds the whole guest" in text
                or "recovered: the source runs the guest again" in text):
            return "a"
        return None
    if rc == 1:
        if "both halves were left as they are" in text:
            return "both"
        if "the source half of the guest is gone" in text:
            return "a-half-lost"
    return None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# --- the fault ------------------------------------------------------------

class Injector:
    """Waits for the planned moment in a real OS thread, then runs the fault.

    A native thread: the lab may run inside an eventlet-patched process
    (Nova's tests), where a green thread would not run while libvirt calls
    block. Everything it sees is kept as times relative to ``t0``.
    """

    def __init__(self, config: LabConfig, plan: Plan, name: str, t0: float,
                 proc: subprocess.Popen[bytes]) -> None:
        threading = native.threading_module()
        self.config, self.plan, self.name, self.t0, self.proc = config, plan, name, t0, proc
        self.job_over = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chaos-{plan.seed}",
                                        daemon=True)
        self.job_started_s: float | None = None
        self.switched_s: float | None = None
        self.injected_s: float | None = None
        self.fault_over_s: float | None = None
        self.outage_s = 0.0
        self.landed = ""
        self.detail = ""
        self.killed = False
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        return bool(self.done.wait(timeout_s))

    def _now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def _run(self) -> None:
        import libvirt
        try:
            conn = libvirt.open(self.config.host_a.uri)
            try:
                if self._wait_for_moment(conn):
                    self._inject(conn)
            finally:
                conn.close()
        except Exception as exc:  # kept for the run's record
            self.error = f"{type(exc).__name__}: {exc}"
            LOG.exception("fault injector of run %s", self.plan.seed)
        finally:
            if self.fault_over_s is None and self.injected_s is not None:
                self.fault_over_s = self._now()
            self.done.set()

    def _read(self, conn: Any) -> tuple[State | None, dict[str, Any]]:
        import libvirt
        try:
            dom = conn.lookupByName(self.name)
            state = dom.state()
            return (int(state[0]), int(state[1])), dict(dom.jobStats())
        except libvirt.libvirtError:
            return None, {}

    def _wait_for_moment(self, conn: Any) -> bool:
        """True at the planned moment; False when the job ended before it."""
        sleep = native.time_module().sleep
        deadline = time.monotonic() + INJECTOR_GIVE_UP_S
        remaining_at_switch: float | None = None
        while time.monotonic() < deadline:
            if self.job_over.is_set():
                self.landed = "job ended before the moment"
                return False
            state, stats = self._read(conn)
            now = self._now()
            if self.job_started_s is None and stats.get("type", VIR_DOMAIN_JOB_NONE):
                self.job_started_s = now
            if self.switched_s is None and _half(state):
                self.switched_s = now
            if self.plan.phase == PRECOPY:
                if (self.job_started_s is not None
                        and now >= self.job_started_s + self.plan.precopy_at_s):
                    return True
            elif self.switched_s is not None:
                after = now - self.switched_s
                if self.plan.phase in (SWITCHOVER, EARLY_POSTCOPY):
                    if after >= self.plan.after_switch_s:
                        return True
                    sleep(min(POLL_S, max(0.0, self.plan.after_switch_s - after)))
                    continue
                left = stats.get("memory_remaining")
                if remaining_at_switch is None and left:
                    remaining_at_switch = float(left)
                if after >= LATE_AFTER_S[1]:
                    return True
                if (after >= LATE_AFTER_S[0] and remaining_at_switch and left is not None
                        and left <= self.plan.late_fraction * remaining_at_switch):
                    return True
                sleep(LATE_POLL_S)
                continue
            sleep(POLL_S)
        self.landed = f"no moment within {INJECTOR_GIVE_UP_S:.0f} s"
        return False

    def _landed(self, state: State | None, stats: dict[str, Any]) -> str:
        if state is None or state[0] in INACTIVE_STATES:
            return "job ended"
        if state[0] == VIR_DOMAIN_PAUSED and state[1] == VIR_DOMAIN_PAUSED_POSTCOPY:
            return "post-copy"
        if state[0] == VIR_DOMAIN_PAUSED and state[1] == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED:
            return "post-copy failed"
        if stats.get("type", VIR_DOMAIN_JOB_NONE) == VIR_DOMAIN_JOB_NONE:
            return "job ended"
        return "pre-copy"

    def _inject(self, conn: Any) -> None:
        state, stats = self._read(conn)
        self.landed = self._landed(state, stats)
        cfg, fault = self.config, self.plan.fault
        clock = native.time_module()
        self.injected_s = self._now()
        LOG.info("run %s: %s at %.2f s (%s)", self.plan.seed, fault, self.injected_s,
                 self.landed)
        if fault == STREAM_RESET:
            count = network.reset_migration_streams(cfg, cfg.host_a, cfg.host_b)
            self.detail = f"{count} migration sockets reset"
        elif fault == LINK_DOWN:
            network.set_link_up(cfg, False)
            try:
                clock.sleep(self.plan.link_down_s)
            finally:
                network.set_link_up(cfg, True)
            self.outage_s = round(self._now() - self.injected_s, 2)
            self.detail = f"link down {self.outage_s:.1f} s"
        elif fault == DEST_RESTART:
            before = hosts.daemon_pid(cfg.host_b)
            hosts.stop_daemon(cfg.host_b)
            stopped_s = self._now() - self.injected_s
            after = hosts.start_daemon(cfg.host_b)
            self.outage_s = round(self._now() - self.injected_s, 2)
            self.detail = (f"libvirtd {before} stopped in {stopped_s:.1f} s, {after} "
                           f"answering {self.outage_s:.1f} s after the stop began")
        elif fault == MONITOR_KILLED:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.killed = True
                self.detail = f"migrate (pid {self.proc.pid}) killed"
            else:
                self.detail = "migrate had already exited"
        else:
            raise LabError(f"unknown fault {fault!r}")
        self.fault_over_s = self._now()


# --- one run --------------------------------------------------------------

@contextlib.contextmanager
def _maybe_lock(config: LabConfig, hold: bool) -> Iterator[None]:
    if hold:
        with LabLock(config):
            yield
    else:
        yield


def settled(config: LabConfig, name: str) -> bool:
    """Exactly one host has the guest active, and it is not a post-copy half."""
    source = domain_state(config.host_a, name)
    dest = domain_state(config.host_b, name)
    return _active(source) != _active(dest) and not _half(source)


def _wait_settled(config: LabConfig, name: str, deadline: float) -> bool:
    while not settled(config, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
    return True


def _run_recover(config: LabConfig, run: ChaosRun, conf: Path, work: Path,
                 t0: float, force_resume: bool) -> None:
    run.needed_recover = True
    out_path = work / "recover.out"
    argv = recover_argv(config, run.guest, conf, force_resume)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            run.recover_rc = proc.wait(RECOVER_PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            run.recover_hung = True
            proc.kill()
            proc.wait(10)
    run.recover_s = round(time.monotonic() - t0, 3)
    text = out_path.read_text(errors="replace") if out_path.exists() else ""
    run.recover_log = text.splitlines()[-LOG_TAIL_LINES:]
    run.recover_claim = recover_claim(run.recover_rc, text)


def run_one(config: LabConfig, plan: Plan, force_resume: bool = False,
            migrate_timeout_s: float = MIGRATE_TIMEOUT_S) -> ChaosRun:
    """One run (the caller holds the lab lock): boot, migrate, fault, judge.

    A ``migrate`` still running after ``migrate_timeout_s`` has hung: it is
    killed, and recover runs.
    """
    run = ChaosRun(plan.index, plan.seed, plan.fault, plan.phase, plan.moment())
    if plan.fault == LINK_DOWN:
        run.moment += f", link down {plan.link_down_s:.1f} s"
    run.code = code_version()
    started = time.monotonic()
    hosts.start(config)
    name = f"chaos-{plan.seed}-{int(time.time() * 1000) % 10**7}"
    run.guest = name
    guest: lab_guest.Guest | None = None
    proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="nova-livemig-chaos-") as tmp:
        work = Path(tmp)
        try:
            run.dest_daemon_pids.append(hosts.daemon_pid(config.host_b))
            guest = lab_guest.boot(config, config.host_a, name, WORKING_SET_MB,
                                   DIRTY_RATE_MB_S)
            guest.watch(config.host_b)
            conf = work / "livemig.conf"
            conf.write_text(conf_text(config))
            report = work / "report.json"
            with open(work / "migrate.out", "wb") as out:
                t0 = time.monotonic()
                proc = subprocess.Popen(migrate_argv(config, name, conf, report),
                                        stdout=out, stderr=subprocess.STDOUT)
            injector = Injector(config, plan, name, t0, proc)
            injector.start()
            _follow(config, run, injector, proc, guest, work, conf, report, t0, force_resume,
                    migrate_timeout_s)
        except Exception as exc:  # a broken harness, not a verdict on the product
            run.result = HARNESS_ERROR
            run.error = f"{type(exc).__name__}: {exc}"
            LOG.exception("run %s", plan.seed)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
            run.migrate_log = _tail(work / "migrate.out")
            _restore(config)
            run.dest_daemon_pids.append(hosts.daemon_pid(config.host_b))
            if guest is not None:
                lab_guest.destroy(guest, config)
    run.duration_s = round(time.monotonic() - started, 1)
    return run


def _restore(config: LabConfig) -> None:
    """The link up and both daemons running, whatever the fault left."""
    try:
        network.set_link_up(config, True)
        hosts.start(config)
    except Exception:
        LOG.exception("restoring the lab after a chaos run")


def _follow(config: LabConfig, run: ChaosRun, injector: Injector,
            proc: subprocess.Popen[bytes], guest: lab_guest.Guest, work: Path, conf: Path,
            report: Path, t0: float, force_resume: bool, migrate_timeout_s: float) -> None:
    """From the start of ``migrate`` to the verdict."""
    try:
        run.migrate_rc = proc.wait(migrate_timeout_s)
    except subprocess.TimeoutExpired:
        run.migrate_hung = True
        run.at_hang = snapshot(config, run.guest)
        proc.kill()
        run.migrate_rc = proc.wait(10)
    run.migrate_ended_s = round(time.monotonic() - t0, 3)
    injector.job_over.set()
    run.where_at_migrate_end = where(domain_state(config.host_a, run.guest),
                                     domain_state(config.host_b, run.guest))
    # Until the fault is over (the link back, the daemon answering), note
    # when the guest first stood on one host.
    first_settled: float | None = None
    give_up = time.monotonic() + 180.0
    while not injector.join(0.25):
        if time.monotonic() > give_up:
            raise LabError("the fault injector did not finish within 180 s of migrate's end")
        if first_settled is None and settled(config, run.guest):
            first_settled = time.monotonic()
    run.injected = injector.injected_s is not None
    run.landed, run.fault_detail = injector.landed, injector.detail
    run.job_started_s, run.switched_s = injector.job_started_s, injector.switched_s
    run.injected_s, run.fault_over_s = injector.injected_s, injector.fault_over_s
    run.outage_s, run.migrate_killed = injector.outage_s, injector.killed
    if injector.error:
        raise LabError(f"fault injector: {injector.error}")
    if report.exists() and not run.migrate_killed:
        data = json.loads(report.read_text())
        run.migrate_outcome, run.migrate_error = data.get("outcome"), data.get("error")
        cost = data.get("guest") or {}
        run.reported_unavailable_s = cost.get("longest_unavailable_s")
        run.reported_upper_bound = cost.get("upper_bound")
        run.reported_total_s = data.get("total_s")
        run.reported_recovery_waited_s = (data.get("recovery") or {}).get("waited_s")
        run.migrate_recovery_where = (data.get("recovery") or {}).get("where")
    if not run.migrate_killed and not run.migrate_hung:
        run.migrate_claim = migrate_claim(run.migrate_outcome, run.migrate_rc,
                                          run.migrate_recovery_where)
    if (run.migrate_killed or run.migrate_hung or run.migrate_outcome == "needs recovery"
            or not _wait_settled(config, run.guest, time.monotonic() + SETTLE_WAIT_S)):
        _run_recover(config, run, conf, work, t0, force_resume)
        if _wait_settled(config, run.guest, time.monotonic() + SETTLE_WAIT_S):
            run.settled_s = round(time.monotonic() - t0, 3)
    else:
        run.settled_s = round((first_settled or time.monotonic()) - t0, 3)
    _judge(config, run, guest, t0)


def _judge(config: LabConfig, run: ChaosRun, guest: lab_guest.Guest, t0: float) -> None:
    """Where the guest ended, whether it is intact, whether the reports were true."""
    # The end: settled, and the fault and every command over.
    end_s = time.monotonic()
    if run.settled_s is not None:
        end_s = t0 + max(s for s in (run.settled_s, run.fault_over_s, run.migrate_ended_s,
                                     run.recover_s) if s is not None)
    if run.injected_s is not None and run.settled_s is not None:
        run.fault_to_settled_s = round(max(0.0, run.settled_s - run.injected_s), 2)
    time.sleep(max(0.0, end_s + SETTLE_S - time.monotonic()))
    source = domain_state(config.host_a, run.guest)
    dest = domain_state(config.host_b, run.guest)
    run.end_host = where(source, dest)
    run.end_state = f"a: {describe(source)}, b: {describe(dest)}"
    reasons = []
    if run.end_host in ("a", "b"):
        host = config.host(run.end_host)
        state = source if run.end_host == "a" else dest
        if state is None or state[0] != VIR_DOMAIN_RUNNING:
            reasons.append(f"the guest is {describe(state)} on {run.end_host}, not running")
        other = config.other(host)
        deadline = time.monotonic() + STRAY_WAIT_S
        while guest_qemu_pids(other, run.guest) and time.monotonic() < deadline:
            time.sleep(0.5)
        stray = guest_qemu_pids(other, run.guest)
        if stray:
            run.stray_qemu[other.name] = stray
            reasons.append(f"QEMU {stray} of the guest still on {other.name} "
                           f"{STRAY_WAIT_S:.0f} s after the end")
        integrity = measure.assess_integrity(guest.lines(), guest.heartbeats(), run.end_host,
                                             end_s, SETTLE_S)
        run.intact, run.bad_pages = integrity.ok, integrity.bad_pages
        run.heartbeats_after = integrity.heartbeats_after
        run.integrity_reasons = list(integrity.reasons)
        reasons.extend(integrity.reasons)
    else:
        reasons.append(f"the guest is not whole on one host: {run.end_state}")
        run.bad_pages = max((hb.bad_pages for hb in guest.heartbeats()), default=0)
    run.max_gap_s, run.max_gap_at_s = longest_gap(guest.heartbeats(), t0, time.monotonic())
    gap_s = run.max_gap_s
    run.lost_reasons = reasons
    if reasons:
        run.at_end = snapshot(config, run.guest)
    if run.reported_unavailable_s is not None and run.end_host == "b":
        # The pause the guest saw on its way to B, against what the report said.
        run.pause_underreported = gap_s > run.reported_unavailable_s + PAUSE_TOLERANCE_S
    if reasons:
        run.result = LOST
    else:
        run.result = COMPLETED if run.end_host == "b" else ROLLED_BACK
    run.report_truthful, run.truth_notes = _truth(run)


def longest_gap(beats: Sequence[lab_guest.Heartbeat], start_s: float,
                end_s: float) -> tuple[float, float]:
    """measure.max_gap, and the silence since the last heartbeat counted too.

    A guest that stopped for good has no gap between two heartbeats to
    show for it: its pause runs from its last heartbeat to ``end_s``.
    """
    gap_s, gap_at_s = measure.max_gap(beats, start_s, end_s)
    seen = [hb.host_time_s for hb in beats if start_s <= hb.host_time_s <= end_s]
    if seen and end_s - seen[-1] > gap_s:
        return round(end_s - seen[-1], 3), round(seen[-1] - start_s, 3)
    return gap_s, gap_at_s


def _truth(run: ChaosRun) -> tuple[bool, list[str]]:
    """Did every report say where the guest was when it was given?"""
    notes = []
    if run.migrate_hung:
        notes.append("migrate hung: no report")
    elif not run.migrate_killed:
        if run.migrate_claim is None:
            notes.append(f"migrate said nothing about the guest's place "
                         f"(rc {run.migrate_rc}, outcome {run.migrate_outcome})")
        elif run.migrate_claim != run.where_at_migrate_end:
            notes.append(f"migrate reported {run.migrate_outcome!r} (guest on "
                         f"{run.migrate_claim}) but it was on {run.where_at_migrate_end}")
        elif not run.needed_recover and run.migrate_claim != run.end_host:
            notes.append(f"migrate reported {run.migrate_outcome!r} (guest on "
                         f"{run.migrate_claim}) but it ended on {run.end_host}")
    if run.needed_recover:
        if run.recover_hung:
            notes.append("recover hung")
        elif run.recover_claim is None:
            notes.append(f"recover said nothing clear (rc {run.recover_rc})")
        elif run.recover_claim != run.end_host:
            notes.append(f"recover claimed the guest on {run.recover_claim} (rc "
                         f"{run.recover_rc}) but it ended on {run.end_host}")
    return not notes, notes


# --- many runs ------------------------------------------------------------

def run(config: LabConfig, runs: int, seed: int, faults: Sequence[str] = FAULTS,
        phases: Sequence[str] = PHASES, cover: bool = False,
        max_link_down_s: float = LINK_DOWN_S[1], hold_lock: bool = True,
        force_resume: bool = False, migrate_timeout_s: float = MIGRATE_TIMEOUT_S,
        on_run: Callable[[ChaosRun], None] | None = None,
        exclude: Collection[tuple[str, str]] = (),
        after_switch_s: float | None = None) -> list[ChaosRun]:
    """``runs`` runs of ``seed``, each under the lab lock (unless the caller holds it).

    ``after_switch_s`` pins the moment of switchover and early post-copy
    faults instead of drawing it.
    """
    system.quiet_libvirt()
    done = []
    for index in range(runs):
        plan = plan_run(seed, index, faults, phases, cover, max_link_down_s, exclude)
        if after_switch_s is not None and plan.phase in (SWITCHOVER, EARLY_POSTCOPY):
            plan = dataclasses.replace(plan, after_switch_s=after_switch_s)
        asked = time.monotonic()
        with _maybe_lock(config, hold_lock):
            lock_wait_s = time.monotonic() - asked
            result = run_one(config, plan, force_resume, migrate_timeout_s)
        result.lock_wait_s = round(lock_wait_s, 1)
        done.append(result)
        if on_run is not None:
            on_run(result)
    return done


# Short enough for a 79-column page; LEGEND says what each means.
TABLE_COLUMNS = ("runs", "on B", "on A", "recover", "lost", "untrue", "pause low")
FAULT_LABELS = {STREAM_RESET: "stream reset", LINK_DOWN: "link down",
                DEST_RESTART: "B libvirtd", MONITOR_KILLED: "monitor kill"}
PHASE_LABELS = {PRECOPY: "pre-copy", SWITCHOVER: "switchover", EARLY_POSTCOPY: "early post",
                LATE_POSTCOPY: "late post"}
LEGEND = """\
fault: stream reset = QEMU's migration sockets reset (ss -K) at both ends;
link down = the link cut for 1-60 s; B libvirtd = the destination's
libvirtd stopped and started; monitor kill = the migrate process killed
(SIGKILL), then recover.
phase: pre-copy = 1-25 s after the job started; switchover = 0-0.3 s after
the source shows paused for post-copy; early post = 0.3-3 s after it; late
post = 3 s or more after it, once at most 10-40 % of the memory is still to
come (8 s at the latest).
on B: completed on the destination; on A: rolled back to the source; lost:
not running intact on exactly one host (a QEMU of it left on the other,
bad pages, missing heartbeats). recover: needed nova-livemig-ext recover
(those runs are also counted as on B, on A or lost). untrue: migrate's or
recover's report placed the guest elsewhere than it was, or never came
(migrate hung and was killed). pause low: migrate's report gave the
guest's longest unavailability more than 1 s below the longest gap in its
heartbeats."""


def counts(runs: Sequence[ChaosRun]) -> tuple[int, ...]:
    return (len(runs), sum(r.result == COMPLETED for r in runs),
            sum(r.result == ROLLED_BACK for r in runs), sum(r.needed_recover for r in runs),
            sum(r.result == LOST for r in runs),
            sum(not r.report_truthful for r in runs if r.result != HARNESS_ERROR),
            sum(r.pause_underreported for r in runs))


def table(runs: Sequence[ChaosRun]) -> str:
    """fault x phase as a reStructuredText simple table (readable as plain text)."""
    rows: list[tuple[str, ...]] = []
    for fault, phase in itertools.product(FAULTS, PHASES):
        chosen = [r for r in runs if r.fault == fault and r.phase == phase]
        if chosen:
            rows.append((FAULT_LABELS[fault], PHASE_LABELS[phase],
                         *(str(n) for n in counts(chosen))))
    rows.append(("all", "", *(str(n) for n in counts(runs))))
    header = ("fault", "phase", *TABLE_COLUMNS)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    body = [line(row) for row in rows[:-1]]
    # A row of dashes sets the sum apart (reStructuredText reads it as the
    # underline of the row above, spanning nothing).
    dashes = "  ".join("-" * w for w in widths)
    return "\n".join([rule, line(header), rule, *body, dashes, line(rows[-1]), rule])


def summary(runs: Sequence[ChaosRun], seed: int, config: LabConfig,
            total_s: float, argv: Sequence[str]) -> dict[str, Any]:
    return {
        "seed": seed, "argv": list(argv), "total_s": round(total_s, 1),
        "libvirt_build": config.libvirt.name, "link": network.load_link_state(config),
        "guest": {"working_set_mb": WORKING_SET_MB, "dirty_rate_mb_s": DIRTY_RATE_MB_S},
        "recovery_timeout_s": RECOVERY_TIMEOUT_S, "table": table(runs), "legend": LEGEND,
        "runs": [dataclasses.asdict(r) for r in runs],
    }


def load(path: Path) -> tuple[int, list[ChaosRun]]:
    """The seed and runs of a ``--json`` file."""
    data = json.loads(path.read_text())
    names = {field.name for field in dataclasses.fields(ChaosRun)}
    return int(data["seed"]), [ChaosRun(**{k: v for k, v in r.items() if k in names})
                               for r in data["runs"]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nova_livemig_lab.chaos",
        description="Migrate a busy guest A -> B with nova-livemig-ext migrate while one "
                    "random fault hits at one random moment; judge where the guest ended "
                    "and whether the reports said so. The lab must be started.")
    parser.add_argument("--runs", type=int, default=4, help="how many runs (default 4)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the seed (default: a new one, printed first)")
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    parser.add_argument("--cover", action="store_true",
                        help="go round every fault x phase pair in a seeded order instead of "
                             "drawing them (16 runs meet all 16)")
    parser.add_argument("--fault", action="append", choices=FAULTS, default=None,
                        help="draw only from these faults (repeatable)")
    parser.add_argument("--phase", action="append", choices=PHASES, default=None,
                        help="draw only from these phases (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="FAULT:PHASE",
                        help="never draw this pair (repeatable)")
    parser.add_argument("--max-link-down", type=float, default=LINK_DOWN_S[1],
                        help=f"longest link cut, s (default {LINK_DOWN_S[1]:.0f})")
    parser.add_argument("--after-switch", type=float, default=None, metavar="SECONDS",
                        help="pin the moment of switchover and early post-copy faults, "
                             "in seconds after the source shows paused for post-copy")
    parser.add_argument("--table-from", type=Path, default=None, metavar="JSON",
                        help="only print the table of runs saved with --json")
    parser.add_argument("--state-dir", type=Path, default=None, help="the lab's state")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.table_from is not None:
        seed, runs = load(args.table_from)
        print(f"seed {seed}, {len(runs)} runs\n\n{table(runs)}\n\n{LEGEND}")
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    again = ["--runs", str(args.runs), "--seed", str(seed)]
    again += ["--cover"] if args.cover else []
    again += [word for fault in args.fault or () for word in ("--fault", fault)]
    again += [word for phase in args.phase or () for word in ("--phase", phase)]
    again += [word for pair in args.exclude for word in ("--exclude", pair)]
    if args.max_link_down != LINK_DOWN_S[1]:
        again += ["--max-link-down", f"{args.max_link_down:g}"]
    if args.after_switch is not None:
        if not (math.isfinite(args.after_switch) and 0 <= args.after_switch <= 10):
            print("chaos: --after-switch must be 0 to 10 seconds", file=sys.stderr)
            return 2
        again += ["--after-switch", f"{args.after_switch:g}"]
    print(f"chaos seed {seed}; again with: python -m nova_livemig_lab.chaos "
          f"{shlex.join(again)}", flush=True)
    cfg = lab_config.load_config(args.state_dir)
    started = time.monotonic()
    try:
        runs = run(cfg, args.runs, seed, tuple(args.fault or FAULTS),
                   tuple(args.phase or PHASES), args.cover, args.max_link_down,
                   on_run=lambda r: print(r.line(), flush=True),
                   exclude=tuple(tuple(pair.split(":", 1)) for pair in args.exclude),
                   after_switch_s=args.after_switch)
    except LabError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 1
    total_s = time.monotonic() - started
    print(f"\nseed {seed}, {len(runs)} runs in {total_s / 60:.1f} min, "
          f"libvirt: {cfg.libvirt.name}\n")
    print(table(runs))
    print(f"\n{LEGEND}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary(runs, seed, cfg, total_s, argv), indent=1,
                                        default=str) + "\n")
        print(f"\nruns: {args.json}")
    bad = [r for r in runs if r.result in (LOST, HARNESS_ERROR) or not r.report_truthful]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
