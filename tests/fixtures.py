"""Test fixtures shared by the unit and functional tests."""

import fixtures

from nova_livemig_ext import flags as livemig_flags

# Constants libvirt 11 has and Nova's fake libvirt lacks (the fake of
# Nova 31 also lacks the parallel connections parameter).
MISSING_PARAMS = {
    'VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS':
        livemig_flags.PARAM_PARALLEL_CONNECTIONS,
    'VIR_MIGRATE_PARAM_URI': livemig_flags.PARAM_URI,
    'VIR_MIGRATE_PARAM_LISTEN_ADDRESS': livemig_flags.PARAM_LISTEN_ADDRESS,
    'VIR_MIGRATE_PARAM_BANDWIDTH': livemig_flags.PARAM_BANDWIDTH,
    'VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY':
        livemig_flags.PARAM_BANDWIDTH_POSTCOPY,
    'VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL':
        livemig_flags.PARAM_AUTO_CONVERGE_INITIAL,
    'VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT':
        livemig_flags.PARAM_AUTO_CONVERGE_INCREMENT,
    'VIR_MIGRATE_PARAM_COMPRESSION': livemig_flags.PARAM_COMPRESSION,
    'VIR_MIGRATE_PARAM_COMPRESSION_ZLIB_LEVEL':
        livemig_flags.PARAM_COMPRESSION_LEVEL['zlib'],
    'VIR_MIGRATE_PARAM_COMPRESSION_ZSTD_LEVEL':
        livemig_flags.PARAM_COMPRESSION_LEVEL['zstd'],
}


class ResetLibvirtError(fixtures.Fixture):
    """Clear real libvirt's per-thread last error before and after a test.

    ``libvirt.libvirtError(msg)`` takes its message and code from the last
    error libvirt recorded in the calling thread, not from ``msg``: a test
    that builds one after another test left an error (a refused connection,
    say) gets that stale error.  A no-op without libvirt-python.
    """

    def _setUp(self):
        try:
            import libvirt
        except ImportError:
            return
        libvirt.virResetLastError()
        self.addCleanup(libvirt.virResetLastError)


class ModernFakeLibvirt(fixtures.Fixture):
    """Nova's fake libvirt, completed with what libvirt 11.3 / QEMU 10 have.

    Adds the migration constants and the Domain methods the fake lacks, and
    reports the versions the real lab runs, so the driver's feature checks
    judge the same host the lab tests measure.
    """

    def __init__(self, libvirt_version=livemig_flags.version_int(11, 3),
                 qemu_version=livemig_flags.version_int(10, 0, 2)):
        super().__init__()
        self.libvirt_version = libvirt_version
        self.qemu_version = qemu_version

    def _setUp(self):
        from nova.tests.fixtures import libvirt as fakelibvirt

        for name, value in list(livemig_flags.FLAG_VALUES.items()) + list(
                MISSING_PARAMS.items()):
            if not hasattr(fakelibvirt, name):
                self.useFixture(fixtures.MonkeyPatch(
                    'nova.tests.fixtures.libvirt.%s' % name, value))
        calls = self.domain_calls = []

        def recorder(method):
            def call(dom, *args):
                calls.append((method, args))
                return 0
            return call

        for method in ('migrateStartPostCopy', 'migrateSetMaxSpeed',
                       'migrateSetMaxDowntime'):
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.libvirt.Domain.%s' % method,
                recorder(method)))
        # The fake Connection binds its versions as default arguments.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.getLibVersion',
            lambda conn: self.libvirt_version))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.getVersion',
            lambda conn: self.qemu_version))
