"""What the guest's own application lost, read from its own counters.

The lab guest (tools/lab/dirtier.c) counts its own service in every
heartbeat line: the bytes its writer wrote, the work units of a CPU-bound
worker (``APP=cpu``), the requests a latency-sensitive server served and
the latency of each (``APP=server``). A migration's cost to the guest is
then counted by the guest itself, not modelled from libvirt's figures:

* **work lost**: the application's throughput deficit over the migration,
  in seconds of its own service. Its rate before the migration is the
  baseline; what it did between the start of the migration and the end of
  the settle time is compared with what that rate would have done. A
  writer that stops for 2 s loses 2 s; one throttled to 40 % for 10 s loses
  6 s; a server whose queue drains before the window ends loses nothing
  here, and pays in latency instead;
* **latency** (``APP=server``): p50, p99, p99.9 and the longest of the
  requests that completed in the window, each from its scheduled arrival
  (open loop: requests queue during a stall, as clients' would). The
  guest's clock stops while the whole VM is stopped, so those stops are
  added from the host's view (:func:`unseen_stop`);
* the longest stop stays the longest gap between heartbeats
  (:func:`nova_livemig_lab.measure.max_gap`).

Throttle x time, the controller's own model, is reported beside it.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from nova_livemig_lab.guest import HEARTBEAT_RE, ConsoleLine

# How long before the migration the baseline rate is read from.
BASELINE_S = 5.0
# Host and guest clocks drift and the console is read in bursts: a gap this
# much longer on the host than in the guest is a stop of the whole VM.
UNSEEN_STOP_MIN_S = 0.2
MIN_BASELINE_S = 0.8
LATENCY_BUCKETS = 128

_WORK_RE = re.compile(r" work=(\d+)")
_SERVER_RE = re.compile(r" req=(\d+) lat=(\d+) lh=([0-9:,]*)")


@dataclasses.dataclass(frozen=True)
class Beat:
    """One heartbeat with the application's counters."""

    host_time_s: float
    written_bytes: int
    guest_ms: int = 0
    work_units: int | None = None
    served: int | None = None
    # The tick's latencies: bucket -> count.
    histogram: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class AppCost:
    """What the guest's application paid for one migration, by its own count."""

    app: str  # "writer", "cpu" or "server"
    window_s: float
    baseline_per_s: float
    work_lost_s: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p999_ms: float | None = None
    latency_max_ms: float | None = None
    requests: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in dataclasses.asdict(self).items()}

    def text(self) -> str:
        parts = [f"{self.app} lost {self.work_lost_s:.2f} s of its own work"]
        if self.latency_p99_ms is not None:
            parts.append(f"latency p50 {self.latency_p50_ms:.1f} ms, p99 "
                         f"{self.latency_p99_ms:.1f} ms, p99.9 {self.latency_p999_ms:.1f} ms, "
                         f"max {self.latency_max_ms:.1f} ms")
        return "; ".join(parts)


def parse(line: ConsoleLine) -> Beat | None:
    match = HEARTBEAT_RE.match(line.text)
    if match is None:
        return None
    written, guest_ms = int(match.group(3)), int(match.group(5))
    work = _WORK_RE.search(line.text, match.end())
    if work is not None:
        return Beat(line.host_time_s, written, guest_ms, work_units=int(work.group(1)))
    server = _SERVER_RE.search(line.text, match.end())
    if server is not None:
        pairs = tuple((int(b), int(n)) for b, n in
                      (item.split(":", 1) for item in server.group(3).split(",") if item))
        return Beat(line.host_time_s, written, guest_ms, served=int(server.group(1)),
                    histogram=pairs)
    return Beat(line.host_time_s, written, guest_ms)


def bucket_floor_us(bucket: int) -> float:
    """The lower bound of a latency bucket, in microseconds (dirtier.c)."""
    power, quarter = divmod(bucket, 4)
    return ((4 + quarter) << power) / 4.0


def percentile_ms(histogram: dict[int, int], fraction: float) -> float | None:
    """The ``fraction`` quantile of a bucketed histogram, at the bucket's upper end."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_floor_us(bucket + 1) / 1000.0
    return bucket_floor_us(max(histogram) + 1) / 1000.0


def unseen_stop(before: Beat, after: Beat, rate_per_s: float) -> dict[int, int]:
    """Latencies of requests the guest never saw arrive, bucketed.

    The guest's clock stops while QEMU stops the VM (a paused copy, the
    final stop-and-copy): the server schedules requests on that clock, so a
    stop of the whole VM is invisible to it. The host sees it as host time
    passing faster than the guest's between two heartbeats. Clients in real
    time kept sending meanwhile: ``rate_per_s`` of them a second, each
    waiting until the guest ran again (spread evenly over the stop).
    """
    stop_s = (after.host_time_s - before.host_time_s) - (after.guest_ms - before.guest_ms) / 1e3
    if stop_s < UNSEEN_STOP_MIN_S or rate_per_s <= 0:
        return {}
    count = int(round(rate_per_s * stop_s))
    buckets: dict[int, int] = {}
    for i in range(count):
        waited_ns = int(stop_s * (i + 0.5) / count * 1e9)
        bucket = latency_bucket(waited_ns)
        buckets[bucket] = buckets.get(bucket, 0) + 1
    return buckets


def latency_bucket(ns: int) -> int:
    """The guest's bucket for a latency (dirtier.c's latency_bucket)."""
    us = ns // 1000
    if us == 0:
        return 0
    power = us.bit_length() - 1
    return min(LATENCY_BUCKETS - 1, power * 4 + (((us << 2) >> power) & 3))


def _due(beats: Sequence[Beat], start: Beat, end: Beat,
         write_rate: Callable[[int], float]) -> float:
    """Bytes the writer's schedule asked for between two heartbeats, host time."""
    due = 0.0
    previous = start
    for beat in beats:
        if start.host_time_s < beat.host_time_s <= end.host_time_s:
            # The writes a heartbeat reports were made just before it.
            due += write_rate(beat.guest_ms) * (beat.host_time_s - previous.host_time_s)
            previous = beat
    return due


