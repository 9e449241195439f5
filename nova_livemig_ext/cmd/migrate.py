"""``nova-livemig-ext migrate``: one live migration under a policy.

The same flags, controller and monitor nova-compute uses, driven from the
command line between two libvirt URIs, with a live progress display and the
report at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO


from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import policy as livemig_policy
from nova_livemig_ext import postcopy
from nova_livemig_ext import safefile
from nova_livemig_ext import standin
from nova_livemig_ext.convergence import guest as livemig_guest

EXIT_NOT_COMPLETED = 1
EXIT_REFUSED = 2
EXIT_BAD_TARGET = 3
# The migration completed but the --json report could not be written.
EXIT_REPORT_NOT_WRITTEN = 4
MIB = 1024 * 1024
VIR_DOMAIN_PAUSED = 3


class MigrateError(Exception):
    """A problem found before any job started."""

    def __init__(self, message: str, code: int = EXIT_BAD_TARGET) -> None:
        super().__init__(message)
        self.code = code


def _mib(value: float | None) -> str:
    return '-' if value is None else '%.1f' % (value / MIB)


def progress_line(progress: livemig_monitor.Progress) -> str:
    """One line of the live display."""
    est = progress.estimate
    sample = progress.sample
    ratio = '-'
    if est.bandwidth_bytes_s and est.dirty_rate_bytes_s is not None:
        ratio = '%.2f' % (est.dirty_rate_bytes_s / est.bandwidth_bytes_s)
    decision = '; '.join('%s%s' % (d.action.value,
                                   livemig_monitor.decision_argument(d))
                         for d in progress.decisions if d.has_effect)
    return ('%6.1fs  iter %-3s remaining %8s MiB  dirty %7s MiB/s  '
            'bw %7s MiB/s  ratio %5s  throttle %3s%%  %s' % (
                progress.elapsed_s, sample.iteration or '-',
                _mib(sample.memory_remaining_bytes),
                _mib(est.dirty_rate_bytes_s), _mib(est.bandwidth_bytes_s),
                ratio, est.throttle_pct or 0, decision)).rstrip()


def guest_dict(measured: livemig_guest.GuestCost,
               predicted: livemig_guest.GuestCost | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(measured.as_dict())
    out['predicted'] = None if predicted is None else predicted.as_dict()
    return out


def report_dict(report: livemig_monitor.MigrationReport,
                guest: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        'guest': guest,
        'outcome': report.outcome.value,
        'total_s': round(report.total_s, 2),
        'downtime_ms': report.downtime_ms,
        'predicted_downtime_ms': (
            None if report.predicted_downtime_ms is None
            else round(report.predicted_downtime_ms, 1)),
        'iterations': report.iterations,
        'memory_total_bytes': report.memory_total_bytes,
        'memory_sent_bytes': report.memory_sent_bytes,
        'error': report.error,
        'paused_by_monitor': report.paused_by_monitor,
        'switched_to_postcopy': report.switched_to_postcopy,
        'recovery': None if report.recovery is None else {
            'where': report.recovery.where.value,
            'waited_s': round(report.recovery.waited_s, 1),
            'resume_attempts': report.recovery.resume_attempts,
            'resumed': report.recovery.resumed,
            'last_error': report.recovery.last_error,
            'given_back': report.recovery.given_back,
            'give_back_error': report.recovery.give_back_error},
        'source_resumed': report.source_resumed,
        'decisions': [
            {'at_s': a.decision.at_s, 'action': a.decision.action.value,
             'rung': a.decision.rung, 'downtime_ms': a.decision.downtime_ms,
             'speed_mib_s': a.decision.speed_mib_s,
             'reason': a.decision.reason, 'applied': a.applied,
             'error': a.error}
            for a in report.decisions],
    }


def print_report(report: livemig_monitor.MigrationReport,
                 out: TextIO,
                 measured: livemig_guest.GuestCost | None = None,
                 predicted: livemig_guest.GuestCost | None = None) -> None:
    print('outcome:     %s' % report.outcome.value, file=out)
    print('total:       %.1f s' % report.total_s, file=out)
    if measured is not None:
        print('guest:       %s' % measured.text(), file=out)
        if predicted is not None:
            print('  predicted: %s' % predicted.text(), file=out)
    print('downtime:    %s, predicted %s ms' % (
        livemig_monitor.downtime_text(report),
        None if report.predicted_downtime_ms is None
        else round(report.predicted_downtime_ms)), file=out)
    print('iterations:  %s' % report.iterations, file=out)
    print('memory sent: %s MiB of %s MiB' % (
        _mib(report.memory_sent_bytes), _mib(report.memory_total_bytes)),
        file=out)
    for rung, reason in report.rungs_used:
        print('rung %s: %s' % (rung, reason), file=out)
    if report.error:
        print('error:       %s' % report.error, file=out)
    if report.source_resumed:
        print('the guest was resumed on the source', file=out)
    recovery = report.recovery
    if recovery is not None:
        print('post-copy:   %s after %.1f s of trouble, %d resume attempt(s)'
              % (recovery.where.value, recovery.waited_s,
                 recovery.resume_attempts), file=out)
    # The destination never ran the guest: what recover will do about it.
    never_ran = {
        postcopy.Where.DEST_FAILED: (
            'the destination failed before it ran the guest', 'give it back'),
        postcopy.Where.DEST_STUCK: (
            'the destination still shows the guest paused for migration (its '
            'QEMU is stuck loading it)', 'stop the destination\'s QEMU and '
            'give the guest back'),
    }
    if (report.outcome is livemig_monitor.Outcome.NEEDS_RECOVERY
            and recovery is not None and recovery.where in never_ran):
        state, action = never_ran[recovery.where]
        print('%s: the source holds the whole guest, paused%s. Run '
              'nova-livemig-ext recover with the same --from, --to and '
              'options to %s to the source' % (
                  state, '' if recovery.give_back_error is None
                  else ' (giving it back failed: %s)'
                  % recovery.give_back_error, action), file=out)
    elif report.outcome is livemig_monitor.Outcome.NEEDS_RECOVERY:
        print('both halves of the guest were kept: run nova-livemig-ext '
              'recover with the same --from, --to and options once the '
              'migration network works', file=out)


def _open(libvirt: Any, uri: str, role: str) -> Any:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise MigrateError('cannot connect to the %s libvirt at %s: %s'
                           % (role, uri, e.get_error_message()))


def _lookup_running(libvirt: Any, conn: Any, name: str, uri: str) -> Any:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        names = sorted(d.name() for d in conn.listAllDomains())
        raise MigrateError('no domain %r on %s (domains there: %s)' % (
            name, uri, ', '.join(names) or 'none'))
    if not dom.isActive():
        raise MigrateError('domain %r on %s is not running; start it or '
                           'migrate it offline with virsh' % (name, uri))
    return dom


class ReportFile:
    """The ``--json`` file: checked before the migration, written after it.

    A path that cannot be written is refused before anything touches a
    guest: a missing directory, a directory, a device, a symlink (never
    followed) or a file the user may not write. Nothing is created then.
    The report is written atomically at the end (a new file beside the
    path, synced and renamed over it), so a previous report stays whole
    until the new one is complete, whatever goes wrong.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            safefile.check_writable(path)
        except OSError as e:
            raise MigrateError(self._problem(e), EXIT_REFUSED)

    def _problem(self, error: OSError) -> str:
        if isinstance(error, safefile.UnsafePath):
            # It names the path itself.
            return '--json %s' % error
        return '--json %s cannot be written: %s' % (
            self.path, error.strerror or error)

    def write(self, data: dict[str, Any]) -> None:
        """Replace the file with the report; ``OSError`` if it cannot be."""
        text = json.dumps(data, indent=2) + '\n'
        safefile.atomic_write(self.path, text.encode('utf-8'))

    def write_error(self, error: OSError) -> str:
        """The one line said when :meth:`write` failed."""
        return ('%s; the report is not written (a previous file there is '
                'unchanged)' % self._problem(error))


