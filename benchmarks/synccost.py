"""The dirty-bitmap sync cost per GiB of guest memory, measured in the lab.

The recording (``lab``) migrates guests of the lab's recipe with 320, 2048
and 4096 MiB of memory (8 MB written at 1 MB/s) with a 1 ms downtime limit
and keeps every ``jobStats()`` poll.  Two estimates are made from them:

* **setup time** (the one recorded): QEMU's setup phase allocates the
  migration bitmap, marks every page dirty and syncs the dirty bitmap once
  over all guest memory; libvirt reports its duration, ``setup_time``, in
  whole milliseconds.  Its slope against guest memory is the per-GiB cost
  of that work, one full sync included.  Error: the 1 ms resolution
  (uniform, 1 ms / sqrt(12) per reading) for the fit on the two ``fit``
  runs; the scatter about the line for the fit over every run.  Since the
  fixed part cannot be negative, the largest reading of the largest guest
  (plus half a millisecond) over its memory bounds the per-GiB cost from
  above whatever the scatter.
* **sync loop** (where it held): a 1 ms limit should keep QEMU looping
  "sync, send what was dirtied, sync" after the bulk pass; the time per
  iteration not explained by its bytes on the link, against guest memory.
  In the recorded runs QEMU switched over within a second of the bulk pass
  instead: a sync that finds nothing dirty ends the migration whatever the
  limit, and the writer sleeps between its 100 ms bursts.  The analysis
  says so (``unusable``) rather than estimating from one or two polls.

Fit and check stay apart: the ``fit`` runs alone give the value, the
others are only compared with its prediction.

Run as root: ``nice -n 10 python -m benchmarks.synccost lab`` (about 3
minutes holding the lab lock) records ``sync-cost.json``; ``analyse``
recomputes the analysis from it; ``sensitivity`` runs the simulator's
sensitivity policies with the measured value, half and double it (and the
same for the upper bound), saves the table in ``sync-cost.json`` and
prints it; ``readme`` prints the measurement and that table from the saved
file alone.  ``python -m benchmarks.run`` puts the measurement into
``results.md`` and runs its own table at the measured upper bound with the
simulator of the day; ``README.md`` copies no number.  The lab's TCG guest
measures QEMU's own bitmap work; the KVM kernel's dirty log, which the
simulator's grid assumes (``simulator.SYNC_PER_GIB_S``), cannot be
measured here (KVM guests hang on this machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'sync-cost.json')
MB = 1000 * 1000
MIB = 1024 * 1024
GIB = 1024 * MIB
DIRTY_MB = 8
DIRTY_RATE_MB_S = 1
CHECK_RATE_MB_S = 1
DOWNTIME_LIMIT_MS = 1
STEADY_FROM_ITERATION = 3
STEADY_S = 20.0
# Give up waiting for the steady part after this long (abort anyway).
MAX_RUN_S = 120.0
CHUNKS = 4
BOOT_TIMEOUT_S = 180.0
# (guest memory MiB, role), in the order recorded: the fit pair first,
# then the held-out runs (interleaved sizes, so drift shows as misfit).
PLAN = ((320, 'fit'), (4096, 'fit'), (2048, 'check'), (4096, 'check'),
        (320, 'check'))


# ---------------------------------------------------------------------------
# Analysis (pure)
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Estimate:
    """One run's steady loop: per-iteration time, bytes and overhead."""

    memory_gib: float
    role: str
    window_s: float
    iterations: int
    period_s: float
    bytes_per_iteration: float
    overhead_s: float
    overhead_se_s: float


def steady(polls: Sequence[Sequence[Any]],
           from_iteration: int = STEADY_FROM_ITERATION,
           until_s: float | None = None) -> list[tuple[float, int, int]]:
    """(t, iteration, bytes processed) from ``from_iteration`` on.

    Polls at or after ``until_s`` (the abort) are left out.
    """
    out = []
    for t, stats in polls:
        it = int(stats.get('memory_iteration', 0))
        if it < from_iteration:
            continue
        if until_s is not None and float(t) >= until_s:
            break
        out.append((float(t), it, int(stats.get('memory_processed', 0))))
    return out


