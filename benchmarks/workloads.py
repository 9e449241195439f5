"""Workloads that belong to the guest, drawn from seeded distributions.

A guest's write rate does not depend on the link it happens to leave over:
rates are log-uniform from 1 MB/s to 4 GB/s on every link.  Families vary
one thing about the guest at a time on top of the common draws (memory 1 to
256 GiB log-uniform, link 1/10/25/100 Gbit/s, working set 1 to 100 % of
memory log-uniform, 0 to 80 % zero pages):

* ``steady``: a CPU-bound writer sweeping its working set;
* ``paced``: a writer that needs only 5 to 50 % of its CPU for its pace,
  so a throttle slows it only once it cuts into that pace;
* ``random-writes``: writes land on random pages of the working set,
  uniformly or skewed (90 % of writes on a hot 10 %);
* ``bursty``: the same mean rate written in bursts (4 x for a quarter of
  every 20 s);
* ``rate-step``: the rate steps up or down 4 x at a random time;
* ``growing-ws``: the working set keeps growing (doubles in 50 to 500 s);
* ``huge``: 0.5 to 1 TiB guests on 10 to 100 Gbit/s links;
* ``fast-link``: 25 and 100 Gbit/s links, where one migration stream
  cannot fill the link and only multifd channels can.

Every host moves one stream at most ``STREAM_LIMIT_BYTES_S`` (an
assumption: a CPU-bound QEMU migration thread without TLS, about 10 Gbit/s;
``cases(stream_limit_bytes_s=...)`` and ``benchmarks/variants.py`` change
it).

The seed's own case (``seed_cases``): the 32 GiB guest over 1 Gbit/s the
project's README starts from, written at 0 to 2 x the link.

Host drains: 2 to 20 guests from the first four families leave one host
over a shared link, each platform running as many at once as its defaults
allow.
"""

from __future__ import annotations

import dataclasses
import math
import random

from benchmarks import simulator as sim

GIB = sim.GIB
MB = 1e6
SEED = 20261128
PER_FAMILY = 60
STREAM_LIMIT_BYTES_S = 1.25e9
LINKS_GBIT_S = (1, 10, 25, 100)
MIN_DIRTY_BYTES_S = 1 * MB
MAX_DIRTY_BYTES_S = 4000 * MB
BURST_PERIOD_S = 20.0
BURST_DUTY = 0.25
FAMILIES = ('steady', 'paced', 'random-writes', 'bursty', 'rate-step',
            'growing-ws', 'huge', 'fast-link')
