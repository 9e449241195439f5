"""The monitor loop against a scripted fake domain."""

import logging
import re

import fixtures
import testtools

from nova_livemig_ext import monitor as m
from nova_livemig_ext import native
from nova_livemig_ext.convergence import controller as c
from nova_livemig_ext.convergence import model
from tests import fixtures as lm_fixtures

A = c.Action
MIB = model.MIB


class FakeError(Exception):
    """Stands in for libvirt.libvirtError."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code

    def get_error_code(self):
        return self.code


ERRORS = m.ErrorClassifier((FakeError,))


def running(remaining=100 * MIB, iteration=1, processed=0):
    return {'type': 2, 'memory_total': 320 * MIB,
            'memory_remaining': remaining, 'memory_processed': processed,
            'memory_iteration': iteration, 'time_elapsed': 1000}


class FakeDomain:
    """Answers jobStats from a script; records every other call."""

    def __init__(self, script, fail=None, migrate_error=None):
        self.script = list(script)
        self.fail = dict(fail or {})
        self.migrate_error = migrate_error
        self.calls = []
        self.paused = False
        self.aborted = False
        # A real Event: migrateToURI3 waits in a real OS thread even when
        # eventlet has patched the process.
        self.script_done = native.threading_module().Event()

    def jobStats(self, flags=0):
        if not self.script:
            self.script_done.set()
            raise FakeError('Domain not found: no domain with matching '
                            'name', 42)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _call(self, name, *args):
        self.calls.append((name,) + args)
        if name in self.fail:
            raise self.fail[name]
        return 0

    def migrateSetMaxDowntime(self, downtime, flags=0):
        return self._call('migrateSetMaxDowntime', downtime, flags)

    def migrateSetMaxSpeed(self, bandwidth, flags=0):
        return self._call('migrateSetMaxSpeed', bandwidth, flags)

    def migrateStartPostCopy(self, flags=0):
        return self._call('migrateStartPostCopy', flags)

    def suspend(self):
        self._call('suspend')
        self.paused = True
        return 0

    def resume(self):
        self._call('resume')
        self.paused = False
        return 0

    def abortJob(self):
        result = self._call('abortJob')
        self.aborted = True
        self.script_done.set()
        return result

    def state(self, flags=0):
        return [m.VIR_DOMAIN_PAUSED if self.paused else 1, 1]

    def migrateToURI3(self, dconnuri, params, flags=0):
        self.calls.append(('migrateToURI3', dconnuri, params, flags))
        self.script_done.wait(10)
        if self.migrate_error is not None:
            raise self.migrate_error
        if self.aborted:
            raise FakeError('operation aborted: migration out job: '
                            'canceled by client', m.VIR_ERR_OPERATION_ABORTED)
        return 0


class ScriptedController:
    """Returns prepared decisions, one batch per observed sample."""

    def __init__(self, batches=(), start=()):
        self.batches = list(batches)
        self.start_decisions = tuple(start)
        self.acks = []
        self.observed = []

    def start(self, now_s):
        return self.start_decisions

    def observe(self, sample, now_s):
        self.observed.append(sample)
        return tuple(self.batches.pop(0)) if self.batches else ()

    def acknowledge(self, decision, applied, now_s):
        self.acks.append((decision.action, applied))

    @property
    def estimate(self):
        return c.estimator.Estimate()

    @property
    def predicted_downtime_ms(self):
        return 250.0


class FakeClock:

    def __init__(self):
        self.now_s = 1000.0

    def __call__(self):
        return self.now_s

    def sleep(self, seconds):
        self.now_s += seconds


def decision(action, **fields):
    return c.Decision(action=action, reason='because %s' % action.value,
                      rung='test', **fields)


class MonitorTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.logger = self.useFixture(fixtures.FakeLogger(
            name='nova_livemig_ext.monitor', level=logging.INFO))

    def monitor(self, domain, controller, **kwargs):
        clock = FakeClock()
        return m.MigrationMonitor(domain, controller, clock, clock.sleep,
                                  poll_interval_s=0.5, errors=ERRORS,
                                  **kwargs)


class TestApplyingDecisions(MonitorTestCase):

    # (decision, libvirt call)
    CASES = [
        (decision(A.SET_DOWNTIME, downtime_ms=650),
         ('migrateSetMaxDowntime', 650, 0)),
        (decision(A.SET_SPEED, speed_mib_s=100),
         ('migrateSetMaxSpeed', 100, 0)),
        (decision(A.SET_SPEED, speed_mib_s=40, postcopy_speed=True),
         ('migrateSetMaxSpeed', 40, m.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)),
        (decision(A.START_POSTCOPY), ('migrateStartPostCopy', 0)),
        (decision(A.PAUSE), ('suspend',)),
        (decision(A.ABORT), ('abortJob',)),
        (decision(A.NOTE), None),
    ]

    def test_each_action_makes_its_call(self):
        for made, call in self.CASES:
            domain = FakeDomain([running()])
            controller = ScriptedController([[made]])
            report = self.monitor(domain, controller).watch(lambda: False)
            self.assertEqual([] if call is None else [call], domain.calls,
                             made.action)
            self.assertEqual([(made.action, True)] if made.has_effect
                             else [], controller.acks)
            self.assertEqual((made,), tuple(a.decision
                                            for a in report.decisions))

    def test_postcopy_speed_flag_matches_libvirt(self):
        try:
            import libvirt
        except ImportError:
            self.skipTest('libvirt-python is not installed')
        self.assertEqual(libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY,
                         m.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)
        self.assertEqual(libvirt.VIR_DOMAIN_PAUSED, m.VIR_DOMAIN_PAUSED)
        self.assertEqual(libvirt.VIR_ERR_NO_DOMAIN, m.VIR_ERR_NO_DOMAIN)
        self.assertEqual(libvirt.VIR_ERR_OPERATION_INVALID,
                         m.VIR_ERR_OPERATION_INVALID)
        self.assertEqual(libvirt.VIR_ERR_OPERATION_ABORTED,
                         m.VIR_ERR_OPERATION_ABORTED)

    def test_libvirt_error_while_applying_is_logged_and_the_loop_goes_on(self):
        domain = FakeDomain(
            [running(), running(), running()],
            fail={'migrateSetMaxDowntime': FakeError('unsupported', 3)})
        controller = ScriptedController([
            [decision(A.SET_DOWNTIME, downtime_ms=500)],
            [decision(A.SET_SPEED, speed_mib_s=100)]])
        report = self.monitor(domain, controller).watch(lambda: False)
        self.assertEqual([(A.SET_DOWNTIME, False), (A.SET_SPEED, True)],
                         controller.acks)
        self.assertEqual(3, report.polls)
        self.assertEqual('unsupported', report.decisions[0].error)
        self.assertIn('set_downtime failed: unsupported',
                      self.logger.output)
        self.assertEqual((('test', 'because set_speed'),),
                         report.rungs_used)

    def test_other_errors_while_applying_are_bugs(self):
        domain = FakeDomain([running()],
                            fail={'suspend': ValueError('bug')})
        controller = ScriptedController([[decision(A.PAUSE)]])
        monitor = self.monitor(domain, controller)
        self.assertRaises(ValueError, monitor.watch, lambda: False)

    def test_one_log_line_per_decision_with_unformatted_arguments(self):
        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)

        log = logging.getLogger('test_monitor.decisions')
        log.addHandler(Keep())
        log.setLevel(logging.INFO)
        log.propagate = False
        made = c.Decision(action=A.SET_DOWNTIME, reason='plateau',
                          downtime_ms=650,
                          measures=(('working_set_mib', 183.5),))
        domain = FakeDomain([running()])
        self.monitor(domain, ScriptedController([[made]]),
                     log=log).watch(lambda: False)
        lines = [r for r in records if 'decision' not in r.msg
                 and r.args and isinstance(r.args, dict)
                 and 'reason' in r.args]
        self.assertEqual(1, len(lines))
        self.assertEqual('plateau', lines[0].args['reason'])
        self.assertEqual({'working_set_mib': 183.5},
                         lines[0].args['measures'])
        self.assertIn('set_downtime(650 ms)', lines[0].getMessage())


class TestEndOfJob(MonitorTestCase):

    # (error raised by jobStats)
    SWITCHOVER_ERRORS = [
        FakeError('Requested operation is not valid: domain is not running',
                  m.VIR_ERR_OPERATION_INVALID),
        FakeError('Domain not found: no domain with matching uuid',
                  m.VIR_ERR_NO_DOMAIN),
        FakeError('domain is not running'),
    ]

    def test_switchover_errors_end_the_job_not_the_monitor(self):
        for error in self.SWITCHOVER_ERRORS:
            domain = FakeDomain([running(), running(), error, running()])
            report = self.monitor(domain, ScriptedController()).watch(
                lambda: False)
            self.assertEqual(m.EndedBy.DOMAIN_GONE, report.ended_by, error)
            self.assertEqual(2, report.polls)
            self.assertEqual(m.Outcome.UNKNOWN, report.outcome)

    def test_other_errors_reading_stats_are_retried(self):
        domain = FakeDomain([running(), FakeError('internal error', 1),
                             running()])
        report = self.monitor(domain, ScriptedController()).watch(
            lambda: False)
        self.assertEqual(2, report.polls)
        self.assertIn('reading job statistics failed', self.logger.output)

    def test_job_done_ends_the_watch(self):
        domain = FakeDomain([running()] * 10)
        polls = iter(range(100))
        report = self.monitor(domain, ScriptedController()).watch(
            lambda: next(polls) >= 3)
        self.assertEqual(m.EndedBy.JOB_DONE, report.ended_by)
        self.assertEqual(3, report.polls)

    def test_not_started_yet_is_not_the_end(self):
        domain = FakeDomain([{'type': 0}, {'type': 0}, running()])
        controller = ScriptedController()
        self.monitor(domain, controller).watch(lambda: False)
        self.assertEqual(3, len(controller.observed))

    def test_completed_stats_end_the_job(self):
        domain = FakeDomain([running(iteration=5, processed=400 * MIB),
                             {'type': 3, 'downtime': 120,
                              'memory_iteration': 6,
                              'memory_processed': 420 * MIB}])
        report = self.monitor(domain, ScriptedController()).watch(
            lambda: False)
        self.assertEqual(m.Outcome.COMPLETED, report.outcome)
        self.assertEqual(m.EndedBy.JOB_FINISHED, report.ended_by)
        self.assertEqual(120.0, report.downtime_ms)
        self.assertEqual(6, report.iterations)
        self.assertEqual(420 * MIB, report.memory_sent_bytes)

    def test_failed_job_resumes_the_source_the_monitor_paused(self):
        domain = FakeDomain([running(), running()])
        monitor = self.monitor(domain, ScriptedController([[decision(
            A.PAUSE)]]))
        report = monitor.watch(lambda: False)
        self.assertTrue(domain.paused)
        report = monitor.finish(report, m.Outcome.FAILED, 'link down')
        self.assertFalse(domain.paused)
        self.assertTrue(report.source_resumed)
        self.assertEqual(('resume',), domain.calls[-1])

    def test_completed_job_is_not_resumed(self):
        domain = FakeDomain([running()])
        monitor = self.monitor(domain, ScriptedController([[decision(
            A.PAUSE)]]))
        report = monitor.finish(monitor.watch(lambda: False),
                                m.Outcome.COMPLETED)
        self.assertFalse(report.source_resumed)
        self.assertNotIn(('resume',), domain.calls)

    def test_post_copy_source_is_never_resumed(self):
        domain = FakeDomain([running(), running()])
        monitor = self.monitor(domain, ScriptedController([
            [decision(A.PAUSE)], [decision(A.START_POSTCOPY)]]))
        report = monitor.finish(monitor.watch(lambda: False),
                                m.Outcome.FAILED, 'destination died')
        self.assertFalse(report.source_resumed)
        self.assertTrue(report.switched_to_postcopy)
        self.assertNotIn(('resume',), domain.calls)

    def test_failed_pause_is_not_resumed(self):
        domain = FakeDomain([running()],
                            fail={'suspend': FakeError('no', 1)})
        monitor = self.monitor(domain, ScriptedController([[decision(
            A.PAUSE)]]))
        report = monitor.finish(monitor.watch(lambda: False),
                                m.Outcome.FAILED)
        self.assertFalse(report.paused_by_monitor)
        self.assertFalse(report.source_resumed)

    def test_progress_callback(self):
        seen = []
        domain = FakeDomain([running(remaining=50 * MIB), {'type': 0}])
        monitor = self.monitor(domain, ScriptedController([[decision(
            A.NOTE)]]), on_sample=seen.append)
        monitor.watch(lambda: False)
        self.assertEqual(1, len(seen))
        self.assertEqual(50 * MIB, seen[0].sample.memory_remaining_bytes)
        self.assertEqual(A.NOTE, seen[0].decisions[0].action)


class TestRunMigration(MonitorTestCase):

    def test_completed_with_libvirt_downtime(self):
        domain = FakeDomain([running(iteration=2), running(iteration=3)])
        monitor = self.monitor(domain, ScriptedController())
        report = m.run_migration(
            domain, 'qemu+tcp://127.0.0.1:16510/system', {'bandwidth': 0},
            3, monitor,
            fetch_completed_stats=lambda: {'type': 3, 'downtime': 366,
                                           'memory_iteration': 7,
                                           'memory_processed': 278286781})
        self.assertEqual(m.Outcome.COMPLETED, report.outcome)
        self.assertEqual(366.0, report.downtime_ms)
        self.assertEqual(250.0, report.predicted_downtime_ms)
        self.assertEqual(7, report.iterations)
        self.assertEqual(278286781, report.memory_sent_bytes)
        self.assertEqual(('migrateToURI3',
                          'qemu+tcp://127.0.0.1:16510/system',
                          {'bandwidth': 0}, 3), domain.calls[0])

    def test_failed_job_after_pause_resumes_the_source(self):
        domain = FakeDomain([running(), running()],
                            migrate_error=FakeError('migration failed', 1))
        monitor = self.monitor(domain, ScriptedController([[decision(
            A.PAUSE)]]))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 monitor)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertEqual('migration failed', report.error)
        self.assertTrue(report.source_resumed)
        self.assertFalse(domain.paused)

    def test_abort_we_asked_for(self):
        for error in (FakeError('operation aborted: canceled by client',
                                m.VIR_ERR_OPERATION_ABORTED),
                      FakeError('operation failed', 9)):
            domain = FakeDomain([running()], migrate_error=error)
            monitor = self.monitor(domain, ScriptedController([[decision(
                A.ABORT)]]))
            report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                     monitor)
            self.assertEqual(m.Outcome.ABORTED, report.outcome, error)

    def test_failure_without_our_abort(self):
        domain = FakeDomain([running()],
                            migrate_error=FakeError('unable to connect', 38))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 self.monitor(domain, ScriptedController()))
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertEqual('unable to connect', report.error)

    def test_monitor_crash_aborts_the_job(self):
        class Broken(ScriptedController):
            def observe(self, sample, now_s):
                raise RuntimeError('controller bug')

        domain = FakeDomain([running(), running()])
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 self.monitor(domain, Broken()))
        self.assertIn(('abortJob',), domain.calls)
        self.assertEqual(m.Outcome.ABORTED, report.outcome)
        self.assertEqual(m.EndedBy.MONITOR_CRASHED, report.ended_by)
        self.assertIn("monitor error: RuntimeError('controller bug')",
                      report.error)
        self.assertIn('operation aborted', report.error)


class PostcopyDomain(FakeDomain):
    """A source whose post-copy breaks; resumes answer from a list.

    ``resume_answers``: an exception refuses that resume; None completes
    the migration (the source half goes away).
    """

    def __init__(self, script, resume_answers=(), **kwargs):
        super().__init__(script, **kwargs)
        self.resume_answers = list(resume_answers)
        self.switched = False
        self.gone = False

    def migrateStartPostCopy(self, flags=0):
        self.switched = True
        return super().migrateStartPostCopy(flags)

    def state(self, flags=0):
        if self.gone:
            raise FakeError('Domain not found: no domain with matching '
                            'uuid', m.VIR_ERR_NO_DOMAIN)
        if self.switched:
            return [m.VIR_DOMAIN_PAUSED, 13]
        return super().state(flags)

    def migrateToURI3(self, dconnuri, params, flags=0):
        if flags & m.postcopy.VIR_MIGRATE_POSTCOPY_RESUME:
            self.calls.append(('resume-migration', dconnuri, params, flags))
            answer = (self.resume_answers.pop(0) if self.resume_answers
                      else FakeError('no route to host', 38))
            if answer is not None:
                raise answer
            self.gone = True
            return 0
        return super().migrateToURI3(dconnuri, params, flags)


STREAM_ALIVE = FakeError('operation failed: QEMU reports migration is still '
                         'running', 1)


class StuckPeer:
    """A destination libvirt showing the guest paused for migration (its
    QEMU stuck before it ran it) until ``destroy(peer)`` says otherwise."""

    destroy_error = None

    def __init__(self, destroy):
        self.stopped = False
        self._destroy = destroy

    def view(self):
        if self.stopped:
            return m.postcopy.ABSENT
        return m.postcopy.HostView(True, True, m.postcopy.VIR_DOMAIN_PAUSED,
                                   m.postcopy.VIR_DOMAIN_PAUSED_MIGRATION)

    def libvirt_version(self):
        return 11003000

    def destroy(self):
        return self._destroy(self)


POSTCOPY_FAILED = FakeError("operation failed: job 'migration out' failed "
                            "in post-copy phase", 1)


class TestPostcopyFailures(MonitorTestCase):

    def migrate(self, domain, controller=None, timeout_s=60.0):
        controller = controller or ScriptedController(
            [[decision(A.START_POSTCOPY)]])
        monitor = self.monitor(domain, controller)
        return m.run_migration(domain, 'qemu+tcp://h/system', {'p': 1},
                               m.postcopy.VIR_MIGRATE_POSTCOPY_RESUME >> 4,
                               monitor, recovery_timeout_s=timeout_s)

    def test_broken_post_copy_is_resumed_never_rolled_back(self):
        domain = PostcopyDomain([running(), running()],
                                [STREAM_ALIVE, STREAM_ALIVE, None],
                                migrate_error=POSTCOPY_FAILED)
        report = self.migrate(domain)
        self.assertEqual(m.Outcome.COMPLETED, report.outcome)
        self.assertTrue(report.recovery.resumed)
        self.assertEqual(3, report.recovery.resume_attempts)
        resumes = [c for c in domain.calls if c[0] == 'resume-migration']
        # The original URI, parameters and flags, plus POSTCOPY_RESUME.
        flags = m.postcopy.VIR_MIGRATE_POSTCOPY_RESUME >> 4
        self.assertEqual(('resume-migration', 'qemu+tcp://h/system', {'p': 1},
                          flags | m.postcopy.VIR_MIGRATE_POSTCOPY_RESUME),
                         resumes[0])
        for call in ('abortJob', 'resume', 'destroy'):
            self.assertNotIn((call,), domain.calls)
        self.assertFalse(report.source_resumed)

    def test_a_migrate_call_that_never_returns_does_not_stop_recovery(self):
        # Seen in the lab: QEMU's stream reset 0.1 s after the switch left
        # migrateToURI3 blocked in libvirt for good, the source showing
        # post-copy failed, and libvirt refusing each resume while that
        # call still owned the job.
        held = native.threading_module().Event()
        self.addCleanup(held.set)
        owned = FakeError('Requested operation is not valid: migration of '
                          'domain g is being actively monitored by another '
                          'thread', 55)

        class Stuck(PostcopyDomain):
            def migrateToURI3(self, dconnuri, params, flags=0):
                if flags & m.postcopy.VIR_MIGRATE_POSTCOPY_RESUME:
                    return super().migrateToURI3(dconnuri, params, flags)
                self.calls.append(('migrateToURI3', dconnuri, params, flags))
                held.wait(60)
                return 0

        domain = Stuck([running()] * 200, [owned, owned, None])
        report = self.migrate(domain)
        self.assertIs(m.EndedBy.POSTCOPY_BROKEN, report.ended_by)
        self.assertEqual(m.Outcome.COMPLETED, report.outcome)
        self.assertTrue(report.recovery.resumed)
        self.assertEqual(3, report.recovery.resume_attempts)
        self.assertFalse(held.is_set())
        self.assertIn('has not returned', self.logger.output)
        for call in ('abortJob', 'resume', 'destroy'):
            self.assertNotIn((call,), domain.calls)

    def test_the_recovery_counts_in_the_guest_stall(self):
        # Measured through nova-compute: the summary said 12.9 s and a
        # stall of at most 9.2 s, the guest's heartbeats stopped 29.5 s,
        # because the time spent resuming was left out.
        domain = PostcopyDomain([running(), running()],
                                [STREAM_ALIVE, STREAM_ALIVE, None],
                                migrate_error=POSTCOPY_FAILED)
        report = self.migrate(domain)
        waited_s = report.recovery.waited_s
        self.assertGreater(waited_s, 5.0)
        watched_s = report.total_s - waited_s
        self.assertGreaterEqual(watched_s, 0.0)
        self.assertGreaterEqual(report.guest.longest_unavailable_s, waited_s)

        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        report = self.migrate(domain, timeout_s=20.0)
        self.assertGreaterEqual(report.total_s, report.recovery.waited_s)
        self.assertGreaterEqual(report.guest.longest_unavailable_s, 20.0)

    def test_recovery_timeout_keeps_both_halves(self):
        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        report = self.migrate(domain, timeout_s=20.0)
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertTrue(report.recovery.needs_operator)
        self.assertGreaterEqual(report.recovery.waited_s, 20.0)
        self.assertIn('no route to host', report.recovery.last_error)
        for call in ('abortJob', 'resume'):
            self.assertNotIn((call,), domain.calls)
        self.assertIn('post-copy failed', self.logger.output)

    def test_no_resume_against_a_libvirt_that_crashes_on_it(self):
        class Conn:
            def getLibVersion(self):
                return 11003000

        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        domain.connect = Conn
        report = self.migrate(domain, timeout_s=20.0)
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertEqual(0, report.recovery.resume_attempts)
        self.assertIn('11.3.0', report.recovery.resume_withheld)
        self.assertEqual([], [c for c in domain.calls
                              if c[0] == 'resume-migration'])
        self.assertIn('resume is not tried', self.logger.output)

    def test_monitor_crash_in_post_copy_is_not_an_abort(self):
        class CrashAfterSwitch(ScriptedController):
            def observe(self, sample, now_s):
                if self.observed:
                    # The job breaks in post-copy as the monitor dies.
                    domain.script_done.set()
                    raise RuntimeError('controller bug')
                return super().observe(sample, now_s)

        domain = PostcopyDomain([running(), running(), running()], [None],
                                migrate_error=POSTCOPY_FAILED)
        report = self.migrate(domain, CrashAfterSwitch(
            [[decision(A.START_POSTCOPY)]]))
        self.assertNotIn(('abortJob',), domain.calls)
        self.assertEqual(m.Outcome.COMPLETED, report.outcome)
        self.assertEqual(m.EndedBy.MONITOR_CRASHED, report.ended_by)

    def migrate_giving_back(self, source_refusal=None, **dest):
        """A migration that fails after the switch, the destination in view
        through ``dest`` (``dest_domain`` or ``dest_peer``), give-back on.

        ``source_refusal``: what the source QEMU says against a give-back
        (None: it is post-copy paused, no page asked for). Returns the
        report, the give-backs as (destination state, address, never ran),
        and the monitor's clock when the settling began; the clock is
        ``self.clock`` meanwhile.
        """
        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        given = []

        def give_back_domain(dom, dest_state, address,
                             operator_says_never_ran=False):
            self.assertIs(domain, dom)
            given.append((dest_state, address, operator_says_never_ran))
            dom.switched = False  # QEMU runs it again: libvirt says running
            return ['resume acknowledged']

        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'give_back_domain', give_back_domain))
        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'source_refusal_domain',
            lambda dom: source_refusal))
        monitor = self.monitor(domain, ScriptedController(
            [[decision(A.START_POSTCOPY)]]))
        self.clock = monitor.clock
        settling = []
        real_settle = m.postcopy.settle

        def settle(*args, **kwargs):
            settling.append(monitor.clock())
            return real_settle(*args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(m.postcopy, 'settle',
                                                 settle))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {'p': 1}, 3,
                                 monitor, recovery_timeout_s=60.0,
                                 give_back_address='tcp:127.0.0.1', **dest)
        # Nothing is ever resumed into a destination that never ran it.
        self.assertEqual([], [c for c in domain.calls
                              if c[0] == 'resume-migration'])
        return report, given, settling[0]

    def test_destination_failed_before_running_gives_the_guest_back(self):
        # Seen in the lab: a stream reset within 0.05 s of the switch; B's
        # QEMU failed to load the device state and libvirt shut it off as
        # failed, A stayed post-copy paused with the whole guest.
        class Dest:
            def state(self, flags=0):
                return [m.postcopy.VIR_DOMAIN_SHUTOFF,
                        m.postcopy.VIR_DOMAIN_SHUTOFF_FAILED]

        report, given, _ = self.migrate_giving_back(dest_domain=Dest)
        self.assertEqual([((5, 6), 'tcp:127.0.0.1', False)], given)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertTrue(report.recovery.given_back)
        self.assertIn('given back to the source', report.error)
        self.assertIn('give-back: resume acknowledged', self.logger.output)

    def test_a_bounded_peer_in_view_gives_the_guest_back(self):
        # As nova-compute reads the destination: through a BoundedPeer.
        class Peer:
            def view(self):
                return m.postcopy.HostView(
                    True, True, m.postcopy.VIR_DOMAIN_SHUTOFF,
                    m.postcopy.VIR_DOMAIN_SHUTOFF_FAILED)

            def libvirt_version(self):
                return 11003000

        report, given, _ = self.migrate_giving_back(dest_peer=Peer())
        self.assertEqual([((5, 6), 'tcp:127.0.0.1', False)], given)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertTrue(report.recovery.given_back)
        # 11.3.0 by its number and postcopy_resume auto: no resume either.
        self.assertIn('11.3.0', report.recovery.resume_withheld)

    def test_a_destination_stuck_loading_is_stopped_then_given_back(self):
        # Seen on the real stack: a stream reset at the switch; B's loader
        # failed while its main thread waited for a page inside the device
        # state. B's QEMU stayed alive, libvirt showing it paused for
        # migration (never post-copy), A post-copy paused with 0 requests.
        stopped_at = []

        def destroy(peer):
            stopped_at.append(self.clock())
            peer.stopped = True
            return peer.view()

        peer = StuckPeer(destroy)
        report, given, settling_s = self.migrate_giving_back(dest_peer=peer)
        # Only once it has lasted: a healthy destination leaves "paused for
        # migration" within moments of the switch.
        self.assertEqual(1, len(stopped_at))
        self.assertGreaterEqual(stopped_at[0] - settling_s,
                                m.postcopy.STUCK_LOADING_S)
        # Given back on the monitor's word that it never ran.
        self.assertEqual([(None, 'tcp:127.0.0.1', True)], given)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertTrue(report.recovery.given_back)
        self.assertIn('stuck loading the guest', self.logger.output)

    def test_a_stuck_destination_is_not_stopped_while_the_stream_lives(self):
        # The link cut while the switch was in flight: libvirt on the source
        # says post-copy failed (keepalive), but QEMU's stream is alive and
        # may yet deliver the switch once the link is back.
        def destroy(peer):
            raise AssertionError('stopped while the source stream lives')

        report, given, _ = self.migrate_giving_back(
            source_refusal='the source migration is postcopy-active, not '
                           'postcopy-paused',
            dest_peer=StuckPeer(destroy))
        self.assertEqual([], given)
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertEqual(m.postcopy.Where.DEST_STUCK, report.recovery.where)
        self.assertIsNone(report.recovery.give_back_error)
        self.assertEqual(1, self.logger.output.count('not stopped yet'))

    def test_a_stuck_destination_whose_destroy_errs_as_it_vanishes(self):
        # Seen in the lab: libvirt removed the incoming domain itself once
        # its QEMU died and then answered the destroy "Domain not found".
        gone = FakeError('Domain not found: no domain with matching uuid',
                         code=42)
        stopped = []

        class Dest:
            def state(self, flags=0):
                if stopped:
                    raise gone
                return [m.postcopy.VIR_DOMAIN_PAUSED,
                        m.postcopy.VIR_DOMAIN_PAUSED_MIGRATION]

            def destroy(self):
                stopped.append(True)
                raise gone

        report, given, _ = self.migrate_giving_back(dest_domain=Dest)
        self.assertEqual([True], stopped)
        self.assertEqual([(None, 'tcp:127.0.0.1', True)], given)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertTrue(report.recovery.given_back)

    def test_time_before_the_settling_counts_in_the_guests_stop(self):
        # Found on the real stack: nova-compute waited 60 s for libvirt's
        # call before settling, with the guest paused on the source, and the
        # summary left those 60 s out.
        class Dest:
            def state(self, flags=0):
                return [m.postcopy.VIR_DOMAIN_SHUTOFF,
                        m.postcopy.VIR_DOMAIN_SHUTOFF_FAILED]

        real_settle = m.postcopy.settle

        def late_settle(views, resume, clock, sleep, *args, **kwargs):
            sleep(60.0)
            return real_settle(views, resume, clock, sleep, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(m.postcopy, 'settle',
                                                 late_settle))
        report, _, settling_s = self.migrate_giving_back(dest_domain=Dest)
        self.assertTrue(report.recovery.given_back)
        self.assertGreaterEqual(report.total_s,
                                60.0 + report.recovery.waited_s)
        self.assertGreaterEqual(report.guest.longest_unavailable_s, 60.0)

    def test_a_stuck_destination_that_will_not_stop_is_not_given_back(self):
        def destroy(peer):
            raise RuntimeError('the destination did not stop the guest: '
                               'no answer within 30 s')

        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'give_back_domain',
            side_effect=AssertionError('B may still run a QEMU')))
        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'source_refusal_domain', lambda dom: None))
        monitor = self.monitor(domain, ScriptedController(
            [[decision(A.START_POSTCOPY)]]))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {'p': 1}, 3,
                                 monitor, recovery_timeout_s=30.0,
                                 give_back_address='tcp:127.0.0.1',
                                 dest_peer=StuckPeer(destroy))
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertEqual(m.postcopy.Where.DEST_STUCK, report.recovery.where)
        self.assertFalse(report.recovery.given_back)
        self.assertIn('did not stop', report.recovery.give_back_error)

    def test_a_peer_in_view_without_a_give_back_address_keeps_both(self):
        class Peer:
            def view(self):
                return m.postcopy.HostView(
                    True, True, m.postcopy.VIR_DOMAIN_SHUTOFF,
                    m.postcopy.VIR_DOMAIN_SHUTOFF_FAILED)

            def libvirt_version(self):
                return None

        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'give_back_domain',
            side_effect=AssertionError('postcopy_give_back_address is off')))
        monitor = self.monitor(domain, ScriptedController(
            [[decision(A.START_POSTCOPY)]]))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {'p': 1}, 3,
                                 monitor, recovery_timeout_s=20.0,
                                 dest_peer=Peer())
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertEqual(m.postcopy.Where.DEST_FAILED, report.recovery.where)
        # Nothing can be resumed into a destination that is shut off.
        self.assertEqual([], [c for c in domain.calls
                              if c[0] == 'resume-migration'])

    def test_without_the_destination_in_view_nothing_is_given_back(self):
        domain = PostcopyDomain([running(), running()],
                                migrate_error=POSTCOPY_FAILED)
        self.useFixture(fixtures.MockPatchObject(
            m.standin, 'give_back_domain',
            side_effect=AssertionError('no give-back without the proof')))
        monitor = self.monitor(domain, ScriptedController(
            [[decision(A.START_POSTCOPY)]]))
        report = m.run_migration(domain, 'qemu+tcp://h/system', {'p': 1}, 3,
                                 monitor, recovery_timeout_s=20.0,
                                 give_back_address='tcp:127.0.0.1')
        self.assertEqual(m.Outcome.NEEDS_RECOVERY, report.outcome)
        self.assertFalse(report.recovery.given_back)

    def test_failure_before_the_switch_took_is_a_plain_failure(self):
        # migrateStartPostCopy was asked for but the source still runs the
        # whole guest: the ordinary failure path, the source resumed.
        domain = FakeDomain([running(), running()],
                            migrate_error=FakeError('unable to connect', 38))
        report = self.migrate(domain)
        self.assertEqual(m.Outcome.FAILED, report.outcome)
        self.assertEqual(m.postcopy.Where.NOT_SWITCHED,
                         report.recovery.where)


class TestDeadlineWithoutStatistics(MonitorTestCase):

    def test_wall_clock_deadline_aborts_when_job_stats_keep_failing(self):
        unreadable = [FakeError('Timed out during operation: cannot acquire '
                                'state change lock', 68)] * 400
        domain = FakeDomain([running()] + unreadable)
        controller = ScriptedController()
        monitor = self.monitor(domain, controller, deadline_s=60.0)
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 monitor)
        self.assertEqual(m.Outcome.ABORTED, report.outcome)
        self.assertEqual([(A.ABORT, True)], controller.acks)
        aborts = [a for a in report.decisions
                  if a.decision.action is A.ABORT]
        self.assertEqual(1, len(aborts))
        self.assertGreaterEqual(aborts[0].decision.at_s, 60.0)
        self.assertLess(aborts[0].decision.at_s, 61.0)
        self.assertIn('while job statistics were unreadable',
                      aborts[0].decision.reason)

    def test_the_controllers_link_deadline_when_sooner_than_the_cap(self):
        unreadable = [FakeError('cannot acquire state change lock', 68)] * 400
        domain = FakeDomain([running()] + unreadable)
        controller = ScriptedController()
        controller.deadline_s = 45.0
        monitor = self.monitor(domain, controller, deadline_s=14400.0)
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 monitor)
        self.assertEqual(m.Outcome.ABORTED, report.outcome)
        aborts = [a.decision for a in report.decisions
                  if a.decision.action is A.ABORT]
        self.assertEqual(1, len(aborts))
        self.assertGreaterEqual(aborts[0].at_s, 45.0)
        self.assertLess(aborts[0].at_s, 46.0)
        self.assertIn('deadline of 45 s', aborts[0].reason)

    def test_no_abort_after_the_switch_to_post_copy(self):
        unreadable = [FakeError('cannot acquire state change lock', 68)] * 300
        domain = FakeDomain([running(), running()] + unreadable)
        controller = ScriptedController([[decision(A.START_POSTCOPY)]])
        monitor = self.monitor(domain, controller, deadline_s=10.0)
        monitor.watch(lambda: not domain.script)
        self.assertNotIn(('abortJob',), domain.calls)

    def test_poll_interval_and_deadline_must_be_numbers(self):
        domain = FakeDomain([])
        for bad in (float('nan'), float('inf'), 0, -1):
            self.assertRaises(ValueError, self.monitor, domain,
                              ScriptedController(), deadline_s=bad)
            clock = FakeClock()
            self.assertRaises(ValueError, m.MigrationMonitor, domain,
                              ScriptedController(), clock, clock.sleep,
                              poll_interval_s=bad)


# libvirt's answer while another call holds the domain's job lock.
LOCK_TIMEOUT = FakeError('Timed out during operation: cannot acquire state '
                         'change lock (held by monitor=remoteDispatchDomain'
                         'GetJobStats)', 68)
HOUR_S = 3600.0


class UnreadableDomain(FakeDomain):
    """jobStats answers from the script, then fails with a libvirt error
    for good (or while ``unreadable(now_s)`` says so)."""

    def __init__(self, script=(), unreadable=None, clock=None, **kwargs):
        super().__init__(script, **kwargs)
        self.unreadable = unreadable
        self.clock = clock
        self.failed_reads = 0

    def jobStats(self, flags=0):
        if self.unreadable is not None:
            if not self.unreadable(self.clock()):
                return running()
        elif self.script:
            return super().jobStats(flags)
        self.failed_reads += 1
        raise LOCK_TIMEOUT


class Records(logging.Handler):
    """Every record the monitor logs, with its level."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def at(self, level):
        return [r.getMessage() for r in self.records if r.levelno == level]


