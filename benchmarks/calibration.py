"""The simulator against the lab's recorded migrations (tests/traces).

Each trace names its workload (guest memory, working set, write rate, the
measured link) and the actions the recorder took at given times.  The same
workload and the same actions at the same times run through the simulator;
total time and iteration count are compared with what libvirt reported.

Run ``python -m benchmarks.calibration`` for the table.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Mapping
from typing import Any

from benchmarks import policies
from benchmarks import simulator as sim
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import samples

TRACES_DIR = os.path.join(os.path.dirname(__file__), '..', 'tests',
                          'traces')
MB = 1000 * 1000
MIB = 1024 * 1024
# The lab's guest leaves part of its memory zero, which QEMU does not send:
# the paused copy sent 191877120 non-zero bytes of 335937536.
LAB_TOUCHED_FRACTION = 191877120 / 335937536
# The lab's guest program paces its writes; flat out under TCG it writes
# about this fast, so a light throttle does not slow it (in the
# auto-converge traces the working set stops being rewritten only at a 70
# to 99 % throttle: two recordings of the same recipe took 50 s and 63 s).
LAB_WRITE_CAPACITY_BYTES_S = 80 * 1000 * 1000
ACTION_NAMES = {
    'abortJob': ctl.Action.ABORT,
    'migrateStartPostCopy': ctl.Action.START_POSTCOPY,
    'migrateSetMaxDowntime': ctl.Action.SET_DOWNTIME,
}
POLL_S = 0.5
# A dirty-bitmap sync of the lab's TCG guest takes about this long (fitted
# to the iteration counts: the tail of short passes depends on it).
LAB_SYNC_BASE_S = 0.1


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str
    real_total_s: float
    sim_total_s: float
    real_iterations: int
    sim_iterations: int
    real_outcome: str
    sim_outcome: str

    @property
    def total_error(self) -> float:
        return abs(self.sim_total_s - self.real_total_s) / self.real_total_s

    @property
    def iteration_error(self) -> float:
        return (abs(self.sim_iterations - self.real_iterations)
                / self.real_iterations)


class Replay(policies.Watcher):
    """A decision maker that repeats the recorder's actions at their times."""

    def __init__(self, actions: list[Mapping[str, Any]]) -> None:
        super().__init__()
        self._pending = sorted(actions, key=lambda a: float(a['t']))

    def observe(self, sample: samples.JobSample,
                now_s: float) -> tuple[ctl.Decision, ...]:
        due = []
        while self._pending and float(self._pending[0]['t']) <= now_s + 1e-9:
            action = self._pending.pop(0)
            downtime = action.get('downtime_ms')
            due.append(self.decide(ACTION_NAMES[action['action']], 'recorded',
                                   now_s, int(downtime) if downtime else None))
        return tuple(due)


def load_traces(directory: str = TRACES_DIR) -> dict[str, dict[str, Any]]:
    traces = {}
    for path in sorted(glob.glob(os.path.join(directory, '*.json'))):
        with open(path) as f:
            trace = json.load(f)
        traces[trace.get('name') or os.path.basename(path)[:-5]] = trace
    return traces


def workload_of(trace: Mapping[str, Any]) -> sim.Workload:
    meta = trace['metadata']
    return sim.Workload(
        memory_bytes=int(meta['guest_memory_mib']) * MIB,
        bandwidth_bytes_s=float(meta['link_measured_mb_s']) * MB,
        dirty_rate_bytes_s=float(meta['dirty_rate_mb_s']) * MB,
        working_set_bytes=int(meta['dirty_mb']) * MB,
        touched_fraction=LAB_TOUCHED_FRACTION,
        write_capacity_bytes_s=LAB_WRITE_CAPACITY_BYTES_S,
        sync_base_s=LAB_SYNC_BASE_S,
        name=str(trace.get('name', '')))


def settings_of(trace: Mapping[str, Any]) -> sim.JobSettings:
    meta = trace['metadata']
    flags = set(meta.get('flag_names') or trace['result'].get('flags') or ())
    params = meta.get('params') or {}
    return sim.JobSettings(
        live='LIVE' in flags or 'VIR_MIGRATE_LIVE' in flags,
        auto_converge=bool(flags & {'AUTO_CONVERGE',
                                    'VIR_MIGRATE_AUTO_CONVERGE'}),
        throttle_initial_pct=int(params.get('auto_converge.initial', 20)),
        throttle_increment_pct=int(params.get('auto_converge.increment',
                                              10)),
        postcopy=bool(flags & {'POSTCOPY', 'VIR_MIGRATE_POSTCOPY'}))


def real_numbers(trace: Mapping[str, Any]) -> tuple[float, int, str]:
    """(total s, iterations, outcome) as libvirt and the recorder saw them.

    Total time is libvirt's completed-job ``time_elapsed`` when it exists;
    after post-copy libvirt reports none, so the recorder's own duration
    (call to return) stands in; an aborted job lasted until the abort.
    """
    completed = trace.get('completed_stats') or {}
    result = trace.get('result') or {}
    iterations = max((e['stats'].get('memory_iteration', 0)
                      for e in trace['trace']), default=0)
    if completed.get('time_elapsed'):
        return (completed['time_elapsed'] / 1000.0,
                int(completed.get('memory_iteration', iterations)),
                'completed')
    aborts = [a['t'] for a in trace.get('actions') or []
              if a['action'] == 'abortJob']
    if aborts:
        return float(aborts[0]), iterations, 'aborted'
    return float(result['duration_s']), iterations, str(result['outcome'])


def compare(trace: Mapping[str, Any]) -> Comparison:
    migration = sim.Migration(workload_of(trace), settings_of(trace))
    run = sim.drive(migration, Replay(list(trace.get('actions') or [])),
                    POLL_S, 600.0)
    real_total, real_iterations, real_outcome = real_numbers(trace)
    return Comparison(
        name=str(trace.get('name')), real_total_s=real_total,
        sim_total_s=run.total_s, real_iterations=real_iterations,
        sim_iterations=run.iterations, real_outcome=real_outcome,
        sim_outcome=run.outcome)


def table(comparisons: list[Comparison]) -> str:
    lines = ['| trace | real total s | simulated | error | real iterations '
             '| simulated | error | outcome (real / simulated) |',
             '|---|---|---|---|---|---|---|---|']
    for c in comparisons:
        lines.append(
            f'| {c.name} | {c.real_total_s:.1f} | {c.sim_total_s:.1f} | '
            f'{c.total_error:.0%} | {c.real_iterations} | '
            f'{c.sim_iterations} | {c.iteration_error:.0%} | '
            f'{c.real_outcome} / {c.sim_outcome} |')
    return '\n'.join(lines)


def main() -> None:
    print(table([compare(t) for t in load_traces().values()]))


if __name__ == '__main__':
    main()