def instance_facts(dom: Any) -> livemig_flags.InstanceFacts:
    """What a bare libvirt domain tells about itself."""
    state = dom.state()[0]
    memory_kib = dom.info()[1]
    return livemig_flags.InstanceFacts(
        memory_mib=memory_kib // 1024,
        paused=state == VIR_DOMAIN_PAUSED)


def _migrate(args: argparse.Namespace, libvirt: Any,
             policy: livemig_policy.MigrationPolicy,
             facts: livemig_flags.HostFacts, dom: Any, dest: Any,
             out: TextIO
             ) -> tuple[livemig_monitor.MigrationReport, dict[str, Any]]:
    """Plan, start and watch the migration; print the report.

    Returns the report and the guest's view of it (for ``--json``).
    """
    inst = instance_facts(dom)
    plan = livemig_flags.plan_migration(policy, facts, inst)
    params = dict(plan.params)
    if args.migrate_uri:
        params[livemig_flags.PARAM_URI] = args.migrate_uri
    if args.listen_address:
        params[livemig_flags.PARAM_LISTEN_ADDRESS] = args.listen_address
    controller = livemig_job.decision_maker(policy, plan, inst.memory_mib)
    for note in plan.notes:
        print('note: %s' % note, file=out)
    print('migrating %s from %s to %s' % (args.domain, args.source,
                                          args.dest), file=out)
    print('flags: %s' % '|'.join(plan.flag_names), file=out)
    print('ladder: %s, downtime %d..%d ms' % (
        ','.join(plan.ladder) or '-', policy.initial_downtime_ms,
        policy.max_downtime_ms), file=out)

    def show(progress: livemig_monitor.Progress) -> None:
        if not args.quiet:
            print(progress_line(progress), file=out, flush=True)

    monitor = livemig_monitor.MigrationMonitor(
        dom, controller, time.monotonic, time.sleep,
        poll_interval_s=policy.poll_interval_s, on_sample=show,
        errors=livemig_monitor.ErrorClassifier((libvirt.libvirtError,)),
        deadline_s=livemig_job.wall_clock_deadline_s(
            policy, livemig_job.data_gib(inst.memory_mib)))

    def completed_stats() -> dict[str, Any]:
        arrived = dest.lookupByName(args.domain)
        return dict(arrived.jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))

    def dest_domain() -> Any | None:
        try:
            return dest.lookupByName(args.domain)
        except libvirt.libvirtError:
            return None

    report = livemig_monitor.run_migration(
        dom, args.dest, params, plan.flags, monitor,
        fetch_completed_stats=completed_stats, dest_domain=dest_domain,
        recovery_timeout_s=float(policy.postcopy_recovery_timeout_s),
        postcopy_resume=policy.postcopy_resume,
        give_back_address=args.give_back_address)
    # What the guest paid, counted by the monitor from every sample it read
    # (every ending of run_migration goes through MigrationMonitor.finish).
    assert report.guest is not None
    print_report(report, out, report.guest, report.predicted_guest)
    return report, guest_dict(report.guest, report.predicted_guest)


