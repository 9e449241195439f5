"""Where the lab says the guest is once a migration call has returned."""

from pathlib import Path
from unittest import mock

import libvirt
import testtools

from nova_livemig_lab import config, measure

CFG = config.load_config(Path("/nonexistent-lab"), 100)
A, B = CFG.host_a, CFG.host_b


class TestGuestHostAfter(testtools.TestCase):

    def where(self, source_state):
        with mock.patch.object(measure, '_domain_state', return_value=source_state) as state:
            host = measure.guest_host_after(A, B, 'g')
        state.assert_called_once_with(A, 'g')
        return host.name

    def test_source_running_after_a_precopy_fault(self):
        # The destination may still hold the half-done incoming domain: the
        # source running decides, not the destination being active.
        self.assertEqual('a', self.where((libvirt.VIR_DOMAIN_RUNNING,
                                          libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED)))

    def test_source_paused_by_a_pause_rung_still_holds_the_guest(self):
        self.assertEqual('a', self.where((libvirt.VIR_DOMAIN_PAUSED,
                                          libvirt.VIR_DOMAIN_PAUSED_USER)))

    def test_completed_migration_leaves_the_source_empty(self):
        self.assertEqual('b', self.where(None))
        self.assertEqual('b', self.where((libvirt.VIR_DOMAIN_SHUTOFF,
                                          libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)))

    def test_postcopy_halves_belong_to_the_destination(self):
        for reason in (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
                       libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
            self.assertEqual('b', self.where((libvirt.VIR_DOMAIN_PAUSED, reason)))