def overhead(points: Sequence[tuple[float, int, int]],
             link_bytes_s: float) -> tuple[float, float, float]:
    """(period s, bytes per iteration, overhead s) between first and last."""
    (t0, i0, b0), (t1, i1, b1) = points[0], points[-1]
    iterations = i1 - i0
    if iterations <= 0:
        raise ValueError('no iteration in the window')
    period = (t1 - t0) / iterations
    per_iteration = (b1 - b0) / iterations
    return period, per_iteration, period - per_iteration / link_bytes_s


def estimate(polls: Sequence[Sequence[Any]], link_bytes_s: float,
             memory_bytes: int, role: str = '',
             until_s: float | None = None,
             chunks: int = CHUNKS) -> Estimate:
    """The run's overhead per iteration and its standard error."""
    points = steady(polls, until_s=until_s)
    if len(points) < chunks + 1:
        raise ValueError(f'only {len(points)} steady polls')
    period, per_iteration, mean = overhead(points, link_bytes_s)
    size = (len(points) - 1) / chunks
    parts = []
    for k in range(chunks):
        a, b = round(k * size), round((k + 1) * size)
        parts.append(overhead(points[a:b + 1], link_bytes_s)[2])
    spread = math.sqrt(sum((p - sum(parts) / chunks) ** 2 for p in parts)
                       / (chunks - 1))
    return Estimate(
        memory_gib=memory_bytes / GIB, role=role,
        window_s=points[-1][0] - points[0][0],
        iterations=points[-1][1] - points[0][1], period_s=period,
        bytes_per_iteration=per_iteration, overhead_s=mean,
        overhead_se_s=spread / math.sqrt(chunks))


@dataclasses.dataclass(frozen=True)
class Fit:
    base_s: float
    per_gib_s: float
    # From the points' own standard errors.
    per_gib_se_s: float
    # From the scatter about the line (more than two points), None else.
    per_gib_residual_se_s: float | None = None


def fit_line(estimates: Sequence[Estimate]) -> Fit:
    """Least squares overhead = base + per_gib x GiB, with the slope's error.

    The slope's standard error carries each point's own: Var(slope) =
    sum((x_i - mean x)^2 se_i^2) / Sxx^2.
    """
    xs = [e.memory_gib for e in estimates]
    if len(set(xs)) < 2:
        raise ValueError('need two memory sizes')
    n = len(xs)
    mx = sum(xs) / n
    my = sum(e.overhead_s for e in estimates) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((e.memory_gib - mx) * (e.overhead_s - my)
                for e in estimates) / sxx
    var = sum((e.memory_gib - mx) ** 2 * e.overhead_se_s ** 2
              for e in estimates) / sxx ** 2
    base = my - slope * mx
    residual = None
    if n > 2:
        rss = sum((e.overhead_s - base - slope * e.memory_gib) ** 2
                  for e in estimates)
        residual = math.sqrt(rss / (n - 2) / sxx)
    return Fit(base, slope, math.sqrt(var), residual)


def predict(fit: Fit, memory_gib: float) -> float:
    return fit.base_s + fit.per_gib_s * memory_gib


def check(fit: Fit, held: Sequence[Estimate]) -> list[dict[str, Any]]:
    """Each held-out run against the fit's prediction.

    ``z``: the miss in units of the run's own standard error (the fit's
    error at that size is small next to it only when the fit runs were
    steady; it is not added).
    """
    rows = []
    for e in held:
        predicted = predict(fit, e.memory_gib)
        miss = e.overhead_s - predicted
        rows.append({'memory_gib': e.memory_gib,
                     'measured_ms': round(e.overhead_s * 1000, 2),
                     'se_ms': round(e.overhead_se_s * 1000, 2),
                     'predicted_ms': round(predicted * 1000, 2),
                     'miss_ms': round(miss * 1000, 2),
                     'z': (round(miss / e.overhead_se_s, 2)
                           if e.overhead_se_s > 0 else None)})
    return rows


# setup_time is reported in whole milliseconds: a reading is uniform
# within +-0.5 ms of the true time, a standard error of 1 ms / sqrt(12).
SETUP_RESOLUTION_S = 0.001


