"""Run every policy on every workload and host drain; write the results.

    .venv/bin/python -m benchmarks.run            # everything, 2 processes
    .venv/bin/python -m benchmarks.run --quick    # a few workloads, seconds

Writes ``benchmarks/results.json`` (every run), ``benchmarks/results.md``
(every table and figure, "Where ours loses and why" included),
``benchmarks/pareto.png`` (total time against guest work lost, one panel
per workload family) and ``benchmarks/drains.png``.  ``README.md`` copies
no number from them; it links to ``results.md``.  Nothing here feeds a
default of the extension: the numbers describe the policies as they are.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import calibration
from benchmarks import drain
from benchmarks import metrics
from benchmarks import policies
from benchmarks import simulator as sim
from benchmarks import synccost
from benchmarks import variants
from benchmarks import workloads
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence import upstream

HERE = os.path.dirname(os.path.abspath(__file__))
# A migration still running after this long is unfinished (neither
# completed nor aborted).
HORIZON_S = 4 * 3600.0
# Polls no finer than this share of the lower bound (a 1 TiB pass lasts
# many minutes; polling it twice a second only costs time).  Nova polls at
# its own 0.5 s (policies.NovaMonitor).
POLLS_PER_BULK_PASS = 400
MAX_POLL_S = 5.0
QUICK_PER_FAMILY = 3
QUICK_DRAINS = ((3, 10),)
# Ours is compared head to head with these.
RIVALS = ('nova34', 'nova34-postcopy', 'kubevirt', 'ovirt-minimal-downtime',
          'proxmox')
LARGEST_LOSSES = 15


def poll_s_for(policy: policies.Policy, workload: sim.Workload) -> float:
    return max(policy.poll_for(workload),
               min(MAX_POLL_S,
                   metrics.lower_bound_s(workload) / POLLS_PER_BULK_PASS))


def run_case(policy: policies.Policy, case: workloads.Case
             ) -> dict[str, Any]:
    workload = case.workload
    poll = poll_s_for(policy, workload)
    migration = sim.Migration(workload, policy.settings(workload))
    result = sim.drive(migration, policy.decider(workload, poll), poll,
                       HORIZON_S)
    return {'policy': policy.name, 'case': case.key, 'family': case.family,
            **metrics.run_metrics(workload, result),
            'actions': _some(result.actions)}


def _some(actions: Sequence[str], keep: int = 4) -> list[str]:
    """The first and the last few actions of a run."""
    if len(actions) <= 2 * keep:
        return list(actions)
    return [*actions[:keep], f'... {len(actions) - 2 * keep} more',
            *actions[-keep:]]


def _job(args: tuple[str, str, str, Any]) -> tuple[str, dict[str, Any]]:
    kind, variant_key, name, case = args
    if kind == 'drain':
        return kind, drain.run_drain(policies.by_name(name), case)
    if kind == 'variant':
        v = variants.by_key(variant_key)
        changed = workloads.Case(case.key, case.family, case.link_gbit_s,
                                 v.workload(case.workload))
        return kind, {**run_case(v.policy(name), changed),
                      'variant': variant_key}
    return kind, run_case(policies.by_name(name), case)


def run_all(case_list: Sequence[workloads.Case],
            seed_list: Sequence[workloads.Case],
            drain_list: Sequence[workloads.DrainCase], processes: int
            ) -> dict[str, list[dict[str, Any]]]:
    jobs: list[tuple[str, str, str, Any]] = [
        ('drain', '', p.name, d) for d in drain_list
        for p in policies.POLICIES]
    jobs += [('case', '', p.name, c) for c in case_list
             for p in policies.POLICIES]
    jobs += [('seed', '', p.name, c) for c in seed_list
             for p in policies.POLICIES]
    jobs += [('variant', key, name, c)
             for key, name, c in variants.jobs(case_list)]
    if processes <= 1:
        done = [_job(j) for j in jobs]
    else:
        with multiprocessing.Pool(processes) as pool:
            done = list(pool.imap_unordered(_job, jobs, chunksize=2))
    out: dict[str, list[dict[str, Any]]] = {
        'case': [], 'seed': [], 'variant': [], 'drain': []}
    for kind, row in done:
        out[kind].append(row)
    for kind in ('case', 'seed', 'variant'):
        out[kind].sort(key=lambda r: (r.get('variant', ''), r['case'],
                                      r['policy']))
    out['drain'].sort(key=lambda r: (r['drain'], r['policy']))
    return out


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------

def by_policy(rows: Iterable[dict[str, Any]]
              ) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r['policy'], {})[r['case']] = r
    return out


def summaries(rows: Sequence[dict[str, Any]], families: Sequence[str]
              ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in policies.POLICIES:
        mine = [r for r in rows if r['policy'] == p.name]
        out[p.name] = {'all': metrics.summarise(mine)}
        for family in families:
            out[p.name][family] = metrics.summarise(
                [r for r in mine if r['family'] == family])
    return out


def best_work_lost(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per workload, the least guest work lost by any completed run."""
    best: dict[str, float] = {}
    for r in rows:
        if r['completed']:
            best[r['case']] = min(best.get(r['case'], math.inf),
                                  r['work_lost_s'])
    return best


def comparisons(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    table = by_policy(rows)
    out: dict[str, Any] = {}
    for ours in ('ours', 'ours-postcopy'):
        for rival in RIVALS:
            out[f'{ours} vs {rival}'] = metrics.head_to_head(
                table[ours], table[rival])
    out['ours same as qemu-autoconverge'] = same_runs(
        table['ours'], table['qemu-autoconverge'])
    return out


def same_runs(mine: dict[str, dict[str, Any]],
              theirs: dict[str, dict[str, Any]],
              tolerance: float = 0.01) -> dict[str, int]:
    """Workloads where two policies end the same way (within 1 %)."""
    def close(a: float, b: float) -> bool:
        return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-3)
    same = sum(1 for k, a in mine.items() if k in theirs
               and a['outcome'] == theirs[k]['outcome']
               and close(a['total_s'], theirs[k]['total_s'])
               and close(a['work_lost_s'], theirs[k]['work_lost_s']))
    return {'runs': len(mine), 'same': same}


