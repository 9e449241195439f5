"""``nova-livemig-ext migrate``: errors before the job, and the display.

libvirt's own test driver (``test:///``, in-process, real libvirt) gives
real connections and domains; the migrations themselves are exercised in
the lab by the e2e tests.
"""

import contextlib
import dataclasses
import errno
import io
import json
import os
import stat
import tempfile

import fixtures
import testtools

from nova_livemig_ext.cmd import main as cmd
from nova_livemig_ext.cmd import migrate
from nova_livemig_ext.convergence import controller as ctl
from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import samples
from nova_livemig_ext import monitor

NODE = """<node>
  <domain type='test'>
    <name>busy</name><memory>327680</memory>
    <os><type>hvm</type></os>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>stopped</name><memory>65536</memory>
    <os><type>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>
</node>
"""


class MigrateErrorsTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.node = os.path.join(tmp, 'node.xml')
        with open(self.node, 'w') as f:
            f.write(NODE)
        self.uri = 'test://%s' % self.node

    def run_cmd(self, *argv, conf=None):
        args = ['migrate', *argv]
        if conf is not None:
            with tempfile.NamedTemporaryFile('w', suffix='.conf',
                                             delete=False) as f:
                f.write(conf)
            self.addCleanup(os.unlink, f.name)
            args += ['--config-file', f.name]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cmd.main(args)
        return rc, out.getvalue(), err.getvalue()

    def test_bad_uri(self):
        rc, _, err = self.run_cmd('busy', '--from',
                                  'qemu+tcp://127.0.0.1:1/system',
                                  '--to', self.uri)
        self.assertEqual(migrate.EXIT_BAD_TARGET, rc)
        self.assertIn('cannot connect to the source libvirt at '
                      'qemu+tcp://127.0.0.1:1/system', err)

    def test_unknown_domain_lists_what_is_there(self):
        rc, _, err = self.run_cmd('nope', '--from', self.uri, '--to',
                                  self.uri)
        self.assertEqual(migrate.EXIT_BAD_TARGET, rc)
        self.assertIn("no domain 'nope'", err)
        self.assertIn('busy', err)

    def test_domain_not_running(self):
        rc, _, err = self.run_cmd('stopped', '--from', self.uri, '--to',
                                  self.uri)
        self.assertEqual(migrate.EXIT_BAD_TARGET, rc)
        self.assertIn("domain 'stopped'", err)
        self.assertIn('is not running', err)

    def test_refused_policy(self):
        rc, _, err = self.run_cmd(
            'busy', '--from', self.uri, '--to', self.uri,
            conf='[livemig_ext]\nladder = downtime,postcopy,abort\n')
        self.assertEqual(migrate.EXIT_REFUSED, rc)
        self.assertIn('permit_post_copy', err)

    def test_bad_destination(self):
        rc, _, err = self.run_cmd('busy', '--from', self.uri, '--to',
                                  'qemu+tcp://127.0.0.1:1/system')
        self.assertEqual(migrate.EXIT_BAD_TARGET, rc)
        self.assertIn('destination libvirt', err)


class DisplayTest(testtools.TestCase):

    def test_progress_line(self):
        sample = samples.JobSample(
            job_type=samples.JobType.UNBOUNDED, iteration=4,
            memory_remaining_bytes=180 * migrate.MIB)
        est = estimator.Estimate(bandwidth_bytes_s=15.0 * migrate.MIB,
                                 dirty_rate_bytes_s=30.0 * migrate.MIB,
                                 throttle_pct=20)
        decision = ctl.Decision(ctl.Action.SET_DOWNTIME, 'stall',
                                downtime_ms=400)
        line = migrate.progress_line(monitor.Progress(
            12.34, sample, est, (decision,)))
        self.assertEqual(
            '  12.3s  iter 4   remaining    180.0 MiB  dirty    30.0 MiB/s'
            '  bw    15.0 MiB/s  ratio  2.00  throttle  20%  '
            'set_downtime(400 ms)', line)


def _report(**changes):
    base = dict(outcome=monitor.Outcome.COMPLETED, total_s=30.0,
                ended_by=monitor.EndedBy.JOB_DONE, polls=60)
    base.update(changes)
    return monitor.MigrationReport(**base)


def _applied(action, at_s, applied=True):
    return monitor.AppliedDecision(
        ctl.Decision(action=action, reason='r', at_s=at_s), applied)


