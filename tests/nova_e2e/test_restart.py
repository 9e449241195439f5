"""The source nova-compute killed in the middle of a live migration, then started again.

A nova-compute that dies leaves libvirt's job running: in peer-to-peer mode
the source libvirtd drives it, whoever asked for it.  Nova's own restart
code does not look at such a job.  Our driver keeps one small record per
migration under ``state_path`` and, when nova-compute starts, brings every
recorded migration to its true end:

* still in pre-copy: the job is aborted, the guest keeps running on the
  source, Nova rolls back and records the migration ``failed``;
* after the switch to post-copy: the job is left to finish (or resumed),
  then Nova completes the migration on the destination.

Both are shown here with SIGKILL (no chance to clean up) on the busy lab
guest, whose heartbeats and page checks say whether it survived.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.nova_e2e import base
from tests.nova_e2e import test_live_migration as lm

# A restarted nova-compute needs about 10 s to start and up to 120 s to let
# a post-copy job settle before it completes the migration in Nova.
RESTART_END_TIMEOUT_S = 240.0


class TestSourceComputeRestart(base.NovaStackTestCase):
    """Both computes run our driver with the lab demo's policy."""

    DRIVER = "ext"
    PLUGIN_VARS = lm.TestOurDriverThroughNova.PLUGIN_VARS

    def kill_source_compute(self) -> float:
        """SIGKILL the source nova-compute's whole process group."""
        name = base.novastack.compute_name(self.cfg.host_a)
        pid = base.novastack.service_pid(name)
        self.assertIsNotNone(pid, f"{name} is not running")
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while base.novastack.service_pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIsNone(base.novastack.service_pid(name), f"{name} outlived SIGKILL")
        return time.monotonic()

    def start_source_compute(self) -> float:
        """Start the missing nova-compute again (the other one keeps running)."""
        cmd = ["bash", str(base.STACK_SH), "computes", "up", "--driver", self.DRIVER]
        for item in self.PLUGIN_VARS:
            cmd += ["--var", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        self.assertEqual(0, proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:])
        return time.monotonic()

    def test_killed_in_precopy_keeps_the_guest_on_the_source(self) -> None:
        server = self.boot(lm.WORKING_SET_MB, lm.FAST_DIRTY_RATE_MB_S)
        accepted_s = self.live_migrate(server, self.cfg.host_b)
        self.wait_migration_status(server, ("running",))
        time.sleep(3)
        # Still pre-copy: the ladder reaches post-copy only much later.
        self.assertEqual("running", (self.migration(server) or {}).get("status"))
        killed_s = self.kill_source_compute()
        self.assertIn(self.cfg.host_a.name, self.domain_hosts(server))
        restarted_s = self.start_source_compute()
        record, ended_s = self.wait_migration_end(server, RESTART_END_TIMEOUT_S)

        self.assertEqual("failed", record["status"], record)
        self.wait_server(server.id, "ACTIVE", timeout_s=60)
        self.assertRunsOn(server, self.cfg.host_a)
        self.assertGuestIntact(server, ended_s)
        log = self.compute_log(self.cfg.host_a)
        self.assertIn("was interrupted", log)
        self.report(kill_after_accept_s=round(killed_s - accepted_s, 1),
                    restart_s=round(restarted_s - killed_s, 1),
                    restart_to_end_s=round(ended_s - restarted_s, 1),
                    status=record["status"],
                    max_heartbeat_gap_s=server.console.max_gap_s(accepted_s, ended_s + 5))

    def test_killed_in_postcopy_completes_on_the_destination(self) -> None:
        server = self.boot(lm.WORKING_SET_MB, lm.FAST_DIRTY_RATE_MB_S)
        accepted_s = self.live_migrate(server, self.cfg.host_b)
        running = self.wait_migration_status(server, ("running",))
        time.sleep(3)
        # Force-complete: with post-copy on the ladder the driver switches.
        self.api("POST", "nova-api",
                 f"/v2.1/servers/{server.id}/migrations/{running['id']}/action",
                 {"force_complete": None})
        self.wait_migration_status(server, ("running (post-copy)",), timeout_s=60)
        killed_s = self.kill_source_compute()
        restarted_s = self.start_source_compute()
        record, ended_s = self.wait_migration_end(server, RESTART_END_TIMEOUT_S)

        self.assertEqual("completed", record["status"], record)
        self.wait_server(server.id, "ACTIVE", timeout_s=60)
        self.assertRunsOn(server, self.cfg.host_b)
        self.assertGuestIntact(server, ended_s)
        self.assertIn("was interrupted", self.compute_log(self.cfg.host_a))
        self.report(kill_after_accept_s=round(killed_s - accepted_s, 1),
                    restart_s=round(restarted_s - killed_s, 1),
                    restart_to_end_s=round(ended_s - restarted_s, 1),
                    status=record["status"],
                    max_heartbeat_gap_s=server.console.max_gap_s(accepted_s, ended_s + 5))
