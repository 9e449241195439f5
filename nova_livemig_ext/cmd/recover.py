"""``nova-livemig-ext recover``: finish a post-copy migration by hand.

When post-copy broke and could not be resumed in time (or nova-compute was
not there to resume it), both halves of the guest are left as they were:
the destination runs it, the source still holds the pages that did not
arrive. This command looks at both, says plainly what it finds, and, when
the migration stream is broken, repeats the migration with
``VIR_MIGRATE_POSTCOPY_RESUME`` until it completes or the time runs out.
It never destroys a half that ran the guest, nor aborts one. A destination
that never ran it (shut off as failed, or stuck loading it: then its QEMU is
destroyed first) leaves the whole guest on the source, which it runs again
(see :mod:`nova_livemig_ext.standin`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from typing import Any, TextIO


from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import policy as livemig_policy
from nova_livemig_ext import planner
from nova_livemig_ext import postcopy
from nova_livemig_ext import standin

EXIT_COMPLETED = 0
EXIT_NOT_RECOVERED = 1
EXIT_REFUSED = 2
EXIT_BAD_TARGET = 3
# The flags a post-copy migration has whatever the policy: the resume must
# repeat them (libvirt checks POSTCOPY and PEER2PEER come back).
POSTCOPY_FLAGS = ('VIR_MIGRATE_LIVE', 'VIR_MIGRATE_PEER2PEER',
                  'VIR_MIGRATE_POSTCOPY')


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above zero."""
    value = planner.plain_number(text)
    if value is None:
        raise argparse.ArgumentTypeError('%r is not a number' % text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            '%r must be a positive number of seconds' % text)
    return value


def _open(libvirt: Any, uri: str) -> Any | None:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None


def _lookup(libvirt: Any, conn: Any | None, name: str) -> Any | None:
    if conn is None:
        return None
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def abort_unwatched_job(libvirt: Any, dom: Any, out: TextIO,
                        wait_s: float = 60.0) -> bool:
    """Abort a pre-copy job whose watcher is gone; True if there was one.

    Whoever started it (a killed ``migrate``, a nova-compute that died)
    no longer steers it toward its deadline: the guest stays on the source.
    """
    try:
        job = dom.jobStats()
    except libvirt.libvirtError:
        return False
    if job.get('type') != libvirt.VIR_DOMAIN_JOB_UNBOUNDED:
        return False
    print('a pre-copy migration job is still running with nobody watching '
          'it: aborting it', file=out, flush=True)
    try:
        livemig_monitor.abort_job_and_wait(dom, wait_s, time.sleep)
    except libvirt.libvirtError as e:
        print('abort failed: %s' % e, file=out)
        return False
    state = dom.state()
    if state[0] == postcopy.VIR_DOMAIN_PAUSED:
        if state[1] == libvirt.VIR_DOMAIN_PAUSED_MIGRATION:
            print('resuming the source guest, paused by the migration',
                  file=out)
            dom.resume()
        else:
            # Our pause rung and an operator's pause look the same to
            # libvirt (paused by a user): do not guess.
            print('the source guest is paused (reason %d): if the migration '
                  'paused it, resume it with: virsh resume %s'
                  % (state[1], dom.name()), file=out)
    return True


def resume_flags(libvirt: Any, conn: Any, config_files: list[str]
                 ) -> tuple[int, str]:
    """The original migration's flags, and whether a resume may be sent
    (``[livemig_ext] postcopy_resume``): the same nova.conf on this host."""
    from nova_livemig_ext.cmd import main as cmd_main

    conf = cmd_main.load_conf(config_files)
    policy = livemig_policy.policy_from_conf(conf).replace(
        permit_post_copy=True)
    plan = livemig_flags.plan_migration(
        policy, hostfacts.probe(conn, libvirt), livemig_flags.InstanceFacts())
    flags = plan.flags
    for name in POSTCOPY_FLAGS:
        flags |= livemig_flags.FLAG_VALUES[name]
    return flags, policy.postcopy_resume