class GuestViewTest(testtools.TestCase):
    """The report gives what the guest paid, not libvirt's downtime alone."""

    def test_post_copy_reports_the_phase_as_the_bound(self):
        report = _report(
            switched_to_postcopy=True, downtime_ms=None,
            decisions=(_applied(ctl.Action.START_POSTCOPY, 22.5),))
        cost = monitor.guest_view(report, 1.25)
        self.assertEqual(7.5, cost.postcopy_stall_s)
        self.assertEqual(7.5, cost.longest_unavailable_s)
        self.assertEqual(8.75, cost.work_lost_s)
        out = io.StringIO()
        migrate.print_report(report, out, cost)
        self.assertIn('guest:       longest unavailability at most 7.50 s',
                      out.getvalue())
        data = migrate.report_dict(report, migrate.guest_dict(cost, None))
        self.assertEqual(7.5, data['guest']['longest_unavailable_s'])
        self.assertTrue(data['guest']['upper_bound'])

    def test_a_destination_that_failed_before_running_is_no_half(self):
        # Seen in the lab with --give-back-address off: "both halves kept"
        # was untrue, the source held the whole guest.
        from nova_livemig_ext import postcopy
        view = postcopy.HostView(True, True, 3, 13)
        settled = postcopy.Settled(
            postcopy.Where.DEST_FAILED, 120.0, 0, False, None, view, view,
            give_back_error=None)
        report = _report(outcome=monitor.Outcome.NEEDS_RECOVERY,
                         switched_to_postcopy=True, recovery=settled)
        out = io.StringIO()
        migrate.print_report(report, out, monitor.guest_view(report, 0.0))
        self.assertIn('the source holds the whole guest, paused',
                      out.getvalue())
        self.assertNotIn('both halves', out.getvalue())
        data = migrate.report_dict(report, None)
        self.assertEqual('destination failed before running',
                         data['recovery']['where'])
        self.assertFalse(data['recovery']['given_back'])

    def test_failed_switch_is_not_a_switch(self):
        report = _report(
            paused_by_monitor=False,
            downtime_ms=180.0,
            decisions=(_applied(ctl.Action.START_POSTCOPY, 10.0, False),))
        cost = monitor.guest_view(report, 0.0)
        self.assertEqual(0.18, cost.longest_unavailable_s)

    def test_our_pause_counts_whole(self):
        report = _report(
            paused_by_monitor=True, downtime_ms=40.0,
            decisions=(_applied(ctl.Action.SET_DOWNTIME, 0.5),
                       _applied(ctl.Action.PAUSE, 26.0)))
        self.assertEqual(4.0, monitor.guest_view(
            report, 0.0).longest_unavailable_s)

    def test_aborted_guest_paid_only_the_throttle(self):
        report = _report(outcome=monitor.Outcome.ABORTED, downtime_ms=None)
        cost = monitor.guest_view(report, 12.0)
        self.assertEqual(0.0, cost.longest_unavailable_s)
        self.assertEqual(12.0, cost.work_lost_s)

    def test_completed_stats_update_what_the_guest_paid(self):
        # The monitor's view before libvirt's completed statistics arrive
        # has no downtime; the statistics bring it, the throttle stays.
        report = _report(downtime_ms=None)
        report = dataclasses.replace(report,
                                     guest=monitor.guest_view(report, 3.0))
        self.assertIsNone(report.guest.longest_unavailable_s)
        updated = monitor.with_completed_stats(report, {'downtime': 250})
        self.assertEqual(250, updated.downtime_ms)
        self.assertEqual(0.25, updated.guest.longest_unavailable_s)
        self.assertEqual(3.25, updated.guest.work_lost_s)
        self.assertEqual(3.0, updated.guest.throttle_lost_s)

    def test_throttle_meter(self):
        from nova_livemig_ext.convergence import guest
        meter = guest.ThrottleMeter()
        for at_s, pct in [(0.0, None), (1.0, 20), (2.0, 30), (4.0, 30)]:
            meter.add(at_s, pct)
        # 0 for the first second, 20 % of the next, 30 % of two more.
        self.assertAlmostEqual(0.8, meter.lost_s)
        self.assertEqual(30, meter.max_pct)


