"""Which libvirt daemons the lab runs, and how it names them."""

import os
from pathlib import Path

import fixtures
import testtools

from nova_livemig_lab import config, hosts, libvirt_build
from nova_livemig_lab.errors import LabError


class SelectTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.prefix = Path(self.useFixture(fixtures.TempDir()).path)
        self.useFixture(fixtures.EnvironmentVariable(
            libvirt_build.PREFIX_ENV, str(self.prefix)))
        self.useFixture(fixtures.EnvironmentVariable(libvirt_build.LIBVIRT_ENV))

    def install(self, build='libvirt 11.3.0-3+deb13u3+resumefix1'):
        sbin = self.prefix / 'sbin'
        sbin.mkdir()
        daemon = sbin / 'libvirtd'
        daemon.write_text('#!/bin/sh\n')
        daemon.chmod(0o755)
        (self.prefix / 'BUILD-INFO').write_text(f'build={build}\nrecipe=x\n')
        return str(daemon)

    def test_auto_without_the_build_is_debian(self):
        build = libvirt_build.select()
        self.assertEqual('debian', build.kind)
        self.assertFalse(build.resume_fixed)
        self.assertIn('resume crashes the destination', build.name)

    def test_auto_with_the_build_is_patched(self):
        daemon = self.install()
        build = libvirt_build.select()
        self.assertEqual(('patched', daemon, True),
                         (build.kind, build.daemon, build.resume_fixed))
        self.assertIn('resumefix1', build.name)

    def test_debian_on_request_even_when_built(self):
        self.install()
        self.useFixture(fixtures.EnvironmentVariable(
            libvirt_build.LIBVIRT_ENV, 'debian'))
        self.assertEqual('debian', libvirt_build.select().kind)

    def test_patched_on_request_but_missing_is_refused(self):
        e = self.assertRaises(LabError, libvirt_build.select, 'patched')
        self.assertIn('build-libvirt.sh', str(e))

    def test_a_daemon_without_build_info_is_not_the_build(self):
        self.install()
        os.unlink(self.prefix / 'BUILD-INFO')
        self.assertEqual('debian', libvirt_build.select().kind)

    def test_unknown_choice_is_refused(self):
        e = self.assertRaises(LabError, libvirt_build.select, 'newest')
        self.assertIn('auto, patched, debian', str(e))

    def test_both_hosts_start_the_chosen_daemon(self):
        daemon = self.install()
        cfg = config.load_config(Path('/nonexistent-lab'), 100)
        for host in cfg.hosts:
            self.assertEqual(daemon, host.libvirtd)
            script = hosts._daemon_command(host)[-1]
            self.assertIn(f'exec {daemon} --listen', script)
        debian = config.load_config(Path('/nonexistent-lab'), 100, 'debian')
        # Another build is another launch signature: start restarts it.
        self.assertNotEqual(hosts._daemon_command(cfg.host_a),
                            hosts._daemon_command(debian.host_a))
