"""The lab guest: its domain XML, booting it, and reading its heartbeats.

The serial console is a file in the host's /var/log/libvirt/qemu, which is a
per-host directory: after a migration the destination writes its own file.
A :class:`ConsoleTail` thread per file timestamps each line on the host as
it appears; the gaps between heartbeats are the pauses the guest saw.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from xml.sax.saxutils import escape

from nova_livemig_lab.config import HostSpec, LabConfig
from nova_livemig_lab.errors import LabError
from nova_livemig_ext import native
from nova_livemig_lab import system

GUEST_MEMORY_MIB = 320
QEMU_BINARY = "/usr/bin/qemu-system-x86_64"
# Another QEMU binary for every lab guest (the corruption check uses QEMU 7.2).
EMULATOR_ENV = "NOVA_LIVEMIG_LAB_EMULATOR"
# Under TCG the guest reaches steady state in about 10 s.
BOOT_TIMEOUT_S = 90.0
STEADY_HEARTBEATS = 10
TAIL_INTERVAL_S = 0.02

HEARTBEAT_RE = re.compile(
    r"^HB seq=(\d+) bad=(\d+) written=(\d+) checked=(\d+) ms=(\d+)")
# Console words that mean the guest broke, whatever the heartbeats say.
FATAL_MARKERS = ("Kernel panic", "BUG:", "Oops", "general protection fault", "BAD page",
                 "dirtier exited", "FATAL")
# The kernel's report of a vCPU that could not run for a long while (a
# post-copy fault stall, a long stop): the cost the guest paid, which the
# heartbeat gap measures, not damage to it.
STALL_WARNINGS = ("soft lockup",)


def is_fatal(text: str) -> bool:
    """Whether a console line says the guest was damaged (not merely stalled)."""
    return (any(marker in text for marker in FATAL_MARKERS)
            and not any(stall in text for stall in STALL_WARNINGS))


PATTERNS = ("steady", "bursty", "growing", "random")
# The dirtier's own settings for a pattern (tools/lab/dirtier.c).
PATTERN_SETTINGS = frozenset({"BURST_ON_MS", "BURST_OFF_MS", "START_MB", "GROW_MB_S",
                              "HOT_PCT", "STEP_AT_S", "STEP_RATE", "WORK_ITERS",
                              "REQ_RATE", "REQ_ITERS"})
# The application beside the writer, which counts its own service.
APPS = ("none", "cpu", "server")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """How the guest writes its working set (``PATTERN`` of the dirtier).

    ``settings`` are the dirtier's words for it, for example
    ``(("BURST_ON_MS", 4000), ("BURST_OFF_MS", 2000))``.
    """

    name: str = "steady"
    settings: tuple[tuple[str, int], ...] = ()
    app: str = "none"

    def __post_init__(self) -> None:
        if self.name not in PATTERNS:
            raise LabError(f"unknown guest pattern {self.name!r}: one of {', '.join(PATTERNS)}")
        if self.app not in APPS:
            raise LabError(f"unknown guest application {self.app!r}: one of {', '.join(APPS)}")
        for key, value in self.settings:
            if key not in PATTERN_SETTINGS or not isinstance(value, int) or value < 0:
                raise LabError(f"bad guest pattern setting {key}={value!r}: one of "
                               f"{', '.join(sorted(PATTERN_SETTINGS))}, a whole number >= 0")

    def words(self) -> str:
        app = [] if self.app == "none" else [f"APP={self.app}"]
        return " ".join([f"PATTERN={self.name}"] + app
                        + [f"{k}={v}" for k, v in self.settings])

    def write_rate_at(self, dirty_rate_mb_s: int, guest_ms: int) -> float:
        """What the writer is set to write, bytes a second, ``guest_ms`` after
        it started (dirtier.c: whole pages a tick, bursts, a step)."""
        settings = dict(self.settings)
        rate = dirty_rate_mb_s
        step_at_ms = settings.get("STEP_AT_S", 0) * 1000
        if step_at_ms and guest_ms >= step_at_ms:
            rate = settings.get("STEP_RATE", dirty_rate_mb_s)
        if self.name == "bursty":
            on_ms = settings.get("BURST_ON_MS", 3000)
            period_ms = on_ms + settings.get("BURST_OFF_MS", 3000)
            if period_ms and guest_ms % period_ms >= on_ms:
                return 0.0
        return float(rate * 1_000_000 // 4096 // 10 * 4096 * 10)

    def describe(self) -> str:
        name = self.name if self.app == "none" else f"{self.name} + {self.app} app"
        if not self.settings:
            return name
        return f"{name} ({', '.join(f'{k}={v}' for k, v in self.settings)})"


STEADY = Pattern()


@dataclasses.dataclass(frozen=True)
class ConsoleLine:
    """One console line and the host monotonic time it was seen at."""

    host_time_s: float
    host: str
    text: str


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    host_time_s: float
    host: str
    seq: int
    bad_pages: int
    written_bytes: int
    guest_ms: int


def parse_heartbeat(line: ConsoleLine) -> Heartbeat | None:
    match = HEARTBEAT_RE.match(line.text)
    if match is None:
        return None
    seq, bad, written, _checked, guest_ms = (int(g) for g in match.groups())
    return Heartbeat(line.host_time_s, line.host, seq, bad, written, guest_ms)


class ConsoleTail:
    """Follow a console file (which may not exist yet) and timestamp its lines.

    Runs in a native thread so that it keeps reading while another thread
    blocks in a libvirt call, even in an eventlet-patched process.
    """

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self.host = host
        self._lines: list[ConsoleLine] = []
        threading = native.threading_module()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"console-{host}-{path.name}")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        clock = native.time_module()
        handle = None
        partial = b""
        while not self._stop_event.is_set():
            if handle is None:
                try:
                    handle = open(self.path, "rb")
                except FileNotFoundError:
                    clock.sleep(TAIL_INTERVAL_S)
                    continue
            chunk = handle.read()
            if not chunk:
                clock.sleep(TAIL_INTERVAL_S)
                continue
            now_s = clock.monotonic()
            partial += chunk
            *complete, partial = partial.split(b"\n")
            with self._lock:
                self._lines.extend(
                    ConsoleLine(now_s, self.host, raw.decode(errors="replace").rstrip("\r"))
                    for raw in complete)
        if handle is not None:
            handle.close()

    def lines(self) -> list[ConsoleLine]:
        with self._lock:
            return list(self._lines)

    def heartbeats(self) -> list[Heartbeat]:
        return [hb for hb in (parse_heartbeat(line) for line in self.lines()) if hb is not None]

    def stop(self) -> None:
        self._stop_event.set()
        self._thread.join(timeout=2)


def domain_xml(config: LabConfig, host: HostSpec, name: str, dirty_mb: int,
               dirty_rate_mb_s: int, check_rate_mb_s: int = 20,
               emulator: str = QEMU_BINARY, pattern: Pattern = STEADY) -> str:
    """TCG guest (KVM hangs on these machines), direct kernel boot, file console."""
    cmdline = (f"console=ttyS0 quiet panic=0 DIRTY_MB={dirty_mb} DIRTY_RATE={dirty_rate_mb_s} "
               f"CHECK_RATE={check_rate_mb_s} {pattern.words()}")
    console = escape(host.console_path(name))
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{GUEST_MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(config.kernel_path))}</kernel>
    <initrd>{escape(str(config.initramfs_path))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <console type='file'><source path='{console}'/><target type='serial' port='0'/></console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@dataclasses.dataclass
class Guest:
    """A running lab guest and the console tails that watch it."""

    name: str
    host: HostSpec
    dirty_mb: int
    dirty_rate_mb_s: int
    tails: dict[str, ConsoleTail]
    pattern: Pattern = STEADY

    def watch(self, host: HostSpec) -> ConsoleTail:
        """Start following the console file this guest will have on ``host``."""
        if host.name not in self.tails:
            tail = ConsoleTail(host.real_console_path(self.name), host.name)
            tail.start()
            self.tails[host.name] = tail
        return self.tails[host.name]

    def lines(self) -> list[ConsoleLine]:
        merged = [line for tail in self.tails.values() for line in tail.lines()]
        return sorted(merged, key=lambda line: line.host_time_s)

    def heartbeats(self) -> list[Heartbeat]:
        merged = [hb for tail in self.tails.values() for hb in tail.heartbeats()]
        return sorted(merged, key=lambda hb: hb.host_time_s)

    def close(self) -> None:
        for tail in self.tails.values():
            tail.stop()


def default_emulator() -> str:
    return os.environ.get(EMULATOR_ENV) or QEMU_BINARY


def boot(config: LabConfig, host: HostSpec, name: str, dirty_mb: int, dirty_rate_mb_s: int,
         check_rate_mb_s: int = 20, emulator: str | None = None,
         timeout_s: float = BOOT_TIMEOUT_S, pattern: Pattern = STEADY) -> Guest:
    """Create a transient domain on ``host`` and wait for steady heartbeats."""
    import libvirt
    system.quiet_libvirt()
    if not host.socket_path.exists():
        raise LabError(f"host {host.name} is not running (no {host.socket_path}): "
                       "run 'python -m nova_livemig_lab start'")
    emulator = emulator or default_emulator()
    for other in config.hosts:
        other.real_console_path(name).unlink(missing_ok=True)
    guest = Guest(name, host, dirty_mb, dirty_rate_mb_s, {}, pattern)
    guest.watch(host)
    conn = libvirt.open(host.uri)
    try:
        conn.createXML(domain_xml(config, host, name, dirty_mb, dirty_rate_mb_s,
                                  check_rate_mb_s, emulator, pattern), 0)
    finally:
        conn.close()
    wait_steady(guest, timeout_s)
    return guest


def wait_steady(guest: Guest, timeout_s: float) -> None:
    """Steady: STEADY_HEARTBEATS heartbeats seen, none reporting bad pages."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beats = guest.heartbeats()
        if len(beats) >= STEADY_HEARTBEATS:
            if beats[-1].bad_pages:
                raise LabError(f"guest {guest.name} reports {beats[-1].bad_pages} bad pages "
                               "before any migration")
            return
        time.sleep(0.2)
    tail = "\n".join(line.text for line in guest.lines()[-20:])
    raise LabError(f"guest {guest.name} gave no steady heartbeats within {timeout_s:.0f} s; "
                   f"console:\n{tail}")


def destroy(guest: Guest, config: LabConfig) -> None:
    """Destroy the guest wherever it runs and stop watching it."""
    import libvirt
    system.quiet_libvirt()
    guest.close()
    for host in config.hosts:
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError:
            continue
        try:
            dom = conn.lookupByName(guest.name)
            dom.destroy()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