def variant_rows(rows: Sequence[dict[str, Any]],
                 changed: Sequence[dict[str, Any]],
                 variant: variants.Variant,
                 case_list: Sequence[workloads.Case]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per policy and workload, the run under ``variant``: its own run
    where it can change one, the main grid's where it cannot."""
    base = by_policy(rows)
    mine = by_policy(r for r in changed if r['variant'] == variant.key)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in variant.policy_names:
        out[name] = {c.key: mine.get(name, {}).get(c.key)
                     or base[name][c.key]
                     for c in case_list if variant.applies_to(c)}
    return out


def sensitivity(rows: Sequence[dict[str, Any]],
                changed: Sequence[dict[str, Any]],
                case_list: Sequence[workloads.Case]) -> list[dict[str, Any]]:
    """Every variant and the main grid on the same question, summarised."""
    base = by_policy(rows)
    out: list[dict[str, Any]] = []
    groups: dict[str, list[variants.Variant]] = {}
    for v in variants.all_variants():
        groups.setdefault(v.group, []).append(v)
    for group, members in groups.items():
        first = members[0]
        cases = [c for c in case_list if first.applies_to(c)]
        entries: list[tuple[str, float | None, dict[str, Any]]] = [
            (variants.base_label(group), None,
             {n: {c.key: base[n][c.key] for c in cases}
              for n in first.policy_names})]
        entries += [(v.label, v.value,
                     variant_rows(rows, changed, v, case_list))
                    for v in members]
        for label, value, table in entries:
            for name in first.policy_names:
                runs = list(table[name].values())
                item = {'group': group, 'label': label, 'value': value,
                        'policy': name, 'changed_runs': sum(
                            1 for r in runs if 'variant' in r),
                        **metrics.summarise(runs)}
                if group == variants.STREAM and name != 'kubevirt':
                    h = metrics.head_to_head(table[name], table['kubevirt'])
                    item['vs_kubevirt'] = {
                        k: h[k] for k in ('both_completed', 'slower_5pct',
                                          'faster_5pct',
                                          'only_ours_completed',
                                          'only_theirs_completed')}
                out.append(item)
    return out


def timeout_changes(rows: Sequence[dict[str, Any]],
                    changed: Sequence[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Each workload a lower completion_timeout_max_s changes."""
    base = by_policy(rows)
    out = []
    for r in changed:
        if not r['variant'].startswith(variants.TIMEOUT):
            continue
        b = base[r['policy']][r['case']]
        if (b['outcome'], b['total_s'], b['work_lost_s']) == (
                r['outcome'], r['total_s'], r['work_lost_s']):
            continue
        out.append({'variant': r['variant'], 'policy': r['policy'],
                    'case': r['case'], 'outcome': (b['outcome'],
                                                   r['outcome']),
                    'total_s': (b['total_s'], r['total_s']),
                    'work_lost_s': (b['work_lost_s'], r['work_lost_s'])})
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _f(value: float | None, digits: int = 2, unit: str = '') -> str:
    if value is None:
        return '-'
    if math.isinf(value):
        return 'not completed'
    return f'{value:.{digits}f}{unit}'


def _pct(part: int, whole: int) -> str:
    return f'{part}/{whole} ({part / whole:.0%})' if whole else '-'


def policy_table(summary: dict[str, dict[str, Any]], scope: str
                 ) -> list[str]:
    lines = [
        '| policy | tier | completed | aborted | unfinished at the horizon '
        '| within SLO | median time ratio | p90 time ratio | median work '
        'lost s | p90 work lost s | p90 longest stop s | max longest stop '
        's | post-copy runs (max s) | median sent ratio |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for p in policies.POLICIES:
        s = summary[p.name][scope]
        lines.append(
            f"| {p.name} | {p.tier} | {_pct(s['completed'], s['runs'])} | "
            f"{s['aborted']} | {s['unfinished']} | "
            f"{_pct(s['within_slo'], s['runs'])} | "
            f"{_f(s['median_time_ratio'])} | {_f(s['p90_time_ratio'])} | "
            f"{_f(s['median_work_lost_s'], 3)} | "
            f"{_f(s['p90_work_lost_s'], 2)} | "
            f"{_f(s['p90_longest_pause_s'], 2)} | "
            f"{_f(s['max_longest_pause_s'], 1)} | "
            f"{s['postcopy_runs']} ({_f(s['max_postcopy_s'], 0)}) | "
            f"{_f(s['median_sent_ratio'])} |")
    return lines


def drain_table(drains: Sequence[dict[str, Any]]) -> list[str]:
    keys = sorted({d['drain'] for d in drains},
                  key=lambda k: (float(k.split('/')[2][:-4]),
                                 int(k.split('/')[1][:-1])))
    lines = ['| policy (at once) | ' + ' | '.join(keys) + ' |',
             '|---|' + '---|' * len(keys)]
    cell = {(d['policy'], d['drain']): d for d in drains}
    for p in policies.POLICIES:
        parts = []
        for k in keys:
            d = cell[(p.name, k)]
            if d['host_empty_s'] is None:
                left = [f"{d['guests_aborted']} aborted"]
                if d['guests_unfinished']:
                    left.append(f"{d['guests_unfinished']} unfinished at "
                                'the horizon')
                parts.append(f"not empty ({', '.join(left)})")
            else:
                parts.append(f"{d['host_empty_s']:.0f} s (x"
                             f"{d['empty_ratio']:.1f}, lost "
                             f"{d['work_lost_s']:.0f} s)")
        lines.append(f'| {p.name} ({p.host_concurrency}) | '
                     + ' | '.join(parts) + ' |')
    lower = {d['drain']: d['lower_bound_s'] for d in drains}
    lines.append('| lower bound | ' + ' | '.join(
        f'{lower[k]:.0f} s' for k in keys) + ' |')
    return lines


def compare_table(comp: dict[str, Any]) -> list[str]:
    lines = ['| ours vs | both completed | ours loses more work | ours '
             'loses less | max extra s | max saved s | only ours completed '
             '(theirs aborted / unfinished at the horizon) | only theirs '
             'completed (ours aborted / unfinished) | ours >5 % slower | '
             'ours >5 % faster |', '|---|---|---|---|---|---|---|---|---|---|']
    for key, c in comp.items():
        if 'worse' not in c:
            continue
        lines.append(
            f"| {key} | {c['both_completed']} | {len(c['worse'])} | "
            f"{len(c['better'])} | {c['max_extra_s']:.2f} | "
            f"{c['max_saved_s']:.2f} | {c['only_ours_completed']} "
            f"({c['only_ours_theirs_aborted']} / "
            f"{c['only_ours_theirs_unfinished']}) | "
            f"{c['only_theirs_completed']} "
            f"({c['only_theirs_ours_aborted']} / "
            f"{c['only_theirs_ours_unfinished']}) | {c['slower_5pct']} | "
            f"{c['faster_5pct']} |")
    return lines


def seed_table(seed_rows: Sequence[dict[str, Any]]) -> list[str]:
    order = {p.name: i for i, p in enumerate(policies.POLICIES)}
    rows = sorted(seed_rows, key=lambda r: (
        float(r['case'].rsplit('/x', 1)[1]), order[r['policy']]))
    link = workloads.link_bytes_s(workloads.SEED_LINK_GBIT_S)
    lines = ['| write rate (x link, MB/s) | policy | outcome | total s | '
             'x lower bound | longest stop s | work lost s (downtime + '
             'post-copy stall + throttle) | max throttle % |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        fraction = float(r['case'].rsplit('/x', 1)[1])
        downtime = (r['downtime_ms'] or 0.0) / 1000.0
        lines.append(
            f"| x{fraction:g} ({fraction * link / 1e6:.0f}) | {r['policy']} "
            f"| {_outcome(r['outcome'])} | {r['total_s']:.0f} | "
            f"{_f(r['time_ratio'])} | {r['longest_pause_s']:.2f} | "
            f"{r['work_lost_s']:.2f} ({downtime:.2f} + "
            f"{r['postcopy_stall_s']:.2f} + {r['throttle_lost_s']:.2f}) | "
            f"{r['max_throttle_pct']} |")
    return lines


def _outcome(outcome: str) -> str:
    return ('unfinished at the horizon' if outcome == metrics.UNFINISHED
            else outcome)


def sensitivity_table(table: Sequence[dict[str, Any]], group: str,
                      stops: bool = False) -> list[str]:
    mine = [t for t in table if t['group'] == group]
    stream = group == variants.STREAM
    head = ('| value | policy | runs re-run | completed | aborted | '
            'unfinished at the horizon | within SLO | median time ratio | '
            'median work lost s | p90 work lost s | max work lost s '
            '(completed runs / all) |')
    rule = '|---|---|---|---|---|---|---|---|---|---|---|'
    if stops:
        head += ' p90 longest stop s | max longest stop s |'
        rule += '---|---|'
    if stream:
        head += (' vs KubeVirt: both completed / ours >5 % slower / ours '
                 '>5 % faster / only ours / only KubeVirt |')
        rule += '---|'
    lines = [head, rule]
    for t in mine:
        line = (f"| {t['label']} | {t['policy']} | {t['changed_runs']} | "
                f"{_pct(t['completed'], t['runs'])} | {t['aborted']} | "
                f"{t['unfinished']} | {_pct(t['within_slo'], t['runs'])} | "
                f"{_f(t['median_time_ratio'])} | "
                f"{_f(t['median_work_lost_s'], 3)} | "
                f"{_f(t['p90_work_lost_s'])} | "
                f"{_f(t['max_work_lost_completed_s'])} / "
                f"{_f(t['max_work_lost_s'])} |")
        if stream:
            h = t.get('vs_kubevirt')
            line += (' - |' if h is None else
                     f" {h['both_completed']} / {h['slower_5pct']} / "
                     f"{h['faster_5pct']} / {h['only_ours_completed']} / "
                     f"{h['only_theirs_completed']} |")
        if stops:
            line += (f" {_f(t['p90_longest_pause_s'])} | "
                     f"{_f(t['max_longest_pause_s'])} |")
        lines.append(line)
    return lines


def _dominant(worse: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = {'throttle': 0, 'downtime': 0, 'post-copy stall': 0}
    for w in worse:
        parts = {'throttle': w['throttle_s'], 'downtime': w['downtime_s'],
                 'post-copy stall': w['stall_s']}
        counts[max(parts, key=lambda k: parts[k])] += 1
    return counts


def _find(table: Sequence[dict[str, Any]], group: str, policy: str,
          value: float | None) -> dict[str, Any] | None:
    for t in table:
        if (t['group'], t['policy'], t['value']) == (group, policy, value):
            return t
    return None


def where_we_lose(summary: dict[str, dict[str, Any]],
                  comp: dict[str, Any], drains: Sequence[dict[str, Any]],
                  families: Sequence[str], rows: Sequence[dict[str, Any]],
                  seed_rows: Sequence[dict[str, Any]],
                  sens: Sequence[dict[str, Any]],
                  changes: Sequence[dict[str, Any]],
                  memory_by_case: dict[str, float]) -> str:
    """The "Where ours loses and why" section: counts, then mechanisms,
    each with the numbers of this run."""
    lines = []
    for key in ('ours vs nova34', 'ours-postcopy vs nova34',
                'ours-postcopy vs nova34-postcopy', 'ours vs kubevirt',
                'ours vs ovirt-minimal-downtime', 'ours vs proxmox'):
        c = comp[key]
        worse = c['worse']
        dom = _dominant(worse)
        extra = [w['extra_s'] for w in worse]
        lines.append(
            f"- **{key}** (guest work lost, {c['both_completed']} workloads "
            f"both complete): ours costs the guest more on {len(worse)} "
            f"(median {_f(statistics.median(extra) if extra else None)} s "
            f"extra, at most {c['max_extra_s']:.2f} s) and less on "
            f"{len(c['better'])} (at most {c['max_saved_s']:.2f} s saved). "
            f"Largest part of each loss: throttle {dom['throttle']}, "
            f"downtime {dom['downtime']}, post-copy stall "
            f"{dom['post-copy stall']}. Ours is more than 5 % slower on "
            f"{c['slower_5pct']}. Only ours completes "
            f"{c['only_ours_completed']} (theirs aborted "
            f"{c['only_ours_theirs_aborted']}, unfinished at the horizon "
            f"{c['only_ours_theirs_unfinished']}); only theirs "
            f"{c['only_theirs_completed']} (ours aborted "
            f"{c['only_theirs_ours_aborted']}, unfinished "
            f"{c['only_theirs_ours_unfinished']}).")
    peers = [p.name for p in policies.POLICIES
             if p.tier in (policies.TIER_DEFAULT, policies.TIER_CAPABLE)]
    for ours in ('ours', 'ours-postcopy'):
        lagging = []
        for family in families:
            mine = summary[ours][family]['within_slo']
            best_name = max(peers,
                            key=lambda n: summary[n][family]['within_slo'])
            best = summary[best_name][family]['within_slo']
            if best > mine:
                lagging.append(f'{family} {mine} vs {best} ({best_name})')
        if lagging:
            lines.append(f'- **{ours}, workloads completed within the SLO, '
                         f'where a peer completes more** (of '
                         f"{summary[ours][families[0]]['runs']} per family):"
                         f' ' + '; '.join(lagging) + '.')
    same = comp.get('ours same as qemu-autoconverge')
    if same:
        lines.append(
            f"- **ours as shipped against QEMU's auto-converge alone**: the "
            f"same outcome, total time and guest work lost (within 1 %) on "
            f"{same['same']} of {same['runs']} workloads; the controller "
            f"changes the result on the other {same['runs'] - same['same']}.")
    for d in (d for d in drains if d['policy'] == 'ours'):
        others = [o for o in drains if o['drain'] == d['drain']
                  and o['policy'] in peers and o['host_empty_s'] is not None]
        if not others:
            continue
        fastest = min(others, key=lambda o: o['host_empty_s'])
        mine_s = ('never (guests left behind)' if d['host_empty_s'] is None
                  else f"{d['host_empty_s']:.0f} s")
        if d['host_empty_s'] is None or (
                d['host_empty_s'] > 1.05 * fastest['host_empty_s']):
            lines.append(
                f"- **{d['drain']}**: ours empties the host in {mine_s}, "
                f"{fastest['policy']} in {fastest['host_empty_s']:.0f} s "
                f"({fastest['concurrency']} at once, ours 1).")
    lines += _nova_not_completed(rows, memory_by_case)
    lines += _seed_losses(seed_rows)
    lines += ['', 'Why, from the mechanisms (with this run\'s numbers):', '']
    lines += _why(rows, comp, sens, changes)
    return '\n'.join(lines)


def _nova_not_completed(rows: Sequence[dict[str, Any]],
                        memory_by_case: dict[str, float]) -> list[str]:
    """How Nova's runs that did not complete ended, and why."""
    out = []
    for name in ('nova34', 'nova34-postcopy'):
        mine = [r for r in rows if r['policy'] == name
                and not r['completed']]
        unfinished = [r for r in mine if r['outcome'] == metrics.UNFINISHED]
        if not mine:
            continue
        late = 0
        for r in unfinished:
            config = upstream.UpstreamConfig(data_gib=upstream.nova_data_gib(
                memory_by_case[r['case']] / sim.MIB))
            if upstream.completion_timeout_s(config) >= HORIZON_S:
                late += 1
        per_gib = upstream.UpstreamConfig(data_gib=1).completion_timeout_s
        then = 'post-copy' if name.endswith('postcopy') else 'abort'
        out.append(
            f"- **{name} did not complete {len(mine)}**: aborted "
            f"{len(mine) - len(unfinished)}, unfinished at the horizon "
            f"{len(unfinished)} (still copying after "
            f"{HORIZON_S / 3600:.0f} h, not aborted). For {late} of the "
            f"unfinished, Nova's completion timeout ({per_gib} s per GiB, "
            f"then {then}) falls after the horizon (data above "
            f"{HORIZON_S / per_gib:.0f} GiB): Nova had not acted yet.")
    return out


def _seed_losses(seed_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Where ours is not the best on the seed's own case."""
    table = by_policy(seed_rows)
    out = []
    for key in sorted(table['ours'], key=lambda k: float(
            k.rsplit('/x', 1)[1])):
        ours = table['ours'][key]
        done = {n: t[key] for n, t in table.items()
                if t[key]['completed'] and n != 'ours'
                and n not in ('paused-copy',)}
        if not done:
            continue
        best_lost = min(done.values(), key=lambda r: r['work_lost_s'])
        best_stop = min(done.values(), key=lambda r: r['longest_pause_s'])
        notes = []
        if not ours['completed']:
            notes.append(f"ours {_outcome(ours['outcome'])}")
        else:
            if ours['work_lost_s'] > best_lost['work_lost_s'] + 0.01:
                notes.append(f"work lost {ours['work_lost_s']:.2f} s, "
                             f"{best_lost['policy']} "
                             f"{best_lost['work_lost_s']:.2f} s")
            if ours['longest_pause_s'] > best_stop['longest_pause_s'] + 0.01:
                notes.append(f"longest stop {ours['longest_pause_s']:.2f} "
                             f"s, {best_stop['policy']} "
                             f"{best_stop['longest_pause_s']:.2f} s")
        if notes:
            fraction = key.rsplit('/x', 1)[1]
            out.append(f'  - x{fraction} the link: ' + '; '.join(notes)
                       + '.')
    if not out:
        return []
    return ['- **The seed\'s case (32 GiB over 1 Gbit/s), where ours is not '
            'the best of the live policies that complete**:'] + out


def _why(rows: Sequence[dict[str, Any]], comp: dict[str, Any],
         sens: Sequence[dict[str, Any]],
         changes: Sequence[dict[str, Any]]) -> list[str]:
    table = by_policy(rows)
    ours = table['ours']
    nova = table['nova34']
    both = [k for k in ours if ours[k]['completed'] and nova[k]['completed']]
    lower_dt = sum(1 for k in both if (nova[k]['downtime_ms'] or 0)
                   < (ours[k]['downtime_ms'] or 0) - 10)
    throttled = [r for r in ours.values() if r['max_throttle_pct'] > 0]
    at99 = [r for r in ours.values()
            if r['max_throttle_pct'] >= guest.MAX_THROTTLE_PCT]
    stop99 = guest.throttle_stop_s(guest.MAX_THROTTLE_PCT)
    pc = table['ours-postcopy']
    stalls = sorted((r['postcopy_stall_s'] for r in pc.values()
                     if r['postcopy_s'] > 0), reverse=True)
    worst_lost = max(ours.values(), key=lambda r: r['work_lost_s'])
    steps = upstream.downtime_steps(upstream.UpstreamConfig(data_gib=1))
    shipped = policies.shipped_policy()
    out = [
        f"- Downtime against Nova 34: Nova sets {steps[0][1]} ms at its "
        f"first {policies.NOVA_POLL_S:g} s poll and raises it by "
        f"{steps[1][1] - steps[0][1]} ms every {steps[1][0]} s per GiB, so "
        f"a converging "
        f"guest switches over with a small remainder after more passes; "
        f"ours starts at {shipped.initial_downtime_ms} ms and switches as "
        f"soon as the "
        f"remainder fits. On {lower_dt} of the {len(both)} workloads both "
        f"complete Nova's downtime is lower by more than 10 ms.",
        f"- Throttle: the shipped policy arms auto-converge at the start of "
        f"every job (QEMU only accepts it as a start flag), so QEMU "
        f"throttles any guest that dirties more than half of what a pass "
        f"sends, including guests a downtime raise alone would have "
        f"finished; the controller cannot switch the throttle off. "
        f"{len(throttled)} of ours' {len(ours)} runs were throttled, "
        f"{len(at99)} up to {guest.MAX_THROTTLE_PCT} %, where QEMU stops "
        f"each vCPU for {stop99:.2f} s at a time (a task needing more than "
        f"one 10 ms slice waits longer): their longest stop is at least "
        f"that, whatever the downtime. A CPU-bound writer loses every "
        f"throttled second.",
        f"- Post-copy: the stall is charged from the pages the guest "
        f"touches during post-copy (its writes over the whole phase, on "
        f"the part of its working set still remote). {len(stalls)} runs "
        f"of ours-postcopy switched; the longest stalls "
        f"{', '.join(f'{s:.1f}' for s in stalls[:5])} s. A guest whose "
        f"working set is hot can pay more than the stop-and-copy a peer "
        f"reaches by raising the downtime past our "
        f"{shipped.max_downtime_ms} ms ceiling (Proxmox doubles without "
        f"bound, oVirt's \"Suspend workload\" goes to "
        f"{policies.OVIRT_SUSPEND_WORKLOAD[-2][2] / 1000:g} s).",
        f"- One stream, one migration at a time: ours keeps nova-compute's "
        f"max_concurrent_live_migrations = 1 and parallel_connections = 1. "
        f"Where the link carries more than one stream moves, KubeVirt's 8 "
        f"multifd channels finish sooner: ours is more than 5 % slower on "
        f"{comp['ours vs kubevirt']['slower_5pct']} workloads at the "
        f"grid's {workloads.STREAM_LIMIT_BYTES_S / 1e9:g} GB/s per stream, "
        + ', '.join(
            f"{t['vs_kubevirt']['slower_5pct']} at {t['label']}"
            for t in sens if t['group'] == variants.STREAM
            and t['policy'] == 'ours' and t['value'] is not None)
        + ' (the per-stream table below).',
        f"- The deadline's cap: completion_timeout_max_s (shipped "
        f"{policies.shipped_policy().completion_timeout_max_s} s) equals "
        f"the benchmark's horizon, so the biggest guests on slow links run "
        f"to it. Ours' largest work lost is "
        f"{worst_lost['work_lost_s']:.0f} s ({worst_lost['case']}, "
        f"{_outcome(worst_lost['outcome'])}); "
        + _timeout_sentence(sens, changes),
        '- Huge guests depend on the assumed bitmap sync cost per GiB: see '
        'the sync-cost table below.',
    ]
    return out


def _timeout_sentence(sens: Sequence[dict[str, Any]],
                      changes: Sequence[dict[str, Any]]) -> str:
    parts = []
    for value in variants.TIMEOUT_VALUES_S:
        base = _find(sens, variants.TIMEOUT, 'ours', None)
        low = _find(sens, variants.TIMEOUT, 'ours', float(value))
        if base is None or low is None:
            continue
        n = sum(1 for c in changes if c['policy'] == 'ours'
                and c['variant'] == f'{variants.TIMEOUT}={float(value):g}')
        parts.append(
            f"at {value} s ours would complete {low['completed']} instead "
            f"of {base['completed']}, and the largest work lost of a "
            f"completed run would be "
            f"{_f(low['max_work_lost_completed_s'], 0)} s instead of "
            f"{_f(base['max_work_lost_completed_s'], 0)} s (counting the "
            f"runs it aborts, which keep the throttle they paid, "
            f"{_f(low['max_work_lost_s'], 0)} s instead of "
            f"{_f(base['max_work_lost_s'], 0)} s); {n} workloads change; "
            f"the default is not changed")
    return ('; '.join(parts) or 'no lower cap was run') + '.'


def parameters_table(meta: dict[str, Any]) -> list[str]:
    """The assumptions every number above rests on."""
    shipped = policies.shipped_policy()
    rows = [
        ('workloads', f"{meta['per_family']} per family, seed "
                      f"{meta['seed']}; drains {meta['drains']}"),
        ('horizon', f'{HORIZON_S:.0f} s per migration, '
                    f'{drain.HORIZON_S:.0f} s per drain'),
        ('link payload', f'{sim.LINK_EFFICIENCY:.0%} of the line rate'),
        ('one migration stream', f'{workloads.STREAM_LIMIT_BYTES_S / 1e9:g} '
                                 'GB/s at most (assumed; swept below)'),
        ('bitmap sync', f'{sim.SYNC_BASE_S * 1000:g} ms + '
                        f'{sim.SYNC_PER_GIB_S * 1000:g} ms/GiB (assumed for '
                        'KVM; swept below)'),
        ('post-copy fault', f'{guest.FAULT_LATENCY_S * 1000:g} ms per page '
                            'touched before it arrives (assumed)'),
        ('throttle stop', f'at p %: p / (100 - p) x '
                          f'{guest.THROTTLE_SLICE_S * 1000:g} ms '
                          f'({guest.throttle_stop_s(99):.2f} s at 99 %)'),
        ('polls', f'Nova {policies.NOVA_POLL_S:g} s; KubeVirt '
                  f'{policies.KUBEVIRT_POLL_S:g} s; VDSM '
                  f'{policies.OVIRT_POLL_S:g} s; Proxmox '
                  f'{policies.PROXMOX_POLL_S:g} s then '
                  f'{policies.PROXMOX_FAST_POLL_S:g} s; ours '
                  f'{shipped.poll_interval_s:g} s; every policy but Nova '
                  f'polls no finer than the lower bound / '
                  f'{POLLS_PER_BULK_PASS}, capped at {MAX_POLL_S:g} s'),
        ('SLO', f'{metrics.SLO_FACTOR:g} x lower bound + '
                f'{metrics.SLO_SLACK_S:.0f} s'),
    ]
    return (['| assumption | value |', '|---|---|']
            + [f'| {k} | {v} |' for k, v in rows])


def policies_table() -> list[str]:
    lines = ['| name | tier | at once per host | modelled from |',
             '|---|---|---|---|']
    for p in policies.POLICIES:
        lines.append(f'| `{p.name}` | {p.tier} | {p.host_concurrency} | '
                     f'{p.source} |')
    return lines


def synccost_section() -> list[str]:
    """The lab's measurement of the per-GiB sync cost, from its file."""
    data = synccost.load()
    if not data or 'analysis' not in data:
        return ['No measurement recorded (`python -m benchmarks.synccost '
                'lab`).']
    return [synccost.measurement_section(data)]


def markdown(meta: dict[str, Any], summary: dict[str, dict[str, Any]],
             comp: dict[str, Any], drains: Sequence[dict[str, Any]],
             families: Sequence[str], lose: str, calib: dict[str, Any],
             sens: Sequence[dict[str, Any]],
             seed_rows: Sequence[dict[str, Any]],
             changes: Sequence[dict[str, Any]]) -> str:
    lines = [
        '# Benchmark results', '',
        f"Generated by `{meta['command']}` in {meta['elapsed_s']:.0f} s "
        f"({meta['processes']} processes): {meta['cases']} workloads x "
        f"{len(policies.POLICIES)} policies, the seed's case at "
        f"{len(workloads.SEED_DIRTY_FRACTIONS)} write rates, "
        f"{meta['variant_runs']} runs of the sensitivity variants and "
        f"{meta['drains']} host drains x {len(policies.POLICIES)} "
        f"policies. Workloads: {meta['per_family']} per family "
        f"({', '.join(families)}), seed {meta['seed']}; see "
        '`benchmarks/workloads.py`.', '',
        'Outcomes: **completed**; **aborted** (the policy gave up, the guest '
        'stayed on the source); **unfinished at the horizon** (still '
        f'copying after {HORIZON_S / 3600:.0f} h, neither completed nor '
        f'aborted; a drain after {drain.HORIZON_S / 3600:.0f} h). Time '
        'ratio = total time / (non-zero memory / link payload rate), the '
        'physical lower bound; runs that did not complete count as '
        'infinitely slow ("not completed" when they reach the median). '
        f'SLO = {metrics.SLO_FACTOR:g} x lower bound + '
        f'{metrics.SLO_SLACK_S:.0f} s. Work lost = downtime + post-copy '
        'fault stall + throttled vCPU time a guest needed (its floor is the '
        f'{metrics.FLOOR_WORK_LOST_S * 1000:.0f} ms switchover). Longest '
        'stop = the longest the guest could not run at all: the downtime, '
        'a post-copy stall, or one stop of the throttle at the highest '
        'throttle it ran under. Sent ratio = bytes sent / non-zero memory.',
        '', '## All workloads', '']
    lines += policy_table(summary, 'all')
    lines += ['', '## Ours head to head (guest work lost where both '
              'complete, total time)', '']
    lines += compare_table(comp)
    lines += ['', '## The seed\'s case: 32 GiB over 1 Gbit/s', '',
              f'{workloads.SEED_MEMORY_GIB} GiB, every page non-zero, over '
              f'{workloads.SEED_LINK_GBIT_S} Gbit/s '
              f'({workloads.link_bytes_s(workloads.SEED_LINK_GBIT_S) / 2**20:.0f}'
              ' MiB/s of pages); a CPU-bound guest sweeping all of its '
              'memory (the planner\'s working set when none is given) at 0 '
              'to 2 x the link. Lower bound '
              f"{seed_rows[0]['lower_bound_s']:.0f} s." if seed_rows
              else 'Not run.', '']
    lines += seed_table(seed_rows)
    lines += ['', '## Where ours loses and why', '', lose, '']
    worst = sorted(comp['ours vs nova34']['worse'],
                   key=lambda w: -w['extra_s'])[:LARGEST_LOSSES]
    if worst:
        lines += ['### The largest extra guest work lost by ours (as '
                  'shipped) against Nova 34', '',
                  '| workload | extra s | of it: downtime s | throttle s | '
                  'post-copy stall s |', '|---|---|---|---|---|']
        lines += [f"| {w['case']} | {w['extra_s']:.2f} | "
                  f"{w['downtime_s']:.2f} | {w['throttle_s']:.2f} | "
                  f"{w['stall_s']:.2f} |" for w in worst]
        lines.append('')
    lines += ['## Sensitivity', '',
              'Each table runs the same workloads with one assumption or '
              'option changed (`benchmarks/variants.py`); "runs re-run" '
              'counts the workloads the change can affect, which are run '
              'again; the others keep their run of the main grid. No '
              'default of the extension is changed by these tables.', '',
              '### What one migration stream moves', '',
              'KubeVirt runs 8 multifd channels, ours and Nova one stream; '
              'the per-stream rate is an assumption (a CPU-bound QEMU '
              'migration thread).', '']
    lines += sensitivity_table(sens, variants.STREAM)
    lines += ['', '### completion_timeout_max_s', '',
              'The shipped cap equals the benchmark\'s horizon. With a lower '
              'cap (not the default):', '']
    lines += sensitivity_table(sens, variants.TIMEOUT)
    if changes:
        lines += ['', '| cap | policy | workload | outcome | total s | '
                  'work lost s |', '|---|---|---|---|---|---|']
        for c in changes:
            lines.append(
                f"| {c['variant'].split('=')[1]} s | {c['policy']} | "
                f"{c['case']} | {_outcome(c['outcome'][0])} -> "
                f"{_outcome(c['outcome'][1])} | {c['total_s'][0]:.0f} -> "
                f"{c['total_s'][1]:.0f} | {c['work_lost_s'][0]:.1f} -> "
                f"{c['work_lost_s'][1]:.1f} |")
    lines += ['', '### The guest\'s stop ceiling', '',
              'With `max_guest_stop_s` set, no rung predicted to stop the '
              'guest longer is entered and the least predicted work lost '
              'wins among the rest; the ladder gains a pause within it (not '
              'the default):', '']
    lines += sensitivity_table(sens, variants.CEILING, stops=True)
    lines += ['', '### Traffic the host does not own', '',
              'From the middle of the first pass on, other traffic takes a '
              'share of the link for the rest of the run (the steady '
              'family; nobody tells the policies). Ours reads a link that '
              'still moves more than 1 % of the rate expected as shared '
              'and plans with what it gets; below that, a network stall '
              'that holds every remedy until the deadline:', '']
    lines += sensitivity_table(sens, variants.CONTENTION, stops=True)
    lines += ['', '### How VDSM counts a stalling iteration', '',
              'VDSM 4.30.14 and later (so every oVirt 4.4 and 4.5) count '
              'libvirt\'s `memory_iteration` since the first 10 s poll (VDSM '
              'commit 077b7817b); VDSM up to 4.30.13 counted a poll whose data '
              'remaining grew since the previous poll. Neither path has a '
              'time limit of its own: `migration_max_time_per_gib_mem` '
              'belonged to the legacy, non-schedule migrations VDSM 4.40 '
              'removed (commit d8ff8959d).', '']
    lines += sensitivity_table(sens, variants.VDSM_COUNT)
    lines += ['', '### The bitmap sync cost per GiB', '',
              'Under KVM the per-GiB sync cost is assumed. The lab measured '
              'QEMU\'s own under TCG (`benchmarks/synccost.py`, '
              '`sync-cost.json`):', '']
    lines += synccost_section()
    lines += ['', f"The {' and '.join(variants.SYNC_FAMILIES)} families at "
              'other costs:', '']
    lines += sensitivity_table(sens, variants.SYNC)
    lines += ['', '## Host drains: time until the host is empty', '',
              'x = time / lower bound (all non-zero memory over the link); '
              'lost = guest work lost summed over the guests.', '']
    lines += drain_table(drains)
    for family in families:
        lines += ['', f'## Family `{family}`', '']
        lines += policy_table(summary, family)
    lines += ['', '## Simulator calibration against the lab traces', '',
              calib['table'], '', calib['note'], '',
              '## Policies', '']
    lines += policies_table()
    lines += ['', '## Assumptions', '']
    lines += parameters_table(meta)
    lines.append('')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------

def _plot_value(value: float | None, cap: float) -> float:
    if value is None or math.isinf(value):
        return cap
    return max(value, 1e-3)


def pareto_chart(summary: dict[str, dict[str, Any]],
                 families: Sequence[str], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = 4
    rows_n = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 4.2 * rows_n),
                             squeeze=False)
    markers = {policies.TIER_DEFAULT: 'o', policies.TIER_CAPABLE: 's',
               policies.TIER_BASELINE: 'x', policies.TIER_OURS: '*'}
    cmap = plt.get_cmap('tab20')
    x_cap, y_cap = 1e3, 1e4
    for index, family in enumerate(families):
        ax = axes[index // cols][index % cols]
        for n, p in enumerate(policies.POLICIES):
            s = summary[p.name][family]
            x = _plot_value(s['median_time_ratio'], x_cap)
            y = _plot_value(s['median_work_lost_s'], y_cap)
            ax.scatter([x], [y], marker=markers[p.tier], color=cmap(n),
                       s=120 if p.tier == policies.TIER_OURS else 45,
                       label=p.name if index == 0 else None)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.axvline(x_cap, color='grey', linestyle=':', linewidth=1)
        ax.set_title(family)
        ax.set_xlabel('median total time / lower bound '
                      '(right edge: not completed)')
        ax.set_ylabel('median guest work lost (s)')
        ax.grid(True, which='both', alpha=0.2)
    for index in range(len(families), rows_n * cols):
        axes[index // cols][index % cols].axis('off')
    fig.legend(loc='lower center', ncol=5, fontsize=8)
    fig.suptitle('Total time against guest work lost, per workload family '
                 '(lower left is better; medians include runs that did not '
                 'complete)')
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def drain_chart(drains: Sequence[dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    keys = sorted({d['drain'] for d in drains})
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(policies.POLICIES)
    cap = max((d['empty_ratio'] or 0) for d in drains) * 1.2 or 1.0
    for n, p in enumerate(policies.POLICIES):
        values = []
        for k in keys:
            d = next(x for x in drains if x['drain'] == k
                     and x['policy'] == p.name)
            values.append(cap if d['empty_ratio'] is None
                          else d['empty_ratio'])
        ax.bar([i + n * width for i in range(len(keys))], values, width,
               label=f'{p.name} ({p.host_concurrency})')
    ax.axhline(cap, color='grey', linestyle=':', linewidth=1)
    ax.set_xticks([i + 0.4 for i in range(len(keys))], keys)
    ax.set_ylabel('time until the host is empty / lower bound '
                  '(top line: never empty)')
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.run')
    parser.add_argument('--quick', action='store_true',
                        help='a few workloads (a smoke test)')
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--output-dir', default=HERE)
    parser.add_argument('--no-chart', action='store_true')
    args = parser.parse_args(argv)
    per_family = QUICK_PER_FAMILY if args.quick else workloads.PER_FAMILY
    families = workloads.FAMILIES
    case_list = workloads.cases(per_family)
    seed_list = workloads.seed_cases()
    drain_list = workloads.drain_cases(
        QUICK_DRAINS if args.quick else workloads.DRAINS)
    started = time.monotonic()
    done = run_all(case_list, seed_list, drain_list, args.processes)
    rows, drains = done['case'], done['drain']
    changed = done['variant']
    sens = sensitivity(rows, changed, case_list)
    changes = timeout_changes(rows, changed)
    elapsed = time.monotonic() - started
    summary = summaries(rows, families)
    comp = comparisons(rows)
    best = best_work_lost(rows)
    for r in rows:
        r['work_lost_vs_best'] = (
            None if r['case'] not in best or not r['completed']
            else round(r['work_lost_s'] / max(best[r['case']],
                                              metrics.FLOOR_WORK_LOST_S), 2))
    calib = calibration.report()
    lose = where_we_lose(summary, comp, drains, families, rows,
                         done['seed'], sens, changes,
                         {c.key: c.workload.memory_bytes for c in case_list})
    meta = {'command': 'python -m benchmarks.run'
            + (' --quick' if args.quick else ''),
            'elapsed_s': elapsed, 'processes': args.processes,
            'cases': len(case_list), 'drains': len(drain_list),
            'variant_runs': len(changed),
            'per_family': per_family, 'seed': workloads.SEED,
            'horizon_s': HORIZON_S, 'drain_horizon_s': drain.HORIZON_S,
            'slo': {'factor': metrics.SLO_FACTOR,
                    'slack_s': metrics.SLO_SLACK_S},
            'stream_limit_bytes_s': workloads.STREAM_LIMIT_BYTES_S,
            'policies': {p.name: {'title': p.title, 'tier': p.tier,
                                  'host_concurrency': p.host_concurrency,
                                  'source': p.source}
                         for p in policies.POLICIES}}
    os.makedirs(args.output_dir, exist_ok=True)
    columns = [k for k in rows[0] if k != 'actions'] + ['actions']

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isinf(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    def table(some: Sequence[dict[str, Any]], extra: Sequence[str] = ()
              ) -> list[list[Any]]:
        return [[r.get(c) for c in [*extra, *columns]] for r in some]

    with open(os.path.join(args.output_dir, 'results.json'), 'w') as f:
        json.dump(clean({'meta': meta, 'summary': summary,
                         'head_to_head': comp, 'drains': drains,
                         'sensitivity': sens,
                         'timeout_changes': changes,
                         'calibration': calib['rows'],
                         'columns': columns,
                         'runs': table(rows),
                         'seed_runs': table(done['seed']),
                         'variant_columns': ['variant', *columns],
                         'variant_runs': table(changed, ('variant',))}),
                  f, sort_keys=True, separators=(',', ':'))
        f.write('\n')
    with open(os.path.join(args.output_dir, 'results.md'), 'w') as f:
        f.write(markdown(meta, summary, comp, drains, families, lose, calib,
                         sens, done['seed'], changes))
    if not args.no_chart:
        pareto_chart(summary, families,
                     os.path.join(args.output_dir, 'pareto.png'))
        drain_chart(drains, os.path.join(args.output_dir, 'drains.png'))
    print(f'{len(rows)} migrations, {len(done["seed"])} of the seed\'s '
          f'case, {len(changed)} variant runs and {len(drains)} drains '
          f'simulated in {elapsed:.0f} s; results in {args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