def recover(args: argparse.Namespace, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    import libvirt

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    # Each resume attempt and state change is logged as it happens.
    logging.basicConfig(level=logging.INFO, stream=out,
                        format='%(asctime)s %(message)s')
    libvirt.registerErrorHandler(lambda ctx, error: None, None)
    src = _open(libvirt, args.source)
    if src is None:
        print('nova-livemig-ext: cannot connect to the source libvirt at %s:'
              ' run recover on the source host, with its libvirt URI'
              % args.source, file=err)
        return EXIT_BAD_TARGET
    from nova_livemig_ext.cmd import main as cmd_main

    try:
        flags, postcopy_resume = resume_flags(libvirt, src, args.config_file)
    except cmd_main.CONFIG_ERRORS as e:
        print(cmd_main.config_error_line(e), file=err)
        return EXIT_REFUSED
    dest_conn_uri = args.dest_connect or args.dest
    dest_conn: list[Any | None] = [_open(libvirt, dest_conn_uri)]
    errors = livemig_monitor.ErrorClassifier((libvirt.libvirtError,))

    def dest_domain() -> Any | None:
        if dest_conn[0] is None:
            dest_conn[0] = _open(libvirt, dest_conn_uri)
        return _lookup(libvirt, dest_conn[0], args.domain)

    def views() -> tuple[postcopy.HostView, postcopy.HostView]:
        dom = _lookup(libvirt, src, args.domain)
        source = (postcopy.read_view(dom, errors.is_libvirt_error,
                                     errors.domain_gone)
                  if dom is not None else postcopy.ABSENT)
        dest_dom = dest_domain()
        if dest_dom is None:
            dest = (postcopy.UNREACHABLE if dest_conn[0] is None
                    else postcopy.ABSENT)
        else:
            dest = postcopy.read_view(dest_dom, errors.is_libvirt_error,
                                      errors.domain_gone)
        return source, dest

    source, dest = views()
    if not source.present and dest.reachable and not dest.present:
        print('nothing to recover: no domain %r on the source or the '
              'destination' % args.domain, file=err)
        return EXIT_BAD_TARGET
    where = postcopy.judge(source, dest)
    print('%s: source %s, destination %s: %s' % (
        args.domain, source, dest, where.value), file=out)
    if where is postcopy.Where.COMPLETED:
        print('nothing to recover: the migration completed, the guest runs '
              'on the destination', file=out)
        return EXIT_COMPLETED
    if where is postcopy.Where.NOT_SWITCHED:
        if not source.present:
            print('nothing to recover: no domain %r on the source'
                  % args.domain, file=out)
            return EXIT_COMPLETED
        dom = _lookup(libvirt, src, args.domain)
        if dom is not None and abort_unwatched_job(libvirt, dom, out):
            source, _ = views()
            print('the unwatched pre-copy migration was aborted; the source '
                  'holds the whole guest (%s)' % source, file=out)
            return EXIT_COMPLETED
        print('nothing to recover: the migration never switched to '
              'post-copy, the source holds the whole guest (%s)'
              % source, file=out)
        return EXIT_COMPLETED
    if where is postcopy.Where.SOURCE_LOST:
        print('cannot recover: the source half of the guest is gone (%s); '
              'the pages it still held are lost. The destination was left '
              'as it is (%s).' % (source, dest), file=err)
        return EXIT_NOT_RECOVERED
    if where is postcopy.Where.UNKNOWN:
        print('cannot tell where %r is: neither host answers about it'
              % args.domain, file=err)
        return EXIT_NOT_RECOVERED
    if where is postcopy.Where.DEST_FAILED or (
            args.destination_never_ran and where is postcopy.Where.BROKEN
            and dest.reachable and (not dest.present
                                    or dest.state == postcopy.VIR_DOMAIN_SHUTOFF)):
        return give_back(libvirt, src, args, dest, out, err)

    params: dict[str, Any] = {}
    if args.migrate_uri:
        params[livemig_flags.PARAM_URI] = args.migrate_uri
    if args.listen_address:
        params[livemig_flags.PARAM_LISTEN_ADDRESS] = args.listen_address

    def resume() -> None:
        dom = _lookup(libvirt, src, args.domain)
        if dom is None:
            raise libvirt.libvirtError('no domain %r on the source any more'
                                       % args.domain)
        print('resuming: migrateToURI3(%s, flags %d | POSTCOPY_RESUME)'
              % (args.dest, flags), file=out, flush=True)
        dom.migrateToURI3(args.dest, dict(params),
                          flags | postcopy.VIR_MIGRATE_POSTCOPY_RESUME)

    version = (postcopy.libvirt_version_of(dest_domain())
               if dest_conn[0] is not None else None)
    hazard = None if args.force_resume else postcopy.resume_hazard(
        version, postcopy_resume)
    if hazard is not None:
        print('not resuming: %s. Waiting for QEMU\'s stream to heal by '
              'itself; a libvirt with the fix can resume it (a build that '
              'carries it under the same version: set [livemig_ext] '
              'postcopy_resume = patched in the --config-file, or pass '
              '--force-resume).' % hazard, file=out)

    def give_back_stuck(dest: postcopy.HostView,
                        never_ran: bool = False) -> None:
        _give_back_source(libvirt, src, args, dest, out,
                          never_ran or args.destination_never_ran)

    def stop_stuck_dest() -> postcopy.HostView:
        dest_dom = dest_domain()
        if dest_dom is None:
            raise RuntimeError('the destination cannot be reached to stop '
                               'its QEMU')
        print('the destination still shows the guest paused for migration: '
              'its QEMU is stuck loading the guest and never ran it; '
              'stopping it (destroy) and giving the guest back to the source '
              '(a stand-in destination on %s)' % args.give_back_address,
              file=out, flush=True)
        error = standin.destroy_stuck(dest_dom, errors.is_libvirt_error)
        if error:
            print('stopping the destination\'s QEMU: %s' % error, file=out,
                  flush=True)
        return views()[1]

    def source_refusal() -> str | None:
        dom = _lookup(libvirt, src, args.domain)
        if dom is None:
            return 'no domain %r on the source any more' % args.domain
        return standin.source_refusal_domain(dom)

    unstick = args.give_back_address is not None
    started_s = time.monotonic()
    settled = postcopy.settle(views, resume, time.monotonic, time.sleep,
                              args.timeout, errors.is_libvirt_error,
                              hazard=hazard,
                              give_back=give_back_stuck if unstick else None,
                              stop_stuck_dest=stop_stuck_dest if unstick
                              else None,
                              source_refusal=source_refusal)
    print('%s after %.1f s, %d resume attempt(s)%s' % (
        settled.where.value, time.monotonic() - started_s,
        settled.resume_attempts,
        '' if settled.last_error is None
        else ', last error: %s' % settled.last_error), file=out)
    if settled.completed:
        print('recovered: the guest runs on the destination', file=out)
        return EXIT_COMPLETED
    if settled.given_back:
        print('recovered: the source runs the guest again (the migration '
              'failed; no memory was lost). libvirt on the source still lists '
              'the failed migration job: see "A destination that failed at '
              'the switch" in the troubleshooting guide before migrating it '
              'again', file=out)
        return EXIT_COMPLETED
    if settled.give_back_error is not None:
        print('not given back: %s. Run recover again.'
              % settled.give_back_error, file=err)
        return EXIT_NOT_RECOVERED
    if settled.where is postcopy.Where.DEST_STUCK:
        print('not recovered within %.0f s: the destination still shows the '
              'guest paused for migration (its QEMU is stuck loading it and '
              'never ran it) and --give-back-address off forbids stopping it '
              'and running the guest on the source. Both halves were left as '
              'they are.' % args.timeout, file=err)
        return EXIT_NOT_RECOVERED
    if settled.resume_withheld is not None:
        print('not recovered within %.0f s: both halves were left as they '
              'are; no resume was tried because %s'
              % (args.timeout, settled.resume_withheld), file=err)
        return EXIT_NOT_RECOVERED
    last = settled.last_error or ''
    if 'did not return' in last or 'actively monitored' in last:
        # libvirt is stuck inside a call of its own, not on the network.
        print('not recovered within %.0f s: both halves were left as they '
              'are; libvirt did not let the migration be resumed (%s). The '
              'destination QEMU may be stuck loading the guest\'s state: '
              'see "A stream broken at the switch" in the troubleshooting '
              'guide before touching either half' % (args.timeout, last),
              file=err)
        return EXIT_NOT_RECOVERED
    if settled.dest.reachable and (
            not settled.dest.present
            or settled.dest.state == postcopy.VIR_DOMAIN_SHUTOFF):
        print('not recovered within %.0f s: both halves were left as they '
              'are; the destination runs no QEMU for the guest (%s), so '
              'nothing can be resumed there. If the destination\'s QEMU log '
              '(/var/log/libvirt/qemu/%s.log there) ends with "error while '
              'loading state" and never says "postcopy", its loader failed '
              'before the guest ran, and if the log of what stopped it says '
              '"stuck loading the guest and never ran it", it never ran '
              'either: run recover again with --destination-never-ran to '
              'give the guest back to the source'
              % (args.timeout, settled.dest, args.domain), file=err)
        return EXIT_NOT_RECOVERED
    print('not recovered within %.0f s: both halves were left as they are; '
          'fix the migration network and run recover again'
          % args.timeout, file=err)
    return EXIT_NOT_RECOVERED


def _give_back_source(libvirt: Any, src: Any, args: argparse.Namespace,
                      dest: postcopy.HostView, out: TextIO,
                      never_ran: bool) -> None:
    """Resume the source into the stand-in (see
    :func:`nova_livemig_ext.standin.give_back_domain`), saying each step."""
    dom = _lookup(libvirt, src, args.domain)
    if dom is None:
        raise standin.StandInError('no domain %r on the source any more'
                                   % args.domain)
    for step in standin.give_back_domain(
            dom, standin.state_of(dest.state, dest.reason),
            args.give_back_address, operator_says_never_ran=never_ran):
        print('give-back: %s' % step, file=out, flush=True)


def give_back(libvirt: Any, src: Any, args: argparse.Namespace,
              dest: postcopy.HostView, out: TextIO, err: TextIO) -> int:
    """The destination failed before it ran the guest: no resume can reach
    it, and the source holds the whole guest. Run it there again."""
    if args.give_back_address is None:
        print('not recovered: the destination failed to load the guest at '
              'the switch and never ran it; the source holds the whole '
              'guest, and --give-back-address off forbids running it there '
              'again. Both halves were left as they are.', file=err)
        return EXIT_NOT_RECOVERED
    print('the destination failed to load the guest at the switch and never '
          'ran it: giving the guest back to the source (a stand-in '
          'destination on %s)' % args.give_back_address, file=out, flush=True)
    try:
        _give_back_source(libvirt, src, args, dest, out,
                          args.destination_never_ran)
    except standin.Refused as exc:
        print('not given back: %s. Both halves were left as they are.' % exc,
              file=err)
        return EXIT_NOT_RECOVERED
    except (standin.StandInError, libvirt.libvirtError) as exc:
        print('not given back: %s. The source was left post-copy paused, as '
              'before; run recover again.' % exc, file=err)
        return EXIT_NOT_RECOVERED
    print('recovered: the source runs the guest again (the migration '
          'failed; no memory was lost). libvirt on the source still lists '
          'the failed migration job: see "A destination that failed at the '
          'switch" in the troubleshooting guide before migrating it again',
          file=out)
    return EXIT_COMPLETED


def register(sub: Any) -> None:
    p = sub.add_parser(
        'recover', help='complete a post-copy migration that broke: resume '
        'it (never destroys a half that ran the guest)')
    p.add_argument('domain', help='libvirt domain name (Nova: the '
                   'instance name, e.g. instance-0000002a)')
    p.add_argument('--from', dest='source', required=True,
                   help='source libvirt URI, as on the source host, e.g. '
                   'qemu:///system')
    p.add_argument('--to', dest='dest', required=True,
                   help='destination URI the source libvirt dials (as in '
                   'the original migration), e.g. qemu+tcp://dest/system')
    p.add_argument('--dest-connect', help='how this command reaches the '
                   'destination libvirt, when not by --to')
    p.add_argument('--config-file', action='append', default=[],
                   help='nova.conf the migration ran with (repeatable): '
                   'the resume repeats its flags')
    p.add_argument('--migrate-uri', help='where the migration stream goes, '
                   'as in the original migration (VIR_MIGRATE_PARAM_URI)')
    p.add_argument('--listen-address', help='address the destination QEMU '
                   'listens on (VIR_MIGRATE_PARAM_LISTEN_ADDRESS)')
    p.add_argument('--force-resume', action='store_true',
                   help='resume even on a libvirt release known to crash '
                   'the destination on a post-copy resume (for builds that '
                   'carry the fix under the same version)')
    standin.add_address_argument(p)
    p.add_argument('--destination-never-ran', action='store_true',
                   help='the destination QEMU is gone and its log says its '
                   'loader failed ("error while loading state", and no '
                   '"postcopy"): give the '
                   'guest back to the source although libvirt shut the '
                   'destination off for another reason than "failed" (the '
                   'source must still show no page request)')
    p.add_argument('--timeout', type=positive_seconds, default=600.0,
                   help='give up resuming after this many seconds without '
                   'progress (default 600)')
    p.set_defaults(func=recover)
