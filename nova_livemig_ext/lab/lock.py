"""One user of the lab at a time, across processes (stestr workers, the CLI).

Two migrations at once would share the link and the two CPU cores and
measure nonsense, so everything that drives guests holds this lock.
"""
from __future__ import annotations

import fcntl
import typing

from nova_livemig_ext.lab.config import LabConfig

LOCK_NAME = "lab.lock"


class LabLock:
    """Exclusive, blocking ``flock`` on a file in the state directory."""

    def __init__(self, config: LabConfig) -> None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._path = config.state_dir / LOCK_NAME
        self._handle: typing.IO[str] | None = None

    def __enter__(self) -> "LabLock":
        self._handle = open(self._path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