def setup_estimate(run: Mapping[str, Any]) -> Estimate:
    """The setup phase of one run: bitmap set-up and the first full sync.

    QEMU's setup allocates the migration bitmap, marks every page dirty and
    syncs the dirty bitmap once over all guest memory; libvirt reports how
    long it took (``setup_time``, ms) in every poll.
    """
    values = [int(s['setup_time']) for _, s in run['polls']
              if s.get('setup_time') is not None]
    if not values:
        raise ValueError('no setup_time in the polls')
    return Estimate(
        memory_gib=int(run['memory_bytes']) / GIB, role=str(run['role']),
        window_s=0.0, iterations=1, period_s=values[-1] / 1000,
        bytes_per_iteration=0.0, overhead_s=values[-1] / 1000,
        overhead_se_s=SETUP_RESOLUTION_S / math.sqrt(12))


def upper_bound_per_gib_s(estimates: Sequence[Estimate]) -> float:
    """No per-GiB cost can exceed a whole setup over the largest guest.

    (largest setup reading + half a resolution step) / its memory: the
    fixed part of the setup taken as zero.
    """
    largest = max(e.memory_gib for e in estimates)
    worst = max(e.overhead_s for e in estimates if e.memory_gib == largest)
    return (worst + SETUP_RESOLUTION_S / 2) / largest


def loop_analysis(runs: Sequence[Mapping[str, Any]],
                  link_bytes_s: float) -> dict[str, Any]:
    """The sync-loop estimate, where a run stayed in the loop long enough."""
    estimates, reasons = [], []
    for r in runs:
        try:
            estimates.append(estimate(r['polls'], link_bytes_s,
                                      int(r['memory_bytes']), r['role'],
                                      r.get('abort_s')))
        except ValueError as exc:
            reasons.append(f"{int(r['memory_bytes']) // MIB} MiB: {exc}")
    out: dict[str, Any] = {'estimates': [dataclasses.asdict(e)
                                         for e in estimates],
                           'unusable': reasons}
    fit_runs = [e for e in estimates if e.role == 'fit']
    if len({e.memory_gib for e in fit_runs}) >= 2:
        fitted = fit_line(fit_runs)
        out['fit'] = dataclasses.asdict(fitted)
        out['check'] = check(fitted, [e for e in estimates
                                      if e.role != 'fit'])
    return out


def analyse(runs: Sequence[Mapping[str, Any]], link_bytes_s: float
            ) -> dict[str, Any]:
    """The setup-time estimate (fit on the fit runs, checked on the rest),
    its upper bound, and the sync-loop estimate where the loop held."""
    setups = [setup_estimate(r) for r in runs]
    fitted = fit_line([e for e in setups if e.role == 'fit'])
    return {'method': 'setup_time',
            'estimates': [dataclasses.asdict(e) for e in setups],
            'fit': dataclasses.asdict(fitted),
            'check': check(fitted, [e for e in setups if e.role != 'fit']),
            'all_runs_fit': dataclasses.asdict(fit_line(setups)),
            'upper_bound_per_gib_s': upper_bound_per_gib_s(setups),
            'loop': loop_analysis(runs, link_bytes_s)}


def load(path: str = RESULTS) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    return data


# ---------------------------------------------------------------------------
# The lab (root, lab lock)
# ---------------------------------------------------------------------------

def boot_sized(cfg: Any, host: Any, name: str, memory_mib: int) -> Any:
    """The lab guest's recipe with another memory size."""
    import libvirt
    from nova_livemig_lab import guest as lab_guest
    from nova_livemig_lab.errors import LabError
    xml = lab_guest.domain_xml(cfg, host, name, DIRTY_MB, DIRTY_RATE_MB_S,
                               CHECK_RATE_MB_S, lab_guest.default_emulator())
    old = f"<memory unit='MiB'>{lab_guest.GUEST_MEMORY_MIB}</memory>"
    if old not in xml:
        raise LabError('the lab guest XML has no memory element to resize')
    xml = xml.replace(old, f"<memory unit='MiB'>{memory_mib}</memory>")
    for other in cfg.hosts:
        other.real_console_path(name).unlink(missing_ok=True)
    guest = lab_guest.Guest(name, host, DIRTY_MB, DIRTY_RATE_MB_S, {})
    guest.watch(host)
    conn = libvirt.open(host.uri)
    try:
        conn.createXML(xml, 0)
    finally:
        conn.close()
    try:
        lab_guest.wait_steady(guest, BOOT_TIMEOUT_S)
    except Exception:
        lab_guest.destroy(guest, cfg)
        raise
    return guest


