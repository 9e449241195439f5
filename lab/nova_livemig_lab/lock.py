"""One user of the lab at a time, across processes (stestr workers, the CLI).

Two migrations at once would share the link and the two CPU cores and
measure nonsense, so everything that drives guests holds this lock.
"""
from __future__ import annotations

import fcntl
import os
import stat
import typing
from pathlib import Path

from nova_livemig_lab.config import LabConfig
from nova_livemig_lab.errors import LabError

LOCK_NAME = "lab.lock"


def private_state_dir(path: Path) -> Path:
    """Create ``path`` for this user alone, or check that it is so.

    The lab runs libvirtd and QEMU as root from this directory (it becomes
    their /etc/libvirt): a directory that another user created or can write
    to (under /var/tmp anybody can create it first) is refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise LabError(f"lab state directory {path} is not a directory (a symlink or a "
                       "file): remove it, or choose another with NOVA_LIVEMIG_LAB_DIR")
    if info.st_uid != os.geteuid():
        raise LabError(f"lab state directory {path} belongs to uid {info.st_uid}, not to "
                       f"uid {os.geteuid()} running the lab: remove it, or choose another "
                       "with NOVA_LIVEMIG_LAB_DIR")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LabError(f"lab state directory {path} is writable by group or others (mode "
                       f"{stat.S_IMODE(info.st_mode):o}): chmod go-w it, or choose another "
                       "with NOVA_LIVEMIG_LAB_DIR")
    return path


class LabLock:
    """Exclusive, blocking ``flock`` on a file in the state directory."""

    def __init__(self, config: LabConfig) -> None:
        private_state_dir(config.state_dir)
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