def migrate(args: argparse.Namespace, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    import libvirt

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    from nova_livemig_ext.cmd import main as cmd_main

    # Errors are reported once, by us; libvirt would print them again.
    libvirt.registerErrorHandler(lambda ctx, error: None, None)

    try:
        conf = cmd_main.load_conf(args.config_file)
        for problem in livemig_conf.unknown_options(conf):
            print('nova-livemig-ext: warning: %s' % problem, file=err)
        policy = livemig_policy.policy_from_conf(conf)
    except cmd_main.CONFIG_ERRORS as e:
        print(cmd_main.config_error_line(e), file=err)
        return EXIT_REFUSED
    report_file = None
    try:
        # Before any connection: a report that cannot be written must not
        # be found out after the guest has moved.
        if args.json:
            report_file = ReportFile(args.json)
        src = _open(libvirt, args.source, 'source')
        dom = _lookup_running(libvirt, src, args.domain, args.source)
        dest = _open(libvirt, args.dest_connect or args.dest, 'destination')
        facts = hostfacts.probe(src, libvirt)
        livemig_flags.check_policy(policy, facts)
    except MigrateError as e:
        print('nova-livemig-ext: %s' % cmd_main.one_line(e), file=err)
        return e.code
    except livemig_policy.InvalidPolicy as e:
        print(cmd_main.refusal_line(e), file=err)
        return EXIT_REFUSED
    except libvirt.libvirtError as e:
        print('nova-livemig-ext: libvirt: %s'
              % cmd_main.one_line(e.get_error_message() or e), file=err)
        return EXIT_BAD_TARGET

    report, guest = _migrate(args, libvirt, policy, facts, dom, dest, out)
    completed = report.outcome is livemig_monitor.Outcome.COMPLETED
    if report_file is not None:
        try:
            report_file.write(report_dict(report, guest))
        except OSError as e:
            # The migration is over and its report printed: one line, and
            # the exit status says the file is missing.
            print('nova-livemig-ext: %s' % cmd_main.one_line(
                report_file.write_error(e)), file=err)
            return EXIT_REPORT_NOT_WRITTEN if completed else (
                EXIT_NOT_COMPLETED)
    return 0 if completed else EXIT_NOT_COMPLETED


def register(sub: Any) -> None:
    p = sub.add_parser(
        'migrate', help='live-migrate a libvirt domain under a policy, '
        'with the controller nova-compute uses')
    p.add_argument('domain', help='libvirt domain name')
    p.add_argument('--from', dest='source', required=True,
                   help='source libvirt URI, e.g. qemu+tcp://host/system')
    p.add_argument('--to', dest='dest', required=True,
                   help='destination libvirt URI')
    p.add_argument('--config-file', action='append', default=[],
                   help='nova.conf with [livemig_ext] (repeatable; '
                   'defaults apply without one)')
    p.add_argument('--dest-connect', help='how this command reaches the '
                   'destination libvirt, when not by the --to URI the source '
                   'dials (peer-to-peer), e.g. a local UNIX socket URI')
    p.add_argument('--migrate-uri', help='where the migration stream goes, '
                   'e.g. tcp://192.0.2.2 (VIR_MIGRATE_PARAM_URI)')
    p.add_argument('--listen-address', help='address the destination QEMU '
                   'listens on (VIR_MIGRATE_PARAM_LISTEN_ADDRESS)')
    standin.add_address_argument(p)
    p.add_argument('--json', help='write the report to this file')
    p.add_argument('--quiet', action='store_true',
                   help='no progress lines, only the report')
    p.set_defaults(func=migrate)