def record_one(cfg: Any, memory_mib: int, role: str) -> dict[str, Any]:
    import libvirt
    from nova_livemig_lab import guest as lab_guest
    from nova_livemig_lab import measure
    events: list[dict[str, Any]] = []
    state: dict[str, float] = {}

    def on_poll(dom: Any, stats: Mapping[str, Any], elapsed_s: float) -> None:
        if 'limit' not in state:
            state['limit'] = elapsed_s
            dom.migrateSetMaxDowntime(DOWNTIME_LIMIT_MS, 0)
            events.append({'t': round(elapsed_s, 3), 'action': 'migrateSetMaxDowntime',
                           'downtime_ms': DOWNTIME_LIMIT_MS})
        if (int(stats.get('memory_iteration', 0)) >= STEADY_FROM_ITERATION
                and 'steady' not in state):
            state['steady'] = elapsed_s
        due = (elapsed_s >= state.get('steady', math.inf) + STEADY_S
               or elapsed_s >= MAX_RUN_S)
        if due and 'abort' not in state:
            state['abort'] = elapsed_s
            events.append({'t': round(elapsed_s, 3), 'action': 'abortJob'})
            try:
                dom.abortJob()
            except libvirt.libvirtError as exc:
                events.append({'t': round(elapsed_s, 3), 'error': str(exc)})

    name = f"sync-{memory_mib}-{int(time.time() * 1000) % 10**8}"
    booted_s = time.monotonic()
    guest = boot_sized(cfg, cfg.host_a, name, memory_mib)
    boot_s = time.monotonic() - booted_s
    try:
        result = measure.migrate_and_measure(
            cfg, guest, measure.flags_from_names(['LIVE', 'PEER2PEER']),
            on_poll=on_poll, settle_s=1.0, timeout_s=MAX_RUN_S + 30)
    finally:
        lab_guest.destroy(guest, cfg)
    return {'memory_mib': memory_mib, 'memory_bytes': memory_mib * MIB, 'role': role,
            'boot_s': round(boot_s, 1), 'abort_s': state.get('abort'),
            'error': result.run.error, 'guest_on': result.integrity.host,
            'actions': events,
            'polls': [[p.elapsed_s, dict(p.stats)] for p in result.run.polls]}


def record(out: str) -> int:
    if os.geteuid() != 0:
        print('benchmarks.synccost lab: run as root (it starts the lab)', file=sys.stderr)
        return 1
    from benchmarks import lab as bench_lab
    from nova_livemig_lab import config as lab_config
    from nova_livemig_lab import hosts, image, network
    from nova_livemig_lab.lock import LabLock
    cfg = lab_config.load_config()
    image.setup(cfg)
    runs = []
    with LabLock(cfg):
        started_s = time.monotonic()
        hosts.start(cfg)
        try:
            link_mb_s = float(network.load_link_state(cfg)['measured_mb_s'])
            for memory_mib, role in PLAN:
                runs.append(record_one(cfg, memory_mib, role))
                print(json.dumps({k: runs[-1][k] for k in (
                    'memory_mib', 'role', 'boot_s', 'abort_s', 'error', 'guest_on')}),
                    flush=True)
        finally:
            if bench_lab.live_users(cfg):
                print(f'lab left running for {bench_lab.live_users(cfg)}', flush=True)
            else:
                hosts.stop(cfg)
        elapsed_s = time.monotonic() - started_s
    data = {'command': 'nice -n 10 python -m benchmarks.synccost lab',
            'link_mb_s': link_mb_s, 'elapsed_s': round(elapsed_s, 1),
            'method': {'dirty_mb': DIRTY_MB, 'dirty_rate_mb_s': DIRTY_RATE_MB_S,
                       'downtime_limit_ms': DOWNTIME_LIMIT_MS,
                       'steady_from_iteration': STEADY_FROM_ITERATION,
                       'steady_s': STEADY_S, 'chunks': CHUNKS},
            'runs': runs}
    try:
        data['analysis'] = analyse(runs, link_mb_s * MB)
    except ValueError as exc:
        data['analysis_error'] = str(exc)
    with open(out, 'w') as f:
        json.dump(data, f, separators=(',', ':'))
        f.write('\n')
    print(json.dumps(data.get('analysis') or data.get('analysis_error'), indent=1))
    return 0