def _scheduled_writer(beats: Sequence[Beat], base_from: Beat, base_to: Beat, first: Beat,
                      last: Beat, write_rate: Callable[[int], float]) -> AppCost | None:
    base_due = _due(beats, base_from, base_to, write_rate)
    if base_due <= 0:
        return None
    # Under TCG the guest may not reach its setting: hold it to what it did.
    achieved = (base_to.written_bytes - base_from.written_bytes) / base_due
    # Integrated heartbeat by heartbeat: each interval loses the share of
    # its time the writer's schedule was not met (none while it rests).
    lost_s = due_total = 0.0
    previous = first
    for beat in beats:
        if first.host_time_s < beat.host_time_s <= last.host_time_s:
            span_s = beat.host_time_s - previous.host_time_s
            due = write_rate(beat.guest_ms) * achieved * span_s
            due_total += due
            if due > 0:
                done = beat.written_bytes - previous.written_bytes
                lost_s += span_s * max(0.0, 1.0 - done / due)
            previous = beat
    window_s = last.host_time_s - first.host_time_s
    per_s = due_total / window_s if window_s > 0 else 0.0
    return AppCost("writer", round(window_s, 3), per_s, lost_s)


def _counter(beat: Beat, app: str) -> float:
    if app == "cpu":
        return float(beat.work_units or 0)
    if app == "server":
        return float(beat.served or 0)
    return float(beat.written_bytes)


def _at(beats: Sequence[Beat], when_s: float) -> Beat | None:
    """The last heartbeat seen at or before ``when_s``."""
    found = None
    for beat in beats:
        if beat.host_time_s > when_s:
            break
        found = beat
    return found


def cost(lines: Sequence[ConsoleLine], start_s: float, end_s: float,
         baseline_s: float = BASELINE_S,
         write_rate: Callable[[int], float] | None = None) -> AppCost | None:
    """The application's cost over [start_s, end_s] (host monotonic seconds).

    ``write_rate(guest_ms)``: what a writer without an application is set
    to write then, in bytes a second (a writer that bursts or steps its rate
    up is held to its own schedule, scaled by how much of it the guest
    achieved before the migration). None when the heartbeats do not cover
    the baseline and the window.
    """
    beats = [b for b in (parse(line) for line in lines) if b is not None]
    beats.sort(key=lambda b: b.host_time_s)
    if not beats:
        return None
    app = ("cpu" if beats[-1].work_units is not None
           else "server" if beats[-1].served is not None else "writer")
    # The baseline: up to ``baseline_s`` of heartbeats before the start (a
    # guest migrated right after it booted has less).
    base_from = _at(beats, start_s - baseline_s) or beats[0]
    base_to = first = _at(beats, start_s)
    last = _at(beats, end_s)
    if base_to is None or first is None or last is None:
        return None
    base_span_s = base_to.host_time_s - base_from.host_time_s
    if base_span_s < MIN_BASELINE_S:
        return None
    rate = (_counter(base_to, app) - _counter(base_from, app)) / base_span_s
    window_s = last.host_time_s - first.host_time_s
    done = _counter(last, app) - _counter(first, app)
    if app == "writer" and write_rate is not None:
        return _scheduled_writer(beats, base_from, base_to, first, last, write_rate)
    lost_s = max(0.0, window_s - done / rate) if rate > 0 else 0.0
    if app != "server":
        return AppCost(app, round(window_s, 3), rate, lost_s)
    histogram: dict[int, int] = {}
    longest = 0
    previous = first
    for beat in beats:
        if first.host_time_s < beat.host_time_s <= last.host_time_s:
            for bucket, count in beat.histogram:
                histogram[bucket] = histogram.get(bucket, 0) + count
                longest = max(longest, bucket)
            for bucket, count in unseen_stop(previous, beat, rate).items():
                histogram[bucket] = histogram.get(bucket, 0) + count
                longest = max(longest, bucket)
            previous = beat
    requests = sum(histogram.values())
    return AppCost(app, round(window_s, 3), rate, lost_s,
                   latency_p50_ms=percentile_ms(histogram, 0.50),
                   latency_p99_ms=percentile_ms(histogram, 0.99),
                   latency_p999_ms=percentile_ms(histogram, 0.999),
                   latency_max_ms=(bucket_floor_us(longest + 1) / 1000.0
                                   if requests else None),
                   requests=requests)