DRAIN_FAMILIES = ('steady', 'paced', 'random-writes', 'bursty')
# (guests, link Gbit/s) of the host drains.
DRAINS = ((2, 10), (5, 10), (10, 10), (20, 10), (10, 25))


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload of the benchmark and where it came from."""

    key: str
    family: str
    link_gbit_s: float
    workload: sim.Workload


def link_bytes_s(gbit_s: float) -> float:
    """Page payload of a link of ``gbit_s`` line rate."""
    return gbit_s * 1e9 / 8 * sim.LINK_EFFICIENCY


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw(rng: random.Random, family: str, index: int,
         link_gbit_s: float | None = None,
         memory_gib: tuple[float, float] = (1, 256),
         stream_limit_bytes_s: float | None = STREAM_LIMIT_BYTES_S) -> Case:
    """One workload of ``family`` from ``rng``."""
    if family not in FAMILIES:
        raise ValueError(f'unknown family {family!r}')
    if family == 'huge':
        memory_gib = (512, 1024)
    memory = int(_log_uniform(rng, *memory_gib) * GIB) // 4096 * 4096
    if link_gbit_s is None:
        links = LINKS_GBIT_S
        if family == 'huge':
            links = (10, 25, 100)
        elif family == 'fast-link':
            links = (25, 100)
        link_gbit_s = rng.choice(links)
    bandwidth = link_bytes_s(link_gbit_s)
    dirty = _log_uniform(rng, MIN_DIRTY_BYTES_S, MAX_DIRTY_BYTES_S)
    ws = int(memory * _log_uniform(rng, 0.01, 1.0))
    touched = 1.0 - rng.uniform(0.0, 0.8)
    kwargs: dict[str, object] = {}
    if family == 'paced':
        kwargs['write_capacity_bytes_s'] = dirty / rng.uniform(0.05, 0.5)
    if family == 'random-writes':
        kwargs['popularity'] = rng.choice(('uniform', 'skewed'))
    if family == 'bursty':
        kwargs['burst_period_s'] = BURST_PERIOD_S
        kwargs['burst_duty'] = BURST_DUTY
    if family == 'rate-step':
        kwargs['rate_steps'] = ((rng.uniform(10.0, 300.0),
                                 rng.choice((0.25, 4.0))),)
    if family == 'growing-ws':
        kwargs['ws_growth_bytes_s'] = ws / rng.uniform(50.0, 500.0)
    key = (f'{family}#{index}/{memory / GIB:.0f}GiB/{link_gbit_s:g}Gbit/'
           f'{dirty / MB:.0f}MBps/ws{ws / memory:.0%}')
    workload = sim.Workload(
        memory_bytes=memory, bandwidth_bytes_s=bandwidth,
        dirty_rate_bytes_s=dirty, working_set_bytes=ws,
        touched_fraction=touched, stream_limit_bytes_s=stream_limit_bytes_s,
        name=key, **kwargs)  # type: ignore[arg-type]
    return Case(key, family, link_gbit_s, workload)


def cases(per_family: int = PER_FAMILY, seed: int = SEED,
          families: tuple[str, ...] = FAMILIES,
          stream_limit_bytes_s: float | None = STREAM_LIMIT_BYTES_S
          ) -> list[Case]:
    """The benchmark's workloads: ``per_family`` of each family."""
    rng = random.Random(seed)
    return [draw(rng, family, i, stream_limit_bytes_s=stream_limit_bytes_s)
            for family in families for i in range(per_family)]


SEED_FAMILY = 'seed'
SEED_MEMORY_GIB = 32
SEED_LINK_GBIT_S = 1
# Write rates as multiples of the link's page payload.
SEED_DIRTY_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0)


def seed_cases(stream_limit_bytes_s: float | None = STREAM_LIMIT_BYTES_S
               ) -> list[Case]:
    """32 GiB over 1 Gbit/s (about 110 MiB/s) at 0 to 2 x the link.

    A CPU-bound guest sweeping all of its memory (the working set the
    planner assumes when none is given), every page non-zero.
    """
    memory = SEED_MEMORY_GIB * GIB
    bandwidth = link_bytes_s(SEED_LINK_GBIT_S)
    out = []
    for fraction in SEED_DIRTY_FRACTIONS:
        key = (f'{SEED_FAMILY}/{SEED_MEMORY_GIB}GiB/{SEED_LINK_GBIT_S}Gbit/'
               f'x{fraction:g}')
        out.append(Case(key, SEED_FAMILY, SEED_LINK_GBIT_S, sim.Workload(
            memory_bytes=memory, bandwidth_bytes_s=bandwidth,
            dirty_rate_bytes_s=fraction * bandwidth,
            working_set_bytes=memory,
            stream_limit_bytes_s=stream_limit_bytes_s, name=key)))
    return out


@dataclasses.dataclass(frozen=True)
class DrainCase:
    """Guests leaving one host over its link."""

    key: str
    link_gbit_s: float
    guests: tuple[Case, ...]

    @property
    def link_bytes_s(self) -> float:
        return link_bytes_s(self.link_gbit_s)

    @property
    def lower_bound_s(self) -> float:
        """Every non-zero page of every guest once, at the full link."""
        return sum(c.workload.nonzero_bytes for c in self.guests) / (
            self.link_bytes_s)


def drain_cases(drains: tuple[tuple[int, int], ...] = DRAINS,
                seed: int = SEED + 1) -> list[DrainCase]:
    rng = random.Random(seed)
    out = []
    for n, link in drains:
        guests = tuple(
            draw(rng, rng.choice(DRAIN_FAMILIES), i, link_gbit_s=link,
                 memory_gib=(2, 64))
            for i in range(n))
        out.append(DrainCase(f'drain/{n}x/{link}Gbit', link, guests))
    return out
