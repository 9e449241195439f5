"""libvirt errors the monitor classifies, built in tests after other errors.

libvirt keeps one "last error" per thread and ``libvirtError(msg)`` reads it
at construction.  These tests leave a real error behind first, as an earlier
test in the same worker thread may, and show what the reset fixes.
"""

import testtools

from nova_livemig_ext import monitor as m
from tests import fixtures as lm_fixtures

try:
    import libvirt
except ImportError:  # the classifier tests with fakes still run
    libvirt = None

REFUSED_URI = 'qemu+tcp://127.0.0.1:1/system'


def leave_a_libvirt_error():
    """A real failing libvirt call: its error stays in this thread."""
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    try:
        libvirt.open(REFUSED_URI)
    except libvirt.libvirtError as exc:
        return exc
    raise AssertionError('connecting to %s did not fail' % REFUSED_URI)


class LeftoverErrorTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if libvirt is None:
            self.skipTest('libvirt-python is not installed')
        self.addCleanup(libvirt.registerErrorHandler, None, None)
        self.addCleanup(libvirt.virResetLastError)

    def test_a_leftover_error_poisons_a_built_error(self):
        # Why the fixture exists: without a reset the new error is the old.
        left = leave_a_libvirt_error()
        built = libvirt.libvirtError('Domain not found')
        self.assertEqual(left.get_error_code(), built.get_error_code())
        self.assertNotIn('Domain not found', str(built))
        self.assertFalse(m.ErrorClassifier().domain_gone(built))

    def test_classifier_after_a_leftover_error(self):
        leave_a_libvirt_error()
        self.useFixture(lm_fixtures.ResetLibvirtError())
        errors = m.ErrorClassifier()
        error = libvirt.libvirtError('Domain not found')
        self.assertIsNone(error.get_error_code())
        self.assertTrue(errors.is_libvirt_error(error))
        self.assertTrue(errors.domain_gone(error))
        self.assertFalse(errors.aborted(error))
        self.assertFalse(errors.is_libvirt_error(ValueError('x')))

    def test_fixture_clears_on_cleanup_too(self):
        fixture = lm_fixtures.ResetLibvirtError()
        fixture.setUp()
        leave_a_libvirt_error()
        self.assertIsNotNone(libvirt.virGetLastError())
        fixture.cleanUp()
        self.assertIsNone(libvirt.virGetLastError())
