"""``nova-livemig-ext plan``: predict a migration before starting it.

.. code-block:: console

   $ nova-livemig-ext plan --memory 32GiB --bandwidth 1Gbit/s
   $ nova-livemig-ext plan --memory 16GiB --bandwidth 10Gbit/s \\
         --dirty-rate 400MB/s --working-set 25% \\
         --config-file /etc/nova/nova.conf
   $ nova-livemig-ext plan --trace tests/traces/non-converging.json

Prints total time, downtime and data sent for a paused copy, pre-copy,
pre-copy with auto-converge and post-copy, then the ladder the controller
would climb under the host's policy (``--config-file``, read as nova-compute
reads it) or the defaults.  Exits 2 on input it cannot read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import stat
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples
from nova_livemig_ext import planner
from nova_livemig_ext import policy as livemig_policy

EXIT_BAD_INPUT = 2
# The largest number a trace holds: libvirt's job statistics are unsigned
# 64-bit counters, and no timestamp comes near.
MAX_TRACE_NUMBER = 2 ** 64
# A day of samples at 2 per second is about 30 MiB.
MAX_TRACE_BYTES = 256 * 1024 * 1024
# Working sets shrinking by less than this per pass count as not shrinking
# (the controller's default min_pass_progress_fraction).
STALLED_SHRINK_FRACTION = 0.05


def link_efficiency(text: str) -> float:
    """``--link-efficiency``: a number in ASCII digits (argparse type)."""
    value = planner.plain_number(text)
    if value is None or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f'{text[:64]!r} is not a number in ASCII digits')
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand to ``nova-livemig-ext``'s parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        'plan', help='predict time, downtime and data sent for a migration '
        'and the ladder the controller would climb (touches nothing)',
        description='Predict a live migration before starting it.')
    p.add_argument('--memory', help='guest memory, e.g. 32GiB or 512MiB')
    p.add_argument('--bandwidth', help='migration link: in bits, e.g. '
                   '1Gbit/s, 10Gb/s or 10Gbps, or in bytes, e.g. 110MiB/s '
                   'or 120MB/s (b is a bit, B a byte)')
    p.add_argument('--dirty-rate', default=None,
                   help='how fast the guest writes memory, e.g. 40MB/s, or '
                   '0 for a guest that writes nothing (default: 0)')
    p.add_argument('--working-set', default=None,
                   help='memory the guest keeps rewriting: a size (4GiB) '
                   'or a share of memory (25%%) (default: all memory)')
    p.add_argument('--downtime-limit', default=None,
                   help='downtime limit, e.g. 300ms or 0.5s (default: the '
                   "policy's initial downtime)")
    p.add_argument('--trace', default=None,
                   help='a recorded trace (tests/traces format): memory, '
                   'bandwidth, dirty rate and working set as measured in it; '
                   'the options above override single values')
    p.add_argument('--link-efficiency', type=link_efficiency,
                   default=planner.DEFAULT_LINK_EFFICIENCY,
                   help='share of a rate given in bits (a line rate) that '
                   'carries migration data (default: %(default)s)')
    p.add_argument('--config-file', action='append', default=[],
                   help='nova.conf for the policy (repeatable; default: the '
                   "extension's defaults)")
    p.add_argument('--json', action='store_true',
                   help='print the predictions as JSON')
    p.set_defaults(func=cmd_plan)
    return p


class InputError(Exception):
    """Input the command cannot use, said in one line."""


# What a real guest and link can be; outside these the arithmetic still runs
# but the answer means nothing (or overflows), so the input is refused.
PLAUSIBLE: dict[str, tuple[float, float, str]] = {
    'memory': (planner.MIB, 1024 * planner.TIB, '1 MiB to 1 PiB'),
    'bandwidth': (1024.0, 1e13, '1 KiB/s to 10 TB/s (80 Tbit/s)'),
    'dirty rate': (0.0, 1e13, '0 to 10 TB/s'),
    'downtime limit': (1.0, 3_600_000.0, '1 ms to 1 h'),
}


def check_plausible(name: str, value: float, given: str | None) -> None:
    """Refuse a quantity no guest or link has; ``given`` is the option text.
    """
    low, high, text = PLAUSIBLE[name]
    if not low <= value <= high:
        shown = repr(given) if given is not None else f'{value:.4g} (measured)'
        raise InputError(f'{name} {shown} is outside what a guest or link '
                         f'can be ({text})')


def parse_downtime_ms(text: str) -> float:
    """'300ms', '0.5s' or '300' (milliseconds) -> ms."""
    stripped = text.strip().lower()
    if stripped.endswith('ms'):
        number, scale = stripped[:-2], 1.0
    elif stripped.endswith('s'):
        number, scale = stripped[:-1], 1000.0
    else:
        number, scale = stripped, 1.0
    value = planner.plain_number(number)
    if value is None:
        raise InputError(f'cannot read downtime limit {text!r}: use 300ms '
                         f'or 0.5s (ASCII digits)')
    value *= scale
    if not math.isfinite(value):
        raise InputError(f'downtime limit {text!r} must be a finite number')
    if value <= 0:
        raise InputError(f'downtime limit {text!r} must be positive')
    return value


def payload_rate_bytes_s(text: str, what: str, efficiency: float) -> float:
    """A rate in bytes/s; a bit rate is a line rate, less framing."""
    rate = planner.parse_rate_bytes_s(text, what)
    if planner.is_bit_rate(text):
        rate *= efficiency
    return rate


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a recorded trace says about the guest and the link."""

    memory_bytes: float
    bandwidth_bytes_s: float
    dirty_rate_bytes_s: float
    working_set_bytes: float
    source: str


