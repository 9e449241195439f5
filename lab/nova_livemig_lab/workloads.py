"""Named guest workloads: how much the guest writes, how fast, in what pattern.

The lab guest is a 320 MiB TCG guest; the link is about 14.4 MB/s. Three of
these workloads are beyond what pre-copy alone can move over that link (the
demo's steady writer, a bursty writer and a growing working set), one writes
just under the link's speed, and one writes slowly at random pages and
converges on its own: a controller must leave that one alone. Three carry an
application that counts its own service (a CPU-bound worker, a latency
server) or change their rate mid-migration (step-up).
"""
from __future__ import annotations

import dataclasses

from nova_livemig_lab.errors import LabError
from nova_livemig_lab.guest import STEADY, Pattern


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    dirty_mb: int
    dirty_rate_mb_s: int
    pattern: Pattern = STEADY
    # Whether pre-copy alone finishes it within a 500 ms downtime over the lab's link.
    converges: bool = False

    def describe(self) -> str:
        return (f"{self.name}: {self.dirty_mb} MB written at {self.dirty_rate_mb_s} MB/s, "
                f"{self.pattern.describe()}")


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    # The demo's guest (and the traces'): its whole working set every 3 s.
    Workload("steady", 120, 40),
    # 4 s at 40 MB/s, then 2 s quiet: 27 MB/s on average, and the quiet
    # spells tempt a controller into reading convergence.
    Workload("bursty", 120, 40,
             Pattern("bursty", (("BURST_ON_MS", 4000), ("BURST_OFF_MS", 2000)))),
    # Starts on 16 MB and grows by 4 MB a second up to 160 MB, written at
    # 40 MB/s: every pass finds a larger working set than the last.
    Workload("growing", 160, 40, Pattern("growing", (("START_MB", 16), ("GROW_MB_S", 4)))),
    # Just under the link: pre-copy gains a little a pass, too little.
    Workload("near-link", 120, 14),
    # 3 MB/s at random pages of 120 MB: converges in a few passes.
    Workload("slow-random", 120, 3, Pattern("random"), converges=True),
    # A CPU-bound worker beside a 20 MB/s writer: what throttling costs is
    # its own work units, counted by itself.
    Workload("cpu-bound", 120, 20, Pattern("steady", app="cpu")),
    # A latency-sensitive server (200 requests a second, open loop) beside a
    # 20 MB/s writer: its p99 and longest stall over the migration.
    Workload("latency-server", 120, 20, Pattern("steady", app="server")),
    # 8 MB/s, which pre-copy almost keeps up with, stepping up to 40 MB/s
    # 15 s after the guest program started (a few seconds into pre-copy).
    Workload("step-up", 120, 8, Pattern("steady", (("STEP_AT_S", 15), ("STEP_RATE", 40)))),
)}


def named(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise LabError(f"unknown workload {name!r}: one of {', '.join(WORKLOADS)}") from None