def link_samples(bandwidth_mib_s, count=20):
    """Running samples of a first pass at ``bandwidth_mib_s``, 0.5 s apart."""
    total = 320 * MIB
    found = []
    for i in range(count):
        sent = int(i * bandwidth_mib_s * MIB / 2)
        found.append({'type': 2, 'memory_total': total,
                      'memory_remaining': total - sent,
                      'memory_processed': sent, 'memory_iteration': 1,
                      'data_total': total, 'data_remaining': total - sent,
                      'data_processed': sent, 'time_elapsed': 500 * i,
                      'memory_bps': bandwidth_mib_s * MIB})
    return found


def our_controller(**overrides):
    """Ours as the driver builds it with the default options: the deadline
    follows the link, at least 120 s, at most 4 h."""
    settings = dict(deadline_s=14400.0, deadline_link_multiple=8.0,
                    deadline_floor_s=120.0, transfer_bytes=320 * MIB)
    settings.update(overrides)
    return c.Controller(c.ControllerConfig(**settings))


class TestStatisticsThatStayUnreadable(MonitorTestCase):
    """jobStats keeps failing: a bounded number of lines, and an abort by a
    bound far below the 4 h cap, in pre-copy only."""

    def setUp(self):
        super().setUp()
        self.records = Records()
        log = logging.getLogger('nova_livemig_ext.monitor')
        log.addHandler(self.records)
        self.addCleanup(log.removeHandler, self.records)
        self.clock = FakeClock()
        self.started_s = self.clock.now_s

    def watcher(self, domain, controller, **kwargs):
        kwargs.setdefault('deadline_s', 14400.0)
        return m.MigrationMonitor(domain, controller, self.clock,
                                  self.clock.sleep, poll_interval_s=0.5,
                                  errors=ERRORS, **kwargs)

    def an_hour_passed(self):
        return self.clock.now_s - self.started_s >= HOUR_S

    def aborts(self, report):
        return [a.decision for a in report.decisions
                if a.decision.action is A.ABORT]

    def assertWarningsBounded(self, domain, extra=0):
        """The first failure, then at most a line a minute, and the lines
        count every failure."""
        warnings = [w for w in self.records.at(logging.WARNING)
                    if 'reading job statistics failed' in w]
        self.assertLessEqual(len(warnings), 1 + HOUR_S / 60 + extra)
        counted = sum(int(n) for w in warnings
                      for n in re.findall(r'failed (\d+) times', w))
        firsts = [w for w in warnings if 'failed:' in w]
        # Whatever failed after the last line is counted in the next one.
        self.assertLessEqual(domain.failed_reads - (counted + len(firsts)),
                             60 / 0.5)
        return warnings

    def test_an_hour_of_failures_logs_a_line_a_minute(self):
        domain = UnreadableDomain()
        monitor = self.watcher(domain, ScriptedController())
        monitor.watch(self.an_hour_passed)
        self.assertEqual(7200, domain.failed_reads)
        warnings = self.assertWarningsBounded(domain)
        self.assertGreaterEqual(len(warnings), 60)
        self.assertIn('failed: Timed out during operation', warnings[0])
        self.assertIn('failed 120 times in the last 60 s (unreadable for '
                      '60 s)', warnings[1])

    def test_never_readable_aborts_at_the_blind_timeout(self):
        domain = UnreadableDomain()
        monitor = self.watcher(domain, ScriptedController())
        report = m.run_migration(domain, 'qemu+tcp://h/system', {}, 3,
                                 monitor)
        self.assertEqual(m.Outcome.ABORTED, report.outcome)
        self.assertFalse(report.switched_to_postcopy)
        self.assertEqual(1, domain.calls.count(('abortJob',)))
        [abort] = self.aborts(report)
        self.assertGreaterEqual(abort.at_s, m.DEFAULT_BLIND_TIMEOUT_S)
        self.assertLess(abort.at_s, m.DEFAULT_BLIND_TIMEOUT_S + 1)
        self.assertIn('while job statistics were unreadable (blind timeout '
                      '600 s); aborting, the guest keeps running on the '
                      'source', abort.reason)
        [error] = self.records.at(logging.ERROR)
        self.assertIn('no deadline from the link yet', error)
        self.assertIn('after 1201 failed reads (last error: Timed out '
                      'during operation', error)
        self.assertIn('aborting the job, the guest keeps running on the '
                      'source', error)

    def test_our_controller_without_samples_is_not_left_to_the_cap(self):
        # Its deadline follows the link it never measured: until then its
        # deadline is the 4 h cap.
        domain = UnreadableDomain()
        controller = our_controller()
        report = self.watcher(domain, controller).watch(
            lambda: domain.aborted)
        [abort] = self.aborts(report)
        self.assertEqual(14400.0, controller.deadline_s)
        self.assertLess(abort.at_s, m.DEFAULT_BLIND_TIMEOUT_S + 1)
        self.assertEqual(1, len(self.records.at(logging.ERROR)))

    def test_a_deadline_floor_above_the_blind_timeout_is_kept(self):
        domain = UnreadableDomain()
        report = self.watcher(domain, our_controller(
            deadline_floor_s=900.0)).watch(lambda: domain.aborted)
        [abort] = self.aborts(report)
        self.assertGreaterEqual(abort.at_s, 900.0)
        self.assertLess(abort.at_s, 901.0)

    def test_the_link_deadline_once_measured(self):
        # 10 MiB/s: 8 x 320 MiB / 10 MiB/s = 256 s, then silence.
        domain = UnreadableDomain(link_samples(10))
        controller = our_controller()
        report = self.watcher(domain, controller).watch(
            lambda: domain.aborted)
        [abort] = self.aborts(report)
        deadline_s = controller.deadline_s
        self.assertLess(deadline_s, 300.0)
        self.assertGreaterEqual(abort.at_s, deadline_s)
        self.assertLess(abort.at_s, deadline_s + 1)
        self.assertIn('deadline of %.0f s passed while job statistics were '
                      'unreadable' % deadline_s, abort.reason)

    def test_a_slow_link_keeps_its_later_deadline(self):
        # 1 MiB/s: 2560 s.  The blind timeout is for a job with no deadline
        # from the link, not a cut of one it has.
        domain = UnreadableDomain(link_samples(1))
        controller = our_controller()
        report = self.watcher(domain, controller).watch(
            lambda: domain.aborted)
        [abort] = self.aborts(report)
        self.assertGreater(controller.deadline_s, 2000.0)
        self.assertGreaterEqual(abort.at_s, controller.deadline_s)
        self.assertLess(abort.at_s, controller.deadline_s + 1)

    def test_never_aborted_after_the_switch_to_post_copy(self):
        domain = UnreadableDomain([running()])
        controller = ScriptedController([[decision(A.START_POSTCOPY)]])
        monitor = self.watcher(domain, controller, deadline_s=10.0)
        report = monitor.watch(self.an_hour_passed)
        self.assertNotIn(('abortJob',), domain.calls)
        self.assertEqual([], self.aborts(report))
        self.assertEqual([], self.records.at(logging.ERROR))
        said = [w for w in self.records.at(logging.WARNING)
                if 'not aborting' in w]
        self.assertEqual(1, len(said))
        self.assertIn('switched to post-copy', said[0])
        self.assertWarningsBounded(domain)

    def test_post_copy_seen_on_the_source_is_never_aborted(self):
        # Switched by someone else: the source's state says so.
        domain = UnreadableDomain()
        domain.state = lambda flags=0: [
            m.VIR_DOMAIN_PAUSED, m.postcopy.VIR_DOMAIN_PAUSED_POSTCOPY]
        self.watcher(domain, ScriptedController(), deadline_s=10.0).watch(
            self.an_hour_passed)
        self.assertNotIn(('abortJob',), domain.calls)
        self.assertEqual([], self.records.at(logging.ERROR))

    def test_failures_that_pass_are_not_a_blind_job(self):
        # Five minutes unreadable, then one read, again and again.
        period_s = 300.0

        def unreadable(now_s):
            return (now_s - self.started_s) % period_s < period_s - 1

        domain = UnreadableDomain(unreadable=unreadable, clock=self.clock)
        report = self.watcher(domain, ScriptedController()).watch(
            self.an_hour_passed)
        self.assertEqual([], self.aborts(report))
        self.assertWarningsBounded(domain, extra=HOUR_S / period_s)
        again = [i for i in self.records.at(logging.INFO)
                 if 'readable again' in i]
        self.assertEqual(HOUR_S / period_s, len(again))
        self.assertIn('readable again after 299.0 s (598 failed reads)',
                      again[0])

    def test_a_refused_abort_is_tried_again_at_the_bounded_rate(self):
        domain = UnreadableDomain(
            fail={'abortJob': FakeError('cannot abort', 55)})
        report = self.watcher(domain, ScriptedController()).watch(
            self.an_hour_passed)
        tries = domain.calls.count(('abortJob',))
        # At 600 s, then once a minute until the hour is over.
        self.assertEqual(50, tries)
        self.assertFalse(any(a.applied for a in report.decisions))
        self.assertEqual(1, len(self.records.at(logging.ERROR)))
        self.assertLessEqual(len(self.records.at(logging.WARNING)),
                             2 * (1 + HOUR_S / 60))

    def test_blind_timeout_must_be_a_number(self):
        for bad in (float('nan'), float('inf'), 0, -1):
            self.assertRaises(ValueError, self.watcher, FakeDomain([]),
                              ScriptedController(), blind_timeout_s=bad)


