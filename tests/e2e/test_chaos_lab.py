"""Faults at moments nobody chose (nova_livemig_lab.chaos), a short round.

Three runs of ``nova-livemig-ext migrate`` moving a busy guest from A to B,
each hit by a fault (QEMU's stream reset, the link cut, the destination's
libvirtd restarted, the monitor killed) drawn at random with a random
moment (pre-copy, at the switch, early or late in post-copy). Whatever
happens, the guest must end running intact on exactly one host, and the
reports (migrate's, and recover's when it was needed) must say which.

The seed comes from ``NOVA_LIVEMIG_CHAOS_SEED`` or is drawn and shown in
the test's details: ``python -m nova_livemig_lab.chaos --runs 3 --seed S
--max-link-down 20`` repeats the same runs.
"""
from __future__ import annotations

import json
import os
import random

import testtools.content

from nova_livemig_lab import chaos
from tests.e2e import base

SEED_ENV = "NOVA_LIVEMIG_CHAOS_SEED"
RUNS = 3
# Cuts up to 20 s (past libvirt's keepalive): three runs stay within about
# five minutes.
MAX_LINK_DOWN_S = 20.0
# The switch comes about 30 s in, post-copy takes about 8 s more, then a
# cut and up to 120 s of recovery: a migrate running after this has hung
# (a stream reset during the switchover does that, see the chaos section of
# doc/source/troubleshooting.rst).
MIGRATE_TIMEOUT_S = 240.0
# Known defect, left out of this short round only (the full round,
# ``--cover``, keeps it, and so does its table in the docs): QEMU's stream
# reset within about 0.12 s of the switch leaves the destination QEMU
# deadlocked while it loads the device state (2 of 5 such resets in the
# lab). The monitor then ends with "needs recovery" and both halves, but
# nothing can complete the guest. Seeds 4242 (run 12) and 5 reproduce it.
KNOWN_DEFECT = (("stream-reset", "switchover"),)


class TestChaos(base.LabTestCase):

    def test_random_faults_never_lose_the_guest(self) -> None:
        seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(10**6))
        print(f"chaos seed {seed} (set {SEED_ENV}={seed} to repeat)", flush=True)
        self.addDetail("seed", testtools.content.text_content(
            f"{seed}: python -m nova_livemig_lab.chaos --runs {RUNS} --seed {seed} "
            f"--max-link-down {MAX_LINK_DOWN_S:g} "
            + " ".join(f"--exclude {f}:{p}" for f, p in KNOWN_DEFECT)))
        # setUp holds the lab lock for the whole test.
        runs = chaos.run(self.cfg, RUNS, seed, max_link_down_s=MAX_LINK_DOWN_S,
                         hold_lock=False, migrate_timeout_s=MIGRATE_TIMEOUT_S,
                         on_run=lambda r: print(r.line(), flush=True),
                         exclude=KNOWN_DEFECT)
        self.addDetail("runs", testtools.content.text_content(
            "\n".join(r.line() for r in runs) + "\n\n" + chaos.table(runs)))
        self.addDetail("json", testtools.content.text_content(json.dumps(
            [r.__dict__ for r in runs], indent=1, default=str)))
        for r in runs:
            where = f"seed {seed} run {r.index} ({r.fault} in {r.phase}): {r.line()}"
            self.assertIsNone(r.error, where)
            self.assertNotEqual(chaos.LOST, r.result, where)
            self.assertIn(r.result, (chaos.COMPLETED, chaos.ROLLED_BACK), where)
            self.assertIn(r.end_host, ("a", "b"), where)
            self.assertEqual({}, r.stray_qemu, where)
            self.assertTrue(r.intact, where)
            self.assertEqual(0, r.bad_pages, where)
            self.assertFalse(r.migrate_hung, where)
            self.assertFalse(r.recover_hung, where)
            self.assertTrue(r.report_truthful, f"{where}: {'; '.join(r.truth_notes)}")