def measured_from_trace(trace: Mapping[str, Any], source: str) -> Measured:
    """Feed the recorded samples to the estimator and read its numbers.

    Memory is what the first pass really sent (zero pages cost nothing on
    the wire); the working set is the largest remainder after a sync.
    """
    if not isinstance(trace, Mapping):
        raise InputError(f'{source}: not a trace: expected a JSON object with '
                         f'"trace": [{{"t": ..., "stats": {{...}}}}, ...]')
    entries = trace.get('trace') or trace.get('samples') or []
    if not isinstance(entries, list):
        raise InputError(f'{source}: not a trace: "trace" must be a list')
    est = estimator.Estimate()
    bulk_bytes = 0
    last_s = -math.inf
    for index, entry in enumerate(entries):
        try:
            at_s = float(entry['t'])
            stats = entry['stats']
            if not isinstance(stats, Mapping) or not math.isfinite(at_s):
                raise ValueError('"stats" must be an object, "t" a number')
            sample = samples.sample_from_job_stats(stats)
        except (KeyError, TypeError, ValueError, AttributeError,
                OverflowError) as e:
            raise InputError(f'{source}: sample {index} is not a job-stats '
                             f'sample ({e.__class__.__name__}: {e})') from None
        if at_s < last_s:
            # Read as given, a clock that went back makes the same bytes
            # look sent in less time: a bandwidth far above the link's.
            raise InputError(f'{source}: sample {index} has "t" {at_s:g}, '
                             f'before the {last_s:g} of the sample before '
                             f'it; the times of a trace never decrease')
        last_s = at_s
        if not sample.is_active:
            continue
        if sample.iteration is not None and sample.iteration >= 2 and (
                not bulk_bytes):
            bulk_bytes = sample.memory_processed_bytes
        est = estimator.update_estimate(est, sample, at_s)
    if est.bandwidth_bytes_s is None or not est.memory_total_bytes:
        raise InputError(f'{source}: no running-job samples to measure')
    dirty = est.dirty_rate_bytes_s or 0.0
    # QEMU counts a page once per pass, so a guest rewriting its working
    # set faster than the link carries it reports about the link rate; the
    # working sets that do not shrink tell the truth (the estimator's
    # convergence ratio).
    ratio = estimator.convergence_ratio(est)
    shrink = estimator.observed_shrink_ratio(est)
    if shrink is not None and shrink >= 1 - STALLED_SHRINK_FRACTION:
        ratio = max(ratio or 0.0, 1.0)
    if ratio is not None:
        dirty = max(dirty, ratio * est.bandwidth_bytes_s)
    working_set = est.largest_working_set_bytes or (
        dirty * (bulk_bytes or est.memory_total_bytes)
        / est.bandwidth_bytes_s)
    memory = float(bulk_bytes or est.memory_total_bytes)
    return Measured(memory_bytes=memory,
                    bandwidth_bytes_s=est.bandwidth_bytes_s,
                    dirty_rate_bytes_s=dirty,
                    working_set_bytes=min(float(working_set), memory),
                    source=source)


def load_policy(config_files: list[str]) -> livemig_policy.MigrationPolicy:
    if not config_files:
        return livemig_policy.MigrationPolicy()
    from oslo_config import cfg

    from nova_livemig_ext.cmd import main as cmd_main
    try:
        conf = cmd_main.load_conf(config_files)
        cmd_main.warn_unknown_options(conf, 'nova-livemig-ext plan')
        return livemig_policy.policy_from_conf(conf)
    except cfg.Error as e:
        raise InputError(f'configuration error: {cmd_main.one_line(e)}'
                         ) from None