# ---------------------------------------------------------------------------
# Sensitivity of the simulator (no lab)
# ---------------------------------------------------------------------------

def _sens_job(args: tuple[str, Any, float]) -> dict[str, Any]:
    from benchmarks import policies, run
    name, case, per_gib_s = args
    changed = dataclasses.replace(case, workload=dataclasses.replace(
        case.workload, sync_per_gib_s=per_gib_s))
    return {**run.run_case(policies.by_name(name), changed), 'sync_per_gib_s': per_gib_s}


def sensitivity(values_s: Sequence[float], processes: int = 2
                ) -> list[dict[str, Any]]:
    """The run benchmark's sensitivity policies and families at each value."""
    from benchmarks import metrics, run, workloads
    cases = [c for c in workloads.cases(workloads.PER_FAMILY)
             if c.family in run.SENSITIVITY_FAMILIES]
    jobs = [(name, c, v) for v in values_s for c in cases
            for name in run.SENSITIVITY_POLICIES]
    with multiprocessing.Pool(processes) as pool:
        rows = list(pool.imap_unordered(_sens_job, jobs, chunksize=4))
    out = []
    for v in values_s:
        for name in run.SENSITIVITY_POLICIES:
            mine = [r for r in rows if r['policy'] == name and r['sync_per_gib_s'] == v]
            out.append({'sync_per_gib_s': v, 'policy': name, **metrics.summarise(mine)})
    return out


