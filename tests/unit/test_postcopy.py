"""Post-copy in trouble: where the guest is, and the recovery loop."""

import testtools

from nova_livemig_ext import postcopy as p

RUN = p.VIR_DOMAIN_RUNNING
PAUSED = p.VIR_DOMAIN_PAUSED
OFF = p.VIR_DOMAIN_SHUTOFF


def view(state, reason):
    return p.HostView(True, True, state, reason)


SRC_POSTCOPY = view(PAUSED, p.VIR_DOMAIN_PAUSED_POSTCOPY)
SRC_FAILED = view(PAUSED, p.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
SRC_MIGRATED = view(OFF, p.VIR_DOMAIN_SHUTOFF_MIGRATED)
SRC_CRASHED = view(OFF, 3)
SRC_RUNNING = view(RUN, 1)
SRC_PAUSED_BY_US = view(PAUSED, 1)
DST_POSTCOPY = view(RUN, p.VIR_DOMAIN_RUNNING_POSTCOPY)
DST_FAILED = view(RUN, p.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)
DST_PAUSED_FAILED = view(PAUSED, p.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
DST_MIGRATED = view(RUN, 2)
DST_INCOMING = view(PAUSED, 2)
DST_LOAD_FAILED = view(OFF, p.VIR_DOMAIN_SHUTOFF_FAILED)


class JudgeTest(testtools.TestCase):

    CASES = [
        # (source, destination, where)
        (SRC_POSTCOPY, DST_POSTCOPY, p.Where.POSTCOPY),
        (SRC_POSTCOPY, p.UNREACHABLE, p.Where.POSTCOPY),
        (SRC_POSTCOPY, DST_FAILED, p.Where.BROKEN),
        (SRC_FAILED, DST_FAILED, p.Where.BROKEN),
        (SRC_FAILED, p.UNREACHABLE, p.Where.BROKEN),
        (SRC_FAILED, DST_PAUSED_FAILED, p.Where.BROKEN),
        # QEMU finished by itself while libvirt still marks the
        # destination failed: the source is gone, the guest is complete.
        (SRC_MIGRATED, DST_FAILED, p.Where.COMPLETED),
        (SRC_MIGRATED, DST_MIGRATED, p.Where.COMPLETED),
        (p.ABSENT, p.UNREACHABLE, p.Where.COMPLETED),
        (view(p.VIR_DOMAIN_SHUTDOWN, 0), DST_MIGRATED, p.Where.COMPLETED),
        (SRC_CRASHED, DST_FAILED, p.Where.SOURCE_LOST),
        (SRC_RUNNING, p.ABSENT, p.Where.NOT_SWITCHED),
        (SRC_RUNNING, DST_INCOMING, p.Where.NOT_SWITCHED),
        (SRC_RUNNING, DST_FAILED, p.Where.NOT_SWITCHED),
        (SRC_PAUSED_BY_US, p.ABSENT, p.Where.NOT_SWITCHED),
        (SRC_PAUSED_BY_US, DST_POSTCOPY, p.Where.POSTCOPY),
        (SRC_PAUSED_BY_US, DST_FAILED, p.Where.BROKEN),
        (p.UNREACHABLE, DST_FAILED, p.Where.BROKEN),
        (p.UNREACHABLE, DST_POSTCOPY, p.Where.POSTCOPY),
        (p.UNREACHABLE, DST_MIGRATED, p.Where.COMPLETED),
        (p.UNREACHABLE, p.UNREACHABLE, p.Where.UNKNOWN),
        (p.UNREACHABLE, p.ABSENT, p.Where.UNKNOWN),
        (p.ABSENT, p.ABSENT, p.Where.UNKNOWN),
        # The destination failed to load the guest at the switch.
        (SRC_FAILED, DST_LOAD_FAILED, p.Where.DEST_FAILED),
        # libvirt never saw B reach post-copy while A is paused in it.
        (SRC_FAILED, DST_INCOMING, p.Where.DEST_STUCK),
        (SRC_POSTCOPY, DST_INCOMING, p.Where.DEST_STUCK),
        (SRC_PAUSED_BY_US, DST_INCOMING, p.Where.NOT_SWITCHED),
        (SRC_POSTCOPY, DST_LOAD_FAILED, p.Where.DEST_FAILED),
        # Shut off for any other reason: it may have run the guest.
        (SRC_FAILED, view(OFF, 3), p.Where.BROKEN),
        (SRC_FAILED, view(OFF, 2), p.Where.BROKEN),
        # A source that runs again holds the whole guest in any case.
        (SRC_RUNNING, DST_LOAD_FAILED, p.Where.NOT_SWITCHED),
    ]

    def test_table(self):
        for source, dest, where in self.CASES:
            self.assertEqual(where, p.judge(source, dest),
                             'source %s, destination %s' % (source, dest))

    def test_views_print_their_names(self):
        self.assertEqual('paused/post-copy failed', str(SRC_FAILED))
        self.assertEqual('unreachable', str(p.UNREACHABLE))
        self.assertEqual('no domain', str(p.ABSENT))


class Error(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code

    def get_error_code(self):
        return self.code


def is_error(exc):
    return isinstance(exc, Error)


class Clock:
    def __init__(self):
        self.now_s = 100.0

    def __call__(self):
        return self.now_s

    def sleep(self, seconds):
        self.now_s += seconds


class ReadViewTest(testtools.TestCase):

    def test_state_gone_and_unreachable(self):
        class Dom:
            def __init__(self, answer):
                self.answer = answer

            def state(self):
                if isinstance(self.answer, Exception):
                    raise self.answer
                return self.answer

        def gone(exc):
            return 'not found' in str(exc)

        self.assertEqual(SRC_FAILED, p.read_view(Dom([3, 13]), is_error,
                                                 gone))
        self.assertEqual(p.ABSENT, p.read_view(
            Dom(Error('Domain not found')), is_error, gone))
        self.assertEqual(p.UNREACHABLE, p.read_view(
            Dom(Error('client socket is closed')), is_error, gone))
        self.assertEqual(p.UNREACHABLE, p.read_view(None, is_error, gone))
        self.assertRaises(KeyError, p.read_view, Dom(KeyError('bug')),
                          is_error, gone)


class ResumeHazardTest(testtools.TestCase):

    def test_known_crashing_releases_only(self):
        for version in (11002000, 11002001, 11003000, 11003005):
            self.assertIn('crashes', p.resume_hazard(version), version)
        for version in (None, 9000000, 11001000, 11004000, 12000000,
                        12009000):
            self.assertIsNone(p.resume_hazard(version), version)

    def test_patched_trusts_every_release(self):
        for version in (None, 11002000, 11003000, 11004000):
            self.assertIsNone(p.resume_hazard(version, 'patched'), version)

    def test_never_withholds_every_resume(self):
        for version in (None, 11003000, 11004000, 12000000):
            self.assertIn('postcopy_resume = never',
                          p.resume_hazard(version, 'never'))

    def test_choices_match_the_option(self):
        from nova_livemig_ext import conf
        opt = [o for o in conf.list_opts()[0][1]
               if o.name == 'postcopy_resume'][0]
        self.assertEqual(set(p.RESUME_CHOICES),
                         {c for c, _ in opt.type.choices.items()})
        self.assertEqual(p.RESUME_AUTO, opt.default)

    def test_version_of_a_domain(self):
        class Conn:
            def __init__(self, answer):
                self.answer = answer

            def getLibVersion(self):
                if isinstance(self.answer, Exception):
                    raise self.answer
                return self.answer

        class Dom:
            def __init__(self, answer):
                self.conn = Conn(answer)

            def connect(self):
                return self.conn

        self.assertEqual(11003000, p.libvirt_version_of(Dom(11003000)))
        self.assertIsNone(p.libvirt_version_of(Dom(Error('closed'))))
        self.assertIsNone(p.libvirt_version_of(None))
        self.assertIsNone(p.libvirt_version_of(object()))


class SettleTest(testtools.TestCase):

    def run_settle(self, script, resume_answers=(), timeout_s=60.0,
                   hazard=None, give_back=None, stop_stuck_dest=None,
                   clock=None):
        """``script``: (source, dest) per read; the last one repeats."""
        clock = clock or Clock()
        reads = []
        resumes = []
        answers = list(resume_answers)

        def views():
            reads.append(clock())
            return script[min(len(reads) - 1, len(script) - 1)]

        def resume():
            resumes.append(clock())
            if answers:
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
            script.append((SRC_MIGRATED, DST_MIGRATED))
            del script[:-1]
            reads.clear()

        settled = p.settle(views, resume, clock, clock.sleep, timeout_s,
                           is_error, poll_interval_s=1.0,
                           retry_delay_s=p.retry_delays_s(2.0, 8.0),
                           hazard=hazard, give_back=give_back,
                           stop_stuck_dest=stop_stuck_dest)
        return settled, resumes, clock

    def test_destination_failed_before_running_gives_the_guest_back(self):
        given = []
        script = [(SRC_FAILED, DST_LOAD_FAILED)]

        def give_back(dest):
            given.append(dest)
            script[:] = [(view(RUN, p.VIR_DOMAIN_RUNNING_POSTCOPY),
                          DST_LOAD_FAILED)]

        settled, resumes, _ = self.run_settle(script, give_back=give_back)
        self.assertEqual([DST_LOAD_FAILED], given)
        self.assertEqual([], resumes)
        self.assertEqual(p.Where.NOT_SWITCHED, settled.where)
        self.assertTrue(settled.given_back)
        self.assertFalse(settled.needs_operator)

    def test_give_back_that_fails_is_tried_once_and_leaves_both_halves(self):
        calls = []

        def give_back(dest):
            calls.append(dest)
            raise RuntimeError('the source did not connect within 60 s')

        settled, resumes, _ = self.run_settle(
            [(SRC_FAILED, DST_LOAD_FAILED)], timeout_s=20.0,
            give_back=give_back)
        self.assertEqual(1, len(calls))
        # Nothing listens for a resume on a destination that failed.
        self.assertEqual([], resumes)
        self.assertEqual(p.Where.DEST_FAILED, settled.where)
        self.assertTrue(settled.needs_operator)
        self.assertIn('did not connect', settled.give_back_error)

    def test_without_give_back_a_failed_destination_is_left_alone(self):
        settled, resumes, _ = self.run_settle(
            [(SRC_FAILED, DST_LOAD_FAILED)], timeout_s=10.0)
        self.assertEqual([], resumes)
        self.assertEqual(p.Where.DEST_FAILED, settled.where)
        self.assertFalse(settled.given_back)

    def test_a_destination_stuck_loading_is_stopped_then_given_back(self):
        events = []
        script = [(SRC_FAILED, DST_INCOMING)]
        clock = Clock()
        started_s = clock()

        def stop():
            events.append(('stop', clock() - started_s))
            script[:] = [(SRC_FAILED, p.ABSENT)]
            return p.ABSENT

        def give_back(dest, never_ran=False):
            events.append(('give back', dest, never_ran))
            script[:] = [(view(RUN, p.VIR_DOMAIN_RUNNING_POSTCOPY), p.ABSENT)]

        settled, resumes, _ = self.run_settle(
            script, give_back=give_back, stop_stuck_dest=stop, clock=clock)
        self.assertEqual('stop', events[0][0])
        self.assertGreaterEqual(events[0][1], p.STUCK_LOADING_S)
        self.assertEqual([('give back', p.ABSENT, True)], events[1:])
        # Never resumed into: the call would only block.
        self.assertEqual([], resumes)
        self.assertEqual(p.Where.NOT_SWITCHED, settled.where)
        self.assertTrue(settled.given_back)

    def test_a_stuck_destination_waits_for_the_source_stream_to_break(self):
        # Until the source's QEMU says its stream broke, the switch may yet
        # arrive (a link cut, not a reset): nothing is stopped.
        clock = Clock()
        started_s = clock()
        stops = []
        script = [(SRC_FAILED, DST_INCOMING)]

        def source_refusal():
            if clock() - started_s < 30:
                return 'the source migration is postcopy-active'
            return None

        def stop():
            stops.append(clock() - started_s)
            script[:] = [(SRC_FAILED, p.ABSENT)]
            return p.ABSENT

        def give_back(dest, never_ran=False):
            script[:] = [(view(RUN, p.VIR_DOMAIN_RUNNING_POSTCOPY), p.ABSENT)]

        settled = p.settle(lambda: script[0], lambda: None, clock,
                           clock.sleep, 120.0, is_error, poll_interval_s=1.0,
                           give_back=give_back, stop_stuck_dest=stop,
                           source_refusal=source_refusal)
        self.assertEqual(1, len(stops))
        self.assertGreaterEqual(stops[0], 30)
        self.assertTrue(settled.given_back)

    def test_a_destination_paused_for_migration_briefly_is_not_stopped(self):
        # Right after the switch libvirt may not have caught up yet.
        script = [(SRC_POSTCOPY, DST_INCOMING)] * 3 + [
            (SRC_POSTCOPY, DST_POSTCOPY)] * 3 + [(SRC_MIGRATED, DST_MIGRATED)]

        def stop():
            raise AssertionError('a healthy destination must not be stopped')

        settled, resumes, _ = self.run_settle(
            script, give_back=lambda dest, never_ran=False: None,
            stop_stuck_dest=stop)
        self.assertTrue(settled.completed)
        self.assertEqual([], resumes)

    def test_a_stuck_destination_still_running_qemu_is_not_given_back(self):
        given = []

        def stop():
            return DST_INCOMING  # the destroy did not take

        # Resumes are tried after that, as into any broken stream; libvirt
        # refuses them while B's QEMU hangs.
        settled, resumes, _ = self.run_settle(
            [(SRC_FAILED, DST_INCOMING)], timeout_s=40.0,
            resume_answers=[Error('domain is being actively monitored')] * 9,
            give_back=lambda dest, never_ran=False: given.append(dest),
            stop_stuck_dest=stop)
        self.assertEqual([], given)
        self.assertFalse(settled.given_back)
        self.assertIn('still runs a QEMU', settled.give_back_error)
        self.assertEqual(p.Where.DEST_STUCK, settled.where)
        self.assertTrue(settled.needs_operator)

    def test_without_give_back_a_stuck_destination_is_resumed_as_broken(self):
        settled, resumes, _ = self.run_settle(
            [(SRC_FAILED, DST_INCOMING)], timeout_s=10.0,
            resume_answers=[Error('domain is being actively monitored')] * 9)
        self.assertGreater(len(resumes), 0)
        self.assertEqual(p.Where.DEST_STUCK, settled.where)
        self.assertFalse(settled.given_back)

    def test_healthy_post_copy_completes_without_a_resume(self):
        script = [(SRC_POSTCOPY, DST_POSTCOPY)] * 3 + [
            (SRC_MIGRATED, DST_MIGRATED)]
        settled, resumes, _ = self.run_settle(script)
        self.assertTrue(settled.completed)
        self.assertEqual([], resumes)
        self.assertFalse(settled.needs_operator)

    def test_stream_alive_resume_refused_until_qemu_finishes(self):
        # libvirt says failed, QEMU's stream lives: every resume is refused
        # ("still running") and the migration completes by itself.
        refused = Error('operation failed: QEMU reports migration is still '
                        'running')
        script = [(SRC_FAILED, DST_FAILED)] * 20 + [
            (SRC_MIGRATED, DST_FAILED)]
        settled, resumes, _ = self.run_settle(script, [refused] * 10)
        self.assertTrue(settled.completed)
        self.assertFalse(settled.resumed)
        self.assertEqual(settled.resume_attempts, len(resumes))
        self.assertIn('still running', settled.last_error)
        # Backoff: 2, 4, 8, 8 s between attempts (capped at 8 here).
        gaps = [b - a for a, b in zip(resumes, resumes[1:])]
        self.assertEqual([2.0, 4.0, 8.0], gaps[:3])

    def test_broken_stream_resumed(self):
        broken = Error('connection refused')
        script = [(SRC_FAILED, DST_FAILED)]
        settled, resumes, _ = self.run_settle(script, [broken, broken, None])
        self.assertTrue(settled.completed)
        self.assertTrue(settled.resumed)
        self.assertEqual(3, settled.resume_attempts)

    def test_gives_up_after_the_timeout_and_keeps_both_halves(self):
        script = [(SRC_FAILED, DST_FAILED)]
        settled, resumes, clock = self.run_settle(
            script, [Error('no route to host')] * 100, timeout_s=30.0)
        self.assertFalse(settled.completed)
        self.assertTrue(settled.needs_operator)
        self.assertEqual(p.Where.BROKEN, settled.where)
        self.assertGreaterEqual(settled.waited_s, 30.0)
        self.assertLess(settled.waited_s, 32.0)
        self.assertIn('no route', settled.last_error)

    def test_hazard_waits_without_a_resume_then_keeps_both_halves(self):
        hazard = p.resume_hazard(11003000)
        script = [(SRC_FAILED, DST_FAILED)]
        logs = []

        class Log:
            def info(self, *args):
                pass

            def warning(self, *args):
                logs.append(args)

        clock = Clock()
        settled = p.settle(lambda: script[0], lambda: self.fail('resumed'),
                           clock, clock.sleep, 30.0, is_error, log=Log(),
                           hazard=hazard)
        self.assertEqual(p.Where.BROKEN, settled.where)
        self.assertTrue(settled.needs_operator)
        self.assertEqual(0, settled.resume_attempts)
        self.assertEqual(hazard, settled.resume_withheld)
        self.assertGreaterEqual(settled.waited_s, 30.0)
        self.assertEqual(1, len(logs), 'the reason is logged once')
        self.assertIn('11.3.0', logs[0][1]['hazard'])

    def test_hazard_still_sees_a_stream_that_heals(self):
        script = [(SRC_FAILED, DST_FAILED)] * 10 + [
            (SRC_MIGRATED, DST_FAILED)]
        settled, resumes, _ = self.run_settle(
            script, hazard=p.resume_hazard(11003000))
        self.assertTrue(settled.completed)
        self.assertEqual([], resumes)

    def test_healthy_post_copy_restarts_the_clock(self):
        # Trouble for 20 s, healthy again, trouble again: a 30 s timeout
        # counts from the last healthy read, so it does not run out at 30 s.
        script = ([(SRC_FAILED, DST_FAILED)] * 20
                  + [(SRC_POSTCOPY, DST_POSTCOPY)]
                  + [(SRC_FAILED, DST_FAILED)] * 20
                  + [(SRC_MIGRATED, DST_MIGRATED)])
        settled, _, _ = self.run_settle(
            script, [Error('refused')] * 100, timeout_s=30.0)
        self.assertTrue(settled.completed)

    def test_not_switched_and_source_lost_end_at_once(self):
        for source, where in [(SRC_RUNNING, p.Where.NOT_SWITCHED),
                              (SRC_CRASHED, p.Where.SOURCE_LOST)]:
            settled, resumes, _ = self.run_settle([(source, DST_FAILED)])
            self.assertEqual(where, settled.where)
            self.assertEqual([], resumes)
        self.assertFalse(settled.completed)
        self.assertTrue(settled.needs_operator)

    def test_a_bug_in_resume_is_not_swallowed(self):
        def resume():
            raise KeyError('bug')
        clock = Clock()
        self.assertRaises(
            KeyError, p.settle, lambda: (SRC_FAILED, DST_FAILED), resume,
            clock, clock.sleep, 10.0, is_error)

    def test_timeout_must_be_a_positive_number(self):
        clock = Clock()
        for bad in (0, -1, float('nan'), float('inf')):
            self.assertRaises(ValueError, p.settle, lambda: None,
                              lambda: None, clock, clock.sleep, bad,
                              is_error)


class BoundedResumeTest(testtools.TestCase):
    """A resume call that never returns cannot stop the watch."""

    def start(self, target):
        from nova_livemig_ext import monitor
        return monitor.daemon_thread(target)

    def test_a_call_that_returns_is_passed_through(self):
        calls = []
        p.bounded(lambda: calls.append(1), 5.0, self.start)()
        self.assertEqual([1], calls)

    def test_its_error_is_raised_as_it_was(self):
        def refused():
            raise Error('QEMU reports migration is still running')
        e = self.assertRaises(Error, p.bounded(refused, 5.0, self.start))
        self.assertIn('still running', str(e))

    def test_a_blocked_call_is_given_up_on(self):
        import threading
        held = threading.Event()
        self.addCleanup(held.set)
        e = self.assertRaises(p.ResumeTimedOut,
                              p.bounded(lambda: held.wait(30), 0.2, self.start))
        self.assertIn('did not return within 0 s', str(e))

    def test_settle_goes_on_after_a_resume_that_timed_out(self):
        # Seen in the lab: a destination QEMU deadlocked at the switch kept
        # the resume call blocked; the watch must still end, both halves
        # kept, with the reason.
        clock = Clock()

        def resume():
            raise p.ResumeTimedOut('the resume call did not return within 60 s')
        settled = p.settle(lambda: (SRC_FAILED, p.UNREACHABLE), resume, clock,
                           clock.sleep, 30.0, is_error, poll_interval_s=1.0,
                           retry_delay_s=p.retry_delays_s(2.0, 8.0))
        self.assertIs(p.Where.BROKEN, settled.where)
        self.assertTrue(settled.needs_operator)
        self.assertGreater(settled.resume_attempts, 1)
        self.assertIn('did not return', settled.last_error)
