"""A tenant's image properties cannot make their instance unmovable.

Booted through Nova's API from an image with ``livemig_ext:*`` properties,
on two computes running our driver: a migration that completes without the
properties still completes with them, and what they say reaches
nova-compute's log escaped.
"""

import time

from nova_livemig_ext import flags as lf
from tests.functional import base

FAST = dict(poll_interval_s=0.1)


class ImageKeysTestBase(base.LiveMigExtTestBase):

    def boot_and_migrate(self, properties):
        image_id = self._create_image(properties)['id']
        # 512 MiB and a 1 GiB disk: at most 1.5 GiB to move.
        flavor_id = self._create_flavor(memory_mb=512, disk=1, ephemeral=0)
        server = self._create_server(host='src', image_uuid=image_id,
                                     flavor_id=flavor_id, networks='none')
        self.api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto'}})
        return server

    def wait_for_end(self, server, timeout_s=90.0):
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.migration_of(server)['status']
            if status in ('completed', 'failed', 'error', 'cancelled'):
                return status
            if time.monotonic() > deadline:
                self.fail('migration still %s' % status)
            time.sleep(0.1)

    def assert_completed(self, server):
        self.assertEqual('completed', self.wait_for_end(server),
                         self.stdlog.logger.output[-3000:])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([], self.job.called('abortJob'))


class ImageDeadlineTest(ImageKeysTestBase):
    """``completion_timeout_s_per_gib=1`` once gave this guest a 10 s
    deadline (the image floor here) where it needs 4 s more."""

    LIVEMIG_OPTS = dict(ladder=['abort'], deadline_floor_s=10,
                        image_deadline_floor_s=10, **FAST)
    COMPLETES_AFTER_S = 14.0

    def migrate_script(self, domain, params):
        start = time.monotonic()
        iteration, processed = 1, 112
        while time.monotonic() - start < self.COMPLETES_AFTER_S:
            if self.job.called('abortJob'):
                self.cancelled(domain)
            # A slow but steady guest: every pass leaves less to send.
            remaining = max(20, 400 - 25 * iteration)
            self.job.precopy(remaining, processed, iteration)
            iteration += 1
            processed += 50
            time.sleep(0.5)
        self.complete(domain, params)

    def test_an_image_cannot_shorten_the_deadline(self):
        server = self.boot_and_migrate({
            'livemig_ext:completion_timeout_s_per_gib': '1'})
        self.assert_completed(server)
        self.assertNotIn('deadline of 10 s passed', self.stdlog.logger.output)


class ImageLadderTest(ImageKeysTestBase):
    """A guest that never converges is paused to completion by the host's
    ladder; an image ladder without ``pause`` once aborted it."""

    LIVEMIG_OPTS = dict(ladder=['downtime', 'pause', 'abort'],
                        completion_timeout_max_s=10, switchover_timeout_s=5,
                        stall_window_s=5, **FAST)

    def migrate_script(self, domain, params):
        iteration = 1
        while True:
            if self.job.called('suspend'):
                self.complete(domain, params)
                return
            if self.job.called('abortJob'):
                self.cancelled(domain)
            self.job.precopy(200, 112 + 100 * iteration, iteration)
            iteration += 1
            time.sleep(0.2)

    def check(self, ladder):
        server = self.boot_and_migrate({'livemig_ext:ladder': ladder})
        self.assert_completed(server)
        self.assertIn("image property livemig_ext:ladder = %r ignored: "
                      "the ladder is the operator's" % ladder,
                      self.stdlog.logger.output)
        self.assertEqual(1, len(self.job.called('suspend')))

    def test_an_image_cannot_remove_the_pause(self):
        self.check('downtime,abort')

    def test_an_image_cannot_leave_only_abort(self):
        self.check('abort')


class ImageTextTest(ImageKeysTestBase):

    LIVEMIG_OPTS = dict(permit_post_copy=True,
                        ladder=['downtime', 'postcopy', 'abort'])

    def test_tenant_text_is_logged_escaped(self):
        server = self.boot_and_migrate({
            'livemig_ext:ladder': 'downtime\nWARNING forged by the image',
            'livemig_ext:permit_post_copy': 'false'})
        self.assert_completed(server)
        log = self.stdlog.logger.output
        self.assertIn("image property livemig_ext:ladder = 'downtime\\n"
                      "WARNING forged by the image' ignored", log)
        for line in log.splitlines():
            self.assertFalse(line.startswith('WARNING forged'), line)
        # Post-copy is on the ladder: the image cannot disarm it.
        self.assertIn('image property livemig_ext:permit_post_copy = '
                      "'false' ignored", log)
        [(_, _, flags)] = self.migrate_calls
        self.assertIn('VIR_MIGRATE_POSTCOPY', lf.flag_names(flags))
