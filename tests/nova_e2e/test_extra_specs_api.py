"""A real nova-api refuses bad ``livemig_ext:*`` flavor extra specs.

Only the control plane runs (``stack.sh up --no-computes``): nova-api loads
our validators through the ``nova.api.extra_spec_validators`` entry point of
the package installed in the stack's own virtualenv, and answers HTTP 400
before anything is stored. The lab lock is held while the stack is up, as
for every test here; the lab's libvirtd hosts are not needed.
"""
from __future__ import annotations

import os
import subprocess
import time
import typing

import testtools

from nova_livemig_lab import config as lab_config
from nova_livemig_lab.lock import LabLock
from tests.e2e import base as lab_base
from tests.nova_e2e import base


class TestFlavorExtraSpecsThroughNovaApi(testtools.TestCase):

    _lock: typing.ClassVar[LabLock | None] = None
    _skip: typing.ClassVar[str | None] = None
    _user_id: typing.ClassVar[str]
    cfg: typing.ClassVar[lab_config.LabConfig]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._skip = base.skip_reason()
        if cls._skip is not None:
            return
        cls.cfg = lab_config.load_config()
        cls._user_id = f"{os.getpid()}:{cls.__name__}"
        proc = subprocess.run(["bash", str(base.STACK_SH), "install"],
                              capture_output=True, text=True,
                              timeout=base.STACK_UP_TIMEOUT_S)
        if proc.returncode != 0:
            cls._skip = ("the OpenStack stack could not be installed: "
                         + (proc.stdout + proc.stderr)[-1500:])
            return
        cls._lock = LabLock(cls.cfg)
        cls._lock.__enter__()
        try:
            users_file = cls.cfg.state_dir / base.USERS_NAME
            users = lab_base._users(users_file)
            users_file.write_text(" ".join(users + [cls._user_id]) + "\n")
            proc = subprocess.run(
                ["bash", str(base.STACK_SH), "up", "--no-computes"],
                capture_output=True, text=True,
                timeout=base.STACK_UP_TIMEOUT_S)
            if proc.returncode != 0:
                raise AssertionError("the control plane did not start:\n"
                                     + (proc.stdout + proc.stderr)[-3000:])
        except BaseException:
            cls._cleanup()
            raise

    @classmethod
    def _cleanup(cls) -> None:
        """The stack down unless another test class still uses it."""
        if cls._lock is None:
            return
        try:
            users_file = cls.cfg.state_dir / base.USERS_NAME
            others = [u for u in lab_base._users(users_file)
                      if u != cls._user_id]
            users_file.write_text(" ".join(others) + "\n")
            if not others:
                subprocess.run(["bash", str(base.STACK_SH), "down"],
                               capture_output=True, text=True, timeout=300)
        finally:
            cls._lock.__exit__()
            cls._lock = None

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._cleanup()
        finally:
            super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        if self._skip is not None:
            self.skipTest(self._skip)

    def api(self, method: str, path: str, body: object = None,
            expect: tuple[int, ...] = (200, 201, 202, 204)) -> typing.Any:
        return base.novastack.api(method, "nova-api", path, body,
                                  expect=expect)

    def test_bad_values_400_good_values_stored(self) -> None:
        name = f"livemig-specs-{int(time.time()) % 100000}"
        flavor = self.api("POST", "/v2.1/flavors", {"flavor": {
            "name": name, "ram": 128, "vcpus": 1, "disk": 1}})["flavor"]
        self.addCleanup(self.api, "DELETE", f"/v2.1/flavors/{flavor['id']}")
        path = f"/v2.1/flavors/{flavor['id']}/os-extra_specs"
        for key, value, text in [
                ("livemig_ext:max_downtime_ms", "soon", "soon"),
                ("livemig_ext:max_downtime_ms", "99999", "100 to 60000"),
                ("livemig_ext:ladder", "abort,downtime", "'abort' must be"),
                ("livemig_ext:permit_post_copy", "maybe", "maybe"),
                ("livemig_ext:warp_speed", "9", "livemig_ext:warp_speed")]:
            answer = self.api("POST", path, {"extra_specs": {key: value}},
                              expect=(400,))
            self.assertIn(text, answer["badRequest"]["message"],
                          (key, value))
        self.assertEqual({}, self.api("GET", path)["extra_specs"])
        good = {"livemig_ext:max_downtime_ms": "400",
                "livemig_ext:ladder": "downtime,postcopy,abort",
                "livemig_ext:permit_post_copy": "true"}
        self.api("POST", path, {"extra_specs": good})
        self.assertEqual(good, self.api("GET", path)["extra_specs"])