class TraceNumberError(ValueError):
    """A number in a trace's JSON that no trace holds."""


def _number_text(text: str) -> str:
    if len(text) <= 24:
        return text
    return f'{text[:12]}...{text[-4:]} ({len(text)} characters)'


def _refuse_non_finite(constant: str) -> float:
    raise TraceNumberError(f'{constant} is not a number a trace can hold')


def _finite_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and abs(value) <= MAX_TRACE_NUMBER):
        raise TraceNumberError(
            f'{_number_text(text)} is not a number a trace can hold (at '
            f'most 2**64)')
    return value


def _bounded_int(text: str) -> int:
    # Counted before int() reads it: Python refuses to convert more than
    # 4300 digits, and a float() of a 400-digit int overflows.
    digits = len(text.lstrip('-'))
    if digits > len(str(MAX_TRACE_NUMBER)) or abs(int(text)) > (
            MAX_TRACE_NUMBER):
        raise TraceNumberError(
            f'{_number_text(text)} is not a number a trace can hold (at '
            f'most 2**64)')
    return int(text)


def read_trace(path: str) -> Any:
    """The JSON of a trace file; any reason it cannot be read is one line."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            raise InputError(f'cannot read trace {path}: not a regular file')
        if info.st_size > MAX_TRACE_BYTES:
            raise InputError(f'cannot read trace {path}: {info.st_size} bytes'
                             f' is more than a trace holds (at most '
                             f'{MAX_TRACE_BYTES // planner.MIB} MiB)')
        with open(path, 'rb') as f:
            data = f.read()
        return json.loads(data.decode('utf-8'),
                          parse_constant=_refuse_non_finite,
                          parse_float=_finite_float,
                          parse_int=_bounded_int)
    except IsADirectoryError:
        raise InputError(f'cannot read trace {path}: it is a directory'
                         ) from None
    except OSError as e:
        raise InputError(f'cannot read trace {path}: {e.strerror or e}'
                         ) from None
    except UnicodeDecodeError:
        raise InputError(f'cannot read trace {path}: not UTF-8 text (a '
                         f'binary file?)') from None
    except TraceNumberError as e:
        raise InputError(f'cannot read trace {path}: {e}') from None
    except (ValueError, RecursionError) as e:
        raise InputError(f'cannot read trace {path}: not valid JSON '
                         f'({str(e)[:200]})') from None


def build_scenario(args: argparse.Namespace,
                   policy: livemig_policy.MigrationPolicy
                   ) -> tuple[planner.Scenario, str]:
    """The scenario from the options (and the trace, if any)."""
    efficiency = args.link_efficiency
    if not 0 < efficiency <= 1:
        raise InputError('--link-efficiency must be in (0, 1]')
    measured = None
    if args.trace:
        measured = measured_from_trace(read_trace(args.trace), args.trace)
    if args.memory:
        memory = planner.parse_size_bytes(args.memory, 'memory')
    elif measured:
        memory = measured.memory_bytes
    else:
        raise InputError('--memory is required (or --trace)')
    if args.bandwidth:
        bandwidth = payload_rate_bytes_s(args.bandwidth, 'bandwidth',
                                         efficiency)
    elif measured:
        bandwidth = measured.bandwidth_bytes_s
    else:
        raise InputError('--bandwidth is required (or --trace)')
    if args.dirty_rate is not None:
        dirty = payload_rate_bytes_s(args.dirty_rate, 'dirty rate', 1.0)
    else:
        dirty = measured.dirty_rate_bytes_s if measured else 0.0
    if args.working_set:
        working_set: float | None = planner.parse_working_set_bytes(
            args.working_set, memory)
    else:
        working_set = (min(measured.working_set_bytes, memory)
                       if measured else None)
    limit = (parse_downtime_ms(args.downtime_limit)
             if args.downtime_limit is not None
             else float(policy.initial_downtime_ms))
    for name, value, given in [
            ('memory', memory, args.memory),
            ('bandwidth', bandwidth, args.bandwidth),
            ('dirty rate', dirty, args.dirty_rate),
            ('downtime limit', limit, args.downtime_limit)]:
        check_plausible(name, value, given)
    try:
        scenario = planner.Scenario(
            memory_bytes=memory, bandwidth_bytes_s=bandwidth,
            dirty_rate_bytes_s=dirty, working_set_bytes=working_set,
            downtime_limit_ms=limit)
    except ValueError as e:
        raise InputError(str(e)) from None
    return scenario, (f'measured in {measured.source}' if measured else '')


def _size(value: float | None) -> str:
    if value is None:
        return '-'
    if value >= planner.GIB:
        return f'{value / planner.GIB:.1f} GiB'
    return f'{value / planner.MIB:.0f} MiB'


def _seconds(value: float | None) -> str:
    if value is None:
        return 'never'
    if value >= 3600:
        return f'{value / 3600:.1f} h'
    return f'{value:.1f} s' if value < 100 else f'{value:.0f} s'


def _downtime(value: float | None) -> str:
    if value is None:
        return '-'
    return f'{value:.0f} ms' if value < 1000 else _seconds(value / 1000.0)


def print_plan(out: TextIO, scenario: planner.Scenario,
               predictions: tuple[planner.Prediction, ...],
               ladder: planner.LadderPrediction,
               policy: livemig_policy.MigrationPolicy, source: str) -> None:
    rate_mib_s = scenario.bandwidth_bytes_s / planner.MIB
    print(f'guest: {_size(scenario.memory_bytes)} to send, dirty rate '
          f'{scenario.dirty_rate_bytes_s / planner.MIB:.1f} MiB/s over a '
          f'working set of {_size(scenario.working_set)}'
          + (f' ({source})' if source else ''), file=out)
    print(f'link: {rate_mib_s:.1f} MiB/s of migration data; one pass of '
          f'memory takes {_seconds(scenario.bulk_pass_s)}; dirty ratio '
          f'{scenario.dirty_ratio:.2f}; downtime limit '
          f'{scenario.downtime_limit_ms:.0f} ms', file=out)
    print('', file=out)
    header = (f"{'method':<26} {'total':>9} {'downtime':>10} "
              f"{'data sent':>10} {'passes':>6}  note")
    print(header, file=out)
    print('-' * len(header), file=out)
    for p in predictions:
        print(f'{p.method:<26} {_seconds(p.total_s):>9} '
              f'{_downtime(p.downtime_ms):>10} {_size(p.data_bytes):>10} '
              f"{p.passes if p.passes is not None else '-':>6}  {p.note}",
              file=out)
    print('', file=out)
    print(f"our controller, ladder {','.join(ladder.ladder) or '(none)'}, "
          f'downtime {policy.initial_downtime_ms} to '
          f'{policy.max_downtime_ms} ms, deadline '
          f'{_seconds(ladder.deadline_s)}:', file=out)
    ending = (f'completes in {_seconds(ladder.total_s)} with '
              f'{_downtime(ladder.downtime_ms)} of downtime'
              if ladder.outcome == 'completed' else
              f'{ladder.outcome} after {_seconds(ladder.total_s)}')
    print(f"  rungs reached: {', '.join(ladder.rungs_reached) or 'none'}; "
          f'{ending}', file=out)
    for step in ladder.steps:
        print(f"  at {step.at_s:7.1f} s  {step.rung or '-':<13} "
              f'{step.action:<14} {step.reason}', file=out)


def plan_as_dict(scenario: planner.Scenario,
                 predictions: tuple[planner.Prediction, ...],
                 ladder: planner.LadderPrediction) -> dict[str, Any]:
    return {'scenario': dataclasses.asdict(scenario),
            'predictions': [dataclasses.asdict(p) for p in predictions],
            'controller': dataclasses.asdict(ladder)}


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.config_file)
        scenario, source = build_scenario(args, policy)
    except (InputError, planner.UnitError) as e:
        print(f'nova-livemig-ext plan: error: {" ".join(str(e).split())}',
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except livemig_policy.InvalidPolicy as e:
        from nova_livemig_ext.cmd import main as cmd_main
        print(cmd_main.refusal_line(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    predictions = planner.predict_all(
        scenario, policy.auto_converge_initial_pct,
        policy.auto_converge_increment_pct)
    ladder = planner.predict_ladder(scenario, policy)
    if args.json:
        json.dump(plan_as_dict(scenario, predictions, ladder), sys.stdout,
                  indent=1)
        print()
    else:
        print_plan(sys.stdout, scenario, predictions, ladder, policy, source)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``plan`` on its own (the same as ``nova-livemig-ext plan``)."""
    from nova_livemig_ext.cmd import main as cmd_main
    parser = cmd_main.OneLineErrorParser(prog='nova-livemig-ext')
    sub = parser.add_subparsers(dest='command', required=True)
    register(sub)
    args = parser.parse_args(['plan'] + list(
        sys.argv[1:] if argv is None else argv))
    return int(args.func(args))


if __name__ == '__main__':
    sys.exit(main())