def sensitivity_values(analysis: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Measured, half and double; the same for the upper bound; the grid's.

    A slope below zero (no cost measurable) counts as zero.
    """
    from benchmarks import simulator as sim
    measured = max(0.0, float(analysis['fit']['per_gib_s']))
    bound = float(analysis['upper_bound_per_gib_s'])
    values = [('half the measured', measured / 2), ('measured', measured),
              ('double the measured', 2 * measured),
              ('half the upper bound', bound / 2), ('upper bound', bound),
              ('double the upper bound', 2 * bound),
              ('the grid\'s assumption (KVM)', sim.SYNC_PER_GIB_S)]
    merged: dict[float, list[str]] = {}
    for label, v in values:
        merged.setdefault(round(v, 9), []).append(label)
    out = [(' = '.join(labels), v) for v, labels in merged.items()]
    return out


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return '-'
    if math.isinf(value):
        return 'not completed'
    return f'{value:.{digits}f}'


def measurement_section(data: Mapping[str, Any]) -> str:
    """The lab's recording and its analysis, in Markdown."""
    a = data['analysis']
    fit, every = a['fit'], a['all_runs_fit']
    loop = a.get('loop') or {}
    lines = [
        f"Recorded by `{data['command']}` ({data['elapsed_s']:.0f} s holding the lab "
        f"lock; link {data['link_mb_s']:.1f} MB/s):",
        '',
        '| run | role | guest MiB | setup_time ms |',
        '|---|---|---|---|']
    for i, e in enumerate(a['estimates'], 1):
        lines.append(f"| {i} | {e['role']} | {e['memory_gib'] * 1024:.0f} | "
                     f"{e['overhead_s'] * 1000:.0f} |")
    residual = every.get('per_gib_residual_se_s')
    lines += [
        '',
        f"Fit on the two `fit` runs: {fit['per_gib_s'] * 1000:+.2f} ms/GiB (standard "
        f"error {fit['per_gib_se_s'] * 1000:.2f} ms/GiB from the 1 ms resolution "
        f"alone), fixed part {fit['base_s'] * 1000:.1f} ms. Held out:",
        '',
        '| guest MiB | measured ms | predicted ms | miss ms | miss / resolution error |',
        '|---|---|---|---|---|']
    for c in a['check']:
        lines.append(f"| {c['memory_gib'] * 1024:.0f} | {c['measured_ms']:.0f} | "
                     f"{c['predicted_ms']:.2f} | {c['miss_ms']:+.2f} | "
                     f"{_fmt(c['z'], 1)} |")
    lines += [
        '',
        f"Over all {len(a['estimates'])} runs: {every['per_gib_s'] * 1000:+.2f} ms/GiB"
        + ('' if residual is None else
           f" (standard error from the scatter {residual * 1000:.2f} ms/GiB)")
        + '. Upper bound (the largest setup reading of the largest guest, plus half '
        f"a millisecond, over its memory): **{a['upper_bound_per_gib_s'] * 1000:.2f} "
        "ms/GiB**.",
        '']
    if loop.get('unusable'):
        lines += ['The sync-loop estimate had no usable run: '
                  + '; '.join(loop['unusable']) + '.', '']
    return '\n'.join(lines).rstrip('\n')


def readme_section(data: Mapping[str, Any], table: Sequence[Mapping[str, Any]],
                   labels: Mapping[float, str]) -> str:
    """The measurement and the sensitivity table saved with it."""
    lines = [measurement_section(data), '']
    lines += [
        'The simulator\'s sensitivity policies on the `steady` and `huge` families '
        '(120 workloads each value; runs that did not complete counted as infinitely '
        'slow):',
        '',
        '| sync per GiB | value | policy | completed | within SLO | median time ratio | '
        'median work lost s | p90 work lost s |',
        '|---|---|---|---|---|---|---|---|']
    for t in table:
        v = t['sync_per_gib_s']
        lines.append(
            f"| {v * 1000:.3g} ms | {labels.get(v, '')} | {t['policy']} | "
            f"{t['completed']}/{t['runs']} | {t['within_slo']}/{t['runs']} | "
            f"{_fmt(t['median_time_ratio'], 2)} | {_fmt(t['median_work_lost_s'], 3)} | "
            f"{_fmt(t['p90_work_lost_s'], 2)} |")
    return '\n'.join(lines)


def write_readme() -> int:
    """Print the section again from ``sync-cost.json`` (no simulation)."""
    data = load()
    if data is None or 'sensitivity' not in data:
        print('benchmarks.synccost: no sensitivity in sync-cost.json', file=sys.stderr)
        return 1
    values = [(label, float(v)) for label, v in data['sensitivity']['values']]
    table = [{k: (math.inf if x is None and k.startswith(('median', 'p90')) else x)
              for k, x in t.items()} for t in data['sensitivity']['table']]
    print(readme_section(data, table, {v: label for label, v in values}))
    return 0


def run_sensitivity(processes: int) -> int:
    data = load()
    if data is None or 'analysis' not in data:
        print('benchmarks.synccost: no analysed sync-cost.json; run the lab part first',
              file=sys.stderr)
        return 1
    values = sensitivity_values(data['analysis'])
    started = time.monotonic()
    table = sensitivity([v for _, v in values], processes)
    clean = [{k: (None if isinstance(x, float) and math.isinf(x) else x)
              for k, x in t.items()} for t in table]
    data['sensitivity'] = {'values': [[label, v] for label, v in values],
                           'elapsed_s': round(time.monotonic() - started, 1),
                           'table': clean}
    with open(RESULTS, 'w') as f:
        json.dump(data, f, separators=(',', ':'))
        f.write('\n')
    print(readme_section(data, table, {v: label for label, v in values}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.synccost')
    parser.add_argument('what', choices=('lab', 'analyse', 'sensitivity', 'readme'))
    parser.add_argument('--output', default=RESULTS)
    parser.add_argument('--processes', type=int, default=2)
    args = parser.parse_args(argv)
    if args.what == 'lab':
        return record(args.output)
    if args.what == 'sensitivity':
        return run_sensitivity(args.processes)
    if args.what == 'readme':
        return write_readme()
    data = load(args.output)
    if data is None:
        print(f'benchmarks.synccost: no {args.output}', file=sys.stderr)
        return 1
    data['analysis'] = analyse(data['runs'], float(data['link_mb_s']) * MB)
    with open(args.output, 'w') as f:
        json.dump(data, f, separators=(',', ':'))
        f.write('\n')
    print(json.dumps(data['analysis'], indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