class ReportFileTest(testtools.TestCase):
    """``--json``: refused before the migration, written whole after it.

    The migration itself (``_migrate``) is replaced by one that records
    that it ran and returns a finished report: everything around it (the
    connections, the checks, the writing) is the command's own.
    """

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        node = os.path.join(self.tmp, 'node.xml')
        with open(node, 'w') as f:
            f.write(NODE)
        self.uri = 'test://%s' % node
        self.ran = []
        self.outcome = monitor.Outcome.COMPLETED

        def fake_migrate(args, libvirt, policy, facts, dom, dest, out):
            self.ran.append(args.domain)
            return _report(outcome=self.outcome, downtime_ms=120.0), None

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.cmd.migrate._migrate', fake_migrate))
        # libvirt's test driver reports QEMU 0.0.2, which the default
        # policy refuses; what this host supports is not the point here.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.flags.check_policy', lambda policy, facts: None))
        self.report = os.path.join(self.tmp, 'report.json')

    def run_cmd(self, json_path, source=None):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cmd.main(['migrate', 'busy', '--from', source or self.uri,
                           '--to', self.uri, '--json', json_path])
        return rc, err.getvalue()

    def leftovers(self):
        return [n for n in os.listdir(self.tmp) if n.endswith('.tmp')]

    def write(self, path, text):
        with open(path, 'w') as f:
            f.write(text)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_report_replaces_the_previous_one(self):
        self.write(self.report, '{"outcome": "aborted", "padding": "%s"}\n'
                   % ('x' * 4096))
        rc, err = self.run_cmd(self.report)
        self.assertEqual((0, ''), (rc, err))
        self.assertEqual(['busy'], self.ran)
        data = json.loads(self.read(self.report))
        self.assertEqual('completed', data['outcome'])
        self.assertEqual(120.0, data['downtime_ms'])
        self.assertEqual([], self.leftovers())

    def test_symlink_refused_before_the_migration_and_target_untouched(self):
        victim = os.path.join(self.tmp, 'shadow')
        self.write(victim, 'root:precious\n')
        os.symlink(victim, self.report)
        rc, err = self.run_cmd(self.report)
        self.assertEqual(migrate.EXIT_REFUSED, rc)
        self.assertEqual([], self.ran)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn('--json %s is a symlink' % self.report, err)
        self.assertEqual('root:precious\n', self.read(victim))
        self.assertTrue(os.path.islink(self.report))

    def test_symlink_planted_during_the_migration_is_refused(self):
        victim = os.path.join(self.tmp, 'shadow')
        self.write(victim, 'root:precious\n')
        self.outcome = monitor.Outcome.COMPLETED
        real = migrate._migrate

        def plant_then_migrate(*args):
            os.symlink(victim, self.report)
            return real(*args)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.cmd.migrate._migrate', plant_then_migrate))
        rc, err = self.run_cmd(self.report)
        self.assertEqual(migrate.EXIT_REPORT_NOT_WRITTEN, rc)
        self.assertEqual(['busy'], self.ran)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn('symlink', err)
        self.assertNotIn('Traceback', err)
        self.assertEqual('root:precious\n', self.read(victim))
        self.assertEqual([], self.leftovers())

    def test_disk_full_keeps_the_previous_report(self):
        self.write(self.report, '{"outcome": "previous"}\n')
        real_write = os.write

        def disk_full(fd, data):
            real_write(fd, bytes(data[:5]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.safefile.os.write', disk_full))
        rc, err = self.run_cmd(self.report)
        self.assertEqual(migrate.EXIT_REPORT_NOT_WRITTEN, rc)
        self.assertEqual(['busy'], self.ran)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn('--json %s cannot be written: No space left on device'
                      % self.report, err)
        self.assertIn('unchanged', err)
        self.assertEqual('{"outcome": "previous"}\n', self.read(self.report))
        self.assertEqual([], self.leftovers())

    def test_failed_rename_keeps_the_previous_report(self):
        self.write(self.report, '{"outcome": "previous"}\n')
        self.outcome = monitor.Outcome.ABORTED

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        self.useFixture(fixtures.MonkeyPatch(
            'nova_livemig_ext.safefile.os.rename', read_only))
        rc, err = self.run_cmd(self.report)
        # Not completed says more than the missing report.
        self.assertEqual(migrate.EXIT_NOT_COMPLETED, rc)
        self.assertIn('Read-only file system', err)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertEqual('{"outcome": "previous"}\n', self.read(self.report))
        self.assertEqual([], self.leftovers())

    def test_unwritable_paths_are_refused_before_connecting(self):
        os.mkfifo(os.path.join(self.tmp, 'fifo'))
        unreachable = 'qemu+tcp://127.0.0.1:1/system'
        for path, words in [
                (os.path.join(self.tmp, 'no', 'report.json'),
                 'No such file or directory'),
                (self.tmp, 'is a directory'),
                (os.path.join(self.tmp, 'fifo'), 'not a regular file'),
                ('/dev/null', 'not a regular file')]:
            rc, err = self.run_cmd(path, source=unreachable)
            self.assertEqual(migrate.EXIT_REFUSED, rc, path)
            self.assertIn('--json %s' % path, err)
            self.assertIn(words, err)
            self.assertNotIn('connect', err)
            self.assertEqual(1, len(err.splitlines()), err)
        self.assertEqual([], self.ran)
        self.assertEqual(['fifo', 'node.xml'], sorted(os.listdir(self.tmp)))
        self.assertTrue(stat.S_ISCHR(os.lstat('/dev/null').st_mode))

    def test_refused_migration_creates_no_file(self):
        rc, err = self.run_cmd(self.report,
                               source='qemu+tcp://127.0.0.1:1/system')
        self.assertEqual(migrate.EXIT_BAD_TARGET, rc)
        self.assertFalse(os.path.lexists(self.report))
        self.assertEqual([], self.leftovers())