class SimDomain:
    """The pre-copy model behind the libvirt domain calls."""

    def __init__(self, sim):
        self.sim = sim

    def jobStats(self, flags=0):
        if not self.sim.running:
            raise FakeError('Domain not found', m.VIR_ERR_NO_DOMAIN)
        return self.sim.job_stats()

    def _guard(self, call, *args):
        try:
            call(*args)
        except model.SimulationError as exc:
            raise FakeError(str(exc), 55)
        return 0

    def migrateSetMaxDowntime(self, downtime, flags=0):
        return self._guard(self.sim.set_max_downtime_ms, downtime)

    def migrateSetMaxSpeed(self, bandwidth, flags=0):
        return self._guard(self.sim.set_max_speed_mib_s, bandwidth,
                           bool(flags))

    def migrateStartPostCopy(self, flags=0):
        return self._guard(self.sim.start_postcopy)

    def suspend(self):
        return self._guard(self.sim.suspend)

    def resume(self):
        return 0

    def abortJob(self):
        return self._guard(self.sim.abort)

    def state(self, flags=0):
        return [1, 1]


class TestClosedLoop(MonitorTestCase):

    def test_controller_moves_a_busy_guest_with_post_copy(self):
        sim = model.PrecopySimulation(
            model.Workload(320 * MIB, 15 * MIB, 40e6, 200_000_000),
            model.QemuSettings(postcopy=True))
        config = c.ControllerConfig(deadline_s=300, postcopy_armed=True,
                                    postcopy_allowed=True)
        monitor = m.MigrationMonitor(SimDomain(sim), c.Controller(config),
                                     lambda: sim.now_s, sim.advance,
                                     errors=ERRORS)
        report = monitor.watch(lambda: not sim.running)
        report = monitor.finish(report, m.Outcome.COMPLETED,
                                completed_stats=sim.completed_stats())
        self.assertEqual('completed', sim.phase)
        self.assertTrue(report.switched_to_postcopy)
        self.assertEqual({'postcopy'},
                         {rung for rung, _ in report.rungs_used})
        self.assertLess(report.total_s, 3 * 320 / 15)
        self.assertIsNotNone(report.downtime_ms)
        self.assertIn('switching to post-copy', self.logger.output)
        # The guest's view: the post-copy phase bounds its wait for pages,
        # libvirt's downtime is only a part of it.
        switch_s = [a.decision.at_s for a in report.decisions
                    if a.decision.action is c.Action.START_POSTCOPY][0]
        self.assertTrue(report.guest.upper_bound)
        self.assertAlmostEqual(report.total_s - switch_s,
                               report.guest.postcopy_stall_s, places=3)
        self.assertGreater(report.guest.longest_unavailable_s,
                           report.downtime_ms / 1000.0)
        self.assertIsNotNone(report.predicted_guest)
        self.assertIn('guest longest unavailability at most',
                      self.logger.output)

    def test_throttle_counts_as_work_lost(self):
        def throttled(pct, iteration):
            stats = running(iteration=iteration)
            stats['auto_converge_throttle'] = pct
            return stats

        # 50 % for 2 polls of 0.5 s, then 80 % for 1 poll: 0.5 + 0.4 s.
        domain = FakeDomain([throttled(50, 1), throttled(50, 2),
                             throttled(80, 3), throttled(80, 4)])
        monitor = self.monitor(domain, ScriptedController([]))
        report = monitor.watch(lambda: False)
        report = monitor.finish(report, m.Outcome.COMPLETED,
                                completed_stats={'type': 3, 'downtime': 120})
        self.assertAlmostEqual(0.9, report.guest.throttle_lost_s, places=6)
        self.assertAlmostEqual(0.12, report.guest.longest_unavailable_s)
        self.assertAlmostEqual(1.02, report.guest.work_lost_s, places=6)
        self.assertIn('work lost 1.02 s (downtime 0.12 s + throttle 0.90 s)',
                      self.logger.output)


class TestErrorClassifier(testtools.TestCase):

    def test_real_libvirt_errors(self):
        try:
            import libvirt
        except ImportError:
            self.skipTest('libvirt-python is not installed')
        # libvirtError(msg) takes the thread's last libvirt error, which an
        # earlier test may have left behind.
        self.useFixture(lm_fixtures.ResetLibvirtError())
        errors = m.ErrorClassifier()
        error = libvirt.libvirtError('Domain not found')
        self.assertTrue(errors.is_libvirt_error(error))
        self.assertTrue(errors.domain_gone(error))
        self.assertFalse(errors.is_libvirt_error(ValueError('x')))

    def test_codes_and_texts(self):
        for error, gone, aborted in [
                (FakeError('x', m.VIR_ERR_NO_DOMAIN), True, False),
                (FakeError('x', m.VIR_ERR_OPERATION_INVALID), True, False),
                (FakeError('operation aborted',
                           m.VIR_ERR_OPERATION_ABORTED), False, True),
                (FakeError('internal error', 1), False, False),
                (FakeError('Domain not found'), True, False)]:
            self.assertEqual((gone, aborted),
                             (ERRORS.domain_gone(error),
                              ERRORS.aborted(error)), str(error))
